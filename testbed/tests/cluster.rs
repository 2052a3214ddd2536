//! Integration tests for `pgsplit_testbed`: they start real PostgreSQL
//! clusters (primary + streaming replicas) and exercise every operation the
//! other tests rely on.

use pgsplit_testbed::{Cluster, ClusterOptions};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pgsplit_testbed=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn start(replicas: usize) -> Cluster {
    init_tracing();
    let t = Instant::now();
    let c = Cluster::start(ClusterOptions {
        replicas,
        ..Default::default()
    })
    .expect("starting testbed cluster");
    eprintln!(
        "Cluster::start with {replicas} replicas took {:?} ({})",
        t.elapsed(),
        c.dir().display()
    );
    c
}

/// Processes (pids) whose working directory lies under `dir`; postgres
/// server processes chdir into their data directory.
fn processes_under(dir: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
            // A deleted cwd reads as "<path> (deleted)".
            if cwd.starts_with(dir) || cwd.to_string_lossy().starts_with(&*dir.to_string_lossy()) {
                found.push(pid);
            }
        }
    }
    found
}

fn refuses(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_err()
}

fn assert_cleaned_up(dir: &Path, ports: &[u16], data_dirs: &[PathBuf]) {
    assert!(!dir.exists(), "{} still exists", dir.display());
    for d in data_dirs {
        assert!(
            !d.join("postmaster.pid").exists(),
            "{} still has postmaster.pid",
            d.display()
        );
    }
    let procs = processes_under(dir);
    assert!(
        procs.is_empty(),
        "processes still running from {}: {procs:?}",
        dir.display()
    );
    for &p in ports {
        assert!(refuses(p), "port {p} still accepts connections");
    }
}

#[test]
fn replication_pause_promote_repoint_and_cleanup() {
    let mut c = start(2);
    assert_eq!(c.nodes().len(), 3);
    let names: Vec<&str> = c.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["pg1", "pg2", "pg3"]);
    for n in c.nodes() {
        assert!(n.data_dir.starts_with(c.dir()));
        assert!(n.log_file().starts_with(c.dir()));
    }

    // Roles.
    assert_eq!(c.psql(0, "SELECT pg_is_in_recovery()").unwrap(), "f");
    assert_eq!(c.psql(1, "SELECT pg_is_in_recovery()").unwrap(), "t");
    assert_eq!(c.psql(2, "SELECT pg_is_in_recovery()").unwrap(), "t");
    assert_eq!(
        c.psql(
            0,
            "SELECT application_name || ':' || state FROM pg_stat_replication ORDER BY 1"
        )
        .unwrap(),
        "pg2:streaming\npg3:streaming"
    );
    assert_eq!(
        c.psql(0, "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
            .unwrap(),
        "pg2\npg3"
    );
    // Settings other code relies on.
    assert_eq!(c.psql(1, "SHOW hot_standby_feedback").unwrap(), "on");
    assert_eq!(c.psql(2, "SHOW max_connections").unwrap(), "300");
    assert_eq!(c.psql(1, "SHOW port").unwrap(), c.node(1).port.to_string());
    assert_eq!(
        c.psql(2, "SHOW unix_socket_directories").unwrap(),
        c.socket_dir().to_string_lossy()
    );

    // Write on the primary, read on a replica.
    c.psql_db(
        0,
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one');",
    )
    .unwrap();
    c.wait_caught_up(0, 1, WAIT).unwrap();
    c.wait_caught_up(0, 2, WAIT).unwrap();
    assert_eq!(
        c.psql_db(1, "app", "SELECT v FROM t WHERE id = 1").unwrap(),
        "one"
    );
    assert_eq!(
        c.psql_db(2, "app", "SELECT v FROM t WHERE id = 1").unwrap(),
        "one"
    );

    // Paused replay hides new rows until resumed.
    c.pause_replay(1).unwrap();
    c.psql_db(0, "app", "INSERT INTO t VALUES (2, 'two')")
        .unwrap();
    c.wait_caught_up(0, 2, WAIT).unwrap();
    assert_eq!(c.psql_db(2, "app", "SELECT count(*) FROM t").unwrap(), "2");
    assert!(c.wait_caught_up(0, 1, Duration::from_millis(500)).is_err());
    assert_eq!(c.psql_db(1, "app", "SELECT count(*) FROM t").unwrap(), "1");
    c.resume_replay(1).unwrap();
    c.wait_caught_up(0, 1, WAIT).unwrap();
    assert_eq!(c.psql_db(1, "app", "SELECT count(*) FROM t").unwrap(), "2");

    // Failover: crash pg1, promote pg2.
    c.wait_caught_up(0, 1, WAIT).unwrap();
    c.wait_caught_up(0, 2, WAIT).unwrap();
    c.stop_node(0, true).unwrap();
    assert!(refuses(c.node(0).port));
    c.promote(1).unwrap();
    assert_eq!(c.psql(1, "SELECT pg_is_in_recovery()").unwrap(), "f");

    // pg3 follows pg2.
    c.repoint_replica(2, 1).unwrap();
    assert_eq!(
        c.psql(2, "SELECT status, sender_port FROM pg_stat_wal_receiver")
            .unwrap(),
        format!("streaming|{}", c.node(1).port)
    );
    c.wait_streaming(1, 1, WAIT).unwrap();
    c.psql_db(1, "app", "INSERT INTO t VALUES (3, 'three')")
        .unwrap();
    c.wait_caught_up(1, 2, WAIT).unwrap();
    assert_eq!(
        c.psql_db(2, "app", "SELECT v FROM t WHERE id = 3").unwrap(),
        "three"
    );

    // The old primary can come back (as a diverged primary; that is fine
    // for the testbed) and is stopped again by shutdown.
    c.start_node(0).unwrap();
    assert_eq!(c.psql(0, "SELECT pg_is_in_recovery()").unwrap(), "f");

    let dir = c.dir().to_path_buf();
    let ports: Vec<u16> = c.nodes().iter().map(|n| n.port).collect();
    let data_dirs: Vec<PathBuf> = c.nodes().iter().map(|n| n.data_dir.clone()).collect();
    assert!(!processes_under(&dir).is_empty());
    c.shutdown();
    assert_cleaned_up(&dir, &ports, &data_dirs);
    c.shutdown(); // idempotent
    drop(c);
}

