//! What pgsplit knows about its backends: which one is the primary, which
//! replicas may serve reads, how far behind each is.
//!
//! Probe tasks ([`probe`]) feed observations to per-backend trackers
//! ([`health`]); every observation rebuilds an immutable [`Snapshot`] that
//! everyone else reads through `ArcSwap` (one atomic load, no lock). Two
//! `watch` channels announce new snapshots: one for every publish, one only
//! when routing changes (the primary or the set of readable backends), which
//! is what sessions listen to. Roles are always discovered, never configured.
//! The elected primary's probes also feed a [`lag::WalHistory`], which dates
//! the replicas' replay positions for their time lag. An operator may take a
//! backend out of read rotation by hand ([`Topology::set_drained`]), and
//! every change people care about is kept in a bounded ring of [`events`].

pub mod events;
pub mod health;
pub mod lag;
pub mod lsn;
pub mod probe;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::watch;

use self::events::{Change, Event, EventKind, Events};
use self::health::{Following, Tracker};
pub use self::health::{Observation, ProbeTime, Reading};
use self::lag::WalHistory;
pub use self::lsn::Lsn;
use crate::config::{Config, Health as HealthConfig, Routing};

/// A backend's role as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Down, or never reached.
    Unknown,
    Primary,
    Replica,
}

/// One backend as a snapshot sees it (also the `/status` JSON).
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub weight: u32,
    pub role: Role,
    /// Fewer than `fall` failed probes in a row since it last answered.
    pub healthy: bool,
    /// May serve reads now.
    pub in_rotation: bool,
    /// Taken out of read rotation by an operator (`DRAIN`), until `UNDRAIN`.
    pub drained: bool,
    /// Bytes of WAL the primary has flushed and the replica not replayed.
    pub lag_bytes: Option<u64>,
    /// How long ago the primary passed this replica's replay position (a
    /// lower bound, see [`lag::WalHistory::time_lag`]); 0 when caught up,
    /// `None` while no primary is known.
    pub lag_ms: Option<u64>,
    pub replay_lsn: Option<Lsn>,
    /// The primary's flushed WAL position (primaries only).
    pub current_lsn: Option<Lsn>,
    pub timeline: Option<u32>,
    /// Why it is out of rotation, fenced, or down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last probe error, while probes fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// An immutable view of all backends.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Increases with every publish.
    pub generation: u64,
    /// Increases only when the primary or the read schedule changes.
    pub routing_epoch: u64,
    pub backends: Vec<BackendStatus>,
    /// The one backend writes go to, if one can be told.
    pub primary: Option<usize>,
    /// Up backends that claim to be primary (more than one: split brain).
    pub primaries_seen: usize,
    /// Backend indexes in smooth weighted round-robin order; a read takes the
    /// next entry. Empty when nothing may serve reads.
    #[serde(skip)]
    pub read_schedule: Vec<usize>,
    /// True once every backend has been probed at least once.
    pub complete: bool,
}

impl Snapshot {
    /// Whether backend `i` may serve reads now.
    pub fn readable(&self, i: usize) -> bool {
        self.read_schedule.contains(&i)
    }

    pub fn name(&self, i: usize) -> &str {
        &self.backends[i].name
    }
}

/// One full cycle of smooth weighted round robin (the interleaving nginx's
/// upstream balancer uses): each entry appears `weight` times, spread as evenly
/// as possible. Weights are reduced by their common divisor so the cycle stays
/// short. Deterministic, so a 1:2 split is exact over every cycle, where
/// weighted random would only be close on average.
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

/// The outcome of primary election over the trackers.
#[derive(Debug, PartialEq, Eq)]
struct Election {
    primary: Option<usize>,
    claimants: Vec<usize>,
}

