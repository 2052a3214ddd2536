//! Where a client request goes, decided without I/O: from the framed
//! [`Batch`], the session's state, the topology snapshot, what pgsplit knows
//! of the catalog and of replica positions, and the session's read-your-writes
//! floor, to a [`Decision`]. One policy per port: [`read_write`] splits each
//! request between the primary and the replicas, [`read_only`] keeps every
//! request on replicas and refuses what must not run there. The relay
//! carries decisions out; everything here is tested with tables, no sockets.
//!
//! The rule everywhere: a request goes to a replica only when it is proven
//! read-only and nothing the session holds or needs says otherwise. Unsure
//! means the primary.

use std::time::{Duration, Instant};

use crate::classify::{Access, Effect, PinCause, RouteMode, Verdict, Why};
use crate::config::{ConsistencyMode, NoReplica};
use crate::consistency::{Check, Floor};
use crate::session::batch::{Batch, End, Kind};
use crate::session::state::SessionState;
use crate::topology::Snapshot;

mod reason;
pub use reason::{Reason, RywOutcome};

#[cfg(test)]
mod tests;

/// Which client port a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    ReadWrite,
    ReadOnly,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::ReadWrite => "read_write",
            Listener::ReadOnly => "read_only",
        }
    }
}

/// What the session's current server connection serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Primary,
    /// A replica (or the primary serving reads by its weight), by backend
    /// index in the snapshot.
    Replica(usize),
    /// The primary, logged in read-only, for the read-only port.
    ReadOnlyPrimary,
}

/// Where the session's conversation with its server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Nothing in flight, no transaction, no batch open: an idle point.
    Idle,
    /// A plain BEGIN was answered by pgsplit and is not sent yet: this batch
    /// decides where the transaction runs.
    DeferredBegin,
    /// A transaction is open on the current connection (`failed`: an
    /// error aborted it; only its end is accepted).
    InTransaction { on: On, failed: bool },
    /// An extended batch (or a COPY) is open on the current connection.
    BatchOpen { on: On },
    /// An extended batch is open outside a transaction, having only parsed
    /// and described statements: closing it loses nothing, so what follows
    /// may go elsewhere (a driver describes a query before it decides to
    /// run a COPY or a write).
    Described { on: On },
    /// Requests are in flight outside a transaction.
    Pipelined { on: On },
}

/// Where to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// The current connection.
    Current,
    /// The primary (the session's own connection there, if it keeps one).
    Primary,
    /// This replica (backend index).
    Replica(usize),
    /// The primary, logged in read-only (read-only port, no replica).
    ReadOnlyPrimary,
}

/// A request pgsplit answers itself, sending nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A plain BEGIN: "BEGIN", ReadyForQuery T.
    Begin,
    /// COMMIT or ROLLBACK of a deferred BEGIN that sent nothing.
    EndDeferred { commit: bool },
    /// SET/RESET of pgsplit's own settings.
    PgsplitSetting,
    /// A bad `pgsplit.min_lsn` value (22023).
    BadSetting,
    /// DEALLOCATE name / ALL of what the session has.
    Deallocate { all: bool },
    /// DEALLOCATE of a name the session does not have (26000).
    NoSuchStatement(String),
    /// Inside a failed transaction, what the server would refuse (25P02).
    TransactionAborted,
    /// DISCARD ALL of a session holding nothing on a server.
    DiscardAll,
    /// Read-only port: this must not run on a replica (25006).
    Refuse(Refusal),
    /// Read-only port, no replica and `routing.no_replica = "error"`.
    NoReplica,
}

/// Why the read-only port refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Data-modifying, DDL, or an effect that would outlast it.
    Write,
    /// A transaction or setting that would let the session write.
    ReadWrite,
    /// A fastpath function call that is not a proven read.
    FunctionCall,
}

/// What the catalog lookups must settle before the router can decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Function(Box<str>),
    Relation(Box<str>),
    FunctionOid(u32),
}

