//! The real binary, as operators run it: config file, signals, exit code.

mod common;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Kills the child if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a configuration for one backend at `pg_port` (user app, password
/// from `PGSPLIT_TEST_PW`), with `extra` TOML sections, into `dir`.
fn write_config(
    dir: &std::path::Path,
    rw: u16,
    admin: u16,
    extra: &str,
    pg_port: u16,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("pgsplit.toml");
    let ro = free_port();
    std::fs::write(
        &config,
        format!(
            "[listen]\nread_write = \"127.0.0.1:{rw}\"\nread_only = \"127.0.0.1:{ro}\"\nadmin = \"127.0.0.1:{admin}\"\n\
             {extra}[health]\ninterval_ms = 200\n\
             [[backends]]\nname = \"pg1\"\naddress = \"127.0.0.1:{pg_port}\"\n[[users]]\nname = \"app\"\npassword_env = \"PGSPLIT_TEST_PW\"\n"
        ),
    )
    .unwrap();
    config
}

/// Whether `/readyz` on the admin port answers 200.
async fn readyz(admin: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    s.read_to_string(&mut out).await.is_ok() && out.starts_with("HTTP/1.1 200")
}

async fn start_cluster() -> pgsplit_testbed::Cluster {
    tokio::task::spawn_blocking(|| {
        pgsplit_testbed::Cluster::start(pgsplit_testbed::ClusterOptions {
            replicas: 0,
            extra_conf: vec![],
        })
    })
    .await
    .unwrap()
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_transaction_commit_then_exits_zero() {
    let cluster = start_cluster().await;
    let (rw, admin) = (free_port(), free_port());
    let dir = Scratch::new("bin");
    let config = write_config(
        &dir,
        rw,
        admin,
        "[limits]\nshutdown_timeout_ms = 10000\n[admin]\ntoken_env = \"PGSPLIT_TEST_TOKEN\"\n",
        cluster.node(0).port,
    );
    let child = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .env("PGSPLIT_TEST_PW", "app")
        .env("PGSPLIT_TEST_TOKEN", "s3cret-token")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut proc = Running(child);
    let ready = || readyz(admin);
    eventually(Duration::from_secs(15), "the binary is ready", ready).await;
    // /readyz (above) and /healthz need no token; the rest do.
    let admin_get = |path: &'static str, auth: Option<&'static str>| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let auth = auth
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(admin_get("/healthz", None)
        .await
        .starts_with("HTTP/1.1 200"));
    let refused = admin_get("/metrics", None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("www-authenticate: Bearer"), "{refused}");
    let wrong = admin_get("/status", Some("s3cret-tokex")).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let metrics = admin_get("/metrics", Some("s3cret-token")).await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("pgsplit_build_info"), "{metrics}");

    let mut pg = tokio_postgres::Config::new();
    pg.host("127.0.0.1")
        .port(rw)
        .user("app")
        .password("app")
        .dbname("app");
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE bin(id int); BEGIN; INSERT INTO bin VALUES (7)")
        .await
        .unwrap();

    let pid = proc.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Readiness goes first; the open transaction still commits.
    eventually(
        Duration::from_secs(5),
        "/readyz stops saying 200",
        || async { !ready().await },
    )
    .await;
    client.batch_execute("COMMIT").await.unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pgsplit did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert_eq!(
        cluster.psql_db(0, "app", "SELECT id FROM bin").unwrap(),
        "7"
    );
    let mut log = String::new();
    std::io::Read::read_to_string(proc.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.lines().all(|l| l.starts_with('{')), "JSON logs: {log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains("s3cret-token"),
        "the token leaked into the log"
    );
    // One line for the session, with its traffic: a Query (CREATE; BEGIN;
    // INSERT) and a COMMIT, both on the primary.
    let ended: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("session ended"))
                && v["fields"]["user"] == "app"
        })
        .collect();
    assert_eq!(ended.len(), 1, "{log}");
    let fields = &ended[0]["fields"];
    assert_eq!(fields["to_primary"], 2, "{log}");
    assert_eq!(fields["to_replica"], 0, "{log}");
    assert!(fields["bytes_in"].as_u64().unwrap() > 50, "{log}");
    assert!(fields["bytes_out"].as_u64().unwrap() > 20, "{log}");
    assert_eq!(fields["listener"], "read_write", "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_new_clients_get_53300_and_the_rest_carry_on() {
    use std::os::unix::process::CommandExt;
    let cluster = start_cluster().await;
    let (rw, admin) = (free_port(), free_port());
    let dir = Scratch::new("fds");
    let config = write_config(
        &dir,
        rw,
        admin,
        "[limits]\nmax_server_connections = 4\n",
        cluster.node(0).port,
    );
    // Room for 160 descriptors: with 4 server connections and pgsplit's
    // own, about 90 clients.
    const LIMIT: libc::rlim_t = 160;
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgsplit"));
    command
        .args(["--config", config.to_str().unwrap()])
        .env("PGSPLIT_TEST_PW", "app")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let _proc = Running(command.spawn().unwrap());
    eventually(Duration::from_secs(15), "the binary is ready", || {
        readyz(admin)
    })
    .await;

    let mut pg = tokio_postgres::Config::new();
    pg.host("127.0.0.1")
        .port(rw)
        .user("app")
        .password("app")
        .dbname("app");
    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..LIMIT {
        match pg.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                clients.push(client);
            }
            Err(e) => {
                assert_eq!(sqlstate(&e), "53300", "{e:?}");
                refused += 1;
            }
        }
    }
    println!("{} clients connected, {refused} refused", clients.len());
    assert!(clients.len() >= 50, "only {} clients", clients.len());
    assert!(refused > 0, "the limit was reached");
    // Every connected client is served, all at once, over 4 connections.
    let queries = clients.iter().map(|c| c.query_one("SELECT 1", &[]));
    for row in futures_util::future::join_all(queries).await {
        assert_eq!(row.unwrap().get::<_, i32>(0), 1);
    }
    // Room again once some leave.
    clients.truncate(clients.len() - 10);
    eventually(Duration::from_secs(5), "a new client gets in", || async {
        pg.connect(tokio_postgres::NoTls).await.is_ok()
    })
    .await;
}
