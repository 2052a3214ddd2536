//! Topology against real faults: replay paused, a replica stopped, the
//! primary killed and a replica promoted, two primaries at once, weights.

mod common;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgsplit::config::AuthMethod;
use pgsplit::topology::{Lsn, Snapshot};
use tokio_postgres::SimpleQueryMessage;

const INTERVAL_MS: u64 = 200;

fn fast(setup: Setup) -> Setup {
    setup.tweak(|c| {
        c.health.interval_ms = INTERVAL_MS;
        c.health.fall = 2;
        c.health.rise = 2;
        c.health.failover_timeout_ms = 8000;
        c.auth.method = AuthMethod::Trust;
    })
}

/// First column of the first row of a simple query, as text.
async fn one(c: &tokio_postgres::Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    let rows = c.simple_query(sql).await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .expect("a row"))
}

async fn port_of(c: &tokio_postgres::Client) -> u16 {
    one(c, "SELECT inet_server_port()")
        .await
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_replay_takes_a_replica_out_of_rotation_and_back() {
    // A longer interval than the other tests, so "within two intervals" is
    // checked strictly without scheduling jitter on a loaded machine mattering.
    const INTERVAL: u64 = 400;
    let env = Env::start(fast(Setup::default()).tweak(|c| c.health.interval_ms = INTERVAL)).await;
    let rw = env.connect(env.rw).await;
    rw.batch_execute("CREATE TABLE ticks(id serial PRIMARY KEY, at timestamptz DEFAULT now())")
        .await
        .unwrap();
    let paused = env.cluster.node(1).port;
    // A clean read-only session sitting on the replica about to lag.
    let sitter = loop {
        let c = env.connect(env.ro).await;
        if port_of(&c).await == paused {
            break c;
        }
    };
    env.cluster.pause_replay(1).unwrap();
    rw.batch_execute("INSERT INTO ticks DEFAULT VALUES")
        .await
        .unwrap();
    let wrote = Instant::now();
    env.wait_for(Duration::from_secs(5), |s| !s.backends[1].in_rotation)
        .await;
    let detected = wrote.elapsed();
    println!("lag detection delay: {detected:?} (interval {INTERVAL} ms)");
    assert!(
        detected <= Duration::from_millis(2 * INTERVAL),
        "took {detected:?}"
    );
    let status = env.proxy().shared.topology.snapshot();
    assert!(
        status.backends[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("paused"),
        "{:?}",
        status.backends[1]
    );

    // No read lands there afterwards: not new sessions, not the one that sat there.
    assert_ne!(port_of(&sitter).await, paused);
    for _ in 0..30 {
        rw.batch_execute("INSERT INTO ticks DEFAULT VALUES")
            .await
            .unwrap();
        let c = env.connect(env.ro).await;
        assert_ne!(port_of(&c).await, paused);
    }
    let (_, body) = env.http_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pg2 = &status["topology"]["backends"][1];
    assert_eq!(pg2["name"], "pg2");
    assert_eq!(pg2["in_rotation"], false);
    assert_eq!(pg2["role"], "replica");
    assert!(pg2["lag_bytes"].as_u64().unwrap() > 0);
    for key in [
        "address",
        "healthy",
        "lag_ms",
        "replay_lsn",
        "timeline",
        "reason",
    ] {
        assert!(pg2.get(key).is_some(), "{key} in {pg2}");
    }
    let (_, metrics) = env.http_get("/metrics").await;
    assert!(
        metrics.contains("pgsplit_backend_in_rotation{backend=\"pg2\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("pgsplit_backend_in_rotation{backend=\"pg3\"} 1"));

    env.cluster.resume_replay(1).unwrap();
    env.wait_for(Duration::from_secs(5), |s| s.backends[1].in_rotation)
        .await;
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let c = env.connect(env.ro).await;
        seen.insert(port_of(&c).await);
    }
    assert!(
        seen.contains(&paused),
        "back in rotation and used: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_is_avoided_and_comes_back() {
    let env = Env::start(fast(Setup::default())).await;
    let stopped = env.cluster.node(2).port;
    env.cluster.stop_node(2, true).unwrap();
    // New statements never fail: reads go to the other replica at once.
    for _ in 0..20 {
        let c = env.connect(env.ro).await;
        let p = port_of(&c).await;
        assert_ne!(p, stopped);
    }
    env.wait_for(Duration::from_secs(5), |s| !s.backends[2].healthy)
        .await;
    env.cluster.start_node(2).unwrap();
    env.wait_for(Duration::from_secs(10), |s| s.backends[2].in_rotation)
        .await;
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        seen.insert(port_of(&env.connect(env.ro).await).await);
    }
    assert!(seen.contains(&stopped), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promoted_replica_without_a_restart() {
    let env = Env::start(fast(Setup::default())).await;
    let idle = env.connect(env.rw).await;
    idle.batch_execute("CREATE TABLE f(id int)").await.unwrap();
    env.cluster
        .wait_caught_up(0, 1, Duration::from_secs(10))
        .unwrap();
    env.cluster.stop_node(0, true).unwrap();
    env.cluster.promote(1).unwrap();
    let promoted = Instant::now();
    // The idle session's next write lands on the new primary, no error.
    let port = tokio::time::timeout(Duration::from_secs(10), async {
        one(
            &idle,
            "INSERT INTO f VALUES (1) RETURNING inet_server_port()",
        )
        .await
    })
    .await
    .unwrap()
    .unwrap();
    let took = promoted.elapsed();
    println!("promotion to first successful write through pgsplit: {took:?}");
    assert_eq!(port, env.cluster.node(1).port.to_string());
    assert!(
        took < Duration::from_millis(2 * INTERVAL_MS + 1000),
        "took {took:?}"
    );
    let fresh = env.connect(env.rw).await;
    assert_eq!(primary_of(&fresh).await, env.cluster.node(1).port);
    let (_, metrics) = env.http_get("/metrics").await;
    assert!(
        metrics.contains("pgsplit_backend_is_primary{backend=\"pg2\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgsplit_primary_changes_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_primaries_writes_never_reach_both() {
    let env = Env::start(fast(Setup::default().replicas(1))).await;
    let mut writer = env.connect(env.rw).await;
    writer
        .batch_execute("CREATE TABLE w(id int PRIMARY KEY)")
        .await
        .unwrap();
    env.cluster
        .wait_caught_up(0, 1, Duration::from_secs(10))
        .unwrap();
    let mut acked = Vec::new();
    let mut promoted_at = None;
    let mut errors = 0;
    // 50 writes before the promotion, then writes for 2 s after it returns
    // (however long it took on a loaded machine).
    let mut promoted = None;
    let mut id = 0;
    while promoted.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(2)) {
        id += 1;
        if id == 50 {
            env.cluster.promote(1).unwrap();
            promoted_at = Some(id);
            promoted = Some(Instant::now());
        }
        match writer
            .simple_query(&format!("INSERT INTO w VALUES ({id})"))
            .await
        {
            Ok(_) => acked.push(id),
            // A write in flight when pgsplit fences the old primary ends
            // that session with one clear error; like an application, the
            // writer reconnects.
            Err(_) => {
                errors += 1;
                writer = env.connect(env.rw).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(promoted_at.is_some());
    let ids = |i: usize| -> BTreeSet<i32> {
        let out = env
            .cluster
            .psql_db(i, "app", "SELECT string_agg(id::text, ',') FROM w")
            .unwrap();
        out.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    };
    let (old, new) = (ids(0), ids(1));
    let only_old: Vec<_> = old.difference(&new).copied().collect();
    let only_new: Vec<_> = new.difference(&old).copied().collect();
    println!(
        "acked {}, errors {errors}, only on old {only_old:?}..., only on new {}",
        acked.len(),
        only_new.len()
    );
    // One switch point: everything after it on the new primary, nothing after
    // it on the old one.
    if let (Some(last_old), Some(first_new)) = (only_old.last(), only_new.first()) {
        assert!(last_old < first_new, "writes interleaved between primaries");
    }
    assert!(!only_new.is_empty(), "writes moved to the promoted replica");
    assert!(
        errors <= 1,
        "at most the write in flight at the switch fails: {errors}"
    );
    for a in &acked {
        assert!(
            old.contains(a) || new.contains(a),
            "acknowledged write {a} is lost"
        );
    }
    let s = env.proxy().shared.topology.snapshot();
    assert_eq!(s.primary, Some(1));
    assert_eq!(s.primaries_seen, 2);
    assert!(s.backends[0].reason.as_deref().unwrap().contains("fenced"));
    let (_, metrics) = env.http_get("/metrics").await;
    assert!(metrics.contains("pgsplit_primaries_seen 2"), "{metrics}");
    // pgsplit keeps no session of its own on the fenced primary.
    eventually(Duration::from_secs(5), "no pgsplit sessions left on the old primary", || async {
        env.cluster
            .psql(0, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND application_name <> 'pgsplit-health'")
            .unwrap()
            == "0"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_one_to_two_split_reads_one_to_two() {
    let env = Env::start(fast(Setup::default()).tweak(|c| {
        c.backends[1].weight = 1;
        c.backends[2].weight = 2;
        c.health.interval_ms = INTERVAL_MS;
        c.health.fall = 2;
        c.auth.method = AuthMethod::Trust;
    }))
    .await;
    let counts = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<u16, usize>::new()));
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let counts = counts.clone();
            let cfg = env.pg_config(env.ro, "app_trust");
            tokio::spawn(async move {
                for _ in 0..500 {
                    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
                    tokio::spawn(conn);
                    let p = port_of(&c).await;
                    *counts.lock().unwrap().entry(p).or_default() += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let counts = counts.lock().unwrap();
    let (a, b) = (
        counts[&env.cluster.node(1).port],
        counts[&env.cluster.node(2).port],
    );
    println!("3000 reads: pg2 {a}, pg3 {b}");
    assert_eq!(a + b, 3000);
    let share = b as f64 / 3000.0;
    assert!(
        (share - 2.0 / 3.0).abs() <= 0.05 * 2.0 / 3.0,
        "pg3 share {share}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_settings_primary_reads_and_no_replica_error() {
    let env = Env::start(fast(Setup::default().replicas(1)).tweak(|c| {
        c.routing.primary_reads = true;
        c.auth.method = AuthMethod::Trust;
        c.health.interval_ms = INTERVAL_MS;
    }))
    .await;
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let c = env.connect(env.ro).await;
        seen.insert(port_of(&c).await);
        // Even on the primary, the read-only port refuses writes.
        let err = c
            .simple_query("CREATE TABLE nope(x int)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "25006");
    }
    let s = env.proxy().shared.topology.snapshot();
    assert!(
        seen.contains(&env.primary_port()) && seen.contains(&env.cluster.node(1).port),
        "{seen:?} {:?} {:?}",
        s.read_schedule,
        s.backends
    );
    drop(env);

    let env = Env::start(fast(Setup::default().replicas(0)).tweak(|c| {
        c.routing.no_replica = pgsplit::config::NoReplica::Error;
        c.auth.method = AuthMethod::Trust;
    }))
    .await;
    let err = env.try_connect(env.ro, "app").await.unwrap_err();
    assert_eq!(sqlstate(&err), "57P03", "{}", message(&err));
    assert!(message(&err).contains("no replica"), "{}", message(&err));
    let c = env.connect(env.rw).await;
    assert_eq!(primary_of(&c).await, env.primary_port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_primary_writes_wait_then_fail_clearly() {
    let env = Env::start(fast(Setup::default().replicas(1)).tweak(|c| {
        c.health.failover_timeout_ms = 1500;
        c.health.interval_ms = INTERVAL_MS;
        c.health.fall = 2;
        c.auth.method = AuthMethod::Trust;
    }))
    .await;
    env.cluster.stop_node(0, true).unwrap();
    env.wait_for(Duration::from_secs(5), |s| s.primary.is_none())
        .await;
    let started = Instant::now();
    let err = env.try_connect(env.rw, "app").await.unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "waited {waited:?}");
    assert_eq!(sqlstate(&err), "57P03", "{}", message(&err));
    assert!(message(&err).contains("no primary"), "{}", message(&err));
    let (status, _) = env.http_get("/readyz").await;
    assert_eq!(status, 503);
    // Reads still work from the replica.
    let c = env.connect(env.ro).await;
    assert_eq!(port_of(&c).await, env.cluster.node(1).port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_on_a_former_primary_gets_one_clear_error() {
    let env = Env::start(fast(Setup::default().replicas(1))).await;
    let setup = env.connect(env.rw).await;
    setup.batch_execute("CREATE TABLE t(id int)").await.unwrap();
    env.cluster
        .wait_caught_up(0, 1, Duration::from_secs(10))
        .unwrap();
    let in_tx = env.connect(env.rw).await;
    in_tx
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let idle = env.connect(env.rw).await;
    one(&idle, "SELECT 1").await.unwrap();
    // The old primary keeps running: pgsplit must stop the open transaction.
    env.cluster.promote(1).unwrap();
    env.wait_for(Duration::from_secs(5), |s| s.primary == Some(1))
        .await;
    let err = in_tx.batch_execute("COMMIT").await.unwrap_err();
    assert!(err.is_closed() || sqlstate(&err) == "08006", "{err}");
    if let Some(db) = err.as_db_error() {
        assert!(
            db.message().contains("no longer the primary"),
            "{}",
            db.message()
        );
    }
    // The row never committed anywhere.
    assert_eq!(
        env.cluster
            .psql_db(0, "app", "SELECT count(*) FROM t")
            .unwrap(),
        "0"
    );
    assert_eq!(
        env.cluster
            .psql_db(1, "app", "SELECT count(*) FROM t")
            .unwrap(),
        "0"
    );
    // The idle, clean session carries on, on the new primary.
    assert_eq!(primary_of(&idle).await, env.cluster.node(1).port);
}

/// Every topology snapshot published while it runs, with when the test saw it.
/// (A `watch` channel coalesces: a snapshot replaced before the task woke is
/// missed, but a replica out of rotation stays out for `rise` probes, which
/// spans several publishes.)
struct SnapshotLog {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<(Instant, Arc<Snapshot>)>>,
}

impl SnapshotLog {
    fn start(env: &Env) -> SnapshotLog {
        let topology = env.proxy().shared.topology.clone();
        let mut changes = topology.subscribe();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut log = vec![(Instant::now(), topology.snapshot())];
            loop {
                tokio::select! {
                    _ = &mut stopped => return log,
                    changed = changes.changed() => if changed.is_err() { return log },
                }
                log.push((Instant::now(), topology.snapshot()));
            }
        });
        SnapshotLog { stop, task }
    }

    async fn finish(self) -> Vec<(Instant, Arc<Snapshot>)> {
        let _ = self.stop.send(());
        self.task.await.expect("snapshot log task")
    }
}

/// The primary's WAL position now, read directly.
fn primary_wal(env: &Env) -> Lsn {
    env.cluster
        .psql(0, "SELECT pg_current_wal_lsn()")
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_idle_primary_writes_only_real_replay_lag_counts() {
    const MAX_LAG_MS: u64 = 1000;
    // Longer than max_lag_ms: by its end the replicas' last replayed
    // transaction is older than the threshold, though nothing is behind.
    const IDLE: Duration = Duration::from_secs(3);
    let env = Env::start(fast(Setup::default()).tweak(|c| c.health.max_lag_ms = MAX_LAG_MS)).await;
    let rw = env.connect(env.rw).await;
    rw.batch_execute("CREATE TABLE idle_then_write(id serial PRIMARY KEY, pad text)")
        .await
        .unwrap();
    for i in 1..=2 {
        env.cluster
            .wait_caught_up(0, i, Duration::from_secs(30))
            .unwrap();
    }
    let log = SnapshotLog::start(&env);
    // pg3 stops replaying while it is caught up.
    env.cluster.pause_replay(2).unwrap();
    let caught_up =
        |s: &Snapshot, i: usize| s.backends[i].in_rotation && s.backends[i].lag_bytes == Some(0);
    env.wait_for(Duration::from_secs(5), |s| {
        caught_up(s, 1) && caught_up(s, 2)
    })
    .await;

    tokio::time::sleep(IDLE).await;
    // The first WAL after the quiet spell: a checkpoint record, no transaction.
    env.cluster.psql(0, "CHECKPOINT").unwrap();
    // Then a transaction that writes for a while before it commits: WAL
    // streams to the replicas, but no commit is replayed until the end.
    rw.batch_execute("BEGIN").await.unwrap();
    let writing = Instant::now();
    while writing.elapsed() < Duration::from_millis(1500) {
        rw.batch_execute(
            "INSERT INTO idle_then_write(pad) SELECT repeat('x', 100) FROM generate_series(1, 50)",
        )
        .await
        .unwrap();
    }
    rw.batch_execute("COMMIT").await.unwrap();
    // Then short transactions.
    for _ in 0..50 {
        rw.batch_execute("INSERT INTO idle_then_write(pad) VALUES ('y')")
            .await
            .unwrap();
    }
    // pgsplit has seen pg2 replay all of it, and pg3's lag pass twice the limit.
    let last = primary_wal(&env);
    env.wait_for(Duration::from_secs(10), |s| {
        s.backends[1].replay_lsn >= Some(last)
            && s.backends[2].lag_ms.is_some_and(|l| l > 2 * MAX_LAG_MS)
    })
    .await;
    let log = log.finish().await;

    let pg2_max = log
        .iter()
        .filter_map(|(_, s)| s.backends[1].lag_ms)
        .max()
        .unwrap();
    let pg2_out = log
        .iter()
        .filter(|(_, s)| !s.backends[1].in_rotation)
        .count();
    // When the test first saw the primary past pg3's (frozen) replay
    // position: pg3's time lag cannot honestly be more than the time since.
    let mut passed_at: Option<Instant> = None;
    let mut overstated = Vec::new();
    let mut pg3_lags = Vec::new();
    for (at, s) in &log {
        let (primary, pg3) = (&s.backends[0], &s.backends[2]);
        if let (Some(c), Some(r)) = (primary.current_lsn, pg3.replay_lsn) {
            if c > r {
                passed_at.get_or_insert(*at);
            } else {
                passed_at = None;
            }
        }
        let Some(lag) = pg3.lag_ms else { continue };
        pg3_lags.push(lag);
        let honest = passed_at.map_or(0, |p| at.duration_since(p).as_millis() as u64);
        // Slack: pgsplit dates a primary sample when its probe answers, a
        // little before the test sees the snapshot it is in.
        if lag > honest + INTERVAL_MS {
            overstated.push((lag, honest));
        }
    }
    println!(
        "{} snapshots; caught-up pg2: max lag_ms {pg2_max}, out of rotation in {pg2_out}; \
         paused pg3: lag_ms from {:?} to {:?}, overstated (lag_ms, ms since the primary passed it): {overstated:?}",
        log.len(),
        pg3_lags.iter().find(|&&l| l > 0),
        pg3_lags.last(),
    );
    assert_eq!(pg2_out, 0, "the caught-up replica left rotation");
    assert!(pg2_max < MAX_LAG_MS / 2, "caught-up pg2 lag_ms {pg2_max}");
    assert!(
        overstated.is_empty(),
        "pg3's lag counted from before the primary passed it"
    );
    assert!(
        pg3_lags.windows(2).all(|w| w[0] <= w[1]),
        "a paused replica's lag only grows: {pg3_lags:?}"
    );
    let end = &log.last().unwrap().1.backends[2];
    assert!(!end.in_rotation, "{end:?}");
    assert!(end.reason.as_deref().unwrap().contains("paused"), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_applying_late_leaves_for_time_lag_counted_from_the_write() {
    const MAX_LAG_MS: u64 = 1000;
    let env =
        Env::start(fast(Setup::default().replicas(1)).tweak(|c| c.health.max_lag_ms = MAX_LAG_MS))
            .await;
    let rw = env.connect(env.rw).await;
    rw.batch_execute("CREATE TABLE late(id int)").await.unwrap();
    env.cluster
        .wait_caught_up(0, 1, Duration::from_secs(30))
        .unwrap();
    // Not paused: pg2 receives WAL at once but applies each commit 3 s late.
    env.cluster
        .psql(
            1,
            "ALTER SYSTEM SET recovery_min_apply_delay = '3s';\nSELECT pg_reload_conf();",
        )
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the apply delay is in effect",
        || async {
            env.cluster
                .psql(1, "SHOW recovery_min_apply_delay")
                .unwrap()
                == "3s"
        },
    )
    .await;
    env.wait_for(Duration::from_secs(5), |s| {
        s.backends[1].in_rotation && s.backends[1].lag_bytes == Some(0)
    })
    .await;
    let wrote = Instant::now();
    rw.batch_execute("INSERT INTO late VALUES (1)")
        .await
        .unwrap();
    env.wait_for(Duration::from_secs(10), |s| !s.backends[1].in_rotation)
        .await;
    let left = wrote.elapsed();
    let pg2 = env.proxy().shared.topology.snapshot().backends[1].clone();
    println!(
        "left rotation {left:?} after the write, lag_ms {:?}, reason {:?}",
        pg2.lag_ms, pg2.reason
    );
    let reason = pg2.reason.as_deref().unwrap();
    assert!(reason.contains("max_lag_ms"), "{reason}");
    // Lag counts from the write, not from the last transaction pg2 replayed.
    assert!(
        left > Duration::from_millis(MAX_LAG_MS),
        "left after {left:?}"
    );
    assert!(
        pg2.lag_ms.unwrap() <= left.as_millis() as u64,
        "lag_ms {:?} > {left:?} since the write",
        pg2.lag_ms
    );
    // Within a probe of the primary and one of the replica past the limit.
    assert!(
        left < Duration::from_millis(MAX_LAG_MS + 3 * INTERVAL_MS + 500),
        "left after {left:?}"
    );
    // Once the delay has passed pg2 applies the commit and comes back.
    env.wait_for(Duration::from_secs(10), |s| s.backends[1].in_rotation)
        .await;
    println!("back in rotation {:?} after the write", wrote.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_left_on_the_failed_primarys_timeline_serves_no_reads() {
    let env = Env::start(fast(Setup::default().replicas(2))).await;
    let writer = env.connect(env.rw).await;
    writer
        .batch_execute("CREATE TABLE tl(id int); INSERT INTO tl VALUES (1)")
        .await
        .unwrap();
    for i in [1, 2] {
        env.cluster
            .wait_caught_up(0, i, Duration::from_secs(10))
            .unwrap();
    }
    // pg1 fails, pg2 is promoted; pg3 still follows the dead pg1.
    env.cluster.stop_node(0, true).unwrap();
    env.cluster.promote(1).unwrap();
    env.wait_for(Duration::from_secs(10), |s| s.primary == Some(1))
        .await;
    let s = env.proxy().shared.topology.snapshot();
    assert!(!s.backends[2].in_rotation, "{:?}", s.backends[2]);
    assert!(
        s.backends[2]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("primary changed")),
        "{:?}",
        s.backends[2].reason
    );
    // A write on the new primary; no read may come from pg3, which lacks it.
    let writer = env.connect(env.rw).await;
    writer
        .batch_execute("INSERT INTO tl VALUES (2)")
        .await
        .unwrap();
    for _ in 0..10 {
        let reader = env.connect(env.ro).await;
        assert_ne!(port_of(&reader).await, env.cluster.node(2).port);
        let n = one(&reader, "SELECT count(*) FROM tl").await.unwrap();
        assert_eq!(n, "2");
    }
    // Pointed at the new primary, pg3 replays its WAL and serves again.
    env.cluster.repoint_replica(2, 1).unwrap();
    env.wait_for(Duration::from_secs(15), |s| s.backends[2].in_rotation)
        .await;
    let mut saw_pg3 = false;
    for _ in 0..6 {
        let reader = env.connect(env.ro).await;
        saw_pg3 |= port_of(&reader).await == env.cluster.node(2).port;
        assert_eq!(one(&reader, "SELECT count(*) FROM tl").await.unwrap(), "2");
    }
    assert!(saw_pg3, "pg3 serves reads again");
}
