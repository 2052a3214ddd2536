//! Effects, hints, function lookups, overrides, the cache, and robustness.

use super::*;

fn verdict(sql: &str) -> Verdict {
    Classifier::new(&[], &[], 0).classify_uncached(sql)
}

fn set(name: &str, local: bool, sql: &str) -> Effect {
    Effect::Set {
        name: name.into(),
        local,
        sql: sql.into(),
        value: None,
    }
}

fn set_to(name: &str, value: &str, sql: &str) -> Effect {
    Effect::Set {
        name: name.into(),
        local: false,
        sql: sql.into(),
        value: Some(value.into()),
    }
}

/// (statement, access, effects).
fn cases() -> Vec<(&'static str, Access, Vec<Effect>)> {
    use Access::{Read, Write};
    let begin = |read_only, serializable| Effect::Begin {
        read_only,
        serializable,
    };
    vec![
        ("BEGIN", Write, vec![begin(None, false)]),
        ("BEGIN READ ONLY", Read, vec![begin(Some(true), false)]),
        ("BEGIN READ WRITE", Write, vec![begin(Some(false), false)]),
        (
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            Write,
            vec![begin(None, true)],
        ),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY",
            Read,
            vec![begin(Some(true), true)],
        ),
        (
            "START TRANSACTION READ ONLY, ISOLATION LEVEL REPEATABLE READ",
            Read,
            vec![begin(Some(true), false)],
        ),
        (
            "BEGIN TRANSACTION READ ONLY DEFERRABLE",
            Read,
            vec![begin(Some(true), false)],
        ),
        (
            "SET TRANSACTION READ ONLY",
            Read,
            vec![Effect::SetTransaction {
                read_only: Some(true),
                serializable: false,
            }],
        ),
        (
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            Read,
            vec![Effect::SetTransaction {
                read_only: None,
                serializable: true,
            }],
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            Read,
            vec![Effect::Pin(PinCause::SessionCharacteristics)],
        ),
        (
            "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
            Write,
            vec![Effect::Pin(PinCause::Other)],
        ),
        ("COMMIT", Read, vec![Effect::Commit { chain: false }]),
        ("END", Read, vec![Effect::Commit { chain: false }]),
        (
            "COMMIT AND CHAIN",
            Read,
            vec![Effect::Commit { chain: true }],
        ),
        ("ROLLBACK", Read, vec![Effect::Rollback { chain: false }]),
        ("ABORT", Read, vec![Effect::Rollback { chain: false }]),
        (
            "ROLLBACK AND CHAIN",
            Read,
            vec![Effect::Rollback { chain: true }],
        ),
        (
            "ROLLBACK TO SAVEPOINT a",
            Read,
            vec![Effect::RollbackToSavepoint],
        ),
        ("SAVEPOINT a", Read, vec![]),
        ("RELEASE SAVEPOINT a", Read, vec![]),
        (
            "PREPARE TRANSACTION 'g'",
            Write,
            vec![Effect::Commit { chain: false }],
        ),
        ("SET x.y = 1", Read, vec![set("x.y", false, "SET x.y = 1")]),
        (
            "SET LOCAL x.y = 1",
            Read,
            vec![set("x.y", true, "SET LOCAL x.y = 1")],
        ),
        (
            "SET SESSION work_mem = '4MB'",
            Read,
            vec![set_to("work_mem", "4mb", "SET SESSION work_mem = '4MB'")],
        ),
        (
            "SET search_path TO a, b",
            Read,
            vec![set("search_path", false, "SET search_path TO a, b")],
        ),
        (
            "SET Search_Path = DEFAULT",
            Read,
            vec![set("search_path", false, "SET Search_Path = DEFAULT")],
        ),
        ("SET ROLE r", Read, vec![set_to("role", "r", "SET ROLE r")]),
        (
            "SET SESSION AUTHORIZATION u",
            Read,
            vec![set_to(
                "session_authorization",
                "u",
                "SET SESSION AUTHORIZATION u",
            )],
        ),
        (
            "SET TIME ZONE 'UTC'",
            Read,
            vec![set_to("timezone", "utc", "SET TIME ZONE 'UTC'")],
        ),
        (
            "SET work_mem FROM CURRENT",
            Read,
            vec![set("work_mem", false, "SET work_mem FROM CURRENT")],
        ),
        (
            "RESET work_mem",
            Read,
            vec![Effect::Reset {
                name: "work_mem".into(),
            }],
        ),
        (
            "RESET ROLE",
            Read,
            vec![Effect::Reset {
                name: "role".into(),
            }],
        ),
        (
            "RESET SESSION AUTHORIZATION",
            Read,
            vec![Effect::Reset {
                name: "session_authorization".into(),
            }],
        ),
        ("RESET ALL", Read, vec![Effect::ResetAll]),
        ("DISCARD ALL", Read, vec![Effect::DiscardAll]),
        ("DISCARD PLANS", Read, vec![]),
        (
            "PREPARE p AS SELECT 1",
            Read,
            vec![Effect::Prepare {
                name: "p".into(),
                sql: "PREPARE p AS SELECT 1".into(),
                read: true,
                functions: vec![],
                forbidden: false,
            }],
        ),
        (
            "PREPARE q (int) AS DELETE FROM t WHERE id = $1",
            Read,
            vec![Effect::Prepare {
                name: "q".into(),
                sql: "PREPARE q (int) AS DELETE FROM t WHERE id = $1".into(),
                read: false,
                functions: vec![],
                forbidden: true,
            }],
        ),
        (
            "PREPARE u AS SELECT f(1)",
            Read,
            vec![Effect::Prepare {
                name: "u".into(),
                sql: "PREPARE u AS SELECT f(1)".into(),
                read: true,
                functions: vec!["f".into()],
                forbidden: false,
            }],
        ),
        (
            "EXECUTE p",
            Read,
            vec![Effect::Execute {
                name: "p".into(),
                runs: true,
            }],
        ),
        (
            "EXECUTE p (1, 2)",
            Read,
            vec![Effect::Execute {
                name: "p".into(),
                runs: true,
            }],
        ),
        (
            "DEALLOCATE p",
            Read,
            vec![Effect::Deallocate {
                name: Some("p".into()),
            }],
        ),
        (
            "DEALLOCATE PREPARE p",
            Read,
            vec![Effect::Deallocate {
                name: Some("p".into()),
            }],
        ),
        (
            "DEALLOCATE ALL",
            Read,
            vec![Effect::Deallocate { name: None }],
        ),
        (
            "CREATE TEMP TABLE x (a int)",
            Write,
            vec![
                Effect::Pin(PinCause::TempObject),
                Effect::TempObject("x".into()),
            ],
        ),
        (
            "CREATE TEMPORARY TABLE x AS SELECT 1",
            Write,
            vec![
                Effect::Pin(PinCause::TempObject),
                Effect::TempObject("x".into()),
            ],
        ),
        (
            "CREATE TABLE pg_temp.x (a int)",
            Write,
            vec![
                Effect::Pin(PinCause::TempObject),
                Effect::TempObject("x".into()),
            ],
        ),
        (
            "CREATE TEMP VIEW v AS SELECT 1",
            Write,
            vec![
                Effect::Pin(PinCause::TempObject),
                Effect::TempObject("v".into()),
            ],
        ),
        (
            "CREATE TEMP SEQUENCE s",
            Write,
            vec![
                Effect::Pin(PinCause::TempObject),
                Effect::TempObject("s".into()),
            ],
        ),
        (
            "SELECT * INTO TEMP n FROM t",
            Write,
            vec![
                Effect::Pin(PinCause::TempObject),
                Effect::TempObject("n".into()),
            ],
        ),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            Write,
            vec![Effect::Pin(PinCause::TempObject)],
        ),
        ("CREATE TABLE x (a int)", Write, vec![]),
        (
            "LISTEN c",
            Write,
            vec![Effect::Pin(PinCause::Listen), Effect::Listen("c".into())],
        ),
        (
            "UNLISTEN c",
            Write,
            vec![Effect::Unlisten(Some("c".into()))],
        ),
        ("UNLISTEN *", Write, vec![Effect::Unlisten(None)]),
        ("CLOSE c", Read, vec![Effect::CloseCursor(Some("c".into()))]),
        ("CLOSE ALL", Read, vec![Effect::CloseCursor(None)]),
        ("DISCARD TEMP", Write, vec![Effect::DiscardTemp]),
        (
            "SELECT pg_advisory_unlock_all()",
            Write,
            vec![Effect::AdvisoryUnlockAll],
        ),
        (
            "CREATE TEMP TABLE d (a int) ON COMMIT DROP",
            Write,
            vec![Effect::TempObject("d".into())],
        ),
        (
            "EXPLAIN EXECUTE p(1)",
            Read,
            vec![Effect::Execute {
                name: "p".into(),
                runs: false,
            }],
        ),
        (
            "CREATE TABLE c AS EXECUTE p(1)",
            Write,
            vec![Effect::Execute {
                name: "p".into(),
                runs: true,
            }],
        ),
        (
            "DO $$BEGIN PERFORM set_config('a.b', '1', false); END$$",
            Write,
            vec![Effect::Pin(PinCause::HiddenSet)],
        ),
        ("DO $$BEGIN UPDATE t SET a = 1; END$$", Write, vec![]),
        (
            "SELECT pg_advisory_lock(1)",
            Write,
            vec![Effect::Pin(PinCause::AdvisoryLock)],
        ),
        (
            "SELECT pg_try_advisory_lock_shared(1)",
            Write,
            vec![Effect::Pin(PinCause::AdvisoryLock)],
        ),
        ("SELECT pg_advisory_xact_lock(1)", Write, vec![]),
        (
            "INSERT INTO t SELECT pg_advisory_lock(1)",
            Write,
            vec![Effect::Pin(PinCause::AdvisoryLock)],
        ),
        (
            "SELECT set_config('x.y', '1', false)",
            Write,
            vec![Effect::Pin(PinCause::Other)],
        ),
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            Read,
            vec![
                Effect::Pin(PinCause::HoldCursor),
                Effect::HoldCursor("c".into()),
            ],
        ),
        ("DECLARE c CURSOR FOR SELECT 1", Read, vec![]),
        (
            "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE",
            Write,
            vec![],
        ),
        (
            "LOAD 'auto_explain'",
            Write,
            vec![Effect::Pin(PinCause::Other)],
        ),
        (
            "BEGIN; SET LOCAL x.y = 1; COMMIT",
            Write,
            vec![
                begin(None, false),
                set("x.y", true, "SET LOCAL x.y = 1"),
                Effect::Commit { chain: false },
            ],
        ),
        (
            "BEGIN READ ONLY; SELECT 1; COMMIT",
            Read,
            vec![begin(Some(true), false), Effect::Commit { chain: false }],
        ),
    ]
}

