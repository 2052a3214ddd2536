//! Where a session's statements go: listener + topology snapshot -> backend.
//!
//! This stage routes per session: the read-write listener goes to the current
//! primary; the read-only listener to a replica taken from the snapshot's
//! weighted schedule, or, with no replica available, to the primary with
//! `default_transaction_read_only = on`. When unsure, the primary.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::NoReplica;
use crate::topology::{Role, Snapshot, Topology};

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

/// What a request needs: the primary, or any replica in read rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    Primary,
    Replica,
}

impl Dest {
    /// The `target` label of statement metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Dest::Primary => "primary",
            Dest::Replica => "replica",
        }
    }

    /// The listener whose routing rule picks a backend for this destination.
    pub fn rule(self) -> Listener {
        match self {
            Dest::Primary => Listener::ReadWrite,
            Dest::Replica => Listener::ReadOnly,
        }
    }
}

/// A backend chosen for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into the configured backends.
    pub backend: usize,
    pub name: String,
    pub address: String,
    /// Log in with `default_transaction_read_only = on` (a read-only session
    /// that fell back to the primary).
    pub read_only: bool,
}

/// No backend could be chosen in time.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Backends answer, but none may take this session (all in recovery, or
    /// two claim to be primary).
    #[error("no primary available after waiting {waited_ms} ms: {situation}")]
    NoPrimary { waited_ms: u128, situation: String },
    /// No backend answers at all.
    #[error("pgsplit could not reach any backend after waiting {waited_ms} ms: {situation}")]
    Unreachable { waited_ms: u128, situation: String },
    /// No replica may serve reads and `routing.no_replica = "error"`.
    #[error("no replica is available for reads (routing.no_replica = \"error\"): {situation}")]
    NoReplica { situation: String },
}

impl RouteError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            // cannot_connect_now: expected to pass (a failover in progress).
            RouteError::NoPrimary { .. } | RouteError::NoReplica { .. } => {
                crate::error::sqlstate::CANNOT_CONNECT_NOW
            }
            RouteError::Unreachable { .. } => crate::error::sqlstate::CANNOT_CONNECT,
        }
    }
}

fn target(snapshot: &Snapshot, backend: usize, read_only: bool) -> Target {
    let b = &snapshot.backends[backend];
    Target {
        backend,
        name: b.name.clone(),
        address: b.address.clone(),
        read_only,
    }
}

fn describe(snapshot: &Snapshot) -> String {
    if snapshot.primaries_seen > 1 {
        let names: Vec<&str> = snapshot
            .backends
            .iter()
            .filter(|b| b.healthy && b.role == Role::Primary)
            .map(|b| b.name.as_str())
            .collect();
        return format!(
            "{} backends claim to be primary ({}); refusing to guess",
            names.len(),
            names.join(", ")
        );
    }
    let down: Vec<String> = snapshot
        .backends
        .iter()
        .filter(|b| !b.healthy)
        .map(|b| {
            format!(
                "{} ({})",
                b.name,
                b.last_error.as_deref().unwrap_or("not probed yet")
            )
        })
        .collect();
    if down.is_empty() {
        "every reachable backend is in recovery".into()
    } else {
        format!("unreachable: {}", down.join(", "))
    }
}

/// Picks a backend for a session on `listener`, waiting up to `wait` for the
/// topology to offer one. `exclude` lists backends that just failed to
/// connect. Cancel-safe.
pub async fn choose(
    topology: &Topology,
    listener: Listener,
    no_replica: NoReplica,
    wait: Duration,
    exclude: &[usize],
) -> Result<Target, RouteError> {
    let start = Instant::now();
    let deadline = start + wait;
    let mut changes = topology.subscribe();
    loop {
        let snapshot = topology.snapshot();
        let now = Instant::now();
        if let Some(target) = pick(
            topology,
            &snapshot,
            listener,
            no_replica,
            exclude,
            now >= deadline,
        )? {
            return Ok(target);
        }
        if now >= deadline {
            let waited_ms = (now - start).as_millis();
            let situation = describe(&snapshot);
            return Err(if snapshot.backends.iter().any(|b| b.healthy) {
                RouteError::NoPrimary {
                    waited_ms,
                    situation,
                }
            } else {
                RouteError::Unreachable {
                    waited_ms,
                    situation,
                }
            });
        }
        // A new snapshot or the deadline, whichever comes first.
        let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
    }
}

/// One attempt against one snapshot: Ok(None) means "wait for the next one".
fn pick(
    topology: &Topology,
    snapshot: &Snapshot,
    listener: Listener,
    no_replica: NoReplica,
    exclude: &[usize],
    last_try: bool,
) -> Result<Option<Target>, RouteError> {
    let primary = snapshot.primary.filter(|p| !exclude.contains(p));
    match listener {
        Listener::ReadWrite => Ok(primary.map(|p| target(snapshot, p, false))),
        // Until every backend has answered once, wait: the replicas may be a
        // probe away, and reads should not land on the primary by accident.
        Listener::ReadOnly if !snapshot.complete && !last_try => Ok(None),
        Listener::ReadOnly => {
            for _ in 0..snapshot.read_schedule.len() {
                match topology.next_reader(snapshot) {
                    Some(i) if !exclude.contains(&i) => {
                        // The primary, when it serves reads, still refuses writes here.
                        return Ok(Some(target(snapshot, i, Some(i) == snapshot.primary)));
                    }
                    _ => {}
                }
            }
            match no_replica {
                NoReplica::Primary => Ok(primary.map(|p| target(snapshot, p, true))),
                NoReplica::Error if snapshot.complete => Err(RouteError::NoReplica {
                    situation: describe_readers(snapshot),
                }),
                NoReplica::Error => Ok(None),
            }
        }
    }
}

fn describe_readers(snapshot: &Snapshot) -> String {
    let parts: Vec<String> = snapshot
        .backends
        .iter()
        .filter(|b| b.role != Role::Primary)
        .map(|b| {
            format!(
                "{}: {}",
                b.name,
                b.reason.as_deref().unwrap_or("unavailable")
            )
        })
        .collect();
    if parts.is_empty() {
        "no replicas configured".into()
    } else {
        parts.join("; ")
    }
}
