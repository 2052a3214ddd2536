//! Named protocol-level statements: shared server names, prepared at most
//! once per connection and by pgsplit where the session's statement is
//! missing, failures, Close answered by a stand-in, and the LRU bound.

use super::*;

#[test]
fn a_named_statement_goes_under_its_shared_name() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    let sent = world.send(
        &mut c,
        &mut conn,
        &[
            parse("s1", "SELECT 1"),
            describe("s1"),
            bind("s1"),
            execute(),
            sync(),
        ],
    );
    let name = world.name("SELECT 1");
    assert_eq!(name, "pgsplit_1");
    assert_eq!(
        sent.wire,
        [
            format!("P {name}: SELECT 1"),
            format!("D S {name}"),
            format!("B {name}"),
            "E".into(),
            "S".into(),
        ]
    );
    assert_eq!(sent.heard, sent.own_server);
    assert_eq!(sent.events, [Event::ClientReady(b'I')]);
    assert_eq!(
        sent.done,
        Forwarded {
            prepared: 1,
            ..Forwarded::default()
        }
    );
    assert!(sent.followed, "a Parse that may fail is followed");
    assert_eq!(conn.len(), 1);
    let prepared = &c.session.statements.named[&b"s1"[..]];
    assert_eq!(&*prepared.key.body, b"SELECT 1\0\0\0");
}

#[test]
fn a_statement_is_prepared_once_per_connection() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    let mut first = client(1);
    world.send(&mut first, &mut conn, &run_named("s1", "SELECT 1"));
    let cases = [
        ("the same session again", &mut first, "s1"),
        ("another session, another name", &mut client(2), "other"),
    ];
    for (name, c, statement) in cases {
        let sent = world.send(c, &mut conn, &run_named(statement, "SELECT 1"));
        assert_eq!(
            sent.wire,
            [
                format!("B {}", world.name("SELECT 1")),
                "E".into(),
                "S".into()
            ],
            "{name}"
        );
        assert_eq!(sent.heard, "12CZ", "{name}: a stand-in ParseComplete");
        assert_eq!(sent.heard, sent.own_server, "{name}");
        assert_eq!(sent.done.reused, 1, "{name}");
    }
    assert_eq!(conn.len(), 1);
}

#[test]
fn two_sessions_may_give_one_name_to_different_statements() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    let one = world.send(&mut client(1), &mut conn, &run_named("s", "SELECT 1"));
    let two = world.send(&mut client(2), &mut conn, &run_named("s", "SELECT 2"));
    assert_eq!(
        one.wire[0],
        format!("P {}: SELECT 1", world.name("SELECT 1"))
    );
    assert_eq!(
        two.wire[0],
        format!("P {}: SELECT 2", world.name("SELECT 2"))
    );
    assert_ne!(world.name("SELECT 1"), world.name("SELECT 2"));
    assert_eq!(conn.len(), 2);
}

#[test]
fn a_statement_parsed_on_one_connection_is_prepared_on_another_by_pgsplit() {
    let world = World::new();
    let mut c = client(1);
    let mut first = ServerStatements::default();
    let mut second = ServerStatements::default();
    world.send(&mut c, &mut first, &run_named("s1", "SELECT 1"));
    let name = world.name("SELECT 1");
    let sent = world.send(&mut c, &mut second, &rebind("s1"));
    assert_eq!(
        sent.wire,
        [
            format!("P {name}: SELECT 1"),
            format!("B {name}"),
            "E".into(),
            "S".into()
        ]
    );
    assert_eq!(sent.heard, "2CZ", "pgsplit's ParseComplete is its own");
    assert_eq!(sent.heard, sent.own_server);
    assert_eq!(sent.done.prepared, 1);
    let again = world.send(&mut c, &mut second, &rebind("s1"));
    assert_eq!(again.wire, [format!("B {name}"), "E".into(), "S".into()]);
    assert_eq!(again.done, Forwarded::default());
}

#[test]
fn a_describe_of_a_statement_parsed_elsewhere_prepares_it_first() {
    let world = World::new();
    let mut c = client(1);
    world.send(
        &mut c,
        &mut ServerStatements::default(),
        &run_named("s1", "SELECT 1"),
    );
    let name = world.name("SELECT 1");
    let sent = world.send(
        &mut c,
        &mut ServerStatements::default(),
        &[describe("s1"), sync()],
    );
    assert_eq!(
        sent.wire,
        [
            format!("P {name}: SELECT 1"),
            format!("D S {name}"),
            "S".into()
        ]
    );
    assert_eq!(sent.heard, sent.own_server);
}

