//! Where a statement would go in a fresh read-write session, and why,
//! without running it: the admin console's `EXPLAIN ROUTE <sql>` (the live
//! topology and catalog cache) and `pgsplit explain "<sql>"` (offline: a
//! stand-in primary and replica, the built-in function lists only).
//!
//! Pure: the statement is framed as a simple Query, classified, and routed
//! by `router::route` with an empty session state at an idle point, exactly
//! as a session would route it. Function names the classifier cannot settle
//! are looked up in what the caller's catalog view already knows; one it
//! does not know is reported ("the session would look it up") and counted
//! as a write, as a session does when a look-up finds nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::classify::{Access, Classifier, Effect, RouteMode, Verdict};
use crate::config::{Consistency, Routing};
use crate::consistency::{Check, Floor};
use crate::router::{self, Answer, Decision, Flow, Listener, Lookup, Policy, To};
use crate::session::batch::Batch;
use crate::session::state::SessionState;
use crate::topology::Snapshot;

/// What a caller's catalog knows, and where it learned it.
pub trait Facts: router::Catalog {
    /// Where the answer for function `name` came from ("pg_proc of database
    /// app"), if there is one.
    fn function_source(&self, name: &str) -> Option<String>;
}

/// A catalog that knows nothing (the offline command).
pub struct NoCatalog;

impl router::Catalog for NoCatalog {
    fn function(&self, _: &str) -> Option<router::FunctionInfo> {
        None
    }
    fn relation_unlogged(&self, _: &str) -> Option<bool> {
        None
    }
    fn function_oid(&self, _: u32) -> Option<bool> {
        None
    }
}

impl Facts for NoCatalog {
    fn function_source(&self, _: &str) -> Option<String> {
        None
    }
}

/// A fresh session has no read-your-writes floor: positions are never
/// asked.
struct NoFloor;

impl router::Positions for NoFloor {
    fn check(&self, _: usize, _: &Floor) -> Check {
        Check::Unknown
    }
}

/// Everything the explanation depends on besides the statement.
pub struct Context<'a> {
    pub classifier: &'a Classifier,
    pub snapshot: &'a Snapshot,
    pub catalog: &'a dyn Facts,
    pub policy: Policy,
    /// Position in the read schedule (which replica a new session reads
    /// from next).
    pub ticket: usize,
    /// Name backends in the route ("replica pg2"); offline there are none
    /// to name ("a replica").
    pub name_backends: bool,
}

/// See the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Where it would run: "replica pg2", "primary pg1", "answered by
    /// pgsplit (...)".
    pub route: String,
    /// The routing reason's metric label (`pgsplit_statements_total`), or
    /// `answered`.
    pub reason: &'static str,
    /// The classifier's verdict: `read` or `write`.
    pub access: &'static str,
    /// Its `why` label (the first write's kind, else the first statement's).
    pub why: &'static str,
    /// Statements in the text (0: it does not parse).
    pub statements: usize,
    /// Functions the lists could not settle, each with what is known.
    pub functions: Vec<String>,
    /// Relations a read names (checked for unlogged ones).
    pub relations: Vec<String>,
    /// Transaction and session effects, in words.
    pub effects: Vec<String>,
    /// A `/* pgsplit:... */` hint.
    pub hint: Option<&'static str>,
    /// It asks about the server itself or a node's own state.
    pub primary_only: bool,
    /// Anything else worth knowing (look-ups the session would make, a pin).
    pub notes: Vec<String>,
}

