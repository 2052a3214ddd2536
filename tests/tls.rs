//! TLS towards clients with a self-signed certificate, checked by psql.

mod common;
use std::path::PathBuf;

use common::*;
use pgsplit::config::Tls;

struct CertFiles {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn self_signed() -> CertFiles {
    let dir = std::env::temp_dir().join(format!(
        "pgsplit-tls-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    CertFiles { dir, cert, key }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn tls(
    files: &CertFiles,
    required: bool,
) -> impl FnOnce(&mut pgsplit::config::Config) + Send + 'static {
    let (cert_file, key_file) = (files.cert.clone(), files.key.clone());
    move |c| {
        c.tls = Some(Tls {
            cert_file,
            key_file,
            required,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verifies_the_certificate_and_queries_over_tls() {
    let files = self_signed();
    let env = Env::start(Setup::default().replicas(1).tweak(tls(&files, false))).await;
    let root = files.cert.display().to_string();
    for port in [env.rw, env.ro] {
        let conninfo = format!("user=app dbname=app sslmode=verify-full sslrootcert={root}");
        let out = env.psql(port, &conninfo, "app", &["-c", "SELECT 40 + 2"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    }
    // psql reports the TLS session it got.
    let conninfo = format!("user=app dbname=app sslmode=verify-full sslrootcert={root}");
    let out = env.psql(env.rw, &conninfo, "app", &["-c", "\\conninfo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SSL connection (protocol: TLSv1.3"), "{text}");

    // A wrong root certificate is refused by the client.
    let other = self_signed();
    let conninfo = format!(
        "user=app dbname=app sslmode=verify-full sslrootcert={}",
        other.cert.display()
    );
    let out = env.psql(env.rw, &conninfo, "app", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    // Plain clients are still welcome when TLS is not required.
    env.psql_ok(
        env.rw,
        "user=app dbname=app sslmode=disable",
        &["-c", "SELECT 1"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_refuses_plain_clients_with_28000() {
    let files = self_signed();
    let env = Env::start(Setup::default().replicas(0).tweak(tls(&files, true))).await;
    let out = env.psql(
        env.rw,
        "user=app dbname=app sslmode=disable",
        "app",
        &["-c", "SELECT 1"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("requires TLS"), "{err}");
    let err = env
        .try_connect(env.rw, "app")
        .await
        .expect_err("plain tokio-postgres is refused");
    assert_eq!(sqlstate(&err), "28000");
    env.psql_ok(
        env.rw,
        "user=app dbname=app sslmode=require",
        &["-c", "SELECT 1"],
    );
}

/// SCRAM-SHA-256-PLUS over TLS: libpq and tokio-postgres insist on channel
/// binding and get it; where it cannot be (plain TCP, md5) they are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_channel_binding_for_clients_on_tls() {
    use pgsplit::config::{ServerTls, ServerTlsMode};
    use pgsplit::tls::postgres::MakeRustls;
    use tokio_postgres::config::{ChannelBinding, SslMode};

    let files = self_signed();
    let env = Env::start(Setup::default().replicas(0).tweak(tls(&files, false))).await;
    let root = files.cert.display().to_string();
    // libpq: channel_binding=require fails unless the server binds.
    let conninfo = format!(
        "user=app dbname=app sslmode=verify-full sslrootcert={root} channel_binding=require"
    );
    let out = env.psql(env.rw, &conninfo, "app", &["-c", "SELECT 42"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    // The binding does not replace the password.
    let out = env.psql(env.rw, &conninfo, "wrong", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain TCP: nothing to bind to, so PLUS is not offered.
    let out = env.psql(
        env.rw,
        "user=app dbname=app sslmode=disable channel_binding=require",
        "app",
        &["-c", "SELECT 1"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("channel binding"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // tokio-postgres, verifying pgsplit's certificate with pgsplit's own
    // rustls adapter.
    let verify = pgsplit::tls::backend::ServerTls::new(&ServerTls {
        mode: ServerTlsMode::VerifyFull,
        ca_file: Some(files.cert.clone()),
        cert_file: None,
        key_file: None,
    })
    .unwrap()
    .unwrap();
    let mut config = env.pg_config(env.rw, "app");
    config
        .ssl_mode(SslMode::Require)
        .channel_binding(ChannelBinding::Require);
    let (client, connection) = config.connect(MakeRustls::new(&verify)).await.unwrap();
    tokio::spawn(connection);
    let row = client.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
}

/// With md5 there is no SCRAM, so no channel binding: a client that
/// requires it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_cannot_be_had_with_md5() {
    let files = self_signed();
    let env = Env::start(
        Setup::default()
            .replicas(0)
            .tweak(tls(&files, false))
            .tweak(|c| c.auth.method = pgsplit::config::AuthMethod::Md5),
    )
    .await;
    let root = files.cert.display().to_string();
    let conninfo = format!(
        "user=app dbname=app sslmode=verify-full sslrootcert={root} channel_binding=require"
    );
    let out = env.psql(env.rw, &conninfo, "app", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    let conninfo = format!("user=app dbname=app sslmode=verify-full sslrootcert={root}");
    env.psql_ok(env.rw, &conninfo, &["-c", "SELECT 1"]);
}
