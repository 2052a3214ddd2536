//! No password, SCRAM secret or admin token ever shows: pgsplit runs
//! (in-process, every log line captured at its most verbose) through logins
//! with right and wrong passwords over SCRAM and md5, psql and
//! tokio-postgres, a password change by reload, a reload refused for a
//! syntax error on a password's line, and admin requests with and without
//! the token, and the admin console's SHOW commands; then the logs,
//! `/metrics`, `/status`, `/events`, the console's answers, the admin
//! replies and `--check` (on the good file and on the bad one) are searched
//! for every secret.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use pgsplit::config::{AuthMethod, Secret, User};

const USER: &str = "secret_user";
const PASSWORD: &str = "Pw-7f3a9c-first";
const NEW_PASSWORD: &str = "Pw-51d0e2-second";
const WRONG_PASSWORD: &str = "Pw-0bad0c-wrong";
const TOKEN: &str = "Tok-9e8d7c-admin";

/// Every log line of the process, as written.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(Default::default)
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug,pgsplit=trace"))
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
}

/// The configuration file: the harness's backends, the secret user and
/// the token, md5 or SCRAM.
fn config_file(env: &Env, password: &str, method: &str) -> String {
    let mut text = format!(
        "[listen]\nread_write = \"127.0.0.1:0\"\nread_only = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [auth]\nmethod = \"{method}\"\n[admin]\ntoken = \"{TOKEN}\"\nusers = [\"{USER}\"]\n[health]\ninterval_ms = 200\n"
    );
    for node in env.cluster.nodes() {
        text.push_str(&format!(
            "[[backends]]\nname = \"{}\"\naddress = \"{}\"\n",
            node.name,
            node.addr()
        ));
    }
    text.push_str(&format!(
        "[[users]]\nname = \"app\"\npassword = \"app\"\n[[users]]\nname = \"{USER}\"\npassword = \"{password}\"\n"
    ));
    text
}

async fn login(env: &Env, password: &str) -> Result<(), tokio_postgres::Error> {
    let mut config = env.pg_config(env.rw, USER);
    config.password(password);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await?;
    Ok(())
}

async fn http(env: &Env, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(env.admin).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn check(path: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(["--config", path.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_metrics_status_or_check() {
    capture_logs();
    let env = Env::start(Setup::default().replicas(1).tweak(|c| {
        c.admin.token = Some(Secret::new(TOKEN));
        c.admin.users.push(USER.into());
        c.users.push(User {
            name: USER.into(),
            password: Some(Secret::new(PASSWORD)),
            password_env: None,
        });
    }))
    .await;
    env.cluster
        .psql(
            0,
            &format!(
                "CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'; GRANT ALL ON DATABASE app TO {USER}"
            ),
        )
        .unwrap();
    // In the cluster's directory: removed with it, even when this fails.
    let file = env.cluster.dir().join("pgsplit-secrets.toml");
    env.proxy().shared.set_config_path(file.clone());

    // SCRAM, both drivers, right and wrong.
    login(&env, PASSWORD)
        .await
        .expect("the right password logs in");
    let e = login(&env, WRONG_PASSWORD)
        .await
        .expect_err("a wrong password");
    assert_eq!(sqlstate(&e), "28P01");
    let conninfo = format!("user={USER} dbname=app");
    let out = env.psql(env.rw, &conninfo, PASSWORD, &["-c", "SELECT 1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.psql(env.rw, &conninfo, WRONG_PASSWORD, &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    let mut seen = String::from_utf8_lossy(&out.stderr).into_owned();
    let scram = env
        .proxy()
        .shared
        .users
        .load()
        .get(USER)
        .unwrap()
        .scram
        .clone()
        .unwrap();

    // A password change, by reload, with md5 towards clients.
    env.cluster
        .psql(0, &format!("ALTER ROLE {USER} PASSWORD '{NEW_PASSWORD}'"))
        .unwrap();
    std::fs::write(&file, config_file(&env, NEW_PASSWORD, "md5")).unwrap();
    let (status, reply) = http(&env, "POST", "/reload", Some(TOKEN)).await;
    assert_eq!(status, 200, "{reply}");
    seen.push_str(&reply);
    assert_eq!(
        env.proxy().shared.config.load().auth.method,
        AuthMethod::Md5
    );
    login(&env, NEW_PASSWORD)
        .await
        .expect("the new password logs in (md5)");
    let e = login(&env, PASSWORD).await.expect_err("the old password");
    assert_eq!(sqlstate(&e), "28P01");
    let check_good = check(&file);
    assert!(check_good.contains("<redacted>"), "{check_good}");

    // A reload refused: a syntax error on the password's own line.
    let bad = config_file(&env, NEW_PASSWORD, "md5").replace(
        &format!("\"{NEW_PASSWORD}\""),
        &format!("\"{NEW_PASSWORD}\" oops"),
    );
    std::fs::write(&file, &bad).unwrap();
    let (status, reply) = http(&env, "POST", "/reload", Some(TOKEN)).await;
    assert_ne!(status, 200, "{reply}");
    seen.push_str(&reply);
    let check_bad = check(&file);
    assert!(check_bad.contains("line"), "{check_bad}");

    // The admin console (database pgsplit), where the configuration,
    // clients and servers are shown.
    let out = env.psql(
        env.rw,
        &format!("user={USER} dbname=pgsplit"),
        NEW_PASSWORD,
        &[
            "-c",
            "SHOW CONFIG",
            "-c",
            "SHOW CLIENTS",
            "-c",
            "SHOW SERVERS",
            "-c",
            "SHOW POOLS",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(console.contains("<redacted>"), "{console}");

    // The admin port, with and without the token.
    let (status, metrics) = http(&env, "GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("pgsplit_client_errors_total"), "{metrics}");
    let (status, status_json) = http(&env, "GET", "/status", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(status_json.contains("backends"), "{status_json}");
    let (status, events) = http(&env, "GET", "/events", Some(TOKEN)).await;
    assert_eq!(status, 200, "{events}");
    let (status, refused) = http(&env, "GET", "/status", Some(WRONG_PASSWORD)).await;
    assert_eq!(status, 401);
    seen.push_str(&refused);
    drop(env);

    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    // The logs saw what happened: every login and both reloads.
    assert!(logs.contains("28P01") && logs.contains(USER), "{logs}");
    assert!(logs.contains("configuration reload refused"), "{logs}");

    let verifier = scram.verifier();
    let (_, keys) = verifier.rsplit_once('$').unwrap();
    let (stored_key, server_key) = keys.split_once(':').unwrap();
    let md5_secret = postgres_protocol::password::md5(NEW_PASSWORD.as_bytes(), USER);
    let secrets = [
        PASSWORD,
        NEW_PASSWORD,
        WRONG_PASSWORD,
        TOKEN,
        verifier.as_str(),
        stored_key,
        server_key,
        md5_secret.as_str(),
    ];
    for (what, text) in [
        ("the logs", &logs),
        ("/metrics", &metrics),
        ("/status", &status_json),
        ("/events", &events),
        ("the admin console", &console),
        ("--check", &check_good),
        ("--check of a bad file", &check_bad),
        ("admin replies and psql's errors", &seen),
    ] {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{what} show the secret {secret:?}:\n{text}"
            );
        }
    }
}
