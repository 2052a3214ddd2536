//! What of the pool can be checked without a server: the slot accounting
//! under `max_server_connections`, the FIFO queue of waiters and a waiter
//! giving up, the wait timeout, the greeting cache, pruning, and the pool
//! key a login makes; the statement registry and a connection's statements.
//!
//! A `ServerConn` owns a `TcpStream`, so whatever takes or gives back a
//! connection (`checkin`, idle reuse, closing an idle connection of another
//! login to make room) needs a socket and is left to `tests/pool.rs`.

use std::collections::HashSet;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot::error::TryRecvError;

use super::statements::{write_server_name, Registry, ServerStatements, StatementKey};
use super::*;
use crate::auth::server::LoginError;

fn gauges() -> PoolGauges {
    PoolGauges {
        in_use: Gauge::default(),
        idle: Gauge::default(),
        waiting: Gauge::default(),
        wait_seconds: Histogram::new([0.01, 0.1, 1.0]),
        served: Default::default(),
    }
}

fn target(name: &str) -> Target {
    Target {
        backend: 0,
        name: name.into(),
        address: format!("{name}:5432").into(),
    }
}

fn login(user: &str) -> Login {
    Login::new(
        vec![
            ("user".into(), user.into()),
            ("database".into(), "app".into()),
        ],
        false,
    )
}

/// One checkout attempt on `backend` for `user`, within `max`.
fn attempt(pool: &Pool, backend: &str, user: &str, max: usize) -> Next {
    pool.try_checkout(
        &target(backend),
        &login(user),
        None,
        max,
        Duration::from_secs(60),
        gauges,
    )
}

/// The attempt got room for a new connection.
fn room(next: Next) -> (Slot, PoolGauges) {
    match next {
        Next::Open(slot, gauges) => (slot, gauges),
        Next::Got(..) => panic!("an idle connection, not room"),
        Next::Wait(..) => panic!("a place in the queue, not room"),
    }
}

/// The attempt got a place in the queue.
fn queued(next: Next) -> oneshot::Receiver<Grant> {
    match next {
        Next::Wait(receiver, _) => receiver,
        Next::Got(..) => panic!("an idle connection, not a place in the queue"),
        Next::Open(..) => panic!("room, not a place in the queue"),
    }
}

/// What a waiter was handed so far.
fn handed(receiver: &mut oneshot::Receiver<Grant>) -> &'static str {
    match receiver.try_recv() {
        Ok(Grant::Slot(_)) => "room",
        Ok(Grant::Conn(_)) => "a connection",
        Err(TryRecvError::Empty) => "nothing yet",
        Err(TryRecvError::Closed) => "closed",
    }
}

/// (open, idle, waiting) of `backend`.
fn counts(pool: &Pool, backend: &str) -> (usize, usize, usize) {
    pool.counts()
        .into_iter()
        .find(|(name, ..)| name == backend)
        .map(|(_, open, idle, waiting)| (open, idle, waiting))
        .expect("a known backend")
}

#[test]
fn a_backend_opens_up_to_its_bound_then_queues() {
    let pool = Pool::default();
    let (_a, _) = room(attempt(&pool, "pg1", "alice", 2));
    let (_b, _) = room(attempt(&pool, "pg1", "bob", 2));
    assert_eq!(counts(&pool, "pg1"), (2, 0, 0));
    let _waiting = queued(attempt(&pool, "pg1", "carol", 2));
    assert_eq!(counts(&pool, "pg1"), (2, 0, 1));
    let (_other, _) = room(attempt(&pool, "pg2", "carol", 2));
    assert_eq!(counts(&pool, "pg2"), (1, 0, 0), "each backend has its own");
}

#[test]
fn the_bound_is_set_when_a_backend_is_first_seen() {
    let pool = Pool::default();
    let (_a, _) = room(attempt(&pool, "pg1", "alice", 1));
    let _waiting = queued(attempt(&pool, "pg1", "alice", 5));
    assert_eq!(pool.max_of("pg1"), 1);
    assert_eq!(pool.max_of("unknown"), 0);
}