#[test]
fn effects_in_statement_order() {
    let cases = cases();
    for (sql, access, effects) in &cases {
        let v = verdict(sql);
        assert_eq!(v.access, *access, "{sql}: {v:?}");
        assert_eq!(&v.effects, effects, "{sql}");
        assert!(!v.local_only, "{sql}");
    }
}

#[test]
fn pgsplit_settings_are_local() {
    let local = [
        (
            "SET pgsplit.route = 'replica'",
            Effect::Route(RouteMode::Replica),
        ),
        (
            "SET pgsplit.route TO 'primary'",
            Effect::Route(RouteMode::Primary),
        ),
        (
            "SET pgsplit.route TO replica",
            Effect::Route(RouteMode::Replica),
        ),
        ("set PGSPLIT.ROUTE = 'Auto'", Effect::Route(RouteMode::Auto)),
        ("RESET pgsplit.route", Effect::Route(RouteMode::Auto)),
        (
            "SET pgsplit.min_lsn = '0/16B3748'",
            Effect::MinLsn(Some("0/16B3748".into())),
        ),
        ("RESET pgsplit.min_lsn", Effect::MinLsn(None)),
    ];
    for (sql, effect) in local {
        let v = verdict(sql);
        assert!(v.local_only, "{sql}: {v:?}");
        assert_eq!(v.effects, vec![effect], "{sql}");
    }
    let v = verdict("SET pgsplit.route = 'replica'; SET pgsplit.min_lsn = '0/1'");
    assert!(v.local_only);
    assert_eq!(v.effects.len(), 2);
    // Mixed with a real statement, the message must go to a server.
    let v = verdict("SET pgsplit.route = 'replica'; SELECT 1");
    assert!(!v.local_only);
    assert_eq!(v.effects, vec![Effect::Route(RouteMode::Replica)]);
    let v = verdict("SET pgsplit.route = 'sideways'");
    assert!(!v.local_only);
    assert_eq!(
        (v.access, v.why.label()),
        (Access::Write, "pgsplit_invalid")
    );
}