/// A route: where, why, and what sending it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub to: To,
    pub reason: Reason,
    /// A routine the request calls changes settings: the session pins.
    pub pin: Option<PinCause>,
    /// How read-your-writes settled it, when the session had a floor.
    pub ryw: Option<RywOutcome>,
}

/// See the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Send(Route),
    Answer(Answer),
    /// Wait until the requests in flight are answered, then decide again.
    Hold,
    /// Look these up in the catalog, then decide again.
    Lookup(Vec<Lookup>),
    /// Wait for fresher replica positions (up to `max_wait_ms`), then decide
    /// again with `waited` set.
    WaitPositions,
    /// Close the open batch on its server (a Sync whose answer pgsplit
    /// keeps), then decide again at the idle point that follows.
    Settle,
}

/// What pgsplit knows of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionInfo {
    /// Every function of that name is immutable or stable.
    pub read: bool,
    /// A body of that name changes settings (`SET`, `set_config`).
    pub sets_config: bool,
}

/// The catalog as cached: `None` means not known yet (look it up).
pub trait Catalog {
    fn function(&self, name: &str) -> Option<FunctionInfo>;
    /// Whether a relation of that name is unlogged.
    fn relation_unlogged(&self, name: &str) -> Option<bool>;
    /// A function by OID (a fastpath call): whether a replica may run it (a
    /// proven read, with no effect that outlasts it).
    fn function_oid(&self, oid: u32) -> Option<bool>;
}

/// Replica positions as known (see `consistency`).
pub trait Positions {
    fn check(&self, backend: usize, floor: &Floor) -> Check;
}

/// The configuration the router reads.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub consistency: ConsistencyMode,
    pub window: Duration,
    pub max_wait: Duration,
    pub no_replica: NoReplica,
}

/// Everything a decision depends on.
pub struct Input<'a> {
    pub listener: Listener,
    pub batch: &'a Batch,
    /// The batch's bytes.
    pub bytes: &'a [u8],
    pub session: &'a SessionState,
    pub flow: Flow,
    pub snapshot: &'a Snapshot,
    pub catalog: &'a dyn Catalog,
    pub positions: &'a dyn Positions,
    pub policy: Policy,
    /// Position in the read schedule (the caller moves it on when a session
    /// takes a new replica).
    pub ticket: usize,
    /// The replica the session read from last (backend index): reads stay
    /// there while it serves them, as sessions did before pooling.
    pub preferred: Option<usize>,
    pub now: Instant,
    /// The batch was refused by a replica with a standby-only error and is
    /// run again.
    pub retry: bool,
    /// The read already waited for positions once.
    pub waited: bool,
    /// Functions that looked up already and stayed unknown count as writes.
    pub looked_up: bool,
    /// What the connection the session keeps serves (pinned, or session
    /// mode), if it keeps one.
    pub home: Option<On>,
}

/// Decides where a request goes (see the module doc).
pub fn route(input: &Input) -> Decision {
    match input.listener {
        Listener::ReadWrite => read_write(input),
        Listener::ReadOnly => read_only(input),
    }
}

fn send(to: To, reason: Reason) -> Decision {
    Decision::Send(Route {
        to,
        reason,
        pin: None,
        ryw: None,
    })
}

/// Requests pgsplit answers itself, on either port.
fn local_answer(input: &Input) -> Option<Answer> {
    let verdict = input.batch.single_query()?;
    if verdict.local_only {
        let bad = verdict.effects.iter().any(
            |e| matches!(e, Effect::MinLsn(Some(v)) if v.parse::<crate::topology::Lsn>().is_err()),
        );
        return Some(if bad {
            Answer::BadSetting
        } else {
            Answer::PgsplitSetting
        });
    }
    if verdict.statements != 1 || verdict.hint.is_some() {
        return None;
    }
    match &verdict.effects[..] {
        [Effect::Deallocate { name: None }] => Some(Answer::Deallocate { all: true }),
        [Effect::Deallocate { name: Some(name) }] => {
            // SQL and protocol-level statements share one namespace.
            let statements = &input.session.statements;
            let known = statements.sql.contains_key(name.as_str())
                || statements.named.contains_key(name.as_bytes());
            Some(if known {
                Answer::Deallocate { all: false }
            } else {
                Answer::NoSuchStatement(name.clone())
            })
        }
        [Effect::DiscardAll] if !input.session.pins.is_pinned() => Some(Answer::DiscardAll),
        [Effect::Begin {
            read_only: None,
            serializable: false,
        }] if input.listener == Listener::ReadWrite => Some(Answer::Begin),
        _ => None,
    }
}

