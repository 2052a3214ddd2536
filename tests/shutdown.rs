//! Graceful shutdown: readiness turns 503 at once, idle sessions close with
//! 57P01, a transaction in flight may commit, and what is still busy after the
//! grace period is closed with 57P01.

mod common;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_closes_with_57p01() {
    let mut env = Env::start(Setup::default().replicas(0)).await;
    let setup = env.connect(env.rw).await;
    setup.batch_execute("CREATE TABLE s(id int)").await.unwrap();
    let in_tx = env.connect(env.rw).await;
    in_tx
        .batch_execute("BEGIN; INSERT INTO s VALUES (1)")
        .await
        .unwrap();
    let idle = env.connect(env.rw).await;
    let sleeper = env.start_sleeper(env.rw, 0, "long-query", 30).await;

    let proxy = env.proxy.take().unwrap();
    let rw = env.rw;
    let started = Instant::now();
    let stopping = tokio::spawn(proxy.shutdown(Duration::from_millis(1500)));
    eventually(Duration::from_secs(2), "/readyz says 503", || async {
        env.http_get("/readyz").await.0 == 503
    })
    .await;

    // The idle session is closed right away with 57P01.
    let err = idle.simple_query("SELECT 1").await.unwrap_err();
    assert!(err.is_closed() || sqlstate(&err) == "57P01", "{err}");
    // New connections are refused.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", rw))
        .await
        .is_err());
    // The transaction in flight commits.
    in_tx.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        env.cluster
            .psql_db(0, "app", "SELECT count(*) FROM s")
            .unwrap(),
        "1"
    );
    // The long query outlives the grace period and is told so.
    let err = sleeper.query.await.unwrap().unwrap_err();
    assert!(err.is_closed() || sqlstate(&err) == "57P01", "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "{took:?}"
    );
    stopping.await.unwrap();
    // Its server backend is gone too: nothing of pgsplit's is left on the server.
    eventually(Duration::from_secs(5), "server sessions closed", || async {
        env.cluster
            .psql(0, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND application_name <> 'pgsplit-health'")
            .unwrap()
            == "0"
    })
    .await;
}