#[test]
fn freed_room_goes_to_waiters_first_come_first_served() {
    let pool = Pool::default();
    let (slot, gauges) = room(attempt(&pool, "pg1", "alice", 1));
    let mut first = queued(attempt(&pool, "pg1", "bob", 1));
    let mut second = queued(attempt(&pool, "pg1", "alice", 1));
    let mut third = queued(attempt(&pool, "pg1", "carol", 1));
    assert_eq!(gauges.waiting.get(), 3);
    drop(slot);
    let got = |r: &mut oneshot::Receiver<Grant>| match r.try_recv() {
        Ok(Grant::Slot(slot)) => slot,
        _ => panic!("room was due"),
    };
    let slot = got(&mut first);
    assert_eq!(handed(&mut second), "nothing yet");
    assert_eq!(counts(&pool, "pg1"), (1, 0, 2), "the room moved, not freed");
    assert_eq!(gauges.waiting.get(), 2);
    drop(slot);
    let slot = got(&mut second);
    assert_eq!(handed(&mut third), "nothing yet");
    drop(slot);
    let slot = got(&mut third);
    assert_eq!(counts(&pool, "pg1"), (1, 0, 0));
    drop(slot);
    assert_eq!(counts(&pool, "pg1"), (0, 0, 0));
    assert_eq!(gauges.waiting.get(), 0);
}

#[test]
fn a_waiter_that_gave_up_is_passed_over() {
    let pool = Pool::default();
    let (slot, gauges) = room(attempt(&pool, "pg1", "alice", 1));
    let gone = queued(attempt(&pool, "pg1", "bob", 1));
    let mut next = queued(attempt(&pool, "pg1", "carol", 1));
    drop(gone);
    drop(slot);
    assert_eq!(handed(&mut next), "room");
    assert_eq!(
        counts(&pool, "pg1"),
        (0, 0, 0),
        "the granted slot was dropped"
    );
    assert_eq!(gauges.waiting.get(), 0);
}

#[test]
fn room_freed_with_every_waiter_gone_is_given_back() {
    let pool = Pool::default();
    let (slot, _) = room(attempt(&pool, "pg1", "alice", 1));
    let gone = queued(attempt(&pool, "pg1", "bob", 1));
    drop(gone);
    drop(slot);
    assert_eq!(counts(&pool, "pg1"), (0, 0, 0));
    let (_again, _) = room(attempt(&pool, "pg1", "bob", 1));
}

#[test]
fn waiters_that_gave_up_leave_the_queue() {
    let pool = Pool::default();
    let (_slot, gauges) = room(attempt(&pool, "pg1", "alice", 1));
    let gone = queued(attempt(&pool, "pg1", "bob", 1));
    let _stays = queued(attempt(&pool, "pg1", "carol", 1));
    drop(gone);
    pool.forget_waiters("pg1");
    assert_eq!(counts(&pool, "pg1"), (1, 0, 1));
    assert_eq!(gauges.waiting.get(), 1);
    pool.forget_waiters("unknown");
}

#[test]
fn a_slot_that_outlives_its_pool_frees_nothing() {
    let pool = Pool::default();
    let (slot, _) = room(attempt(&pool, "pg1", "alice", 1));
    drop(pool);
    drop(slot);
}

#[tokio::test]
async fn a_checkout_waits_then_fails_naming_the_bound() {
    let pool = Pool::default();
    let (_slot, gauges) = room(attempt(&pool, "pg1", "alice", 1));
    let user = UserEntry {
        name: "bob".into(),
        password: None,
        scram: None,
    };
    let wait = Duration::from_millis(50);
    let result = pool
        .checkout(
            &target("pg1"),
            &login("bob"),
            &user,
            None,
            1,
            wait,
            Duration::from_secs(1),
            Duration::from_secs(60),
            || panic!("the backend is known"),
        )
        .await;
    let Err(PoolError::Timeout(timeout)) = result else {
        panic!("a timeout was due");
    };
    assert_eq!((timeout.backend.as_str(), timeout.max), ("pg1", 1));
    assert!(timeout.waited_ms >= wait.as_millis(), "{timeout:?}");
    assert!(timeout
        .to_string()
        .starts_with("all 1 connections to backend pg1 are in use"));
    assert_eq!(counts(&pool, "pg1"), (1, 0, 0), "it left the queue");
    assert_eq!(gauges.waiting.get(), 0);
    let mut metrics = prometheus_client::registry::Registry::default();
    metrics.register("wait", "", gauges.wait_seconds.clone());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics).unwrap();
    assert!(
        text.contains("wait_count 1\n"),
        "its wait was observed:\n{text}"
    );
}

#[tokio::test]
async fn a_checkout_on_a_backend_allowed_no_connection_times_out() {
    let pool = Pool::default();
    let user = UserEntry {
        name: "alice".into(),
        password: None,
        scram: None,
    };
    let result = pool
        .checkout(
            &target("pg1"),
            &login("alice"),
            &user,
            None,
            0,
            Duration::from_millis(10),
            Duration::from_secs(1),
            Duration::from_secs(60),
            gauges,
        )
        .await;
    assert!(matches!(
        result,
        Err(PoolError::Timeout(PoolTimeout { max: 0, .. }))
    ));
    assert_eq!(counts(&pool, "pg1"), (0, 0, 0));
}

