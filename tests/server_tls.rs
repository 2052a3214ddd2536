//! TLS towards backends (`[server_tls]`) against a real cluster with
//! `ssl = on`, its certificate signed by a CA made here: `disable` talks
//! plain, `require` encrypts without checking, `verify-ca` checks the chain,
//! `verify-full` the chain and the host name; a wrong CA, a wrong name or a
//! server that refuses TLS fail with an error naming the backend. Sessions'
//! connections, the probes and the position poller all follow the setting,
//! as the servers' own `pg_stat_ssl` shows.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use pgsplit::app::Proxy;
use pgsplit::config::{Config, ServerTls, ServerTlsMode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A CA and its PEM file.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    file: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    let file = dir.join(format!("{name}.pem"));
    std::fs::write(&file, cert.pem()).unwrap();
    Ca { cert, key, file }
}

/// Gives every node a certificate for `localhost` (only: not 127.0.0.1)
/// signed by `ca`, in its data directory, and turns `ssl` on.
fn enable_ssl(env: &Env, ca: &Ca) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    for (i, node) in env.cluster.nodes().iter().enumerate() {
        let owner = std::fs::metadata(&node.data_dir).unwrap();
        for (name, pem) in [
            ("server.crt", cert.pem()),
            ("server.key", key.serialize_pem()),
        ] {
            let path = node.data_dir.join(name);
            std::fs::write(&path, pem).unwrap();
            // PostgreSQL wants its key private to the server's user.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        }
        for setting in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ] {
            env.cluster.psql(i, setting).unwrap();
        }
    }
}

fn settings(mode: ServerTlsMode, ca_file: Option<&Path>) -> ServerTls {
    ServerTls {
        mode,
        ca_file: ca_file.map(Path::to_path_buf),
        cert_file: None,
        key_file: None,
    }
}

/// A pgsplit in front of `env`'s cluster with `tls`, its backends
/// addressed by `host`.
async fn proxy(env: &Env, tls: ServerTls, host: &str) -> Proxy {
    let mut config: Config = config_for(&env.cluster);
    for (b, node) in config.backends.iter_mut().zip(env.cluster.nodes()) {
        b.address = format!("{host}:{}", node.port);
    }
    config.server_tls = tls;
    config.health.failover_timeout_ms = 2000;
    config.validate().unwrap();
    Proxy::start(config).await.expect("pgsplit starts")
}

/// Waits until `proxy` sees the primary and the replica.
async fn ready(proxy: &Proxy) {
    let topology = &proxy.shared.topology;
    let mut changes = topology.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let snapshot = topology.snapshot();
        if snapshot.primary.is_some() && !snapshot.read_schedule.is_empty() {
            return;
        }
        tokio::time::timeout_at(deadline, changes.changed())
            .await
            .unwrap_or_else(|_| panic!("pgsplit never saw the cluster: {:#?}", topology.snapshot()))
            .unwrap();
    }
}

/// Waits until every backend's last probe failed with an error containing
/// `what`; returns the errors.
async fn probes_fail(proxy: &Proxy, what: &str) -> Vec<String> {
    let mut errors = Vec::new();
    eventually(Duration::from_secs(15), "the probes fail", || {
        errors = proxy
            .shared
            .topology
            .snapshot()
            .backends
            .iter()
            .map(|b| format!("{}: {}", b.name, b.last_error.clone().unwrap_or_default()))
            .collect();
        let done = errors.iter().all(|e| e.contains(what));
        async move { done }
    })
    .await;
    errors
}

