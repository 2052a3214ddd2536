//! What a batch becomes on the wire for a given server connection, checked
//! without one: each test frames client messages into a batch, forwards it
//! as the relay does (then records what it ran in the session), reads the
//! messages written for the server, and has a stand-in server answer them
//! as PostgreSQL would, so the replies the client hears (stand-ins
//! included, pgsplit's own dropped) can be compared with what a server of
//! its own would have said. Plain batches here; `named`, `unnamed` and
//! `sql` for the statements of each kind.

use super::*;
use crate::classify::Classifier;
use crate::pool::statements::StatementKey;
use crate::protocol::cstr;
use crate::protocol::fixtures::*;
use crate::protocol::frame::split_frame;
use crate::session::replies::{Action, Event};
use crate::session::state::{Staged, TxStatus};

/// Parse, Bind, Execute and Sync of the named statement `name`.
fn run_named(name: &str, sql: &str) -> Vec<Vec<u8>> {
    vec![parse(name, sql), bind(name), execute(), sync()]
}

/// Bind, Execute and Sync of the statement `name`, parsed earlier.
fn rebind(name: &str) -> Vec<Vec<u8>> {
    vec![bind(name), execute(), sync()]
}

/// Each message of `wire`, readable: `P name: sql`, `B name`, `D S name`,
/// `C S name`, `Q sql`, or the tag alone. An empty name is `""`.
fn render(wire: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = wire;
    while let Some(frame) = split_frame(rest, 1 << 20).expect("whole messages") {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let name = |b: &[u8]| {
            if b.is_empty() {
                "\"\"".to_owned()
            } else {
                text(b)
            }
        };
        let body = frame.body;
        let t = frame.tag as char;
        out.push(match frame.tag {
            b'P' => {
                let (n, after) = cstr(body).unwrap();
                let (sql, _) = cstr(after).unwrap();
                format!("P {}: {}", name(n), text(sql))
            }
            b'B' => {
                let (_, after) = cstr(body).unwrap();
                let (statement, _) = cstr(after).unwrap();
                format!("B {}", name(statement))
            }
            b'D' | b'C' => {
                let (n, _) = cstr(&body[1..]).unwrap();
                format!("{t} {} {}", body[0] as char, name(n))
            }
            b'Q' => format!("Q {}", text(cstr(body).unwrap().0)),
            _ => t.to_string(),
        });
        rest = &rest[frame.wire_len()..];
    }
    out
}

/// What a server answers `wire` with, as reply tags: an error for each
/// message `fails` picks (by its rendering), after which the rest of an
/// extended batch is skipped up to its Sync.
fn answer(wire: &[u8], fails: &dyn Fn(&str) -> bool) -> String {
    let mut tags = String::new();
    let mut skipping = false;
    for m in render(wire) {
        let simple = m.starts_with('Q');
        if skipping && m != "S" {
            continue;
        }
        skipping = false;
        if fails(&m) {
            tags.push_str(if simple { "EZ" } else { "E" });
            skipping = !simple;
            continue;
        }
        tags.push_str(match m.as_bytes()[0] {
            b'P' => "1",
            b'B' => "2",
            b'D' if m.starts_with("D S") => "tT",
            b'D' => "T",
            b'E' => "C",
            b'C' => "3",
            b'S' => "Z",
            b'Q' => "CZ",
            _ => "",
        });
    }
    tags
}

fn nothing_fails(_: &str) -> bool {
    false
}

/// A client session.
struct Client {
    id: u64,
    session: SessionState,
}

fn client(id: u64) -> Client {
    Client {
        id,
        session: SessionState::default(),
    }
}

/// What forwarding one batch came to.
#[derive(Debug)]
struct Sent {
    /// The messages written for the server.
    wire: Vec<String>,
    /// Reply tags the client heard.
    heard: String,
    /// What a server of the client's own would have answered.
    own_server: String,
    done: Forwarded,
    /// Replies were followed message by message.
    followed: bool,
    events: Vec<Event>,
    /// The bytes were copied as they are.
    copied: bool,
}

struct World {
    registry: Registry,
    classifier: Classifier,
    max_statements: usize,
    at_boundary: bool,
}

impl World {
    fn new() -> World {
        World {
            registry: Registry::default(),
            classifier: Classifier::new(&[], &[], 0),
            max_statements: 100,
            at_boundary: true,
        }
    }

    fn send(&self, c: &mut Client, conn: &mut ServerStatements, msgs: &[Vec<u8>]) -> Sent {
        self.send_failing(c, conn, msgs, &nothing_fails)
    }

