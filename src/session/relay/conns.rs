//! The session's server connections: which one is active, which it keeps
//! (its home), taking one for a route, giving it back at idle points,
//! letting it go when the topology moves, and at the end.

use bytes::BytesMut;

use super::{Failure, Intake, Outcome, Relay, Unsynced};
use crate::config::PoolMode;
use crate::router::{Listener, On, To};
use crate::session::error::SessionError;
use crate::session::server::{self, Leased, Leaving, Want};
use crate::session::state::TxStatus;
use crate::session::target;

impl Relay<'_> {
    /// What the connection the session keeps serves, if it keeps one.
    pub(super) fn home_on(&self) -> Option<On> {
        self.home
            .as_ref()
            .or(self.active.as_ref().filter(|a| self.keeps(a)))
            .map(|l| l.on)
    }

    /// Whether the session keeps `leased` at an idle point: while pinned,
    /// or in session mode, the connection of its port's own kind.
    pub(super) fn keeps(&self, leased: &Leased) -> bool {
        keeps(
            self.listener,
            self.mode,
            self.session.pins.is_pinned(),
            leased,
        )
    }

    /// Makes `leased` the active connection.
    pub(super) fn activate(&mut self, leased: Leased) {
        self.last_serial = Some(leased.conn.serial);
        self.cancel.slot().set(Some(leased.conn.cancel_target()));
        self.active = Some(leased);
    }

    /// Lets a connection go (see `server::release`).
    pub(super) fn release(&mut self, leased: Leased, leaving: Leaving) {
        self.cancel.slot().set(None);
        server::release(self.shared, leased, leaving);
    }

    /// Makes the active connection one that serves `to`, at an idle point
    /// taking it from the pool (or the session's home); elsewhere the
    /// current one goes on.
    pub(super) async fn connect_for(&mut self, to: To, at_idle: bool) -> Result<(), Failure> {
        let tell = |error| Failure {
            error,
            can_tell: true,
        };
        let want = match to {
            To::Current => {
                if self.active.is_some() {
                    return Ok(());
                }
                match self.listener {
                    Listener::ReadWrite => On::Primary,
                    Listener::ReadOnly => self.first_reader(),
                }
            }
            To::Primary => On::Primary,
            To::Replica(i) => On::Replica(i),
            To::ReadOnlyPrimary => On::ReadOnlyPrimary,
        };
        let snapshot = self.shared.topology.snapshot();
        let (listener, mode, pinned) = (self.listener, self.mode, self.session.pins.is_pinned());
        let fits = |l: &Leased| {
            let kind = match (l.on, want) {
                (On::Replica(_), On::Replica(_)) => {
                    // A replica the session keeps serves its reads on the
                    // read-only port; otherwise the one the router chose.
                    l.on == want
                        || (listener == Listener::ReadOnly && keeps(listener, mode, pinned, l))
                }
                (have, want) => have == want,
            };
            kind && target::eligible(&snapshot, l.on, &l.conn)
        };
        if self.active.as_ref().is_some_and(fits) {
            return Ok(());
        }
        if self.active.is_some() && !at_idle {
            // Requests are in flight here: the router keeps to it.
            return Ok(());
        }
        if let Some(active) = self.active.take() {
            if self.keeps(&active) && self.home.is_none() {
                self.cancel.slot().set(None);
                self.home = Some(active);
            } else {
                self.release(active, Leaving::Clean);
            }
        }
        if self.home.as_ref().is_some_and(fits) {
            let home = self.home.take().expect("checked");
            self.activate(home);
            return Ok(());
        }
        let leased = server::acquire(
            self.shared,
            Want {
                on: want,
                login: &self.login,
                user: &self.user,
                prefer: self.last_serial,
                read_write: self.listener == Listener::ReadWrite,
            },
        )
        .await
        .map_err(tell)?;
        self.activate(leased);
        Ok(())
    }

    /// The replica a read-only session reads from when the router did not
    /// pick one (its first request after a COPY at an idle point, say).
    pub(super) fn first_reader(&self) -> On {
        let snapshot = self.shared.topology.snapshot();
        match snapshot.read_schedule.first() {
            Some(&i) if Some(i) != snapshot.primary => On::Replica(i),
            _ => On::ReadOnlyPrimary,
        }
    }

    /// At an idle point: the connection goes back to the pool unless the
    /// session keeps it (the home connection becomes active again).
    pub(super) fn give_back(&mut self) {
        if let Some(active) = self.active.take() {
            if self.keeps(&active) && self.home.is_none() {
                self.active = Some(active);
            } else {
                self.release(active, Leaving::Clean);
                if let Some(home) = self.home.take() {
                    self.activate(home);
                }
            }
        }
    }

    /// At an idle point: the connection goes back to the pool unless the
    /// session keeps it; a held batch goes now. Returns true when the
    /// client sent Terminate meanwhile.
    pub(super) async fn on_idle(&mut self) -> Result<bool, Failure> {
        self.give_back();
        self.publish();
        // An idle session holds no buffer memory.
        if self.client_in.is_empty() && self.client_in.capacity() > 0 {
            self.client_in = BytesMut::new();
        }
        if self.server_in.is_empty() && self.server_in.capacity() > 0 {
            self.server_in = BytesMut::new();
        }
        if self.to_server.is_empty() && self.to_server.capacity() > 0 {
            self.to_server = BytesMut::new();
        }
        if self.intake == Intake::Held {
            self.intake = Intake::Open;
            return self.on_client_bytes(false).await;
        }
        Ok(false)
    }

    /// The routing changed: a connection that no longer fits what it serves
    /// is let go at once when idle; a session whose state lives on it, or
    /// that is inside a transaction on a former primary, ends with one clear
    /// error (writes must not go on against a fenced primary).
    pub(super) fn on_routing_change(&mut self) -> Result<(), Failure> {
        let snapshot = self.shared.topology.snapshot();
        let pinned = self.session.pins.is_pinned();
        if let Some(home) = &self.home {
            if !target::eligible(&snapshot, home.on, &home.conn) {
                let error = moved_error(&snapshot, home);
                let home = self.home.take().expect("checked");
                self.release(home, Leaving::Busy);
                if pinned {
                    return Err(self.fail(error));
                }
            }
        }
        let Some(active) = &self.active else {
            return Ok(());
        };
        if target::eligible(&snapshot, active.on, &active.conn) {
            return Ok(());
        }
        let idle = self.idle_point();
        let error = moved_error(&snapshot, active);
        if idle && !(pinned && self.keeps(active)) {
            let active = self.active.take().expect("checked");
            tracing::info!(backend = %active.conn.name, "leaving a server the topology retired");
            self.release(active, Leaving::Busy);
            return Ok(());
        }
        if idle || active.on == On::Primary {
            let active = self.active.take().expect("checked");
            self.release(active, Leaving::Busy);
            return Err(self.fail(error));
        }
        // A read on a replica finishes where it is.
        Ok(())
    }

    /// The session is over: its connections go back, clean, or are closed.
    pub(super) fn finish(&mut self, result: &Result<Outcome, Failure>) {
        let busy = !self.requests.is_empty()
            || !self.replies.is_empty()
            || self.streaming.is_some()
            || !self.to_server.is_empty()
            || self.server_in.len() > self.to_client
            || matches!(result, Ok(Outcome::ClientGone { busy: true }))
            || result.is_err();
        let pinned = self.session.pins.is_pinned();
        let dirty = pinned || self.tx != TxStatus::Idle || self.open != Unsynced::Nothing;
        if let Some(active) = self.active.take() {
            let leaving = if busy {
                Leaving::Busy
            } else if dirty {
                Leaving::Reset { discard: pinned }
            } else {
                Leaving::Clean
            };
            self.release(active, leaving);
        }
        if let Some(home) = self.home.take() {
            let leaving = if pinned {
                Leaving::Reset { discard: true }
            } else {
                Leaving::Clean
            };
            self.release(home, leaving);
        }
        self.cancel.slot().set(None);
        for cause in std::mem::take(&mut self.counted_pins) {
            self.shared.metrics.pinned(cause, -1);
        }
    }

    /// Counts the session's pins in `pgsplit_pinned_sessions` as they change.
    pub(super) fn sync_pin_gauges(&mut self) {
        let now: Vec<crate::classify::PinCause> = self.session.pins.causes().collect();
        if now == self.counted_pins {
            return;
        }
        for cause in &now {
            if !self.counted_pins.contains(cause) {
                self.shared.metrics.pinned(*cause, 1);
            }
        }
        for cause in &self.counted_pins {
            if !now.contains(cause) {
                self.shared.metrics.pinned(*cause, -1);
            }
        }
        self.counted_pins = now;
    }
}

/// Whether a session keeps `leased` at an idle point: while pinned, or in
/// session mode, the connection of its port's own kind.
fn keeps(listener: Listener, mode: PoolMode, pinned: bool, leased: &Leased) -> bool {
    let own_kind = match listener {
        Listener::ReadWrite => leased.on == On::Primary,
        Listener::ReadOnly => true,
    };
    own_kind && (pinned || mode == PoolMode::Session)
}

/// The error for a session that must leave `leased` but cannot move.
fn moved_error(snapshot: &crate::topology::Snapshot, leased: &Leased) -> SessionError {
    match leased.on {
        On::Primary => SessionError::PrimaryChanged {
            old: leased.conn.name.to_string(),
            new: snapshot.primary.map(|p| snapshot.name(p).to_owned()),
        },
        On::Replica(_) | On::ReadOnlyPrimary => SessionError::Moved {
            backend: leased.conn.name.to_string(),
            why: match snapshot
                .backends
                .iter()
                .find(|b| *b.name == *leased.conn.name)
                .and_then(|b| b.reason.as_deref())
            {
                Some(reason) => format!("left read rotation ({reason})"),
                None => "no longer serves reads".into(),
            },
        },
    }
}
