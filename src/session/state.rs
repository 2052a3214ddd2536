//! What a client session is, apart from its sockets: its settings, its
//! prepared statements, its pins, its pgsplit settings and what its reads
//! must see. Pure: the relay tells it what was sent and how each request
//! ended; the router reads it.
//!
//! **Settings** are the session-level SET/RESET statements that committed,
//! in order (one entry per name), with a fingerprint: a server connection
//! whose own fingerprint matches holds exactly these, so sessions with the
//! same settings share connections without replaying anything. The client's
//! startup parameters are part of its login (the pool key), not entries.
//!
//! **Transactions.** A SET's fate is its transaction's: effects of a request
//! are staged when it is sent and applied when its ReadyForQuery says the
//! transaction committed (an autocommit request without an error, or a
//! COMMIT in a healthy transaction), else dropped. So a SET inside a
//! transaction that rolls back is forgotten, one that commits is replayed
//! like any other; only a rolled-back savepoint after a SET leaves its fate
//! unknown, and then the session pins (`set_in_transaction`).
//!
//! **Pins** are state no other connection can be given: temp objects,
//! LISTEN, session advisory locks, WITH HOLD cursors, ... Each is released
//! once provably gone (DISCARD TEMP/ALL, UNLISTEN *, the last channel
//! unlistened, `pg_advisory_unlock_all()`, the last holdable cursor closed).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::classify::{Effect, PinCause, RouteMode, Verdict};
use crate::consistency::Floor;
use crate::pool::statements::StatementKey;

/// Transaction status, as ReadyForQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxStatus {
    #[default]
    Idle,
    InBlock,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> TxStatus {
        match b {
            b'T' => TxStatus::InBlock,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Idle,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InBlock => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// The session's committed settings.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// (name, the statement that set it), in the order first set.
    entries: Vec<(Box<str>, Box<str>)>,
    fingerprint: u64,
}

impl Settings {
    /// Identifies the entries: equal settings, equal fingerprints; 0 for
    /// none (a connection as it logged in).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the role or the session user was set.
    pub fn sets_role(&self) -> bool {
        self.entries
            .iter()
            .any(|(n, _)| matches!(&**n, "role" | "session_authorization"))
    }

    fn set(&mut self, name: &str, sql: &str) {
        match self.entries.iter_mut().find(|(n, _)| &**n == name) {
            Some(entry) => entry.1 = sql.into(),
            None => self.entries.push((name.into(), sql.into())),
        }
        self.rehash();
    }

    fn reset(&mut self, name: &str) {
        self.entries.retain(|(n, _)| &**n != name);
        self.rehash();
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.fingerprint = 0;
    }

    /// `RESET ALL`: every setting but the role and the session user, which
    /// the server keeps (they are not reset by RESET ALL).
    fn reset_all(&mut self) {
        self.entries
            .retain(|(n, _)| matches!(&**n, "role" | "session_authorization"));
        self.rehash();
    }

    fn rehash(&mut self) {
        self.fingerprint = if self.entries.is_empty() {
            0
        } else {
            let mut h = std::hash::DefaultHasher::new();
            self.entries.hash(&mut h);
            h.finish() | 1
        };
    }

    /// The SQL that brings a connection holding other settings to exactly
    /// these: back to its login state (`RESET ALL`, and the role when
    /// `role_changed`), then each entry.
    pub fn sync_sql(&self, role_changed: bool) -> String {
        let mut sql = String::new();
        if role_changed {
            sql.push_str("RESET ROLE; RESET SESSION AUTHORIZATION; ");
        }
        sql.push_str("RESET ALL");
        for (_, entry) in &self.entries {
            sql.push_str("; ");
            sql.push_str(entry);
        }
        sql
    }
}

/// A protocol-level prepared statement of the session.
#[derive(Debug)]
pub struct Prepared {
    pub key: Arc<StatementKey>,
    pub verdict: Arc<Verdict>,
}

/// The unnamed statement, kept only when it was parsed in one request and
/// may be bound in a later one (which may reach another connection).
#[derive(Debug)]
pub struct Unnamed {
    /// Which of the session's unnamed Parses it is.
    pub seq: u64,
    /// The client's Parse message, whole.
    pub parse: Box<[u8]>,
    pub verdict: Arc<Verdict>,
}

/// What identifies a SQL PREPARE's text (what a connection records).
pub fn sql_hash(sql: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    sql.hash(&mut h);
    h.finish()
}

/// A SQL-level prepared statement of the session.
#[derive(Debug)]
pub struct SqlStatement {
    /// The PREPARE statement.
    pub text: Box<str>,
    /// Hash of `text` (what a connection records).
    pub hash: u64,
    /// Its statement is a read (given its functions settle as reads).
    pub read: bool,
    pub functions: Vec<Box<str>>,
    /// The read-only port refuses executing it.
    pub forbidden: bool,
}

/// The session's prepared statements.
#[derive(Debug, Default)]
pub struct Statements {
    /// Client name -> statement.
    pub named: HashMap<Box<[u8]>, Arc<Prepared>>,
    pub unnamed: Option<Unnamed>,
    /// Unnamed Parses sent so far.
    pub unnamed_parses: u64,
    /// SQL PREPAREd names.
    pub sql: HashMap<Box<str>, Arc<SqlStatement>>,
}

impl Statements {
    /// Forgets them all (DISCARD ALL).
    pub fn clear(&mut self) {
        self.named.clear();
        self.unnamed = None;
        self.sql.clear();
    }
}

/// State that ties the session to its server connection.
#[derive(Debug, Default, Clone)]
pub struct Pins {
    /// One bit per [`PinCause`], in `PinCause::ALL` order.
    causes: u8,
    /// Names of temp objects the session created.
    pub temp_names: Vec<Box<str>>,
    listening: Vec<Box<str>>,
    cursors: Vec<Box<str>>,
}

fn bit(cause: PinCause) -> u8 {
    1 << PinCause::ALL
        .iter()
        .position(|c| *c == cause)
        .expect("every cause is listed")
}

impl Pins {
    pub fn is_pinned(&self) -> bool {
        self.causes != 0
    }

    pub fn has(&self, cause: PinCause) -> bool {
        self.causes & bit(cause) != 0
    }

    /// The causes in force.
    pub fn causes(&self) -> impl Iterator<Item = PinCause> + '_ {
        PinCause::ALL.into_iter().filter(|c| self.has(*c))
    }

    /// Whether reads may still go to replicas (every cause allows it).
    pub fn allow_replica_reads(&self) -> bool {
        self.causes().all(PinCause::allows_replica_reads)
    }

    /// Returns true when the cause is new.
    fn pin(&mut self, cause: PinCause) -> bool {
        let new = !self.has(cause);
        self.causes |= bit(cause);
        new
    }

    fn unpin(&mut self, cause: PinCause) {
        self.causes &= !bit(cause);
    }

    fn clear(&mut self) {
        *self = Pins::default();
    }
}

