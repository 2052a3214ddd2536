//! Read-your-writes on the read-write port (`[consistency]`), against a real
//! cluster whose replicas are made to lag on purpose.
//!
//! - Stale-read checker: 16 sessions do autocommit write-then-read pairs on
//!   their own row while replay on one replica is paused and resumed over and
//!   over. A read returning an older value than the session just wrote is a
//!   stale read. `lsn` and `window` must have none; `off` must have some (else
//!   the check proves nothing).
//! - Replica share: with replicas caught up, `lsn` (reads may wait
//!   `max_wait_ms` for the position service) still serves at least 80% of the
//!   reads that follow a write from replicas; `window` is printed beside it.
//! - Causal token: `pgsplit.report_lsn=on` gives a `pgsplit.commit_lsn`
//!   ParameterStatus after a write; `SET pgsplit.min_lsn` (or the startup
//!   parameter) in another session keeps its reads off replicas behind it.
//!
//! Where a read ran is taken from `inet_server_port()` in the same statement.
//! `PGSPLIT_TEST_FSYNC=on cargo test --test consistency` runs them on a
//! cluster with `fsync = on`.
//! The tests of this file run one at a time (their timings mean something on
//! a 2-core machine).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgsplit::config::{AuthMethod, ConsistencyMode};
use tokio_postgres::{Client, SimpleQueryMessage};

/// One test of this file at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The replica whose replay is paused (node index).
const LAGGING: usize = 1;

