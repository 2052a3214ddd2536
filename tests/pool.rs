//! Transaction pooling against the real cluster: idle clients hold no server
//! connection, sessions share connections (and their prepared statements),
//! the per-backend bound makes sessions wait in order, then fail clearly, a
//! pinned session keeps its connection without starving the others, and a
//! connection is never handed on dirty or dead.

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

async fn first_cell(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_hold_no_server_connection() {
    let env = Env::start(Setup::default().replicas(1).tweak(|c| {
        c.limits.max_server_connections = 2;
        c.limits.server_wait_timeout_ms = 5000;
    }))
    .await;
    // Forty sessions over two connections per backend, each reading and
    // writing in turn: nobody waits long, nobody is refused.
    let mut sessions = Vec::new();
    for _ in 0..40 {
        sessions.push(env.connect(env.rw).await);
    }
    fixture(&env, "CREATE TABLE hits (n int)");
    for round in 0..3 {
        for c in &sessions {
            assert_eq!(first_cell(c, "SELECT 7").await, "7");
            c.batch_execute(&format!("INSERT INTO hits VALUES ({round})"))
                .await
                .unwrap();
        }
    }
    assert!(
        app_connections(&env, 0) <= 2,
        "the bound holds on the primary"
    );
    assert!(
        app_connections(&env, 1) <= 2,
        "the bound holds on the replica"
    );
    let (_, status) = env.http_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    for server in status["servers"].as_array().unwrap() {
        assert_eq!(server["in_use"], 0, "idle sessions hold nothing: {status}");
    }
    let n = env
        .cluster
        .psql_db(0, "app", "SELECT count(*) FROM hits")
        .unwrap();
    assert_eq!(n.trim(), "120");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_share_connections_and_leave_nothing_behind() {
    let env = Env::start(Setup::default().replicas(1)).await;
    // Ten sessions reading in turn share one replica connection.
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(env.connect(env.rw).await);
    }
    for _ in 0..3 {
        for c in &sessions {
            first_cell(c, "SELECT 1").await;
        }
    }
    assert_eq!(
        app_connections(&env, 1),
        1,
        "one replica connection served all reads"
    );

    // A session that leaves with state (a setting, a temp table, so pinned)
    // gives its connection back reset: the next session reuses it without
    // a login and sees none of it.
    let before = app_connections(&env, 0);
    let first = sessions.pop().unwrap();
    first
        .batch_execute(
            "/* pgsplit:primary */ SET application_name = 'leaver'; CREATE TEMP TABLE t(x int)",
        )
        .await
        .unwrap();
    drop(first);
    drop(sessions);
    let next = env.connect(env.rw).await;
    let row = next
        .query_one(
            "/* pgsplit:primary */ SELECT current_setting('application_name'), \
             (SELECT count(*) FROM pg_class WHERE relname = 't' AND relpersistence = 't')",
            &[],
        )
        .await
        .unwrap();
    assert_ne!(row.get::<_, String>(0), "leaver");
    assert_eq!(
        row.get::<_, i64>(1),
        0,
        "the temp table went with DISCARD ALL"
    );
    assert_eq!(
        app_connections(&env, 0),
        before.max(1),
        "no new login on the primary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_each_session_across_shared_connections() {
    let env = Env::start(Setup::default().replicas(0).tweak(|c| {
        c.limits.max_server_connections = 1;
    }))
    .await;
    let a = env.connect(env.rw).await;
    let b = env.connect(env.rw).await;
    a.batch_execute("SET search_path = pg_catalog; SET application_name = 'a'")
        .await
        .unwrap();
    b.batch_execute("SET application_name = 'b'").await.unwrap();
    for _ in 0..3 {
        assert_eq!(first_cell(&a, "SHOW application_name").await, "a");
        assert_eq!(first_cell(&a, "SHOW search_path").await, "pg_catalog");
        assert_eq!(first_cell(&b, "SHOW application_name").await, "b");
        assert_eq!(
            first_cell(&b, "SHOW search_path").await,
            "\"$user\", public"
        );
    }
    // A SET inside a transaction that rolls back is forgotten; one that
    // commits is kept.
    a.batch_execute("BEGIN; SET application_name = 'rolled back'; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(first_cell(&a, "SHOW application_name").await, "a");
    b.batch_execute("BEGIN; SET application_name = 'committed'; COMMIT")
        .await
        .unwrap();
    assert_eq!(first_cell(&a, "SHOW application_name").await, "a");
    assert_eq!(first_cell(&b, "SHOW application_name").await, "committed");
    // RESET returns the session to its login state.
    b.batch_execute("RESET application_name").await.unwrap();
    assert_eq!(first_cell(&b, "SHOW application_name").await, "");
    // A session that never set anything sees nothing of a SET that ran on
    // the connection just before it.
    let c = env.connect(env.rw).await;
    a.batch_execute("SET application_name = 'a again'")
        .await
        .unwrap();
    assert_eq!(first_cell(&c, "SHOW application_name").await, "");
    assert_eq!(first_cell(&a, "SHOW application_name").await, "a again");
    assert_eq!(app_connections(&env, 0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_makes_sessions_wait_in_order_then_fail_clearly() {
    let env = Env::start(Setup::default().replicas(0).tweak(|c| {
        c.limits.max_server_connections = 2;
        c.limits.server_wait_timeout_ms = 2000;
    }))
    .await;
    // Two sessions inside transactions hold both connections.
    let a = env.connect(env.rw).await;
    let b = env.connect(env.rw).await;
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // Two more wait, in the order they asked.
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiting = Vec::new();
    for who in ["first", "second"] {
        let c = env.connect(env.rw).await;
        let order = order.clone();
        waiting.push(tokio::spawn(async move {
            c.batch_execute("SELECT 1").await?;
            order.lock().unwrap().push(who);
            Ok::<_, tokio_postgres::Error>(c)
        }));
        eventually(Duration::from_secs(5), "the session waits", || async {
            let (_, m) = env.http_get("/metrics").await;
            m.lines().any(|l| {
                l.starts_with("pgsplit_pool_waiting_clients{backend=\"pg1\"}")
                    && l.ends_with(&format!(" {}", waiting.len()))
            })
        })
        .await;
    }
    assert!(!waiting[0].is_finished() && !waiting[1].is_finished());
    a.batch_execute("COMMIT").await.unwrap();
    for w in waiting {
        tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("a waiting session got the freed connection")
            .unwrap()
            .unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["first", "second"]);
    let (_, m) = env.http_get("/metrics").await;
    assert!(
        m.contains("pgsplit_pool_wait_seconds_count{backend=\"pg1\"} 2"),
        "{m}"
    );

    // With both held and none freed, the wait ends in 53300, naming the
    // limit.
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let c = env.connect(env.rw).await;
    let err = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "53300", "{}", message(&err));
    assert!(
        message(&err).contains("max_server_connections"),
        "{}",
        message(&err)
    );
    // The sessions holding connections carry on.
    a.batch_execute("SELECT 2; COMMIT").await.unwrap();
    b.batch_execute("SELECT 3; COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_session_keeps_its_connection_and_starves_nobody() {
    let env = Env::start(Setup::default().replicas(0).tweak(|c| {
        c.limits.max_server_connections = 2;
        c.limits.server_wait_timeout_ms = 2000;
    }))
    .await;
    let pinned = env.connect(env.rw).await;
    pinned
        .batch_execute("CREATE TEMP TABLE mine (x int); INSERT INTO mine VALUES (1)")
        .await
        .unwrap();
    let (_, m) = env.http_get("/metrics").await;
    assert!(
        m.contains("pgsplit_pinned_sessions{cause=\"temp_object\"} 1"),
        "{m}"
    );
    // Twenty sessions share the one connection left.
    let mut others = Vec::new();
    for _ in 0..20 {
        others.push(env.connect(env.rw).await);
    }
    for c in &others {
        assert_eq!(first_cell(c, "/* pgsplit:primary */ SELECT 5").await, "5");
    }
    assert_eq!(first_cell(&pinned, "SELECT count(*) FROM mine").await, "1");
    // DISCARD TEMP releases the pin: the connection goes back.
    pinned.batch_execute("DISCARD TEMP").await.unwrap();
    let (_, m) = env.http_get("/metrics").await;
    assert!(
        m.contains("pgsplit_pinned_sessions{cause=\"temp_object\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("pgsplit_server_connections{backend=\"pg1\",state=\"in_use\"} 0"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_come_back_clean_or_not_at_all() {
    let env = Env::start(Setup::default().replicas(0).tweak(|c| {
        c.limits.max_server_connections = 1;
    }))
    .await;
    fixture(
        &env,
        "CREATE TABLE locked (id int PRIMARY KEY); INSERT INTO locked VALUES (1)",
    );
    // A client that vanishes inside a transaction holding a row lock.
    {
        let gone = env.connect(env.rw).await;
        gone.batch_execute("BEGIN; SELECT * FROM locked WHERE id = 1 FOR UPDATE")
            .await
            .unwrap();
    }
    // The next session gets the connection rolled back: no transaction, no
    // lock (it would wait for the lock otherwise).
    let next = env.connect(env.rw).await;
    let row = tokio::time::timeout(
        Duration::from_secs(5),
        next.query_one("SELECT id FROM locked WHERE id = 1 FOR UPDATE NOWAIT", &[]),
    )
    .await
    .expect("no lock left behind")
    .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    // A client that vanishes mid-statement: cancelled, the connection
    // closed; the next session gets a fresh one and no error.
    let sleeper = env.start_sleeper(env.rw, 0, "vanishing", 30).await;
    sleeper.query.abort();
    sleeper.connection.abort();
    eventually(Duration::from_secs(10), "the statement is cancelled", || async {
        env.cluster
            .psql(
                0,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vanishing' AND state = 'active'",
            )
            .unwrap()
            == "0"
    })
    .await;
    assert_eq!(
        first_cell(&next, "/* pgsplit:primary */ SELECT 9").await,
        "9"
    );
    // Idle pooled connections killed on the server are never handed out.
    env.cluster
        .psql(
            0,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' \
             AND application_name <> 'pgsplit-health' AND pid <> pg_backend_pid()",
        )
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            first_cell(&next, "/* pgsplit:primary */ SELECT 10").await,
            "10"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_a_connection_per_client() {
    let env = Env::start(Setup::default().replicas(0).tweak(|c| {
        c.pool.mode = pgsplit::config::PoolMode::Session;
    }))
    .await;
    let a = env.connect(env.rw).await;
    let b = env.connect(env.rw).await;
    let pid_a = first_cell(&a, "SELECT pg_backend_pid()").await;
    let pid_b = first_cell(&b, "SELECT pg_backend_pid()").await;
    assert_ne!(pid_a, pid_b);
    for _ in 0..3 {
        assert_eq!(first_cell(&a, "SELECT pg_backend_pid()").await, pid_a);
    }
    assert_eq!(app_connections(&env, 0), 2);
}
