//! Per-statement routing on the read-write port, and the session state that
//! lets one client session use several server connections as if they were
//! one.
//!
//! At an idle point (nothing outstanding, no transaction open) the client's
//! next batch of whole messages is planned: it goes to a replica only when
//! every request in it is proven read-only (see [`crate::classify`]) and
//! nothing pins the session; otherwise to the primary. Before the batch goes
//! to a server connection, that connection is brought up to date with the
//! session's settings and with the prepared statements the batch uses
//! ([`Split::sync_messages`]; the replies never reach the client). Then the
//! batch's own effects are recorded ([`Split::record`]).
//!
//! Settings are kept as an ordered list of the statements that made them
//! (`SET x = …`, `RESET x`), each with the version of its last change; a
//! server connection holds every entry up to its own version. RESET ALL and
//! DISCARD ALL start a new epoch: a connection from an older one is sent
//! DISCARD ALL first. A SET inside an explicit transaction pins the session
//! to the primary instead (whether it survives depends on how the
//! transaction ends).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use crate::classify::{Access, Effect, PinCause, RouteMode, Verdict};
use crate::pool::{ServerConn, Synced};
use crate::protocol::frame::split_frame;
use crate::protocol::{cstr, encode, tag, ProtocolError};
use crate::route::Dest;
use crate::session::state::SessionState;

mod lookup;
pub use lookup::{FunctionCache, Functions, Memo, Observe, Verdicts};

/// Where a batch goes, and why.
#[derive(Debug)]
pub struct Plan {
    pub dest: Dest,
    /// A bounded label for `pgsplit_statements_total`.
    pub reason: &'static str,
    /// Requests in the batch (Query, Sync, FunctionCall).
    pub requests: u32,
    /// Functions the catalog cache could not settle (each counted as a
    /// write): look them up and plan again.
    pub unknown: Vec<Box<str>>,
}

/// A prepared statement the session created, and how to create it again.
#[derive(Debug)]
struct Prepared {
    recipe: Recipe,
    read: bool,
    version: u64,
}

#[derive(Debug)]
enum Recipe {
    /// The client's own Parse message, whole.
    Parse(Box<[u8]>),
    /// A SQL `PREPARE name AS …` statement.
    Sql(Box<str>),
}

#[derive(Debug)]
struct SetEntry {
    name: String,
    sql: String,
    version: u64,
}

/// One session's routing state on the read-write port.
#[derive(Debug, Default)]
pub struct Split {
    /// Set once something that cannot move was done; the session then stays
    /// on the primary.
    pub pinned: Option<PinCause>,
    /// `SET pgsplit.route`; `None` is auto.
    route: Option<RouteMode>,
    epoch: u64,
    sets: Vec<SetEntry>,
    set_version: u64,
    prepared: HashMap<Box<str>, Prepared>,
    next_version: u64,
    /// Where the unnamed statement was last parsed, and whether it reads.
    unnamed: Option<(Dest, bool)>,
}

/// Names a batch parses itself (a Bind later in the batch needs no replay).
/// Bounded: past its size, unknown names are treated as writes.
#[derive(Default)]
struct BatchNames<'a> {
    names: [(&'a [u8], bool); 8],
    len: usize,
}

impl<'a> BatchNames<'a> {
    fn push(&mut self, name: &'a [u8], read: bool) {
        if self.len < self.names.len() {
            self.names[self.len] = (name, read);
            self.len += 1;
        }
    }

    fn get(&self, name: &[u8]) -> Option<bool> {
        self.names[..self.len]
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|&(_, read)| read)
    }
}

