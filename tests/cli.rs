//! The binary's command line: `--check` on good and bad files.

use std::process::Command;

fn check(config: &str) -> std::process::Output {
    let path = std::env::temp_dir().join(format!(
        "pgsplit-cli-{}-{}.toml",
        std::process::id(),
        config.len()
    ));
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(["--config", path.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    std::fs::remove_file(&path).ok();
    out
}

const GOOD: &str = "[[backends]]\nname = \"pg1\"\naddress = \"127.0.0.1:15432\"\n[[users]]\nname = \"app\"\npassword = \"s3cret-value\"\n";

#[test]
fn check_prints_the_effective_config_without_secrets() {
    let out = check(GOOD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("max_client_connections = 1000"), "{shown}");
    assert!(shown.contains("read_write = \"127.0.0.1:5433\""), "{shown}");
    assert!(!shown.contains("s3cret-value"), "{shown}");
}

#[test]
fn check_names_the_bad_key_and_fails() {
    let out = check(&format!("{GOOD}[health]\nintervall_ms = 5\n"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("intervall_ms"), "{err}");

    let out = check(&GOOD.replace("127.0.0.1:15432", "localhost"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("backends[0].address"));

    let out = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(["--config", "/nonexistent/pgsplit.toml", "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pgsplit.toml"));
}

#[test]
fn the_reference_config_checks() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/pgsplit.toml"),
            "--check",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pgsplit demo` and `pgsplit testbed` exist only with the `demo` feature (on
/// by default); `--no-default-features` builds the proxy alone.
#[test]
fn help_lists_the_demo_subcommands_only_with_the_demo_feature() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--config"), "{help}");
    for subcommand in ["demo", "testbed"] {
        let listed = help.lines().any(|l| l.trim_start().starts_with(subcommand));
        assert_eq!(listed, cfg!(feature = "demo"), "{subcommand}: {help}");
    }
}

/// Every key of the effective configuration is named (set or commented out)
/// in the reference file, in its section.
#[test]
fn the_reference_config_names_every_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pgsplit.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(["--config", path, "--check"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let reference = std::fs::read_to_string(path).unwrap();
    let section_of = |text: &str| -> Vec<(String, String)> {
        let mut section = String::new();
        let mut keys = vec![];
        for line in text.lines() {
            let line = line.trim_start_matches('#').trim();
            if line.starts_with('[') {
                section = line.trim_matches(|c| c == '[' || c == ']').to_owned();
            } else if let Some((key, _)) = line.split_once(" = ") {
                if !key.contains(' ') {
                    keys.push((section.clone(), key.to_owned()));
                }
            }
        }
        keys
    };
    let named = section_of(&reference);
    let missing: Vec<_> = section_of(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|k| !named.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "not in config/pgsplit.toml: {missing:?}"
    );
}
