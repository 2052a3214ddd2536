//! What a server connection is sent for a batch, and what its replies will
//! be: the client's messages, with its named prepared statements mapped to
//! the shared ones (`pool::statements`), and pgsplit's own messages first
//! where the connection lacks something the batch needs (a statement parsed
//! on another connection, the session's unnamed statement, a SQL PREPARE).
//! A Parse of a statement the connection already holds, and a Close of a
//! named statement, are not sent: the client gets pgsplit's stand-in reply.
//!
//! A batch that uses none of this (simple queries without EXECUTE, unnamed
//! statements parsed and bound in the same batch) is copied as it is and its
//! replies pass untouched. Pure: buffers in, buffers out.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::batch::{Batch, End, Kind, Msg};
use super::replies::{Await, Item, Replies, Standin};
use super::state::{sql_hash, Prepared, SessionState, SqlStatement, Unnamed};
use crate::classify::Effect;
use crate::pool::statements::{server_name, Registry, ServerStatements, SqlName};
use crate::protocol::{encode, tag};

/// What forwarding a batch did, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Shared statements prepared on the connection.
    pub prepared: u32,
    /// Parses answered from the connection's statements.
    pub reused: u32,
    /// Statements evicted from the connection (closed).
    pub evicted: u32,
}

/// The session and connection a batch goes between.
pub struct Ends<'a> {
    pub session: &'a mut SessionState,
    pub session_id: u64,
    pub conn: &'a mut ServerStatements,
    pub registry: &'a Registry,
    /// Shared statements a connection keeps at most.
    pub max_statements: usize,
    /// The batch starts at a request boundary: pgsplit may put simple
    /// queries of its own before it.
    pub at_boundary: bool,
}

/// Whether a batch needs anything but a plain copy.
fn plain(batch: &Batch) -> bool {
    let mut parsed_unnamed = false;
    batch.msgs.iter().all(|m| match &m.kind {
        Kind::Parse { name, verdict, .. } => {
            parsed_unnamed |= name.is_empty();
            name.is_empty() && !wipes_statements(verdict)
        }
        Kind::Bind { statement } | Kind::DescribeStatement { name: statement } => {
            statement.is_empty() && parsed_unnamed
        }
        Kind::CloseStatement { .. } => false,
        Kind::Query(v) => !v.effects.iter().any(|e| {
            matches!(
                e,
                Effect::Execute { .. }
                    | Effect::Prepare { .. }
                    | Effect::Deallocate { .. }
                    | Effect::DiscardAll
            )
        }),
        Kind::FunctionCall { .. } | Kind::Other => true,
    })
}

/// Writes a message with tag `t` whose body is `parts` concatenated.
fn put_msg(out: &mut BytesMut, t: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.put_u8(t);
    out.put_i32((len + 4) as i32);
    for p in parts {
        out.put_slice(p);
    }
}

