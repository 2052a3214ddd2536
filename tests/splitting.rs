//! Per-statement read/write splitting on the read-write port, checked against
//! a real cluster by where each statement actually ran.
//!
//! How "where it ran" is proven: every checked statement carries a unique
//! marker comment (`/* splitcase 17 */ SELECT …`). After the run, each node
//! is asked directly (not through pgsplit):
//! - its server log: the nodes run with `log_statement = 'all'`, so every
//!   statement a backend receives is logged with its text (simple Query as
//!   `statement: …`, extended protocol as `execute <name>: …`) before it
//!   executes, and an error logs it again as `STATEMENT: …`
//!   (`log_min_error_statement = error`). This sees failed statements too,
//!   e.g. an attempt on a replica that failed with 25006 and was retried on
//!   the primary, and unparsable text.
//! - `pg_stat_statements` (`track = all`, `track_utility = on`): entries
//!   whose `query` holds the marker, with their `calls` (completed runs).
//!   PostgreSQL keeps leading comments (and comments after a `;`) in
//!   `query`, but entries are keyed by the normalised query id, which
//!   ignores comments and constants: `/* splitcase 1 */ SELECT 1` and a later
//!   `/* splitcase 2 */ SELECT 2` share one entry whose text is the first
//!   one's. So pg_stat_statements alone cannot attribute every statement; it
//!   is used as a second, additive source (it also works on hot standbys).
//!
//! A node "ran" a case if either source shows its marker there. Expected
//! primary: ran on the primary and on no replica (not even a failed try).
//! Expected replica: ran on a replica and not on the primary. Expected
//! retried: logged on a replica (refused there, so no completed run) and
//! run on the primary.

#[path = "splitting/cases.rs"]
mod cases;
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cases::{Case, How, Target};
use common::*;
use futures_util::{SinkExt, TryStreamExt};
use tokio_postgres::SimpleQueryMessage;

/// postgresql.conf lines every cluster of this file runs with.
const CONF: [&str; 5] = [
    "shared_preload_libraries = 'pg_stat_statements'",
    "pg_stat_statements.track = all",
    "pg_stat_statements.track_utility = on",
    "log_statement = 'all'",
    "log_min_error_statement = error",
];

/// A cluster with pg_stat_statements (extension created in db app, readable
/// by app) and statement logging, and pgsplit in front of it.
async fn start(replicas: usize) -> Env {
    // Reads after a session's own write wait for a replica to replay it
    // (read-your-writes) rather than fall back to the primary, so where a
    // read runs does not depend on replication timing.
    let env = Env::start(
        Setup::default()
            .replicas(replicas)
            .extra_conf(CONF)
            .tweak(|c| c.consistency.max_wait_ms = 5000),
    )
    .await;
    env.cluster
        .psql_db(
            0,
            "app",
            "CREATE EXTENSION pg_stat_statements; GRANT pg_read_all_stats TO app;",
        )
        .expect("pg_stat_statements (postgresql-contrib) is installed");
    env
}

/// A client connected straight to node `i`, as app.
async fn direct(env: &Env, i: usize) -> tokio_postgres::Client {
    env.connect(env.cluster.node(i).port).await
}

fn marker(n: usize) -> String {
    format!("/* splitcase {n} */")
}

/// What one node shows about one marker.
struct Seen {
    node: usize,
    log_lines: usize,
    calls: i64,
}

/// Server logs and pg_stat_statements of every node, read once.
struct Evidence {
    names: Vec<String>,
    logs: Vec<String>,
    pgss: Vec<Vec<(String, i64)>>,
}