#[test]
fn a_statement_pgsplit_failed_to_prepare_is_not_held() {
    let world = World::new();
    let mut c = client(1);
    world.send(
        &mut c,
        &mut ServerStatements::default(),
        &run_named("s1", "SELECT 1"),
    );
    let mut conn = ServerStatements::default();
    let fails = |m: &str| m.starts_with('P');
    let sent = world.send_failing(&mut c, &mut conn, &rebind("s1"), &fails);
    assert_eq!(sent.heard, "EZ", "the client hears the error");
    assert_eq!(sent.events, [Event::OwnError, Event::ClientReady(b'I')]);
    assert!(conn.is_empty(), "its Parse failed");
    let again = world.send(&mut c, &mut conn, &rebind("s1"));
    assert_eq!(again.done.prepared, 1, "prepared again next time");
}

#[test]
fn a_client_parse_that_fails_leaves_the_statement_unheld() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    let fails = |m: &str| m.starts_with('P');
    let sent = world.send_failing(
        &mut client(1),
        &mut conn,
        &run_named("s1", "SELECT nope"),
        &fails,
    );
    assert_eq!(sent.heard, "EZ");
    assert_eq!(sent.heard, sent.own_server);
    assert!(conn.is_empty());
}

#[test]
fn close_of_a_named_statement_is_answered_by_a_stand_in() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(&mut c, &mut conn, &run_named("s1", "SELECT 1"));
    let sent = world.send(&mut c, &mut conn, &[close("s1"), sync()]);
    assert_eq!(sent.wire, ["S"]);
    assert_eq!(sent.heard, "3Z");
    assert_eq!(sent.heard, sent.own_server);
    assert!(c.session.statements.named.is_empty());
    assert_eq!(conn.len(), 1, "the shared statement stays for others");
    let other = world.send(&mut client(2), &mut conn, &run_named("t", "SELECT 1"));
    assert_eq!(other.done.reused, 1);
}

#[test]
fn close_of_a_statement_never_parsed_is_answered_too() {
    let world = World::new();
    let sent = world.send(
        &mut client(1),
        &mut ServerStatements::default(),
        &[close("nope"), sync()],
    );
    assert_eq!(sent.wire, ["S"]);
    assert_eq!(sent.heard, sent.own_server);
}

#[test]
fn the_bound_evicts_and_closes_the_least_recently_used() {
    let world = World {
        max_statements: 2,
        ..World::new()
    };
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(&mut c, &mut conn, &run_named("a", "SELECT 1"));
    world.send(&mut c, &mut conn, &run_named("b", "SELECT 2"));
    world.send(&mut c, &mut conn, &rebind("a"));
    let sent = world.send(&mut c, &mut conn, &run_named("c", "SELECT 3"));
    let evicted = world.name("SELECT 2");
    let added = world.name("SELECT 3");
    assert_eq!(
        sent.wire,
        [
            format!("C S {evicted}"),
            format!("P {added}: SELECT 3"),
            format!("B {added}"),
            "E".into(),
            "S".into(),
        ]
    );
    assert_eq!(sent.heard, sent.own_server, "the Close is pgsplit's own");
    assert_eq!(sent.done.evicted, 1);
    assert_eq!(conn.len(), 2);
    assert!(!conn.touch(world.key("SELECT 2").id));
    assert!(conn.touch(world.key("SELECT 1").id));
}

#[test]
fn statements_parsed_in_a_batch_evict_as_it_goes() {
    let world = World {
        max_statements: 2,
        ..World::new()
    };
    let mut conn = ServerStatements::default();
    world.send(&mut client(2), &mut conn, &run_named("x", "SELECT 8"));
    world.send(&mut client(2), &mut conn, &run_named("y", "SELECT 9"));
    let (x, y) = (world.name("SELECT 8"), world.name("SELECT 9"));
    let mut c = client(1);
    let sent = world.send(
        &mut c,
        &mut conn,
        &[
            parse("a", "SELECT 1"),
            bind("a"),
            execute(),
            parse("b", "SELECT 2"),
            bind("b"),
            execute(),
            sync(),
        ],
    );
    let (a, b) = (world.name("SELECT 1"), world.name("SELECT 2"));
    assert_eq!(
        sent.wire,
        [
            format!("C S {x}"),
            format!("P {a}: SELECT 1"),
            format!("B {a}"),
            "E".into(),
            format!("C S {y}"),
            format!("P {b}: SELECT 2"),
            format!("B {b}"),
            "E".into(),
            "S".into(),
        ]
    );
    assert_eq!(sent.heard, sent.own_server);
    assert_eq!(sent.done.evicted, 2);
}

