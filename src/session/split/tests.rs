use std::sync::Mutex;
use std::time::Instant;

use crate::classify::Classifier;

use super::*;

struct NoClock;
impl Observe for NoClock {
    fn classified(&self, _: Instant) {}
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn query(sql: &str) -> Vec<u8> {
    frame(b'Q', &[sql.as_bytes(), b"\0"].concat())
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    frame(
        b'P',
        &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat(),
    )
}

fn bind(name: &str) -> Vec<u8> {
    frame(b'B', &[b"\0", name.as_bytes(), b"\0\0\0\0\0\0\0"].concat())
}

fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

struct Fixture {
    classifier: Classifier,
    memo: Mutex<Memo>,
    cache: FunctionCache,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            classifier: Classifier::new(&[], &[], 100),
            memo: Mutex::default(),
            cache: FunctionCache::default(),
        }
    }

    fn plan(&self, split: &Split, wire: &[u8], replicas: bool) -> Plan {
        let verdicts = Verdicts::new(&self.classifier, &self.memo);
        let functions = Functions::new(&self.cache, "app");
        split
            .plan(wire, 1 << 20, &verdicts, replicas, &functions, &NoClock)
            .unwrap()
    }
}

#[test]
fn reads_go_to_replicas_and_everything_else_to_the_primary() {
    let f = Fixture::new();
    let split = Split::default();
    let read = f.plan(&split, &query("SELECT 1"), true);
    assert_eq!(
        (read.dest, read.reason, read.requests),
        (Dest::Replica, "read", 1)
    );
    let write = f.plan(&split, &query("INSERT INTO t VALUES (1)"), true);
    assert_eq!((write.dest, write.reason), (Dest::Primary, "write"));
    // One write makes the whole message a write.
    let mixed = f.plan(&split, &query("SELECT 1; DELETE FROM t"), true);
    assert_eq!(mixed.dest, Dest::Primary);
    let none = f.plan(&split, &query("SELECT 1"), false);
    assert_eq!((none.dest, none.reason), (Dest::Primary, "no_replica"));
    let hinted = f.plan(&split, &query("/* pgsplit:primary */ SELECT 1"), true);
    assert_eq!((hinted.dest, hinted.reason), (Dest::Primary, "hint"));
    let pinned = Split {
        pinned: Some(PinCause::Listen),
        ..Split::default()
    };
    let plan = f.plan(&pinned, &query("SELECT 1"), true);
    assert_eq!((plan.dest, plan.reason), (Dest::Primary, "pinned"));
}

#[test]
fn an_extended_batch_is_judged_whole() {
    let f = Fixture::new();
    let split = Split::default();
    let read = [parse("s1", "SELECT $1::int"), bind("s1"), sync()].concat();
    let plan = f.plan(&split, &read, true);
    assert_eq!((plan.dest, plan.requests), (Dest::Replica, 1));
    let mixed = [
        parse("", "SELECT 1"),
        bind(""),
        parse("", "UPDATE t SET x = 1"),
        bind(""),
        sync(),
    ]
    .concat();
    assert_eq!(f.plan(&split, &mixed, true).dest, Dest::Primary);
    // A Bind of a statement the session never prepared: the primary.
    let unknown = [bind("nope"), sync()].concat();
    assert_eq!(f.plan(&split, &unknown, true).dest, Dest::Primary);
}

#[test]
fn unknown_functions_are_writes_until_pg_proc_says_otherwise() {
    let f = Fixture::new();
    let split = Split::default();
    let plan = f.plan(&split, &query("SELECT my_fn()"), true);
    assert_eq!((plan.dest, plan.reason), (Dest::Primary, "function"));
    assert_eq!(plan.unknown, vec![Box::<str>::from("my_fn")]);
    f.cache.put("app", "my_fn", true);
    let plan = f.plan(&split, &query("SELECT my_fn()"), true);
    assert_eq!(plan.dest, Dest::Replica);
    assert!(plan.unknown.is_empty());
    f.cache.put("app", "my_fn", false);
    assert_eq!(
        f.plan(&split, &query("SELECT my_fn()"), true).dest,
        Dest::Primary
    );
}

#[test]
fn the_lookup_query_quotes_names_and_skips_unquotable_ones() {
    let sql = FunctionCache::lookup_sql(&["myschema.f".into(), "\"Odd\"".into()]).unwrap();
    assert!(sql.contains("$pgsplit$myschema.f$pgsplit$"), "{sql}");
    assert!(sql.contains("$pgsplit$\"Odd\"$pgsplit$"), "{sql}");
    assert!(FunctionCache::lookup_sql(&["a$pgsplit$b".into()]).is_none());
}

#[test]
fn a_fresh_connection_is_in_sync_with_a_stateless_session() {
    let f = Fixture::new();
    let verdicts = Verdicts::new(&f.classifier, &f.memo);
    let split = Split::default();
    let synced = Synced::default();
    let wire = [parse("s1", "SELECT 1"), bind("s1"), sync()].concat();
    assert!(split.in_sync(&synced, &wire, 1 << 20, &verdicts, &NoClock));
    assert!(split.holds_no_server_state());
}

#[test]
fn the_memo_classifies_a_text_once() {
    struct Count(std::sync::atomic::AtomicUsize);
    impl Observe for Count {
        fn classified(&self, _: Instant) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let f = Fixture::new();
    let verdicts = Verdicts::new(&f.classifier, &f.memo);
    let count = Count(Default::default());
    for _ in 0..3 {
        verdicts.get(b"SELECT 42", &count);
    }
    verdicts.get(b"SELECT 43", &count);
    assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 2);
    // Non-UTF-8 text is a write.
    assert_eq!(verdicts.get(b"SELECT \xff", &count).access, Access::Write);
}
