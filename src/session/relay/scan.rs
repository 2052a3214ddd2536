//! Server bytes on their way to the client: streamed through, except the
//! messages the reply tracker reads whole; pgsplit's own replies dropped,
//! its stand-ins put in; each ReadyForQuery closing its request (staged
//! effects, read-your-writes floors); the safety net's held replies; a
//! server that goes away.

use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::{CopyIn, Failure, Intake, Net, Relay, Unsynced};
use crate::protocol::{encode, message, tag};
use crate::session::error::SessionError;
use crate::session::replies::{Action, Event};
use crate::session::retry::{self, Held};
use crate::session::server::Leaving;
use crate::session::state::TxStatus;

impl Relay<'_> {
    /// Takes what the server sent. Returns true when the client sent
    /// Terminate meanwhile (a held batch went on).
    pub(super) async fn on_server_bytes(&mut self) -> Result<bool, Failure> {
        let mut released = false;
        if let Some(replay) = self.replay.as_mut().filter(|r| r.net != Net::Off) {
            match retry::inspect(replay.net, &self.server_in[self.to_client..], self.max) {
                Held::Wait => return Ok(false),
                Held::Refused => {
                    replay.net = Net::Refused;
                    return Ok(false);
                }
                Held::Release => {
                    replay.net = Net::Off;
                    released = true;
                }
                Held::Rerun { len } => return Box::pin(self.rerun(len)).await,
            }
        }
        let mut detach = false;
        loop {
            if let Some((left, action)) = self.streaming {
                let available = self.server_in.len() - self.to_client;
                if available == 0 {
                    break;
                }
                let take = left.min(available);
                self.pass(take, action);
                self.streaming = (left > take).then_some((left - take, action));
                continue;
            }
            let rest = &self.server_in[self.to_client..];
            if rest.len() < 5 {
                break;
            }
            let t = rest[0];
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if len < 4 {
                return Err(self.lost());
            }
            let wire = len + 1;
            if !self.replies.watches(t) {
                let action = self.replies.streamed();
                self.streaming = Some((wire, action));
                continue;
            }
            if wire > self.max {
                return Err(self.lost());
            }
            if rest.len() < wire {
                break;
            }
            let body = &rest[5..wire];
            let status = if t == tag::READY_FOR_QUERY {
                body.first().copied().unwrap_or(b'I')
            } else {
                0
            };
            let fatal = t == tag::ERROR_RESPONSE && message::error_is_fatal(body);
            let idle = self.requests.is_empty() && self.replies.is_empty();
            if idle && fatal && !self.session.pins.is_pinned() {
                // An idle connection's goodbye (terminated, restarting):
                // the session goes on elsewhere without hearing it.
                let why = message::ErrorFields::parse(body)
                    .map(|f| f.message.to_owned())
                    .unwrap_or_default();
                tracing::info!(reason = %why, "the server ended an idle connection");
                self.server_in.truncate(self.to_client);
                detach = true;
                break;
            }
            self.emit_standins()?;
            let (action, event) = self.replies.step(t, status);
            match event {
                Event::ClientReady(status) => self.on_ready(status).await,
                Event::ClientError => {
                    if let Some(r) = self.requests.front_mut() {
                        r.error = true;
                    }
                    if self.open == Unsynced::Movable {
                        // The server now skips up to the client's Sync.
                        self.open = Unsynced::Fixed;
                    }
                }
                Event::OwnError => {
                    if let Some(r) = self.requests.front_mut() {
                        r.error = true;
                    }
                    tracing::debug!(
                        "a statement pgsplit prepared for the session failed; the client hears it"
                    );
                }
                Event::OwnReady { failed } => {
                    if failed {
                        tracing::debug!("pgsplit's own query before the session's request failed");
                    }
                }
                Event::CopyIn => {
                    let extended = self.open == Unsynced::Nothing
                        && self.requests.front().is_some_and(|r| r.extended);
                    self.copy = if extended {
                        CopyIn::Extended { done: false }
                    } else {
                        CopyIn::Plain
                    };
                }
                Event::Nothing => {}
            }
            self.server_fatal |= fatal && action == Action::Forward;
            self.pass(wire, action);
            let unprepared = self.replies.take_unprepared();
            let parsed = self.replies.take_parsed();
            if let Some(active) = self.active.as_mut() {
                for id in unprepared {
                    active.conn.statements.remove(id);
                }
                for id in parsed {
                    active.conn.statements.prove(id);
                }
            }
        }
        self.emit_standins()?;
        if !detach && self.idle_point() {
            // Back to the pool before the client hears the ReadyForQuery:
            // its next request (or another session's) finds it there.
            self.give_back();
        }
        self.publish();
        self.try_send_to_client()?;
        if detach {
            if let Some(active) = self.active.take() {
                self.release(active, Leaving::Busy);
            }
            if let Some(home) = self.home.take() {
                self.activate(home);
            }
        }
        if released && self.intake == Intake::Held {
            // What waited behind the safety net goes now.
            self.intake = Intake::Open;
            return self.on_client_bytes(false).await;
        }
        Ok(false)
    }

    /// Passes the next `n` unforwarded server bytes on to the client, or
    /// drops them.
    fn pass(&mut self, n: usize, action: Action) {
        match action {
            Action::Forward => self.to_client += n,
            Action::Drop => {
                if self.to_client == 0 {
                    self.server_in.advance(n);
                } else {
                    let tail = self.server_in.split_off(self.to_client + n);
                    self.server_in.truncate(self.to_client);
                    self.server_in.unsplit(tail);
                }
            }
        }
    }

    /// A request's ReadyForQuery: its staged effects apply or drop, its
    /// commit sets the read-your-writes floor (and, for a client that asked,
    /// the `pgsplit.commit_lsn` report goes just ahead of it).
    async fn on_ready(&mut self, status: u8) {
        let after = TxStatus::from_byte(status);
        let before = self.tx;
        self.tx = after;
        self.copy = CopyIn::Off;
        let Some(request) = self.requests.pop_front() else {
            return;
        };
        let duration = request.started.elapsed().as_secs_f64();
        let metrics = self.shared.metrics.listener(self.listener);
        if request.on_replica {
            metrics.duration_replica.observe(duration);
        } else {
            metrics.duration_primary.observe(duration);
        }
        let settings_before = self.session.settings.fingerprint();
        let pinned = self
            .session
            .on_ready(request.staged, before, after, request.error)
            .is_some();
        let settings = self.session.settings.fingerprint();
        if settings != settings_before {
            // The connection ran the SET (or RESET) itself: it holds the
            // session's settings now.
            if let Some(active) = self.active.as_mut() {
                active.conn.settings = settings;
                active.conn.role_changed |= self.session.settings.sets_role();
            }
        }
        if pinned || !self.counted_pins.is_empty() || self.session.pins.is_pinned() {
            self.sync_pin_gauges();
        }
        self.tx_wrote |= request.wrote;
        if after != TxStatus::Idle || !std::mem::take(&mut self.tx_wrote) {
            return;
        }
        // A write committed (or may have): reads from now on must see it.
        let now = Instant::now();
        self.session.floor.committed_before = Some(now);
        self.session.floor.wrote_at = Some(now);
        let config = self.shared.config.load();
        if config.consistency.mode == crate::config::ConsistencyMode::Lsn {
            // Start learning where that is before the next read asks.
            self.shared.positions.want(&self.session.floor);
        }
        if self.report_lsn {
            let wait = std::time::Duration::from_secs(2);
            if let Some(lsn) = self.shared.positions.primary_after(now, wait).await {
                let mut report = BytesMut::new();
                encode::parameter_status(&mut report, "pgsplit.commit_lsn", &lsn.to_string());
                let tail = self.server_in.split_off(self.to_client);
                self.server_in.extend_from_slice(&report);
                self.to_client = self.server_in.len();
                self.server_in.unsplit(tail);
            }
        }
    }

    /// The replica refused the read because it is a standby: drop its
    /// answer and send the request to the primary.
    async fn rerun(&mut self, len: usize) -> Result<bool, Failure> {
        self.pass(len, Action::Drop);
        self.replies.clear();
        self.requests.clear();
        self.tx = TxStatus::Idle;
        let replay = self.replay.take().expect("armed");
        let backend = self
            .active
            .as_ref()
            .map_or_else(String::new, |a| a.conn.name.to_string());
        tracing::info!(%backend, "a read was refused by the replica as a standby; running it on the primary");
        if let Some(active) = self.active.take() {
            self.release(active, Leaving::Clean);
        }
        if let Some(home) = self.home.take() {
            self.activate(home);
        }
        // The request again, ahead of anything the client sent since.
        let mut again = BytesMut::with_capacity(replay.bytes.len() + self.client_in.len());
        again.extend_from_slice(&replay.bytes);
        again.extend_from_slice(&self.client_in);
        self.client_in = again;
        self.intake = Intake::Open;
        self.on_client_bytes(true).await
    }

    /// The server closed its side (or a write to it failed).
    pub(super) async fn on_server_closed(&mut self) -> Result<(), Failure> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        self.cancel.slot().set(None);
        let idle = self.requests.is_empty()
            && self.replies.is_empty()
            && self.open == Unsynced::Nothing
            && self.tx == TxStatus::Idle
            && self.streaming.is_none();
        if idle && !(self.session.pins.is_pinned() && self.keeps(&active)) {
            // Gone between requests: the next one gets another.
            tracing::info!(backend = %active.conn.name, "the server closed an idle connection");
            self.server_in.truncate(self.to_client);
            drop(active);
            if let Some(home) = self.home.take() {
                self.activate(home);
            }
            return Ok(());
        }
        // Whatever the server said before it went goes to the client.
        let error = SessionError::ServerLost {
            backend: active.conn.name.to_string(),
            address: active.conn.addr.to_string(),
        };
        drop(active);
        let can_tell = self.streaming.is_none() && !self.server_fatal;
        let mut out = self.server_in.split_to(self.to_client);
        self.to_client = 0;
        let _ = super::io::flush_client(self.client, &mut out).await;
        Err(Failure { error, can_tell })
    }

    /// The error for losing the active server mid-request.
    fn lost(&self) -> Failure {
        let error = match &self.active {
            Some(a) => SessionError::ServerLost {
                backend: a.conn.name.to_string(),
                address: a.conn.addr.to_string(),
            },
            None => SessionError::ServerLost {
                backend: String::new(),
                address: String::new(),
            },
        };
        Failure {
            error,
            can_tell: false,
        }
    }
}
