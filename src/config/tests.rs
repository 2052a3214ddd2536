use super::*;

const ISSUE_EXAMPLE: &str = r#"
[listen]
read_write = "127.0.0.1:5433"
read_only  = "127.0.0.1:5434"
admin      = "127.0.0.1:9930"

[[backends]]
name = "pg1"
address = "127.0.0.1:15432"
weight = 1

[[backends]]
name = "pg2"
address = "127.0.0.1:15433"
weight = 1

[[backends]]
name = "pg3"
address = "127.0.0.1:15434"
weight = 2

[[users]]
name = "app"
password = "app"

[health]
interval_ms = 500
"#;

#[test]
fn the_documented_example_loads() {
    let c = Config::parse(ISSUE_EXAMPLE).unwrap();
    assert_eq!(c.backends.len(), 3);
    assert_eq!(c.backends[2].weight, 2);
    assert_eq!(c.auth.method, AuthMethod::ScramSha256);
    assert_eq!(c.health.interval_ms, 500);
    assert_eq!(c.limits.max_client_connections, 1000);
    assert_eq!(c.health_user().name, "app");
}

#[test]
fn the_reference_file_loads() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pgsplit.toml"))
        .unwrap();
    Config::parse(&text).unwrap();
}

#[test]
fn redacted_output_hides_passwords() {
    let c = Config::parse(ISSUE_EXAMPLE).unwrap();
    let shown = c.to_redacted_toml();
    assert!(shown.contains("<redacted>"));
    assert!(!shown.contains("password = \"app\""), "{shown}");
    assert!(!format!("{c:?}").contains("Secret(\"app\")"));
}

