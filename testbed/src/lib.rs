//! Disposable, real PostgreSQL clusters: one primary plus N streaming
//! replicas on free loopback ports, for integration tests, `pgsplit demo`
//! and the benchmark scripts.
//!
//! This is a crate of its own so that the proxy library ships no process
//! control (`runuser`, `pg_ctl`, pid checks and kills): pgsplit's tests and
//! benches take it as a dev-dependency, and only the binary's default `demo`
//! feature (`pgsplit demo`, `pgsplit testbed`) links it. It must not depend on
//! `pgsplit`.
//!
//! A [`Cluster`] owns, and is the only thing that touches:
//!
//! - a fresh directory `$TMPDIR/pgsplit-testbed-<pid>-<seq>-<nonce>` (mode
//!   0755) holding every node's data directory (`pg1`, `pg2`, ...), every
//!   node's server log (`pg1.log`, ...) and the nodes' shared unix socket
//!   directory (`sock`);
//! - the postmaster of each node, listening on `127.0.0.1:<port>` only.
//!
//! Dropping a `Cluster` -- including while a test unwinds from a panic --
//! stops exactly those postmasters (`pg_ctl stop -m immediate` on their data
//! directories; if that fails, the pid from `postmaster.pid` is killed after
//! checking that the process really is a `postgres` whose working directory is
//! that data directory) and removes the directory. Nothing is ever killed by
//! name.
//!
//! What every cluster contains (other code relies on it):
//!
//! - nodes `pg1` (primary) and `pg2`, `pg3`, ... (replicas streaming from
//!   `pg1` through physical slots named after them, `application_name` = node
//!   name);
//! - on every node: `listen_addresses = '127.0.0.1'`, the socket directory
//!   above, `fsync = off`, `full_page_writes = off`, `synchronous_commit = on`,
//!   `wal_level = replica`, `max_wal_senders = 10`, `max_replication_slots = 10`,
//!   `hot_standby = on`, `hot_standby_feedback = on`,
//!   `wal_receiver_status_interval = 1s`, `max_connections = 300`,
//!   `shared_buffers = 64MB`, `log_min_messages = warning`,
//!   `logging_collector = off`, then [`ClusterOptions::extra_conf`], then the
//!   node's port (from `pgsplit_node.conf` in its data dir);
//! - `pg_hba.conf`: `app_trust` trust, `app_md5` md5, `postgres` trust,
//!   replication trust, everyone else scram-sha-256 (all on 127.0.0.1/32), and
//!   local trust;
//! - roles `app` (password `app`, stored as SCRAM), `app_md5` (password
//!   `app_md5`, stored as md5), `app_trust` (no password); database `app` owned
//!   by `app`, on which `app_md5` and `app_trust` have all privileges, as on
//!   its `public` schema. Encoding UTF8, locale C.
//!
//! Process-wide state kept by this crate:
//!
//! - the PostgreSQL bin directory, found once (see [`pg_bin_dir`]; override
//!   with `PGSPLIT_PG_BIN`);
//! - whether the process runs as root: PostgreSQL refuses to, so then every
//!   server-side program (`initdb`, `pg_ctl`, `pg_basebackup`) is run as the
//!   `postgres` OS user through `runuser`, and everything under the cluster
//!   directory is owned by `postgres`;
//! - an `initdb` template directory, `$TMPDIR/pgsplit-testbed-template-<pid>-<nonce>`,
//!   made once per process and copied for each new primary. It cannot be
//!   removed reliably at process exit, so it is left behind; the first
//!   `Cluster::start` of any later process removes leftover template and
//!   cluster directories whose creating process is gone (stopping any server
//!   still running from them), except those marked by [`Cluster::keep`].
//!
//! Everything is blocking (std::process); call it from `spawn_blocking` or a
//! plain thread when inside a tokio runtime. Linux only: process identity
//! checks and the sweep read `/proc`.

mod cleanup;
mod env;
mod files;
mod node;

