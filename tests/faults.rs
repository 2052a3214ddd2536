//! Bad input and failures: every one gets a clear error with the right
//! SQLSTATE, and the proxy goes on serving everyone else.

mod common;
use std::time::Duration;

use common::*;
use pgsplit::config::{AuthMethod, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_have_their_sqlstates() {
    let env = Env::start(Setup::default().replicas(0)).await;
    let mut wrong = env.pg_config(env.rw, "app");
    wrong.password("not-the-password");
    let err = connect_err(&wrong).await;
    assert_eq!(sqlstate(&err), "28P01", "{err}");

    let err = env.try_connect(env.rw, "nobody").await.unwrap_err();
    assert_eq!(sqlstate(&err), "28000", "{err}");

    let mut nodb = env.pg_config(env.rw, "app");
    nodb.dbname("no_such_db");
    let err = connect_err(&nodb).await;
    assert_eq!(sqlstate(&err), "3D000", "{err}");
    assert!(message(&err).contains("no_such_db"));

    // pgsplit logs in to servers with whatever they ask: md5 and trust users.
    for user in ["app_md5", "app_trust"] {
        let c = env
            .try_connect(env.rw, user)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let who: String = c
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }
    let out = env.psql(env.rw, "user=app dbname=app", "wrong", &["-c", "SELECT 1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("password authentication failed"));
    let c = env.connect(env.rw).await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_trust_client_authentication() {
    let env = Env::start(
        Setup::default()
            .replicas(0)
            .tweak(|c| c.auth.method = AuthMethod::Md5),
    )
    .await;
    let c = env.connect(env.rw).await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    let mut wrong = env.pg_config(env.rw, "app");
    wrong.password("nope");
    assert_eq!(sqlstate(&connect_err(&wrong).await), "28P01");
    let out = env.psql(env.rw, "user=app dbname=app", "app", &["-c", "SELECT 2"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");

    let mut env = env;
    env.stop_proxy().await;
    let trust = Env::start(
        Setup::default()
            .replicas(0)
            .tweak(|c| c.auth.method = AuthMethod::Trust),
    )
    .await;
    let mut any = trust.pg_config(trust.rw, "app");
    any.password("ignored under trust");
    let (c, conn) = any.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(
        c.query_one("SELECT 3", &[]).await.unwrap().get::<_, i32>(0),
        3
    );
}

fn trust(setup: Setup) -> Setup {
    setup.replicas(0).tweak(|c| {
        c.auth.method = AuthMethod::Trust;
        c.limits.max_message_size = 1 << 20;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_messages_get_08p01_and_others_carry_on() {
    let env = Env::start(trust(Setup::default())).await;
    let bystander = env.connect(env.rw).await;

    // Not Postgres at all: an HTTP request as the startup packet.
    let mut c = RawClient::connect(env.rw).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (code, msg) = c.expect_fatal().await;
    assert_eq!(code, "08P01", "{msg}");

    // A startup packet that lies about its parameters.
    let mut c = RawClient::connect(env.rw).await;
    c.send(&[0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'])
        .await;
    assert_eq!(c.expect_fatal().await.0, "08P01");

    // An unknown message type after login.
    let mut c = RawClient::login_trust(env.rw, "app").await;
    c.send(&[b'!', 0, 0, 0, 8, 1, 2, 3, 4]).await;
    let (code, msg) = c.expect_fatal().await;
    assert_eq!(code, "08P01");
    assert!(msg.contains("invalid frontend message type"), "{msg}");

    // A length below the minimum.
    let mut c = RawClient::login_trust(env.rw, "app").await;
    c.send(&[b'Q', 0, 0, 0, 2]).await;
    assert_eq!(c.expect_fatal().await.0, "08P01");

    // A header announcing 2 GiB: refused on the header, nothing reserved.
    let mut c = RawClient::login_trust(env.rw, "app").await;
    c.send(&[b'Q', 0x7f, 0xff, 0xff, 0xff]).await;
    let (code, msg) = c.expect_fatal().await;
    assert_eq!(code, "08P01");
    assert!(msg.contains("max_message_size"), "{msg}");

    // Just over the limit, body and all.
    let mut c = RawClient::login_trust(env.ro, "app").await;
    let len = (1u32 << 20) + 16;
    let mut msg = vec![b'Q'];
    msg.extend_from_slice(&len.to_be_bytes());
    msg.resize(len as usize + 1, b' ');
    c.send(&msg).await;
    assert_eq!(c.expect_fatal().await.0, "08P01");

    // A truncated message followed by the client going away.
    let mut c = RawClient::login_trust(env.rw, "app").await;
    c.send(&[b'Q', 0, 0, 0, 100, b'S', b'E']).await;
    drop(c);

    // A big message under the limit is fine.
    let big = format!("SELECT length('{}')", "y".repeat(900_000));
    let n: i32 = bystander.query_one(big.as_str(), &[]).await.unwrap().get(0);
    assert_eq!(n, 900_000);
    assert_eq!(
        bystander
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    let (status, _) = env.http_get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_clients_get_53300_and_silent_clients_time_out() {
    let env = Env::start(Setup::default().replicas(0).tweak(|c| {
        c.limits.max_client_connections = 2;
        // Long enough for a real login on a loaded machine.
        c.limits.login_timeout_ms = 2000;
    }))
    .await;
    let a = env.connect(env.rw).await;
    let b = env.connect(env.ro).await;
    let err = env.try_connect(env.rw, "app").await.unwrap_err();
    assert_eq!(sqlstate(&err), "53300", "{err}");
    assert!(message(&err).contains("too many clients"));
    drop(b);
    eventually(Duration::from_secs(5), "a slot frees up", || async {
        env.try_connect(env.rw, "app").await.is_ok()
    })
    .await;
    assert_eq!(
        a.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
    drop(a);

    // A client that connects and says nothing is dropped after login_timeout_ms.
    eventually(Duration::from_secs(5), "slots free", || async {
        env.proxy().shared.client_count() == 0
    })
    .await;
    let started = std::time::Instant::now();
    let mut silent = RawClient::connect(env.rw).await;
    let (code, msg) = silent.expect_fatal().await;
    assert_eq!(code, "08P01");
    assert!(msg.contains("login"), "{msg}");
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert!(started.elapsed() < Duration::from_secs(8));
}

/// Rows in pg_stat_activity of node `i` with this application_name.
fn sessions_named(env: &Env, i: usize, name: &str) -> usize {
    env.cluster
        .psql(
            i,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}'"),
        )
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_query_leaves_no_server_connection() {
    let env = Env::start(Setup::default().replicas(0)).await;
    let sleeper = env.start_sleeper(env.rw, 0, "vanishing", 60).await;
    // Dropping the connection future closes the client's socket mid-query.
    sleeper.connection.abort();
    let _ = sleeper.query.await;
    eventually(
        Duration::from_secs(5),
        "the server connection is gone",
        || async { sessions_named(&env, 0, "vanishing") == 0 },
    )
    .await;
    let c = env.connect(env.rw).await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_session_ends_only_that_session() {
    async fn port_of(c: &tokio_postgres::Client) -> i32 {
        let rows = c.simple_query("SELECT inet_server_port()").await.unwrap();
        match &rows[1] {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).unwrap().parse().unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
    let env = Env::start(Setup::default()).await;
    let bystander = env.connect(env.rw).await;
    let victim = env.start_sleeper(env.rw, 0, "victim", 30).await;
    env.cluster
        .psql(0, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim'")
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), victim.query)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57P01", "{err}");
    assert_eq!(
        bystander
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );

    // A replica stopped outright under sessions of the read-only port: the
    // one with a query running there gets an error; idle ones, whatever they
    // prepared (tokio-postgres prepares named statements), go on elsewhere
    // unnoticed: between transactions they hold no server connection, and
    // their statements are prepared again where they land.
    let busy = env.connect(env.ro).await;
    let idle: Vec<tokio_postgres::Client> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let c = env.connect(env.ro).await;
            c.query_one("SELECT 1", &[]).await.unwrap();
            v.push(c);
        }
        v
    };
    let running =
        tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) });
    let on_replica = |i: usize| {
        env.cluster
            .psql(
                i,
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'",
            )
            .is_ok_and(|n| n == "1")
    };
    let mut index = 0;
    eventually(Duration::from_secs(5), "the replica query runs", || {
        index = (1..env.cluster.nodes().len())
            .find(|&i| on_replica(i))
            .unwrap_or(0);
        std::future::ready(index != 0)
    })
    .await;
    let port = i32::from(env.cluster.node(index).port);
    env.cluster.stop_node(index, true).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.is_closed() || !sqlstate(&err).is_empty(), "{err}");
    for c in &idle {
        for _ in 0..3 {
            let moved_to = port_of(c).await;
            assert_ne!(moved_to, port, "an idle session moved to a live replica");
            assert!(env.replica_ports().contains(&(moved_to as u16)));
            assert_eq!(
                c.query_one("SELECT 2", &[]).await.unwrap().get::<_, i32>(0),
                2
            );
        }
    }
    // New read-only sessions avoid the dead replica.
    env.wait_for(Duration::from_secs(5), |s| !s.backends[index].healthy)
        .await;
    for _ in 0..4 {
        let c = env.connect(env.ro).await;
        assert_ne!(i32::from(served_by(&c).await), port);
    }
    assert_eq!(
        bystander
            .query_one("SELECT 3", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_backend_is_named_in_an_08_error() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let env = Env::start(Setup::default().replicas(0).no_wait().tweak(move |c| {
        c.backends = vec![Backend {
            name: "ghost".into(),
            address: dead_addr,
            weight: 1,
        }];
        c.health.failover_timeout_ms = 600;
    }))
    .await;
    for port in [env.rw, env.ro] {
        let err = env.try_connect(port, "app").await.unwrap_err();
        let code = sqlstate(&err);
        assert!(code.starts_with("08"), "{code}: {err}");
        assert!(message(&err).contains("ghost"), "{}", message(&err));
    }
    let (status, body) = env.http_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
}
