//! Real client drivers through pgsplit, used unchanged but for the port:
//! psycopg 3 (Python) and node-postgres (Node). Each runs a standalone script
//! from tests/drivers/ against a fresh cluster; the script prints one line per
//! check and exits non-zero on the first failure.
//!
//! The drivers are installed by `tests/drivers/install.sh`. A missing driver
//! fails the test with the install command, unless `PGSPLIT_SKIP_DRIVERS=1`.
//! `PYTHON` picks the interpreter (default `python3`). To investigate, run a
//! script by hand against any pgsplit with `PGSPLIT_RW_PORT`/`PGSPLIT_RO_PORT`
//! set, `DRIVER_CHECKS_KEEP_GOING=1` to see every failure and
//! `DRIVER_CHECKS_ONLY=name,...` to pick checks.

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

fn probe_psycopg() -> Result<(), String> {
    let out = Command::new(python())
        .args(["-c", "import psycopg; print(psycopg.__version__)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot import psycopg: {}",
            python(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
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

/// Runs `program script` against a fresh pgsplit and asserts it succeeded.
async fn run_driver_script(what: &str, probe: Probe, program: &str, script: &str, install: &str) {
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

    let env = Env::start(Setup::default()).await;
    let mut cmd = Command::new(program);
    cmd.arg(drivers_dir().join(script))
        .current_dir(drivers_dir());
    // libpq's PG* variables (PGSSLMODE, PGOPTIONS, ...) would change what the
    // scripts test; the scripts' own settings are all in their conninfo.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("PGSPLIT_RW_PORT", env.rw.to_string())
        .env("PGSPLIT_RO_PORT", env.ro.to_string());
    let started = Instant::now();
    let (status, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_with_timeout(cmd, SCRIPT_TIMEOUT))
            .await
            .expect("script runner")
            .unwrap_or_else(|e| panic!("cannot run {program} {script}: {e}"));
    let elapsed = started.elapsed();
    drop(env);
    let Some(status) = status else {
        panic!(
            "{script} did not finish within {SCRIPT_TIMEOUT:?} and was killed.\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}"
        );
    };
    let report = format!(
        "{script} finished in {:.1}s with {status}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
        elapsed.as_secs_f64()
    );
    assert!(status.success(), "{what} checks failed.\n{report}");
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
    run_driver_script(
        "psycopg 3",
        probe_psycopg,
        &python(),
        "psycopg_check.py",
        "pip install -r tests/drivers/requirements.txt",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_works_through_pgsplit() {
    run_driver_script(
        "node-postgres (pg)",
        probe_node_pg,
        "node",
        "node_pg_check.js",
        "npm ci --prefix tests/drivers",
    )
    .await;
}
