//! The admin console (database `pgsplit` on the client ports) against a real
//! cluster, through psql and through tokio-postgres' simple query protocol:
//! every SHOW, EXPLAIN ROUTE, PAUSE / RESUME / RELOAD, DRAIN / UNDRAIN, who
//! may open it, and that it never needs a backend.

mod common;
use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use pgsplit::config::{AuthMethod, Secret};
use tokio_postgres::{Client, SimpleQueryMessage};

type Row = BTreeMap<String, Option<String>>;

/// A console connection as `user` through `port`.
async fn console_on(env: &Env, port: u16, user: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config = env.pg_config(port, user);
    config.dbname("pgsplit").application_name("console-test");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn console(env: &Env) -> Client {
    console_on(env, env.rw, "app").await.expect("console opens")
}

/// The rows of a console command, by column name.
async fn rows(client: &Client, sql: &str) -> Vec<Row> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", message(&e)));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE and message a console command fails with.
async fn refused(client: &Client, sql: &str) -> (String, String) {
    let e = client
        .simple_query(sql)
        .await
        .err()
        .unwrap_or_else(|| panic!("{sql} should fail"));
    (sqlstate(&e), message(&e))
}

fn get<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column)
        .unwrap_or_else(|| panic!("no column {column}: {row:?}"))
        .as_deref()
        .unwrap_or("")
}

fn find<'a>(rows: &'a [Row], column: &str, value: &str) -> &'a Row {
    rows.iter()
        .find(|r| get(r, column) == value)
        .unwrap_or_else(|| panic!("no row with {column} = {value}: {rows:#?}"))
}