/// DEALLOCATE, answered wherever the session stands: a server connection
/// holds shared statements under other names, and the session's may live on
/// another connection. (Prepared statements are not transactional, so
/// answering inside a transaction changes nothing; inside a failed one the
/// server would refuse it.)
fn deallocate(input: &Input) -> Option<Decision> {
    let verdict = input.batch.single_query()?;
    if verdict.statements != 1 || !matches!(&verdict.effects[..], [Effect::Deallocate { .. }]) {
        return None;
    }
    Some(match input.flow {
        Flow::Pipelined { .. } | Flow::BatchOpen { .. } | Flow::Described { .. } => Decision::Hold,
        Flow::InTransaction { failed: true, .. } => Decision::Answer(Answer::TransactionAborted),
        _ => Decision::Answer(local_answer(input)?),
    })
}

/// The read-write port's policy.
pub fn read_write(input: &Input) -> Decision {
    if let Some(decision) = deallocate(input) {
        return decision;
    }
    match input.flow {
        Flow::InTransaction { failed, .. } => return in_transaction(input, failed),
        Flow::BatchOpen { .. } => return send(To::Current, Reason::Batch),
        Flow::Described { on } => return described(input, on),
        _ => {}
    }
    if input.batch.end == End::Copy {
        return send(To::Current, Reason::Batch);
    }
    if input.retry {
        return send(To::Primary, Reason::Retried);
    }
    if input.flow == Flow::DeferredBegin {
        return begin_target(input);
    }
    if let Some(answer) = local_answer(input) {
        // Its answer must follow the replies still due.
        return match input.flow {
            Flow::Pipelined { .. } => Decision::Hold,
            _ => Decision::Answer(answer),
        };
    }
    let decision = split(input);
    match (input.flow, &decision) {
        (Flow::Pipelined { on }, Decision::Send(route)) => {
            let same = match (route.to, on) {
                (To::Primary, On::Primary) => true,
                (To::Replica(_), On::Replica(_)) => route.reason == Reason::Read,
                _ => false,
            };
            if same {
                Decision::Send(Route {
                    to: To::Current,
                    ..*route
                })
            } else {
                Decision::Hold
            }
        }
        (Flow::Pipelined { .. }, Decision::WaitPositions | Decision::Lookup(_)) => Decision::Hold,
        _ => decision,
    }
}

/// Inside a transaction everything runs where it began; a routine that
/// changes settings still pins the session (looked up first when unknown:
/// the lookup runs inside the transaction, on its connection).
fn in_transaction(input: &Input, failed: bool) -> Decision {
    if !failed {
        if let Some(lookups) = unknown_routines(input) {
            return Decision::Lookup(lookups);
        }
    }
    Decision::Send(Route {
        to: To::Current,
        reason: Reason::Transaction,
        pin: hidden_set(input),
        ryw: None,
    })
}

/// The next part of a batch opened by statements only: it stays where the
/// batch began when it may run there (the primary runs anything; a replica
/// a read); otherwise the batch is closed first.
fn described(input: &Input, on: On) -> Decision {
    if input.batch.end == End::Copy {
        return send(To::Current, Reason::Batch);
    }
    if on == On::Primary {
        // Whatever the router would say, the primary serves it; a routine
        // that changes settings still pins.
        return match split(input) {
            Decision::Send(route) => Decision::Send(Route {
                to: To::Current,
                reason: Reason::Batch,
                ..route
            }),
            // Lookups run at idle points.
            _ => Decision::Settle,
        };
    }
    match split(input) {
        Decision::Send(route)
            if matches!(route.to, To::Replica(_)) && route.reason == Reason::Read =>
        {
            Decision::Send(Route {
                to: To::Current,
                ..route
            })
        }
        _ => Decision::Settle,
    }
}