fn greeting(text: &[u8]) -> Arc<Greeting> {
    Arc::new(Greeting {
        bytes: text.into(),
        serializable: false,
    })
}

#[test]
fn greetings_are_cached_per_backend_and_login() {
    let pool = Pool::default();
    let alice = login("alice").key;
    pool.set_greeting("pg1", &alice, greeting(b"early"));
    assert!(pool.greeting("pg1", &alice).is_none(), "unknown backend");
    let _slot = room(attempt(&pool, "pg1", "alice", 1));
    pool.set_greeting("pg1", &alice, greeting(b"hello"));
    assert_eq!(&pool.greeting("pg1", &alice).unwrap().bytes[..], b"hello");
    assert!(pool.greeting("pg1", &login("bob").key).is_none());
    assert!(pool.greeting("pg2", &alice).is_none());
}

#[test]
fn a_backend_that_moved_forgets_its_greetings() {
    let pool = Pool::default();
    let alice = login("alice");
    let (_slot, _) = room(attempt(&pool, "pg1", "alice", 2));
    pool.set_greeting("pg1", &alice.key, greeting(b"hello"));
    let moved = Target {
        address: "elsewhere:5432".into(),
        ..target("pg1")
    };
    let next = pool.try_checkout(&moved, &alice, None, 2, Duration::from_secs(60), gauges);
    let _ = room(next);
    assert!(pool.greeting("pg1", &alice.key).is_none());
}

#[test]
fn pruning_marks_backends_that_serve_nothing_and_forgets_their_greetings() {
    let pool = Pool::default();
    let alice = login("alice").key;
    for backend in ["pg1", "pg2"] {
        let _ = room(attempt(&pool, backend, "alice", 1));
        pool.set_greeting(backend, &alice, greeting(b"hello"));
    }
    pool.prune(|name| name == "pg1");
    let serving: Vec<(String, bool)> = {
        let backends = lock(&pool.inner.backends);
        let mut v: Vec<_> = backends
            .iter()
            .map(|(name, b)| (name.to_string(), b.serving))
            .collect();
        v.sort();
        v
    };
    assert_eq!(serving, [("pg1".into(), true), ("pg2".into(), false)]);
    assert!(pool.greeting("pg1", &alice).is_some());
    assert!(pool.greeting("pg2", &alice).is_none());
    pool.prune(|_| true);
    assert!(lock(&pool.inner.backends)["pg2"].serving, "serving again");
}

#[test]
fn counts_list_backends_by_name() {
    let pool = Pool::default();
    for backend in ["pg3", "pg1", "pg2"] {
        let _ = room(attempt(&pool, backend, "alice", 1));
    }
    let names: Vec<String> = pool.counts().into_iter().map(|c| c.0).collect();
    assert_eq!(names, ["pg1", "pg2", "pg3"]);
}

#[test]
fn a_login_s_key_is_its_parameters_in_any_order() {
    let ab = Login::new(
        vec![("user".into(), "a".into()), ("database".into(), "d".into())],
        false,
    );
    let ba = Login::new(
        vec![("database".into(), "d".into()), ("user".into(), "a".into())],
        false,
    );
    let other = Login::new(
        vec![("user".into(), "a".into()), ("database".into(), "e".into())],
        false,
    );
    assert_eq!(ab.key, ba.key);
    assert_ne!(ab.key, other.key);
    assert_eq!(ab.database(), "d");
    assert_eq!(Login::new(vec![], false).database(), "");
    let read_only = ab.read_only();
    assert!(read_only.read_only && !ab.read_only);
    assert_ne!(read_only.key, ab.key, "a read-only login is another pool");
    assert_eq!(read_only.params, ab.params);
}

#[test]
fn connect_errors_say_what_the_client_hears_and_whether_to_try_elsewhere() {
    let refused = ConnectError::Login {
        backend: "pg1".into(),
        source: LoginError::Refused {
            code: "3D000".into(),
            message: "database \"nope\" does not exist".into(),
        },
    };
    assert_eq!(refused.sqlstate(), "3D000");
    assert_eq!(refused.client_message(), "database \"nope\" does not exist");
    assert!(!refused.is_unreachable());
    let unreachable = ConnectError::Unreachable {
        backend: "pg1".into(),
        address: "pg1:5432".into(),
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    };
    let timeout = ConnectError::Timeout {
        backend: "pg1".into(),
        address: "pg1:5432".into(),
        ms: 250,
    };
    for e in [&unreachable, &timeout] {
        assert_eq!(e.sqlstate(), "08001");
        assert!(e.is_unreachable());
        assert!(e.client_message().contains("pg1:5432"), "{e}");
    }
    assert!(timeout.client_message().contains("250 ms"));
    assert!(std::error::Error::source(&unreachable).is_some());
}

