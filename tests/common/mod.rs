//! Shared harness for integration tests: a real cluster (primary + replicas)
//! with pgsplit started in-process in front of it on free ports.
//!
//! Everything is owned by [`Env`]; dropping it (also when a test panics) shuts
//! the proxy's tasks down with the runtime and stops the cluster.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

use pgsplit::app::Proxy;
use pgsplit::config::{AuthMethod, Backend, Config, Secret, User};
use pgsplit_testbed::{Cluster, ClusterOptions};

/// What a test wants from its environment.
pub struct Setup {
    pub replicas: usize,
    /// Wait for pgsplit to see the primary and replicas before returning.
    pub wait_ready: bool,
    /// Last word on the proxy's configuration.
    pub tweak: Box<dyn FnOnce(&mut Config) + Send>,
    /// Extra postgresql.conf lines for every node (see
    /// [`ClusterOptions::extra_conf`]).
    pub extra_conf: Vec<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            replicas: 2,
            wait_ready: true,
            tweak: Box::new(|_| {}),
            extra_conf: Vec::new(),
        }
    }
}

impl Setup {
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }
    /// Appends lines to every node's postgresql.conf (after the testbed's
    /// own settings), e.g. `shared_preload_libraries = 'pg_stat_statements'`.
    pub fn extra_conf<S: Into<String>>(mut self, lines: impl IntoIterator<Item = S>) -> Self {
        self.extra_conf.extend(lines.into_iter().map(Into::into));
        self
    }
    /// Adds a change to the configuration, after the ones already added.
    pub fn tweak(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        let before = self.tweak;
        self.tweak = Box::new(move |c| {
            before(c);
            f(c);
        });
        self
    }
}

pub struct Env {
    pub proxy: Option<Proxy>,
    pub cluster: Cluster,
    pub rw: u16,
    pub ro: u16,
    pub admin: std::net::SocketAddr,
}

/// The configuration the harness gives pgsplit for `cluster`: free ports,
/// every node a backend (weight 1), users app / app_md5 / app_trust whose
/// passwords equal their names, fast probes.
pub fn config_for(cluster: &Cluster) -> Config {
    let mut c = Config::parse("[[backends]]\nname = \"x\"\naddress = \"h:1\"\n[[users]]\nname = \"u\"\npassword = \"p\"\n")
        .expect("minimal config parses");
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    c.listen.read_write = any;
    c.listen.read_only = any;
    c.listen.admin = any;
    c.health.interval_ms = 200;
    c.health.timeout_ms = 1000;
    c.health.failover_timeout_ms = 5000;
    c.limits.login_timeout_ms = 5000;
    c.auth.method = AuthMethod::ScramSha256;
    c.backends = cluster
        .nodes()
        .iter()
        .map(|n| Backend {
            name: n.name.clone(),
            address: n.addr().to_string(),
            weight: 1,
        })
        .collect();
    c.users = ["app", "app_md5", "app_trust"]
        .iter()
        .map(|u| User {
            name: u.to_string(),
            password: Some(Secret::new(*u)),
            password_env: None,
        })
        .collect();
    c
}

