//! One backend's health, pure: probe readings in, role / up / in-rotation out,
//! with the `fall` / `rise` hysteresis and the lag thresholds. No I/O, no
//! clock: everything it needs arrives in the [`Observation`] and the
//! primary's [`WalHistory`].

use std::time::Instant;

use super::lag::WalHistory;
use super::lsn::Lsn;
use crate::config::Health as HealthConfig;

/// What one successful probe read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub in_recovery: bool,
    /// `pg_current_wal_flush_lsn()`, on a primary.
    pub current_lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()`, on a replica.
    pub receive_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()`, on a replica.
    pub replay_lsn: Option<Lsn>,
    pub replay_paused: bool,
    /// The primary's timeline (from its current WAL file name).
    pub timeline: Option<u32>,
}

/// When a probe's query went out and when its answer came back, on
/// pgsplit's monotonic clock. The reading describes the server at some moment
/// in between: a replica was at its replay position no earlier than `sent`,
/// the primary had reached its position no later than `answered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTime {
    pub sent: Instant,
    pub answered: Instant,
}

/// A probe's result.
#[derive(Debug, Clone)]
pub enum Observation {
    Up { reading: Reading, time: ProbeTime },
    Down { error: String },
}

/// Whether a replica replays the elected primary's WAL. A replica still on
/// the timeline of a primary that failed may sit at an LSN the new primary
/// also reached (or passed: what the old one wrote and never sent), so its
/// positions prove nothing about the new primary's commits until it is seen
/// replaying the new primary's WAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Following {
    /// No primary known while this replica was probed.
    #[default]
    Unknown,
    /// The primary changed when this replica had replayed up to `at`: it
    /// serves again once it replays past `at` (a replica left on a failed
    /// primary's timeline replays nothing more).
    Pending { primary: usize, at: Lsn },
    /// It replays this primary's WAL.
    Yes { primary: usize },
}

/// A backend's tracked health between probes.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Failed probes in a row.
    pub failures: u32,
    /// Good probes in a row while out of rotation.
    good_streak: u32,
    /// The last successful reading, kept while failures < fall.
    pub reading: Option<Reading>,
    pub last_error: Option<String>,
    /// Whether the replica may serve reads (ignoring weight and role).
    pub in_rotation: bool,
    /// Why it is out of rotation, when it is.
    pub reason: Option<String>,
    pub lag_bytes: Option<u64>,
    pub lag_ms: Option<u64>,
    /// False until the first probe answered.
    probed: bool,
    pub following: Following,
}

impl Tracker {
    /// Up means fewer than `fall` failed probes in a row since a good one.
    pub fn is_up(&self, cfg: &HealthConfig) -> bool {
        self.reading.is_some() && self.failures < cfg.fall
    }

    pub fn is_primary_claim(&self, cfg: &HealthConfig) -> bool {
        self.is_up(cfg) && self.reading.as_ref().is_some_and(|r| !r.in_recovery)
    }

    pub fn is_replica(&self, cfg: &HealthConfig) -> bool {
        self.is_up(cfg) && self.reading.as_ref().is_some_and(|r| r.in_recovery)
    }

    /// Applies one observation. `primary` is the elected primary's WAL
    /// history (empty when no primary is known): its latest position is the
    /// target for the byte lag, and it dates the time lag (see
    /// [`WalHistory::time_lag`]). Returns a log line when rotation changed.
    pub fn observe(
        &mut self,
        obs: Observation,
        primary: &WalHistory,
        cfg: &HealthConfig,
    ) -> Option<String> {
        let was_in = self.in_rotation;
        match obs {
            Observation::Down { error } => {
                self.failures = self.failures.saturating_add(1);
                self.good_streak = 0;
                if self.failures >= cfg.fall {
                    self.reading = None;
                    self.lag_bytes = None;
                    self.lag_ms = None;
                    self.in_rotation = false;
                    self.reason = Some(format!("down: {error} ({} failed probes)", self.failures));
                }
                self.last_error = Some(error);
            }
            Observation::Up { reading, time } => {
                let first = !self.probed || self.reading.is_none();
                self.failures = 0;
                self.last_error = None;
                self.probed = true;
                if reading.in_recovery {
                    self.replica_reading(&reading, time.sent, primary, cfg, first);
                } else {
                    self.lag_bytes = None;
                    self.lag_ms = None;
                    self.good_streak = 0;
                    self.in_rotation = true;
                    self.reason = None;
                }
                self.reading = Some(reading);
            }
        }
        (was_in != self.in_rotation).then(|| match &self.reason {
            Some(reason) if !self.in_rotation => format!("left read rotation: {reason}"),
            _ => "back in read rotation".to_owned(),
        })
    }

