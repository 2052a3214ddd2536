//! What pgsplit knows about its backends: which one is the primary, which
//! replicas may serve reads, and whether each is reachable.
//!
//! Probe tasks ([`probe`]) write observations; everyone else reads an immutable
//! [`Snapshot`] through `ArcSwap` (one atomic load, no lock) and may wait for the
//! next one through a `watch` channel. Roles are always discovered
//! (`pg_is_in_recovery()`), never configured.

pub mod probe;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;

/// A backend's role as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Never reached, or unreachable since the last observation.
    Unknown,
    Primary,
    Replica,
}

/// One backend as the current snapshot sees it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub weight: u32,
    pub role: Role,
    pub healthy: bool,
    /// The last probe error, if the last probe failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// An immutable view of all backends. Cheap to clone (it is behind an `Arc`).
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Increases with every published change.
    pub generation: u64,
    pub backends: Vec<BackendStatus>,
    /// Index of the primary, when exactly one healthy backend is out of recovery.
    pub primary: Option<usize>,
    /// Healthy backends that claim to be primary (more than one means split brain).
    pub primaries_seen: usize,
    /// Replica indexes in smooth weighted round-robin order; a read takes the
    /// next entry. Empty when no replica may serve reads.
    #[serde(skip)]
    pub read_schedule: Vec<usize>,
    /// True once every backend has been probed at least once.
    pub complete: bool,
}

impl Snapshot {
    fn build(generation: u64, backends: Vec<BackendStatus>, complete: bool) -> Snapshot {
        let primaries: Vec<usize> = (0..backends.len())
            .filter(|&i| backends[i].healthy && backends[i].role == Role::Primary)
            .collect();
        let primary = (primaries.len() == 1).then(|| primaries[0]);
        let replicas: Vec<(usize, u32)> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.healthy && b.role == Role::Replica && b.weight > 0)
            .map(|(i, b)| (i, b.weight))
            .collect();
        Snapshot {
            generation,
            read_schedule: smooth_weighted_schedule(&replicas),
            primaries_seen: primaries.len(),
            primary,
            backends,
            complete,
        }
    }
}

/// One full cycle of smooth weighted round robin (as in nginx's upstream
/// balancer): each entry appears `weight` times, interleaved as evenly as
/// possible. Weights are reduced by their common divisor so the cycle stays
/// short; the result is deterministic, so a 1:2 split is exact per cycle.
pub fn smooth_weighted_schedule(entries: &[(usize, u32)]) -> Vec<usize> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = entries.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    let weights: Vec<i64> = entries
        .iter()
        .map(|&(_, w)| i64::from((w / g).min(1000)))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; entries.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let best = (0..entries.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .expect("non-empty");
        current[best] -= total;
        out.push(entries[best].0);
    }
    out
}

/// What one probe saw.
#[derive(Debug, Clone)]
pub enum Observation {
    Up { in_recovery: bool },
    Down { error: String },
}

/// Shared topology state: the published snapshot and the probes' inputs.
pub struct Topology {
    current: ArcSwap<Snapshot>,
    changes: watch::Sender<u64>,
    /// Probe inputs; held only to build the next snapshot, never across `.await`.
    observed: Mutex<Observed>,
    /// Position in the read schedule, shared across snapshots.
    next_read: AtomicUsize,
}

struct Observed {
    generation: u64,
    backends: Vec<BackendStatus>,
    probed: Vec<bool>,
}

impl Topology {
    pub fn new(config: &Config) -> Arc<Topology> {
        let backends: Vec<BackendStatus> = config
            .backends
            .iter()
            .map(|b| BackendStatus {
                name: b.name.clone(),
                address: b.address.clone(),
                weight: b.weight,
                role: Role::Unknown,
                healthy: false,
                last_error: None,
            })
            .collect();
        let probed = vec![false; backends.len()];
        let (changes, _) = watch::channel(0);
        Arc::new(Topology {
            current: ArcSwap::from_pointee(Snapshot::build(0, backends.clone(), false)),
            changes,
            observed: Mutex::new(Observed {
                generation: 0,
                backends,
                probed,
            }),
            next_read: AtomicUsize::new(0),
        })
    }

    /// The current snapshot: one atomic load.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A receiver that wakes whenever a new snapshot is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Takes the next replica from the read schedule of `snapshot`.
    pub fn next_replica(&self, snapshot: &Snapshot) -> Option<usize> {
        if snapshot.read_schedule.is_empty() {
            return None;
        }
        let n = self.next_read.fetch_add(1, Ordering::Relaxed);
        Some(snapshot.read_schedule[n % snapshot.read_schedule.len()])
    }

    /// Records a probe result for backend `index`; publishes a new snapshot if
    /// anything visible changed. Logs role and health changes once.
    pub fn observe(&self, index: usize, observation: Observation) {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        let first = !observed.probed[index];
        observed.probed[index] = true;
        let b = &mut observed.backends[index];
        let (role, healthy, error) = match observation {
            Observation::Up { in_recovery } => (
                if in_recovery {
                    Role::Replica
                } else {
                    Role::Primary
                },
                true,
                None,
            ),
            Observation::Down { error } => (Role::Unknown, false, Some(error)),
        };
        let changed = b.role != role || b.healthy != healthy || first;
        if b.role != role || b.healthy != healthy {
            match &error {
                Some(e) => tracing::warn!(backend = %b.name, error = %e, "backend is down"),
                None => tracing::info!(backend = %b.name, role = ?role, "backend is up"),
            }
        }
        b.role = role;
        b.healthy = healthy;
        b.last_error = error;
        if changed {
            observed.generation += 1;
            let complete = observed.probed.iter().all(|&p| p);
            let snapshot =
                Snapshot::build(observed.generation, observed.backends.clone(), complete);
            self.current.store(Arc::new(snapshot));
            self.changes.send_replace(observed.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_follows_weights_exactly() {
        let s = smooth_weighted_schedule(&[(1, 1), (2, 2)]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().filter(|&&i| i == 2).count(), 2);
        // Interleaved, not bunched: 5:1 spreads the one among the five.
        let s = smooth_weighted_schedule(&[(0, 5), (1, 1)]);
        assert_eq!(s, vec![0, 0, 0, 1, 0, 0]);
        let s = smooth_weighted_schedule(&[(0, 1), (1, 1), (2, 2)]);
        assert_eq!(s, vec![2, 0, 1, 2]);
        assert!(smooth_weighted_schedule(&[]).is_empty());
        assert_eq!(smooth_weighted_schedule(&[(0, 100), (1, 200)]).len(), 3);
    }

    #[test]
    fn primary_needs_exactly_one_claimant() {
        let mk = |role, healthy| BackendStatus {
            name: "x".into(),
            address: "h:1".into(),
            weight: 1,
            role,
            healthy,
            last_error: None,
        };
        let s = Snapshot::build(
            1,
            vec![mk(Role::Primary, true), mk(Role::Replica, true)],
            true,
        );
        assert_eq!(s.primary, Some(0));
        assert_eq!(s.read_schedule, vec![1]);
        let s = Snapshot::build(
            1,
            vec![mk(Role::Primary, true), mk(Role::Primary, true)],
            true,
        );
        assert_eq!(s.primary, None);
        assert_eq!(s.primaries_seen, 2);
        let s = Snapshot::build(
            1,
            vec![mk(Role::Primary, false), mk(Role::Replica, false)],
            true,
        );
        assert_eq!(s.primary, None);
        assert!(s.read_schedule.is_empty());
    }
}