/// The primary is the one up backend not in recovery. When several claim it,
/// the one on the highest timeline wins (a promoted replica is on a newer
/// timeline than the primary it replaced); if that cannot be told, nobody does.
fn elect(trackers: &[Tracker], cfg: &HealthConfig) -> Election {
    let claimants: Vec<usize> = (0..trackers.len())
        .filter(|&i| trackers[i].is_primary_claim(cfg))
        .collect();
    let timeline = |i: usize| trackers[i].reading.as_ref().and_then(|r| r.timeline);
    let primary = match claimants.as_slice() {
        [] => None,
        [one] => Some(*one),
        many => {
            let best = many.iter().copied().max_by_key(|&i| timeline(i));
            best.filter(|&b| {
                timeline(b).is_some()
                    && many.iter().filter(|&&i| timeline(i) == timeline(b)).count() == 1
            })
        }
    };
    Election { primary, claimants }
}

/// Shared topology state: the published snapshot and the probes' inputs.
pub struct Topology {
    current: ArcSwap<Snapshot>,
    published: watch::Sender<u64>,
    routing: watch::Sender<u64>,
    /// Probe inputs; held only to build the next snapshot, never across `.await`.
    state: Mutex<State>,
    /// Position in the read schedule, shared across snapshots.
    next_read: AtomicUsize,
    primary_changes: Counter,
    /// What changed, for people; its own lock (readers never wait for a
    /// probe's publish).
    events: Mutex<Events>,
}

/// Why a drain was refused.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("no backend named {name:?} (backends: {known})")]
    UnknownBackend { name: String, known: String },
}

struct State {
    generation: u64,
    routing_epoch: u64,
    names: Vec<(String, String, u32)>,
    trackers: Vec<Tracker>,
    probed: Vec<bool>,
    health: HealthConfig,
    routing: Routing,
    last_primary: Option<usize>,
    /// The last backend elected primary, kept through gaps with none.
    last_elected: Option<usize>,
    last_schedule: Vec<usize>,
    /// Probes report with the generation they were started for; reports from
    /// probes of an older backend list are ignored.
    probe_generation: u64,
    /// The elected primary's WAL positions over time; emptied when the
    /// primary changes or none is elected.
    wal: WalHistory,
    /// Backends an operator took out of rotation, by name.
    drained: HashSet<String>,
}