fn err_of(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn unknown_keys_are_named() {
    let e = err_of(&format!("{ISSUE_EXAMPLE}\n[limits]\nmax_clients = 3\n"));
    assert!(e.contains("max_clients"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let e = err_of(&ISSUE_EXAMPLE.replace("127.0.0.1:15434", "nohostport"));
    assert!(e.contains("backends[2].address"), "{e}");
    let e = err_of(&ISSUE_EXAMPLE.replace("name = \"pg2\"", "name = \"pg1\""));
    assert!(e.contains("backends[1].name"), "{e}");
    let e = err_of(&ISSUE_EXAMPLE.replace(
        "password = \"app\"",
        "password_env = \"PGSPLIT_TEST_SURELY_UNSET\"",
    ));
    assert!(e.contains("PGSPLIT_TEST_SURELY_UNSET"), "{e}");
    let e = err_of(&format!(
        "{ISSUE_EXAMPLE}\n[limits]\nmax_message_size = 10\n"
    ));
    assert!(e.contains("limits.max_message_size"), "{e}");
}

#[test]
fn password_env_is_resolved() {
    let mut c: Config =
        toml::from_str(&ISSUE_EXAMPLE.replace("password = \"app\"", "password_env = \"PW\""))
            .unwrap();
    c.resolve_passwords(|v| (v == "PW").then(|| "from-env".to_string()))
        .unwrap();
    assert_eq!(c.users[0].password.as_ref().unwrap().expose(), "from-env");
    assert!(!c.to_redacted_toml().contains("from-env"));
}

#[test]
fn admin_token_from_env_is_resolved_and_redacted() {
    let mut c: Config =
        toml::from_str(&format!("{ISSUE_EXAMPLE}\n[admin]\ntoken_env = \"TOK\"\n")).unwrap();
    c.resolve_passwords(|v| (v == "TOK").then(|| "tok-value".to_string()))
        .unwrap();
    assert_eq!(c.admin.token.as_ref().unwrap().expose(), "tok-value");
    assert!(!c.to_redacted_toml().contains("tok-value"));
    let e = err_of(&format!(
        "{ISSUE_EXAMPLE}\n[admin]\ntoken = \"a\"\ntoken_env = \"TOK\"\n"
    ));
    assert!(e.contains("admin.token_env"), "{e}");
    let e = err_of(&format!("{ISSUE_EXAMPLE}\n[admin]\ntoken = \"\"\n"));
    assert!(e.contains("admin.token"), "{e}");
}

#[test]
fn server_tls_modes_need_what_they_use() {
    let with = |section: &str| format!("{ISSUE_EXAMPLE}\n[server_tls]\n{section}\n");
    let c = Config::parse(ISSUE_EXAMPLE).unwrap();
    assert_eq!(c.server_tls.mode, ServerTlsMode::Disable);
    let c = Config::parse(&with("mode = \"require\"")).unwrap();
    assert_eq!(c.server_tls.mode, ServerTlsMode::Require);
    let c = Config::parse(&with("mode = \"verify-full\"\nca_file = \"/ca.pem\"")).unwrap();
    assert_eq!(c.server_tls.mode, ServerTlsMode::VerifyFull);
    assert!(c.to_redacted_toml().contains("verify-full"));
    for (section, key, why) in [
        ("mode = \"verify-full\"", "server_tls.ca_file", "required"),
        ("mode = \"verify-ca\"", "server_tls.ca_file", "required"),
        (
            "mode = \"require\"\nca_file = \"/ca.pem\"",
            "server_tls.ca_file",
            "verify-ca",
        ),
        ("ca_file = \"/ca.pem\"", "server_tls.ca_file", "not used"),
        (
            "mode = \"require\"\ncert_file = \"/c.pem\"",
            "server_tls.cert_file",
            "together",
        ),
        (
            "cert_file = \"/c.pem\"\nkey_file = \"/k.pem\"",
            "server_tls.cert_file",
            "disable",
        ),
    ] {
        let e = err_of(&with(section));
        assert!(e.contains(key) && e.contains(why), "{section}: {e}");
    }
    let e = err_of(&with("mode = \"prefer\""));
    assert!(e.contains("prefer"), "{e}");
}

#[test]
fn a_syntax_error_says_where_without_quoting_the_file() {
    let text =
        format!("{ISSUE_EXAMPLE}\n[[users]]\nname = \"b\"\npassword = \"hunter2-secret\" oops\n");
    let e = err_of(&text);
    assert!(!e.contains("hunter2-secret"), "{e}");
    let line = text.lines().position(|l| l.contains("oops")).unwrap() + 1;
    assert!(e.contains(&format!("line {line}, column 29")), "{e}");
}

#[test]
fn every_listener_binds_loopback_by_default() {
    let minimal = "[[backends]]\nname = \"a\"\naddress = \"h:1\"\n[[users]]\nname = \"u\"\npassword = \"p\"\n";
    let c = Config::parse(minimal).unwrap();
    assert_eq!(c.listen.admin, SocketAddr::from(([127, 0, 0, 1], 9930)));
    assert!(c.listen.admin.ip().is_loopback());
    assert!(c.listen.read_write.ip().is_loopback());
    assert!(c.listen.read_only.ip().is_loopback());
    assert!(!c.admin_exposed());
    let open = format!("[listen]\nadmin = \"0.0.0.0:9930\"\n{minimal}");
    assert!(Config::parse(&open).unwrap().admin_exposed());
    let guarded = format!("{open}[admin]\ntoken = \"t\"\n");
    assert!(!Config::parse(&guarded).unwrap().admin_exposed());
}

#[test]
fn admin_users_must_be_configured_users() {
    let c = Config::parse(&format!("{ISSUE_EXAMPLE}\n[admin]\nusers = [\"app\"]\n")).unwrap();
    assert_eq!(c.admin.users, ["app"]);
    assert!(!c.admin.console_on_read_only);
    let e = err_of(&format!(
        "{ISSUE_EXAMPLE}\n[admin]\nusers = [\"app\", \"ops\"]\n"
    ));
    assert!(e.contains("admin.users[1]") && e.contains("ops"), "{e}");
    let shown = c.to_redacted_toml();
    assert!(shown.contains("users = [\"app\"]"), "{shown}");
    assert!(shown.contains("console_on_read_only = false"), "{shown}");
}