impl Evidence {
    /// Reads every node's log and pg_stat_statements. Every statement run
    /// through pgsplit before this call has completed (its client got the
    /// reply), so both are up to date: the log line is written before the
    /// statement executes, pg_stat_statements when it ends.
    async fn collect(env: &Env) -> Evidence {
        let mut ev = Evidence {
            names: vec![],
            logs: vec![],
            pgss: vec![],
        };
        for (i, node) in env.cluster.nodes().iter().enumerate() {
            ev.names.push(node.name.clone());
            let log = std::fs::read(node.log_file()).expect("node log");
            ev.logs.push(String::from_utf8_lossy(&log).into_owned());
            let rows = direct(env, i)
                .await
                .query("SELECT query, calls FROM pg_stat_statements", &[])
                .await
                .expect("read pg_stat_statements");
            ev.pgss
                .push(rows.iter().map(|r| (r.get(0), r.get(1))).collect());
        }
        ev
    }

    /// Every node, with what it shows about `marker`.
    fn seen(&self, marker: &str) -> Vec<Seen> {
        (0..self.names.len())
            .map(|node| Seen {
                node,
                log_lines: self.logs[node]
                    .lines()
                    .filter(|l| l.contains(marker))
                    .count(),
                calls: self.pgss[node]
                    .iter()
                    .filter(|(q, _)| q.contains(marker))
                    .map(|(_, c)| c)
                    .sum(),
            })
            .collect()
    }

    /// The nodes `marker` ran on.
    fn ran_on(&self, marker: &str) -> Vec<usize> {
        self.seen(marker)
            .iter()
            .filter(|s| s.log_lines > 0 || s.calls > 0)
            .map(|s| s.node)
            .collect()
    }

    /// "pg1 (primary: 1 log line(s), 1 call(s) …)" for each node that shows
    /// `marker`. The calls are those of the entry whose text holds the
    /// marker, so they include later statements with the same query id.
    fn describe(&self, marker: &str) -> String {
        let parts: Vec<String> = self
            .seen(marker)
            .iter()
            .filter(|s| s.log_lines > 0 || s.calls > 0)
            .map(|s| {
                let role = if s.node == 0 { "primary" } else { "replica" };
                format!(
                    "{} ({role}: {} log line(s), {} call(s) on its pg_stat_statements entry)",
                    self.names[s.node], s.log_lines, s.calls
                )
            })
            .collect();
        if parts.is_empty() {
            "nowhere (no log line, no pg_stat_statements entry)".into()
        } else {
            parts.join(", ")
        }
    }

    /// None if `marker` ran where `expect` says, else why not.
    fn check(&self, marker: &str, expect: Target) -> Option<String> {
        let on = self.ran_on(marker);
        let ok = match expect {
            Target::Primary => on == [0],
            Target::Replica => !on.is_empty() && !on.contains(&0),
            Target::Retried => {
                let seen = self.seen(marker);
                let ran_on_replica = seen.iter().any(|s| s.node != 0 && s.calls > 0);
                on.contains(&0) && on.len() > 1 && !ran_on_replica
            }
        };
        (!ok).then(|| format!("expected {expect:?}, ran on {}", self.describe(marker)))
    }
}

fn db_error(e: &tokio_postgres::Error) -> String {
    format!("{} {}", sqlstate(e), message(e))
}

/// Runs one case on a fresh connection through the read-write port. Returns
/// a problem with the client side of the run, if any.
async fn run_case(env: &Env, case: &Case, marker: &str) -> Option<String> {
    let c = env.connect(env.rw).await;
    for s in case.pre {
        if let Err(e) = c.batch_execute(s).await {
            return Some(format!("setup {s:?} failed: {}", db_error(&e)));
        }
    }
    let sql = case.marked(marker);
    let result = match case.how {
        How::Simple => c.simple_query(&sql).await.map(|_| ()),
        How::CopyOut => match c.copy_out(sql.as_str()).await {
            Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
            Err(e) => Err(e),
        },
        How::CopyIn(rows) => match c.copy_in(sql.as_str()).await {
            Ok(sink) => {
                let mut sink = Box::pin(sink);
                match sink.send(bytes::Bytes::from_static(rows.as_bytes())).await {
                    Ok(()) => sink.as_mut().finish().await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        },
    };
    let problem = match (result, case.fails) {
        (Ok(()), false) | (Err(_), true) => None,
        (Ok(()), true) => Some("succeeded, expected an error".to_owned()),
        (Err(e), false) => Some(format!("failed: {}", db_error(&e))),
    };
    if problem.is_some() {
        return problem;
    }
    for s in case.post {
        if let Err(e) = c.batch_execute(s).await {
            return Some(format!("{s:?} afterwards failed: {}", db_error(&e)));
        }
    }
    None
}

/// `name{labels} value` samples of a scrape whose name is `name`.
fn samples<'a>(metrics: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series, value.parse().ok()?))
        })
        .collect()
}