/// After a deferred BEGIN: a transaction that starts `SET TRANSACTION READ
/// ONLY` (not SERIALIZABLE) may run on a replica; COMMIT/ROLLBACK of nothing
/// is answered; anything else runs on the primary.
fn begin_target(input: &Input) -> Decision {
    if let Some(verdict) = input.batch.single_query() {
        if verdict.statements == 1 {
            match verdict.effects.first() {
                Some(Effect::Commit { chain: false }) => {
                    return Decision::Answer(Answer::EndDeferred { commit: true })
                }
                Some(Effect::Rollback { chain: false }) => {
                    return Decision::Answer(Answer::EndDeferred { commit: false })
                }
                _ => {}
            }
        }
        let read_only = matches!(
            verdict.effects.first(),
            Some(Effect::SetTransaction {
                read_only: Some(true),
                serializable: false
            })
        );
        if read_only && verdict.hint != Some(RouteMode::Primary) {
            if let Some(reason) = session_keeps_reads_home(input) {
                return send(To::Primary, reason);
            }
            return match replica_for_read(input) {
                Decision::Send(route) if matches!(route.to, To::Replica(_)) => {
                    Decision::Send(Route {
                        reason: Reason::Transaction,
                        ..route
                    })
                }
                other => other,
            };
        }
    }
    send(To::Primary, Reason::Transaction)
}

/// What the batch's contents say, before the session and replicas have a
/// say.
enum Contents {
    /// Every message is a proven read.
    Read,
    /// A read the primary must answer.
    PrimaryRead(Reason),
    /// Something that writes, or may.
    Write(Reason),
    /// Settle these first.
    Lookup(Vec<Lookup>),
}

/// Splits a batch at an idle point (or pipelined): the primary or a replica.
fn split(input: &Input) -> Decision {
    let contents = contents(input);
    let pin = hidden_set(input);
    let decision = match contents {
        Contents::Lookup(names) => return Decision::Lookup(names),
        Contents::Write(reason) | Contents::PrimaryRead(reason) => send(To::Primary, reason),
        Contents::Read => match session_keeps_reads_home(input) {
            Some(reason) => send(To::Primary, reason),
            None => match unlogged(input) {
                Err(lookups) => return Decision::Lookup(lookups),
                Ok(true) => send(To::Primary, Reason::Unlogged),
                Ok(false) => replica_for_read(input),
            },
        },
    };
    match (decision, pin) {
        // What the routine sets lives where it runs: at home.
        (Decision::Send(route), Some(pin)) => Decision::Send(Route {
            to: To::Primary,
            reason: if matches!(route.to, To::Replica(_)) {
                Reason::Pinned(pin)
            } else {
                route.reason
            },
            pin: Some(pin),
            ryw: None,
        }),
        (decision, _) => decision,
    }
}

/// Whether a statement's effects let it run on a replica (given the batch
/// is otherwise a read).
fn effects_allow_replica(verdict: &Verdict, session: &SessionState) -> Result<(), Reason> {
    for effect in &verdict.effects {
        match effect {
            // Settings are replayed wherever the session goes; a pinned
            // session's go home with its state.
            Effect::Set { .. } | Effect::Reset { .. } if session.pins.is_pinned() => {
                return Err(Reason::Pinned(pin_of(session)))
            }
            Effect::Set { .. }
            | Effect::Reset { .. }
            | Effect::Prepare { .. }
            | Effect::Route(_)
            | Effect::MinLsn(_)
            | Effect::Execute { runs: false, .. }
            | Effect::SetTransaction { .. } => {}
            Effect::Execute { name, runs: true } => match session.statements.sql.get(name.as_str())
            {
                Some(p) if p.read && p.functions.is_empty() => {}
                _ => return Err(Reason::Statement(Why::Execute)),
            },
            Effect::Begin {
                serializable: true, ..
            } => return Err(Reason::Serializable),
            // A transaction declared READ ONLY may run on a replica.
            Effect::Begin {
                read_only: Some(true),
                ..
            } => {}
            Effect::Pin(cause) => return Err(Reason::Pinned(*cause)),
            _ => return Err(Reason::Statement(Why::Session)),
        }
    }
    Ok(())
}