impl Topology {
    /// `primary_changes` counts changes of the elected primary.
    pub fn new(config: &Config, primary_changes: Counter) -> Arc<Topology> {
        let names: Vec<(String, String, u32)> = config
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.address.clone(), b.weight))
            .collect();
        let n = names.len();
        let state = State {
            generation: 0,
            routing_epoch: 0,
            names,
            trackers: vec![Tracker::default(); n],
            probed: vec![false; n],
            health: config.health.clone(),
            routing: config.routing.clone(),
            last_primary: None,
            last_elected: None,
            last_schedule: Vec::new(),
            probe_generation: 0,
            wal: WalHistory::default(),
            drained: HashSet::new(),
        };
        let first = state.build();
        Arc::new(Topology {
            current: ArcSwap::from_pointee(first),
            published: watch::channel(0).0,
            routing: watch::channel(0).0,
            state: Mutex::new(state),
            next_read: AtomicUsize::new(0),
            primary_changes,
            events: Mutex::new(Events::default()),
        })
    }

    /// The last `n` topology events, oldest first.
    pub fn events(&self, n: usize) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last(n)
    }

    /// Keeps what changed from `old` to `new`, and `extra` first.
    fn record(&self, extra: Option<Change>, old: &Snapshot, new: &Snapshot) {
        let changes = events::diff(old, new);
        if extra.is_none() && changes.is_empty() {
            return;
        }
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(extra.into_iter().chain(changes));
    }

    /// Takes backend `name` out of read rotation (`drained`) or lets it back,
    /// by hand: it stays out, whatever its health, until undrained (a reload
    /// that keeps the backend keeps the flag). Writes are not affected: a
    /// drained primary still takes them. Returns whether anything changed.
    pub fn set_drained(&self, name: &str, drained: bool) -> Result<bool, DrainError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.names.iter().any(|(n, _, _)| n == name) {
            let known: Vec<&str> = state.names.iter().map(|(n, _, _)| n.as_str()).collect();
            return Err(DrainError::UnknownBackend {
                name: name.to_owned(),
                known: known.join(", "),
            });
        }
        let changed = if drained {
            state.drained.insert(name.to_owned())
        } else {
            state.drained.remove(name)
        };
        if !changed {
            return Ok(false);
        }
        if drained {
            tracing::warn!(backend = %name, "drained by an operator: out of read rotation");
        } else {
            tracing::warn!(backend = %name, "undrained by an operator");
        }
        state.generation += 1;
        let mut snapshot = state.build();
        let routing_changed =
            snapshot.primary != state.last_primary || snapshot.read_schedule != state.last_schedule;
        if routing_changed {
            state.routing_epoch += 1;
            state.last_primary = snapshot.primary;
            state.last_schedule = snapshot.read_schedule.clone();
        }
        snapshot.routing_epoch = state.routing_epoch;
        let generation = snapshot.generation;
        self.record(None, &self.current.load(), &snapshot);
        self.current.store(Arc::new(snapshot));
        drop(state);
        if routing_changed {
            self.routing.send_replace(generation);
        }
        self.published.send_replace(generation);
        Ok(true)
    }

    /// The current snapshot: one atomic load.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Wakes on every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Wakes only when the primary or the read schedule changes.
    pub fn subscribe_routing(&self) -> watch::Receiver<u64> {
        self.routing.subscribe()
    }

    /// The current position in the read schedule (see
    /// [`Topology::advance_ticket`]).
    pub fn ticket(&self) -> usize {
        self.next_read.load(Ordering::Relaxed)
    }

    /// Moves the read schedule on by one: each read sent to a replica takes
    /// the next entry, so weights hold exactly per cycle.
    pub fn advance_ticket(&self) {
        self.next_read.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the next entry of `snapshot`'s read schedule.
    pub fn next_reader(&self, snapshot: &Snapshot) -> Option<usize> {
        if snapshot.read_schedule.is_empty() {
            return None;
        }
        let n = self.next_read.fetch_add(1, Ordering::Relaxed);
        Some(snapshot.read_schedule[n % snapshot.read_schedule.len()])
    }

    /// The probe generation new probes must report with.
    pub fn probe_generation(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .probe_generation
    }

    /// Takes a new configuration: backends added or removed (matched by name
    /// and address, which keep their health history), weights, thresholds and
    /// routing settings. Publishes a new snapshot with a new routing epoch, so
    /// sessions re-check where they are. Returns the probe generation the new
    /// probes must use; older probes' reports are ignored from now on.
    pub fn reconfigure(&self, config: &Config) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let names: Vec<(String, String, u32)> = config
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.address.clone(), b.weight))
            .collect();
        let old_index = |name: &str, address: &str| {
            state
                .names
                .iter()
                .position(|(n, a, _)| n == name && a == address)
        };
        let map: Vec<Option<usize>> = names.iter().map(|(n, a, _)| old_index(n, a)).collect();
        let remap = |old: usize| map.iter().position(|m| *m == Some(old));
        state.trackers = map
            .iter()
            .map(|m| m.map(|i| state.trackers[i].clone()).unwrap_or_default())
            .collect();
        state.probed = map
            .iter()
            .map(|m| m.is_some_and(|i| state.probed[i]))
            .collect();
        for t in &mut state.trackers {
            t.following = match t.following {
                Following::Yes { primary } => match remap(primary) {
                    Some(primary) => Following::Yes { primary },
                    None => Following::Unknown,
                },
                Following::Pending { primary, at } => match remap(primary) {
                    Some(primary) => Following::Pending { primary, at },
                    None => Following::Unknown,
                },
                Following::Unknown => Following::Unknown,
            };
        }
        state
            .drained
            .retain(|name| names.iter().any(|(n, _, _)| n == name));
        state.last_primary = state.last_primary.and_then(remap);
        state.last_elected = state.last_elected.and_then(remap);
        let wal_source = state.wal.source().and_then(remap);
        state.wal.reindex(wal_source);
        state.last_schedule.clear();
        state.names = names;
        state.health = config.health.clone();
        state.routing = config.routing.clone();
        state.probe_generation += 1;
        state.generation += 1;
        state.routing_epoch += 1;
        let snapshot = state.build();
        state.follow_primary(snapshot.primary);
        state.last_primary = snapshot.primary;
        state.last_schedule = snapshot.read_schedule.clone();
        let (generation, probe_generation) = (snapshot.generation, state.probe_generation);
        let old = self.current.load();
        let added: Vec<&str> = snapshot
            .backends
            .iter()
            .filter(|b| !old.backends.iter().any(|o| o.name == b.name))
            .map(|b| b.name.as_str())
            .collect();
        let removed: Vec<&str> = old
            .backends
            .iter()
            .filter(|o| !snapshot.backends.iter().any(|b| b.name == o.name))
            .map(|o| o.name.as_str())
            .collect();
        let mut detail = format!(
            "configuration applied ({} backends)",
            snapshot.backends.len()
        );
        if !added.is_empty() {
            detail += &format!("; added {}", added.join(", "));
        }
        if !removed.is_empty() {
            detail += &format!("; removed {}", removed.join(", "));
        }
        self.record(
            Some(Change::new(EventKind::Reload, None, detail)),
            &old,
            &snapshot,
        );
        self.current.store(Arc::new(snapshot));
        drop(state);
        // Routing first: whoever sees the new generation also sees the change.
        self.routing.send_replace(generation);
        self.published.send_replace(generation);
        probe_generation
    }

    /// Records a probe result for backend `index` and publishes the new
    /// snapshot. Logs every change of role, health or rotation once.
    pub fn observe(&self, probe_generation: u64, index: usize, observation: Observation) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        if probe_generation != state.probe_generation {
            return;
        }
        let health = state.health.clone();
        let name = state.names[index].0.clone();
        let tracker = &mut state.trackers[index];
        let was_up = tracker.is_up(&health);
        let was_role = tracker.reading.as_ref().map(|r| r.in_recovery);
        let (error, primary_position) = match &observation {
            Observation::Down { error } => (Some(error.clone()), None),
            Observation::Up { reading, time } => (
                None,
                reading
                    .current_lsn
                    .filter(|_| !reading.in_recovery)
                    .map(|lsn| (lsn, reading.timeline, time.answered)),
            ),
        };
        let rotation_change = tracker.observe(observation, &state.wal, &health);
        let is_up = tracker.is_up(&health);
        let role = tracker.reading.as_ref().map(|r| r.in_recovery);
        if was_up != is_up || (is_up && was_role != role) {
            match (is_up, role) {
                (true, Some(true)) => tracing::info!(backend = %name, "backend is up as a replica"),
                (true, _) => tracing::info!(backend = %name, "backend is up as a primary"),
                (false, _) => {
                    tracing::warn!(backend = %name, error = error.as_deref().unwrap_or(""), "backend is down")
                }
            }
        }
        if let Some(change) = rotation_change.filter(|_| role == Some(true) || !is_up) {
            tracing::info!(backend = %name, "{change}");
        }
        state.probed[index] = true;
        state.generation += 1;
        let mut snapshot = state.build();
        state.follow_primary(snapshot.primary);
        if let Some((lsn, timeline, answered)) =
            primary_position.filter(|_| snapshot.primary == Some(index))
        {
            let horizon = lag::horizon(&health);
            state.wal.record(index, timeline, lsn, answered, horizon);
        }
        let primary_changed = snapshot.primary != state.last_primary;
        if primary_changed {
            match snapshot.primary {
                Some(p) => {
                    tracing::warn!(primary = %snapshot.name(p), claimants = snapshot.primaries_seen, "primary is now {}", snapshot.name(p))
                }
                None if snapshot.primaries_seen > 1 => {
                    tracing::error!(claimants = snapshot.primaries_seen, "several backends claim to be primary on the same timeline; refusing writes")
                }
                None => tracing::warn!("no primary"),
            }
            // A failover: a new primary after a different one (the first
            // discovery, and gaps with none, are not changes). Replicas
            // serve again once seen following it.
            if let Some(p) = snapshot.primary {
                if state.last_elected.is_some_and(|last| last != p) {
                    self.primary_changes.inc();
                    for (i, t) in state.trackers.iter_mut().enumerate() {
                        if i != p {
                            t.primary_changed(p);
                        }
                    }
                    snapshot = Snapshot {
                        generation: snapshot.generation,
                        ..state.build()
                    };
                }
                state.last_elected = Some(p);
            }
        }
        let routing_changed = primary_changed || snapshot.read_schedule != state.last_schedule;

        if routing_changed {
            state.routing_epoch += 1;
            state.last_primary = snapshot.primary;
            state.last_schedule = snapshot.read_schedule.clone();
        }
        snapshot.routing_epoch = state.routing_epoch;
        let generation = snapshot.generation;
        self.record(None, &self.current.load(), &snapshot);
        self.current.store(Arc::new(snapshot));
        drop(guard);
        // Routing first: whoever sees the new generation also sees the change.
        if routing_changed {
            self.routing.send_replace(generation);
        }
        self.published.send_replace(generation);
    }
}