#[test]
fn set_text_is_the_statement_alone() {
    let v = verdict("SELECT 1;  SET search_path = a ;SET LOCAL statement_timeout = 5");
    assert_eq!(
        v.effects,
        vec![
            set_to("search_path", "a", "SET search_path = a"),
            set("statement_timeout", true, "SET LOCAL statement_timeout = 5"),
        ]
    );
}

#[test]
fn comment_hints_come_from_the_lexer() {
    let hint = |sql| verdict(sql).hint;
    assert_eq!(
        hint("/* pgsplit:primary */ SELECT 1"),
        Some(RouteMode::Primary)
    );
    assert_eq!(
        hint("SELECT 1 /* pgsplit:replica */"),
        Some(RouteMode::Replica)
    );
    assert_eq!(
        hint("SELECT 1 -- pgsplit:replica"),
        Some(RouteMode::Replica)
    );
    assert_eq!(
        hint("/* pgsplit:replica */ SELECT 1 /* pgsplit:primary */"),
        Some(RouteMode::Primary)
    );
    assert_eq!(
        hint("/* outer /* pgsplit:primary */ still comment */ SELECT 1"),
        Some(RouteMode::Primary)
    );
    assert_eq!(hint("SELECT '/* pgsplit:primary */'"), None);
    assert_eq!(hint("SELECT $$ /* pgsplit:replica */ $$"), None);
    assert_eq!(hint("SELECT \"/* pgsplit:replica */\" FROM t"), None);
    assert_eq!(hint("SELECT 1"), None);
    // A hint does not change access.
    let v = verdict("/* pgsplit:replica */ DELETE FROM t");
    assert_eq!(
        (v.access, v.hint),
        (Access::Write, Some(RouteMode::Replica))
    );
}