/// Writes `msg` with the name at `name` (a range within it) replaced by the
/// shared statement `id`'s server name.
fn put_renamed(out: &mut BytesMut, wire: &[u8], name: &std::ops::Range<usize>, id: u64) {
    let (server_name, len) = server_name(id);
    let before = &wire[5..name.start];
    let after = &wire[name.end..];
    put_msg(out, wire[0], &[before, &server_name[..len], after]);
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Appends to `out` what the connection is sent for `batch` (its bytes are
/// `bytes`), queues what its replies will be, and records what the session
/// and the connection now hold (see the module doc).
pub fn forward(
    batch: &Batch,
    bytes: &[u8],
    ends: Ends<'_>,
    out: &mut BytesMut,
    replies: &mut Replies,
) -> Forwarded {
    let mut done = Forwarded::default();
    if plain(batch) {
        note_unnamed(batch, bytes, ends.session, ends.conn, ends.session_id);
        out.extend_from_slice(&bytes[..batch.len]);
        replies.pass(batch.requests);
        return done;
    }
    let Ends {
        session,
        session_id,
        conn,
        registry,
        max_statements,
        at_boundary,
    } = ends;
    let mut prefix = BytesMut::new();
    let mut prefix_items: Vec<Item> = Vec::new();
    let mut body = BytesMut::with_capacity(batch.len + 64);
    let mut items: Vec<Item> = Vec::with_capacity(batch.msgs.len());
    // Shared statements this batch uses: never evicted for it.
    let mut keep: Vec<u64> = Vec::new();
    let mut parsed_unnamed = false;
    // The unnamed statement parsed here runs DEALLOCATE ALL or DISCARD ALL
    // when bound: the connection holds nothing from then on.
    let mut unnamed_wipes = false;
    // A shared statement the connection must hold before `body` goes.
    let ensure = |id_key: &Arc<crate::pool::statements::StatementKey>,
                  keep: &mut Vec<u64>,
                  conn: &mut ServerStatements,
                  prefix: &mut BytesMut,
                  prefix_items: &mut Vec<Item>,
                  done: &mut Forwarded| {
        keep.push(id_key.id);
        if conn.touch(id_key.id) {
            return;
        }
        if let Some(victim) = conn.add(id_key, max_statements, keep) {
            put_close_statement(prefix, victim);
            prefix_items.push(Item::Own(Await::Close));
            done.evicted += 1;
        }
        let (name, len) = server_name(id_key.id);
        put_msg(prefix, tag::PARSE, &[&name[..len], b"\0", &id_key.body]);
        prefix_items.push(Item::Own(Await::Parse {
            statement: Some(id_key.id),
        }));
        done.prepared += 1;
    };
    for (i, msg) in batch.msgs.iter().enumerate() {
        let wire = msg.wire(bytes);
        match &msg.kind {
            Kind::Parse {
                name,
                body: key_body,
                verdict,
            } => {
                let client_name = msg.slice(bytes, name);
                if client_name.is_empty() {
                    parsed_unnamed = true;
                    session.statements.unnamed_parses += 1;
                    let seq = session.statements.unnamed_parses;
                    conn.unnamed = Some((session_id, seq));
                    let bound_here = batch.msgs[i + 1..].iter().any(
                        |m| matches!(&m.kind, Kind::Bind { statement } if statement.is_empty()),
                    );
                    unnamed_wipes = bound_here && wipes_statements(verdict);
                    session.statements.unnamed = (!bound_here).then(|| Unnamed {
                        seq,
                        parse: wire.into(),
                        verdict: Arc::clone(verdict),
                    });
                    body.put_slice(wire);
                    items.push(Item::Client(Await::Parse { statement: None }));
                    continue;
                }
                let key = registry.intern(msg.slice(bytes, key_body));
                session.statements.named.insert(
                    client_name.into(),
                    Arc::new(Prepared {
                        key: Arc::clone(&key),
                        verdict: Arc::clone(verdict),
                    }),
                );
                keep.push(key.id);
                if conn.touch(key.id) {
                    items.push(Item::Standin(Standin::ParseComplete));
                    done.reused += 1;
                } else {
                    if let Some(victim) = conn.add(&key, max_statements, &keep) {
                        put_close_statement(&mut body, victim);
                        items.push(Item::Own(Await::Close));
                        done.evicted += 1;
                    }
                    put_renamed(&mut body, wire, name, key.id);
                    items.push(Item::Client(Await::Parse {
                        statement: Some(key.id),
                    }));
                    done.prepared += 1;
                }
            }
            Kind::Bind { statement: name } | Kind::DescribeStatement { name } => {
                let client_name = msg.slice(bytes, name);
                let awaited = if msg.tag == tag::BIND {
                    Await::Bind
                } else {
                    Await::Describe
                };
                if client_name.is_empty() {
                    if !parsed_unnamed {
                        unnamed_for(session, session_id, conn, &mut prefix, &mut prefix_items);
                    }
                    if msg.tag == tag::BIND && std::mem::take(&mut unnamed_wipes) {
                        conn.clear();
                    }
                    body.put_slice(wire);
                } else if let Some(p) = session.statements.named.get(client_name) {
                    let key = Arc::clone(&p.key);
                    let wipes = msg.tag == tag::BIND && wipes_statements(&p.verdict);
                    ensure(
                        &key,
                        &mut keep,
                        conn,
                        &mut prefix,
                        &mut prefix_items,
                        &mut done,
                    );
                    put_renamed(&mut body, wire, name, key.id);
                    if wipes {
                        // What the batch parses after it stays held.
                        conn.clear();
                    }
                } else if let Some(statement) = std::str::from_utf8(client_name)
                    .ok()
                    .and_then(|n| session.statements.sql.get(n))
                    .filter(|_| at_boundary)
                {
                    // The session's own SQL PREPARE, bound by the protocol.
                    let statement = Arc::clone(statement);
                    let name = String::from_utf8_lossy(client_name);
                    ensure_sql(&name, &statement, conn, &mut prefix, &mut prefix_items);
                    body.put_slice(wire);
                } else {
                    // Not the session's: make sure it cannot reach another
                    // session's SQL-prepared statement of that name.
                    let text = String::from_utf8_lossy(client_name);
                    if conn.sql.contains_key(text.as_ref())
                        && !session.statements.sql.contains_key(text.as_ref())
                    {
                        let missing = b"pgsplit_missing";
                        let before = &wire[5..name.start];
                        let after = &wire[name.end..];
                        put_msg(&mut body, msg.tag, &[before, missing, after]);
                    } else {
                        body.put_slice(wire);
                    }
                }
                items.push(Item::Client(awaited));
            }
            Kind::CloseStatement { name } => {
                let client_name = msg.slice(bytes, name);
                if client_name.is_empty() {
                    conn.unnamed = None;
                    session.statements.unnamed = None;
                    body.put_slice(wire);
                    items.push(Item::Client(Await::Close));
                } else {
                    // Shared statements stay on the connection for others.
                    session.statements.named.remove(client_name);
                    items.push(Item::Standin(Standin::CloseComplete));
                }
            }
            Kind::Query(verdict) => {
                conn.unnamed = None;
                if at_boundary {
                    sql_prefix(verdict, session, conn, &mut prefix, &mut prefix_items);
                }
                sql_record(verdict, conn);
                body.put_slice(wire);
                items.push(Item::Client(Await::Ready));
            }
            Kind::FunctionCall { .. } => {
                body.put_slice(wire);
                items.push(Item::Client(Await::Ready));
            }
            Kind::Other => {
                body.put_slice(wire);
                if let Some(a) = awaited_other(msg) {
                    items.push(Item::Client(a));
                }
            }
        }
    }
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&body);
    // Followed message by message when pgsplit's own messages or stand-ins
    // are in it, or a shared statement is prepared (if its Parse fails or
    // is skipped, the connection does not hold it).
    let followed = prefix_items.iter().chain(&items).any(|i| {
        matches!(
            i,
            Item::Own(_) | Item::Standin(_) | Item::Client(Await::Parse { statement: Some(_) })
        )
    });
    if followed {
        for item in prefix_items.into_iter().chain(items) {
            replies.push(item);
        }
        // A batch that ends without a Sync (Flush, Open) leaves stand-ins
        // after the last reply: they go when the next message comes.
    } else {
        replies.pass(batch.requests);
    }
    if batch.end == End::Terminate {
        session.statements.unnamed = None;
    }
    done
}

/// Whether running a statement removes every prepared statement on its
/// server.
fn wipes_statements(verdict: &crate::classify::Verdict) -> bool {
    verdict
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Deallocate { name: None } | Effect::DiscardAll))
}