#[test]
fn the_registry_gives_one_key_per_live_body_and_never_reuses_an_id() {
    let registry = Registry::default();
    let mut ids = HashSet::new();
    for round in 0..3 {
        for i in 0..1500 {
            let key = registry.intern(format!("SELECT {i}\0\0\0").as_bytes());
            assert!(ids.insert(key.id), "round {round}: id {} again", key.id);
        }
    }
    assert_eq!(registry.live(), 0);
    let kept: Vec<_> = (0..3)
        .map(|i| registry.intern(format!("SELECT {i}\0\0\0").as_bytes()))
        .collect();
    assert_eq!(registry.live(), 3);
    assert!(Arc::ptr_eq(&kept[0], &registry.intern(b"SELECT 0\0\0\0")));
    assert_eq!(&*kept[2].body, b"SELECT 2\0\0\0");
}

#[test]
fn the_registry_is_shared_between_threads() {
    let registry = Arc::new(Registry::default());
    let keys: Vec<Arc<StatementKey>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| registry.intern(b"SELECT $1\0\0\x01\0\0\0\x17")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(keys.iter().all(|k| Arc::ptr_eq(k, &keys[0])));
    assert_eq!(registry.live(), 1);
}

#[test]
fn parameter_types_make_another_statement() {
    let registry = Registry::default();
    let untyped = registry.intern(b"SELECT $1\0\0\0");
    let int4 = registry.intern(b"SELECT $1\0\0\x01\0\0\0\x17");
    assert_ne!(untyped.id, int4.id);
}

#[test]
fn a_key_s_server_name_is_the_prefix_and_its_id() {
    let registry = Registry::default();
    let key = registry.intern(b"SELECT 1\0\0\0");
    let mut written = bytes::BytesMut::new();
    key.write_name(&mut written);
    assert_eq!(&written[..], key.server_name().as_bytes());
    assert_eq!(key.server_name(), format!("pgsplit_{}", key.id));
    let mut max = bytes::BytesMut::new();
    write_server_name(u64::MAX, &mut max);
    assert_eq!(&max[..], b"pgsplit_18446744073709551615");
}

/// Keys for `n` distinct statements.
fn keys(registry: &Registry, n: usize) -> Vec<Arc<StatementKey>> {
    (0..n)
        .map(|i| registry.intern(format!("SELECT {i}\0\0\0").as_bytes()))
        .collect()
}

#[test]
fn a_connection_evicts_the_least_recently_used_statement() {
    let registry = Registry::default();
    let k = keys(&registry, 5);
    let mut held = ServerStatements::default();
    for key in &k[..3] {
        assert_eq!(held.add(key, 3, &[]), None);
    }
    assert!(held.touch(k[0].id));
    assert!(held.touch(k[1].id));
    assert_eq!(held.add(&k[3], 3, &[]), Some(k[2].id));
    assert!(held.touch(k[0].id));
    assert_eq!(held.add(&k[4], 3, &[]), Some(k[1].id));
    assert_eq!(held.len(), 3);
    let mut left: Vec<u64> = [0, 3, 4].iter().map(|i| k[*i].id).collect();
    left.retain(|id| held.touch(*id));
    assert_eq!(left.len(), 3);
}

#[test]
fn a_touch_of_a_statement_not_held_changes_nothing() {
    let registry = Registry::default();
    let k = keys(&registry, 3);
    let mut held = ServerStatements::default();
    held.add(&k[0], 2, &[]);
    held.add(&k[1], 2, &[]);
    assert!(!held.touch(k[2].id));
    assert_eq!(held.len(), 2);
    assert_eq!(held.add(&k[2], 2, &[]), Some(k[0].id));
}

#[test]
fn statements_kept_for_a_batch_may_exceed_the_bound() {
    let registry = Registry::default();
    let k = keys(&registry, 3);
    let mut held = ServerStatements::default();
    held.add(&k[0], 1, &[]);
    let keep = [k[0].id, k[1].id];
    assert_eq!(held.add(&k[1], 1, &keep), None);
    assert_eq!(held.len(), 2);
    assert_eq!(held.add(&k[2], 1, &[k[2].id]), Some(k[0].id));
}

