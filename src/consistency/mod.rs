//! Read-your-writes: what a session's reads must see ([`Floor`]) and what
//! pgsplit knows of where the replicas are ([`Positions`], one per proxy,
//! shared by every session).
//!
//! **Floors.** After a session's write commits (its ReadyForQuery reached
//! pgsplit at time *T*), its reads must see that commit. pgsplit does not ask
//! the session's connection for the commit's LSN. It keeps *T* instead, and
//! a replica *r* has the commit once pgsplit holds a reading *p* of the
//! primary's WAL insert position that **started after T** and *r*'s replay
//! position is at or past *p*: the commit record was inserted before its
//! ReadyForQuery was sent, so before *p* started, so at or below *p*'s LSN
//! (`pg_current_wal_insert_lsn()` counts inserted records, flushed or not,
//! so this holds with `synchronous_commit = off` too). One reading covers
//! every commit before it, whichever session made it: readings are shared.
//! A causal token (`pgsplit.min_lsn`) is an LSN floor, compared directly.
//!
//! **Positions.** A poller task keeps, on its own connections, the primary's
//! insert position (each reading with the time its query started) and each
//! replica's replay position. It polls only while reads are waiting for a
//! position it lacks (single-flight: one poll per backend at a time, every
//! waiting read shares the answer), at most every `poll_ms`, and not at all
//! while nobody waits. The health probes' replay positions count too.
//!
//! **Failover.** Readings belong to one primary; when another is elected they
//! are dropped. Commit-time floors stay meaningful (a reading of the new
//! primary started after the commit covers everything the new primary has).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::topology::{Lsn, Snapshot};

mod poller;
pub use poller::run as run_poller;

/// What a session's reads must see.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Floor {
    /// A write of the session committed before this instant.
    pub committed_before: Option<Instant>,
    /// A causal token: an LSN another session committed at.
    pub lsn: Option<Lsn>,
    /// When the session last wrote (window mode).
    pub wrote_at: Option<Instant>,
}

impl Floor {
    /// Nothing to see.
    pub fn is_empty(&self) -> bool {
        self.committed_before.is_none() && self.lsn.is_none()
    }

    /// Raises the token floor.
    pub fn raise(&mut self, lsn: Lsn) {
        self.lsn = Some(self.lsn.map_or(lsn, |f| f.max(lsn)));
    }
}

/// Whether a replica is known to have what a floor asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// It has it.
    Has,
    /// It is known to be behind.
    Behind,
    /// Not known yet (no primary reading after the commit, or no replica
    /// reading).
    Unknown,
}

/// How many primary readings are kept (the newest ones).
const READINGS: usize = 64;

/// See the module doc.
pub struct Positions {
    state: Mutex<State>,
    /// Bumped on every new reading.
    published: watch::Sender<u64>,
    /// Wakes the poller.
    demand: Notify,
}

#[derive(Default)]
struct State {
    /// The primary the readings are from (name).
    primary: Option<String>,
    /// Primary insert positions with the time their query started, oldest
    /// first, both increasing.
    readings: VecDeque<(Instant, Lsn)>,
    /// Replay position by backend name.
    replay: HashMap<String, Lsn>,
    /// A primary reading that started after this is wanted.
    want_primary_after: Option<Instant>,
    /// Replica positions are wanted until this instant, or until every
    /// replica polled reached `target`.
    replicas_until: Option<Instant>,
    /// The newest position a session waits for: the primary reading that
    /// answered the last wish (or a causal token).
    target: Option<Lsn>,
    /// Publications so far.
    generation: u64,
}

impl Default for Positions {
    fn default() -> Self {
        Positions {
            state: Mutex::new(State::default()),
            published: watch::channel(0).0,
            demand: Notify::new(),
        }
    }
}

impl Positions {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether backend `name` has what `floor` asks. `probed` is its replay
    /// position from the health probes, if any. Pure given the state; takes
    /// the lock briefly.
    pub fn check(&self, name: &str, probed: Option<Lsn>, floor: &Floor) -> Check {
        let state = self.lock();
        state.check(name, probed, floor)
    }

    /// Asks the poller for what would settle `floor` (a primary reading after
    /// its commit, replica positions until they reach it), for a while.
    /// Returns at once.
    pub fn want(&self, floor: &Floor) {
        {
            let mut state = self.lock();
            if let Some(t) = floor.committed_before {
                match state.reading_after(t) {
                    Some(lsn) => state.aim(lsn),
                    None => {
                        state.want_primary_after =
                            Some(state.want_primary_after.map_or(t, |w| w.max(t)));
                    }
                }
            }
            if let Some(lsn) = floor.lsn {
                state.aim(lsn);
            }
            let until = Instant::now() + WANT_FOR;
            state.replicas_until = Some(state.replicas_until.map_or(until, |u| u.max(until)));
        }
        self.demand.notify_one();
    }

