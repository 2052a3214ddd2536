use super::*;
use crate::router::FunctionInfo;

fn offline(sql: &str) -> Explanation {
    super::offline(sql, &Consistency::default(), &Routing::default())
}

#[test]
fn reads_go_to_a_replica_and_writes_to_the_primary() {
    let e = offline("SELECT lower(name) FROM t WHERE id = 1");
    assert_eq!(
        (e.route.as_str(), e.reason, e.access),
        ("a replica", "read", "read")
    );
    assert!(e.relations.contains(&"t".to_owned()), "{e:?}");
    assert!(e.functions.is_empty(), "{e:?}");
    assert!(
        e.notes[0].starts_with("relations ") && e.notes[0].contains(" t"),
        "{e:?}"
    );
    assert!(
        e.notes[0].contains("check pg_class for unlogged ones"),
        "{e:?}"
    );

    let e = offline("UPDATE t SET v = 1");
    assert_eq!(
        (e.route.as_str(), e.reason, e.access),
        ("the primary", "write", "write")
    );
    let e = offline("CREATE TABLE x (a int)");
    assert_eq!((e.route.as_str(), e.access), ("the primary", "write"));
    assert_eq!(e.reason, e.why, "a write's reason is its kind");
}

#[test]
fn an_unknown_function_would_be_looked_up_and_is_a_write_until_then() {
    let e = offline("SELECT my_price(3)");
    assert_eq!(e.route, "the primary");
    assert_eq!(e.reason, "function");
    assert_eq!(e.access, "read", "the text alone is a read");
    assert_eq!(
        e.functions,
        ["my_price: unknown function: the session would look it up"]
    );
    assert!(e.notes[0].contains("unknown function my_price"), "{e:?}");
}

struct Knows;

impl router::Catalog for Knows {
    fn function(&self, name: &str) -> Option<FunctionInfo> {
        (name == "my_price").then_some(FunctionInfo {
            read: true,
            sets_config: false,
        })
    }
    fn relation_unlogged(&self, _: &str) -> Option<bool> {
        Some(false)
    }
    fn function_oid(&self, _: u32) -> Option<bool> {
        None
    }
}

impl Facts for Knows {
    fn function_source(&self, _: &str) -> Option<String> {
        Some("pg_proc of database app".into())
    }
}

#[test]
fn a_function_the_catalog_knows_settles_the_read() {
    let classifier = Classifier::new(&[], &[], 0);
    let snapshot = offline_snapshot();
    let e = explain(
        "SELECT my_price(3)",
        &Context {
            classifier: &classifier,
            snapshot: &snapshot,
            catalog: &Knows,
            policy: policy(&Consistency::default(), &Routing::default()),
            ticket: 0,
            name_backends: true,
        },
    );
    assert_eq!((e.route.as_str(), e.reason), ("replica replica", "read"));
    assert_eq!(
        e.functions,
        ["my_price: immutable or stable: a read (pg_proc of database app)"]
    );
}

#[test]
fn what_pgsplit_answers_and_what_only_the_primary_can() {
    let e = offline("BEGIN");
    assert_eq!(e.reason, "answered");
    assert!(e.route.starts_with("answered by pgsplit (BEGIN"), "{e:?}");
    assert_eq!(e.effects, ["begins a transaction"]);

    let e = offline("SELECT pg_is_in_recovery()");
    assert!(e.primary_only);
    assert_eq!(
        (e.route.as_str(), e.reason),
        ("the primary", "primary_only")
    );

    let e = offline("/* pgsplit:primary */ SELECT 1");
    assert_eq!((e.reason, e.hint), ("hint", Some("primary")));

    let e = offline("SELEC oops");
    assert_eq!((e.access, e.why, e.statements), ("write", "unparsable", 0));

    let e = offline("CREATE TEMP TABLE x (a int)");
    assert!(
        e.effects
            .iter()
            .any(|x| x.contains("pins the session (temp_object)")),
        "{e:?}"
    );
}

#[test]
fn text_has_one_line_per_field() {
    let text = offline("SELECT 1").to_text();
    assert!(text.starts_with("route:        a replica\n"), "{text}");
    assert!(text.contains("\nverdict:      read (read)\n"), "{text}");
    assert!(text.contains("\nfunctions:    none to look up\n"), "{text}");
    assert!(text.contains("\nprimary only: no\n"), "{text}");
}

proptest::proptest! {
    /// Any text, SQL or not, gets an explanation (unparsable text goes to
    /// the primary), never a panic.
    #[test]
    fn any_text_is_explained(
        sql in "(?s)(SELECT|INSERT|BEGIN|WITH|SET|COPY|EXPLAIN)? .{0,80}"
    ) {
        let e = offline(&sql);
        proptest::prop_assert!(!e.route.is_empty());
        proptest::prop_assert!(!e.to_text().is_empty());
    }
}