/// Problems with the routing metrics after the table run.
fn check_metrics(metrics: &str) -> Vec<String> {
    let mut problems = vec![];
    let statements = samples(metrics, "pgsplit_statements_total");
    let sum = |labels: &[&str]| -> f64 {
        statements
            .iter()
            .filter(|(s, _)| labels.iter().all(|l| s.contains(l)))
            .map(|(_, v)| v)
            .sum()
    };
    let replica_reads = sum(&[
        "listener=\"read_write\"",
        "target=\"replica\"",
        "reason=\"read\"",
    ]);
    if replica_reads <= 0.0 {
        problems.push(
            "metrics: no pgsplit_statements_total{listener=\"read_write\",target=\"replica\",reason=\"read\"} > 0"
                .to_owned(),
        );
    }
    if sum(&["listener=\"read_write\"", "target=\"primary\""]) <= 0.0 {
        problems.push(
            "metrics: no pgsplit_statements_total{listener=\"read_write\",target=\"primary\",…} > 0"
                .to_owned(),
        );
    }
    let retried = cases::all()
        .iter()
        .filter(|c| c.expect == Target::Retried)
        .count() as f64;
    if sum(&["listener=\"read_write\"", "reason=\"retried\""]) < retried {
        problems.push(format!(
            "metrics: fewer than {retried} pgsplit_statements_total{{reason=\"retried\"}}"
        ));
    }
    let pins: f64 = samples(metrics, "pgsplit_session_pins_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    if pins <= 0.0 {
        problems.push("metrics: no pgsplit_session_pins_total{…} > 0".to_owned());
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_table_runs_where_expected() {
    let env = start(2).await;
    fixture(&env, cases::FIXTURE);
    let cases = cases::all();
    assert!(cases.len() >= 120, "only {} cases", cases.len());

    let mut client_problems = vec![];
    for (i, case) in cases.iter().enumerate() {
        let m = marker(i + 1);
        let run = tokio::time::timeout(Duration::from_secs(30), run_case(&env, case, &m));
        client_problems.push(match run.await {
            Ok(p) => p,
            Err(_) => Some("timed out after 30 s".to_owned()),
        });
    }

    let ev = Evidence::collect(&env).await;
    let mut failures = vec![];
    let mut per_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut in_pgss = 0;
    for (i, (case, client)) in cases.iter().zip(&client_problems).enumerate() {
        let m = marker(i + 1);
        if ev.seen(&m).iter().any(|s| s.calls > 0) {
            in_pgss += 1;
        }
        let placement = ev.check(&m, case.expect);
        let entry = per_category.entry(case.category).or_default();
        entry.0 += 1;
        if client.is_none() && placement.is_none() {
            entry.1 += 1;
            continue;
        }
        let mut why = vec![];
        why.extend(placement);
        if let Some(c) = client {
            why.push(format!("{c}; ran on {}", ev.describe(&m)));
        }
        failures.push(format!(
            "case {} [{}] {:?}{}: {}",
            i + 1,
            case.category,
            case.marked(&m),
            if case.pre.is_empty() {
                String::new()
            } else {
                format!(" after {:?}", case.pre)
            },
            why.join("; ")
        ));
    }

    let mut summary = format!("{:<22} {:>6} {:>6}\n", "category", "cases", "passed");
    for (cat, (n, ok)) in &per_category {
        summary += &format!("{cat:<22} {n:>6} {ok:>6}\n");
    }
    let passed: usize = per_category.values().map(|(_, ok)| ok).sum();
    summary += &format!(
        "{:<22} {:>6} {passed:>6}\n({in_pgss} of {} markers also found in pg_stat_statements; the rest share a query id with an earlier case)\n",
        "total",
        cases.len(),
        cases.len()
    );
    println!("{summary}");
    for f in &failures {
        println!("FAIL {f}");
    }

    let (status, metrics) = env.http_get("/metrics").await;
    assert_eq!(status, 200);
    let metric_problems = check_metrics(&metrics);
    for p in &metric_problems {
        println!("FAIL {p}");
    }
    assert!(
        failures.is_empty() && metric_problems.is_empty(),
        "{} of {} cases failed, {} metric problem(s):\n{summary}\n{}\n{}",
        failures.len(),
        cases.len(),
        metric_problems.len(),
        failures.join("\n"),
        metric_problems.join("\n")
    );
}

/// The checker itself, independent of routing: statements sent through the
/// read-only port (always a replica) are seen on that replica only, by its
/// log and by pg_stat_statements on the standby; a statement refused there
/// by the replica (25006; a write pgsplit cannot see) is still seen there,
/// by its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_sees_statements_on_replicas() {
    let env = start(2).await;
    fixture(&env, ITEMS);
    fixture(&env, SNEAKY);
    let ro = env.connect(env.ro).await;
    let row = ro
        .query_one(
            "/* selfcheck read */ SELECT inet_server_port() FROM items WHERE id = 1",
            &[],
        )
        .await
        .unwrap();
    let replica = 1 + env
        .replica_ports()
        .iter()
        .position(|p| *p == port(&row, 0))
        .expect("the read-only port answered from a replica");
    let err = ro
        .simple_query("/* selfcheck write */ SELECT sneaky_write('no')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25006", "{}", db_error(&err));
    // Straight to the primary: this test checks the checker, not routing.
    let rw = env.connect(env.primary_port()).await;
    rw.simple_query("/* selfcheck primary */ SELECT v FROM items WHERE id = 2")
        .await
        .unwrap();

    let ev = Evidence::collect(&env).await;
    let read = ev.seen("/* selfcheck read */");
    assert!(
        read[replica].log_lines > 0 && read[replica].calls > 0,
        "the read is in {}'s log and pg_stat_statements: {}",
        ev.names[replica],
        ev.describe("/* selfcheck read */")
    );
    assert_eq!(ev.ran_on("/* selfcheck read */"), [replica]);
    assert_eq!(ev.check("/* selfcheck read */", Target::Replica), None);
    let refused = ev.ran_on("/* selfcheck write */");
    assert_eq!(refused.len(), 1, "{}", ev.describe("/* selfcheck write */"));
    assert_ne!(refused, [0]);
    let wrong = ev.check("/* selfcheck write */", Target::Primary);
    assert!(wrong.is_some_and(|w| w.contains("replica")));
    assert_eq!(ev.ran_on("/* selfcheck primary */"), [0]);
    assert!(ev.ran_on("/* selfcheck never */").is_empty());
}

/// The first column of the first row of a simple query's answer.
fn first_cell(msgs: Vec<SimpleQueryMessage>) -> String {
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

/// `SELECT inet_server_port()`-style answer of a row's column `i`.
fn port(row: &tokio_postgres::Row, i: usize) -> u16 {
    row.get::<_, i32>(i) as u16
}

const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, v text);
INSERT INTO items SELECT g, 'item' || g FROM generate_series(1, 20) g;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_each_execution() {
    let env = start(1).await;
    fixture(&env, ITEMS);
    let c = env.connect(env.rw).await;
    let read = c
        .prepare("SELECT v, inet_server_port() FROM items WHERE id = $1")
        .await
        .unwrap();
    let write = c
        .prepare("INSERT INTO items VALUES ($1, $2) RETURNING inet_server_port()")
        .await
        .unwrap();
    let (mut reads, mut writes) = (vec![], vec![]);
    for k in 0..5 {
        let row = c
            .query_one(&read, &[&(k + 1)])
            .await
            .expect("prepared read");
        assert_eq!(row.get::<_, String>(0), format!("item{}", k + 1));
        reads.push(port(&row, 1));
        let row = c
            .query_one(&write, &[&(100 + k), &"prepared"])
            .await
            .expect("prepared write");
        writes.push(port(&row, 0));
    }
    let replicas = env.replica_ports();
    assert!(
        writes.iter().all(|p| *p == env.primary_port()),
        "writes ran on {writes:?}, primary is {}",
        env.primary_port()
    );
    assert!(
        reads.iter().all(|p| replicas.contains(p)),
        "reads ran on {reads:?}, replicas are {replicas:?} (primary {})",
        env.primary_port()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_and_execute_survive_a_write() {
    let env = start(1).await;
    fixture(&env, ITEMS);
    let c = env.connect(env.rw).await;
    c.batch_execute("PREPARE p (int) AS SELECT count(*) FROM items WHERE id <= $1")
        .await
        .unwrap();
    assert_eq!(
        first_cell(c.simple_query("EXECUTE p(10)").await.unwrap()),
        "10"
    );
    c.batch_execute("INSERT INTO items VALUES (500, 'x')")
        .await
        .unwrap();
    assert_eq!(
        first_cell(c.simple_query("EXECUTE p(5)").await.unwrap()),
        "5"
    );
    c.batch_execute("DEALLOCATE p").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_reach_the_replica() {
    let env = start(1).await;
    let c = env.connect(env.rw).await;
    c.batch_execute("SET search_path TO pg_catalog, public")
        .await
        .unwrap();
    c.batch_execute("SET myapp.x = '42'").await.unwrap();
    let rows = c
        .simple_query(
            "SELECT current_setting('myapp.x'), current_setting('search_path'), inet_server_port()",
        )
        .await
        .unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("a row");
    assert_eq!(row.get(0), Some("42"));
    assert_eq!(row.get(1), Some("pg_catalog, public"));
    let ran: u16 = row.get(2).unwrap().parse().unwrap();
    assert!(
        env.replica_ports().contains(&ran),
        "ran on {ran}, replicas are {:?}",
        env.replica_ports()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_table_reads_run_on_the_primary() {
    let env = start(1).await;
    let c = env.connect(env.rw).await;
    c.batch_execute("CREATE TEMP TABLE tt (x int); INSERT INTO tt VALUES (1)")
        .await
        .unwrap();
    let row = c
        .query_one("SELECT x, inet_server_port() FROM tt", &[])
        .await
        .expect("the temp table is visible");
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(port(&row, 1), env.primary_port());
    // A read that cannot see the temp table is still offloaded.
    assert_ne!(served_by(&c).await, env.primary_port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_then_read_in_a_transaction_stays_on_the_primary() {
    let env = start(1).await;
    fixture(&env, ITEMS);
    let c = env.connect(env.rw).await;
    c.batch_execute("BEGIN").await.unwrap();
    let ins = c
        .query_one(
            "INSERT INTO items VALUES (300, 'tx') RETURNING inet_server_port()",
            &[],
        )
        .await
        .unwrap();
    let sel = c
        .query_one(
            "SELECT v, inet_server_port() FROM items WHERE id = 300",
            &[],
        )
        .await
        .expect("the transaction sees its own row");
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(sel.get::<_, String>(0), "tx");
    assert_eq!(port(&ins, 0), env.primary_port());
    assert_eq!(port(&sel, 1), env.primary_port());
}

/// A STABLE function may not INSERT itself (0A000 on any server), but it
/// may call a VOLATILE one that does: a write no classifier can see, which
/// fails on a replica with 25006.
const SNEAKY: &str = "CREATE TABLE sneaky (v text);
CREATE FUNCTION really_write(x text) RETURNS void LANGUAGE plpgsql VOLATILE
    AS $$BEGIN INSERT INTO sneaky VALUES (x); END$$;
CREATE FUNCTION sneaky_write(x text) RETURNS int LANGUAGE plpgsql STABLE
    AS $$BEGIN PERFORM really_write(x); RETURN 1; END$$;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_write_fails_on_a_replica_and_is_retried_on_the_primary() {
    let env = start(1).await;
    fixture(&env, SNEAKY);
    // The premise: on a replica it fails with 25006.
    let err = direct(&env, 1)
        .await
        .simple_query("SELECT sneaky_write('direct')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25006", "{}", db_error(&err));

    let c = env.connect(env.rw).await;
    c.simple_query("/* hidden write */ SELECT sneaky_write('through pgsplit')")
        .await
        .expect("pgsplit retries the 25006 on the primary");
    let ev = Evidence::collect(&env).await;
    println!(
        "the hidden write ran on {}",
        ev.describe("/* hidden write */")
    );
    assert!(ev.ran_on("/* hidden write */").contains(&0));
    let n: i64 = direct(&env, 0)
        .await
        .query_one(
            "SELECT count(*) FROM sneaky WHERE v = 'through pgsplit'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the row exists on the primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_reads_and_writes() {
    let env = start(2).await;
    fixture(&env, ITEMS);
    let c = env.connect(env.rw).await;
    let insert =
        "/* pipe insert */ INSERT INTO items VALUES (900, 'piped') RETURNING inet_server_port()";
    let sqls = [
        "/* pipe read 1 */ SELECT inet_server_port() FROM items WHERE id = 1",
        "/* pipe read 2 */ SELECT inet_server_port() FROM items WHERE id = 2",
        insert,
        "/* pipe read 3 */ SELECT inet_server_port() FROM items WHERE id = 3",
        "/* pipe read 4 */ SELECT inet_server_port()",
    ];
    // Polled together on one client, these go out back to back (tokio-postgres
    // pipelines requests) without waiting for each other's replies.
    let results = futures_util::future::join_all(sqls.iter().map(|s| c.query(*s, &[]))).await;
    let mut ports = vec![];
    for (sql, r) in sqls.iter().zip(results) {
        let rows = r.unwrap_or_else(|e| panic!("{sql}: {}", db_error(&e)));
        ports.push((sql, port(&rows[0], 0)));
    }
    println!("pipelined statements ran on: {ports:?}");
    assert_eq!(ports[2].1, env.primary_port(), "the INSERT's own answer");
    let n: i64 = direct(&env, 0)
        .await
        .query_one("SELECT count(*) FROM items WHERE id = 900", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the row exists on the primary");
    let ev = Evidence::collect(&env).await;
    assert_eq!(
        ev.ran_on("/* pipe insert */"),
        [0],
        "the INSERT ran on {}",
        ev.describe("/* pipe insert */")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_port_refuses_server_state_changes() {
    let env = start(1).await;
    let c = env.connect(env.ro).await;
    let mut problems = vec![];
    for sql in [
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_promote()",
        "CHECKPOINT",
        "ALTER SYSTEM SET work_mem = '8MB'",
        "SELECT pg_wal_replay_pause()",
    ] {
        match c.simple_query(sql).await {
            Ok(_) => problems.push(format!("{sql}: succeeded")),
            Err(e) if sqlstate(&e) == "25006" => {}
            Err(e) => problems.push(format!("{sql}: {}", db_error(&e))),
        }
    }
    let ran = first_cell(c.simple_query("SELECT inet_server_port()").await.unwrap());
    assert!(env.replica_ports().contains(&ran.parse().unwrap()));
    assert!(
        problems.is_empty(),
        "expected SQLSTATE 25006 from pgsplit for:\n{}",
        problems.join("\n")
    );
}