#[test]
fn a_bound_of_zero_still_holds_one_statement() {
    let registry = Registry::default();
    let k = keys(&registry, 2);
    let mut held = ServerStatements::default();
    assert_eq!(held.add(&k[0], 0, &[]), None);
    assert_eq!(held.add(&k[1], 0, &[]), Some(k[0].id));
    assert_eq!(held.len(), 1);
}

#[test]
fn a_connection_keeps_its_statements_alive_in_the_registry() {
    let registry = Registry::default();
    let mut held = ServerStatements::default();
    let key = registry.intern(b"SELECT 1\0\0\0");
    let id = key.id;
    held.add(&key, 10, &[]);
    drop(key);
    assert_eq!(registry.live(), 1);
    assert_eq!(registry.intern(b"SELECT 1\0\0\0").id, id);
    held.remove(id);
    assert_eq!(registry.live(), 0);
    assert!(held.is_empty());
}

#[test]
fn clearing_a_connection_forgets_every_kind_of_statement() {
    let registry = Registry::default();
    let mut held = ServerStatements::default();
    held.add(&registry.intern(b"SELECT 1\0\0\0"), 10, &[]);
    held.sql.insert("p".into(), statements::SqlName::Holds(7));
    held.unnamed = Some((1, 1));
    held.clear();
    assert!(held.is_empty() && held.sql.is_empty() && held.unnamed.is_none());
    assert_eq!(registry.live(), 0);
}

/// A connection to `target("pg1")` for `login` whose stream is a loopback
/// socket (no server behind it), and the socket's other end.
async fn loopback_conn(login: &Login, slot: Slot) -> (ServerConn, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stream, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let target = target("pg1");
    let conn = ServerConn {
        stream: crate::pool::stream::ServerStream::Plain(stream.unwrap()),
        name: target.name,
        address: target.address,
        addr,
        key: crate::protocol::startup::CancelKey { pid: 1, secret: 2 },
        greeting: bytes::BytesMut::new(),
        login: Arc::clone(&login.key),
        read_only: false,
        settings: 0,
        role_changed: false,
        statements: ServerStatements::default(),
        serial: 1,
        idle_since: std::time::Instant::now(),
        thread: std::thread::current().id(),
        per_thread: false,
        slot,
    };
    (conn, accepted.unwrap().0)
}

/// A connection given back to a backend that serves nothing (pruned: a
/// replica out of rotation, a fenced primary) is closed, and its `Slot`
/// frees its place outside the pool's lock (it once deadlocked there). The
/// one test here with a socket (loopback, no server): `ServerConn` owns a
/// `TcpStream`.
#[tokio::test]
async fn a_connection_given_back_to_a_backend_that_serves_nothing_is_closed() {
    let pool = Pool::default();
    let alice = login("alice");
    let (slot, _) = room(attempt(&pool, "pg1", "alice", 1));
    let (conn, _peer) = loopback_conn(&alice, slot).await;
    pool.prune(|_| false);
    let (done, returned) = std::sync::mpsc::channel();
    let giving_back = pool.clone();
    std::thread::spawn(move || {
        giving_back.checkin(Box::new(conn));
        let _ = done.send(());
    });
    assert!(
        returned.recv_timeout(Duration::from_secs(2)).is_ok(),
        "checkin never returned"
    );
    assert_eq!(counts(&pool, "pg1"), (0, 0, 0), "closed, its place freed");
}

#[test]
fn sessions_with_the_same_parameters_share_one_login() {
    let pool = Pool::default();
    let params = |app: &str| {
        vec![
            ("user".to_owned(), "app".to_owned()),
            ("database".to_owned(), "app".to_owned()),
            ("application_name".to_owned(), app.to_owned()),
        ]
    };
    let a = pool.share_login(Login::new(params("web"), false));
    let b = pool.share_login(Login::new(params("web"), false));
    let c = pool.share_login(Login::new(params("batch"), false));
    assert!(Arc::ptr_eq(&a.key, &b.key) && Arc::ptr_eq(&a.params, &b.params));
    assert!(!Arc::ptr_eq(&a.params, &c.params));
    // Once no session holds it, the next equal login brings its own.
    let weak = Arc::downgrade(&a.params);
    drop((a, b));
    assert!(weak.upgrade().is_none());
    let d = pool.share_login(Login::new(params("web"), false));
    assert_eq!(d.database(), "app");
}