/// Which way the session's own `default_transaction_isolation` points.
#[derive(Debug, Default, Clone, Copy)]
pub struct Isolation {
    /// From the login (startup parameter, `options`, role or database
    /// default).
    pub login_serializable: bool,
    /// Set by the session (None: reset to the login value).
    pub set: Option<bool>,
}

impl Isolation {
    /// Whether plain reads run SERIALIZABLE, which a standby refuses.
    pub fn serializable(&self) -> bool {
        self.set.unwrap_or(self.login_serializable)
    }
}

/// Effects of one request, staged until its ReadyForQuery, in statement
/// order, transaction control included (so the request's own BEGIN,
/// COMMIT and ROLLBACK say what its SETs became).
#[derive(Debug, Default)]
pub struct Staged {
    effects: Vec<Effect>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct SessionState {
    pub settings: Settings,
    pub statements: Statements,
    pub pins: Pins,
    /// `SET pgsplit.route`.
    pub route: Option<RouteMode>,
    pub floor: Floor,
    pub isolation: Isolation,
    /// Effects of requests that committed nothing yet (the open transaction).
    pending: Vec<Effect>,
    /// A savepoint was rolled back while `pending` held something.
    pending_uncertain: bool,
}

/// What sending a batch did to the session at once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Causes that pinned the session just now.
    pub new_pins: Vec<PinCause>,
}