/// Classifies the batch's messages.
fn contents(input: &Input) -> Contents {
    let batch = input.batch;
    let session = input.session;
    let mut write: Option<Reason> = None;
    let mut primary: Option<Reason> = None;
    let mut lookups: Vec<Lookup> = Vec::new();
    // Statements parsed in this batch: (name, read?).
    let mut parsed: Vec<(&[u8], bool)> = Vec::new();
    let mut unnamed_here: Option<bool> = None;
    let mut judge = |verdict: &Verdict, lookups: &mut Vec<Lookup>| -> Result<(), Reason> {
        if verdict.access != Access::Read {
            return Err(Reason::Statement(verdict.why));
        }
        effects_allow_replica(verdict, session)?;
        for name in &verdict.functions {
            match input.catalog.function(name) {
                Some(f) if f.read => {}
                Some(_) => return Err(Reason::Function),
                None if input.looked_up => return Err(Reason::Function),
                None => {
                    let l = Lookup::Function(name.clone());
                    if !lookups.contains(&l) {
                        lookups.push(l);
                    }
                }
            }
        }
        if verdict.primary_only {
            primary.get_or_insert(Reason::PrimaryOnly);
        }
        if verdict.hint == Some(RouteMode::Primary) {
            primary.get_or_insert(Reason::Hint);
        }
        Ok(())
    };
    for msg in &batch.msgs {
        let verdict_read = match &msg.kind {
            Kind::Query(v) => Some(judge(v, &mut lookups)),
            Kind::Parse { name, verdict, .. } => {
                let read = judge(verdict, &mut lookups);
                let name = msg.slice(input.bytes, name);
                if name.is_empty() {
                    unnamed_here = Some(read.is_ok());
                } else {
                    parsed.push((name, read.is_ok()));
                }
                Some(read)
            }
            Kind::Bind { statement } => {
                let name = msg.slice(input.bytes, statement);
                let read = if name.is_empty() {
                    unnamed_here.or_else(|| {
                        let u = session.statements.unnamed.as_ref()?;
                        Some(judge(&u.verdict, &mut lookups).is_ok())
                    })
                } else {
                    parsed
                        .iter()
                        .rev()
                        .find(|(n, _)| *n == name)
                        .map(|(_, r)| *r)
                        .or_else(|| {
                            let p = session.statements.named.get(name)?;
                            Some(judge(&p.verdict, &mut lookups).is_ok())
                        })
                };
                match read {
                    Some(true) => None,
                    _ => Some(Err(Reason::Statement(Why::Write))),
                }
            }
            Kind::FunctionCall { .. } => Some(Err(Reason::FunctionCall)),
            Kind::Other if matches!(msg.tag, b'd' | b'c' | b'f') => {
                Some(Err(Reason::Statement(Why::CopyFrom)))
            }
            _ => None,
        };
        if let Some(Err(reason)) = verdict_read {
            write.get_or_insert(reason);
        }
    }
    if let Some(reason) = write {
        // A write may call routines that change settings (see
        // `hidden_set`): the ones not known yet are looked up first, once.
        return match unknown_routines(input) {
            Some(lookups) => Contents::Lookup(lookups),
            None => Contents::Write(reason),
        };
    }
    if !lookups.is_empty() {
        return Contents::Lookup(lookups);
    }
    if batch.end == End::Open {
        return Contents::Write(Reason::LargeBatch);
    }
    match primary {
        Some(reason) => Contents::PrimaryRead(reason),
        None => Contents::Read,
    }
}

