//! Real clients through both ports: simple and extended query, pipelining,
//! COPY in both directions, cancel, notices and notifications.

mod common;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, TryStreamExt};
use pgsplit::config::AuthMethod;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_extended_and_pipelined_queries() {
    let env = Env::start(Setup::default()).await;
    let c = env.connect(env.rw).await;
    // Simple protocol, several statements in one message.
    c.batch_execute(
        "CREATE TABLE kv(k int PRIMARY KEY, v text); INSERT INTO kv VALUES (1, 'one'), (2, 'two')",
    )
    .await
    .unwrap();
    let rows = c.simple_query("SELECT v FROM kv ORDER BY k").await.unwrap();
    let values: Vec<&str> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["one", "two"]);

    // Extended protocol: a named prepared statement reused with parameters.
    let stmt = c.prepare("SELECT v FROM kv WHERE k = $1").await.unwrap();
    for (k, v) in [(1, "one"), (2, "two")] {
        let row = c.query_one(&stmt, &[&k]).await.unwrap();
        assert_eq!(row.get::<_, &str>(0), v);
    }

    // Pipelining: tokio-postgres sends all of these before reading any reply.
    let inserts = (3..103).map(|k| {
        let c = &c;
        async move {
            c.execute("INSERT INTO kv VALUES ($1, $2)", &[&k, &format!("v{k}")])
                .await
        }
    });
    let done = futures_util::future::try_join_all(inserts).await.unwrap();
    assert_eq!(done.iter().sum::<u64>(), 100);
    let queries = (1..=50).map(|k| {
        let (c, stmt) = (&c, &stmt);
        async move {
            c.query_one(stmt, &[&k])
                .await
                .map(|r| r.get::<_, String>(0))
        }
    });
    let got = futures_util::future::try_join_all(queries).await.unwrap();
    assert_eq!(got[0], "one");
    assert_eq!(got[49], "v50");

    // An error inside a pipeline fails only its own statement.
    let (bad, good) = tokio::join!(
        c.execute("INSERT INTO kv VALUES (1, 'dup')", &[]),
        c.query_one("SELECT count(*) FROM kv", &[])
    );
    assert_eq!(sqlstate(&bad.unwrap_err()), "23505");
    assert_eq!(good.unwrap().get::<_, i64>(0), 102);

    // Transactions keep their state across statements.
    c.batch_execute("BEGIN; DELETE FROM kv; ROLLBACK")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM kv", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 102);

    // The same through the read-only port, against a replica.
    env.cluster
        .wait_caught_up(0, 1, Duration::from_secs(10))
        .unwrap();
    env.cluster
        .wait_caught_up(0, 2, Duration::from_secs(10))
        .unwrap();
    let ro = env.connect(env.ro).await;
    let stmt = ro
        .prepare("SELECT v, pg_is_in_recovery() FROM kv WHERE k = $1")
        .await
        .unwrap();
    let reads = (1..=20).map(|k| {
        let (ro, stmt) = (&ro, &stmt);
        async move { ro.query_one(stmt, &[&k]).await }
    });
    for row in futures_util::future::try_join_all(reads).await.unwrap() {
        assert!(
            row.get::<_, bool>(1),
            "read-only port read ran on a replica"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_100k_rows_in_and_out_through_both_ports() {
    let env = Env::start(Setup::default()).await;
    let c = env.connect(env.rw).await;
    c.batch_execute("CREATE TABLE big(id int, payload text)")
        .await
        .unwrap();
    let mut data = String::new();
    for i in 0..100_000 {
        data.push_str(&format!("{i}\trow {i} {}\n", "x".repeat(i % 50)));
    }
    let sink = c.copy_in("COPY big FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    // Send in uneven chunks so CopyData boundaries fall mid-row.
    for chunk in data.as_bytes().chunks(7919) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 100_000);

    let copied_out = |client: tokio_postgres::Client| async move {
        // Heap order is not insertion order (COPY fills free space), so sort.
        let stream = client
            .copy_out("COPY (SELECT * FROM big ORDER BY id) TO STDOUT")
            .await
            .unwrap();
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        (client, chunks.concat())
    };
    let (c, out) = copied_out(c).await;
    assert_eq!(out.len(), data.len());
    if out != data.as_bytes() {
        let at = out
            .iter()
            .zip(data.as_bytes())
            .position(|(a, b)| a != b)
            .unwrap();
        panic!(
            "COPY TO STDOUT differs at byte {at}: got {:?} want {:?}",
            String::from_utf8_lossy(&out[at.saturating_sub(40)..(at + 40).min(out.len())]),
            &data[at.saturating_sub(40)..(at + 40).min(data.len())]
        );
    }

    for i in 1..=2 {
        env.cluster
            .wait_caught_up(0, i, Duration::from_secs(30))
            .unwrap();
    }
    let ro = env.connect(env.ro).await;
    let (ro, out) = copied_out(ro).await;
    assert!(
        out == data.as_bytes(),
        "the replica returns the same 100k rows"
    );
    let sink = ro.copy_in::<_, Bytes>("COPY big FROM STDIN").await;
    let err = match sink {
        Err(e) => e,
        Ok(sink) => {
            futures_util::pin_mut!(sink);
            sink.send(Bytes::from_static(b"1\tx\n")).await.ok();
            sink.finish().await.unwrap_err()
        }
    };
    assert_eq!(sqlstate(&err), "25006", "{err}");
    // pgsplit keeps serving. (tokio-postgres itself cannot reuse a client
    // whose copy_in failed, even connected directly, so take a fresh one.)
    drop(ro);
    assert_eq!(
        c.query_one("SELECT count(*) FROM big", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        100_000
    );
    let ro = env.connect(env.ro).await;
    assert_eq!(
        ro.query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_and_queries_through_both_ports() {
    let env = Env::start(Setup::default()).await;
    let dir = Scratch::new("psql");
    let input = dir.join("in.tsv");
    let output = dir.join("out.tsv");
    let mut data = String::new();
    for i in 0..100_000 {
        data.push_str(&format!("{i}\tpsql row {i}\n"));
    }
    std::fs::write(&input, &data).unwrap();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let conn = "user=app dbname=app";
    ok(env.psql(
        env.rw,
        conn,
        "app",
        &["-c", "CREATE TABLE p(id int, t text)"],
    ));
    let copied = ok(env.psql(
        env.rw,
        conn,
        "app",
        &["-c", &format!("\\copy p FROM '{}'", input.display())],
    ));
    assert!(copied.contains("100000"), "{copied}");
    ok(env.psql(
        env.rw,
        conn,
        "app",
        &[
            "-c",
            &format!(
                "\\copy (SELECT * FROM p ORDER BY id) TO '{}'",
                output.display()
            ),
        ],
    ));
    assert!(std::fs::read_to_string(&output).unwrap() == data);

    let port = ok(env.psql(
        env.rw,
        conn,
        "app",
        &["-c", "/* pgsplit:primary */ SELECT inet_server_port()"],
    ));
    assert_eq!(port.trim(), env.primary_port().to_string());
    let port = ok(env.psql(env.ro, conn, "app", &["-c", "SELECT inet_server_port()"]));
    let port: u16 = port.trim().parse().unwrap();
    assert!(env.replica_ports().contains(&port));
    let refused = env.psql(
        env.ro,
        conn,
        "app",
        &["-c", "INSERT INTO p VALUES (0, 'no')"],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("read-only transaction"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query_on_either_port() {
    let env = Env::start(Setup::default()).await;
    for port in [env.rw, env.ro] {
        let victim = env.connect(port).await;
        let bystander = env.connect(port).await;
        let token = victim.cancel_token();
        let started = std::time::Instant::now();
        let sleeper =
            tokio::spawn(
                async move { victim.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) },
            );
        // Cancel once the query is really running (pg_stat_activity on the
        // server it was routed to), then it must fail with query_canceled.
        let mut sent = false;
        while !sleeper.is_finished() && started.elapsed() < Duration::from_secs(10) {
            if !sent {
                let running = env
                    .cluster
                    .nodes()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, _)| {
                        env.cluster
                            .psql(i, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")
                            .ok()
                    })
                    .any(|n| n == "1");
                if running {
                    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
                    sent = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let err = sleeper.await.unwrap().unwrap_err();
        assert_eq!(sqlstate(&err), "57014", "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // The cancel hit only its own session.
        assert_eq!(
            bystander
                .query_one("SELECT 7", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            7
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_and_notifications_pass_through() {
    let env = Env::start(Setup::default().replicas(0)).await;
    let (listener, mut connection) = env
        .pg_config(env.rw, "app")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = futures_util::StreamExt::next(&mut messages).await {
            let _ = tx.send(m);
        }
    });
    listener.batch_execute("LISTEN chan").await.unwrap();
    let notifier = env.connect(env.rw).await;
    notifier
        .batch_execute("NOTIFY chan, 'hello through pgsplit'")
        .await
        .unwrap();
    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'a notice'; END $$")
        .await
        .unwrap();
    let mut got_notification = false;
    let mut got_notice = false;
    while !(got_notification && got_notice) {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        match m {
            tokio_postgres::AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), "chan");
                assert_eq!(n.payload(), "hello through pgsplit");
                got_notification = true;
            }
            tokio_postgres::AsyncMessage::Notice(n) => {
                assert_eq!(n.message(), "a notice");
                got_notice = true;
            }
            _ => {}
        }
    }
}

/// One frontend message.
fn fe(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Parse and Describe of the unnamed statement, then Flush: what asyncpg
/// sends to learn a query's columns before it decides what to run.
fn describe_unnamed(sql: &str) -> Vec<u8> {
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    [fe(b'P', &parse), fe(b'D', b"S\0"), fe(b'H', b"")].concat()
}

/// Reads messages up to and including one of tag `until`; returns their tags
/// and the first DataRow's first column.
async fn read_until(c: &mut RawClient, until: u8) -> (String, Option<String>) {
    let mut tags = String::new();
    let mut first = None;
    loop {
        let (tag, body) = c.recv().await.expect("pgsplit answered");
        assert_ne!(tag, b'E', "error: {:?}", error_fields(&body));
        tags.push(tag as char);
        if tag == b'D' && first.is_none() {
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
            first = Some(String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned());
        }
        if tag == until {
            return (tags, first);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_description_on_a_replica_does_not_hold_back_a_copy_or_a_write() {
    let env = Env::start(
        Setup::default()
            .replicas(1)
            .tweak(|c| c.auth.method = AuthMethod::Trust),
    )
    .await;
    fixture(&env, "CREATE TABLE t (id int, name text)");
    env.cluster
        .wait_caught_up(0, 1, Duration::from_secs(10))
        .unwrap();
    let mut c = RawClient::login_trust(env.rw, "app").await;

    // Described on the replica, then run there: a read stays.
    c.send(&describe_unnamed("SELECT inet_server_port()::text"))
        .await;
    assert_eq!(read_until(&mut c, b'T').await.0, "1tT");
    c.send(
        &[
            fe(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]),
            fe(b'E', &[0, 0, 0, 0, 0]),
            fe(b'S', b""),
        ]
        .concat(),
    )
    .await;
    let (tags, value) = read_until(&mut c, b'Z').await;
    let replica = env.replica_ports()[0].to_string();
    assert_eq!(
        (tags.as_str(), value.as_deref()),
        ("2DCZ", Some(replica.as_str()))
    );

    // Described (on the replica: a read), then a COPY: it runs on the
    // primary, and the client sees one ReadyForQuery, its own.
    c.send(&describe_unnamed("SELECT id, name FROM t LIMIT 1"))
        .await;
    assert_eq!(read_until(&mut c, b'T').await.0, "1tT");
    c.send(&fe(b'Q', b"COPY t FROM STDIN\0")).await;
    assert_eq!(read_until(&mut c, b'G').await.0, "G");
    c.send(&[fe(b'd', b"1\tone\n"), fe(b'c', b"")].concat())
        .await;
    assert_eq!(read_until(&mut c, b'Z').await.0, "CZ");

    // The same before a write by the extended protocol.
    c.send(&describe_unnamed("SELECT id FROM t")).await;
    assert_eq!(read_until(&mut c, b'T').await.0, "1tT");
    let mut parse = b"\0INSERT INTO t VALUES (2, 'two') RETURNING pg_is_in_recovery()\0".to_vec();
    parse.extend_from_slice(&[0, 0]);
    c.send(
        &[
            fe(b'P', &parse),
            fe(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]),
            fe(b'E', &[0, 0, 0, 0, 0]),
            fe(b'S', b""),
        ]
        .concat(),
    )
    .await;
    let (tags, value) = read_until(&mut c, b'Z').await;
    assert_eq!((tags.as_str(), value.as_deref()), ("12DCZ", Some("f")));

    // Nothing was left over: the next query is answered on its own.
    c.send(&fe(b'Q', b"SELECT count(*) FROM t\0")).await;
    let (tags, value) = read_until(&mut c, b'Z').await;
    assert_eq!((tags.as_str(), value.as_deref()), ("TDCZ", Some("2")));
}

/// A named Parse and its Sync (libpq's PQprepare).
fn prepare(name: &str, sql: &str) -> Vec<u8> {
    let body = format!("{name}\0{sql}\0\0\0");
    [fe(b'P', body.as_bytes()), fe(b'S', b"")].concat()
}

/// Tags up to the next ReadyForQuery, errors included (as `E<sqlstate>`).
async fn tags_until_ready(c: &mut RawClient) -> String {
    let mut tags = String::new();
    loop {
        let (tag, body) = c.recv().await.expect("pgsplit answered");
        tags.push(tag as char);
        if tag == b'E' {
            tags.push_str(&error_fields(&body).0);
        }
        if tag == b'Z' {
            return tags;
        }
    }
}

/// PQprepare of a statement a server has already parsed is answered without
/// a server connection: a pooled client preparing while every connection is
/// busy (pgbench -M prepared, one thread for many clients) neither waits nor
/// deadlocks, and the statement is prepared where it is first bound. One that
/// no server parsed yet, or that failed to parse, still goes to a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_statement_is_prepared_without_a_connection() {
    let env = Env::start(Setup::default().replicas(0).tweak(|c| {
        c.auth.method = AuthMethod::Trust;
        c.limits.max_server_connections = 1;
        c.limits.server_wait_timeout_ms = 2000;
    }))
    .await;
    fixture(
        &env,
        "CREATE TABLE prep (id int PRIMARY KEY, n int); INSERT INTO prep VALUES (1, 0)",
    );
    let update = "UPDATE prep SET n = n + $1 WHERE id = 1";
    let mut a = RawClient::login_trust(env.rw, "app").await;
    a.send(&prepare("a1", update)).await;
    assert_eq!(tags_until_ready(&mut a).await, "1Z", "parsed by the server");
    // A text that does not parse is not remembered as parsed.
    a.send(&prepare("bad", "SELEC 1")).await;
    assert_eq!(tags_until_ready(&mut a).await, "E42601Z");

    // Another session holds the only connection, inside a transaction.
    let holder = env.connect(env.rw).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let mut b = RawClient::login_trust(env.rw, "app").await;
    b.send(&prepare("b1", update)).await;
    assert_eq!(
        tags_until_ready(&mut b).await,
        "1Z",
        "answered at once (waiting would end in 53300)"
    );
    // A text no server parsed waits for a connection, and the wait ends
    // (FATAL, like any pool wait past server_wait_timeout_ms).
    let mut d = RawClient::login_trust(env.rw, "app").await;
    d.send(&prepare("d1", "SELEC 1")).await;
    assert_eq!(d.expect_fatal().await.0, "53300");
    holder.batch_execute("COMMIT").await.unwrap();

    // Bound and run: the statement is prepared on the connection then.
    let mut bind = b"\0b1\0\0\0\0\x01".to_vec();
    bind.extend_from_slice(&1u32.to_be_bytes());
    bind.extend_from_slice(b"5\0\0");
    b.send(&[fe(b'B', &bind), fe(b'E', &[0, 0, 0, 0, 0]), fe(b'S', b"")].concat())
        .await;
    assert_eq!(tags_until_ready(&mut b).await, "2CZ");
    let c = env.connect(env.rw).await;
    let n: i32 = c
        .query_one("SELECT n FROM prep WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5);
    let (_, m) = env.http_get("/metrics").await;
    let reused: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("pgsplit_prepared_statements_total{event=\"reused\"} "))
        .and_then(|v| v.parse().ok())
        .expect("the reused counter");
    assert!(reused >= 1, "the local answer counts as reused: {reused}");
}