/// Explains `sql`; see the module doc. Never fails: what cannot be parsed
/// is a write, as it is for a session.
pub fn explain(sql: &str, ctx: &Context) -> Explanation {
    let mut bytes = BytesMut::new();
    crate::protocol::encode::query(&mut bytes, sql);
    let mut batch = Batch::default();
    let framed = batch.frame(&bytes, bytes.len() + 1, usize::MAX, |text| {
        Arc::new(match std::str::from_utf8(text) {
            Ok(text) => ctx.classifier.classify_uncached(text),
            Err(_) => Verdict::write(crate::classify::Why::Unparsable),
        })
    });
    let verdict = match (framed, batch.single_query()) {
        (Ok(true), Some(v)) => Arc::clone(v),
        _ => Arc::new(Verdict::write(crate::classify::Why::Unparsable)),
    };
    let session = SessionState::default();
    let decide = |looked_up: bool| {
        router::route(&router::Input {
            listener: Listener::ReadWrite,
            batch: &batch,
            bytes: &bytes,
            session: &session,
            flow: Flow::Idle,
            snapshot: ctx.snapshot,
            catalog: ctx.catalog,
            positions: &NoFloor,
            policy: ctx.policy,
            ticket: ctx.ticket,
            preferred: None,
            now: Instant::now(),
            retry: false,
            waited: false,
            looked_up,
            home: None,
            known_parse: false,
        })
    };
    let mut notes = Vec::new();
    let mut decision = decide(false);
    if let Decision::Lookup(lookups) = &decision {
        let mut relations = Vec::new();
        for lookup in lookups {
            match lookup {
                Lookup::Function(name) => notes.push(format!(
                    "unknown function {name}: the session would look it up in pg_proc first; \
                     this answer takes it as not found (a write), an immutable or stable one is a read"
                )),
                Lookup::Relation(name) => relations.push(&**name),
                Lookup::FunctionOid(oid) => {
                    notes.push(format!("function OID {oid}: the session would look it up"))
                }
            }
        }
        if !relations.is_empty() {
            notes.push(format!(
                "relations {}: the session would check pg_class for unlogged ones first; \
                 this answer takes none as unlogged (an unlogged one sends the read to the primary)",
                relations.join(", ")
            ));
        }
        decision = decide(true);
    }
    let (route, reason) = describe_decision(&decision, ctx, &mut notes);
    let functions = verdict
        .functions
        .iter()
        .map(|name| describe_function(name, ctx.catalog))
        .collect();
    Explanation {
        route,
        reason,
        access: match verdict.access {
            Access::Read => "read",
            Access::Write => "write",
        },
        why: verdict.why.label(),
        statements: verdict.statements,
        functions,
        relations: verdict.relations.iter().map(|r| r.to_string()).collect(),
        effects: verdict.effects.iter().map(describe_effect).collect(),
        hint: verdict.hint.map(|h| match h {
            RouteMode::Primary => "primary",
            RouteMode::Replica => "replica",
            RouteMode::Auto => "auto",
        }),
        primary_only: verdict.primary_only,
        notes,
    }
}