/// Routines the batch calls that the catalog does not know yet (none once
/// looked up: what stays unknown counts as not changing settings).
fn unknown_routines(input: &Input) -> Option<Vec<Lookup>> {
    if input.looked_up {
        return None;
    }
    let mut lookups: Vec<Lookup> = Vec::new();
    for name in input.batch.verdicts().flat_map(|v| v.functions.iter()) {
        let l = Lookup::Function(name.clone());
        if input.catalog.function(name).is_none() && !lookups.contains(&l) {
            lookups.push(l);
        }
    }
    (!lookups.is_empty()).then_some(lookups)
}

/// Whether a routine the batch calls changes settings (as far as the
/// catalog knows).
fn hidden_set(input: &Input) -> Option<PinCause> {
    input
        .batch
        .verdicts()
        .flat_map(|v| v.functions.iter())
        .any(|name| input.catalog.function(name).is_some_and(|f| f.sets_config))
        .then_some(PinCause::HiddenSet)
}

/// Whether something of the session keeps a read on the primary: a pin
/// that does not allow reads elsewhere, a read that may see its temp
/// objects, `pgsplit.route = primary`, a SERIALIZABLE default.
fn session_keeps_reads_home(input: &Input) -> Option<Reason> {
    let s = input.session;
    if let Some(cause) = s.pins.causes().find(|c| !c.allows_replica_reads()) {
        return Some(Reason::Pinned(cause));
    }
    if s.route == Some(RouteMode::Primary) {
        return Some(Reason::Hint);
    }
    if s.isolation.serializable() {
        return Some(Reason::Serializable);
    }
    if s.pins.has(PinCause::TempObject) {
        let user_functions = input.batch.verdicts().any(|v| !v.functions.is_empty());
        if user_functions || may_see_temp(input) {
            return Some(Reason::Pinned(PinCause::TempObject));
        }
    }
    // A cursor lives where it was declared (WITH HOLD: at home).
    if input
        .batch
        .verdicts()
        .any(|v| v.why == Why::Cursor && s.pins.has(PinCause::HoldCursor))
    {
        return Some(Reason::Pinned(PinCause::HoldCursor));
    }
    None
}

/// Whether any SQL the batch runs may name one of the session's temp
/// objects: its own text, and the statements it binds or EXECUTEs.
fn may_see_temp(input: &Input) -> bool {
    let s = input.session;
    if s.may_see_temp(input.bytes) {
        return true;
    }
    for msg in &input.batch.msgs {
        let text: Option<&[u8]> = match &msg.kind {
            Kind::Bind { statement } | Kind::DescribeStatement { name: statement } => {
                let name = msg.slice(input.bytes, statement);
                if name.is_empty() {
                    s.statements.unnamed.as_ref().map(|u| &u.parse[..])
                } else {
                    s.statements.named.get(name).map(|p| &p.key.body[..])
                }
            }
            _ => None,
        };
        if text.is_some_and(|t| s.may_see_temp(t)) {
            return true;
        }
    }
    input.batch.verdicts().any(|v| {
        v.effects.iter().any(|e| match e {
            Effect::Execute { name, .. } => s
                .statements
                .sql
                .get(name.as_str())
                .is_some_and(|p| s.may_see_temp(p.text.as_bytes())),
            _ => false,
        })
    })
}

/// Whether the read names an unlogged relation (a standby cannot read one).
/// Err: relations to look up first.
fn unlogged(input: &Input) -> Result<bool, Vec<Lookup>> {
    let mut lookups = Vec::new();
    for name in input.batch.verdicts().flat_map(|v| v.relations.iter()) {
        match input.catalog.relation_unlogged(name) {
            Some(true) => return Ok(true),
            Some(false) => {}
            None if input.looked_up => {}
            None => {
                let l = Lookup::Relation(name.clone());
                if !lookups.contains(&l) {
                    lookups.push(l);
                }
            }
        }
    }
    if lookups.is_empty() {
        Ok(false)
    } else {
        Err(lookups)
    }
}