impl SessionState {
    /// Records what a request does when it is sent (`verdicts`: the SQL it
    /// runs: its Queries' and the statements it binds; a Parse alone runs
    /// nothing): pins and names at once
    /// (erring towards pinned), pgsplit settings, SQL PREPARE/DEALLOCATE
    /// (a prepared statement outlives any transaction), and stages the rest
    /// for [`SessionState::on_ready`].
    pub fn send<'v>(
        &mut self,
        verdicts: impl IntoIterator<Item = &'v Arc<Verdict>>,
        staged: &mut Staged,
    ) -> Sent {
        let mut sent = Sent::default();
        for verdict in verdicts {
            for effect in &verdict.effects {
                match effect {
                    // Pins apply at once (erring towards pinned) and again
                    // in order at the end, after any release the same
                    // request staged before them (`UNLISTEN *; LISTEN a`).
                    Effect::Pin(cause) => {
                        if self.pins.pin(*cause) {
                            sent.new_pins.push(*cause);
                        }
                        staged.effects.push(effect.clone());
                    }
                    Effect::Listen(_) | Effect::HoldCursor(_) | Effect::TempObject(_) => {
                        self.apply(effect);
                        staged.effects.push(effect.clone());
                    }
                    Effect::Route(mode) => {
                        self.route = (*mode != RouteMode::Auto).then_some(*mode);
                    }
                    Effect::MinLsn(Some(lsn)) => {
                        if let Ok(lsn) = lsn.parse() {
                            self.floor.raise(lsn);
                        }
                    }
                    Effect::MinLsn(None) => self.floor.lsn = None,
                    Effect::Prepare {
                        name,
                        sql,
                        read,
                        functions,
                        forbidden,
                    } => {
                        self.statements.sql.insert(
                            name.as_str().into(),
                            Arc::new(SqlStatement {
                                text: sql.as_str().into(),
                                hash: sql_hash(sql),
                                read: *read,
                                functions: functions.clone(),
                                forbidden: *forbidden,
                            }),
                        );
                    }
                    Effect::Deallocate { name: Some(name) } => {
                        self.statements.sql.remove(name.as_str());
                        self.statements.named.remove(name.as_bytes());
                    }
                    Effect::Deallocate { name: None } => {
                        self.statements.sql.clear();
                        self.statements.named.clear();
                    }
                    Effect::Set { local: true, .. }
                    | Effect::SetTransaction { .. }
                    | Effect::Execute { .. } => {}
                    Effect::Begin { .. }
                    | Effect::Commit { .. }
                    | Effect::Rollback { .. }
                    | Effect::RollbackToSavepoint
                    | Effect::Set { .. }
                    | Effect::Reset { .. }
                    | Effect::ResetAll
                    | Effect::DiscardAll
                    | Effect::DiscardTemp
                    | Effect::Unlisten(_)
                    | Effect::CloseCursor(_)
                    | Effect::AdvisoryUnlockAll => staged.effects.push(effect.clone()),
                }
            }
        }
        sent
    }

    /// A request's ReadyForQuery arrived: `before` was the transaction
    /// status when it started, `after` is the new one, `error` whether the
    /// server reported an error for it. Its staged effects are replayed in
    /// order against the transaction they ran in: what a COMMIT (or the end
    /// of an implicit transaction without error) made permanent applies,
    /// what a ROLLBACK or an error undid drops, what an open transaction
    /// holds waits for its end. Where the outcome cannot be told (an error
    /// in a request that also committed, a savepoint rolled back after a
    /// SET), the session pins instead: only its connection knows. Returns a
    /// pin it caused, if any.
    pub fn on_ready(
        &mut self,
        staged: Staged,
        before: TxStatus,
        after: TxStatus,
        error: bool,
    ) -> Option<PinCause> {
        let mut pending = std::mem::take(&mut self.pending);
        let mut uncertain = std::mem::take(&mut self.pending_uncertain);
        let mut failed = before == TxStatus::Failed;
        let mut committed: Vec<Effect> = Vec::new();
        for effect in staged.effects {
            match effect {
                Effect::Begin { .. } => {}
                Effect::Commit { .. } => {
                    if failed {
                        // COMMIT of a failed transaction rolls it back.
                        pending.clear();
                    } else {
                        // With an error in the request, it may have come
                        // before this COMMIT (which then never ran).
                        uncertain |= error && pending.iter().any(changes_settings);
                        committed.append(&mut pending);
                    }
                    failed = false;
                }
                Effect::Rollback { .. } => {
                    // Everything the transaction did is undone: nothing
                    // is uncertain any more.
                    pending.clear();
                    uncertain = false;
                    failed = false;
                }
                Effect::RollbackToSavepoint => {
                    uncertain |= pending.iter().any(changes_settings);
                    failed = false;
                }
                other => pending.push(other),
            }
        }
        if after == TxStatus::Idle && !error && !failed {
            // The implicit transaction (or the last one) committed.
            committed.append(&mut pending);
        }
        if after != TxStatus::Idle {
            self.pending = pending;
            self.pending_uncertain = uncertain;
            uncertain = false;
        }
        if uncertain {
            return self
                .pins
                .pin(PinCause::SetInTransaction)
                .then_some(PinCause::SetInTransaction);
        }
        for effect in &committed {
            self.apply(effect);
        }
        None
    }

    /// Applies a committed effect.
    fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::Set {
                local: false,
                name,
                sql,
                value,
            } => {
                self.settings.set(name, sql);
                if name == "default_transaction_isolation" {
                    self.isolation.set = value.as_deref().map(|v| v == "serializable");
                }
            }
            Effect::Reset { name } => {
                self.settings.reset(name);
                if name == "default_transaction_isolation" {
                    self.isolation.set = None;
                }
            }
            Effect::ResetAll => {
                self.settings.reset_all();
                self.isolation.set = None;
            }
            Effect::DiscardAll => self.discard_all(),
            Effect::DiscardTemp => {
                self.pins.unpin(PinCause::TempObject);
                self.pins.temp_names.clear();
            }
            Effect::Pin(cause) => {
                self.pins.pin(*cause);
            }
            Effect::Listen(name) => push_name(&mut self.pins.listening, name),
            Effect::HoldCursor(name) => push_name(&mut self.pins.cursors, name),
            Effect::TempObject(name) => push_name(&mut self.pins.temp_names, name),
            Effect::Unlisten(None) => {
                self.pins.listening.clear();
                self.pins.unpin(PinCause::Listen);
            }
            Effect::Unlisten(Some(name)) => {
                self.pins.listening.retain(|n| **n != **name);
                if self.pins.listening.is_empty() {
                    self.pins.unpin(PinCause::Listen);
                }
            }
            Effect::CloseCursor(None) => {
                self.pins.cursors.clear();
                self.pins.unpin(PinCause::HoldCursor);
            }
            Effect::CloseCursor(Some(name)) => {
                self.pins.cursors.retain(|n| **n != **name);
                if self.pins.cursors.is_empty() {
                    self.pins.unpin(PinCause::HoldCursor);
                }
            }
            Effect::AdvisoryUnlockAll => self.pins.unpin(PinCause::AdvisoryLock),
            _ => {}
        }
    }

    /// The SQL a batch runs: its Queries, and the statements its Binds
    /// execute (parsed in the batch, or earlier). A Parse alone runs
    /// nothing.
    pub fn executed(
        &self,
        batch: &crate::session::batch::Batch,
        bytes: &[u8],
    ) -> Vec<Arc<Verdict>> {
        use crate::session::batch::Kind;
        let mut out = Vec::new();
        let mut unnamed: Option<&Arc<Verdict>> = None;
        for msg in &batch.msgs {
            match &msg.kind {
                Kind::Query(v) => out.push(Arc::clone(v)),
                Kind::Parse { name, verdict, .. } if name.is_empty() => unnamed = Some(verdict),
                Kind::Bind { statement } => {
                    let name = msg.slice(bytes, statement);
                    let verdict = if name.is_empty() {
                        unnamed.or(self.statements.unnamed.as_ref().map(|u| &u.verdict))
                    } else {
                        self.statements.named.get(name).map(|p| &p.verdict)
                    };
                    if let Some(v) = verdict {
                        out.push(Arc::clone(v));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Pins the session (a routine changed settings behind its back).
    /// Returns true when the cause is new.
    pub fn pin(&mut self, cause: PinCause) -> bool {
        self.pins.pin(cause)
    }

    /// DISCARD ALL: nothing of the session is left on any server.
    pub fn discard_all(&mut self) {
        self.settings.clear();
        self.isolation.set = None;
        self.statements.clear();
        self.pins.clear();
        self.pending.clear();
        self.pending_uncertain = false;
    }

    /// Whether a read's SQL text may see one of the session's temp objects
    /// (it names one, or `pg_temp`): it must run where they are.
    pub fn may_see_temp(&self, sql: &[u8]) -> bool {
        if !self.pins.has(PinCause::TempObject) {
            return false;
        }
        contains_word(sql, b"pg_temp")
            || self
                .pins
                .temp_names
                .iter()
                .any(|n| contains_word(sql, n.as_bytes()))
    }
}

/// Whether an effect changes what a connection's settings are.
fn changes_settings(effect: &Effect) -> bool {
    matches!(
        effect,
        Effect::Set { local: false, .. }
            | Effect::Reset { .. }
            | Effect::ResetAll
            | Effect::DiscardAll
    )
}

fn push_name(names: &mut Vec<Box<str>>, name: &str) {
    if !names.iter().any(|n| **n == *name) {
        names.push(name.into());
    }
}

/// Whether `word` occurs in `text` (ASCII case-insensitive) not glued to a
/// longer identifier.
fn contains_word(text: &[u8], word: &[u8]) -> bool {
    if word.is_empty() || word.len() > text.len() {
        return false;
    }
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    (0..=text.len() - word.len()).any(|i| {
        text[i..i + word.len()].eq_ignore_ascii_case(word)
            && (i == 0 || !ident(text[i - 1]))
            && text.get(i + word.len()).is_none_or(|b| !ident(*b))
    })
}

#[cfg(test)]
mod tests;
