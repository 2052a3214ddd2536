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
