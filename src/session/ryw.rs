//! Read-your-writes: what a session's reads must see, as an LSN floor (mode
//! `lsn`) or a time window after its last write (mode `window`).
//!
//! Lsn mode. A batch that may have written on the primary makes the session
//! *dirty*. As soon as the primary is idle again (the write committed),
//! pgsplit asks that same connection for `pg_current_wal_insert_lsn()`
//! (which covers the commit, `synchronous_commit = off` included): that is
//! the session's new floor. If that could not happen (the connection went
//! away), the next read asks the primary first.
//! The read goes to the session's replica if its replay position is at or
//! past the floor (known from the probes, from the last check, or asked
//! right then), else to the primary, or it waits up to `max_wait_ms`.
//! Sessions that asked for `pgsplit.report_lsn` are told the floor as
//! ParameterStatus `pgsplit.commit_lsn`.
//! `SET pgsplit.min_lsn` (or the startup parameter) raises the floor to
//! another session's commit: the causal token.
//!
//! After a failover (a new primary), floors from the old timeline are
//! dropped and the session is dirty again: its next read takes the new
//! primary's position as the floor (see ARCHITECTURE.md).

use std::time::{Duration, Instant};

use crate::config::ConsistencyMode;
use crate::topology::lsn::Lsn;

/// One session's read-your-writes state.
#[derive(Debug, Default)]
pub struct Ryw {
    /// A write may have happened since the floor was learned.
    pub dirty: bool,
    /// Reads must see at least this position.
    pub floor: Option<Lsn>,
    /// When the session last wrote (window mode).
    pub wrote_at: Option<Instant>,
    /// The client asked for `pgsplit.commit_lsn` reports.
    pub report: bool,
    /// The primary the floor was learned from (by name); a different one
    /// means a failover happened since.
    pub primary: Option<String>,
    /// The last replay position seen on a replica connection, by its
    /// server's cancel key (cheap check before asking again).
    pub seen: Option<(crate::protocol::startup::CancelKey, Lsn)>,
}

/// What a read needs before it may go to a replica.
#[derive(Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: go.
    Nothing,
    /// Window mode: the session wrote too recently; the primary.
    Primary,
    /// Learn the floor from the primary first.
    Floor,
    /// A replica at or past this position.
    Replay(Lsn),
}

impl Ryw {
    /// A batch that may have written went to the primary.
    pub fn wrote(&mut self, now: Instant) {
        self.dirty = true;
        self.wrote_at = Some(now);
    }

    /// Raises the floor (an own commit, or a causal token).
    pub fn raise(&mut self, lsn: Lsn) {
        self.floor = Some(self.floor.map_or(lsn, |f| f.max(lsn)));
    }

    /// What a read needs under `mode`.
    pub fn need(&self, mode: ConsistencyMode, window: Duration, now: Instant) -> Need {
        match mode {
            ConsistencyMode::Off => match self.floor {
                // A causal token holds whatever the mode.
                Some(floor) => Need::Replay(floor),
                None => Need::Nothing,
            },
            ConsistencyMode::Window => {
                if self
                    .wrote_at
                    .is_some_and(|at| now.duration_since(at) < window)
                {
                    Need::Primary
                } else if let Some(floor) = self.floor {
                    Need::Replay(floor)
                } else {
                    Need::Nothing
                }
            }
            ConsistencyMode::Lsn if self.dirty => Need::Floor,
            ConsistencyMode::Lsn => match self.floor {
                Some(floor) => Need::Replay(floor),
                None => Need::Nothing,
            },
        }
    }

    /// The session now writes to `primary`: floors from another primary
    /// (before a failover) no longer mean anything.
    pub fn on_primary(&mut self, primary: &str) {
        if self.primary.as_deref() != Some(primary) {
            if self.primary.is_some() {
                self.floor = None;
                self.dirty = true;
            }
            self.primary = Some(primary.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let now = Instant::now();
        let window = Duration::from_secs(5);
        let mut r = Ryw::default();
        for mode in [
            ConsistencyMode::Lsn,
            ConsistencyMode::Window,
            ConsistencyMode::Off,
        ] {
            assert_eq!(r.need(mode, window, now), Need::Nothing);
        }
        r.wrote(now);
        assert_eq!(r.need(ConsistencyMode::Lsn, window, now), Need::Floor);
        assert_eq!(r.need(ConsistencyMode::Window, window, now), Need::Primary);
        assert_eq!(
            r.need(ConsistencyMode::Window, window, now + window),
            Need::Nothing
        );
        assert_eq!(r.need(ConsistencyMode::Off, window, now), Need::Nothing);
        r.dirty = false;
        r.raise(Lsn(10));
        r.raise(Lsn(5));
        assert_eq!(
            r.need(ConsistencyMode::Lsn, window, now),
            Need::Replay(Lsn(10))
        );
        // A token holds in every mode.
        assert_eq!(
            r.need(ConsistencyMode::Off, window, now),
            Need::Replay(Lsn(10))
        );
    }

    #[test]
    fn a_new_primary_drops_the_floor() {
        let mut r = Ryw::default();
        r.on_primary("pg1");
        r.raise(Lsn(100));
        r.on_primary("pg1");
        assert_eq!(r.floor, Some(Lsn(100)));
        r.on_primary("pg2");
        assert_eq!(r.floor, None);
        assert!(r.dirty);
    }
}