/// What a client message other than those above awaits.
fn awaited_other(msg: &Msg) -> Option<Await> {
    match msg.tag {
        tag::EXECUTE => Some(Await::Execute),
        tag::SYNC => Some(Await::Ready),
        tag::DESCRIBE => Some(Await::Describe),
        tag::CLOSE => Some(Await::Close),
        _ => None,
    }
}

fn put_close_statement(out: &mut BytesMut, id: u64) {
    let (name, len) = server_name(id);
    put_msg(out, tag::CLOSE, &[b"S", &name[..len], b"\0"]);
}

/// The unnamed statement a Bind/Describe without a Parse in its batch
/// means: the session's own, parsed again here if another Parse replaced
/// it; else none (closed, so the server says so rather than run another
/// session's).
fn unnamed_for(
    session: &SessionState,
    session_id: u64,
    conn: &mut ServerStatements,
    prefix: &mut BytesMut,
    items: &mut Vec<Item>,
) {
    match &session.statements.unnamed {
        Some(u) if conn.unnamed == Some((session_id, u.seq)) => {}
        Some(u) => {
            prefix.put_slice(&u.parse);
            items.push(Item::Own(Await::Parse { statement: None }));
            conn.unnamed = Some((session_id, u.seq));
        }
        None => {
            // Only the session's latest unnamed statement may run.
            let latest = (session_id, session.statements.unnamed_parses);
            if conn.unnamed.is_some_and(|held| held != latest) {
                put_msg(prefix, tag::CLOSE, &[b"S\0"]);
                items.push(Item::Own(Await::Close));
                conn.unnamed = None;
            }
        }
    }
}