#[test]
fn password_logins() {
    let c = start(1);
    let who = "SELECT current_user";
    assert_eq!(c.psql_as(0, "app", "app", Some("app"), who).unwrap(), "app");
    assert_eq!(
        c.psql_as(0, "app", "app_md5", Some("app_md5"), who)
            .unwrap(),
        "app_md5"
    );
    assert_eq!(
        c.psql_as(0, "app", "app_trust", None, who).unwrap(),
        "app_trust"
    );
    // Replicas got the roles through the base backup.
    assert_eq!(c.psql_as(1, "app", "app", Some("app"), who).unwrap(), "app");
    assert_eq!(
        c.psql_as(1, "app", "app_md5", Some("app_md5"), who)
            .unwrap(),
        "app_md5"
    );
    // Wrong or missing passwords are rejected.
    assert!(c.psql_as(0, "app", "app", Some("nope"), who).is_err());
    assert!(c.psql_as(0, "app", "app", None, who).is_err());
    assert!(c.psql_as(0, "app", "app_md5", Some("nope"), who).is_err());
    // Password storage formats.
    let stored = |role: &str| {
        c.psql(
            0,
            &format!(
                "SELECT coalesce(rolpassword, '<null>') FROM pg_authid WHERE rolname = '{role}'"
            ),
        )
        .unwrap()
    };
    assert!(
        stored("app").starts_with("SCRAM-SHA-256$"),
        "{}",
        stored("app")
    );
    assert!(
        stored("app_md5").starts_with("md5"),
        "{}",
        stored("app_md5")
    );
    assert_eq!(stored("app_trust"), "<null>");
    // app owns db app; the others may create tables in its public schema.
    assert_eq!(
        c.psql(
            0,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"
        )
        .unwrap(),
        "app"
    );
    c.psql_as(
        0,
        "app",
        "app_md5",
        Some("app_md5"),
        "CREATE TABLE by_md5 (x int)",
    )
    .unwrap();
    c.psql_as(0, "app", "app_trust", None, "CREATE TABLE by_trust (x int)")
        .unwrap();
    c.psql_as(0, "app", "app", Some("app"), "CREATE TABLE by_app (x int)")
        .unwrap();
    // psql errors carry the server's message.
    let err = c
        .psql(0, "SELECT * FROM no_such_table")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_table"), "{err}");
}

#[test]
fn drop_cleans_up_even_on_panic() {
    let (dir, ports, data_dirs) = {
        let c = start(1);
        let info = (
            c.dir().to_path_buf(),
            c.nodes().iter().map(|n| n.port).collect::<Vec<_>>(),
            c.nodes()
                .iter()
                .map(|n| n.data_dir.clone())
                .collect::<Vec<_>>(),
        );
        let info2 = info.clone();
        // Panic while the cluster is alive; unwinding drops it.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _c = c;
            assert!(!refuses(info2.1[0]));
            panic!("simulated test failure");
        }));
        assert!(r.is_err());
        info
    };
    assert_cleaned_up(&dir, &ports, &data_dirs);
}

#[test]
fn zero_replicas_stop_start_and_drop() {
    let c = start(0);
    assert_eq!(c.nodes().len(), 1);
    assert_eq!(
        c.psql(0, "SELECT count(*) FROM pg_stat_replication")
            .unwrap(),
        "0"
    );
    c.stop_node(0, false).unwrap();
    assert!(
        c.stop_node(0, false).is_err(),
        "stopping a stopped node must fail"
    );
    c.start_node(0).unwrap();
    assert_eq!(c.psql(0, "SELECT 1").unwrap(), "1");
    let dir = c.dir().to_path_buf();
    let ports: Vec<u16> = c.nodes().iter().map(|n| n.port).collect();
    let data_dirs: Vec<PathBuf> = c.nodes().iter().map(|n| n.data_dir.clone()).collect();
    drop(c);
    assert_cleaned_up(&dir, &ports, &data_dirs);
}

#[test]
fn concurrent_clusters_do_not_collide() {
    init_tracing();
    let handles: Vec<_> = (0..3)
        .map(|k| {
            std::thread::spawn(move || {
                let c = Cluster::start(ClusterOptions {
                    replicas: 1,
                    extra_conf: vec![format!("application_name = 'tb{k}'")],
                })
                .expect("start");
                c.psql(
                    0,
                    &format!("CREATE TABLE mark (k int); INSERT INTO mark VALUES ({k})"),
                )
                .unwrap();
                c.wait_caught_up(0, 1, WAIT).unwrap();
                assert_eq!(c.psql(1, "SELECT k FROM mark").unwrap(), k.to_string());
                let ports: Vec<u16> = c.nodes().iter().map(|n| n.port).collect();
                (c.dir().to_path_buf(), ports)
            })
        })
        .collect();
    let results: Vec<(PathBuf, Vec<u16>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut all_ports: Vec<u16> = results.iter().flat_map(|r| r.1.clone()).collect();
    all_ports.sort();
    all_ports.dedup();
    assert_eq!(all_ports.len(), 6, "ports must be distinct: {results:?}");
    for (dir, ports) in &results {
        assert_cleaned_up(dir, ports, &[]);
    }
}
