//! SQL PREPARE/EXECUTE/DEALLOCATE: the simple queries pgsplit puts first
//! so the connection holds what the session's query needs, what the
//! connection records, and statements that wipe the server's.

use super::*;

#[test]
fn sql_execute_prepares_the_session_s_statement_where_it_is_missing() {
    let world = World::new();
    let mut c = client(1);
    world.send(
        &mut c,
        &mut ServerStatements::default(),
        &[q("PREPARE p AS SELECT 1")],
    );
    let mut conn = ServerStatements::default();
    let sent = world.send(&mut c, &mut conn, &[q("EXECUTE p")]);
    assert_eq!(sent.wire, ["Q PREPARE p AS SELECT 1", "Q EXECUTE p"]);
    assert_eq!(sent.heard, "CZ", "pgsplit's own query is not heard");
    assert_eq!(
        sent.events,
        [Event::OwnReady { failed: false }, Event::ClientReady(b'I')]
    );
    let again = world.send(&mut c, &mut conn, &[q("EXECUTE p")]);
    assert_eq!(again.wire, ["Q EXECUTE p"], "held now");
}

#[test]
fn sql_execute_of_a_statement_held_with_another_text_replaces_it() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    let mut one = client(1);
    world.send(&mut one, &mut conn, &[q("PREPARE p AS SELECT 1")]);
    world.send(&mut one, &mut conn, &[q("EXECUTE p")]);
    let mut two = client(2);
    world.send(
        &mut two,
        &mut ServerStatements::default(),
        &[q("PREPARE p AS SELECT 2")],
    );
    let sent = world.send(&mut two, &mut conn, &[q("EXECUTE p")]);
    assert_eq!(
        sent.wire,
        [
            "Q DEALLOCATE \"p\"",
            "Q PREPARE p AS SELECT 2",
            "Q EXECUTE p"
        ]
    );
    assert_eq!(sent.heard, "CZ");
}

#[test]
fn another_session_s_sql_statement_is_deallocated_before_an_execute_of_its_name() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    world.send(&mut client(1), &mut conn, &[q("PREPARE p AS SELECT 1")]);
    let sent = world.send(&mut client(2), &mut conn, &[q("EXECUTE p")]);
    assert_eq!(sent.wire, ["Q DEALLOCATE \"p\"", "Q EXECUTE p"]);
    assert!(!conn.sql.contains_key("p"));
}

#[test]
fn a_prepare_finds_its_name_free() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    world.send(
        &mut client(1),
        &mut conn,
        &[q("PREPARE \"P q\" AS SELECT 1")],
    );
    let sent = world.send(
        &mut client(2),
        &mut conn,
        &[q("PREPARE \"P q\" AS SELECT 2")],
    );
    assert_eq!(
        sent.wire,
        ["Q DEALLOCATE \"P q\"", "Q PREPARE \"P q\" AS SELECT 2"],
        "quoted as an identifier"
    );
}

#[test]
fn a_prepare_and_execute_in_one_query_need_nothing_first() {
    let world = World::new();
    let sent = world.send(
        &mut client(1),
        &mut ServerStatements::default(),
        &[q("PREPARE p AS SELECT 1; EXECUTE p")],
    );
    assert_eq!(sent.wire, ["Q PREPARE p AS SELECT 1; EXECUTE p"]);
}

#[test]
fn sql_prefixes_wait_for_a_request_boundary() {
    let world = World::new();
    let mut c = client(1);
    world.send(
        &mut c,
        &mut ServerStatements::default(),
        &[q("PREPARE p AS SELECT 1")],
    );
    let mid_batch = World {
        at_boundary: false,
        ..World::new()
    };
    let sent = mid_batch.send(&mut c, &mut ServerStatements::default(), &[q("EXECUTE p")]);
    assert_eq!(sent.wire, ["Q EXECUTE p"]);
}

#[test]
fn a_bind_cannot_reach_another_session_s_sql_statement() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    world.send(
        &mut client(1),
        &mut conn,
        &[q("PREPARE p AS DELETE FROM t")],
    );
    let sent = world.send(&mut client(2), &mut conn, &rebind("p"));
    assert_eq!(sent.wire, ["B pgsplit_missing", "E", "S"]);
    let unknown = world.send(&mut client(2), &mut conn, &rebind("q"));
    assert_eq!(
        unknown.wire,
        ["B q", "E", "S"],
        "the server says it is unknown"
    );
}

/// SQL and protocol-level prepared statements share one namespace: a
/// client may Bind the statement it PREPAREd in SQL (checked on
/// PostgreSQL 15). pgsplit renames it to `pgsplit_missing` as if it were
/// another session's.
#[test]
fn a_bind_reaches_the_session_s_own_sql_statement() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(&mut c, &mut conn, &[q("PREPARE p AS SELECT 1")]);
    world.send(&mut c, &mut conn, &[q("EXECUTE p")]);
    let sent = world.send(&mut c, &mut conn, &rebind("p"));
    assert_eq!(sent.wire, ["B p", "E", "S"]);
}

