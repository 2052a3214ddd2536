//! Disposable, real PostgreSQL clusters: one primary plus N streaming
//! replicas on free loopback ports, for integration tests, `pgsplit demo`
//! and the benchmark scripts.
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
//! Process-wide state kept by this module:
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

use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable naming the PostgreSQL bin directory to use.
pub const PG_BIN_ENV: &str = "PGSPLIT_PG_BIN";

/// The OS user that runs the servers when this process is root.
const PG_OS_USER: &str = "postgres";
/// Prefix of every directory this module creates under the temp dir.
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

/// One PostgreSQL server of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct Node {
    /// `pg1` (the initial primary), `pg2`, `pg3`, ... (the initial replicas).
    /// Also the node's replication slot name and its `application_name` in
    /// `pg_stat_replication` while it streams.
    pub name: String,
    /// TCP port on 127.0.0.1; fixed for the life of the cluster.
    pub port: u16,
    /// The node's data directory (inside [`Cluster::dir`]).
    pub data_dir: PathBuf,
    log_file: PathBuf,
}

impl Node {
    /// The server log file (written by `pg_ctl -l`; appended across restarts).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The last `lines` lines of the server log (empty if there is none yet).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_file, lines)
    }
}

/// A running primary plus streaming replicas; see the module docs for what it
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

struct StartError {
    port_in_use: bool,
    error: anyhow::Error,
}

/// Takes a base backup of `primary` into `<root>/<name>` through the
/// existing slot `<name>`, points it at
/// `primary` and starts it. Returns the node whenever its data dir was
/// (possibly partly) created, so the caller can clean it up.
fn create_replica(
    env: &PgEnv,
    root: &Path,
    primary: &Node,
    name: &str,
) -> (Option<Node>, Result<()>) {
    let mut node = Node {
        name: name.to_owned(),
        port: 0,
        data_dir: root.join(name),
        log_file: root.join(format!("{name}.log")),
    };
    let out = server_cmd(env, "pg_basebackup", root)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            "postgres",
            "-w",
        ])
        .arg("-D")
        .arg(&node.data_dir)
        .args(["-R", "-S", name, "-X", "stream", "-c", "fast", "--no-sync"])
        .output();
    let failure = match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(anyhow!(
            "pg_basebackup of {name} from {} failed ({}): {}\n--- {} ---\n{}",
            primary.name,
            o.status,
            output_text(&o),
            primary.log_file.display(),
            primary.log_tail(LOG_TAIL_LINES)
        )),
        Err(e) => Some(anyhow!(e).context("spawning pg_basebackup")),
    };
    let created = node.data_dir.exists();
    if let Some(e) = failure {
        return (created.then_some(node), Err(e));
    }
    // pg_basebackup -R wrote primary_conninfo and primary_slot_name; replace
    // them so that the node's application_name is its name.
    let auto_conf = format!(
        "# Do not edit this file manually!\n\
         # It will be overwritten by the ALTER SYSTEM command.\n\
         primary_conninfo = {}\n\
         primary_slot_name = {}\n",
        sql_quote(&replica_conninfo(primary.port, name)),
        sql_quote(name)
    );
    let result = write_file(env, &node.data_dir.join("postgresql.auto.conf"), &auto_conf)
        .and_then(|()| start_new_node(env, root, &mut node))
        .with_context(|| format!("setting up replica {name}"));
    (Some(node), result)
}

/// Picks a port for a node that has never run, writes it to the node's
/// include file and starts the server, retrying with a new port when the
/// failure was a port already in use.
fn start_new_node(env: &PgEnv, root: &Path, node: &mut Node) -> Result<()> {
    start_new_node_with(env, root, node, &mut pick_port)
}