/// What a batch's messages say about named prepared statements.
enum StmtRef<'a> {
    /// A Parse of a named statement.
    Parsed(&'a [u8]),
    /// A Bind or Describe of a named statement the batch did not parse first.
    Used(&'a [u8]),
    /// A simple Query's text (it may EXECUTE one).
    Query(&'a [u8]),
}

/// Walks the whole messages at the front of `buf` (up to a Terminate),
/// handing `f` each [`StmtRef`] until it returns false. Ok(false) when `f`
/// stopped the walk.
fn statement_refs<'a>(
    buf: &'a [u8],
    max: usize,
    mut f: impl FnMut(StmtRef<'a>) -> bool,
) -> Result<bool, ProtocolError> {
    let mut names = BatchNames::default();
    let mut pos = 0;
    while let Some(frame) = split_frame(&buf[pos..], max)? {
        pos += frame.wire_len();
        let r = match frame.tag {
            tag::PARSE => match cstr(frame.body) {
                Some((name, _)) if !name.is_empty() => {
                    names.push(name, true);
                    StmtRef::Parsed(name)
                }
                _ => continue,
            },
            tag::BIND => match cstr(frame.body).and_then(|(_, rest)| cstr(rest)) {
                Some((name, _)) if !name.is_empty() && names.get(name).is_none() => {
                    StmtRef::Used(name)
                }
                _ => continue,
            },
            tag::DESCRIBE if frame.body.first() == Some(&b'S') => match cstr(&frame.body[1..]) {
                Some((name, _)) if !name.is_empty() && names.get(name).is_none() => {
                    StmtRef::Used(name)
                }
                _ => continue,
            },
            tag::QUERY => StmtRef::Query(cstr(frame.body).map_or(&b""[..], |(s, _)| s)),
            tag::TERMINATE => break,
            _ => continue,
        };
        if !f(r) {
            return Ok(false);
        }
    }
    Ok(true)
}

impl Split {
    /// Classifies `sql` (cached by text), timing it.
    fn verdict(classifier: &Verdicts, sql: &[u8], observe: &dyn Observe) -> Arc<Verdict> {
        classifier.get(sql, observe)
    }

    /// Whether a classified message may run on a replica: a proven read, no
    /// function left unsettled, nothing that needs the primary or pins.
    fn may_read(&self, verdict: &Verdict, functions: &Functions) -> Result<(), &'static str> {
        if verdict.access != Access::Read {
            return Err(verdict.why.label());
        }
        for name in &verdict.functions {
            match functions.settle(name) {
                Some(true) => {}
                Some(false) => return Err("function"),
                None => {
                    functions.missing(name);
                    return Err("function");
                }
            }
        }
        if verdict.hint == Some(RouteMode::Primary) {
            return Err("hint");
        }
        let mut in_tx = false;
        for effect in &verdict.effects {
            match effect {
                Effect::Begin { serializable, .. } => {
                    if *serializable {
                        // Standbys refuse SERIALIZABLE.
                        return Err("serializable");
                    }
                    in_tx = true;
                }
                Effect::SetTransaction {
                    serializable: true, ..
                } => return Err("serializable"),
                Effect::Commit { .. } | Effect::Rollback { .. } => in_tx = false,
                Effect::Set { local: false, .. } if in_tx => return Err("set_in_transaction"),
                Effect::Pin(_) => return Err("pin"),
                Effect::Prepare {
                    read: true,
                    functions: names,
                    ..
                } if names.iter().all(|n| functions.settle(n) == Some(true)) => {}
                Effect::Execute { name, .. } => match self.prepared.get(name.as_str()) {
                    Some(p) if p.read => {}
                    _ => return Err("write"),
                },
                Effect::Prepare { .. }
                | Effect::Deallocate { .. }
                | Effect::DiscardAll
                | Effect::ResetAll => return Err("session"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Decides where the whole messages at the front of `buf` go. Pure: the
    /// session is not changed (a held batch is planned again later).
    pub fn plan(
        &self,
        buf: &[u8],
        max: usize,
        classifier: &Verdicts,
        replica_available: bool,
        functions: &Functions,
        observe: &dyn Observe,
    ) -> Result<Plan, ProtocolError> {
        let mut requests = 0;
        let mut write: Option<&'static str> = None;
        let mut names = BatchNames::default();
        let mut unnamed_here: Option<bool> = None;
        let mut stuck: Option<Dest> = None;
        let mut pos = 0;
        while let Some(frame) = split_frame(&buf[pos..], max)? {
            pos += frame.wire_len();
            let mut deny = |why: &'static str| {
                write.get_or_insert(why);
            };
            match frame.tag {
                tag::QUERY => {
                    requests += 1;
                    let sql = cstr(frame.body).map_or(&b""[..], |(s, _)| s);
                    let verdict = Self::verdict(classifier, sql, observe);
                    if let Err(why) = self.may_read(&verdict, functions) {
                        deny(why);
                    }
                }
                tag::PARSE => {
                    let (name, rest) = cstr(frame.body).ok_or(ProtocolError::Malformed {
                        what: "Parse without a statement name",
                    })?;
                    let sql = cstr(rest).map_or(&b""[..], |(s, _)| s);
                    let verdict = Self::verdict(classifier, sql, observe);
                    let read = self.may_read(&verdict, functions);
                    if let Err(why) = read {
                        deny(why);
                    }
                    if name.is_empty() {
                        unnamed_here = Some(read.is_ok());
                    } else {
                        names.push(name, read.is_ok());
                    }
                }
                tag::BIND => {
                    let (_, rest) = cstr(frame.body).ok_or(ProtocolError::Malformed {
                        what: "Bind without a portal name",
                    })?;
                    let name = cstr(rest).map_or(&b""[..], |(s, _)| s);
                    let read = if name.is_empty() {
                        unnamed_here.or_else(|| {
                            // The unnamed statement cannot be replayed: the
                            // batch goes where it was parsed.
                            let (dest, read) = self.unnamed?;
                            stuck = Some(dest);
                            Some(read)
                        })
                    } else {
                        names.get(name).or_else(|| self.read_of(name))
                    };
                    if read != Some(true) {
                        deny("write");
                    }
                }
                tag::FUNCTION_CALL => {
                    requests += 1;
                    deny("function_call");
                }
                tag::SYNC => requests += 1,
                tag::TERMINATE => break,
                tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::FLUSH => {}
                // Anything else outside a request (CopyData and friends) is
                // not ours to judge: the primary.
                _ => deny("write"),
            }
        }
        let (dest, reason) = if self.pinned.is_some() {
            (Dest::Primary, "pinned")
        } else if let Some(why) = write {
            (Dest::Primary, why)
        } else if self.route == Some(RouteMode::Primary) {
            (Dest::Primary, "hint")
        } else if let Some(dest) = stuck {
            (dest, "unnamed_statement")
        } else if !replica_available {
            (Dest::Primary, "no_replica")
        } else {
            (Dest::Replica, "read")
        };
        Ok(Plan {
            dest,
            reason,
            requests,
            unknown: functions.take_missing(),
        })
    }

    fn read_of(&self, name: &[u8]) -> Option<bool> {
        let name = std::str::from_utf8(name).ok()?;
        self.prepared.get(name).map(|p| p.read)
    }

    /// The messages that bring `server` up to date for the batch at the front
    /// of `buf` (settings; prepared statements the batch uses that the server
    /// lacks; stale ones in the way), as up to three requests: DISCARD ALL,
    /// then Close/Parse + Sync, then one Query for settings and SQL PREPAREs.
    /// Returns how many ReadyForQuery replies to wait for (0: nothing to do).
    /// Marks `server` as holding what it will hold once they succeed.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_messages(
        &self,
        server: &mut ServerConn,
        buf: &[u8],
        max: usize,
        full: bool,
        classifier: &Verdicts,
        observe: &dyn Observe,
        out: &mut BytesMut,
    ) -> Result<u32, ProtocolError> {
        let mut replies = 0;
        let synced = &mut server.synced;
        if synced.epoch != self.epoch {
            encode::query(out, "DISCARD ALL");
            replies += 1;
            synced.epoch = self.epoch;
            synced.set_version = 0;
            synced.prepared.clear();
        }
        let mut ext = BytesMut::new();
        let mut sql = String::new();
        if full {
            // Statements the session no longer has (closed elsewhere) or has
            // in another version.
            let stale: Vec<Box<str>> = synced
                .prepared
                .iter()
                .filter(|(name, v)| self.prepared.get(&***name).map(|p| p.version) != Some(**v))
                .map(|(name, _)| name.clone())
                .collect();
            for name in stale {
                encode::close_statement(&mut ext, name.as_bytes());
                synced.prepared.remove(&name);
            }
        }
        statement_refs(buf, max, |r| {
            match r {
                StmtRef::Parsed(name) => {
                    // A stale statement of that name would make the client's
                    // Parse fail; one the session still has must, as it would
                    // on a single server.
                    if let Ok(text) = std::str::from_utf8(name) {
                        let ours = self.prepared.get(text).map(|p| p.version);
                        if let Some(&v) = synced.prepared.get(text) {
                            if ours != Some(v) {
                                encode::close_statement(&mut ext, name);
                                synced.prepared.remove(text);
                            }
                        }
                    }
                }
                StmtRef::Used(name) => self.replay(name, synced, &mut ext, &mut sql),
                StmtRef::Query(text) => {
                    let verdict = Self::verdict(classifier, text, observe);
                    for effect in &verdict.effects {
                        if let Effect::Execute { name, .. } = effect {
                            self.replay(name.as_bytes(), synced, &mut ext, &mut sql);
                        }
                    }
                }
            }
            true
        })?;
        if !ext.is_empty() {
            out.put_slice(&ext);
            encode::sync(out);
            replies += 1;
        }
        let mut settings = String::new();
        if synced.set_version != self.set_version {
            for entry in self.sets.iter().filter(|e| e.version > synced.set_version) {
                settings.push_str(&entry.sql);
                settings.push(';');
            }
            synced.set_version = self.set_version;
        }
        if !settings.is_empty() {
            encode::query(out, &settings);
            replies += 1;
        }
        if !sql.is_empty() {
            encode::query(out, &sql);
            replies += 1;
        }
        Ok(replies)
    }

    /// Adds what makes the session's statement `name` exist, in its current
    /// version, on a server that holds `synced`.
    fn replay(&self, name: &[u8], synced: &mut Synced, ext: &mut BytesMut, sql: &mut String) {
        let Ok(name) = std::str::from_utf8(name) else {
            return;
        };
        let Some(p) = self.prepared.get(name) else {
            return;
        };
        match synced.prepared.get(name) {
            Some(&v) if v == p.version => return,
            Some(_) => encode::close_statement(ext, name.as_bytes()),
            None => {}
        }
        match &p.recipe {
            Recipe::Parse(wire) => ext.put_slice(wire),
            Recipe::Sql(text) => {
                sql.push_str(text);
                sql.push(';');
            }
        }
        synced.prepared.insert(name.into(), p.version);
    }

    /// Nothing of the session lives only on its replica connection: not
    /// pinned, and the unnamed statement (which cannot be replayed) was not
    /// last parsed there.
    pub fn holds_no_server_state(&self) -> bool {
        self.pinned.is_none() && !matches!(self.unnamed, Some((Dest::Replica, _)))
    }

    /// The session's movability, for the relay: pinned sessions hold state
    /// no other server connection can be given.
    pub fn state(&self) -> SessionState {
        match self.pinned {
            Some(cause) => SessionState::Stateful(cause.label()),
            None => SessionState::Clean,
        }
    }

    /// Whether `synced` already holds everything the batch at the front of
    /// `buf` needs, so that it can follow a request still in flight.
    pub fn in_sync(
        &self,
        synced: &Synced,
        buf: &[u8],
        max: usize,
        classifier: &Verdicts,
        observe: &dyn Observe,
    ) -> bool {
        if synced.epoch != self.epoch || synced.set_version != self.set_version {
            return false;
        }
        let holds = |name: &[u8]| match std::str::from_utf8(name) {
            Ok(name) => match self.prepared.get(name) {
                Some(p) => synced.prepared.get(name) == Some(&p.version),
                None => true,
            },
            Err(_) => true,
        };
        let walked = statement_refs(buf, max, |r| match r {
            StmtRef::Parsed(name) => !std::str::from_utf8(name).is_ok_and(|text| {
                synced
                    .prepared
                    .get(text)
                    .is_some_and(|v| self.prepared.get(text).map(|p| p.version) != Some(*v))
            }),
            StmtRef::Used(name) => holds(name),
            StmtRef::Query(text) => !Self::verdict(classifier, text, observe)
                .effects
                .iter()
                .any(|e| matches!(e, Effect::Execute { name, .. } if !holds(name.as_bytes()))),
        });
        walked == Ok(true)
    }

    /// Records the effects of the batch at the front of `buf`, which is about
    /// to go to `server` (serving `dest`); `in_tx` when a transaction is open
    /// already. Returns a new pin, if the batch pinned the session.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        buf: &[u8],
        max: usize,
        dest: Dest,
        server: &mut ServerConn,
        classifier: &Verdicts,
        functions: &Functions,
        observe: &dyn Observe,
        in_tx: bool,
    ) -> Result<Option<PinCause>, ProtocolError> {
        let was_pinned = self.pinned.is_some();
        let mut pos = 0;
        while let Some(frame) = split_frame(&buf[pos..], max)? {
            let wire = &buf[pos..pos + frame.wire_len()];
            pos += frame.wire_len();
            match frame.tag {
                tag::QUERY => {
                    let sql = cstr(frame.body).map_or(&b""[..], |(s, _)| s);
                    let verdict = Self::verdict(classifier, sql, observe);
                    if !verdict.effects.is_empty() {
                        self.apply(&verdict.effects, server, in_tx);
                    }
                }
                tag::PARSE => {
                    let (name, rest) = cstr(frame.body).unwrap_or((b"", b""));
                    let sql = cstr(rest).map_or(&b""[..], |(s, _)| s);
                    let verdict = Self::verdict(classifier, sql, observe);
                    let read = self.may_read(&verdict, functions).is_ok();
                    if name.is_empty() {
                        self.unnamed = Some((dest, read));
                    } else if let Ok(name) = std::str::from_utf8(name) {
                        self.next_version += 1;
                        let version = self.next_version;
                        self.prepared.insert(
                            name.into(),
                            Prepared {
                                recipe: Recipe::Parse(wire.into()),
                                read,
                                version,
                            },
                        );
                        server.synced.prepared.insert(name.into(), version);
                    }
                    // Statements with session effects (a prepared SET, say)
                    // are not replayable as plain Parses: keep them put.
                    if verdict.effects.iter().any(|e| {
                        matches!(e, Effect::Pin(_)) || matches!(e, Effect::Set { local: false, .. })
                    }) {
                        self.pinned.get_or_insert(PinCause::Other);
                    }
                }
                tag::CLOSE if frame.body.first() == Some(&b'S') => {
                    let name = cstr(&frame.body[1..]).map_or(&b""[..], |(n, _)| n);
                    if let Ok(name) = std::str::from_utf8(name) {
                        self.prepared.remove(name);
                        server.synced.prepared.remove(name);
                    }
                }
                tag::TERMINATE => break,
                _ => {}
            }
        }
        Ok(if was_pinned { None } else { self.pinned })
    }

    fn apply(&mut self, effects: &[Effect], server: &mut ServerConn, mut in_tx: bool) {
        for effect in effects {
            match effect {
                Effect::Begin { .. } => in_tx = true,
                Effect::Commit { chain } | Effect::Rollback { chain } => in_tx = *chain,
                Effect::Set { local: true, .. } | Effect::SetTransaction { .. } => {}
                Effect::Set { name, sql, .. } => {
                    if in_tx {
                        self.pinned.get_or_insert(PinCause::Other);
                    } else {
                        self.upsert(name, sql.clone(), server);
                    }
                }
                Effect::Reset { name } => {
                    if in_tx {
                        self.pinned.get_or_insert(PinCause::Other);
                    } else {
                        self.upsert(name, format!("RESET {name}"), server);
                    }
                }
                Effect::ResetAll | Effect::DiscardAll => {
                    if in_tx {
                        self.pinned.get_or_insert(PinCause::Other);
                        continue;
                    }
                    self.sets.clear();
                    self.epoch += 1;
                    server.synced.epoch = self.epoch;
                    server.synced.set_version = self.set_version;
                    if matches!(effect, Effect::DiscardAll) {
                        self.prepared.clear();
                        server.synced.prepared.clear();
                        self.unnamed = None;
                    }
                }
                Effect::Prepare {
                    name,
                    sql,
                    read,
                    functions,
                    ..
                } => {
                    self.next_version += 1;
                    let version = self.next_version;
                    self.prepared.insert(
                        name.as_str().into(),
                        Prepared {
                            recipe: Recipe::Sql(sql.as_str().into()),
                            read: *read && functions.is_empty(),
                            version,
                        },
                    );
                    server.synced.prepared.insert(name.as_str().into(), version);
                }
                Effect::Deallocate { name: Some(name) } => {
                    self.prepared.remove(name.as_str());
                    server.synced.prepared.remove(name.as_str());
                }
                Effect::Deallocate { name: None } => {
                    self.prepared.clear();
                    server.synced.prepared.clear();
                }
                Effect::Pin(cause) => {
                    self.pinned.get_or_insert(*cause);
                }
                Effect::Route(mode) => {
                    self.route = (*mode != RouteMode::Auto).then_some(*mode);
                }
                _ => {}
            }
        }
    }

    fn upsert(&mut self, name: &str, sql: String, server: &mut ServerConn) {
        self.set_version += 1;
        let version = self.set_version;
        match self.sets.iter_mut().find(|e| e.name == name) {
            Some(entry) => {
                entry.sql = sql;
                entry.version = version;
            }
            None => self.sets.push(SetEntry {
                name: name.to_owned(),
                sql,
                version,
            }),
        }
        // The statement runs on this server itself.
        server.synced.set_version = version;
    }
}

#[cfg(test)]
mod tests;