pub use env::pg_bin_dir;
pub use node::Node;

use anyhow::{anyhow, bail, Context, Result};
use cleanup::{stop_server_hard, sweep_stale_dirs};
use env::{pg_env, scrub_pg_env, server_cmd, PgEnv};
use files::{
    check_socket_path_len, check_traversable_by_others, copy_tree, create_unique_dir, make_dir,
    remove_dir_retrying, template_data_dir, write_file,
};
use node::{
    conninfo_quote, create_replica, output_text, pg_ctl_start, replica_conninfo, sql_quote,
    start_new_node, BOOTSTRAP_SQL, HBA_CONF,
};
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the PostgreSQL bin directory to use.
pub const PG_BIN_ENV: &str = "PGSPLIT_PG_BIN";

/// The OS user that runs the servers when this process is root.
const PG_OS_USER: &str = "postgres";
/// Prefix of every directory this crate creates under the temp dir.
const DIR_PREFIX: &str = "pgsplit-testbed-";
const TEMPLATE_TAG: &str = "template-";
/// Marker file: a cluster directory containing it is never swept.
const KEEP_MARKER: &str = "KEEP";
/// Per-node settings file, included at the end of `postgresql.conf`.
const NODE_CONF: &str = "pgsplit_node.conf";
/// `sun_path` is 108 bytes including the trailing NUL.
const MAX_SOCKET_PATH: usize = 107;

/// How many fresh ports a new node tries before giving up.
const PORT_ATTEMPTS: usize = 5;
/// `pg_ctl -t` for start and stop.
const PG_CTL_WAIT_SECS: u64 = 120;
/// Limit for replicas to reach `streaming` during [`Cluster::start`] and
/// after [`Cluster::repoint_replica`].
const STREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// Limit for a replay pause/promotion to become visible.
const STATE_TIMEOUT: Duration = Duration::from_secs(90);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const LOG_TAIL_LINES: usize = 30;
/// Replicas set up at the same time (the machines have 2 cores).
const REPLICA_PARALLELISM: usize = 2;
/// With `max_wal_senders = 10`: streaming replicas plus two senders for each
/// base backup in flight must fit.
const MAX_REPLICAS: usize = 8;

/// Options for [`Cluster::start`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of streaming replicas besides the primary, 0 to 8.
    pub replicas: usize,
    /// Extra `postgresql.conf` lines for every node. They come after the
    /// testbed's own settings, so they override them -- except the port,
    /// which the testbed always sets last.
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOptions {
    /// Two replicas, no extra configuration.
    fn default() -> Self {
        ClusterOptions {
            replicas: 2,
            extra_conf: Vec::new(),
        }
    }
}

/// A running primary plus streaming replicas; see the crate docs for what it
/// owns. Node indexes are positions in [`Cluster::nodes`]: 0 is `pg1`.
///
/// Methods taking a node index panic if it is out of range.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    sock_dir: PathBuf,
    env: &'static PgEnv,
    nodes: Vec<Node>,
    keep: bool,
    shut_down: bool,
}