#[test]
fn unknown_functions_are_handed_back() {
    let v = verdict("SELECT myfunc()");
    assert_eq!(v.access, Access::Read);
    assert_eq!(v.why.label(), "read");
    assert_eq!(v.functions, vec![Box::from("myfunc")]);

    let v = verdict("SELECT MySchema.F(1), myfunc(2), myfunc(3) FROM t WHERE g(a) ORDER BY h(b)");
    assert_eq!(
        v.functions,
        vec![
            Box::from("myschema.f"),
            "myfunc".into(),
            "g".into(),
            "h".into()
        ]
    );

    let v = verdict("SELECT \"MixedCase\"(), \"a.b\".c()");
    assert_eq!(
        v.functions,
        vec![Box::from("\"MixedCase\""), "\"a.b\".c".into()]
    );

    let v = verdict("WITH x AS (SELECT f1()) SELECT * FROM f2(), (SELECT f3()) s, x");
    let mut names = v.functions.clone();
    names.sort();
    assert_eq!(names, vec![Box::from("f1"), "f2".into(), "f3".into()]);

    let v = verdict("SELECT pg_catalog.unheard_of()");
    assert_eq!(v.functions, vec![Box::from("pg_catalog.unheard_of")]);

    let v = verdict("COPY (SELECT f()) TO STDOUT");
    assert_eq!(
        (v.access, v.functions.clone()),
        (Access::Read, vec![Box::from("f")])
    );

    // A write elsewhere in the message still makes it a write.
    let v = verdict("SELECT f(); DELETE FROM t");
    assert_eq!(v.access, Access::Write);
}