impl State {
    /// The WAL history belongs to the elected primary: with another one, or
    /// none, it starts over (its positions would misdate the replicas').
    fn follow_primary(&mut self, primary: Option<usize>) {
        if self.wal.source() != primary {
            self.wal.clear();
        }
    }

    fn build(&self) -> Snapshot {
        let cfg = &self.health;
        let election = elect(&self.trackers, cfg);
        let mut backends = Vec::with_capacity(self.trackers.len());
        let mut readers = Vec::new();
        for (i, t) in self.trackers.iter().enumerate() {
            let (name, address, weight) = &self.names[i];
            let up = t.is_up(cfg);
            let reading = t.reading.as_ref().filter(|_| up);
            let role = match reading {
                Some(r) if r.in_recovery => Role::Replica,
                Some(_) => Role::Primary,
                None => Role::Unknown,
            };
            let mut reason = t.reason.clone();
            let mut in_rotation = false;
            match role {
                Role::Replica => in_rotation = t.in_rotation,
                Role::Primary if election.primary == Some(i) => {
                    in_rotation = self.routing.primary_reads;
                    if !in_rotation {
                        reason = Some("primary (routing.primary_reads = false)".into());
                    }
                }
                Role::Primary => {
                    reason = Some(match election.primary {
                        Some(p) => format!(
                            "fenced: {} is primary on a higher timeline",
                            self.names[p].0
                        ),
                        None => "fenced: several backends claim to be primary on the same timeline"
                            .into(),
                    })
                }
                Role::Unknown => {
                    if reason.is_none() {
                        reason = Some(match &t.last_error {
                            Some(e) => format!("down: {e}"),
                            None => "not probed yet".into(),
                        });
                    }
                }
            }
            let drained = self.drained.contains(name);
            if drained && in_rotation {
                in_rotation = false;
                reason = Some(events::DRAINED.into());
            }
            if in_rotation && *weight > 0 {
                readers.push((i, *weight));
            } else if in_rotation {
                in_rotation = false;
                reason = Some("weight = 0".into());
            }
            backends.push(BackendStatus {
                name: name.clone(),
                address: address.clone(),
                weight: *weight,
                role,
                healthy: up,
                in_rotation,
                drained,
                lag_bytes: t.lag_bytes.filter(|_| role == Role::Replica),
                lag_ms: t.lag_ms.filter(|_| role == Role::Replica),
                replay_lsn: reading.and_then(|r| r.replay_lsn),
                current_lsn: reading.and_then(|r| r.current_lsn),
                timeline: reading.and_then(|r| r.timeline),
                reason: reason.filter(|_| !in_rotation),
                last_error: t.last_error.clone(),
            });
        }
        Snapshot {
            generation: self.generation,
            routing_epoch: self.routing_epoch,
            backends,
            primary: election.primary,
            primaries_seen: election.claimants.len(),
            read_schedule: smooth_weighted_schedule(&readers),
            complete: self.probed.iter().all(|&p| p),
        }
    }
}

#[cfg(test)]
mod tests;