/// Simple queries that make the connection hold the SQL-prepared
/// statements a query executes or deallocates, and let it prepare names it
/// holds from another session.
fn sql_prefix(
    verdict: &crate::classify::Verdict,
    session: &SessionState,
    conn: &mut ServerStatements,
    prefix: &mut BytesMut,
    items: &mut Vec<Item>,
) {
    let mut defined_here: Vec<&str> = Vec::new();
    // Names the query itself frees before it may define them again.
    let mut freed_here: Vec<&str> = Vec::new();
    let mut all_freed = false;
    for effect in &verdict.effects {
        let name = match effect {
            Effect::Execute { name, .. } => name.as_str(),
            Effect::Deallocate { name: Some(name) } => {
                freed_here.push(name.as_str());
                name.as_str()
            }
            Effect::Deallocate { name: None } | Effect::DiscardAll => {
                all_freed = true;
                continue;
            }
            Effect::Prepare { name, .. } => {
                defined_here.push(name.as_str());
                // The client's PREPARE must find the name free.
                let freed = all_freed || freed_here.contains(&name.as_str());
                if !freed && conn.sql.contains_key(name.as_str()) {
                    encode::query(prefix, &format!("DEALLOCATE {}", quote_ident(name)));
                    items.push(Item::Own(Await::Ready));
                    conn.sql.remove(name.as_str());
                }
                continue;
            }
            _ => continue,
        };
        if defined_here.contains(&name) || all_freed {
            continue;
        }
        let Some(statement) = session.statements.sql.get(name) else {
            // Not the session's: if another session's statement of that
            // name is here, it goes, so the client's EXECUTE fails as it
            // would on a server of its own.
            if conn.sql.remove(name).is_some() {
                encode::query(prefix, &format!("DEALLOCATE {}", quote_ident(name)));
                items.push(Item::Own(Await::Ready));
            }
            continue;
        };
        ensure_sql(name, statement, conn, prefix, items);
    }
}

/// Simple queries that make the connection hold the session's SQL
/// statement `name` (its PREPARE, after a DEALLOCATE of another text).
fn ensure_sql(
    name: &str,
    statement: &SqlStatement,
    conn: &mut ServerStatements,
    prefix: &mut BytesMut,
    items: &mut Vec<Item>,
) {
    match conn.sql.get(name) {
        Some(SqlName::Holds(h)) if *h == statement.hash => {}
        held => {
            if held.is_some() {
                encode::query(prefix, &format!("DEALLOCATE {}", quote_ident(name)));
                items.push(Item::Own(Await::Ready));
            }
            encode::query(prefix, &statement.text);
            items.push(Item::Own(Await::Ready));
            conn.sql.insert(name.into(), SqlName::Holds(statement.hash));
        }
    }
}

/// What a query's SQL PREPARE/DEALLOCATE leave on the connection.
fn sql_record(verdict: &crate::classify::Verdict, conn: &mut ServerStatements) {
    for effect in &verdict.effects {
        match effect {
            // The statement this PREPARE defines (the session records it
            // after `forward`).
            Effect::Prepare { name, sql, .. } => {
                conn.sql
                    .insert(name.as_str().into(), SqlName::Holds(sql_hash(sql)));
            }
            Effect::Deallocate { name: Some(name) } => {
                conn.sql.remove(name.as_str());
            }
            Effect::Deallocate { name: None } | Effect::DiscardAll => conn.clear(),
            _ => {}
        }
    }
}

/// A plain batch's unnamed statement bookkeeping.
fn note_unnamed(
    batch: &Batch,
    bytes: &[u8],
    session: &mut SessionState,
    conn: &mut ServerStatements,
    session_id: u64,
) {
    for (i, msg) in batch.msgs.iter().enumerate() {
        match &msg.kind {
            Kind::Parse { verdict, .. } => {
                session.statements.unnamed_parses += 1;
                let seq = session.statements.unnamed_parses;
                conn.unnamed = Some((session_id, seq));
                let bound_here = batch.msgs[i + 1..]
                    .iter()
                    .any(|m| matches!(&m.kind, Kind::Bind { .. }));
                session.statements.unnamed = (!bound_here).then(|| Unnamed {
                    seq,
                    parse: msg.wire(bytes).into(),
                    verdict: Arc::clone(verdict),
                });
            }
            Kind::Query(_) => conn.unnamed = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