fn start_new_node_with(
    env: &PgEnv,
    root: &Path,
    node: &mut Node,
    pick_port: &mut dyn FnMut() -> Result<u16>,
) -> Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        node.port = pick_port()?;
        write_file(
            env,
            &node.data_dir.join(NODE_CONF),
            &format!("# written by pgsplit testbed\nport = {}\n", node.port),
        )?;
        match pg_ctl_start(env, root, node) {
            Ok(()) => return Ok(()),
            Err(e) if e.port_in_use && attempt < PORT_ATTEMPTS => {
                tracing::warn!(node = %node.name, port = node.port, attempt, "testbed: port taken, retrying on another");
            }
            Err(e) => return Err(e.error),
        }
    }
}

/// `pg_ctl start -w` on the node's data dir; the error says whether the log
/// shows that the port was already in use.
fn pg_ctl_start(env: &PgEnv, root: &Path, node: &Node) -> std::result::Result<(), StartError> {
    let log_offset = fs::metadata(&node.log_file).map(|m| m.len()).unwrap_or(0);
    let out = server_cmd(env, "pg_ctl", root)
        .args(["start", "-w", "-t", &PG_CTL_WAIT_SECS.to_string(), "-D"])
        .arg(&node.data_dir)
        .arg("-l")
        .arg(&node.log_file)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Err(StartError {
                port_in_use: false,
                error: anyhow!(e).context("spawning pg_ctl start"),
            })
        }
    };
    if out.status.success() {
        return Ok(());
    }
    let new_log = read_from(&node.log_file, log_offset);
    let port_in_use = (new_log.contains("Address already in use")
        || new_log.contains("could not create any TCP/IP sockets"))
        && !node.data_dir.join("postmaster.pid").exists();
    Err(StartError {
        port_in_use,
        error: anyhow!(
            "pg_ctl start of {} on port {} failed ({}): {}\n--- {} ---\n{}",
            node.name,
            node.port,
            out.status,
            output_text(&out),
            node.log_file.display(),
            last_lines(&new_log, LOG_TAIL_LINES)
        ),
    })
}

const HBA_CONF: &str = "\
# written by pgsplit testbed
host all app_trust 127.0.0.1/32 trust
host all app_md5 127.0.0.1/32 md5
host all postgres 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
local all all trust
";

const BOOTSTRAP_SQL: &str = "\
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD 'app';
SET password_encryption = 'md5';
CREATE ROLE app_md5 LOGIN PASSWORD 'app_md5';
RESET password_encryption;
CREATE ROLE app_trust LOGIN;
CREATE DATABASE app OWNER app;
GRANT ALL ON DATABASE app TO app_md5, app_trust;
";

fn replica_conninfo(upstream_port: u16, name: &str) -> String {
    format!("host=127.0.0.1 port={upstream_port} user=postgres application_name={name}")
}

/// A finished command's stderr and stdout, trimmed, one after the other.
fn output_text(o: &std::process::Output) -> String {
    let (err, out) = (
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout),
    );
    [err.trim(), out.trim()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// SQL / postgresql.conf string literal.
fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// libpq conninfo value.
fn conninfo_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

// ---- process-wide environment ----

/// What every cluster of this process shares.
#[derive(Debug)]
struct PgEnv {
    bin: PathBuf,
    /// uid/gid of the `postgres` OS user when this process is root.
    run_as: Option<(u32, u32)>,
    my_uid: u32,
}

impl PgEnv {
    fn psql(&self) -> PathBuf {
        let p = self.bin.join("psql");
        if p.is_file() {
            p
        } else {
            PathBuf::from("psql")
        }
    }
}

fn pg_env() -> Result<&'static PgEnv> {
    static ENV: OnceLock<std::result::Result<PgEnv, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let bin = pg_bin_dir().map_err(|e| format!("{e:#}"))?;
        let my_uid = effective_uid().map_err(|e| format!("{e:#}"))?;
        let run_as = if my_uid == 0 {
            Some(os_user_ids(PG_OS_USER).map_err(|e| {
                format!("running as root, so the servers must run as OS user {PG_OS_USER:?}: {e:#}")
            })?)
        } else {
            None
        };
        Ok(PgEnv {
            bin,
            run_as,
            my_uid,
        })
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// Finds the PostgreSQL bin directory: `$PGSPLIT_PG_BIN` if set (it must
/// contain `initdb`), else the first of `/usr/lib/postgresql/{17,16,15,14}/bin`
/// holding `initdb`, else `pg_config --bindir`. The error names everything
/// that was tried.
pub fn pg_bin_dir() -> Result<PathBuf> {
    let has_initdb = |d: &Path| d.join("initdb").is_file();
    if let Some(v) = std::env::var_os(PG_BIN_ENV) {
        let d = PathBuf::from(&v);
        if has_initdb(&d) {
            return Ok(d);
        }
        bail!(
            "{PG_BIN_ENV}={} has no initdb (unset it to search the usual places)",
            d.display()
        );
    }
    let mut tried = vec![format!("${PG_BIN_ENV} (unset)")];
    for v in [17, 16, 15, 14] {
        let d = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if has_initdb(&d) {
            return Ok(d);
        }
        tried.push(d.display().to_string());
    }
    match Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => {
            let d = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if has_initdb(&d) {
                return Ok(d);
            }
            tried.push(format!("pg_config --bindir ({}: no initdb)", d.display()));
        }
        Ok(o) => tried.push(format!("pg_config --bindir ({})", o.status)),
        Err(e) => tried.push(format!("pg_config --bindir ({e})")),
    }
    bail!(
        "no PostgreSQL bin directory with initdb found; tried: {}",
        tried.join(", ")
    )
}

