//! From a routing decision to a backend: the primary (waiting for one to be
//! elected, up to `health.failover_timeout_ms`), a replica by index, and
//! whether a connection still fits what it serves after the topology moved.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::{ServerConn, Target};
use crate::router::On;
use crate::topology::{Role, Snapshot, Topology};

/// No backend could be chosen in time.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Backends answer, but none is the primary (all in recovery, or two
    /// claim it).
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

/// Backend `i` of `snapshot`.
pub fn backend(snapshot: &Snapshot, i: usize) -> Target {
    let b = &snapshot.backends[i];
    Target {
        backend: i,
        name: Arc::from(b.name.as_str()),
        address: Arc::from(b.address.as_str()),
    }
}

/// The primary, waiting up to `wait` for the topology to know one.
pub async fn primary(topology: &Topology, wait: Duration) -> Result<Target, RouteError> {
    let start = Instant::now();
    let deadline = start + wait;
    let mut changes = topology.subscribe();
    loop {
        let snapshot = topology.snapshot();
        if let Some(p) = snapshot.primary {
            return Ok(backend(&snapshot, p));
        }
        if Instant::now() >= deadline {
            let waited_ms = start.elapsed().as_millis();
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
        let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
    }
}

/// Waits (up to `wait`) until every backend has been probed once, so reads
/// do not land on the primary only because the replicas are a probe away.
pub async fn complete(topology: &Topology, wait: Duration) {
    let deadline = Instant::now() + wait;
    let mut changes = topology.subscribe();
    while !topology.snapshot().complete {
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Why nothing can take writes, in a sentence.
pub fn describe(snapshot: &Snapshot) -> String {
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

/// Where a read goes when no replica can take it (`routing.no_replica`):
/// the primary in read-only mode, or an error that says why.
pub fn without_replica(
    no_replica: crate::config::NoReplica,
    snapshot: &Snapshot,
) -> Result<On, RouteError> {
    match no_replica {
        crate::config::NoReplica::Primary => Ok(On::ReadOnlyPrimary),
        crate::config::NoReplica::Error => Err(RouteError::NoReplica {
            situation: describe_readers(snapshot),
        }),
    }
}

/// Why no replica serves reads, in a sentence.
pub fn describe_readers(snapshot: &Snapshot) -> String {
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

/// The index of `conn`'s backend in `snapshot` (matched by name and address:
/// a reload may shift indexes).
pub fn index_of(snapshot: &Snapshot, conn: &ServerConn) -> Option<usize> {
    snapshot
        .backends
        .iter()
        .position(|b| *b.name == *conn.name && *b.address == *conn.address)
}

/// Whether `conn` may still serve what `on` says.
pub fn eligible(snapshot: &Snapshot, on: On, conn: &ServerConn) -> bool {
    let Some(i) = index_of(snapshot, conn) else {
        return false;
    };
    match on {
        On::Primary => snapshot.primary == Some(i),
        On::Replica(_) => snapshot.read_schedule.contains(&i),
        // A read-only fallback on the primary moves as soon as a replica
        // may serve.
        On::ReadOnlyPrimary => snapshot.primary == Some(i) && snapshot.read_schedule.is_empty(),
    }
}