#[test]
fn sql_syntax_functions_are_settled() {
    // Grammar constructs that the parser turns into calls of pg_catalog
    // functions must not need a lookup.
    let sql = "SELECT extract(year FROM now()), substring('abc' FROM 1 FOR 2), \
               trim(both 'x' FROM 'xax'), position('a' IN 'abc'), \
               overlay('abc' PLACING 'x' FROM 1), now() AT TIME ZONE 'UTC', \
               'a' LIKE 'b' ESCAPE 'c', 'a' SIMILAR TO 'b', collation for ('a'), \
               normalize('a'), 'a' IS NORMALIZED, system_user, \
               (now(), now()) OVERLAPS (now(), now())";
    let v = verdict(sql);
    assert_eq!(
        (v.access, v.functions.clone()),
        (Access::Read, vec![]),
        "{v:?}"
    );
}

#[test]
fn overrides_settle_names_and_write_wins() {
    let read = vec![
        "myfunc".to_string(),
        "app.safe".to_string(),
        "dual".to_string(),
    ];
    let write = vec![
        "App.Danger".to_string(),
        "dual".to_string(),
        "count".to_string(),
        "nextval".to_string(),
    ];
    let c = Classifier::new(&read, &write, 0);
    let v = c.classify_uncached("SELECT myfunc(), app.safe()");
    assert_eq!((v.access, v.functions.len()), (Access::Read, 0), "{v:?}");
    for sql in [
        "SELECT app.danger()",
        "SELECT dual()",
        "SELECT count(*) FROM t",
        "SELECT nextval('s')",
    ] {
        let v = c.classify_uncached(sql);
        assert_eq!(
            (v.access, v.why.label()),
            (Access::Write, "function"),
            "{sql}"
        );
    }
    // The built-in write list cannot be overridden to read.
    let c = Classifier::new(&["nextval".to_string()], &[], 0);
    assert_eq!(
        c.classify_uncached("SELECT nextval('s')").access,
        Access::Write
    );
    // An overridden read goes through the fast path too.
    let c = Classifier::new(&["myfunc".to_string()], &[], 0);
    let v = c.classify_uncached("SELECT myfunc(1)");
    assert_eq!((v.access, v.functions.len()), (Access::Read, 0));
}

#[test]
fn empty_messages_are_reads() {
    for sql in ["", " ", ";", "-- nothing", "/* nothing */"] {
        let v = verdict(sql);
        assert_eq!(
            (v.access, v.why.label()),
            (Access::Read, "empty"),
            "{sql:?}"
        );
    }
}

#[test]
fn the_cache_returns_the_same_verdict_and_stays_bounded() {
    let c = Classifier::new(&[], &[], 32);
    let a = c.classify("SELECT 1");
    let b = c.classify("SELECT 1");
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(*a, c.classify_uncached("SELECT 1"));
    for i in 0..1000 {
        let v = c.classify(&format!("SELECT {i}"));
        assert_eq!(v.access, Access::Read);
    }
    let cached: usize = c.shards.iter().map(|s| s.lock().unwrap().len()).sum();
    assert!(cached <= 32, "{cached}");
    let uncached = Classifier::new(&[], &[], 0);
    assert_eq!(uncached.classify("DELETE FROM t").access, Access::Write);
}