    /// A receiver that changes whenever new readings are published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The first primary insert position read by a query that started at or
    /// after `t`, waiting up to `wait` for the poller to read one.
    pub async fn primary_after(&self, t: Instant, wait: Duration) -> Option<Lsn> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lsn) = self.lock().reading_after(t) {
                return Some(lsn);
            }
            self.want(&Floor {
                committed_before: Some(t),
                ..Floor::default()
            });
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Records a primary reading whose query started at `start`.
    pub fn record_primary(&self, primary: &str, start: Instant, lsn: Lsn) {
        let mut state = self.lock();
        state.follow(primary);
        if state
            .readings
            .back()
            .is_some_and(|(s, l)| *s > start || *l > lsn)
        {
            // Out of order (a slow answer overtaken): keep the sequence
            // increasing; the newer reading covers more anyway.
            return;
        }
        state.readings.push_back((start, lsn));
        if state.readings.len() > READINGS {
            state.readings.pop_front();
        }
        if state.want_primary_after.is_some_and(|w| start >= w) {
            state.want_primary_after = None;
            state.aim(lsn);
        }
        state.generation += 1;
        let generation = state.generation;
        drop(state);
        self.published.send_replace(generation);
    }

    /// Records a replica's replay position.
    pub fn record_replay(&self, name: &str, lsn: Lsn) {
        let mut state = self.lock();
        let entry = state.replay.entry(name.to_owned()).or_insert(lsn);
        *entry = (*entry).max(lsn);
        state.generation += 1;
        let generation = state.generation;
        drop(state);
        self.published.send_replace(generation);
    }

    /// The primary is now `primary` (from the topology): readings of another
    /// one are dropped.
    pub fn follow_primary(&self, primary: &str) {
        self.lock().follow(primary);
    }

    /// What the poller should read now: a primary reading, and the
    /// replicas (of `names`) still below the newest position wanted.
    fn wants(&self, names: &[String]) -> (bool, Vec<String>) {
        let mut state = self.lock();
        let primary = state.want_primary_after.is_some();
        let now = Instant::now();
        let mut replicas = Vec::new();
        if state.replicas_until.is_some_and(|u| now < u) {
            let target = state.target;
            replicas = names
                .iter()
                .filter(|n| match (state.replay.get(n.as_str()), target) {
                    (Some(r), Some(t)) => *r < t,
                    _ => true,
                })
                .cloned()
                .collect();
            if replicas.is_empty() && !primary {
                // Every replica has what was asked for.
                state.replicas_until = None;
            }
        } else {
            state.replicas_until = None;
        }
        (primary, replicas)
    }

    /// Known replay positions, for `/status` (name, LSN).
    pub fn replay_positions(&self) -> Vec<(String, Lsn)> {
        let state = self.lock();
        let mut v: Vec<(String, Lsn)> = state.replay.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }
}

/// How long a wish for replica positions lasts.
const WANT_FOR: Duration = Duration::from_secs(1);

impl State {
    /// Replicas are wanted at or past `lsn`.
    fn aim(&mut self, lsn: Lsn) {
        self.target = Some(self.target.map_or(lsn, |t| t.max(lsn)));
    }

    fn follow(&mut self, primary: &str) {
        if self.primary.as_deref() != Some(primary) {
            if self.primary.is_some() {
                self.readings.clear();
                self.replay.clear();
                self.target = None;
            }
            self.primary = Some(primary.to_owned());
        }
    }

    /// The LSN of the first reading that started at or after `t`.
    fn reading_after(&self, t: Instant) -> Option<Lsn> {
        self.readings
            .iter()
            .find(|(start, _)| *start >= t)
            .map(|(_, lsn)| *lsn)
    }

    fn check(&self, name: &str, probed: Option<Lsn>, floor: &Floor) -> Check {
        let replay = self.replay.get(name).copied().max(probed);
        let mut needs: [Option<Lsn>; 2] = [floor.lsn, None];
        if let Some(t) = floor.committed_before {
            match self.reading_after(t) {
                Some(lsn) => needs[1] = Some(lsn),
                None => return Check::Unknown,
            }
        }
        let Some(need) = needs.iter().flatten().max() else {
            return Check::Has;
        };
        match replay {
            Some(r) if r >= *need => Check::Has,
            Some(_) => Check::Behind,
            None => Check::Unknown,
        }
    }
}

/// The backends the poller may read replay positions from: replicas in
/// read rotation (by name and address).
fn replicas(snapshot: &Snapshot) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for &i in &snapshot.read_schedule {
        if Some(i) == snapshot.primary {
            continue;
        }
        let b = &snapshot.backends[i];
        if !out.iter().any(|(n, _)| *n == b.name) {
            out.push((b.name.clone(), b.address.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests;

/// Shared by sessions.
pub type SharedPositions = Arc<Positions>;
