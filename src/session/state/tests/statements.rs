//! SQL PREPARE/DEALLOCATE bookkeeping, DISCARD ALL, and the SQL a batch
//! runs through its Queries and Binds.

use super::*;
use crate::protocol::fixtures::*;

#[test]
fn sql_prepare_is_recorded_when_sent() {
    let mut s = Session::new();
    s.run(ok("PREPARE r AS SELECT 1"));
    s.run(fails(
        "PREPARE w (int) AS DELETE FROM t WHERE id = $1; SELECT 1/0",
    ));
    let r = &s.state.statements.sql["r"];
    assert_eq!(&*r.text, "PREPARE r AS SELECT 1");
    assert!(r.read && !r.forbidden);
    let w = &s.state.statements.sql["w"];
    assert!(!w.read && w.forbidden);
    let other = Session::after(&[ok("PREPARE r AS SELECT 1")]);
    assert_eq!(r.hash, other.state.statements.sql["r"].hash, "same text");
    assert_ne!(r.hash, w.hash);
    s.run(ok("EXECUTE r"));
    assert_eq!(s.state.statements.sql.len(), 2, "EXECUTE changes nothing");
}

#[test]
fn a_prepared_statement_outlives_a_rolled_back_transaction() {
    let s = Session::after(&[open("BEGIN"), open("PREPARE p AS SELECT 1"), ok("ROLLBACK")]);
    assert!(s.state.statements.sql.contains_key("p"));
}

#[test]
fn a_prepared_statement_lists_the_functions_it_calls() {
    let s = Session::after(&[ok("PREPARE u AS SELECT f(1)")]);
    assert_eq!(s.state.statements.sql["u"].functions, [Box::from("f")]);
}

/// A session with SQL statements `p` and `q` and protocol-level ones `p`
/// and `s`.
fn with_statements() -> Session {
    let registry = Registry::default();
    let mut s = Session::after(&[ok("PREPARE p AS SELECT 1"), ok("PREPARE q AS SELECT 2")]);
    for name in ["p", "s"] {
        let verdict = s.verdict("SELECT 3");
        let key = registry.intern(b"SELECT 3\0\0\0");
        s.state
            .statements
            .named
            .insert(name.as_bytes().into(), Arc::new(Prepared { key, verdict }));
    }
    s.state.statements.unnamed = Some(Unnamed {
        seq: 1,
        parse: Box::from(&b"P"[..]),
        verdict: s.verdict("SELECT 4"),
    });
    s
}

#[test]
fn deallocate_forgets_the_statement_of_that_name_at_both_levels() {
    let mut s = with_statements();
    s.run(ok("DEALLOCATE p"));
    let mut sql: Vec<_> = s.state.statements.sql.keys().map(|k| &**k).collect();
    sql.sort();
    assert_eq!(sql, ["q"]);
    assert!(!s.state.statements.named.contains_key(&b"p"[..]));
    assert!(s.state.statements.named.contains_key(&b"s"[..]));
}

#[test]
fn deallocate_all_forgets_every_named_statement_but_not_the_unnamed() {
    let mut s = with_statements();
    s.run(ok("DEALLOCATE ALL"));
    assert!(s.state.statements.sql.is_empty());
    assert!(s.state.statements.named.is_empty());
    assert!(s.state.statements.unnamed.is_some());
}

#[test]
fn deallocate_takes_effect_when_sent() {
    let mut s = with_statements();
    s.run(fails("DEALLOCATE q; SELECT 1/0"));
    assert!(!s.state.statements.sql.contains_key("q"));
}

#[test]
fn discard_all_forgets_the_whole_session_once_it_ran() {
    let mut s = with_statements();
    s.run(ok("SET x.a = 1"));
    s.run(ok("SET default_transaction_isolation = 'serializable'"));
    s.run(ok("LISTEN a"));
    s.run(open("BEGIN"));
    s.run(open("SET x.b = 1"));
    s.run(ok("ROLLBACK"));
    s.run(fails("DISCARD ALL; SELECT 1/0"));
    assert!(s.state.pins.is_pinned(), "a failed DISCARD ALL did nothing");
    assert!(!s.state.settings.is_empty());
    s.run(ok("DISCARD ALL"));
    assert!(s.state.settings.is_empty());
    assert_eq!(s.state.settings.fingerprint(), 0);
    assert!(!s.state.isolation.serializable());
    assert!(!s.state.pins.is_pinned());
    assert!(s.state.pins.temp_names.is_empty());
    assert!(s.state.statements.sql.is_empty());
    assert!(s.state.statements.named.is_empty());
    assert!(s.state.statements.unnamed.is_none());
}

