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
use pgsplit::testbed::{Cluster, ClusterOptions};

/// What a test wants from its environment.
pub struct Setup {
    pub replicas: usize,
    /// Last word on the proxy's configuration.
    pub tweak: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            replicas: 2,
            tweak: Box::new(|_| {}),
        }
    }
}

impl Setup {
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }
    pub fn tweak(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweak = Box::new(f);
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
        let replicas = setup.replicas;
        let cluster = tokio::task::spawn_blocking(move || {
            Cluster::start(ClusterOptions {
                replicas,
                extra_conf: vec![],
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
        env.wait_for(Duration::from_secs(15), |s| {
            s.complete && s.primary.is_some() && s.read_schedule.len() >= replicas.min(1)
        })
        .await;
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
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.admin)
            .await
            .expect("admin port");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
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