/// Text rows of a simple query.
async fn rows(c: &Client, sql: &str) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    Ok(c.simple_query(sql)
        .await?
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// The single value of a simple query that must return one row.
async fn one(c: &Client, sql: &str) -> String {
    let r = rows(c, sql).await.unwrap_or_else(|e| {
        panic!("{sql}: {} ({})", message(&e), sqlstate(&e));
    });
    assert_eq!(r.len(), 1, "{sql}: {r:?}");
    r[0][0].clone()
}

/// A client straight to node `i` as superuser postgres (trust), db postgres.
async fn superuser(env: &Env, i: usize) -> Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(env.cluster.node(i).port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// `ryw` with one row (v = 0) for each of `sessions` sessions.
fn ryw_table(env: &Env, sessions: usize) {
    fixture(
        env,
        &format!(
            "CREATE TABLE ryw (session int PRIMARY KEY, v bigint);\n\
             INSERT INTO ryw SELECT g, 0 FROM generate_series(0, {}) g;",
            sessions - 1
        ),
    );
}

/// The cluster of these tests. `PGSPLIT_TEST_FSYNC=on` runs them with
/// `fsync = on` on every node (the test bed's default is off): the
/// stale-read checker must hold on a durable cluster too.
fn consistency(mode: ConsistencyMode) -> Setup {
    let mut setup = Setup::default().replicas(2).tweak(move |c| {
        c.consistency.mode = mode;
        c.consistency.window_ms = 2000;
    });
    if std::env::var("PGSPLIT_TEST_FSYNC").as_deref() == Ok("on") {
        setup = setup.extra_conf(["fsync = on"]);
    }
    setup
}

/// How long a read after a write may wait for the position service before
/// it goes to the primary, in the runs that measure where reads land: long
/// enough for one poll of the primary and the replicas on a loaded 2-core
/// machine, so reads reach replicas and the stale-read check means something.
const MAX_WAIT_MS: u64 = 50;

/// Sum of the samples of `pgsplit_read_your_writes_total` with this outcome.
fn ryw_metric(metrics: &str, outcome: &str) -> Option<f64> {
    let label = format!("outcome=\"{outcome}\"");
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("pgsplit_read_your_writes_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// What the reads of a run saw.
#[derive(Default, Debug)]
struct Tally {
    reads: u64,
    by_port: BTreeMap<u16, u64>,
    stale: u64,
    stale_by_port: BTreeMap<u16, u64>,
    examples: Vec<String>,
}

impl Tally {
    /// Records a read that returned `got` after the session wrote `wrote`.
    fn read(&mut self, port: u16, session: usize, wrote: u64, got: u64) {
        assert!(
            got <= wrote,
            "session {session} wrote {wrote} but read {got} (port {port}): rows mixed up"
        );
        self.reads += 1;
        *self.by_port.entry(port).or_default() += 1;
        if got < wrote {
            self.stale += 1;
            *self.stale_by_port.entry(port).or_default() += 1;
            if self.examples.len() < 5 {
                self.examples.push(format!(
                    "session {session} wrote {wrote}, read {got} on port {port}"
                ));
            }
        }
    }

    fn merge(&mut self, o: Tally) {
        self.reads += o.reads;
        self.stale += o.stale;
        for (p, n) in o.by_port {
            *self.by_port.entry(p).or_default() += n;
        }
        for (p, n) in o.stale_by_port {
            *self.stale_by_port.entry(p).or_default() += n;
        }
        self.examples.extend(o.examples);
        self.examples.truncate(5);
    }

    /// Share of the reads served by these ports.
    fn share(&self, ports: &[u16]) -> f64 {
        let on: u64 = ports.iter().filter_map(|p| self.by_port.get(p)).sum();
        on as f64 / self.reads.max(1) as f64
    }
}

/// Writes `n` to the session's row, then reads it back; the read's value and
/// where it ran.
async fn write_read(c: &Client, session: usize, n: u64) -> (u64, u16) {
    c.simple_query(&format!("UPDATE ryw SET v = {n} WHERE session = {session}"))
        .await
        .unwrap_or_else(|e| panic!("UPDATE: {} ({})", message(&e), sqlstate(&e)));
    read_back(c, session).await
}

async fn read_back(c: &Client, session: usize) -> (u64, u16) {
    let sql = format!("SELECT v, inet_server_port() FROM ryw WHERE session = {session}");
    let r = rows(c, &sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {} ({})", message(&e), sqlstate(&e)));
    assert_eq!(r.len(), 1, "{sql}: {r:?}");
    (r[0][0].parse().unwrap(), r[0][1].parse().unwrap())
}

// ---------------------------------------------------------------------------
// 1. Stale-read checker

const SESSIONS: usize = 16;
const PAIRS_PER_SESSION: u64 = 1250;
/// Replay on the lagging replica alternates: paused this long, running this long.
const PHASE: Duration = Duration::from_millis(300);
/// Health probe interval of the stale-read runs and the causal-token test:
/// longer than the test. pgsplit takes a replica out of read rotation at the
/// first probe that finds its replay paused with WAL waiting, which would
/// hide the lag from the reads (and does so unevenly, as probes and pauses
/// drift in and out of phase). Read-your-writes must not lean on that: with
/// probes this rare the lagging replica stays in rotation throughout, so
/// stale reads are on offer for every read that lands there while paused.
const QUIET_PROBE_MS: u64 = 60_000;

/// Pauses and resumes replay on the lagging replica until `stop`; always
/// leaves it resumed. Returns the number of pauses.
async fn flap_replay(su: Client, stop: Arc<AtomicBool>) -> u32 {
    let mut pauses = 0;
    loop {
        su.simple_query("SELECT pg_wal_replay_pause()")
            .await
            .unwrap();
        pauses += 1;
        tokio::time::sleep(PHASE).await;
        su.simple_query("SELECT pg_wal_replay_resume()")
            .await
            .unwrap();
        if stop.load(Ordering::SeqCst) {
            return pauses;
        }
        tokio::time::sleep(PHASE).await;
        if stop.load(Ordering::SeqCst) {
            return pauses;
        }
    }
}

/// Runs the write-read pairs of [`SESSIONS`] sessions against a replica that
/// lags part of the time; returns the environment (for /metrics) and the tally.
async fn stale_read_run(mode: ConsistencyMode) -> (Env, Tally) {
    let env = Env::start(consistency(mode).tweak(|c| {
        c.health.interval_ms = QUIET_PROBE_MS;
        c.consistency.max_wait_ms = MAX_WAIT_MS;
    }))
    .await;
    ryw_table(&env, SESSIONS);
    let mut clients = Vec::new();
    for _ in 0..SESSIONS {
        clients.push(env.connect(env.rw).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let controller = tokio::spawn(flap_replay(superuser(&env, LAGGING).await, stop.clone()));
    let started = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(s, c)| {
            tokio::spawn(async move {
                let mut t = Tally::default();
                for n in 1..=PAIRS_PER_SESSION {
                    let (got, port) = write_read(&c, s, n).await;
                    t.read(port, s, n, got);
                }
                t
            })
        })
        .collect();
    let mut tally = Tally::default();
    let mut failure = None;
    for w in workers {
        match w.await {
            Ok(t) => tally.merge(t),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let pauses = controller.await.expect("replay controller");
    if let Some(e) = failure {
        std::panic::resume_unwind(e.into_panic());
    }
    let replicas = env.replica_ports();
    let (_, metrics) = env.http_get("/metrics").await;
    println!(
        "{mode:?}: {} pairs in {took:.1?} ({:.0} pairs/s), {pauses} pauses of {PHASE:?} on port {}; \
         reads by port {:?} (primary {}, replicas {replicas:?}): {:.1}% on replicas; \
         stale reads {} by port {:?}; ryw metric known={:?} waited={:?} primary_unknown={:?} primary_behind={:?}",
        tally.reads,
        tally.reads as f64 / took.as_secs_f64(),
        env.cluster.node(LAGGING).port,
        tally.by_port,
        env.primary_port(),
        tally.share(&replicas) * 100.0,
        tally.stale,
        tally.stale_by_port,
        ryw_metric(&metrics, "known"),
        ryw_metric(&metrics, "waited"),
        ryw_metric(&metrics, "primary_unknown"),
        ryw_metric(&metrics, "primary_behind"),
    );
    for e in &tally.examples {
        println!("  stale: {e}");
    }
    assert_eq!(tally.reads, SESSIONS as u64 * PAIRS_PER_SESSION);
    (env, tally)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lsn_mode_has_no_stale_reads() {
    let _serial = SERIAL.lock().await;
    let (env, tally) = stale_read_run(ConsistencyMode::Lsn).await;
    let mut failures = Vec::new();
    if tally.stale > 0 {
        failures.push(format!("stale reads in lsn mode: {tally:?}"));
    }
    let (status, metrics) = env.http_get("/metrics").await;
    assert_eq!(status, 200);
    // Reads after writes reached replicas (known or after waiting) and the
    // primary (the paused replica behind, the other not known yet in time).
    for outcomes in [["known", "waited"], ["primary_unknown", "primary_behind"]] {
        let v: f64 = outcomes
            .iter()
            .filter_map(|o| ryw_metric(&metrics, o))
            .sum();
        if v <= 0.0 {
            failures.push(format!(
                "pgsplit_read_your_writes_total{{outcome in {outcomes:?}}} > 0 after the lsn run, got {v}"
            ));
        }
    }
    if tally.share(&env.replica_ports()) < 0.2 {
        failures.push(format!(
            "only {:.1}% of the reads after a write reached a replica: the check proves little",
            tally.share(&env.replica_ports()) * 100.0
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_mode_has_no_stale_reads() {
    let _serial = SERIAL.lock().await;
    let (_env, tally) = stale_read_run(ConsistencyMode::Window).await;
    assert_eq!(tally.stale, 0, "stale reads in window mode: {tally:?}");
}

/// The control: without read-your-writes the same run must find stale reads,
/// or the checker could not catch anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_mode_does_read_stale() {
    let _serial = SERIAL.lock().await;
    let (env, tally) = stale_read_run(ConsistencyMode::Off).await;
    assert!(
        tally.stale > 0,
        "mode off found no stale read: the checker proves nothing ({tally:?})"
    );
    assert!(
        tally
            .stale_by_port
            .contains_key(&env.cluster.node(LAGGING).port),
        "stale reads come from the lagging replica: {tally:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Replica share with caught-up replicas

const SHARE_SESSIONS: usize = 4;
const SHARE_ROUNDS: u64 = 150;

/// Replica shares of reads right after a write, (after waiting, directly on
/// the nodes, until every replica has replayed the write; back to back), and
/// the stale reads seen back to back.
async fn replica_share(mode: ConsistencyMode) -> (f64, f64, u64) {
    let env =
        Env::start(consistency(mode).tweak(|c| c.consistency.max_wait_ms = MAX_WAIT_MS)).await;
    ryw_table(&env, SHARE_SESSIONS);
    let primary = superuser(&env, 0).await;
    let mut replicas = Vec::new();
    for i in 1..env.cluster.nodes().len() {
        replicas.push(superuser(&env, i).await);
    }
    let mut clients = Vec::new();
    for _ in 0..SHARE_SESSIONS {
        clients.push(env.connect(env.rw).await);
    }
    let replica_ports = env.replica_ports();
    // Caught up: write, wait until every replica has replayed the primary's
    // current position, then read.
    let started = Instant::now();
    let mut caught_up = Tally::default();
    for n in 1..=SHARE_ROUNDS {
        for (s, c) in clients.iter().enumerate() {
            c.simple_query(&format!("UPDATE ryw SET v = {n} WHERE session = {s}"))
                .await
                .unwrap();
            let lsn = one(&primary, "SELECT pg_current_wal_lsn()").await;
            let check = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
            for r in &replicas {
                eventually(Duration::from_secs(10), "the replica replays", || async {
                    one(r, &check).await == "t"
                })
                .await;
            }
            let (got, port) = read_back(c, s).await;
            caught_up.read(port, s, n, got);
        }
    }
    let caught_up_took = started.elapsed();
    // Back to back: the read follows the write at once (replay on loopback
    // takes about a millisecond).
    let started = Instant::now();
    let mut immediate = Tally::default();
    for n in SHARE_ROUNDS + 1..=2 * SHARE_ROUNDS {
        for (s, c) in clients.iter().enumerate() {
            let (got, port) = write_read(c, s, n).await;
            immediate.read(port, s, n, got);
        }
    }
    let immediate_took = started.elapsed();
    let shares = (
        caught_up.share(&replica_ports),
        immediate.share(&replica_ports),
    );
    println!(
        "{mode:?}: replicas caught up: {} reads after a write in {caught_up_took:.1?}, {:.1}% on replicas {:?}; \
         back to back: {} in {immediate_took:.1?}, {:.1}% on replicas {:?}, {} stale",
        caught_up.reads,
        shares.0 * 100.0,
        caught_up.by_port,
        immediate.reads,
        shares.1 * 100.0,
        immediate.by_port,
        immediate.stale,
    );
    assert_eq!(caught_up.stale, 0, "caught-up replicas served stale reads");
    (shares.0, shares.1, immediate.stale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lsn_mode_serves_reads_after_writes_from_caught_up_replicas() {
    let _serial = SERIAL.lock().await;
    let lsn = replica_share(ConsistencyMode::Lsn).await;
    let window = replica_share(ConsistencyMode::Window).await;
    println!(
        "reads after a write served by caught-up replicas: lsn {:.1}%, window {:.1}% \
         (back to back: lsn {:.1}%, window {:.1}%)",
        lsn.0 * 100.0,
        window.0 * 100.0,
        lsn.1 * 100.0,
        window.1 * 100.0
    );
    assert!(
        lsn.0 >= 0.8,
        "lsn mode served only {:.1}% of reads after a write from caught-up replicas",
        lsn.0 * 100.0
    );
    assert_eq!(
        (lsn.2, window.2),
        (0, 0),
        "stale reads back to back (lsn, window)"
    );
}

// ---------------------------------------------------------------------------
// 3. Causal token

/// What a simple Query got back on a [`RawClient`].
#[derive(Debug, Default)]
struct RawReply {
    parameters: Vec<(String, String)>,
    rows: Vec<Vec<Option<String>>>,
    error: Option<(String, String)>,
}

/// Reads messages up to ReadyForQuery.
async fn raw_until_ready(c: &mut RawClient) -> RawReply {
    let mut reply = RawReply::default();
    loop {
        let (tag, body) = c
            .recv()
            .await
            .expect("a reply before the connection closes");
        match tag {
            b'Z' => return reply,
            b'E' => reply.error = Some(error_fields(&body)),
            b'S' => {
                let mut parts = body.split(|&b| b == 0).map(String::from_utf8_lossy);
                let name = parts.next().unwrap_or_default().into_owned();
                let value = parts.next().unwrap_or_default().into_owned();
                reply.parameters.push((name, value));
            }
            b'D' => {
                let n = u16::from_be_bytes([body[0], body[1]]) as usize;
                let mut at = 2;
                let mut row = Vec::with_capacity(n);
                for _ in 0..n {
                    let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                    at += 4;
                    if len < 0 {
                        row.push(None);
                    } else {
                        let end = at + len as usize;
                        row.push(Some(String::from_utf8_lossy(&body[at..end]).into_owned()));
                        at = end;
                    }
                }
                reply.rows.push(row);
            }
            _ => {}
        }
    }
}

/// Logs in as app (pgsplit with auth trust) with extra startup parameters;
/// returns the client and the login's ParameterStatus messages.
async fn raw_login(port: u16, extra: &[(&str, &str)]) -> (RawClient, RawReply) {
    let mut c = RawClient::connect(port).await;
    let mut params = vec![("user", "app"), ("database", "app")];
    params.extend_from_slice(extra);
    c.send(&startup_packet(0, &params)).await;
    let login = raw_until_ready(&mut c).await;
    assert!(login.error.is_none(), "login failed: {:?}", login.error);
    (c, login)
}

async fn raw_query(c: &mut RawClient, sql: &str) -> RawReply {
    let mut msg = vec![b'Q'];
    msg.extend_from_slice(&((4 + sql.len() + 1) as i32).to_be_bytes());
    msg.extend_from_slice(sql.as_bytes());
    msg.push(0);
    c.send(&msg).await;
    raw_until_ready(c).await
}

/// `X/Y`, both upper-case hex, as PostgreSQL prints a pg_lsn.
fn is_lsn(s: &str) -> bool {
    let hex = |p: &str| !p.is_empty() && p.chars().all(|c| matches!(c, '0'..='9' | 'A'..='F'));
    s.split_once('/').is_some_and(|(a, b)| hex(a) && hex(b))
}

const CAUSAL_READ: &str = "SELECT count(*), inet_server_port() FROM causal WHERE id = 1";

/// (rows seen, port) of [`CAUSAL_READ`] through a tokio-postgres client.
async fn causal_read(c: &Client) -> (String, u16) {
    let r = rows(c, CAUSAL_READ)
        .await
        .unwrap_or_else(|e| panic!("{CAUSAL_READ}: {} ({})", message(&e), sqlstate(&e)));
    (r[0][0].clone(), r[0][1].parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn causal_token_keeps_reads_off_replicas_behind_it() {
    let _serial = SERIAL.lock().await;
    // Probes far apart: the replica whose replay is paused stays in read
    // rotation for the whole test, so only the token can keep reads off it.
    let env = Env::start(consistency(ConsistencyMode::Lsn).tweak(|c| {
        c.auth.method = AuthMethod::Trust;
        c.health.interval_ms = QUIET_PROBE_MS;
    }))
    .await;
    fixture(&env, "CREATE TABLE causal (id int PRIMARY KEY, note text)");
    let paused = env.cluster.node(LAGGING).port;
    env.cluster.pause_replay(LAGGING).unwrap();
    let primary = superuser(&env, 0).await;
    let before = one(&primary, "SELECT pg_current_wal_lsn()").await;

    // Session A asks for the token and writes.
    let (mut a, login) = raw_login(env.rw, &[("pgsplit.report_lsn", "on")]).await;
    assert!(
        !login
            .parameters
            .iter()
            .any(|(k, _)| k == "pgsplit.commit_lsn"),
        "no commit_lsn before any write: {:?}",
        login.parameters
    );
    let insert = raw_query(&mut a, "INSERT INTO causal VALUES (1, 'from A')").await;
    assert!(insert.error.is_none(), "INSERT: {:?}", insert.error);
    let lsn = insert
        .parameters
        .iter()
        .rev()
        .find(|(k, _)| k == "pgsplit.commit_lsn")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            panic!(
                "ParameterStatus pgsplit.commit_lsn after the write; got {:?}",
                insert.parameters
            )
        });
    assert!(is_lsn(&lsn), "commit_lsn {lsn:?} looks like an LSN");
    let check = format!(
        "SELECT '{lsn}'::pg_lsn > '{before}'::pg_lsn AND '{lsn}'::pg_lsn <= pg_current_wal_lsn()"
    );
    assert_eq!(
        one(&primary, &check).await,
        "t",
        "commit_lsn {lsn} is past the primary's position before the write ({before}) and not past its current one"
    );
    // A read in A does not bring the token again (nothing new committed).
    let read = raw_query(&mut a, "SELECT 1").await;
    assert!(read.error.is_none(), "{:?}", read.error);
    println!("commit_lsn {lsn} (primary was at {before} before the write)");

    // Control: without the token, fresh read-only sessions do land on the
    // paused replica and miss the row (else this test could not fail).
    let mut control = BTreeMap::new();
    for _ in 0..30 {
        let c = env.connect(env.ro).await;
        let (seen, port) = causal_read(&c).await;
        control.insert(port, seen);
        if control.get(&paused).is_some_and(|s| s == "0") {
            break;
        }
    }
    assert_eq!(
        control.get(&paused).map(String::as_str),
        Some("0"),
        "a session without the token lands on the paused replica (port {paused}) and misses the row: {control:?}"
    );

    // With the token: SET in fresh sessions on either port, or as a startup
    // parameter; every one sees the row.
    let mut ran_on = BTreeMap::<u16, u32>::new();
    for (port, n) in [(env.ro, 10), (env.rw, 5)] {
        for i in 0..n {
            let c = env.connect(port).await;
            c.simple_query(&format!("SET pgsplit.min_lsn = '{lsn}'"))
                .await
                .unwrap_or_else(|e| panic!("SET pgsplit.min_lsn: {}", message(&e)));
            for _ in 0..2 {
                let (seen, at) = causal_read(&c).await;
                assert_eq!(
                    seen, "1",
                    "session {i} on port {port} with min_lsn {lsn} missed the row (ran on {at}, paused replica {paused})"
                );
                *ran_on.entry(at).or_default() += 1;
            }
        }
    }
    for i in 0..5 {
        let (mut b, _) = raw_login(env.ro, &[("pgsplit.min_lsn", &lsn)]).await;
        let r = raw_query(&mut b, CAUSAL_READ).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        let row = &r.rows[0];
        let at: u16 = row[1].as_deref().unwrap().parse().unwrap();
        assert_eq!(
            row[0].as_deref(),
            Some("1"),
            "raw session {i} with startup pgsplit.min_lsn={lsn} missed the row (ran on {at})"
        );
        *ran_on.entry(at).or_default() += 1;
    }
    println!(
        "reads with the token ran on {ran_on:?} (primary {}, paused replica {paused}); control {control:?}",
        env.primary_port()
    );
    env.cluster.resume_replay(LAGGING).unwrap();
}
