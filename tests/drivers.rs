//! Real client drivers through pgsplit, used unchanged but for the port:
//! psycopg 3 and asyncpg (Python), node-postgres (Node), PgJDBC (Java) and
//! pgx v4 (Go). Each runs a standalone script from tests/drivers/ against a
//! fresh cluster (primary + 2 replicas, `max_prepared_transactions = 10` on
//! every node for psycopg's two-phase commit); the script prints one line per
//! check and exits non-zero on the first failure. tokio-postgres'
//! `target_session_attrs` is checked here in Rust.
//!
//! PgJDBC, asyncpg and pgx keep named prepared statements across
//! transactions, in their statement caches, and drop the ones they evict
//! (protocol Close, or SQL DEALLOCATE for pgx and psycopg with libpq < 17):
//! their scripts stress what a pooling proxy must get right about them.
//!
//! The drivers are installed by `tests/drivers/install.sh` (pip, npm, and
//! Debian's packages for PgJDBC, a JDK, Go and pgx). A missing driver fails
//! the test with the install command, unless `PGSPLIT_SKIP_DRIVERS=1`.
//! `PYTHON` picks the interpreter (default `python3`). To investigate, run a
//! script by hand against any pgsplit (or straight against PostgreSQL) with
//! `PGSPLIT_RW_PORT`/`PGSPLIT_RO_PORT` set, `DRIVER_CHECKS_KEEP_GOING=1` to
//! see every failure and `DRIVER_CHECKS_ONLY=name,...` to pick checks:
//!
//! ```text
//! python3 tests/drivers/psycopg_check.py
//! python3 tests/drivers/asyncpg_check.py
//! node tests/drivers/node_pg_check.js
//! java -cp /usr/share/java/postgresql.jar tests/drivers/JdbcCheck.java
//! GO111MODULE=off GOPATH=/usr/share/gocode go run tests/drivers/pgx_check.go
//! ```

mod common;
use common::*;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest a whole script may run before it is killed and the test fails.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers")
}

fn skip_requested() -> bool {
    std::env::var("PGSPLIT_SKIP_DRIVERS").is_ok_and(|v| v == "1")
}

