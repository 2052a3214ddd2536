//! The unnamed statement: parsed again on a connection that lacks the
//! session's, closed where another session's would run, replaced by a
//! Query.

use super::*;

#[test]
fn close_of_the_unnamed_statement_goes_to_the_server() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(&mut c, &mut conn, &[parse("", "SELECT 1"), sync()]);
    let sent = world.send(&mut c, &mut conn, &[close(""), sync()]);
    assert_eq!(sent.wire, ["C S \"\"", "S"]);
    assert_eq!(sent.heard, sent.own_server);
    assert!(c.session.statements.unnamed.is_none());
    assert_eq!(conn.unnamed, None);
}

#[test]
fn the_unnamed_statement_is_parsed_again_on_a_new_connection() {
    let world = World::new();
    let mut c = client(1);
    let mut first = ServerStatements::default();
    let parsed = world.send(
        &mut c,
        &mut first,
        &[parse("", "SELECT 1"), describe(""), sync()],
    );
    assert!(parsed.copied);
    assert!(
        c.session.statements.unnamed.is_some(),
        "kept: not bound yet"
    );
    let mut second = ServerStatements::default();
    let sent = world.send(&mut c, &mut second, &rebind(""));
    assert_eq!(sent.wire, ["P \"\": SELECT 1", "B \"\"", "E", "S"]);
    assert_eq!(sent.heard, "2CZ");
    assert_eq!(sent.heard, sent.own_server);
    assert_eq!(second.unnamed, first.unnamed);
}

#[test]
fn the_unnamed_statement_is_not_parsed_again_where_it_is() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(
        &mut c,
        &mut conn,
        &[parse("", "SELECT 1"), describe(""), sync()],
    );
    let sent = world.send(&mut c, &mut conn, &rebind(""));
    assert_eq!(sent.wire, ["B \"\"", "E", "S"]);
}

#[test]
fn the_newest_unnamed_statement_replaces_an_older_one_of_the_session() {
    let world = World::new();
    let mut c = client(1);
    let mut first = ServerStatements::default();
    let mut second = ServerStatements::default();
    let parsed = |sql| vec![parse("", sql), describe(""), sync()];
    world.send(&mut c, &mut first, &parsed("SELECT 1"));
    world.send(&mut c, &mut second, &parsed("SELECT 2"));
    let sent = world.send(&mut c, &mut first, &rebind(""));
    assert_eq!(sent.wire, ["P \"\": SELECT 2", "B \"\"", "E", "S"]);
    assert_eq!(first.unnamed, Some((1, 2)));
}

#[test]
fn a_query_replaces_the_unnamed_statement() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(
        &mut c,
        &mut conn,
        &[parse("", "SELECT 1"), describe(""), sync()],
    );
    world.send(&mut c, &mut conn, &[q("SELECT 2")]);
    assert_eq!(conn.unnamed, None);
    let sent = world.send(&mut c, &mut conn, &rebind(""));
    assert_eq!(sent.wire, ["P \"\": SELECT 1", "B \"\"", "E", "S"]);
}

#[test]
fn another_session_s_unnamed_statement_is_closed_before_a_bind_without_parse() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    world.send(
        &mut client(1),
        &mut conn,
        &[parse("", "DELETE FROM t"), describe(""), sync()],
    );
    let sent = world.send(&mut client(2), &mut conn, &rebind(""));
    assert_eq!(sent.wire, ["C S \"\"", "B \"\"", "E", "S"]);
    assert_eq!(conn.unnamed, None);
}

/// A session's unnamed statement is kept only when a later batch may bind
/// it; one bound where it was parsed is forgotten. `unnamed_for` then
/// trusts any unnamed statement the session left on a connection, even one
/// an older Parse of the same session left there, which the server runs in
/// place of the newest. (Checked on PostgreSQL 15: a Bind of the unnamed
/// statement in a later batch runs the latest one parsed.)
#[test]
fn a_bind_without_parse_never_runs_an_older_unnamed_statement() {
    let world = World::new();
    let mut c = client(1);
    let mut first = ServerStatements::default();
    let mut second = ServerStatements::default();
    world.send(
        &mut c,
        &mut first,
        &[parse("", "SELECT 1"), bind(""), execute(), sync()],
    );
    world.send(
        &mut c,
        &mut second,
        &[parse("", "SELECT 2"), bind(""), execute(), sync()],
    );
    let sent = world.send(&mut c, &mut first, &rebind(""));
    assert_ne!(
        sent.wire,
        ["B \"\"", "E", "S"],
        "the server would run SELECT 1, parsed two Parses ago"
    );
}