#[test]
fn deep_expressions_are_writes_not_crashes() {
    // pg_query decodes with prost's recursion limit (100 messages, about 48
    // levels of expression): deeper trees fail to decode and go to the
    // primary. A cost, not a wrong read; this pins the behaviour down.
    let shallow = format!("SELECT myf(1){}", " + 1".repeat(40));
    assert_eq!(verdict(&shallow).access, Access::Read);
    let deep = format!("SELECT myf(1){}", " + 1".repeat(60));
    assert_eq!(
        (verdict(&deep).access, verdict(&deep).why.label()),
        (Access::Write, "unparsable")
    );
}

#[test]
fn long_texts_are_not_cached() {
    let c = Classifier::new(&[], &[], 32);
    let sql = format!("SELECT '{}'", "x".repeat(MAX_CACHED_LEN));
    assert_eq!(c.classify(&sql).access, Access::Read);
    let cached: usize = c.shards.iter().map(|s| s.lock().unwrap().len()).sum();
    assert_eq!(cached, 0);
}

#[test]
fn deep_nesting_neither_panics_nor_reads_unproven() {
    for depth in [10, 100, 1000, 5000, 20000] {
        let sql = format!("SELECT {}1{}", "myfunc(".repeat(depth), ")".repeat(depth));
        let v = verdict(&sql);
        assert!(
            v.access == Access::Write || v.functions == vec![Box::from("myfunc")],
            "{depth}: {v:?}"
        );
        let sql = format!(
            "SELECT {}nextval('s'){}",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        assert_eq!(verdict(&sql).access, Access::Write, "{depth}");
        let sql = format!("SELECT 1{}", " + 1".repeat(depth));
        let _ = verdict(&sql);
        let sql = format!("SELECT 1{}", " UNION SELECT nextval('s')".repeat(depth));
        assert_eq!(verdict(&sql).access, Access::Write, "{depth}");
    }
}

#[test]
fn one_classifier_serves_many_threads() {
    let c = Arc::new(Classifier::new(&[], &[], 64));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                for i in 0..500 {
                    assert_eq!(
                        c.classify(&format!("SELECT {}", i % 50)).access,
                        Access::Read
                    );
                    assert_eq!(
                        c.classify(&format!("DELETE FROM t{}", (i + t) % 50)).access,
                        Access::Write
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn classifier_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Classifier>();
    assert_send_sync::<Arc<Verdict>>();
}

#[test]
fn pin_cause_labels_are_distinct() {
    let all = PinCause::ALL;
    let labels: std::collections::HashSet<_> = all.iter().map(|c| c.label()).collect();
    assert_eq!(labels.len(), all.len());
}

mod robustness {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn random_text_never_panics(sql in "\\PC{0,80}") {
            let _ = verdict(&sql);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let sql = String::from_utf8_lossy(&bytes);
            let _ = verdict(&sql);
        }

        #[test]
        fn sql_shaped_text_never_panics(parts in proptest::collection::vec(
            prop::sample::select(vec![
                "SELECT", "FROM", "t", "(", ")", ",", ";", "'x'", "$$", "/*", "*/", "--", "\n",
                "E'\\\\'", "WITH", "DELETE", "FOR", "UPDATE", "INTO", "nextval", "f", "1", "::", ".",
                "SET", "pgsplit.route", "=", "BEGIN", "\"", "\\",
            ]),
            0..24,
        )) {
            let sql = parts.join(" ");
            let v = verdict(&sql);
            // Whatever the lexer fast path calls a read, the full parse must
            // too (or reject the text, so that nothing in it can run).
            if v.access == Access::Read {
                let lists = functions::FunctionLists::new(&[], &[]);
                let full = statement::classify_parsed(&sql, &lists);
                let harmless = full.access == Access::Read || full.why.label() == "unparsable";
                prop_assert!(harmless, "{}: {:?}", sql, full);
            }
        }
    }
}