#[test]
fn an_eviction_for_a_statement_parsed_elsewhere_goes_before_the_batch() {
    let world = World {
        max_statements: 1,
        ..World::new()
    };
    let mut c = client(1);
    world.send(
        &mut c,
        &mut ServerStatements::default(),
        &run_named("a", "SELECT 1"),
    );
    let mut conn = ServerStatements::default();
    world.send(&mut client(2), &mut conn, &run_named("z", "SELECT 9"));
    let victim = world.name("SELECT 9");
    let sent = world.send(&mut c, &mut conn, &rebind("a"));
    let name = world.name("SELECT 1");
    assert_eq!(
        sent.wire,
        [
            format!("C S {victim}"),
            format!("P {name}: SELECT 1"),
            format!("B {name}"),
            "E".into(),
            "S".into(),
        ]
    );
    assert_eq!(sent.heard, "2CZ");
}

#[test]
fn a_statement_the_batch_uses_is_never_evicted_for_it() {
    let world = World {
        max_statements: 1,
        ..World::new()
    };
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    let sent = world.send(
        &mut c,
        &mut conn,
        &[
            parse("a", "SELECT 1"),
            parse("b", "SELECT 2"),
            bind("a"),
            execute(),
            bind("b"),
            execute(),
            sync(),
        ],
    );
    assert!(
        sent.wire.iter().all(|m| !m.starts_with('C')),
        "nothing closed: {:?}",
        sent.wire
    );
    assert_eq!(sent.heard, sent.own_server);
    assert_eq!(conn.len(), 2, "over the bound for this batch");
}

#[test]
fn a_batch_ending_in_a_flush_gets_its_stand_ins() {
    let world = World::new();
    let mut conn = ServerStatements::default();
    world.send(&mut client(1), &mut conn, &run_named("s", "SELECT 1"));
    let sent = world.send(
        &mut client(2),
        &mut conn,
        &[parse("t", "SELECT 1"), close("old"), flush()],
    );
    assert_eq!(sent.wire, ["H"]);
    assert_eq!(sent.heard, "13", "given without waiting for the server");
}

/// A client flushes after a Parse that fails, then sends its Sync, which
/// goes as a plain request: when the Sync is queued before the error comes
/// back, the error's skip takes the Sync's request with it and its
/// ReadyForQuery ends nothing the relay knows of; and the skip never ends,
/// so a later stand-in is never given. (See the reply tracker's tests.)
#[test]
fn a_failed_parse_flushed_then_synced_ends_its_request() {
    let world = World::new();
    let mut c = client(1);
    let mut conn = ServerStatements::default();
    world.send(&mut c, &mut conn, &run_named("held", "SELECT 1"));
    let mut replies = Replies::default();
    let mut out = BytesMut::new();
    for msgs in [vec![parse("s1", "SELECT nope"), flush()], vec![sync()]] {
        let (batch, bytes) = world.frame(&msgs);
        world.forward(&mut c, &mut conn, &batch, &bytes, &mut out, &mut replies);
    }
    assert_eq!(render(&out), ["P pgsplit_2: SELECT nope", "H", "S"]);
    assert_eq!(replies.step(b'E', 0), (Action::Forward, Event::ClientError));
    assert_eq!(
        replies.step(b'Z', b'I'),
        (Action::Forward, Event::ClientReady(b'I'))
    );
    let (batch, bytes) = world.frame(&[parse("again", "SELECT 1"), flush()]);
    world.forward(&mut c, &mut conn, &batch, &bytes, &mut out, &mut replies);
    let mut standins = BytesMut::new();
    replies.standins(&mut standins);
    assert_eq!(&standins[..], b"1\0\0\0\x04", "ParseComplete");
}