/// Ok(()) if the driver can be used; Err(why) otherwise.
type Probe = fn() -> Result<(), String>;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Ok if `python()` can import `module`.
fn python_imports(module: &str) -> Result<(), String> {
    let out = Command::new(python())
        .args(["-c", &format!("import {module}")])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot import {module}: {}",
            python(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn probe_psycopg() -> Result<(), String> {
    python_imports("psycopg")
}

fn probe_node_pg() -> Result<(), String> {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    if !out.status.success() {
        return Err("node --version failed".into());
    }
    let modules = drivers_dir().join("node_modules");
    for package in ["pg", "pg-copy-streams"] {
        if !modules.join(package).join("package.json").is_file() {
            return Err(format!("{} is missing", modules.join(package).display()));
        }
    }
    Ok(())
}

fn probe_asyncpg() -> Result<(), String> {
    python_imports("asyncpg")
}

/// Debian's PgJDBC jar.
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

fn probe_jdbc() -> Result<(), String> {
    if !Path::new(JDBC_JAR).is_file() {
        return Err(format!("{JDBC_JAR} is missing"));
    }
    // The single-file launcher compiles the check: it needs a JDK, not a JRE.
    let out = Command::new("javac")
        .arg("-version")
        .output()
        .map_err(|e| format!("cannot run javac: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err("javac -version failed".into())
    }
}

/// Where Debian's Go packages keep their sources (a GOPATH).
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

fn probe_pgx() -> Result<(), String> {
    let pgx = Path::new(DEBIAN_GOPATH).join("src/github.com/jackc/pgx/v4");
    if !pgx.is_dir() {
        return Err(format!("{} is missing", pgx.display()));
    }
    let out = Command::new("go")
        .arg("version")
        .output()
        .map_err(|e| format!("cannot run go: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err("go version failed".into())
    }
}

/// One driver's check script and how to run it.
struct Script {
    /// The driver, as named in messages.
    what: &'static str,
    probe: Probe,
    /// The program and the arguments before the script's path.
    command: Vec<String>,
    /// File name under tests/drivers/.
    script: &'static str,
    /// Extra environment for the program.
    env: Vec<(&'static str, String)>,
    /// The command that installs the driver.
    install: &'static str,
}

/// postgresql.conf lines for the drivers' cluster: psycopg's two-phase commit
/// check needs prepared transactions (a replica needs at least the
/// primary's value, so every node gets it).
const DRIVER_CLUSTER_CONF: &[&str] = &["max_prepared_transactions = 10"];

/// Runs `script` against a fresh pgsplit and asserts it succeeded.
async fn run_driver_script(script: Script) {
    let Script {
        what,
        probe,
        command,
        script,
        env: extra_env,
        install,
    } = script;
    if let Err(why) = probe() {
        if skip_requested() {
            println!("SKIPPED: {what} checks ({why}); PGSPLIT_SKIP_DRIVERS=1 is set");
            return;
        }
        panic!(
            "{what} is not installed: {why}.\nInstall it with `{install}` \
             (or `bash tests/drivers/install.sh`), or set PGSPLIT_SKIP_DRIVERS=1 to skip."
        );
    }

    let env = Env::start(Setup::default().extra_conf(DRIVER_CLUSTER_CONF.iter().copied())).await;
    // Every check in transaction mode (the default), through both ports.
    run_checks(what, &command, script, &extra_env, env.rw, env.ro, None).await;
    // LISTEN again with a connection per client, as in PgBouncer's session
    // mode.
    let mut config = config_for(&env.cluster);
    config.pool.mode = pgsplit::config::PoolMode::Session;
    let session = pgsplit::app::Proxy::start(config)
        .await
        .expect("a session-mode pgsplit");
    let topology = &session.shared.topology;
    let mut changes = topology.subscribe();
    while !topology.snapshot().complete {
        tokio::time::timeout(Duration::from_secs(15), changes.changed())
            .await
            .expect("the session-mode pgsplit sees the cluster")
            .unwrap();
    }
    run_checks(
        what,
        &command,
        script,
        &extra_env,
        session.read_write_addr.port(),
        session.read_only_addr.port(),
        Some("LISTEN"),
    )
    .await;
    drop(session);
    drop(env);
}

/// Runs a driver's script (or, with `only`, its checks whose names contain
/// it) against pgsplit's ports and asserts it succeeded.
async fn run_checks(
    what: &str,
    command: &[String],
    script: &'static str,
    extra_env: &[(&'static str, String)],
    rw: u16,
    ro: u16,
    only: Option<&str>,
) {
    let (program, args) = command.split_first().expect("a command");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg(drivers_dir().join(script))
        .current_dir(drivers_dir());
    // libpq's PG* variables (PGSSLMODE, PGOPTIONS, ...) would change what the
    // scripts test (pgx reads them too); the scripts' own settings are all in
    // their conninfo.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&name);
        }
    }
    cmd.envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PGSPLIT_RW_PORT", rw.to_string())
        .env("PGSPLIT_RO_PORT", ro.to_string());
    if let Some(only) = only {
        cmd.env("DRIVER_CHECKS_ONLY", only);
    }
    let mode = if only.is_some() {
        "session mode"
    } else {
        "transaction mode"
    };
    let started = Instant::now();
    let (status, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_with_timeout(cmd, SCRIPT_TIMEOUT))
            .await
            .expect("script runner")
            .unwrap_or_else(|e| panic!("cannot run {program} {script}: {e}"));
    let elapsed = started.elapsed();
    let Some(status) = status else {
        panic!(
            "{script} did not finish within {SCRIPT_TIMEOUT:?} and was killed.\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
        );
    };
    let report = format!(
        "{script} ({mode}) finished in {:.1}s with {status}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
        elapsed.as_secs_f64()
    );
    assert!(status.success(), "{what} checks failed ({mode}).\n{report}");
    println!("{report}");
}

/// Runs `cmd` to its end or until `limit` (then kills it: status None),
/// collecting its output either way.
fn run_with_timeout(
    mut cmd: Command,
    limit: Duration,
) -> std::io::Result<(Option<ExitStatus>, String, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let err = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    ))
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_works_through_pgsplit() {
    run_driver_script(Script {
        what: "psycopg 3",
        probe: probe_psycopg,
        command: vec![python()],
        script: "psycopg_check.py",
        env: vec![],
        install: "pip install -r tests/drivers/requirements.txt",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_works_through_pgsplit() {
    run_driver_script(Script {
        what: "node-postgres (pg)",
        probe: probe_node_pg,
        command: vec!["node".into()],
        script: "node_pg_check.js",
        env: vec![],
        install: "npm ci --prefix tests/drivers",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_works_through_pgsplit() {
    run_driver_script(Script {
        what: "asyncpg",
        probe: probe_asyncpg,
        command: vec![python()],
        script: "asyncpg_check.py",
        env: vec![],
        install: "pip install -r tests/drivers/requirements.txt",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_works_through_pgsplit() {
    run_driver_script(Script {
        what: "PgJDBC",
        probe: probe_jdbc,
        // The single-file launcher compiles and runs the check in one go.
        command: vec!["java".into(), "-cp".into(), JDBC_JAR.into()],
        script: "JdbcCheck.java",
        env: vec![],
        install: "apt-get install libpostgresql-jdbc-java default-jdk-headless",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgx_works_through_pgsplit() {
    run_driver_script(Script {
        what: "pgx v4",
        probe: probe_pgx,
        command: vec!["go".into(), "run".into()],
        script: "pgx_check.go",
        // Debian ships Go libraries as sources in a GOPATH and no module
        // proxy is used: build in GOPATH mode, offline. The build cache
        // lives in target/ (the first build takes a few seconds).
        env: vec![
            ("GO111MODULE", "off".into()),
            ("GOPATH", DEBIAN_GOPATH.into()),
            ("GOFLAGS", String::new()),
            ("GOPROXY", "off".into()),
            (
                "GOCACHE",
                Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join("go-build")
                    .display()
                    .to_string(),
            ),
        ],
        install: "apt-get install golang-go golang-github-jackc-pgx-v4-dev",
    })
    .await;
}

/// tokio-postgres with `target_session_attrs` runs `SHOW transaction_read_only`
/// after logging in and drops a server whose answer does not fit. The
/// read-write port takes writes, so `read-write` must be accepted there (and
/// the write must work) and `read-only` refused; the read-only port is the
/// other way round. Checked straight against the primary and a replica
/// first, so the expectations are the driver's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_target_session_attrs() {
    use tokio_postgres::config::TargetSessionAttrs::{ReadOnly, ReadWrite};

    let env = Env::start(Setup::default()).await;
    let replica = env.replica_ports()[0];
    let mut failures = Vec::new();
    let cases = [
        ("primary, directly", env.primary_port(), ReadWrite, Ok(())),
        (
            "replica, directly",
            replica,
            ReadWrite,
            Err("database does not allow writes"),
        ),
        ("read-write port", env.rw, ReadWrite, Ok(())),
        (
            "read-write port",
            env.rw,
            ReadOnly,
            Err("database is not read only"),
        ),
        ("read-only port", env.ro, ReadOnly, Ok(())),
        (
            "read-only port",
            env.ro,
            ReadWrite,
            Err("database does not allow writes"),
        ),
    ];
    for (place, port, attrs, want) in cases {
        let what = format!("target_session_attrs={attrs:?} on the {place}");
        let mut config = env.pg_config(port, "app");
        config.target_session_attrs(attrs);
        let connected = config.connect(tokio_postgres::NoTls).await;
        match (connected, want) {
            (Ok((client, connection)), Ok(())) => {
                tokio::spawn(connection);
                if let Err(why) = use_session(&client, attrs == ReadWrite).await {
                    failures.push(format!("{what}: connected, but {why}"));
                }
            }
            (Ok(_), Err(refusal)) => {
                failures.push(format!(
                    "{what}: connected, but the driver should refuse it ({refusal})"
                ));
            }
            (Err(e), Ok(())) => failures.push(format!("{what}: refused: {}", chain(&e))),
            (Err(e), Err(refusal)) => {
                if !chain(&e).contains(refusal) {
                    failures.push(format!(
                        "{what}: failed with `{}`, expected `{refusal}`",
                        chain(&e)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "target_session_attrs:\n  {}",
        failures.join("\n  ")
    );
}

/// An error and its causes, `: `-separated (tokio-postgres' Display shows
/// only "error connecting to server").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A write (for a read-write session) or a read on a session the driver accepted.
async fn use_session(client: &tokio_postgres::Client, write: bool) -> Result<(), String> {
    if write {
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS drv_tsa (id int)")
            .await
            .map_err(|e| format!("CREATE TABLE failed: {}", message(&e)))?;
        let row = client
            .query_one("INSERT INTO drv_tsa VALUES (1) RETURNING id", &[])
            .await
            .map_err(|e| format!("INSERT failed: {}", message(&e)))?;
        if row.get::<_, i32>(0) != 1 {
            return Err("INSERT RETURNING returned a wrong id".into());
        }
    } else {
        let row = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| format!("SELECT failed: {}", message(&e)))?;
        if !row.get::<_, bool>(0) {
            return Err("the read-only session is not on a replica".into());
        }
    }
    Ok(())
}

#[path = "drivers/record.rs"]
mod record;

/// Records the driver checks' traffic and writes the fuzz targets' seed
/// corpora from it (see `drivers/record.rs`). Manual: it rewrites
/// `fuzz/corpus/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes fuzz/corpus/; run by hand to refresh the seeds"]
async fn record_driver_traffic() {
    let env = Env::start(Setup::default().extra_conf(DRIVER_CLUSTER_CONF.iter().copied())).await;
    let recordings = record::Recordings::default();
    let rw = record::relay(env.rw, recordings.clone()).await;
    let ro = record::relay(env.ro, recordings.clone()).await;
    let scripts: [(&str, Probe, Vec<String>, &'static str); 4] = [
        (
            "psycopg 3",
            probe_psycopg,
            vec![python()],
            "psycopg_check.py",
        ),
        ("asyncpg", probe_asyncpg, vec![python()], "asyncpg_check.py"),
        (
            "node-postgres",
            probe_node_pg,
            vec!["node".into()],
            "node_pg_check.js",
        ),
        (
            "PgJDBC",
            probe_jdbc,
            vec!["java".into(), "-cp".into(), JDBC_JAR.into()],
            "JdbcCheck.java",
        ),
    ];
    for (what, probe, command, script) in scripts {
        match probe() {
            Ok(()) => run_checks(what, &command, script, &[], rw, ro, None).await,
            Err(why) => println!("recording without {what}: {why}"),
        }
    }
    // Let the relays see every connection's end.
    drop(env);
    let recordings: Vec<record::Recording> = recordings
        .lock()
        .unwrap()
        .iter()
        .map(|r| std::mem::take(&mut *r.lock().unwrap()))
        .collect();
    println!("recorded {} connections", recordings.len());
    let written = record::write_seeds(&record::corpus_dir(), record::seeds(&recordings), 150);
    println!("seeds written: {written:?}");
    for target in ["startup", "client_framing", "classify", "server_stream"] {
        assert!(
            written.iter().any(|(t, n)| *t == target && *n > 0),
            "no seeds for {target}: {written:?}"
        );
    }
}