impl Env {
    /// Starts a cluster and pgsplit, and waits until pgsplit has probed every
    /// backend and sees the primary and all replicas.
    pub async fn start(setup: Setup) -> Env {
        init_logging();
        let replicas = setup.replicas;
        let wait_ready = setup.wait_ready;
        let extra_conf = setup.extra_conf;
        let cluster = tokio::task::spawn_blocking(move || {
            Cluster::start(ClusterOptions {
                replicas,
                extra_conf,
            })
        })
        .await
        .expect("cluster task")
        .expect("cluster starts");
        let mut config = config_for(&cluster);
        (setup.tweak)(&mut config);
        config.validate().expect("test config is valid");
        let proxy = Proxy::start(config).await.expect("proxy starts");
        let env = Env {
            rw: proxy.read_write_addr.port(),
            ro: proxy.read_only_addr.port(),
            admin: proxy.admin_addr,
            proxy: Some(proxy),
            cluster,
        };
        if wait_ready {
            env.wait_for(Duration::from_secs(15), |s| {
                s.complete && s.primary.is_some() && s.read_schedule.len() >= replicas
            })
            .await;
        }
        env
    }

    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("proxy running")
    }

    /// Waits until the topology snapshot satisfies `cond`; panics after `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        cond: impl Fn(&pgsplit::topology::Snapshot) -> bool,
    ) {
        let topology = &self.proxy().shared.topology;
        let mut changes = topology.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = topology.snapshot();
            if cond(&s) {
                return;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                panic!("topology condition not met within {timeout:?}; last snapshot: {s:#?}");
            }
        }
    }

    pub fn primary_port(&self) -> u16 {
        self.cluster.node(0).port
    }

    pub fn replica_ports(&self) -> Vec<u16> {
        self.cluster.nodes()[1..].iter().map(|n| n.port).collect()
    }

    /// tokio-postgres config for `user` (password = user name) on `port`, db app.
    pub fn pg_config(&self, port: u16, user: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(port)
            .user(user)
            .password(user)
            .dbname("app")
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// Connects as app through `port`.
    pub async fn connect(&self, port: u16) -> tokio_postgres::Client {
        self.try_connect(port, "app")
            .await
            .expect("connect through pgsplit")
    }

    pub async fn try_connect(
        &self,
        port: u16,
        user: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self
            .pg_config(port, user)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Runs psql through pgsplit (`conninfo` appended to host/port) with `args`.
    pub fn psql(&self, port: u16, conninfo: &str, password: &str, args: &[&str]) -> Output {
        let conn = format!("host=127.0.0.1 port={port} connect_timeout=10 {conninfo}");
        Command::new("psql")
            .arg(conn)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .env("PGPASSWORD", password)
            .env_remove("PGSERVICE")
            .output()
            .expect("psql runs")
    }

    /// GET `path` on the admin port; returns (status, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        self.http("GET", path).await
    }

    /// POST `path` (no body) on the admin port; returns (status, body).
    pub async fn http_post(&self, path: &str) -> (u16, String) {
        self.http("POST", path).await
    }

    async fn http(&self, method: &str, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.admin)
            .await
            .expect("admin port");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Stops pgsplit (sessions get 57P01 at their next idle point).
    pub async fn stop_proxy(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// The SQLSTATE of a tokio-postgres error, or "" if it carries none.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond().await {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hand-driven client for feeding pgsplit bytes no driver would send.
pub struct RawClient {
    pub stream: tokio::net::TcpStream,
}

impl RawClient {
    pub async fn connect(port: u16) -> RawClient {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        RawClient { stream }
    }

    /// Connects and logs in with a plain StartupMessage; needs `auth.method = "trust"`.
    pub async fn login_trust(port: u16, user: &str) -> RawClient {
        let mut c = RawClient::connect(port).await;
        let packet = startup_packet(0, &[("user", user), ("database", "app")]);
        c.send(&packet).await;
        loop {
            let (tag, body) = c.recv().await.expect("login reply");
            assert_ne!(
                tag,
                b'E',
                "login failed: {}",
                String::from_utf8_lossy(&body)
            );
            if tag == b'Z' {
                return c;
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Next message, or None on EOF/reset. Panics after 10 s of silence.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let read = async {
            let mut header = [0u8; 5];
            self.stream.read_exact(&mut header).await.ok()?;
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut body = vec![0u8; len.saturating_sub(4)];
            self.stream.read_exact(&mut body).await.ok()?;
            Some((header[0], body))
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("pgsplit answered within 10 s")
    }

    /// Reads until an ErrorResponse and returns its SQLSTATE and message;
    /// then asserts the connection is closed.
    pub async fn expect_fatal(&mut self) -> (String, String) {
        loop {
            let (tag, body) = self
                .recv()
                .await
                .expect("an ErrorResponse before the connection closes");
            if tag == b'E' {
                let fields = error_fields(&body);
                assert!(
                    self.recv().await.is_none(),
                    "connection closed after the error"
                );
                return fields;
            }
        }
    }
}

/// (SQLSTATE, message) of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|&b| b == 0) {
        match field.first() {
            Some(b'C') => code = String::from_utf8_lossy(&field[1..]).into_owned(),
            Some(b'M') => message = String::from_utf8_lossy(&field[1..]).into_owned(),
            _ => {}
        }
    }
    (code, message)
}

/// Logs from pgsplit go to the test's captured output (shown on failure);
/// level from PGSPLIT_LOG, default info.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSPLIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The server's message of a tokio-postgres error (its Display says only "db error").
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// A StartupMessage for protocol 3.`minor` with these parameters.
pub fn startup_packet(minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&3u16.to_be_bytes());
    body.extend_from_slice(&minor.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    packet
}

/// A query running through pgsplit on its own connection, named by
/// `application_name` so tests can find its server backend.
pub struct Sleeper {
    pub query: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    pub connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Env {
    /// Starts `SELECT pg_sleep(secs)` through `port` as `name` and returns once
    /// node `node` shows it running.
    pub async fn start_sleeper(&self, port: u16, node: usize, name: &str, secs: u32) -> Sleeper {
        let mut cfg = self.pg_config(port, "app");
        cfg.application_name(name);
        let (client, connection) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
        let connection = tokio::spawn(connection);
        // On the read-write port a plain read would go to a replica.
        let sql = format!("/* pgsplit:primary */ SELECT pg_sleep({secs})");
        let query = tokio::spawn(async move { client.simple_query(&sql).await.map(|_| ()) });
        let check = format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}' AND state = 'active'");
        eventually(Duration::from_secs(5), "the query runs", || async {
            self.cluster.psql(node, &check).unwrap() == "1"
        })
        .await;
        Sleeper { query, connection }
    }

    /// psql through pgsplit that must succeed; returns its output.
    pub fn psql_ok(&self, port: u16, conninfo: &str, args: &[&str]) -> String {
        let out = self.psql(port, conninfo, "app", args);
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The error of a connection attempt that must fail.
pub async fn connect_err(config: &tokio_postgres::Config) -> tokio_postgres::Error {
    match config.connect(tokio_postgres::NoTls).await {
        Ok(_) => panic!("the connection was expected to fail"),
        Err(e) => e,
    }
}

/// The port of the server that answered, through the extended protocol (a
/// named prepared statement: the session then holds server state).
/// Where this session's writes go: `served_by` with a primary hint (on the
/// read-write port a plain read may be served by a replica).
pub async fn primary_of(c: &tokio_postgres::Client) -> u16 {
    let port: i32 = c
        .query_one("/* pgsplit:primary */ SELECT inet_server_port()", &[])
        .await
        .expect("SELECT inet_server_port()")
        .get(0);
    port as u16
}

pub async fn served_by(c: &tokio_postgres::Client) -> u16 {
    let port: i32 = c
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("SELECT inet_server_port()")
        .get(0);
    port as u16
}

/// Runs `sql` as app on the primary, directly, and waits until every
/// replica has replayed it.
pub fn fixture(env: &Env, sql: &str) {
    env.cluster
        .psql_as(0, "app", "app", Some("app"), sql)
        .expect("fixture");
    for i in 1..env.cluster.nodes().len() {
        env.cluster
            .wait_caught_up(0, i, Duration::from_secs(30))
            .expect("replica catches up");
    }
}

/// A scratch directory under the temp dir (`pgsplit-<name>-<pid>`), made
/// empty, and removed when dropped: by a failing test too.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pgsplit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