    /// Forwards the batch, records it in the session as the relay does,
    /// then has the server answer it (`fails` picks messages that fail).
    fn send_failing(
        &self,
        c: &mut Client,
        conn: &mut ServerStatements,
        msgs: &[Vec<u8>],
        fails: &dyn Fn(&str) -> bool,
    ) -> Sent {
        let (batch, bytes) = self.frame(msgs);
        let mut out = BytesMut::new();
        let mut replies = Replies::default();
        let done = self.forward(c, conn, &batch, &bytes, &mut out, &mut replies);
        let followed = replies.tracking();
        let executed = c.session.executed(&batch, &bytes);
        let mut staged = Staged::default();
        c.session.send(&executed, &mut staged);
        let server = answer(&out, fails);
        let mut heard = String::new();
        let mut events = Vec::new();
        let mut standins = BytesMut::new();
        for t in server.bytes() {
            replies.standins(&mut standins);
            heard.extend(standins.split().chunks(5).map(|m| m[0] as char));
            let (action, event) = replies.step(t, b'I');
            if action == Action::Forward {
                heard.push(t as char);
            }
            if event != Event::Nothing {
                events.push(event);
            }
            for id in replies.take_unprepared() {
                conn.remove(id);
            }
        }
        replies.standins(&mut standins);
        heard.extend(standins.split().chunks(5).map(|m| m[0] as char));
        let error = events
            .iter()
            .any(|e| matches!(e, Event::ClientError | Event::OwnError));
        c.session
            .on_ready(staged, TxStatus::Idle, TxStatus::Idle, error);
        Sent {
            wire: render(&out),
            heard,
            own_server: answer(&bytes, fails),
            done,
            followed,
            events,
            copied: out[..] == bytes[..],
        }
    }

    /// The messages as one whole batch, and its bytes.
    fn frame(&self, msgs: &[Vec<u8>]) -> (Batch, Vec<u8>) {
        let bytes = msgs.concat();
        let mut batch = Batch::default();
        let framed = batch
            .frame(&bytes, 1 << 20, 1 << 20, |sql| {
                Arc::new(
                    self.classifier
                        .classify_uncached(std::str::from_utf8(sql).unwrap()),
                )
            })
            .expect("valid messages");
        assert!(framed && batch.len == bytes.len(), "one whole batch");
        (batch, bytes)
    }

    fn forward(
        &self,
        c: &mut Client,
        conn: &mut ServerStatements,
        batch: &Batch,
        bytes: &[u8],
        out: &mut BytesMut,
        replies: &mut Replies,
    ) -> Forwarded {
        forward(
            batch,
            bytes,
            Ends {
                session: &mut c.session,
                session_id: c.id,
                conn,
                registry: &self.registry,
                max_statements: self.max_statements,
                at_boundary: self.at_boundary,
            },
            out,
            replies,
        )
    }

    /// The key the registry gives `sql` (as a Parse body).
    fn key(&self, sql: &str) -> Arc<StatementKey> {
        self.registry.intern(format!("{sql}\0\0\0").as_bytes())
    }

    /// The server name of the shared statement for `sql`.
    fn name(&self, sql: &str) -> String {
        self.key(sql).server_name()
    }
}

#[test]
fn a_plain_batch_is_copied_as_it_is_and_its_replies_pass() {
    let world = World::new();
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("a simple query", vec![q("SELECT 1")]),
        (
            "the unnamed statement parsed and bound",
            vec![parse("", "SELECT 1"), bind(""), execute(), sync()],
        ),
        (
            "a describe of the unnamed statement just parsed",
            vec![parse("", "SELECT 1"), describe(""), sync()],
        ),
        ("a lone Sync", vec![sync()]),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, msgs) in cases {
        let mut conn = ServerStatements::default();
        let sent = world.send(&mut client(1), &mut conn, &msgs);
        if !sent.copied || sent.followed || sent.done != Forwarded::default() {
            failures.push(format!("{name}: {sent:?}"));
        }
        if sent.heard != sent.own_server {
            failures.push(format!("{name}: heard {:?}", sent.heard));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_batch_using_statements_is_not_plain() {
    let world = World::new();
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("a named Parse", vec![parse("s1", "SELECT 1"), sync()]),
        (
            "a Bind without its Parse",
            vec![bind(""), execute(), sync()],
        ),
        ("a Close", vec![close(""), sync()]),
        ("an EXECUTE", vec![q("EXECUTE p")]),
        ("a PREPARE", vec![q("PREPARE p AS SELECT 1")]),
        ("a DEALLOCATE", vec![q("DEALLOCATE p; SELECT 1")]),
        ("a DISCARD ALL", vec![q("DISCARD ALL")]),
        (
            "an unnamed DEALLOCATE ALL",
            vec![parse("", "DEALLOCATE ALL"), bind(""), execute(), sync()],
        ),
    ];
    let n = cases.len();
    let mut failures = Vec::new();
    for (name, msgs) in cases {
        if plain(&world.frame(&msgs).0) {
            failures.push(name.to_owned());
        }
    }
    assert!(failures.is_empty(), "taken as plain: {failures:?} of {n}");
}

mod named;
mod sql;
mod unnamed;