impl Session {
    /// The SQL texts `executed` says the batch runs.
    fn executed(&self, msgs: &[Vec<u8>]) -> Vec<String> {
        let bytes = msgs.concat();
        let mut batch = Batch::default();
        let texts = std::cell::RefCell::new(Vec::new());
        let framed = batch
            .frame(&bytes, 1 << 20, 1 << 20, |sql| {
                let sql = std::str::from_utf8(sql).unwrap();
                let verdict = self.verdict(sql);
                texts
                    .borrow_mut()
                    .push((Arc::clone(&verdict), sql.to_owned()));
                verdict
            })
            .expect("valid messages");
        assert!(framed && batch.len == bytes.len(), "one whole batch");
        let mut known = texts.into_inner();
        for (name, p) in &self.state.statements.named {
            known.push((Arc::clone(&p.verdict), String::from_utf8_lossy(name).into()));
        }
        if let Some(u) = &self.state.statements.unnamed {
            known.push((Arc::clone(&u.verdict), "unnamed".into()));
        }
        self.state
            .executed(&batch, &bytes)
            .iter()
            .map(|v| {
                known
                    .iter()
                    .find(|(k, _)| Arc::ptr_eq(k, v))
                    .map_or_else(|| "?".into(), |(_, text)| text.clone())
            })
            .collect()
    }

    /// A protocol-level statement `name` (its verdict is known by `name`).
    fn named(mut self, name: &str, sql: &str) -> Session {
        let key = Registry::default().intern(sql.as_bytes());
        let verdict = self.verdict(sql);
        self.state
            .statements
            .named
            .insert(name.as_bytes().into(), Arc::new(Prepared { key, verdict }));
        self
    }

    /// An unnamed statement parsed in an earlier batch (known as
    /// "unnamed").
    fn unnamed(mut self, sql: &str) -> Session {
        let verdict = self.verdict(sql);
        self.state.statements.unnamed = Some(Unnamed {
            seq: 1,
            parse: parse("", sql).into_boxed_slice(),
            verdict,
        });
        self
    }
}

/// A name, a session, a batch's messages, and what the batch runs.
type ExecutedCase = (&'static str, Session, Vec<Vec<u8>>, Vec<&'static str>);

#[test]
fn executed_lists_the_sql_a_batch_runs() {
    let cases: Vec<ExecutedCase> = vec![
        (
            "a simple query",
            Session::new(),
            vec![q("SELECT 1")],
            vec!["SELECT 1"],
        ),
        (
            "a Parse alone runs nothing",
            Session::new(),
            vec![parse("s1", "SELECT 1"), describe("s1"), sync()],
            vec![],
        ),
        (
            "the unnamed statement parsed and bound",
            Session::new(),
            vec![parse("", "SELECT 1"), bind(""), execute(), sync()],
            vec!["SELECT 1"],
        ),
        (
            "the unnamed statement of an earlier batch",
            Session::new().unnamed("SELECT 2"),
            vec![bind(""), execute(), sync()],
            vec!["unnamed"],
        ),
        (
            "a new unnamed statement replaces the earlier one",
            Session::new().unnamed("SELECT 2"),
            vec![parse("", "SELECT 1"), bind(""), execute(), sync()],
            vec!["SELECT 1"],
        ),
        (
            "a named statement",
            Session::new().named("s1", "SELECT 3"),
            vec![bind("s1"), execute(), sync()],
            vec!["s1"],
        ),
        (
            "a named statement bound twice runs twice",
            Session::new().named("s1", "SELECT 3"),
            vec![bind("s1"), execute(), bind("s1"), execute(), sync()],
            vec!["s1", "s1"],
        ),
        (
            "an unknown statement runs nothing known",
            Session::new(),
            vec![bind("nope"), execute(), sync()],
            vec![],
        ),
        (
            "no unnamed statement",
            Session::new(),
            vec![bind(""), execute(), sync()],
            vec![],
        ),
        (
            "a mix, in order",
            Session::new().named("s1", "SELECT 3").unnamed("SELECT 2"),
            vec![
                bind(""),
                execute(),
                bind("s1"),
                execute(),
                parse("", "SELECT 1"),
                bind(""),
                execute(),
                sync(),
            ],
            vec!["unnamed", "s1", "SELECT 1"],
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, s, msgs, want) in cases {
        let got = s.executed(&msgs);
        if got != want {
            failures.push(format!("{name}: want {want:?}, got {got:?}"));
        }
    }
    check(failures, n);
}

#[test]
fn a_bound_statement_applies_its_effects() {
    let mut s = Session::new().named("s1", "LISTEN a");
    let bytes = [bind("s1"), execute(), sync()].concat();
    let mut batch = Batch::default();
    batch
        .frame(&bytes, 1 << 20, 1 << 20, |sql| {
            s.verdict(std::str::from_utf8(sql).unwrap())
        })
        .expect("valid messages");
    let executed = s.state.executed(&batch, &bytes);
    let mut staged = Staged::default();
    let sent = s.state.send(&executed, &mut staged);
    assert_eq!(sent.new_pins, [PinCause::Listen]);
}
