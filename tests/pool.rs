//! Server connection pooling against the real cluster: reads borrow replica
//! connections and give them back, sessions leave theirs reset for the next,
//! and the per-backend bound makes a session wait, then fail clearly.

mod common;
use std::time::Duration;

use common::*;

/// Server connections of user `app` open on a node, counted there directly.
fn app_connections(env: &Env, node: usize) -> usize {
    env.cluster
        .psql(
            node,
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
             AND backend_type = 'client backend' AND application_name <> 'pgsplit-health' \
             AND pid <> pg_backend_pid()",
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    let rows = c.simple_query("SELECT pg_backend_pid()").await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_share_replica_connections_and_sessions_reuse_them() {
    let env = Env::start(Setup::default().replicas(1)).await;
    // Ten sessions, open together, each reading in turn: the replica
    // connection a read borrowed is back in the pool for the next one.
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(env.connect(env.rw).await);
    }
    // Simple queries: a session whose named prepared statements live on its
    // replica connection keeps that connection (see ARCHITECTURE.md).
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..3 {
        for c in &sessions {
            pids.insert(backend_pid(c).await);
        }
    }
    assert_eq!(pids.len(), 1, "reads in turn used {pids:?}");
    assert_eq!(app_connections(&env, 1), 1);
    let (_, status) = env.http_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let pg2 = status["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["backend"] == "pg2")
        .unwrap()
        .clone();
    assert_eq!(pg2["idle"], 1, "{status}");
    assert_eq!(pg2["in_use"], 0, "{status}");

    // A session that leaves gives its primary connection back, reset: the
    // next session's write reuses it without a login, and sees none of the
    // first one's settings.
    let first = sessions.pop().unwrap();
    first
        .batch_execute(
            "/* pgsplit:primary */ SET application_name = 'leaver'; CREATE TEMP TABLE t(x int)",
        )
        .await
        .unwrap();
    drop(first);
    drop(sessions);
    eventually(
        Duration::from_secs(5),
        "the primary connections are pooled",
        || async {
            let (_, m) = env.http_get("/metrics").await;
            m.contains("pgsplit_server_connections{backend=\"pg1\",state=\"idle\"} 10")
        },
    )
    .await;
    let next = env.connect(env.rw).await;
    let row = next
        .query_one(
            "/* pgsplit:primary */ SELECT pg_backend_pid(), current_setting('application_name'), \
             (SELECT count(*) FROM pg_class WHERE relname = 't' AND relpersistence = 't')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(app_connections(&env, 0), 10, "no new login on the primary");
    assert_ne!(row.get::<_, String>(1), "leaver");
    assert_eq!(
        row.get::<_, i64>(2),
        0,
        "the temp table went with DISCARD ALL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_makes_sessions_wait_then_fail_clearly() {
    let env = Env::start(Setup::default().replicas(0).tweak(|c| {
        c.limits.max_server_connections = 2;
        c.limits.server_wait_timeout_ms = 2000;
    }))
    .await;
    let a = env.connect(env.rw).await;
    let b = env.connect(env.rw).await;
    // A third session needs a third primary connection: it waits for one.
    let waiting = tokio::spawn({
        let cfg = env.pg_config(env.rw, "app");
        async move {
            let (c, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            c.query_one("SELECT 1", &[])
                .await
                .map(|r| r.get::<_, i32>(0))
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the third session did not wait");
    drop(a);
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting session got the freed connection")
        .unwrap()
        .unwrap();
    assert_eq!(got, 1);

    // With both held and none freed, the wait ends in 53300.
    let c = env.connect(env.rw).await;
    let mut cfg = env.pg_config(env.rw, "app");
    cfg.connect_timeout(Duration::from_secs(10));
    let err = connect_err(&cfg).await;
    assert_eq!(sqlstate(&err), "53300", "{}", message(&err));
    assert!(
        message(&err).contains("max_server_connections"),
        "{}",
        message(&err)
    );
    // The sessions holding connections carry on.
    assert_eq!(
        c.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0),
        2
    );
    assert_eq!(
        b.query_one("SELECT 3", &[]).await.unwrap().get::<_, i32>(0),
        3
    );
}
