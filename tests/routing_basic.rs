//! Routing through both ports, checked by where statements ran: the
//! read-write port splits reads (replicas) from writes (primary); the
//! read-only port reads from a replica.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_port_splits_and_read_only_port_reads_a_replica() {
    let env = Env::start(Setup::default()).await;
    let rw = env.connect(env.rw).await;
    // A read on the read-write port goes to a replica, a write to the
    // primary; a question about the server itself is the primary's.
    let row = rw
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap();
    assert!(env.replica_ports().contains(&(row.get::<_, i32>(0) as u16)));
    let row = rw
        .query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[])
        .await
        .unwrap();
    assert!(
        !row.get::<_, bool>(0),
        "the read-write port is the primary's"
    );
    assert_eq!(row.get::<_, i32>(1), i32::from(env.primary_port()));
    rw.batch_execute("CREATE TABLE w(port int)").await.unwrap();
    let row = rw
        .query_one(
            "INSERT INTO w VALUES (inet_server_port()) RETURNING port",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), i32::from(env.primary_port()));

    let ro = env.connect(env.ro).await;
    let row = ro
        .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
        .await
        .unwrap();
    let port = row.get::<_, i32>(0) as u16;
    assert!(
        env.replica_ports().contains(&port),
        "read-only port answered from {port}"
    );
    assert!(row.get::<_, bool>(1));

    let err = ro
        .batch_execute("CREATE TABLE nope(x int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25006", "{err}");
}

/// The binary runs sessions on worker threads (one current-thread runtime
/// each); the same checks through that path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_worker_threads() {
    let cluster =
        tokio::task::spawn_blocking(|| pgsplit_testbed::Cluster::start(Default::default()))
            .await
            .unwrap()
            .unwrap();
    let workers = std::sync::Arc::new(pgsplit::workers::Workers::start(2).unwrap());
    let proxy = pgsplit::app::Proxy::start_with(config_for(&cluster), Some(workers.clone()))
        .await
        .unwrap();
    let mut changes = proxy.shared.topology.subscribe();
    while proxy.shared.topology.snapshot().read_schedule.len() < 2
        || proxy.shared.topology.snapshot().primary.is_none()
    {
        tokio::time::timeout(std::time::Duration::from_secs(15), changes.changed())
            .await
            .unwrap()
            .unwrap();
    }
    let connect = |port: u16| {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(port)
            .user("app")
            .password("app")
            .dbname("app");
        async move {
            let (client, conn) = c.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
        }
    };
    for _ in 0..4 {
        let rw = connect(proxy.read_write_addr.port()).await;
        assert_eq!(primary_of(&rw).await, cluster.node(0).port);
        let ro = connect(proxy.read_only_addr.port()).await;
        let in_recovery: bool = ro
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(in_recovery);
        let token = ro.cancel_token();
        let sleeper =
            tokio::spawn(async move { ro.simple_query("SELECT pg_sleep(20)").await.map(|_| ()) });
        // Cancel once the query runs on whichever replica it went to.
        let running = || {
            (1..3).any(|i| {
                cluster
                    .psql(i, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'")
                    .is_ok_and(|n| n == "1")
            })
        };
        eventually(std::time::Duration::from_secs(10), "the query runs", || {
            std::future::ready(running())
        })
        .await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let err = sleeper.await.unwrap().unwrap_err();
        assert_eq!(sqlstate(&err), "57014");
    }
    proxy.shutdown(std::time::Duration::from_secs(5)).await;
    tokio::task::spawn_blocking(move || workers.stop())
        .await
        .unwrap();
}

/// The value of the sample `name` (with its labels, exactly) in a scrape.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in:\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let env = Env::start(Setup::default().replicas(1)).await;
    let (_, before) = env.http_get("/metrics").await;
    let rw = env.connect(env.rw).await;
    let ro = env.connect(env.ro).await;
    for _ in 0..5 {
        rw.simple_query("SELECT 1").await.unwrap();
        rw.simple_query("/* pgsplit:primary */ SELECT 1")
            .await
            .unwrap();
        ro.simple_query("SELECT 1").await.unwrap();
    }
    let (status, after) = env.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        after.contains("# TYPE pgsplit_client_connections gauge"),
        "{after}"
    );
    assert!(
        after.contains("# TYPE pgsplit_client_connections_total counter"),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "pgsplit_client_connections{listener=\"read_write\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "pgsplit_client_connections_total{listener=\"read_only\"}"
        ),
        1.0
    );
    let durations =
        "pgsplit_statement_duration_seconds_count{listener=\"read_write\",target=\"primary\"}";
    assert!(sample(&after, durations) >= 5.0);
    let replica =
        "pgsplit_statement_duration_seconds_count{listener=\"read_only\",target=\"replica\"}";
    assert!(sample(&after, replica) >= 5.0);
    let split =
        "pgsplit_statement_duration_seconds_count{listener=\"read_write\",target=\"replica\"}";
    assert!(sample(&after, split) >= 5.0);
    // Routing decisions, by target and reason.
    let reads =
        "pgsplit_statements_total{listener=\"read_write\",target=\"replica\",reason=\"read\"}";
    assert_eq!(sample(&after, reads), 5.0);
    let hinted =
        "pgsplit_statements_total{listener=\"read_write\",target=\"primary\",reason=\"hint\"}";
    assert_eq!(sample(&after, hinted), 5.0);
    assert!(after.contains("pgsplit_classify_duration_seconds_count"));
    // Transaction pooling: between transactions neither session holds a
    // server connection; the ones they used wait in the pool.
    assert_eq!(
        sample(
            &after,
            "pgsplit_server_connections{backend=\"pg1\",state=\"in_use\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &after,
            "pgsplit_server_connections{backend=\"pg2\",state=\"in_use\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &after,
            "pgsplit_server_connections{backend=\"pg1\",state=\"idle\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "pgsplit_server_connections{backend=\"pg2\",state=\"idle\"}"
        ),
        1.0
    );
    // /status counts the same connections, per listener and per backend.
    let (status, body) = env.http_get("/status").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listeners = json["listeners"].as_array().unwrap();
    for l in listeners {
        assert_eq!(l["client_connections"], 1, "{body}");
    }
    assert_eq!(listeners.len(), 2, "{body}");
    for (backend, in_use) in [("pg1", 0), ("pg2", 0)] {
        let server = json["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["backend"] == backend)
            .unwrap_or_else(|| panic!("{backend} in {body}"));
        assert_eq!(server["in_use"], in_use, "{body}");
    }
    let up = "pgsplit_bytes_total{direction=\"client_to_server\"}";
    assert!(sample(&after, up) > sample(&before, up));
    assert_eq!(sample(&after, "pgsplit_backend_up{backend=\"pg2\"}"), 1.0);
    assert_eq!(sample(&after, "pgsplit_build_info{version=\"0.1.0\"}"), 1.0);
    // A wrong password is counted by SQLSTATE.
    let mut wrong = env.pg_config(env.rw, "app");
    wrong.password("nope");
    let _ = connect_err(&wrong).await;
    let (_, after) = env.http_get("/metrics").await;
    assert_eq!(
        sample(
            &after,
            "pgsplit_client_errors_total{listener=\"read_write\",sqlstate=\"28P01\"}"
        ),
        1.0
    );
    drop((rw, ro));
    eventually(
        std::time::Duration::from_secs(5),
        "server connections released",
        || async {
            let (_, m) = env.http_get("/metrics").await;
            sample(
                &m,
                "pgsplit_server_connections{backend=\"pg1\",state=\"in_use\"}",
            ) == 0.0
        },
    )
    .await;
}