    /// A failover elected `primary`: a replica serves no read until it is
    /// seen replaying the new primary's WAL (see [`Following`]).
    pub fn primary_changed(&mut self, primary: usize) {
        let Some(r) = self.reading.as_ref().filter(|r| r.in_recovery) else {
            return;
        };
        self.following = Following::Pending {
            primary,
            at: r.replay_lsn.unwrap_or_default(),
        };
        self.in_rotation = false;
        self.good_streak = 0;
        self.reason = Some(Self::NOT_FOLLOWING.to_owned());
    }

    const NOT_FOLLOWING: &'static str =
        "the primary changed: not yet seen replaying the new primary's WAL";

    /// Updates [`Following`] from a replica's replay position; true when it
    /// replays the elected primary's WAL (or no primary is known).
    fn follows(&mut self, replay: Lsn, primary: &WalHistory) -> bool {
        let Some(source) = primary.source() else {
            return true;
        };
        self.following = match self.following {
            Following::Pending { primary, at } if primary == source && replay > at => {
                Following::Yes { primary }
            }
            Following::Pending { primary, at } if primary == source => {
                Following::Pending { primary, at }
            }
            // First seen with a primary (pgsplit started): taken as following.
            Following::Unknown => Following::Yes { primary: source },
            Following::Yes { primary } if primary == source => Following::Yes { primary },
            // The primary changed unannounced (a reload): as a failover.
            Following::Yes { .. } | Following::Pending { .. } => Following::Pending {
                primary: source,
                at: replay,
            },
        };
        matches!(self.following, Following::Yes { .. })
    }

    /// `read_at`: when the probe that read `r` was sent.
    fn replica_reading(
        &mut self,
        r: &Reading,
        read_at: Instant,
        primary: &WalHistory,
        cfg: &HealthConfig,
        first: bool,
    ) {
        let replay = r.replay_lsn.unwrap_or_default();
        // The newest position this replica should have: the primary's, or what
        // it has already received if the primary is not known.
        let target = primary.latest().max(r.receive_lsn).unwrap_or(replay);
        let behind = target.0.saturating_sub(replay.0);
        let has_wal_left = behind > 0;
        // Unknown without a primary: there is nothing to date its position by.
        let lag_ms = primary
            .time_lag(replay, read_at)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.lag_bytes = Some(behind);
        self.lag_ms = lag_ms;
        if !self.follows(replay, primary) {
            self.in_rotation = false;
            self.good_streak = 0;
            self.reason = Some(Self::NOT_FOLLOWING.to_owned());
            return;
        }
        let paused_behind = r.replay_paused && has_wal_left;
        let over = |frac: f64| {
            if paused_behind {
                Some("replay is paused with WAL waiting".to_owned())
            } else if behind as f64 > cfg.max_lag_bytes as f64 * frac {
                Some(format!(
                    "lag {behind} bytes over max_lag_bytes {}",
                    cfg.max_lag_bytes
                ))
            } else {
                lag_ms
                    .filter(|&ms| ms as f64 > cfg.max_lag_ms as f64 * frac)
                    .map(|ms| format!("lag {ms} ms over max_lag_ms {}", cfg.max_lag_ms))
            }
        };
        if self.in_rotation {
            if let Some(reason) = over(1.0) {
                self.in_rotation = false;
                self.good_streak = 0;
                self.reason = Some(reason);
            }
            return;
        }
        match over(cfg.readmit_fraction) {
            Some(reason) => {
                self.good_streak = 0;
                self.reason = Some(reason);
            }
            None => {
                self.good_streak += 1;
                // A replica seen for the first time needs no probation.
                if first && self.reason.is_none() || self.good_streak >= cfg.rise {
                    self.in_rotation = true;
                    self.reason = None;
                } else {
                    self.reason = Some(format!(
                        "recovering: {}/{} good probes",
                        self.good_streak, cfg.rise
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