/// Connects as app through `port` and says whether the session's server
/// connection (on the primary) uses TLS.
async fn session_uses_tls(env: &Env, port: u16) -> Result<bool, tokio_postgres::Error> {
    let client = env.try_connect(port, "app").await?;
    let row = client
        .query_one(
            "/* pgsplit:primary */ SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The pids of node `i`'s probe and poller connections (application name
/// `pgsplit-health`) as a SQL array literal: the harness's own pgsplit
/// holds some, plain, before any pgsplit under test starts.
fn health_pids(env: &Env, i: usize) -> String {
    let pids = env
        .cluster
        .psql(
            i,
            "SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity \
             WHERE application_name = 'pgsplit-health'",
        )
        .unwrap();
    format!("'{{{pids}}}'::int[]")
}

/// Whether node `i` has probe or poller connections (application name
/// `pgsplit-health`) besides those in `before` (see `health_pids`), and
/// every one of them uses TLS.
fn own_connections_use_tls(env: &Env, i: usize, before: &str) -> bool {
    env.cluster
        .psql(
            i,
            &format!(
                "SELECT count(*) > 0 AND bool_and(s.ssl) FROM pg_stat_ssl s \
                 JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'pgsplit-health' AND NOT (a.pid = ANY({before}))"
            ),
        )
        .unwrap()
        == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_follows_the_mode_for_sessions_probes_and_the_poller() {
    let env = Env::start(Setup::default().replicas(1)).await;
    let dir = env.cluster.dir().join("pgsplit-ca");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = ca(&dir, "backend-ca");
    let other = ca_other(&dir);

    // Before ssl = on: a server that refuses TLS.
    let refused = proxy(&env, settings(ServerTlsMode::Require, None), "127.0.0.1").await;
    let errors = probes_fail(&refused, "does not support TLS").await;
    assert!(errors.iter().any(|e| e.starts_with("pg1: ")), "{errors:?}");
    let port = refused.read_write_addr.port();
    let e = env.try_connect(port, "app").await.expect_err("no backend");
    assert_eq!(sqlstate(&e), "08001", "{}", message(&e));
    assert!(message(&e).contains("pg1"), "{}", message(&e));
    drop(refused);

    enable_ssl(&env, &ca);
    let harness = [health_pids(&env, 0), health_pids(&env, 1)];
    // The harness's own pgsplit (plain) still talks plain once ssl is on.
    assert!(!session_uses_tls(&env, env.rw).await.unwrap());

    // require: encrypted, whatever the certificate.
    let require = proxy(&env, settings(ServerTlsMode::Require, None), "127.0.0.1").await;
    ready(&require).await;
    let port = require.read_write_addr.port();
    eventually(Duration::from_secs(10), "a TLS session", || async {
        session_uses_tls(&env, port).await.unwrap_or(false)
    })
    .await;
    // The probes, on both nodes.
    assert!(own_connections_use_tls(&env, 0, &harness[0]));
    assert!(own_connections_use_tls(&env, 1, &harness[1]));
    drop(require);

    // verify-full with the right CA and the certificate's name: sessions,
    // probes and the position poller (a write, then a read that waits for
    // the replica's position).
    let full = proxy(
        &env,
        settings(ServerTlsMode::VerifyFull, Some(&ca.file)),
        "localhost",
    )
    .await;
    ready(&full).await;
    let port = full.read_write_addr.port();
    assert!(session_uses_tls(&env, port).await.unwrap());
    let client = env.try_connect(port, "app").await.unwrap();
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS tls_t (v int); INSERT INTO tls_t VALUES (1)")
        .await
        .unwrap();
    let row = client
        .query_one("SELECT count(*) FROM tls_t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    // The read after the write asks the position poller for positions.
    let admin = full.admin_addr;
    eventually(Duration::from_secs(10), "the poller asks", || async move {
        let (_, metrics) = http_get(admin, "/metrics").await;
        metrics.lines().any(|l| {
            l.starts_with("pgsplit_internal_queries_total")
                && l.contains("kind=\"position\"")
                && !l.ends_with(" 0")
        })
    })
    .await;
    // The probes' and the poller's connections alike.
    assert!(own_connections_use_tls(&env, 0, &harness[0]));
    assert!(own_connections_use_tls(&env, 1, &harness[1]));
    drop(full);

    // verify-ca: the chain counts, the name does not.
    let by_ca = proxy(
        &env,
        settings(ServerTlsMode::VerifyCa, Some(&ca.file)),
        "127.0.0.1",
    )
    .await;
    ready(&by_ca).await;
    assert!(session_uses_tls(&env, by_ca.read_write_addr.port())
        .await
        .unwrap());
    drop(by_ca);

    // verify-full with a wrong CA: every backend fails, by name.
    let wrong_ca = proxy(
        &env,
        settings(ServerTlsMode::VerifyFull, Some(&other)),
        "localhost",
    )
    .await;
    let errors = probes_fail(&wrong_ca, "certificate").await;
    assert!(errors.iter().any(|e| e.starts_with("pg1: ")), "{errors:?}");
    let e = env
        .try_connect(wrong_ca.read_write_addr.port(), "app")
        .await
        .expect_err("an unknown issuer");
    assert_eq!(sqlstate(&e), "08001");
    assert!(
        message(&e).contains("pg1") && message(&e).contains("UnknownIssuer"),
        "{}",
        message(&e)
    );
    drop(wrong_ca);

    // verify-full with the right CA but a name the certificate lacks.
    let wrong_name = proxy(
        &env,
        settings(ServerTlsMode::VerifyFull, Some(&ca.file)),
        "127.0.0.1",
    )
    .await;
    let errors = probes_fail(&wrong_name, "certificate").await;
    assert!(
        errors.iter().all(|e| e.contains("not valid for name")),
        "{errors:?}"
    );
    let (status, body) = http_get(wrong_name.admin_addr, "/status").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("pg1") && body.contains("not valid for name"),
        "{body}"
    );
}

/// A second CA that signed nothing the cluster uses.
fn ca_other(dir: &Path) -> PathBuf {
    ca(dir, "other-ca").file
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
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