fn describe_decision(
    decision: &Decision,
    ctx: &Context,
    notes: &mut Vec<String>,
) -> (String, &'static str) {
    let named = |i: usize, kind: &str| {
        if ctx.name_backends {
            format!("{kind} {}", ctx.snapshot.name(i))
        } else {
            format!("a {kind}")
        }
    };
    let primary = || {
        match ctx.snapshot.primary {
        Some(p) if ctx.name_backends => named(p, "primary"),
        Some(_) => "the primary".to_owned(),
        None => "the primary (none is known now: the session would wait for one, up to health.failover_timeout_ms)".to_owned(),
    }
    };
    match decision {
        Decision::Send(route) => {
            if let Some(pin) = route.pin {
                notes.push(format!(
                    "the session would be pinned to its connection ({})",
                    pin.label()
                ));
            }
            let to = match route.to {
                To::Primary | To::Current => primary(),
                To::Replica(i) if Some(i) == ctx.snapshot.primary => {
                    format!("{} (serving reads by its weight)", primary())
                }
                To::Replica(i) => named(i, "replica"),
                To::ReadOnlyPrimary => format!("{} (read-only)", primary()),
            };
            (to, route.reason.label())
        }
        Decision::Answer(answer) => {
            let what = match answer {
                Answer::Begin => {
                    "BEGIN, deferred: the statement after it decides where the transaction runs"
                        .to_owned()
                }
                Answer::EndDeferred { .. } => "the end of a deferred BEGIN".to_owned(),
                Answer::PgsplitSetting => "a pgsplit setting, kept by the session".to_owned(),
                Answer::BadSetting => "error 22023: a bad pgsplit.min_lsn".to_owned(),
                Answer::Deallocate { .. } => "DEALLOCATE of the session's statements".to_owned(),
                Answer::NoSuchStatement(name) => {
                    format!("error 26000: prepared statement \"{name}\" does not exist")
                }
                Answer::TransactionAborted => "error 25P02".to_owned(),
                Answer::DiscardAll => "DISCARD ALL of a session holding nothing".to_owned(),
                Answer::Refuse(_) => "error 25006".to_owned(),
                Answer::NoReplica => "error 57P03: no replica".to_owned(),
                Answer::Parse => "ParseComplete for a statement servers already parsed".to_owned(),
            };
            (format!("answered by pgsplit ({what})"), "answered")
        }
        // A fresh session at an idle point has nothing in flight and no
        // floor: these do not happen; say so rather than guess.
        Decision::Hold | Decision::Settle | Decision::WaitPositions | Decision::Lookup(_) => {
            (format!("undecided ({decision:?})"), "undecided")
        }
    }
}

fn describe_function(name: &str, catalog: &dyn Facts) -> String {
    match catalog.function(name) {
        None => format!("{name}: unknown function: the session would look it up"),
        Some(info) => {
            let source = catalog
                .function_source(name)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            let kind = if info.read {
                "immutable or stable: a read"
            } else {
                "volatile or missing: a write"
            };
            let sets = if info.sets_config {
                "; its body changes settings (pins the session)"
            } else {
                ""
            };
            format!("{name}: {kind}{sets}{source}")
        }
    }
}

/// One effect in words.
pub fn describe_effect(effect: &Effect) -> String {
    let read_only = |r: &Option<bool>| match r {
        Some(true) => " read only",
        Some(false) => " read write",
        None => "",
    };
    let serializable = |s: bool| if s { " serializable" } else { "" };
    match effect {
        Effect::Begin {
            read_only: r,
            serializable: s,
        } => format!("begins a transaction{}{}", read_only(r), serializable(*s)),
        Effect::SetTransaction {
            read_only: r,
            serializable: s,
        } => format!("sets the transaction{}{}", read_only(r), serializable(*s)),
        Effect::Commit { chain } => format!("commits{}", if *chain { " and chains" } else { "" }),
        Effect::Rollback { chain } => {
            format!("rolls back{}", if *chain { " and chains" } else { "" })
        }
        Effect::RollbackToSavepoint => "rolls back to a savepoint".to_owned(),
        Effect::Set { name, local, .. } => {
            format!("sets {name}{}", if *local { " (local)" } else { "" })
        }
        Effect::Reset { name } => format!("resets {name}"),
        Effect::ResetAll => "resets all settings".to_owned(),
        Effect::DiscardAll => "discards all session state".to_owned(),
        Effect::DiscardTemp => "discards temporary objects".to_owned(),
        Effect::Prepare { name, read, .. } => format!(
            "prepares {name} (a {})",
            if *read { "read" } else { "write" }
        ),
        Effect::Execute { name, runs } => {
            format!("{} {name}", if *runs { "executes" } else { "explains" })
        }
        Effect::Deallocate { name: Some(name) } => format!("deallocates {name}"),
        Effect::Deallocate { name: None } => "deallocates all".to_owned(),
        Effect::Pin(cause) => format!("pins the session ({})", cause.label()),
        Effect::Listen(channel) => format!("listens on {channel}"),
        Effect::Unlisten(Some(channel)) => format!("stops listening on {channel}"),
        Effect::Unlisten(None) => "stops listening".to_owned(),
        Effect::HoldCursor(name) => format!("declares holdable cursor {name}"),
        Effect::CloseCursor(Some(name)) => format!("closes cursor {name}"),
        Effect::CloseCursor(None) => "closes all cursors".to_owned(),
        Effect::TempObject(name) => format!("creates temporary {name}"),
        Effect::AdvisoryUnlockAll => "releases all advisory locks".to_owned(),
        Effect::Route(mode) => format!(
            "sets pgsplit.route = {}",
            match mode {
                RouteMode::Primary => "primary",
                RouteMode::Replica => "replica",
                RouteMode::Auto => "auto",
            }
        ),
        Effect::MinLsn(Some(lsn)) => format!("sets pgsplit.min_lsn = {lsn}"),
        Effect::MinLsn(None) => "resets pgsplit.min_lsn".to_owned(),
    }
}