/// The floor a read must meet under the configured mode. A read the
/// session or its comment sends to a replica on purpose (`pgsplit.route =
/// replica`, `/* pgsplit:replica */`) waives its own writes' floor; a
/// causal token still holds.
fn floor_for(input: &Input) -> Floor {
    let floor = input.session.floor;
    let waived = input.session.route == Some(RouteMode::Replica)
        || input
            .batch
            .verdicts()
            .any(|v| v.hint == Some(RouteMode::Replica));
    if waived {
        return Floor {
            committed_before: None,
            ..floor
        };
    }
    match input.policy.consistency {
        ConsistencyMode::Lsn => floor,
        // A causal token holds in every mode.
        ConsistencyMode::Window | ConsistencyMode::Off => Floor {
            committed_before: None,
            ..floor
        },
    }
}

/// A replica for a read: the next in the weighted schedule that has what
/// the session must see; else the primary, or a wait for positions.
fn replica_for_read(input: &Input) -> Decision {
    let snapshot = input.snapshot;
    let schedule = &snapshot.read_schedule;
    if schedule.is_empty() {
        return send(To::Primary, Reason::NoReplica);
    }
    if input.policy.consistency == ConsistencyMode::Window
        && input
            .session
            .floor
            .wrote_at
            .is_some_and(|at| input.now.saturating_duration_since(at) < input.policy.window)
    {
        return send(To::Primary, Reason::Consistency(RywOutcome::Window));
    }
    let floor = floor_for(input);
    let mut behind = false;
    for i in candidates(input) {
        if floor.is_empty() {
            return send(To::Replica(i), Reason::Read);
        }
        let check = if Some(i) == snapshot.primary {
            Check::Has
        } else {
            input.positions.check(i, &floor)
        };
        match check {
            Check::Has => {
                let ryw = if input.waited {
                    RywOutcome::Waited
                } else {
                    RywOutcome::Known
                };
                return Decision::Send(Route {
                    to: To::Replica(i),
                    reason: Reason::Read,
                    pin: None,
                    ryw: Some(ryw),
                });
            }
            Check::Behind => behind = true,
            Check::Unknown => {}
        }
    }
    if !input.waited && !input.policy.max_wait.is_zero() {
        return Decision::WaitPositions;
    }
    let outcome = if behind {
        RywOutcome::Behind
    } else {
        RywOutcome::Unknown
    };
    Decision::Send(Route {
        to: To::Primary,
        reason: Reason::Consistency(outcome),
        pin: None,
        ryw: Some(outcome),
    })
}

/// The read-only port's policy: replicas only; what must not run on one is
/// refused.
pub fn read_only(input: &Input) -> Decision {
    if let Some(decision) = deallocate(input) {
        return decision;
    }
    if let Some(refusal) = refusal(input) {
        return match input.flow {
            Flow::Pipelined { .. } => Decision::Hold,
            _ => Decision::Answer(Answer::Refuse(refusal)),
        };
    }
    if let Some(lookup) = function_call_lookup(input) {
        return match input.flow {
            Flow::Pipelined { .. } => Decision::Hold,
            _ => Decision::Lookup(vec![lookup]),
        };
    }
    match input.flow {
        Flow::InTransaction { .. } | Flow::BatchOpen { .. } | Flow::Described { .. } => {
            return send(To::Current, Reason::Listener)
        }
        Flow::Pipelined { .. } => return send(To::Current, Reason::Listener),
        Flow::Idle | Flow::DeferredBegin => {}
    }
    if input.batch.end == End::Copy {
        return send(To::Current, Reason::Listener);
    }
    if let Some(answer) = local_answer(input) {
        return Decision::Answer(answer);
    }
    // A pinned session stays where its state is; a session-mode one on
    // its own replica.
    if input.session.pins.is_pinned() {
        return send(To::Current, Reason::Pinned(pin_of(input.session)));
    }
    if input.home.is_some() {
        return send(To::Current, Reason::Listener);
    }
    let schedule = &input.snapshot.read_schedule;
    if schedule.is_empty() {
        return match input.policy.no_replica {
            NoReplica::Primary => send(To::ReadOnlyPrimary, Reason::NoReplica),
            NoReplica::Error => Decision::Answer(Answer::NoReplica),
        };
    }
    let floor = Floor {
        committed_before: None,
        wrote_at: None,
        ..input.session.floor
    };
    for i in candidates(input) {
        if floor.is_empty() {
            return send(To::Replica(i), Reason::Listener);
        }
        if Some(i) == input.snapshot.primary || input.positions.check(i, &floor) == Check::Has {
            return Decision::Send(Route {
                to: To::Replica(i),
                reason: Reason::Listener,
                pin: None,
                ryw: Some(if input.waited {
                    RywOutcome::Waited
                } else {
                    RywOutcome::Known
                }),
            });
        }
    }
    if !input.waited && !input.policy.max_wait.is_zero() {
        return Decision::WaitPositions;
    }
    // No replica has the token's commit yet: the primary, read-only.
    Decision::Send(Route {
        to: To::ReadOnlyPrimary,
        reason: Reason::Consistency(RywOutcome::Behind),
        pin: None,
        ryw: Some(RywOutcome::Behind),
    })
}