impl Cluster {
    /// Creates and starts a cluster. Blocking.
    ///
    /// Makes a fresh directory, initialises the primary `pg1` (from the
    /// per-process `initdb` template), writes its configuration and
    /// `pg_hba.conf`, starts it, creates the roles `app` (scram-sha-256
    /// password `app`), `app_md5` (md5 password `app_md5`), `app_trust` and
    /// the database `app` owned by `app`; then creates a physical slot named
    /// after each replica, and for each replica (concurrently) takes
    /// `pg_basebackup -R -S <name> -X stream` and starts it; finally waits
    /// until the primary's `pg_stat_replication` shows every replica
    /// `streaming`.
    ///
    /// Each node gets a free port; if a server cannot bind its port (another
    /// process took it in the meantime), it is retried on a new port a few
    /// times. On error, whatever was already started is stopped and the
    /// directory removed; the error includes the tail of the relevant server
    /// log.
    pub fn start(opts: ClusterOptions) -> Result<Cluster> {
        let started = Instant::now();
        if opts.replicas > MAX_REPLICAS {
            bail!(
                "testbed supports at most {MAX_REPLICAS} replicas (max_wal_senders = 10), got {}",
                opts.replicas
            );
        }
        let env = pg_env()?;
        if env.run_as.is_some() {
            check_traversable_by_others(&std::env::temp_dir().join(DIR_PREFIX))?;
        }
        // Fail before any work if the socket path would be too long (the
        // directory name is at most this long; checked exactly below).
        check_socket_path_len(
            &std::env::temp_dir().join(format!("{DIR_PREFIX}4294967295-999999-ffffffff/sock")),
        )?;
        sweep_stale_dirs(env);
        let template = template_data_dir(env)?;
        let root = create_unique_dir(env, &format!("{DIR_PREFIX}{}-", std::process::id()))?;
        let sock_dir = root.join("sock");
        // From here on, dropping `cluster` cleans up whatever exists.
        let mut cluster = Cluster {
            root,
            sock_dir,
            env,
            nodes: Vec::new(),
            keep: false,
            shut_down: false,
        };
        check_socket_path_len(&cluster.sock_dir)?;
        make_dir(env, &cluster.sock_dir, 0o755)?;

        cluster
            .init_primary(template, &opts)
            .context("setting up primary pg1")?;
        // Replicas are independent: take their base backups and start them
        // concurrently. Their slots are made first: pg_basebackup -C would
        // only create a slot after its backup's checkpoint, and the other
        // backup's checkpoint could recycle the WAL it needs in between.
        if opts.replicas > 0 {
            let slots: Vec<String> = (0..opts.replicas)
                .map(|n| {
                    format!(
                        "SELECT pg_create_physical_replication_slot('pg{}', true);",
                        n + 2
                    )
                })
                .collect();
            cluster
                .psql(0, &slots.join("\n"))
                .context("creating replication slots")?;
        }
        // At most REPLICA_PARALLELISM at a time: each running backup holds
        // two WAL senders (base backup + WAL stream).
        let primary = cluster.nodes[0].clone();
        let root = cluster.root.clone();
        let names: Vec<String> = (0..opts.replicas).map(|n| format!("pg{}", n + 2)).collect();
        for batch in names.chunks(REPLICA_PARALLELISM) {
            let results: Vec<(Option<Node>, Result<()>)> = std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|name| {
                        let (primary, root) = (&primary, &root);
                        s.spawn(move || create_replica(env, root, primary, name))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            (None, Err(anyhow!("replica setup thread panicked")))
                        })
                    })
                    .collect()
            });
            let mut first_err = None;
            for (node, result) in results {
                // Register every node that has a data dir, even a failed one,
                // so that shutdown covers it.
                cluster.nodes.extend(node);
                if let (Err(e), None) = (result, &first_err) {
                    first_err = Some(e);
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        cluster.wait_streaming(0, opts.replicas, STREAM_TIMEOUT)?;
        tracing::info!(
            dir = %cluster.root.display(),
            ports = ?cluster.nodes.iter().map(|n| n.port).collect::<Vec<_>>(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "testbed cluster started"
        );
        Ok(cluster)
    }

    /// All nodes, in creation order (`pg1` first).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i` (0 is `pg1`). Panics if out of range.
    pub fn node(&self, i: usize) -> &Node {
        match self.nodes.get(i) {
            Some(n) => n,
            None => panic!(
                "testbed: node index {i} out of range ({} nodes)",
                self.nodes.len()
            ),
        }
    }

    /// The cluster's root directory (data dirs, logs, socket dir).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The unix socket directory shared by all nodes.
    pub fn socket_dir(&self) -> &Path {
        &self.sock_dir
    }

    /// The PostgreSQL bin directory in use.
    pub fn bin_dir(&self) -> &Path {
        &self.env.bin
    }

    /// Runs `sql` as superuser `postgres` in database `postgres` on node `i`
    /// over TCP 127.0.0.1 with `psql -X -A -t -q -v ON_ERROR_STOP=1`, and
    /// returns stdout with surrounding whitespace trimmed (rows separated by
    /// `\n`, columns by `|`).
    ///
    /// The SQL is fed on stdin, so it may hold several statements; each runs
    /// in its own transaction unless wrapped in `BEGIN`/`COMMIT`. Fails, with
    /// psql's stderr, if psql exits non-zero (connection failure or any SQL
    /// error).
    pub fn psql(&self, i: usize, sql: &str) -> Result<String> {
        self.psql_as(i, "postgres", "postgres", None, sql)
    }

    /// Like [`Cluster::psql`], but in database `db` (e.g. `app`).
    pub fn psql_db(&self, i: usize, db: &str, sql: &str) -> Result<String> {
        self.psql_as(i, db, "postgres", None, sql)
    }

    /// Like [`Cluster::psql`], but as `user` in database `db`, sending
    /// `password` (via `PGPASSWORD`) if given. psql never prompts: a server
    /// asking for a password that was not given is an error.
    pub fn psql_as(
        &self,
        i: usize,
        db: &str,
        user: &str,
        password: Option<&str>,
        sql: &str,
    ) -> Result<String> {
        let node = self.node(i);
        let conninfo = format!(
            "host=127.0.0.1 port={} dbname={} user={} connect_timeout=10 sslmode=disable application_name=pgsplit-testbed",
            node.port,
            conninfo_quote(db),
            conninfo_quote(user)
        );
        let mut cmd = Command::new(self.env.psql());
        scrub_pg_env(&mut cmd);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
            "-d",
        ])
        .arg(&conninfo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        let what = format!(
            "psql on {} (port {}, db {db}, user {user})",
            node.name, node.port
        );
        let mut child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = sql.to_owned();
        // Write from a thread so a large result cannot deadlock against a
        // large script.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
            let _ = stdin.write_all(b"\n");
        });
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for {what}"))?;
        let _ = writer.join();
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}\nSQL: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                sql.trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Stops node `i` with `pg_ctl stop -w`, mode `immediate` (crash-like,
    /// for failure injection) or `fast`. Fails if it is not running.
    pub fn stop_node(&self, i: usize, immediate: bool) -> Result<()> {
        let node = self.node(i);
        let mode = if immediate { "immediate" } else { "fast" };
        let out = server_cmd(self.env, "pg_ctl", &self.root)
            .args([
                "stop",
                "-w",
                "-t",
                &PG_CTL_WAIT_SECS.to_string(),
                "-m",
                mode,
                "-D",
            ])
            .arg(&node.data_dir)
            .output()
            .context("spawning pg_ctl stop")?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop -m {mode} of {} failed ({}): {}\n--- {} ---\n{}",
                node.name,
                out.status,
                output_text(&out),
                node.log_file.display(),
                node.log_tail(LOG_TAIL_LINES)
            );
        }
        Ok(())
    }

    /// Starts node `i` again (`pg_ctl start -w`) on its existing data dir and
    /// its port; returns once it accepts connections (a crashed primary has
    /// finished crash recovery; a replica is in recovery, maybe not yet
    /// streaming).
    pub fn start_node(&self, i: usize) -> Result<()> {
        pg_ctl_start(self.env, &self.root, self.node(i)).map_err(|e| e.error)
    }

    /// Promotes node `i` (`SELECT pg_promote(true, 60)`); returns once
    /// `pg_is_in_recovery()` is false there.
    pub fn promote(&self, i: usize) -> Result<()> {
        let name = &self.node(i).name;
        let r = self.psql(i, "SELECT pg_promote(true, 60)")?;
        if r != "t" {
            bail!(
                "pg_promote on {name} returned {r:?} (not promoted within 60s)\n--- log ---\n{}",
                self.node(i).log_tail(LOG_TAIL_LINES)
            );
        }
        self.poll(
            i,
            STATE_TIMEOUT,
            &format!("{name} to leave recovery"),
            || {
                let r = self.psql(i, "SELECT pg_is_in_recovery()")?;
                Ok(if r == "f" {
                    Ok(())
                } else {
                    Err(format!("pg_is_in_recovery = {r}"))
                })
            },
        )
    }

    /// Pauses WAL replay on replica `i` (`pg_wal_replay_pause()`); returns
    /// once the pause is in effect (`pg_get_wal_replay_pause_state()` is no
    /// longer `not paused`), i.e. no WAL written after this call returns
    /// will be replayed there until [`Cluster::resume_replay`].
    pub fn pause_replay(&self, i: usize) -> Result<()> {
        self.psql(i, "SELECT pg_wal_replay_pause()")?;
        let name = &self.node(i).name;
        self.poll(
            i,
            STATE_TIMEOUT,
            &format!("replay on {name} to pause"),
            || {
                let r = self.psql(i, "SELECT pg_get_wal_replay_pause_state()")?;
                Ok(if r == "not paused" {
                    Err(format!("pause state = {r}"))
                } else {
                    Ok(())
                })
            },
        )
    }

    /// Resumes WAL replay on replica `i` (`pg_wal_replay_resume()`); returns
    /// once the pause state is `not paused`.
    pub fn resume_replay(&self, i: usize) -> Result<()> {
        self.psql(i, "SELECT pg_wal_replay_resume()")?;
        let name = &self.node(i).name;
        self.poll(
            i,
            STATE_TIMEOUT,
            &format!("replay on {name} to resume"),
            || {
                let r = self.psql(i, "SELECT pg_get_wal_replay_pause_state()")?;
                Ok(if r == "not paused" {
                    Ok(())
                } else {
                    Err(format!("pause state = {r}"))
                })
            },
        )
    }

    /// Re-points replica `i` at node `primary` (for switchover/failover
    /// tests): makes sure `primary` has a physical replication slot named
    /// after node `i`, sets `primary_conninfo` and `primary_slot_name` on
    /// `i` with `ALTER SYSTEM` + `pg_reload_conf()` (applied without a
    /// restart on PG13+), then waits until `i`'s `pg_stat_wal_receiver` shows
    /// it `streaming` from `primary`'s port.
    ///
    /// The old upstream's slot for `i`, if any, is left alone. Replica `i`
    /// must not have received WAL beyond the point where `primary`'s
    /// timeline forked, or it cannot follow (the error then shows its log).
    pub fn repoint_replica(&self, i: usize, primary: usize) -> Result<()> {
        if i == primary {
            bail!("cannot point node {} at itself", self.node(i).name);
        }
        let replica = self.node(i);
        let upstream = self.node(primary);
        let slot = sql_quote(&replica.name);
        self.psql(
            primary,
            &format!(
                "SELECT pg_create_physical_replication_slot({slot}, true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {slot});"
            ),
        )
        .with_context(|| format!("creating slot {} on {}", replica.name, upstream.name))?;
        let conninfo = replica_conninfo(upstream.port, &replica.name);
        self.psql(
            i,
            &format!(
                "ALTER SYSTEM SET primary_conninfo = {};\n\
                 ALTER SYSTEM SET primary_slot_name = {slot};\n\
                 SELECT pg_reload_conf();",
                sql_quote(&conninfo)
            ),
        )
        .with_context(|| format!("re-pointing {} at {}", replica.name, upstream.name))?;
        let want = format!("streaming|{}", upstream.port);
        self.poll(
            i,
            STREAM_TIMEOUT,
            &format!(
                "{} to stream from {} (port {})",
                replica.name, upstream.name, upstream.port
            ),
            || {
                let r = self.psql(i, "SELECT status, sender_port FROM pg_stat_wal_receiver")?;
                Ok(if r == want {
                    Ok(())
                } else {
                    Err(format!("wal receiver: {r:?}"))
                })
            },
        )
    }

    /// Waits until node `primary` reports at least `n` standbys in state
    /// `streaming` in `pg_stat_replication`, for at most `timeout`. Errors
    /// (connection failures) are retried until the deadline.
    pub fn wait_streaming(&self, primary: usize, n: usize, timeout: Duration) -> Result<()> {
        let name = &self.node(primary).name;
        self.poll(
            primary,
            timeout,
            &format!("{n} streaming standbys on {name}"),
            || {
                let rows = self.psql(
                    primary,
                    "SELECT application_name || ':' || state FROM pg_stat_replication ORDER BY 1",
                )?;
                let streaming = rows.lines().filter(|l| l.ends_with(":streaming")).count();
                Ok(if streaming >= n {
                    Ok(())
                } else {
                    Err(format!(
                        "pg_stat_replication: [{}]",
                        rows.lines().collect::<Vec<_>>().join(", ")
                    ))
                })
            },
        )
    }

    /// Waits, for at most `timeout`, until replica `i` has replayed
    /// everything node `primary` had written when this was called:
    /// `pg_last_wal_replay_lsn()` on `i` >= `pg_current_wal_lsn()` on
    /// `primary` read at call time. (Times out while replay is paused.)
    pub fn wait_caught_up(&self, primary: usize, i: usize, timeout: Duration) -> Result<()> {
        let target = self
            .psql(primary, "SELECT pg_current_wal_lsn()")
            .with_context(|| format!("reading WAL position of {}", self.node(primary).name))?;
        let desc = format!(
            "{} to replay up to {target} (written by {})",
            self.node(i).name,
            self.node(primary).name
        );
        let sql = format!(
            "SELECT pg_last_wal_replay_lsn(), pg_last_wal_replay_lsn() >= {}::pg_lsn",
            sql_quote(&target)
        );
        self.poll(i, timeout, &desc, || {
            let r = self.psql(i, &sql)?;
            Ok(match r.split_once('|') {
                Some((_, "t")) => Ok(()),
                _ => Err(format!("replay lsn: {r:?}")),
            })
        })
    }

    /// Leaves the directory and the servers running when the `Cluster` is
    /// dropped (for handing the cluster to a script, e.g. `pgsplit testbed`)
    /// and protects the directory from the stale-directory sweep of later
    /// processes. The caller then owns cleanup: `pg_ctl stop -D` each data dir
    /// and remove [`Cluster::dir`]. An explicit [`Cluster::shutdown`] still
    /// stops everything.
    pub fn keep(&mut self) {
        self.keep = true;
        if let Err(e) = write_file(
            self.env,
            &self.root.join(KEEP_MARKER),
            "kept by pgsplit testbed\n",
        ) {
            tracing::warn!(error = %e, "testbed: could not write keep marker");
        }
    }

    /// Stops every node (`pg_ctl stop -m immediate`; if that fails, kills the
    /// verified postmaster pid) and removes the directory. Never panics;
    /// problems are logged with `tracing::warn!`. Idempotent. Also what
    /// `Drop` does unless [`Cluster::keep`] was called.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        // Every data dir lives directly under the root: besides the known
        // nodes, cover any that a failed start did not get to register.
        let mut data_dirs: Vec<PathBuf> = self.nodes.iter().map(|n| n.data_dir.clone()).collect();
        if let Ok(entries) = fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let p = e.path();
                if p.join("postmaster.pid").exists() && !data_dirs.contains(&p) {
                    data_dirs.push(p);
                }
            }
        }
        let (env, root) = (self.env, &self.root);
        let all_stopped = std::thread::scope(|s| {
            let handles: Vec<_> = data_dirs
                .iter()
                .map(|d| s.spawn(move || stop_server_hard(env, root, d)))
                .collect();
            let mut ok = true;
            for (h, d) in handles.into_iter().zip(&data_dirs) {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("stop thread panicked")));
                if let Err(e) = r {
                    ok = false;
                    tracing::warn!(data_dir = %d.display(), error = %format!("{e:#}"), "testbed: could not stop server");
                }
            }
            ok
        });
        if !all_stopped {
            tracing::warn!(dir = %self.root.display(), "testbed: leaving directory in place, a server may still use it");
            return;
        }
        if let Err(e) = remove_dir_retrying(&self.root) {
            tracing::warn!(dir = %self.root.display(), error = %e, "testbed: could not remove directory");
        }
    }

    // ---- internals ----

    fn init_primary(&mut self, template: &Path, opts: &ClusterOptions) -> Result<()> {
        let name = "pg1".to_owned();
        let data_dir = self.root.join(&name);
        copy_tree(self.env, template, &data_dir).context("copying initdb template")?;
        let conf_path = data_dir.join("postgresql.conf");
        let mut conf = fs::read_to_string(&conf_path)
            .with_context(|| format!("reading {}", conf_path.display()))?;
        conf.push_str(&self.base_conf(opts));
        write_file(self.env, &conf_path, &conf)?;
        write_file(self.env, &data_dir.join("pg_hba.conf"), HBA_CONF)?;
        self.nodes.push(Node {
            log_file: self.root.join(format!("{name}.log")),
            name,
            port: 0,
            data_dir,
        });
        start_new_node(self.env, &self.root, &mut self.nodes[0])?;
        self.psql(0, BOOTSTRAP_SQL)
            .context("creating roles and database")?;
        self.psql_db(
            0,
            "app",
            "GRANT ALL ON SCHEMA public TO app_md5, app_trust;",
        )
        .context("granting schema privileges")?;
        Ok(())
    }

    fn base_conf(&self, opts: &ClusterOptions) -> String {
        let mut s = String::from("\n# ---- pgsplit testbed ----\n");
        let _ = writeln!(s, "listen_addresses = '127.0.0.1'");
        let _ = writeln!(
            s,
            "unix_socket_directories = {}",
            sql_quote(&self.sock_dir.to_string_lossy())
        );
        s.push_str(
            "fsync = off\n\
             full_page_writes = off\n\
             synchronous_commit = on\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             hot_standby = on\n\
             hot_standby_feedback = on\n\
             wal_receiver_status_interval = 1s\n\
             max_connections = 300\n\
             shared_buffers = 64MB\n\
             log_min_messages = warning\n\
             logging_collector = off\n",
        );
        if !opts.extra_conf.is_empty() {
            s.push_str("# extra_conf\n");
            for line in &opts.extra_conf {
                s.push_str(line);
                s.push('\n');
            }
        }
        let _ = writeln!(
            s,
            "# per-node settings (port)\ninclude_if_exists = '{NODE_CONF}'"
        );
        s
    }

    /// Polls `check` until it yields `Ok(Ok(_))` or `timeout` passes. `Err`
    /// (e.g. a connection failure) and `Ok(Err(note))` both mean "not yet";
    /// the last of them goes into the timeout error with node `i`'s log tail.
    fn poll<T>(
        &self,
        i: usize,
        timeout: Duration,
        desc: &str,
        mut check: impl FnMut() -> Result<std::result::Result<T, String>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check() {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(note)) => note,
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                let mut msg =
                    format!("timed out after {timeout:?} waiting for {desc}; last: {last}");
                for (k, n) in self.nodes.iter().enumerate() {
                    let lines = if k == i { LOG_TAIL_LINES } else { 8 };
                    let _ = write!(
                        msg,
                        "\n--- {} ---\n{}",
                        n.log_file.display(),
                        n.log_tail(lines)
                    );
                }
                bail!(msg);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Cluster {
    /// [`Cluster::shutdown`], unless [`Cluster::keep`] was called.
    fn drop(&mut self) {
        if !self.keep {
            self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests;
