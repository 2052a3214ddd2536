//! Time lag, pure: the primary's WAL positions as pgsplit saw them over time,
//! and how long ago the primary was where a replica is now. No clock, no I/O:
//! every instant arrives as an argument.
//!
//! A replica's **time lag** is the time since the primary passed the
//! replica's replay position, i.e. for how long the replica has been missing
//! WAL the primary had written. It is not the age of the replica's last
//! replayed transaction: after an idle spell that age is large while nothing
//! is missing, and a caught-up replica has zero time lag however quiet the
//! primary has been.
//!
//! [`WalHistory`] keeps, for the elected primary, the first instant each WAL
//! position was seen, taken from the primary's own probes. Soundness rests on
//! two facts about pgsplit's monotonic clock. A sample `(lsn, at)` is dated
//! when the primary's probe answered, so the primary had reached `lsn` no
//! later than `at`. A replica's replay position is dated when its probe was
//! sent, so the replica was still there no earlier than that. A replica below
//! `lsn` has therefore been missing WAL since `at` at the latest, and
//! [`WalHistory::time_lag`] reports a **lower bound** of its true lag: never
//! lag that is not there.
//!
//! How far below: the primary passed the replica's position between the last
//! primary probe that saw it at or before that position and the first that
//! saw it past, so by at most one `health.interval_ms` plus a probe's round
//! trip while the primary's probes succeed (more across failed probes), and by
//! at most `horizon / SAMPLES_PER_HORIZON` more where samples were merged.
//! Routing compares this lower bound with `max_lag_ms`: a replica that falls
//! behind leaves rotation at most about `max_lag_ms` plus two probe intervals
//! later (one for the primary's probe to see the new WAL, one for the
//! replica's probe to see it is still missing). That slack is the price of
//! never taking out a replica that is not behind.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::lsn::Lsn;
use crate::config::Health as HealthConfig;

/// Samples are at least `horizon / SAMPLES_PER_HORIZON` apart (every other
/// one), so a history holds at most about twice this many, however short the
/// probe interval.
pub const SAMPLES_PER_HORIZON: u32 = 2048;

/// The shortest horizon kept, so `/status` shows a paused replica's lag
/// growing for a while even with a small `max_lag_ms`.
const MIN_HORIZON: Duration = Duration::from_secs(60);

/// How far back the history reaches: four times `max_lag_ms`, at least a
/// minute. Lags up to the horizon are measured; beyond it they are reported
/// as at least the horizon (see [`WalHistory::time_lag`]).
pub fn horizon(cfg: &HealthConfig) -> Duration {
    Duration::from_millis(cfg.max_lag_ms.saturating_mul(4)).max(MIN_HORIZON)
}

/// The primary was at `lsn` when pgsplit looked at `at`, and (for all but the
/// oldest sample) not there yet at the sample before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    lsn: Lsn,
    at: Instant,
}

/// The elected primary's WAL positions over time, oldest first, LSNs strictly
/// increasing. Belongs to one primary on one timeline: samples of another
/// history would date a replica's position by WAL it never had to replay.
#[derive(Debug, Clone, Default)]
pub struct WalHistory {
    /// The backend (index) and timeline the samples come from.
    source: Option<(usize, Option<u32>)>,
    samples: VecDeque<Sample>,
}

impl WalHistory {
    /// The primary's latest position pgsplit has seen, if it knows one.
    pub fn latest(&self) -> Option<Lsn> {
        self.samples.back().map(|s| s.lsn)
    }

    /// The backend the samples come from.
    pub fn source(&self) -> Option<usize> {
        self.source.map(|(index, _)| index)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Forgets every sample (the primary changed, or none is known).
    pub fn clear(&mut self) {
        self.source = None;
        self.samples.clear();
    }

    /// Follows the source backend to its new index after a reconfiguration;
    /// `None` (the backend is gone) forgets everything.
    pub fn reindex(&mut self, new_index: Option<usize>) {
        match (self.source.as_mut(), new_index) {
            (Some((index, _)), Some(new)) => *index = new,
            _ => self.clear(),
        }
    }

    /// Records that backend `source`, on `timeline`, was at `lsn` when its
    /// probe answered at `at`. A position already seen keeps the instant it
    /// was first seen. A different source or timeline, or a position below
    /// the latest (a restore), starts a new history.
    ///
    /// Bounded: samples older than `horizon` are dropped except the newest of
    /// them (the reference for positions just past it), and a sample less
    /// than `horizon / SAMPLES_PER_HORIZON` after the one before the last
    /// replaces the last instead of being added (a replica between the two
    /// is then dated by the later one: still a lower bound).
    pub fn record(
        &mut self,
        source: usize,
        timeline: Option<u32>,
        lsn: Lsn,
        at: Instant,
        horizon: Duration,
    ) {
        let key = Some((source, timeline));
        if self.source != key || self.latest().is_some_and(|latest| lsn < latest) {
            self.clear();
            self.source = key;
        }
        let n = self.samples.len();
        match self.samples.back() {
            Some(last) if last.lsn == lsn => {}
            Some(last) => {
                // One probe task per backend answers in order; never go back.
                let at = at.max(last.at);
                let spacing = horizon / SAMPLES_PER_HORIZON;
                let close = n >= 2 && at.duration_since(self.samples[n - 2].at) < spacing;
                if close {
                    self.samples[n - 1] = Sample { lsn, at };
                } else {
                    self.samples.push_back(Sample { lsn, at });
                }
            }
            None => self.samples.push_back(Sample { lsn, at }),
        }
        while self.samples.len() >= 2 && at.saturating_duration_since(self.samples[1].at) > horizon
        {
            self.samples.pop_front();
        }
    }

    /// How long the primary had been past `replay` when a replica's probe
    /// read it (`read_at`: when that probe was sent, no later than the
    /// reading). `None` when no primary position is known.
    ///
    /// - `replay` at or past the latest sample: zero. The replica has all the
    ///   WAL pgsplit has seen the primary write (what it wrote since its last
    ///   probe is not seen yet, as for the byte lag).
    /// - Otherwise the time since the first sample past `replay`: the primary
    ///   was past it then, at the latest. An idle primary's old samples do not
    ///   count: after a quiet spell the first sample past a caught-up replica
    ///   is the one that saw the new WAL. A replica replaying within
    ///   milliseconds is dated by a sample at most that much older than its
    ///   reading (or newer: zero). With replay paused, the date stays and the
    ///   lag grows with `read_at`.
    /// - Below the oldest sample: the primary was past `replay` before the
    ///   history began (pgsplit started, or the primary changed), so the time
    ///   since the oldest sample is all that is known: a lower bound that
    ///   grows. If samples past `replay` were dropped for age, the oldest is
    ///   older than the horizon, so the lag is reported as at least that.
    pub fn time_lag(&self, replay: Lsn, read_at: Instant) -> Option<Duration> {
        let latest = self.latest()?;
        if replay >= latest {
            return Some(Duration::ZERO);
        }
        let first_past = self.samples.partition_point(|s| s.lsn <= replay);
        let passed = self.samples[first_past].at;
        Some(read_at.saturating_duration_since(passed))
    }
}

#[cfg(test)]
mod tests;
