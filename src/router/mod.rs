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

mod contents;
mod read_only;
mod read_write;
mod reason;
mod replicas;
pub use read_only::read_only;
pub use read_write::read_write;
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
    /// A lone named Parse of a statement servers already parsed, between
    /// transactions: ParseComplete, ReadyForQuery I. The statement is
    /// prepared on whichever connection first binds it.
    Parse,
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
    /// The batch's Parse is of a statement a server has already parsed
    /// (see `pool::statements`).
    pub known_parse: bool,
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
    if input.known_parse
        && input.batch.lone_named_parse().is_some()
        && input.flow == Flow::Idle
        && input.home.is_none()
    {
        // No server is needed until the statement is bound; a pooled
        // client that prepares (libpq's PQprepare) does not wait for a
        // connection only to hear ParseComplete.
        return Some(Answer::Parse);
    }
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
