//! What drivers and their users see beyond where a statement runs: settings
//! that keep a session's reads off standbys however they were set, what the
//! server says during login, DEALLOCATE wherever the statement lives, and
//! the read-only port refusing writes by kind with no lasting effect on any
//! node. (Where statements run is the statement table's, `splitting.rs`.)

mod common;

use common::*;
use pgsplit::config::AuthMethod;

fn trust(setup: Setup) -> Setup {
    setup.tweak(|c| c.auth.method = AuthMethod::Trust)
}

async fn is_replica(env: &Env, c: &tokio_postgres::Client) -> bool {
    env.replica_ports().contains(&served_by(c).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_sessions_read_on_the_primary_however_it_was_set() {
    let env = Env::start(Setup::default().replicas(1)).await;
    fixture(&env, "SELECT 1");
    let plain = env.connect(env.rw).await;
    assert!(
        is_replica(&env, &plain).await,
        "a plain session reads on the replica"
    );

    // By a startup option.
    let mut config = env.pg_config(env.rw, "app");
    config.options("-c default_transaction_isolation=serializable");
    let (c, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    assert_eq!(served_by(&c).await, env.primary_port(), "options");
    let iso = c
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap();
    assert_eq!(iso.get::<_, &str>(0), "serializable");

    // By the role's own default, which pgsplit learns at login.
    env.cluster
        .psql_db(
            0,
            "app",
            "ALTER ROLE app_md5 SET default_transaction_isolation = 'serializable'",
        )
        .unwrap();
    let c = env.try_connect(env.rw, "app_md5").await.unwrap();
    assert_eq!(served_by(&c).await, env.primary_port(), "ALTER ROLE");
    c.batch_execute("SET default_transaction_isolation = 'read committed'")
        .await
        .unwrap();
    assert!(
        is_replica(&env, &c).await,
        "a SET back to read committed lets reads go to the replica"
    );
    // The read-only port serves replicas only: such a session hears the
    // standby's refusal and its hint.
    let c = env.try_connect(env.ro, "app_md5").await.unwrap();
    let e = c
        .query_one("SELECT count(*) FROM pg_class", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e:?}");
    c.batch_execute("SET default_transaction_isolation = 'repeatable read'")
        .await
        .unwrap();
    c.query_one("SELECT count(*) FROM pg_class", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_during_login_reaches_the_client() {
    let env = Env::start(trust(Setup::default().replicas(1))).await;
    let long_name = "n".repeat(65);
    // Twice on each port: a fresh server login, then the remembered one.
    for port in [env.rw, env.ro, env.rw, env.ro] {
        let mut c = RawClient::connect(port).await;
        c.send(&startup_packet(
            0,
            &[
                ("user", "app"),
                ("database", "app"),
                ("application_name", &long_name),
            ],
        ))
        .await;
        let mut notices = vec![];
        loop {
            let (tag, body) = c.recv().await.expect("login reply");
            assert_ne!(tag, b'E', "{:?}", error_fields(&body));
            if tag == b'N' {
                notices.push(error_fields(&body).1);
            }
            if tag == b'Z' {
                break;
            }
        }
        assert!(
            notices.len() == 1 && notices[0].contains("will be truncated"),
            "port {port}: {notices:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_works_wherever_the_statement_was_prepared() {
    let env = Env::start(Setup::default().replicas(1)).await;
    fixture(&env, "CREATE TABLE d (x int)");
    let c = env.connect(env.rw).await;
    let gone = |e: tokio_postgres::Error| sqlstate(&e);

    // A read's statement lives on a replica connection; a write's on the
    // primary's; DEALLOCATE finds each.
    c.batch_execute("PREPARE r AS SELECT count(*) FROM d")
        .await
        .unwrap();
    c.batch_execute("PREPARE w AS INSERT INTO d VALUES (1)")
        .await
        .unwrap();
    c.batch_execute("EXECUTE r; EXECUTE w").await.unwrap();
    c.batch_execute("DEALLOCATE r").await.unwrap();
    c.batch_execute("DEALLOCATE PREPARE w").await.unwrap();
    for name in ["r", "w"] {
        let e = c.batch_execute(&format!("EXECUTE {name}")).await;
        assert_eq!(e.map_err(gone).unwrap_err(), "26000", "{name} is gone");
    }
    let e = c.batch_execute("DEALLOCATE nope").await;
    assert_eq!(e.map_err(gone).unwrap_err(), "26000");

    // DEALLOCATE ALL, and inside a transaction.
    c.batch_execute("PREPARE a AS SELECT 1; PREPARE b AS SELECT 2")
        .await
        .unwrap();
    c.batch_execute("BEGIN; DEALLOCATE a; COMMIT")
        .await
        .unwrap();
    c.batch_execute("EXECUTE b").await.unwrap();
    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    let e = c.batch_execute("EXECUTE b").await;
    assert_eq!(e.map_err(gone).unwrap_err(), "26000");

    // The names are free again; DEALLOCATE ALL drops statements prepared
    // by the protocol too, as PostgreSQL does.
    let stmt = c.prepare("SELECT count(*) FROM d").await.unwrap();
    c.batch_execute("PREPARE r AS SELECT 7").await.unwrap();
    c.query_one(&stmt, &[]).await.unwrap();
    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    let e = c.query_one(&stmt, &[]).await;
    assert_eq!(e.map_err(gone).unwrap_err(), "26000");
}

/// One fastpath FunctionCall of `oid` with one int4 argument, text result.
fn function_call(oid: u32, arg: i32) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&1i16.to_be_bytes()); // one format code
    body.extend_from_slice(&1i16.to_be_bytes()); // binary
    body.extend_from_slice(&1i16.to_be_bytes()); // one argument
    body.extend_from_slice(&4i32.to_be_bytes());
    body.extend_from_slice(&arg.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes()); // binary result
    let mut m = vec![b'F'];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend(body);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_port_refuses_writes_by_kind_and_leaves_no_trace() {
    let env = Env::start(trust(Setup::default().replicas(1))).await;
    fixture(
        &env,
        "CREATE TABLE m (id int PRIMARY KEY, v text); INSERT INTO m VALUES (1, 'one'); CREATE SEQUENCE s",
    );
    let ro = env.connect(env.ro).await;
    let mut problems = vec![];
    for sql in [
        // Forms a standby happens to accept.
        "MERGE INTO m USING (SELECT 1 AS id) s ON m.id = s.id WHEN MATCHED THEN DO NOTHING",
        "SELECT pg_create_physical_replication_slot('ro_slot')",
        "SELECT pg_drop_replication_slot('ro_slot')",
        "SELECT pg_advisory_lock(7)",
        "SELECT pg_terminate_backend(pg_backend_pid())",
        "SELECT pg_reload_conf()",
        // And the plain ones.
        "INSERT INTO m VALUES (2, 'two')",
        "SELECT nextval('s')",
        "SELECT lo_create(0)",
        "CREATE TEMP TABLE tt (x int)",
        "NOTIFY ch",
    ] {
        match ro.simple_query(sql).await {
            Ok(_) => problems.push(format!("{sql}: succeeded")),
            Err(e) if sqlstate(&e) == "25006" => {}
            Err(e) => problems.push(format!("{sql}: {} {}", sqlstate(&e), message(&e))),
        }
    }
    assert!(
        problems.is_empty(),
        "expected 25006:\n{}",
        problems.join("\n")
    );

    // A fastpath call is judged like the SQL call: lo_creat makes a large
    // object; abs does not.
    let oid = |name: &str| -> u32 {
        env.cluster
            .psql_db(0, "app", &format!("SELECT '{name}'::regproc::oid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let mut raw = RawClient::login_trust(env.ro, "app").await;
    raw.send(&function_call(oid("lo_creat"), -1)).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!(tag, b'E');
    assert_eq!(error_fields(&body).0, "25006");
    assert_eq!(raw.recv().await.unwrap().0, b'Z');
    raw.send(&function_call(oid("int4abs"), -5)).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!(tag, b'V', "a read-only function call runs");
    assert_eq!(&body[4..8], &5i32.to_be_bytes());

    // Nothing lasting anywhere.
    for node in 0..env.cluster.nodes().len() {
        let left = env
            .cluster
            .psql_db(
                node,
                "app",
                "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'ro_slot') || ',' || \
                 (SELECT count(*) FROM pg_largeobject_metadata) || ',' || \
                 (SELECT count(*) FROM m) || ',' || \
                 (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory')",
            )
            .unwrap();
        assert_eq!(left.trim(), "0,0,1,0", "node {node}");
    }
    let still: i64 = ro
        .query_one("SELECT count(*) FROM m", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, 1, "the session carries on after its refusals");
}