fn effective_uid() -> Result<u32> {
    match Command::new("id").arg("-u").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .context("parsing `id -u` output"),
        // /proc/self belongs to the process's effective uid.
        _ => Ok(fs::metadata("/proc/self")
            .context("neither `id -u` nor /proc/self works")?
            .uid()),
    }
}

fn os_user_ids(user: &str) -> Result<(u32, u32)> {
    let get = |flag: &str| -> Result<u32> {
        let o = Command::new("id")
            .args([flag, user])
            .output()
            .context("running id")?;
        if !o.status.success() {
            bail!(
                "`id {flag} {user}` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .context("parsing id output")
    };
    Ok((get("-u")?, get("-g")?))
}

/// Removes `PG*` variables (PGPORT, PGDATA, PGHOST, PGPASSWORD, ...) that
/// would change what the PostgreSQL programs do.
fn scrub_pg_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
}

/// A server-side program (`initdb`, `pg_ctl`, `pg_basebackup`), run as
/// `postgres` through `runuser` when this process is root.
fn server_cmd(env: &PgEnv, prog: &str, cwd: &Path) -> Command {
    let exe = env.bin.join(prog);
    let mut cmd = if env.run_as.is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    scrub_pg_env(&mut cmd);
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

fn pick_port() -> Result<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let port = {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut g = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if g.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    bail!("could not find a free port on 127.0.0.1")
}

// ---- files and directories ----

fn chown_if_root(env: &PgEnv, path: &Path) -> Result<()> {
    if let Some((uid, gid)) = env.run_as {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown postgres {}", path.display()))?;
    }
    Ok(())
}

fn make_dir(env: &PgEnv, path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    chown_if_root(env, path)
}

/// Creates `$TMPDIR/<prefix><seq>-<nonce>` (mode 0755, owned by `postgres`
/// when root), never reusing an existing path.
fn create_unique_dir(env: &PgEnv, prefix: &str) -> Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = std::env::temp_dir();
    for _ in 0..100 {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = tmp.join(format!("{prefix}{seq}-{nanos:08x}"));
        match make_dir(env, &path, 0o755) {
            Ok(()) => return Ok(path),
            Err(e)
                if e.downcast_ref::<std::io::Error>().map(|e| e.kind())
                    == Some(std::io::ErrorKind::AlreadyExists) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    bail!(
        "could not create a unique directory {prefix}* in {}",
        tmp.display()
    )
}

fn check_socket_path_len(sock_dir: &Path) -> Result<()> {
    let len = sock_dir.as_os_str().len() + "/.s.PGSQL.65535".len();
    if len > MAX_SOCKET_PATH {
        bail!(
            "unix socket path {}/.s.PGSQL.<port> would be too long ({len} > {MAX_SOCKET_PATH} bytes); set TMPDIR to a shorter directory",
            sock_dir.display()
        );
    }
    Ok(())
}

/// When root, the servers run as `postgres` and need to reach the cluster
/// directory: every ancestor must be searchable by others.
fn check_traversable_by_others(dir: &Path) -> Result<()> {
    for anc in dir.ancestors().skip(1) {
        let mode = fs::metadata(anc)
            .with_context(|| format!("stat {}", anc.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "{} (mode {:o}) is not searchable by the {PG_OS_USER} OS user that runs the servers; \
                 set TMPDIR to a directory it can reach, e.g. /tmp",
                anc.display(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}

fn write_file(env: &PgEnv, path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    chown_if_root(env, path)
}

/// Copies a data directory, keeping permission bits; owned by `postgres`
/// when root.
fn copy_tree(env: &PgEnv, src: &Path, dst: &Path) -> Result<()> {
    let mode = fs::metadata(src)?.permissions().mode() & 0o7777;
    make_dir(env, dst, mode)?;
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if ft.is_dir() {
            copy_tree(env, &from, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            chown_if_root(env, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            chown_if_root(env, &to)?;
        } else {
            bail!("unexpected file type at {}", from.display());
        }
    }
    Ok(())
}

fn remove_dir_retrying(path: &Path) -> std::io::Result<()> {
    // A server process that is just exiting may still create or remove a
    // file; retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
    }
    s
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn log_tail(path: &Path, n: usize) -> String {
    // Only the last 64 KiB matter; logs of long benchmark runs can be big.
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    last_lines(&read_from(path, len.saturating_sub(64 * 1024)), n)
}

// ---- initdb template ----

/// The per-process `initdb` output that new primaries are copied from.
fn template_data_dir(env: &'static PgEnv) -> Result<&'static Path> {
    static TEMPLATE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let started = Instant::now();
            let dir = create_unique_dir(
                env,
                &format!("{DIR_PREFIX}{TEMPLATE_TAG}{}-", std::process::id()),
            )
            .map_err(|e| format!("{e:#}"))?;
            let data = dir.join("data");
            let result = server_cmd(env, "initdb", &dir)
                .arg("-D")
                .arg(&data)
                .args(["-N", "-A", "trust", "-U", "postgres", "--no-instructions"])
                .args(["-E", "UTF8", "--locale=C"])
                .output();
            let failure = match result {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(format!(
                    "initdb failed ({}): {}",
                    o.status,
                    output_text(&o)
                )),
                Err(e) => Some(format!("spawning initdb: {e}")),
            };
            if let Some(msg) = failure {
                let _ = fs::remove_dir_all(&dir);
                return Err(msg);
            }
            tracing::debug!(dir = %dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "testbed: initdb template ready");
            Ok(data)
        })
        .as_ref()
        .map(|p| p.as_path())
        .map_err(|e| anyhow!("{e}"))
}

// ---- stopping servers ----

/// Makes sure no server runs from `data_dir`: `pg_ctl stop -m immediate`,
/// and if that fails, SIGKILL to the processes that are verifiably this data
/// dir's `postgres` processes.
fn stop_server_hard(env: &PgEnv, cwd: &Path, data_dir: &Path) -> Result<()> {
    let pid_file = data_dir.join("postmaster.pid");
    if !pid_file.exists() {
        return Ok(());
    }
    let out = server_cmd(env, "pg_ctl", cwd)
        .args(["stop", "-w", "-t", "30", "-m", "immediate", "-D"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match &out {
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) => tracing::warn!(
            data_dir = %data_dir.display(),
            stderr = %String::from_utf8_lossy(&o.stderr).trim(),
            "testbed: pg_ctl stop failed; killing postmaster"
        ),
        Err(e) => {
            tracing::warn!(data_dir = %data_dir.display(), error = %e, "testbed: could not run pg_ctl stop; killing postmaster")
        }
    }
    kill_data_dir_processes(data_dir)
}

/// SIGKILLs the postmaster named in `data_dir/postmaster.pid` and its
/// children, identified as processes running a `postgres*` executable whose
/// working directory is `data_dir` (postgres chdirs there), then waits until
/// they are gone.
fn kill_data_dir_processes(data_dir: &Path) -> Result<()> {
    if !Path::new("/proc/self").exists() {
        bail!(
            "no /proc: cannot verify which process serves {}",
            data_dir.display()
        );
    }
    let data_dir = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let is_ours = |pid: u32| -> bool {
        let cwd = fs::read_link(format!("/proc/{pid}/cwd"));
        let exe = fs::read_link(format!("/proc/{pid}/exe"));
        match (cwd, exe) {
            (Ok(cwd), Ok(exe)) => {
                cwd == data_dir
                    && exe
                        .file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with("postgres"))
            }
            _ => false,
        }
    };
    let mut victims: Vec<u32> = Vec::new();
    let pid_file = fs::read_to_string(data_dir.join("postmaster.pid")).unwrap_or_default();
    if let Some(pid) = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    {
        if is_ours(pid) {
            victims.push(pid);
        }
    }
    for entry in fs::read_dir("/proc")?.flatten() {
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        {
            if !victims.contains(&pid) && is_ours(pid) {
                victims.push(pid);
            }
        }
    }
    for &pid in &victims {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<u32> = victims.iter().copied().filter(|&p| is_ours(p)).collect();
        if alive.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "postgres processes {alive:?} of {} survived SIGKILL",
                data_dir.display()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

// ---- sweeping leftovers of dead processes ----

/// Whether `pid` exists and is not a zombie (a killed test process may stay
/// a zombie for a while until it is reaped).
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Once per process: removes `$TMPDIR/pgsplit-testbed-*` directories whose
/// creating process no longer exists (the pid is part of the name), after
/// stopping any server still running from them. Skips directories marked by
/// [`Cluster::keep`], directories of other users, and any directory whose
/// servers cannot be verified as stopped. Best effort; never fails.
fn sweep_stale_dirs(env: &PgEnv) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| sweep_stale_dirs_in(env, &std::env::temp_dir()));
}

fn sweep_stale_dirs_in(env: &PgEnv, tmp: &Path) {
    {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let Ok(entries) = fs::read_dir(tmp) else {
            return;
        };
        let me = std::process::id();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
                continue;
            };
            let rest = rest.strip_prefix(TEMPLATE_TAG).unwrap_or(rest);
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me || process_alive(pid) {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let owner_ok =
                meta.uid() == env.my_uid || env.run_as.is_some_and(|(uid, _)| uid == meta.uid());
            if !meta.is_dir() || !owner_ok || path.join(KEEP_MARKER).exists() {
                continue;
            }
            let mut servers_gone = true;
            if let Ok(subdirs) = fs::read_dir(&path) {
                for sub in subdirs.flatten() {
                    let data_dir = sub.path();
                    if data_dir.join("postmaster.pid").exists() {
                        if let Err(e) = stop_server_hard(env, &path, &data_dir) {
                            tracing::warn!(error = %format!("{e:#}"), "testbed: stale server not stopped");
                            servers_gone = false;
                        }
                    }
                }
            }
            if servers_gone {
                match remove_dir_retrying(&path) {
                    Ok(()) => {
                        tracing::info!(dir = %path.display(), "testbed: removed stale directory")
                    }
                    Err(e) => {
                        tracing::warn!(dir = %path.display(), error = %e, "testbed: could not remove stale directory")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuses(port: u16) -> bool {
        std::net::TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            Duration::from_secs(2),
        )
        .is_err()
    }

    #[test]
    fn kill_fallback_stops_a_server_and_drop_copes_with_stale_pid_file() {
        let c = Cluster::start(ClusterOptions {
            replicas: 0,
            extra_conf: vec![],
        })
        .unwrap();
        let node = c.node(0).clone();
        let dir = c.dir().to_path_buf();
        assert!(!refuses(node.port));
        kill_data_dir_processes(&node.data_dir).unwrap();
        assert!(refuses(node.port));
        // SIGKILL leaves postmaster.pid behind: pg_ctl stop then fails and
        // shutdown must still finish and remove the directory.
        assert!(node.data_dir.join("postmaster.pid").exists());
        drop(c);
        assert!(!dir.exists());
    }

    #[test]
    fn start_retries_on_a_new_port_when_the_port_is_taken() {
        let c = Cluster::start(ClusterOptions {
            replicas: 0,
            extra_conf: vec![],
        })
        .unwrap();
        c.stop_node(0, false).unwrap();
        let blocker = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = blocker.local_addr().unwrap().port();
        let mut ports = vec![pick_port().unwrap(), taken];
        let mut node = c.node(0).clone();
        start_new_node_with(c.env, &c.root, &mut node, &mut || Ok(ports.pop().unwrap())).unwrap();
        assert!(ports.is_empty(), "second port not used");
        assert_ne!(node.port, taken);
        assert!(
            node.log_tail(100).contains("Address already in use"),
            "{}",
            node.log_tail(100)
        );
        assert!(!refuses(node.port));
        let dir = c.dir().to_path_buf();
        drop(c); // the node list still has the old port; shutdown finds the server by its data dir
        assert!(refuses(node.port));
        assert!(!dir.exists());
    }

    #[test]
    fn bad_config_fails_with_log_tail_and_cleans_up() {
        let err = Cluster::start(ClusterOptions {
            replicas: 1,
            extra_conf: vec!["no_such_setting = 1".into()],
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("no_such_setting"), "{msg}");
        // The message names the log file, inside the (now removed) cluster dir.
        let log = msg
            .split_whitespace()
            .find(|w| w.ends_with("/pg1.log"))
            .unwrap_or_else(|| panic!("no log path in {msg}"));
        let dir = Path::new(log).parent().unwrap();
        assert!(dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(DIR_PREFIX));
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn keep_leaves_servers_running_after_drop() {
        let mut c = Cluster::start(ClusterOptions {
            replicas: 1,
            extra_conf: vec![],
        })
        .unwrap();
        c.keep();
        let env = c.env;
        let dir = c.dir().to_path_buf();
        let nodes = c.nodes().to_vec();
        drop(c);
        assert!(dir.join(KEEP_MARKER).exists());
        for n in &nodes {
            assert!(!refuses(n.port), "{} stopped despite keep()", n.name);
        }
        // The sweep leaves kept directories alone even once their creator is gone;
        // here the creator is alive, so just clean up by hand.
        for n in &nodes {
            stop_server_hard(env, &dir, &n.data_dir).unwrap();
            assert!(refuses(n.port));
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sweep_removes_dirs_of_dead_processes_only() {
        let env = pg_env().unwrap();
        let tmp = create_unique_dir(env, "pgsplit-sweeptest-").unwrap();
        // u32::MAX is above any pid_max, so that "process" is surely gone.
        let dead = tmp.join(format!("{DIR_PREFIX}{}-0-abc", u32::MAX));
        let dead_template = tmp.join(format!("{DIR_PREFIX}{TEMPLATE_TAG}{}-0-abc", u32::MAX));
        let kept = tmp.join(format!("{DIR_PREFIX}{}-1-abc", u32::MAX));
        let alive = tmp.join(format!("{DIR_PREFIX}{}-0-abc", std::process::id()));
        let unrelated = tmp.join("something-else-4294967295");
        for d in [&dead, &dead_template, &kept, &alive, &unrelated] {
            fs::create_dir_all(d.join("pg1")).unwrap();
        }
        // A stale pid file (no such process) must not block removal.
        fs::write(dead.join("pg1/postmaster.pid"), format!("{}\n", u32::MAX)).unwrap();
        fs::write(kept.join(KEEP_MARKER), "").unwrap();
        sweep_stale_dirs_in(env, &tmp);
        assert!(!dead.exists());
        assert!(!dead_template.exists());
        assert!(kept.exists());
        assert!(alive.exists());
        assert!(unrelated.exists());
        fs::remove_dir_all(&tmp).unwrap();
    }
}