/// A topology for the offline command: one primary and one replica in
/// rotation, both up.
pub fn offline_snapshot() -> Snapshot {
    use crate::topology::{BackendStatus, Role};
    let backend = |name: &str, role: Role| BackendStatus {
        name: name.to_owned(),
        address: String::new(),
        weight: 1,
        role,
        healthy: true,
        in_rotation: role == Role::Replica,
        drained: false,
        lag_bytes: None,
        lag_ms: None,
        replay_lsn: None,
        current_lsn: None,
        timeline: Some(1),
        reason: None,
        last_error: None,
    };
    Snapshot {
        generation: 1,
        routing_epoch: 1,
        backends: vec![
            backend("primary", Role::Primary),
            backend("replica", Role::Replica),
        ],
        primary: Some(0),
        primaries_seen: 1,
        read_schedule: vec![1],
        complete: true,
    }
}

/// The routing policy of a configuration's sections (a fresh session has
/// no floor, so read-your-writes plays no part).
pub fn policy(consistency: &Consistency, routing: &Routing) -> Policy {
    Policy {
        consistency: consistency.mode,
        window: Duration::from_millis(consistency.window_ms),
        max_wait: Duration::from_millis(consistency.max_wait_ms),
        no_replica: routing.no_replica,
    }
}

/// The classifier a configuration's routing section makes (no cache: one
/// statement is explained).
pub fn classifier(routing: &Routing) -> Classifier {
    Classifier::new(&routing.read_functions, &routing.write_functions, 0)
        .with_primary_relations(&routing.primary_relations)
}

/// `pgsplit explain`: the offline explanation of `sql` under `routing`
/// (the built-in function lists, plus the configured ones when given).
pub fn offline(sql: &str, consistency: &Consistency, routing: &Routing) -> Explanation {
    let snapshot = offline_snapshot();
    explain(
        sql,
        &Context {
            classifier: &classifier(routing),
            snapshot: &snapshot,
            catalog: &NoCatalog,
            policy: policy(consistency, routing),
            ticket: 0,
            name_backends: false,
        },
    )
}

impl Explanation {
    /// The plain-text form `pgsplit explain` prints: one `field: value` line
    /// each.
    pub fn to_text(&self) -> String {
        let list = |items: &[String], none: &str| {
            if items.is_empty() {
                none.to_owned()
            } else {
                items.join("; ")
            }
        };
        let mut out = String::new();
        let mut line = |field: &str, value: &str| {
            out.push_str(&format!("{field:<14}{value}\n"));
        };
        line("route:", &self.route);
        line("reason:", self.reason);
        line("verdict:", &format!("{} ({})", self.access, self.why));
        line("statements:", &self.statements.to_string());
        line("functions:", &list(&self.functions, "none to look up"));
        line("relations:", &list(&self.relations, "none"));
        line("effects:", &list(&self.effects, "none"));
        line("hint:", self.hint.unwrap_or("none"));
        line(
            "primary only:",
            if self.primary_only { "yes" } else { "no" },
        );
        for note in &self.notes {
            line("note:", note);
        }
        out
    }
}

#[cfg(test)]
mod tests;