/// Replicas to try for a read, in order: the session's own, while in
/// rotation, then the weighted schedule from the current ticket.
fn candidates<'a>(input: &'a Input) -> impl Iterator<Item = usize> + 'a {
    let schedule = &input.snapshot.read_schedule;
    let start = input.ticket % schedule.len().max(1);
    let preferred = input.preferred.filter(|p| schedule.contains(p));
    preferred.into_iter().chain(
        (0..schedule.len())
            .map(move |k| schedule[(start + k) % schedule.len()])
            .filter(move |i| Some(*i) != preferred),
    )
}

fn pin_of(session: &SessionState) -> PinCause {
    session.pins.causes().next().unwrap_or(PinCause::Other)
}

/// A fastpath call on the read-only port whose function is not known yet.
fn function_call_lookup(input: &Input) -> Option<Lookup> {
    input.batch.msgs.iter().find_map(|m| match m.kind {
        Kind::FunctionCall { oid } if input.catalog.function_oid(oid).is_none() => {
            (!input.looked_up).then_some(Lookup::FunctionOid(oid))
        }
        _ => None,
    })
}

/// Whether the read-only port must refuse the batch.
fn refusal(input: &Input) -> Option<Refusal> {
    let session = input.session;
    let forbidden_sql = |v: &Verdict| -> Option<Refusal> {
        if v.replica_forbidden {
            return Some(Refusal::Write);
        }
        for effect in &v.effects {
            match effect {
                Effect::Execute { name, runs: true }
                    if session
                        .statements
                        .sql
                        .get(name.as_str())
                        .is_some_and(|p| p.forbidden) =>
                {
                    return Some(Refusal::Write);
                }
                Effect::Begin {
                    read_only: Some(false),
                    ..
                }
                | Effect::SetTransaction {
                    read_only: Some(false),
                    ..
                } => return Some(Refusal::ReadWrite),
                Effect::Set {
                    name,
                    value: Some(value),
                    ..
                } if matches!(
                    name.as_str(),
                    "default_transaction_read_only" | "transaction_read_only"
                ) && matches!(value.as_str(), "off" | "false" | "0" | "no") =>
                {
                    return Some(Refusal::ReadWrite)
                }
                _ => {}
            }
        }
        None
    };
    for msg in &input.batch.msgs {
        let refused = match &msg.kind {
            Kind::Query(v) | Kind::Parse { verdict: v, .. } => forbidden_sql(v),
            Kind::FunctionCall { oid } => match input.catalog.function_oid(*oid) {
                Some(allowed) => (!allowed).then_some(Refusal::FunctionCall),
                None if input.looked_up => Some(Refusal::FunctionCall),
                None => None,
            },
            _ => None,
        };
        if refused.is_some() {
            return refused;
        }
    }
    None
}
