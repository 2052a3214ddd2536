//! The config parser: `Config::parse` (TOML, serde, password and token
//! resolution, `validate`) over arbitrary text. A file it accepts must
//! validate again, and its `--check` rendering must be TOML in which every
//! password and token is redacted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsplit::config::Config;

fn redacted(value: Option<&toml::Value>) -> bool {
    value.is_none_or(|v| v.as_str() == Some("<redacted>"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    config.validate().expect("an accepted config validates again");
    let shown = config.to_redacted_toml();
    let table: toml::Table = toml::from_str(&shown).expect("--check prints TOML");
    let admin = table.get("admin").and_then(|a| a.get("token"));
    assert!(redacted(admin), "admin token shown: {shown}");
    for user in table
        .get("users")
        .and_then(|u| u.as_array())
        .into_iter()
        .flatten()
    {
        assert!(redacted(user.get("password")), "password shown: {shown}");
    }
});