/// A connection records the text a PREPARE leaves on it by the session's
/// statement of that name, but `forward` runs before the session records
/// the PREPARE (`executed` needs the statements `forward` registers): so
/// the connection gets `Unknown` for a new name, and the first EXECUTE on
/// the very connection that prepared it deallocates and prepares it again.
#[test]
fn an_execute_after_its_prepare_on_the_same_connection_needs_nothing_first() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(&mut c, &mut conn, &[q("PREPARE p AS SELECT 1")]);
    let sent = world.send(&mut c, &mut conn, &[q("EXECUTE p")]);
    assert_eq!(sent.wire, ["Q EXECUTE p"]);
}

/// `DEALLOCATE p; PREPARE p AS …` in one query redefines `p` on a server of
/// the client's own. pgsplit puts a DEALLOCATE of its own first (for the
/// PREPARE to find its name free), so the client's DEALLOCATE fails with
/// 26000 and the whole query with it. (Checked on PostgreSQL 15: the
/// query runs alone; with a DEALLOCATE before it, it fails.)
#[test]
fn a_redefinition_in_one_query_needs_nothing_first() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(&mut c, &mut conn, &[q("PREPARE p AS SELECT 1")]);
    world.send(&mut c, &mut conn, &[q("EXECUTE p")]);
    let sent = world.send(
        &mut c,
        &mut conn,
        &[q("DEALLOCATE p; PREPARE p AS SELECT 2")],
    );
    assert_eq!(sent.wire, ["Q DEALLOCATE p; PREPARE p AS SELECT 2"]);
}

/// The same query on a connection holding `p` records the *old* text's hash
/// for `p` (the session still has the old statement when `forward` looks),
/// though the server holds the new statement (or, failing as above, none):
/// another session whose `p` is the old text then EXECUTEs with no PREPARE
/// first, and runs the new statement (or fails).
#[test]
fn a_redefined_statement_is_not_mistaken_for_the_old_one() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    let mut one = client(1);
    world.send(&mut one, &mut conn, &[q("PREPARE p AS SELECT 1")]);
    world.send(&mut one, &mut conn, &[q("EXECUTE p")]);
    let old = one.session.statements.sql["p"].hash;
    let mut two = client(2);
    world.send(
        &mut two,
        &mut ServerStatements::default(),
        &[q("PREPARE p AS SELECT 1")],
    );
    world.send(
        &mut one,
        &mut conn,
        &[q("DEALLOCATE p; PREPARE p AS SELECT 2")],
    );
    assert_ne!(conn.sql.get("p"), Some(&SqlName::Holds(old)));
    let sent = world.send(&mut two, &mut conn, &[q("EXECUTE p")]);
    assert_ne!(sent.wire, ["Q EXECUTE p"], "would run SELECT 2");
}

#[test]
fn wipes_statements_is_deallocate_all_or_discard_all() {
    let world = World::new();
    let cases = [
        ("DEALLOCATE ALL", true),
        ("DISCARD ALL", true),
        ("DEALLOCATE p", false),
        ("DISCARD TEMP", false),
        ("RESET ALL", false),
        ("SELECT 1", false),
    ];
    let wrong: Vec<_> = cases
        .iter()
        .filter(|(sql, want)| wipes_statements(&world.classifier.classify_uncached(sql)) != *want)
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}");
}

#[test]
fn a_statement_that_wipes_the_server_clears_what_the_connection_holds() {
    let world = World::new();
    let wipes: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("a simple DISCARD ALL", vec![q("DISCARD ALL")]),
        (
            "a simple DEALLOCATE ALL",
            vec![q("DEALLOCATE ALL; SELECT 1")],
        ),
        (
            "an unnamed DEALLOCATE ALL",
            vec![parse("", "DEALLOCATE ALL"), bind(""), execute(), sync()],
        ),
        (
            "a named DISCARD ALL",
            vec![parse("d", "DISCARD ALL"), bind("d"), execute(), sync()],
        ),
    ];
    let n = wipes.len();
    let mut failures = Vec::new();
    for (name, msgs) in wipes {
        let mut c = client(1);
        let mut conn = ServerStatements::default();
        world.send(&mut c, &mut conn, &run_named("s", "SELECT 1"));
        world.send(&mut c, &mut conn, &[q("PREPARE p AS SELECT 1")]);
        world.send(
            &mut c,
            &mut conn,
            &[parse("", "SELECT 1"), describe(""), sync()],
        );
        world.send(&mut c, &mut conn, &msgs);
        if !conn.is_empty() || !conn.sql.is_empty() || conn.unnamed.is_some() {
            failures.push(format!("{name}: {conn:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Statements parsed after a DEALLOCATE ALL run through a Bind, in the same
/// batch, are on the server; the connection forgets them with the rest at
/// the end of the batch, so the next Parse of one is sent again and fails
/// with 42P05 (prepared statement already exists).
#[test]
fn a_statement_parsed_after_a_wipe_in_the_same_batch_is_held() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(
        &mut c,
        &mut conn,
        &[
            parse("", "DEALLOCATE ALL"),
            bind(""),
            execute(),
            parse("s", "SELECT 1"),
            bind("s"),
            execute(),
            sync(),
        ],
    );
    assert!(conn.touch(world.key("SELECT 1").id));
}