fn admin_setup() -> Setup {
    Setup::default().tweak(|c| {
        c.admin.users = vec!["app".into()];
        c.admin.token = Some(Secret::new("console-test-token-value"));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_answer_with_real_rows_through_a_driver_and_psql() {
    let env = Env::start(admin_setup()).await;
    let names: Vec<String> = env.cluster.nodes().iter().map(|n| n.name.clone()).collect();
    fixture(&env, "CREATE TABLE kv (k int PRIMARY KEY, v text)");

    // Traffic to show: a write then reads on the read-write port, a
    // session pinned by LISTEN, one inside a transaction, one on the
    // read-only port.
    let mut worker_config = env.pg_config(env.rw, "app");
    worker_config.application_name("worker");
    let (worker, connection) = worker_config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    worker
        .simple_query("INSERT INTO kv VALUES (1, 'a')")
        .await
        .unwrap();
    let replica_ports = env.replica_ports();
    eventually(
        Duration::from_secs(10),
        "a read served by a replica",
        || async {
            let port: i32 = worker
                .query_one("SELECT inet_server_port()", &[])
                .await
                .unwrap()
                .get(0);
            replica_ports.contains(&(port as u16))
        },
    )
    .await;
    let listener = env.connect(env.rw).await;
    listener.batch_execute("LISTEN news").await.unwrap();
    let in_tx = env.connect(env.rw).await;
    in_tx
        .batch_execute("BEGIN; UPDATE kv SET v = 'b' WHERE k = 1")
        .await
        .unwrap();
    let reader = env.connect(env.ro).await;
    served_by(&reader).await;

    // The status page loads without the admin token (it holds no data and
    // asks for the token); what it polls does not.
    let (code, page) = env.http_get("/").await;
    assert_eq!(code, 200);
    assert!(page.contains("<title>pgsplit status</title>"));
    assert_eq!(env.http_get("/status").await.0, 401);
    assert_eq!(env.http_get("/events").await.0, 401);

    let c = console(&env).await;

    let backends = rows(&c, "SHOW BACKENDS").await;
    assert_eq!(backends.len(), 3, "{backends:#?}");
    let primary = find(&backends, "name", &names[0]);
    assert_eq!(get(primary, "role"), "primary");
    assert_eq!(get(primary, "healthy"), "yes");
    assert!(get(primary, "current_lsn").contains('/'), "{primary:?}");
    for name in &names[1..] {
        let r = find(&backends, "name", name);
        assert_eq!(
            (get(r, "role"), get(r, "in_rotation"), get(r, "drained")),
            ("replica", "yes", "no")
        );
        assert!(get(r, "replay_lsn").contains('/'), "{r:?}");
        assert!(get(r, "lag_bytes").parse::<u64>().is_ok(), "{r:?}");
        assert_eq!(get(r, "weight"), "1");
    }

    let clients = rows(&c, "show clients;").await;
    let worker_row = find(&clients, "application_name", "worker");
    assert_eq!(get(worker_row, "listener"), "read_write");
    assert_eq!(
        (get(worker_row, "user"), get(worker_row, "database")),
        ("app", "app")
    );
    assert_eq!(get(worker_row, "state"), "idle");
    assert_eq!(get(worker_row, "pinned"), "no");
    assert!(get(worker_row, "to_primary").parse::<u64>().unwrap() >= 1);
    assert!(get(worker_row, "to_replica").parse::<u64>().unwrap() >= 1);
    assert!(
        get(worker_row, "ryw_floor").starts_with("write committed "),
        "{worker_row:?}"
    );
    assert_eq!(get(worker_row, "server"), "", "idle: no server connection");
    let pinned: Vec<&Row> = clients
        .iter()
        .filter(|r| get(r, "pinned") == "yes: listen")
        .collect();
    assert_eq!(pinned.len(), 1, "{clients:#?}");
    assert_eq!(get(pinned[0], "server"), names[0], "kept on the primary");
    let in_transaction: Vec<&Row> = clients
        .iter()
        .filter(|r| get(r, "state") == "in transaction")
        .collect();
    assert_eq!(in_transaction.len(), 1, "{clients:#?}");
    assert_eq!(get(in_transaction[0], "server"), names[0]);
    let on_ro: Vec<&Row> = clients
        .iter()
        .filter(|r| get(r, "listener") == "read_only")
        .collect();
    assert_eq!(on_ro.len(), 1, "{clients:#?}");
    let me = find(&clients, "application_name", "console-test");
    assert_eq!(
        (get(me, "database"), get(me, "state")),
        ("pgsplit", "console")
    );

    let servers = rows(&c, "SHOW SERVERS").await;
    let pinned_id = get(pinned[0], "id");
    let held = find(&servers, "client", pinned_id);
    assert_eq!(
        (get(held, "backend"), get(held, "state")),
        (names[0].as_str(), "active")
    );
    assert!(
        servers
            .iter()
            .any(|r| get(r, "state") == "idle" && get(r, "database") == "app"),
        "{servers:#?}"
    );

    let pools = rows(&c, "SHOW POOLS").await;
    let primary_pool: Vec<&Row> = pools
        .iter()
        .filter(|r| get(r, "backend") == names[0] && get(r, "user") == "app")
        .collect();
    assert!(!primary_pool.is_empty(), "{pools:#?}");
    let lent: u64 = primary_pool
        .iter()
        .map(|r| get(r, "active").parse::<u64>().unwrap())
        .sum();
    assert!(
        lent >= 2,
        "the pinned and the in-transaction sessions: {pools:#?}"
    );
    assert!(primary_pool.iter().all(|r| get(r, "max") == "200"));

    let stats = rows(&c, "SHOW STATS").await;
    assert_eq!(stats.len(), 4);
    let rw_replica = stats
        .iter()
        .find(|r| get(r, "listener") == "read_write" && get(r, "target") == "replica")
        .unwrap();
    assert!(get(rw_replica, "statements").parse::<u64>().unwrap() >= 1);
    assert!(get(rw_replica, "bytes_sent").parse::<u64>().unwrap() > 0);
    assert!(get(rw_replica, "bytes_received").parse::<u64>().unwrap() > 0);
    assert!(get(rw_replica, "avg_ms").parse::<f64>().unwrap() > 0.0);
    assert!(get(rw_replica, "p99_ms").parse::<f64>().unwrap() > 0.0);

    let routing = rows(&c, "SHOW ROUTING").await;
    assert!(routing.iter().any(|r| get(r, "target") == "primary"
        && get(r, "reason") == "write"
        && get(r, "listener") == "read_write"));
    assert!(routing
        .iter()
        .any(|r| get(r, "target") == "replica" && get(r, "reason") == "read"));

    let config = rows(&c, "SHOW CONFIG").await;
    assert_eq!(
        get(find(&config, "key", "admin.users"), "value"),
        "[\"app\"]"
    );
    assert_eq!(
        get(find(&config, "key", "users[0].password"), "value"),
        "<redacted>"
    );
    assert_eq!(
        get(find(&config, "key", "listen.read_write"), "reload"),
        "restart"
    );
    assert!(
        config
            .iter()
            .all(|r| !format!("{r:?}").contains("console-test-token-value")),
        "the admin token is redacted"
    );

    let version = rows(&c, "SHOW VERSION").await;
    assert_eq!(
        get(&version[0], "version"),
        concat!("pgsplit ", env!("CARGO_PKG_VERSION"))
    );
    let help = rows(&c, "SHOW HELP").await;
    for command in [
        "SHOW BACKENDS",
        "SHOW POOLS",
        "SHOW CLIENTS",
        "SHOW SERVERS",
        "SHOW STATS",
        "SHOW ROUTING",
        "SHOW CONFIG",
        "SHOW VERSION",
        "EXPLAIN ROUTE <sql>",
        "PAUSE",
        "RESUME",
        "RELOAD",
        "DRAIN <backend>",
        "UNDRAIN <backend>",
    ] {
        find(&help, "command", command);
    }

    // What the console does not do, it says so, and the session goes on.
    assert_eq!(refused(&c, "SELECT 1").await.0, "42601");
    assert_eq!(refused(&c, "SHOW NOTHING").await.0, "42601");
    assert_eq!(refused(&c, "SHOW DATABASES").await.0, "0A000");
    assert_eq!(refused(&c, "KILL app").await.0, "0A000");
    let (code, text) = refused(&c, "DRAIN nosuch").await;
    assert_eq!(code, "42704");
    assert!(text.contains(&names[1]), "{text}");
    let e = c.query("SHOW VERSION", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{}", message(&e));
    assert!(
        message(&e).contains("simple query protocol"),
        "{}",
        message(&e)
    );
    assert!(c
        .simple_query("")
        .await
        .unwrap()
        .iter()
        .all(|m| !matches!(m, SimpleQueryMessage::Row(_))));
    assert_eq!(rows(&c, "show version").await.len(), 1, "still usable");
    in_tx.batch_execute("ROLLBACK").await.unwrap();

    // psql reads the same answers (expanded display too).
    let out = env.psql_ok(env.rw, "user=app dbname=pgsplit", &["-c", "SHOW BACKENDS"]);
    for name in &names {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{name}|"))),
            "{out}"
        );
    }
    let out = env.psql_ok(
        env.rw,
        "user=app dbname=pgsplit",
        &["-c", "\\x on", "-c", "SHOW VERSION"],
    );
    assert!(
        out.contains(concat!("version|pgsplit ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let out = env.psql(
        env.rw,
        "user=app dbname=pgsplit",
        "app",
        &["-v", "VERBOSITY=verbose", "-c", "SHOW LISTS"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0A000") && err.contains("SHOW LISTS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_route_uses_the_live_topology_and_catalog_and_runs_nothing() {
    let env = Env::start(admin_setup()).await;
    let names: Vec<String> = env.cluster.nodes().iter().map(|n| n.name.clone()).collect();
    fixture(
        &env,
        "CREATE TABLE ex (id int); \
         CREATE FUNCTION price_of(int) RETURNS int STABLE LANGUAGE sql AS 'SELECT $1 * 2'",
    );
    let c = console(&env).await;

    let read = &rows(&c, "EXPLAIN ROUTE SELECT id FROM ex WHERE id = 1").await[0];
    assert!(
        names[1..]
            .iter()
            .any(|n| get(read, "route") == format!("replica {n}")),
        "{read:?}"
    );
    assert_eq!((get(read, "reason"), get(read, "access")), ("read", "read"));

    let write = &rows(&c, "explain route INSERT INTO ex VALUES (42);").await[0];
    assert_eq!(get(write, "route"), format!("primary {}", names[0]));
    assert_eq!(
        (get(write, "reason"), get(write, "access")),
        ("write", "write")
    );
    let count = env
        .cluster
        .psql_db(0, "app", "SELECT count(*) FROM ex")
        .unwrap();
    assert_eq!(count, "0", "EXPLAIN ROUTE runs nothing");

    let primary_only = &rows(&c, "EXPLAIN ROUTE SELECT pg_is_in_recovery()").await[0];
    assert_eq!(
        (
            get(primary_only, "reason"),
            get(primary_only, "primary_only")
        ),
        ("primary_only", "yes")
    );

    // No session has looked price_of up yet: the console says what a
    // session would do.
    let unknown = &rows(&c, "EXPLAIN ROUTE SELECT price_of(2)").await[0];
    assert_eq!(get(unknown, "route"), format!("primary {}", names[0]));
    assert_eq!(get(unknown, "reason"), "function");
    assert!(
        get(unknown, "functions")
            .contains("price_of: unknown function: the session would look it up"),
        "{unknown:?}"
    );
    // A session looks it up (and reads on a replica); the console then
    // knows it from the cache.
    let app = env.connect(env.rw).await;
    let port: i32 = app
        .query_one("SELECT price_of(2), inet_server_port()", &[])
        .await
        .unwrap()
        .get(1);
    assert!(env.replica_ports().contains(&(port as u16)));
    let known = &rows(&c, "EXPLAIN ROUTE SELECT price_of(2)").await[0];
    assert_eq!(get(known, "reason"), "read", "{known:?}");
    assert!(get(known, "route").starts_with("replica "), "{known:?}");
    assert_eq!(
        get(known, "functions"),
        "price_of: immutable or stable: a read (pg_proc of database app)"
    );

    let begin = &rows(&c, "EXPLAIN ROUTE BEGIN").await[0];
    assert_eq!(get(begin, "reason"), "answered");
    assert_eq!(get(begin, "effects"), "begins a transaction");
    assert_eq!(refused(&c, "EXPLAIN ROUTE").await.0, "42601");
}

/// The pgsplit_backend_in_rotation gauge of `backend`.
async fn in_rotation_metric(env: &Env, backend: &str) -> String {
    let (_, body) = env.http_get("/metrics").await;
    body.lines()
        .find(|l| {
            l.starts_with(&format!(
                "pgsplit_backend_in_rotation{{backend=\"{backend}\"}}"
            ))
        })
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_reload_drain_and_undrain() {
    let env = Env::start(Setup::default().tweak(|c| {
        c.admin.users = vec!["app".into()];
        c.auth.method = AuthMethod::Trust;
    }))
    .await;
    let names: Vec<String> = env.cluster.nodes().iter().map(|n| n.name.clone()).collect();
    let shared = env.proxy().shared.clone();
    let c = console(&env).await;

    // PAUSE holds new transactions; the console still answers; RESUME
    // lets them go.
    let app = env.connect(env.rw).await;
    let out = env.psql_ok(env.rw, "user=app dbname=pgsplit", &["-c", "PAUSE"]);
    assert_eq!(out.trim(), "PAUSE");
    assert!(shared.is_paused());
    assert_eq!(
        rows(&c, "SHOW VERSION").await.len(),
        1,
        "the console works while paused"
    );
    let mut held = tokio::spawn(async move { app.simple_query("SELECT 1").await.map(|_| ()) });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut held)
            .await
            .is_err(),
        "a transaction waits while paused"
    );
    c.simple_query("RESUME").await.unwrap();
    assert!(!shared.is_paused());
    tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("resumed")
        .unwrap()
        .unwrap();

    // RELOAD: without a file, then a good one, then a bad one.
    let (code, text) = refused(&c, "RELOAD").await;
    assert_eq!(code, "F0000");
    assert!(text.contains("no configuration file"), "{text}");
    let dir = Scratch::new("console");
    let file = dir.join("pgsplit.toml");
    let mut text = String::from(
        "[listen]\nread_write = \"127.0.0.1:0\"\nread_only = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [auth]\nmethod = \"trust\"\n[health]\ninterval_ms = 200\n[admin]\nusers = [\"app\"]\n",
    );
    for n in env.cluster.nodes() {
        text.push_str(&format!(
            "[[backends]]\nname = \"{}\"\naddress = \"{}\"\n",
            n.name,
            n.addr()
        ));
    }
    text.push_str("[[users]]\nname = \"app\"\npassword = \"app\"\n");
    std::fs::write(&file, &text).unwrap();
    shared.set_config_path(file.clone());
    let out = env.psql_ok(env.rw, "user=app dbname=pgsplit", &["-c", "RELOAD"]);
    assert!(out.contains("RELOAD"), "{out}");
    assert_eq!(shared.config_generation(), 1);
    std::fs::write(&file, format!("{text}\n[limits]\nnot_a_key = 1\n")).unwrap();
    let (code, text) = refused(&c, "reload;").await;
    assert_eq!(code, "F0000");
    assert!(text.contains("not_a_key"), "{text}");
    assert_eq!(
        shared.config_generation(),
        1,
        "the running configuration stays"
    );

    // DRAIN takes a replica out of rotation by hand: no new reads go
    // there, and /status, SHOW BACKENDS, the metrics and the events say so.
    let drained = &names[1];
    let drained_port = env.cluster.node(1).port;
    assert_eq!(in_rotation_metric(&env, drained).await, "1");
    c.simple_query(&format!("DRAIN {drained}")).await.unwrap();
    let backends = rows(&c, "SHOW BACKENDS").await;
    let row = find(&backends, "name", drained);
    assert_eq!(
        (
            get(row, "in_rotation"),
            get(row, "drained"),
            get(row, "reason")
        ),
        ("no", "yes", "drained by an operator")
    );
    for _ in 0..6 {
        let client = env.connect(env.rw).await;
        assert_ne!(served_by(&client).await, drained_port);
        let client = env.connect(env.ro).await;
        assert_ne!(served_by(&client).await, drained_port);
    }
    let (_, status) = env.http_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let b = &status["topology"]["backends"][1];
    assert_eq!(
        (b["drained"].as_bool(), b["in_rotation"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(b["reason"], "drained by an operator");
    assert_eq!(in_rotation_metric(&env, drained).await, "0");
    // Again: a notice, no error.
    c.simple_query(&format!("drain '{drained}'")).await.unwrap();

    c.simple_query(&format!("UNDRAIN {drained}")).await.unwrap();
    env.wait_for(Duration::from_secs(5), |s| s.backends[1].in_rotation)
        .await;
    assert_eq!(in_rotation_metric(&env, drained).await, "1");
    let (_, events) = env.http_get("/events").await;
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let kinds: Vec<(&str, &str)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["backend"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for wanted in [
        ("reload", ""),
        ("drained", drained.as_str()),
        ("undrained", drained.as_str()),
    ] {
        assert!(kinds.contains(&wanted), "{wanted:?} in {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_users_on_the_read_write_port_and_never_a_backend() {
    let env = Env::start(Setup::default().tweak(|c| {
        c.admin.users = vec!["app".into()];
    }))
    .await;
    let shared = env.proxy().shared.clone();

    // A user not in admin.users: 28000, after authenticating.
    let e = console_on(&env, env.rw, "app_md5").await.err().unwrap();
    assert_eq!(sqlstate(&e), "28000", "{}", message(&e));
    assert!(message(&e).contains("admin.users"), "{}", message(&e));
    // A wrong password is still a wrong password.
    let mut bad = env.pg_config(env.rw, "app");
    bad.dbname("pgsplit").password("wrong");
    assert_eq!(sqlstate(&connect_err(&bad).await), "28P01");
    // Not on the read-only port, unless configured.
    let e = console_on(&env, env.ro, "app").await.err().unwrap();
    assert_eq!(sqlstate(&e), "28000");
    assert!(message(&e).contains("read-only port"), "{}", message(&e));
    let mut config = (*shared.config.load_full()).clone();
    config.admin.console_on_read_only = true;
    shared.reload(config);
    let on_ro = console_on(&env, env.ro, "app").await.expect("allowed now");
    assert_eq!(rows(&on_ro, "SHOW VERSION").await.len(), 1);

    // Every command of the console, and none opened a server connection
    // nor sent a query of pgsplit's own.
    let c = console(&env).await;
    for command in [
        "SHOW BACKENDS",
        "SHOW POOLS",
        "SHOW CLIENTS",
        "SHOW SERVERS",
        "SHOW STATS",
        "SHOW ROUTING",
        "SHOW CONFIG",
        "SHOW HELP",
        "EXPLAIN ROUTE SELECT my_function(1)",
        "PAUSE",
        "RESUME",
    ] {
        c.simple_query(command).await.unwrap();
    }
    assert!(
        shared.pool.overview().is_empty(),
        "the pool never saw a backend"
    );
    let (_, metrics) = env.http_get("/metrics").await;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("pgsplit_internal_queries_total")
                && !l.contains("kind=\"probe\"")),
        "only the probes queried: {metrics}"
    );

    // With every backend down, the console still answers, and says so.
    for i in (0..env.cluster.nodes().len()).rev() {
        env.cluster.stop_node(i, true).unwrap();
    }
    env.wait_for(Duration::from_secs(15), |s| {
        s.backends.iter().all(|b| !b.healthy)
    })
    .await;
    let backends = rows(&c, "SHOW BACKENDS").await;
    assert!(
        backends.iter().all(|r| get(r, "healthy") == "no"),
        "{backends:#?}"
    );
    let explained = &rows(&c, "EXPLAIN ROUTE SELECT 1").await[0];
    assert!(
        get(explained, "route").contains("none is known now"),
        "{explained:?}"
    );
}

/// The tags psql and drivers see: `SHOW` for every SHOW, EmptyQueryResponse
/// for nothing, and an extended batch refused once, then skipped to its Sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_answers_follow_pgbouncers_console() {
    let env = Env::start(Setup::default().replicas(1).tweak(|c| {
        c.admin.users = vec!["app".into()];
        c.auth.method = AuthMethod::Trust;
    }))
    .await;
    let mut raw = RawClient::connect(env.rw).await;
    raw.send(&startup_packet(
        0,
        &[("user", "app"), ("database", "pgsplit")],
    ))
    .await;
    let mut greeting = Vec::new();
    loop {
        let (tag, body) = raw.recv().await.expect("greeting");
        greeting.push((tag, body));
        if tag == b'Z' {
            break;
        }
    }
    let params: Vec<String> = greeting
        .iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, b)| {
            String::from_utf8_lossy(b)
                .split('\0')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    for p in [
        "server_version",
        "client_encoding",
        "standard_conforming_strings",
    ] {
        assert!(params.iter().any(|x| x == p), "{p} in {params:?}");
    }
    assert!(greeting.iter().any(|(t, _)| *t == b'K'));

    let query = |sql: &str| {
        let mut m = vec![b'Q'];
        m.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
        m.extend_from_slice(sql.as_bytes());
        m.push(0);
        m
    };
    let show = query("SHOW VERSION");
    raw.send(&show).await;
    let mut tags = Vec::new();
    let mut complete = String::new();
    loop {
        let (tag, body) = raw.recv().await.unwrap();
        tags.push(tag);
        if tag == b'C' {
            complete = String::from_utf8_lossy(&body)
                .trim_end_matches('\0')
                .to_owned();
        }
        if tag == b'Z' {
            break;
        }
    }
    assert_eq!(tags, b"TDCZ");
    assert_eq!(complete, "SHOW");

    raw.send(&query(" ; ")).await;
    assert_eq!(raw.recv().await.unwrap().0, b'I');
    assert_eq!(raw.recv().await.unwrap().0, b'Z');

    // Parse, Bind, Execute, Sync: one error, then ReadyForQuery at the Sync.
    let mut batch = Vec::new();
    for (tag, body) in [
        (b'P', &b"\0SHOW VERSION\0\0\0"[..]),
        (b'B', &b"\0\0\0\0\0\0\0\0"[..]),
        (b'E', &b"\0\0\0\0\0"[..]),
        (b'S', &b""[..]),
    ] {
        batch.push(tag);
        batch.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        batch.extend_from_slice(body);
    }
    raw.send(&batch).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!(tag, b'E');
    assert_eq!(error_fields(&body).0, "0A000");
    assert_eq!(raw.recv().await.unwrap().0, b'Z');
    raw.send(&query("PAUSE")).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!(
        (tag, String::from_utf8_lossy(&body).trim_end_matches('\0')),
        (b'C', "PAUSE")
    );
    assert_eq!(raw.recv().await.unwrap().0, b'Z');
    raw.send(&query("RESUME")).await;
    assert_eq!(raw.recv().await.unwrap().0, b'C');
    assert_eq!(raw.recv().await.unwrap().0, b'Z');
    raw.send(b"X\0\0\0\x04").await;
    assert!(raw.recv().await.is_none(), "Terminate closes the console");
}

/// What a Python operator script does through psycopg 3 (a ClientCursor:
/// the simple query protocol, as PgBouncer's console asks of drivers).
const PSYCOPG_CONSOLE: &str = r#"
import os, sys, psycopg
conninfo = "host=127.0.0.1 port=%s user=app password=app dbname=pgsplit" % os.environ["PGSPLIT_RW_PORT"]
with psycopg.connect(conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
    cur = conn.cursor()
    cur.execute("SHOW BACKENDS")
    columns = [d.name for d in cur.description]
    rows = [dict(zip(columns, r)) for r in cur.fetchall()]
    assert [r["role"] for r in rows] == ["primary", "replica", "replica"], rows
    assert all(r["healthy"] == "yes" for r in rows), rows
    print("backends", " ".join(r["name"] for r in rows))
    cur.execute("EXPLAIN ROUTE INSERT INTO t VALUES (1)")
    (row,) = cur.fetchall()
    route = dict(zip([d.name for d in cur.description], row))
    assert route["route"].startswith("primary ") and route["reason"] == "write", route
    print("explain", route["route"])
    for sql, state in [("SELECT 1", "42601"), ("SHOW DATABASES", "0A000")]:
        try:
            cur.execute(sql)
        except psycopg.Error as e:
            assert e.sqlstate == state, (sql, e.sqlstate, str(e))
            print("refused", sql, e.sqlstate)
        else:
            sys.exit("%s was not refused" % sql)
    cur.execute("SHOW VERSION")
    print("version", cur.fetchone()[0])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_reads_the_console() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_psycopg = std::process::Command::new(&python)
        .args(["-c", "import psycopg"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_psycopg {
        assert!(
            std::env::var("PGSPLIT_SKIP_DRIVERS").is_ok_and(|v| v == "1"),
            "{python} cannot import psycopg: run tests/drivers/install.sh \
             (or set PGSPLIT_SKIP_DRIVERS=1 to skip driver tests)"
        );
        eprintln!("SKIPPED: psycopg is not installed and PGSPLIT_SKIP_DRIVERS=1");
        return;
    }
    let env = Env::start(admin_setup()).await;
    let rw = env.rw.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", PSYCOPG_CONSOLE])
            .env("PGSPLIT_RW_PORT", rw)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = env.cluster.nodes().iter().map(|n| n.name.clone()).collect();
    assert!(
        stdout.contains(&format!("backends {}", names.join(" "))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("explain primary {}", names[0])),
        "{stdout}"
    );
    assert!(stdout.contains("refused SELECT 1 42601"), "{stdout}");
    assert!(stdout.contains("refused SHOW DATABASES 0A000"), "{stdout}");
    assert!(
        stdout.contains(concat!("version pgsplit ", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
}
