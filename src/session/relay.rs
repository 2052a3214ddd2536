//! The relay: one logged-in client and the server connections it borrows.
//! I/O only: what to do with each request is the router's decision, what a
//! connection is sent is `forward`'s, what its replies mean is `replies`'.
//!
//! One future polls both sockets: pending writes first, then reads, so each
//! direction moves independently (a client pipelining large statements while
//! the server streams large results cannot deadlock the pair); a side stops
//! being read while more than [`HIGH_WATER`] bytes wait to leave through the
//! other. Client bytes are framed into [`Batch`]es once; server bytes stream
//! through, and only the messages the reply tracker needs are read whole.
//!
//! At every idle point (ReadyForQuery `I`, nothing in flight, no batch
//! open) the session gives its connection back to the pool, unless it is
//! pinned or in session mode; a pinned session keeps it as its *home* and
//! borrows replica connections for reads around it.

mod answer;
mod catalog;
mod scan;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::batch::{Batch, End};
use super::error::SessionError;
use super::forward::{forward, Ends};
use super::replies::Replies;
use super::server::{self, Leased, Leaving, Want};
use super::state::{SessionState, Staged, TxStatus};
use super::stream::ClientStream;
use super::target;
use crate::auth::UserEntry;
use crate::cancel::CancelHandle;
use crate::config::PoolMode;
use crate::metrics::ListenerMetrics;
use crate::pool::Login;
use crate::protocol::frame::bytes_wanted;
use crate::router::{self, Decision, Flow, Listener, On, Route, To};
use crate::shared::Shared;

/// Read size for each side.
const READ_SIZE: usize = 16 * 1024;

/// Bytes above which a side is no longer read until the other side took some.
pub const HIGH_WATER: usize = 256 * 1024;

/// How a relay ended without error.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client sent Terminate.
    Terminated,
    /// The client closed the connection (`busy`: with a request in flight).
    ClientGone { busy: bool },
    /// Shutdown found the session idle.
    Shutdown,
}

/// A relay error, and whether the client can still be sent an ErrorResponse
/// (only at a message boundary of the server stream).
#[derive(Debug)]
pub struct Failure {
    pub error: SessionError,
    pub can_tell: bool,
}

/// What a session moved, for its log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Requests served by the primary.
    pub to_primary: u64,
    /// Requests served by a replica.
    pub to_replica: u64,
}

/// A client request in flight.
#[derive(Debug)]
struct Request {
    staged: Staged,
    /// Sent to the primary for a reason that may write.
    wrote: bool,
    /// The server reported an error for it.
    error: bool,
    started: Instant,
    on_replica: bool,
    /// It ended with a Sync (extended protocol), not a Query.
    extended: bool,
}

/// A copy of the read in flight on a replica, for the safety net.
#[derive(Debug)]
struct Replay {
    bytes: BytesMut,
    net: Net,
}

/// Where the standby-error safety net stands (see `retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Net {
    Off,
    Armed,
    Refused,
}

/// What the client sent since its last Sync (or Query): an extended batch
/// left open with Flush holds the server until its Sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unsynced {
    Nothing,
    /// Only statements parsed, described or closed, and no error: the
    /// server holds nothing a Sync would lose (statements outlive it, and
    /// pgsplit re-prepares them wherever they are needed), so the batch
    /// may be closed and what follows go elsewhere.
    Movable,
    /// Portals bound or run, a COPY, or an error: the rest of the batch
    /// goes where it began.
    Fixed,
}

/// Everything the session needs from its login.
pub struct Start<'a> {
    pub shared: &'a Arc<Shared>,
    pub listener: Listener,
    pub id: u64,
    pub client: &'a mut ClientStream,
    pub cancel: &'a CancelHandle,
    pub user: Arc<UserEntry>,
    pub login: Login,
    pub session: SessionState,
    pub report_lsn: bool,
    /// The connection the login used, kept (session mode).
    pub home: Option<Leased>,
}

/// See the module doc.
pub struct Relay<'a> {
    shared: &'a Arc<Shared>,
    listener: Listener,
    id: u64,
    client: &'a mut ClientStream,
    cancel: &'a CancelHandle,
    user: Arc<UserEntry>,
    login: Login,
    mode: PoolMode,
    report_lsn: bool,
    max: usize,
    session: SessionState,
    client_in: BytesMut,
    to_server: BytesMut,
    server_in: BytesMut,
    /// `server_in[..to_client]` is ready to go to the client.
    to_client: usize,
    /// A write to the client may sit in a TLS buffer until flushed.
    client_dirty: bool,
    /// The connection requests go to now.
    active: Option<Leased>,
    /// The connection the session keeps while `active` is a borrowed one.
    home: Option<Leased>,
    replies: Replies,
    requests: VecDeque<Request>,
    /// Effects of messages sent without a request end (Flush), for the
    /// next request.
    staged: Staged,
    /// Transaction status as of the last ReadyForQuery.
    tx: TxStatus,
    /// The open transaction may have written on the primary.
    tx_wrote: bool,
    /// What the client sent since its last Sync or Query.
    open: Unsynced,
    /// A plain BEGIN answered by pgsplit, not sent yet.
    deferred_begin: Option<BytesMut>,
    /// A refused extended batch: the client's messages are dropped up to
    /// its Sync.
    skip_to_sync: bool,
    /// Client bytes wait until the requests in flight are answered.
    held: bool,
    /// A server message whose body is still streaming through.
    streaming: Option<(usize, super::replies::Action)>,
    batch: Batch,
    /// The connection the session used last.
    last_serial: Option<u64>,
    /// The replica the session reads from (by name).
    preferred: Option<Arc<str>>,
    replay: Option<Replay>,
    /// The next batch is one the safety net put back.
    retry_next: bool,
    /// A FATAL error from the server went to the client.
    server_fatal: bool,
    /// The server is in COPY FROM STDIN for the request in flight.
    copying: bool,
    /// The server ignores Syncs during COPY FROM STDIN: the one the COPY's
    /// own batch carried was ignored, so the next ones, up to the first
    /// after CopyDone/CopyFail, bring no ReadyForQuery of their own.
    absorb_sync: bool,
    /// CopyDone or CopyFail went to the server.
    copy_done: bool,
    /// Pin causes counted in `pgsplit_pinned_sessions`.
    counted_pins: Vec<crate::classify::PinCause>,
    traffic: Traffic,
    draining: bool,
}

impl<'a> Relay<'a> {
    pub fn new(start: Start<'a>) -> Relay<'a> {
        let config = start.shared.config.load();
        let mut relay = Relay {
            shared: start.shared,
            listener: start.listener,
            id: start.id,
            client: start.client,
            cancel: start.cancel,
            user: start.user,
            login: start.login,
            mode: config.pool.mode,
            report_lsn: start.report_lsn,
            max: config.limits.max_message_size,
            session: start.session,
            client_in: BytesMut::new(),
            to_server: BytesMut::new(),
            server_in: BytesMut::new(),
            to_client: 0,
            client_dirty: false,
            active: None,
            home: None,
            replies: Replies::default(),
            requests: VecDeque::new(),
            staged: Staged::default(),
            tx: TxStatus::Idle,
            tx_wrote: false,
            open: Unsynced::Nothing,
            deferred_begin: None,
            skip_to_sync: false,
            held: false,
            streaming: None,
            batch: Batch::default(),
            last_serial: None,
            preferred: None,
            replay: None,
            retry_next: false,
            server_fatal: false,
            copying: false,
            absorb_sync: false,
            copy_done: false,
            counted_pins: Vec::new(),
            traffic: Traffic::default(),
            draining: false,
        };
        if let Some(home) = start.home {
            relay.activate(home);
        }
        relay
    }

    fn metrics(&self) -> &ListenerMetrics {
        self.shared.metrics.listener(self.listener)
    }

    /// Runs until the client leaves, a server is lost mid-request, or
    /// shutdown finds the session idle; then gives its connections back.
    pub async fn run(mut self) -> (Result<Outcome, Failure>, Traffic) {
        let result = self.turns().await;
        self.finish(&result);
        (result, self.traffic)
    }

    /// Nothing in flight, no transaction, no batch open: connections may
    /// change hands.
    fn idle_point(&self) -> bool {
        self.quiet() && self.tx == TxStatus::Idle && self.deferred_begin.is_none()
    }

    /// Nothing in flight on the connection and no batch open (a
    /// transaction may be).
    fn quiet(&self) -> bool {
        self.requests.is_empty()
            && self.replies.is_empty()
            && self.open == Unsynced::Nothing
            && self.streaming.is_none()
            && self.server_in.len() == self.to_client
            && self.to_server.is_empty()
    }

    async fn turns(&mut self) -> Result<Outcome, Failure> {
        let shutdown = self.shared.shutdown.clone().cancelled_owned();
        tokio::pin!(shutdown);
        let hard_stop = self.shared.hard_stop.clone().cancelled_owned();
        tokio::pin!(hard_stop);
        let mut routing = self.shared.topology.subscribe_routing();
        routing.mark_unchanged();
        let mut routing_change = Box::pin(next_change(routing));
        loop {
            if self.draining && self.idle_point() && self.to_client == 0 && !self.client_dirty {
                return Ok(Outcome::Shutdown);
            }
            let read_client = !self.held && self.to_server.len() < HIGH_WATER;
            let read_server = self.active.is_some() && self.to_client < HIGH_WATER;
            if read_client {
                let wanted =
                    bytes_wanted(&self.client_in, self.max).map_err(|e| self.fail(e.into()))?;
                self.client_in.reserve(wanted.max(READ_SIZE));
            }
            if read_server {
                self.server_in.reserve(READ_SIZE);
            }
            let server = self.active.as_mut().map(|l| &mut l.conn.stream);
            let io = poll_io(
                &mut *self.client,
                server,
                Buffers {
                    client_in: &mut self.client_in,
                    to_server: &self.to_server,
                    server_in: &mut self.server_in,
                    to_client: self.to_client,
                    client_dirty: self.client_dirty,
                },
                read_client,
                read_server,
            );
            let event = tokio::select! {
                biased;
                event = io => event,
                (receiver, changed) = &mut routing_change => {
                    routing_change = Box::pin(next_change(receiver));
                    if changed.is_ok() {
                        self.on_routing_change()?;
                    }
                    continue;
                }
                _ = &mut hard_stop => {
                    // The grace period is over: what is in flight is
                    // cancelled, an open transaction rolls back.
                    return Err(self.fail(SessionError::Shutdown));
                }
                _ = &mut shutdown, if !self.draining => {
                    self.draining = true;
                    continue;
                }
            };
            match event {
                Io::ClientRead(Ok(0)) => {
                    return Ok(Outcome::ClientGone {
                        busy: !self.requests.is_empty() || self.open != Unsynced::Nothing,
                    })
                }
                Io::ClientRead(Ok(n)) => {
                    self.traffic.bytes_in += n as u64;
                    if self.on_client_bytes().await? {
                        return Ok(Outcome::Terminated);
                    }
                }
                Io::ClientRead(Err(e)) => return Err(self.fail(SessionError::ClientIo(e))),
                Io::ServerRead(Ok(0)) | Io::ServerRead(Err(_)) => self.on_server_closed().await?,
                Io::ServerRead(Ok(_)) => {
                    if self.on_server_bytes().await? {
                        return Ok(Outcome::Terminated);
                    }
                }
                Io::ServerWrote(Ok(n)) => {
                    self.to_server.advance(n);
                    self.metrics().bytes_to_server.inc_by(n as u64);
                }
                Io::ServerWrote(Err(_)) => self.on_server_closed().await?,
                Io::ClientWrote(Ok(n)) => self.sent_to_client(n),
                Io::ClientFlushed(Ok(())) => self.client_dirty = false,
                Io::ClientWrote(Err(e)) | Io::ClientFlushed(Err(e)) => {
                    return Err(self.fail(SessionError::ClientIo(e)))
                }
            }
            if self.idle_point() {
                if self.on_idle().await? {
                    return Ok(Outcome::Terminated);
                }
            } else if self.held && self.quiet() {
                // Inside a transaction: what waited for the connection to
                // be quiet goes now.
                self.held = false;
                if self.on_client_bytes().await? {
                    return Ok(Outcome::Terminated);
                }
            }
        }
    }

    fn fail(&self, error: SessionError) -> Failure {
        Failure {
            error,
            can_tell: self.streaming.is_none() && self.to_client == 0,
        }
    }

    fn sent_to_client(&mut self, n: usize) {
        self.server_in.advance(n);
        self.to_client -= n;
        self.client_dirty = true;
        self.traffic.bytes_out += n as u64;
        self.metrics().bytes_to_client.inc_by(n as u64);
    }

    /// Writes what the client can take now without waiting.
    fn try_send_to_client(&mut self) -> Result<(), Failure> {
        let mut cx = Context::from_waker(Waker::noop());
        while self.to_client > 0 {
            match Pin::new(&mut *self.client).poll_write(&mut cx, &self.server_in[..self.to_client])
            {
                Poll::Ready(Ok(n)) => self.sent_to_client(n),
                Poll::Ready(Err(e)) => return Err(self.fail(SessionError::ClientIo(e))),
                Poll::Pending => return Ok(()),
            }
        }
        if self.client_dirty {
            match Pin::new(&mut *self.client).poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => self.client_dirty = false,
                Poll::Ready(Err(e)) => return Err(self.fail(SessionError::ClientIo(e))),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Writes what the server can take now without waiting.
    fn try_send_to_server(&mut self) {
        let Some(leased) = self.active.as_mut() else {
            return;
        };
        while !self.to_server.is_empty() {
            match leased.conn.stream.try_write(&self.to_server) {
                Ok(n) => {
                    self.to_server.advance(n);
                    self.shared
                        .metrics
                        .listener(self.listener)
                        .bytes_to_server
                        .inc_by(n as u64);
                }
                // The loop's poll writes the rest (or sees the error).
                Err(_) => return,
            }
        }
    }

    /// Client bytes to go out ahead of whatever the server sends next:
    /// pgsplit's own answers.
    fn answer_client(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let tail = self.server_in.split_off(self.to_client);
        self.server_in.extend_from_slice(bytes);
        self.to_client = self.server_in.len();
        self.server_in.unsplit(tail);
        self.try_send_to_client()
    }

    /// Frames and dispatches the client's whole batches. Returns true when
    /// the client sent Terminate.
    async fn on_client_bytes(&mut self) -> Result<bool, Failure> {
        let mut waited = false;
        let mut looked_up = false;
        loop {
            if self.held {
                return Ok(false);
            }
            // A batch the safety net put back goes to the primary.
            let retry = std::mem::take(&mut self.retry_next);
            if self.skip_to_sync {
                if !self.skip_refused()? || self.skip_to_sync {
                    return Ok(false);
                }
                continue;
            }
            let mut batch = std::mem::take(&mut self.batch);
            let framed = {
                let classifier = self.shared.classifier.load();
                let metrics = &self.shared.metrics;
                batch.frame(&self.client_in, self.max, HIGH_WATER, |sql| {
                    let started = Instant::now();
                    let verdict = match std::str::from_utf8(sql) {
                        Ok(text) => classifier.classify(text),
                        Err(_) => Arc::new(crate::classify::Verdict::write(
                            crate::classify::Why::Unparsable,
                        )),
                    };
                    metrics
                        .classify_seconds
                        .observe(started.elapsed().as_secs_f64());
                    verdict
                })
            };
            let framed = match framed {
                Ok(framed) => framed,
                Err(e) => {
                    self.batch = batch;
                    return Err(self.fail(e.into()));
                }
            };
            if !framed {
                self.batch = batch;
                return Ok(false);
            }
            if batch.is_terminate() {
                self.batch = batch;
                self.client_in.advance(self.batch.len);
                return Ok(true);
            }
            if self.replay.as_ref().is_some_and(|r| r.net != Net::Off) {
                // A request is held for the safety net; it alone is in
                // flight until its answer is known.
                self.batch = batch;
                self.held = true;
                return Ok(false);
            }
            let decision = self.decide(&batch, waited, looked_up, retry);
            if retry && !matches!(decision, Decision::Send(_)) {
                self.retry_next = true;
            }
            let result = match decision {
                Decision::Hold => {
                    self.held = true;
                    Ok(())
                }
                Decision::Lookup(_) if !self.requests.is_empty() || !self.replies.is_empty() => {
                    // pgsplit's own query waits for the connection to be
                    // quiet (a pipeline inside a transaction).
                    self.held = true;
                    Ok(())
                }
                Decision::Lookup(lookups) => {
                    looked_up = true;
                    let done = self.lookup(&lookups).await;
                    self.batch = batch;
                    done?;
                    continue;
                }
                Decision::WaitPositions => {
                    waited = true;
                    self.wait_positions().await;
                    self.batch = batch;
                    continue;
                }
                Decision::Settle => {
                    self.settle();
                    Ok(())
                }
                Decision::Answer(answer) => self.answer(&batch, answer),
                Decision::Send(route) => self.send(&batch, route).await,
            };
            self.batch = batch;
            result?;
            if self.held {
                return Ok(false);
            }
            waited = false;
            looked_up = false;
        }
    }

    /// The router's view of where the conversation stands.
    fn flow(&self) -> Flow {
        if self.deferred_begin.is_some() {
            return Flow::DeferredBegin;
        }
        let Some(on) = self.active.as_ref().map(|l| l.on) else {
            return Flow::Idle;
        };
        if self.open == Unsynced::Movable && !self.copying && self.tx == TxStatus::Idle {
            Flow::Described { on }
        } else if self.open != Unsynced::Nothing || self.copying {
            Flow::BatchOpen { on }
        } else if self.tx != TxStatus::Idle {
            Flow::InTransaction {
                on,
                failed: self.tx == TxStatus::Failed,
            }
        } else if !self.requests.is_empty() || !self.replies.is_empty() {
            Flow::Pipelined { on }
        } else {
            Flow::Idle
        }
    }

    fn decide(&self, batch: &Batch, waited: bool, looked_up: bool, retry: bool) -> Decision {
        let snapshot = self.shared.topology.snapshot();
        let config = self.shared.config.load();
        let catalog = CatalogView {
            catalog: &self.shared.catalog,
            database: self.login.database(),
        };
        let positions = PositionsView {
            positions: &self.shared.positions,
            snapshot: &snapshot,
        };
        let input = router::Input {
            listener: self.listener,
            batch,
            bytes: &self.client_in[..batch.len],
            session: &self.session,
            flow: self.flow(),
            snapshot: &snapshot,
            catalog: &catalog,
            positions: &positions,
            policy: router::Policy {
                consistency: config.consistency.mode,
                window: Duration::from_millis(config.consistency.window_ms),
                max_wait: Duration::from_millis(config.consistency.max_wait_ms),
                no_replica: config.routing.no_replica,
            },
            ticket: self.shared.topology.ticket(),
            preferred: self
                .preferred
                .as_deref()
                .and_then(|name| snapshot.backends.iter().position(|b| *b.name == *name)),
            now: Instant::now(),
            retry,
            waited,
            looked_up,
            home: self.home_on(),
        };
        let decision = router::route(&input);
        if tracing::enabled!(tracing::Level::TRACE) {
            let tags: String = batch.msgs.iter().map(|m| m.tag as char).collect();
            tracing::trace!(flow = ?input.flow, %tags, ?decision, "routed a batch");
        }
        decision
    }

    /// Closes the open batch with a Sync of pgsplit's own (its
    /// ReadyForQuery stays here); the batch waiting goes at the idle point
    /// that follows.
    fn settle(&mut self) {
        crate::protocol::encode::sync(&mut self.to_server);
        self.replies
            .push(super::replies::Item::Own(super::replies::Await::Ready));
        self.open = Unsynced::Nothing;
        self.held = true;
        self.try_send_to_server();
    }

    /// What the connection the session keeps serves, if it keeps one.
    fn home_on(&self) -> Option<On> {
        self.home
            .as_ref()
            .or(self.active.as_ref().filter(|a| self.keeps(a)))
            .map(|l| l.on)
    }

    /// Whether the session keeps `leased` at an idle point: while pinned,
    /// or in session mode, the connection of its port's own kind.
    fn keeps(&self, leased: &Leased) -> bool {
        keeps(
            self.listener,
            self.mode,
            self.session.pins.is_pinned(),
            leased,
        )
    }

    /// Makes `leased` the active connection.
    fn activate(&mut self, leased: Leased) {
        self.last_serial = Some(leased.conn.serial);
        self.cancel.slot().set(Some(leased.conn.cancel_target()));
        self.active = Some(leased);
    }

    /// Lets a connection go (see `server::release`).
    fn release(&mut self, leased: Leased, leaving: Leaving) {
        self.cancel.slot().set(None);
        server::release(self.shared, leased, leaving);
    }

    /// Makes the active connection one that serves `to`, at an idle point
    /// taking it from the pool (or the session's home); elsewhere the
    /// current one goes on.
    async fn connect_for(&mut self, to: To, at_idle: bool) -> Result<(), Failure> {
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
    fn first_reader(&self) -> On {
        let snapshot = self.shared.topology.snapshot();
        match snapshot.read_schedule.first() {
            Some(&i) if Some(i) != snapshot.primary => On::Replica(i),
            _ => On::ReadOnlyPrimary,
        }
    }

    /// Sends a batch where the router said.
    async fn send(&mut self, batch: &Batch, route: Route) -> Result<(), Failure> {
        let at_idle = self.idle_point();
        if at_idle {
            if let Err(ms) = self.shared.wait_unpaused().await {
                return Err(Failure {
                    error: SessionError::PauseTimeout { ms },
                    can_tell: true,
                });
            }
        }
        if let To::Replica(i) = route.to {
            // A session reads from one replica while it serves; taking a
            // new one moves the weighted schedule on.
            let snapshot = self.shared.topology.snapshot();
            let name = snapshot.backends.get(i).map(|b| b.name.as_str());
            if self.preferred.as_deref() != name {
                self.shared.topology.advance_ticket();
                self.preferred = name.map(Arc::from);
            }
        }
        self.connect_for(route.to, at_idle).await?;
        if batch.end == End::Copy {
            self.copy_done |= batch.msgs.iter().any(|m| {
                matches!(
                    m.tag,
                    crate::protocol::tag::COPY_DONE | crate::protocol::tag::COPY_FAIL
                )
            });
        }
        if self.absorb_sync && batch.end == End::Sync && batch.msgs.len() == 1 {
            // Ignored by the server in COPY mode: it answers nothing.
            self.to_server
                .extend_from_slice(&self.client_in[..batch.len]);
            self.absorb_sync = !self.copy_done;
            self.client_in.advance(batch.len);
            self.try_send_to_server();
            return Ok(());
        }
        let mut route = route;
        if at_idle && !self.sync_settings().await? {
            // A replica could not take the session's settings: the primary.
            self.connect_for(To::Primary, true).await?;
            self.sync_settings().await?;
            route.reason = router::Reason::Statement(crate::classify::Why::Session);
        }
        let at_boundary = self.open == Unsynced::Nothing;
        if let Some(begin) = self.deferred_begin.take() {
            self.to_server.extend_from_slice(&begin);
            self.replies
                .push(super::replies::Item::Own(super::replies::Await::Ready));
        }
        let config = self.shared.config.load();
        let leased = self.active.as_mut().expect("connected above");
        let on = leased.on;
        let bytes = &self.client_in[..batch.len];
        let forwarded = forward(
            batch,
            bytes,
            Ends {
                session: &mut self.session,
                session_id: self.id,
                conn: &mut leased.conn.statements,
                registry: &self.shared.statements,
                max_statements: config.pool.max_prepared_statements,
                at_boundary,
            },
            &mut self.to_server,
            &mut self.replies,
        );
        self.shared.metrics.prepared_statements(
            forwarded.prepared,
            forwarded.reused,
            forwarded.evicted,
        );
        let net = if at_idle
            && batch.requests == 1
            && self.listener == Listener::ReadWrite
            && matches!(on, On::Replica(_))
        {
            Net::Armed
        } else {
            Net::Off
        };
        if net == Net::Armed {
            let replay = self.replay.get_or_insert_with(|| Replay {
                bytes: BytesMut::new(),
                net: Net::Off,
            });
            replay.bytes.clear();
            replay.bytes.extend_from_slice(bytes);
            replay.net = Net::Armed;
        }
        let executed = self.session.executed(batch, &self.client_in[..batch.len]);
        self.session.send(&executed, &mut self.staged);
        if let Some(pin) = route.pin {
            self.session.pin(pin);
        }
        self.sync_pin_gauges();
        let on_primary = matches!(on, On::Primary | On::ReadOnlyPrimary);
        if batch.requests > 0 {
            self.requests.push_back(Request {
                staged: std::mem::take(&mut self.staged),
                wrote: on_primary && route.reason.may_write(),
                error: false,
                started: Instant::now(),
                on_replica: !on_primary,
                extended: batch.end == End::Sync,
            });
        }
        self.open = match batch.end {
            End::Flush | End::Open => match self.open {
                Unsynced::Nothing | Unsynced::Movable if batch.only_statements() => {
                    Unsynced::Movable
                }
                _ => Unsynced::Fixed,
            },
            End::Copy => self.open,
            _ => Unsynced::Nothing,
        };
        let n = u64::from(batch.requests);
        let target = if on_primary { "primary" } else { "replica" };
        if on_primary {
            self.traffic.to_primary += n;
        } else {
            self.traffic.to_replica += n;
        }
        self.metrics().statements(target, route.reason.label(), n);
        if let Some(outcome) = route.ryw {
            self.shared.metrics.read_your_writes(outcome.label());
            if matches!(
                outcome,
                router::RywOutcome::Unknown | router::RywOutcome::Behind
            ) {
                // Ask for positions for the reads that follow.
                self.shared.positions.want(&self.session.floor);
            }
        }
        self.client_in.advance(batch.len);
        self.emit_standins()?;
        self.try_send_to_server();
        Ok(())
    }

    /// Stand-in replies now due go to the client.
    fn emit_standins(&mut self) -> Result<(), Failure> {
        let mut standins = BytesMut::new();
        self.replies.standins(&mut standins);
        if standins.is_empty() {
            return Ok(());
        }
        let tail = self.server_in.split_off(self.to_client);
        self.server_in.extend_from_slice(&standins);
        self.to_client = self.server_in.len();
        self.server_in.unsplit(tail);
        self.try_send_to_client()
    }

    /// Counts the session's pins in `pgsplit_pinned_sessions` as they change.
    fn sync_pin_gauges(&mut self) {
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

    /// At an idle point: the connection goes back to the pool unless the
    /// session keeps it; a held batch goes now. Returns true when the
    /// client sent Terminate meanwhile.
    async fn on_idle(&mut self) -> Result<bool, Failure> {
        self.give_back();
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
        if self.held {
            self.held = false;
            return self.on_client_bytes().await;
        }
        Ok(false)
    }

    /// At an idle point: the connection goes back to the pool unless the
    /// session keeps it (the home connection becomes active again).
    fn give_back(&mut self) {
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

    /// Waits for fresher replica positions, up to `max_wait_ms`.
    async fn wait_positions(&mut self) {
        let config = self.shared.config.load_full();
        let wait = Duration::from_millis(config.consistency.max_wait_ms);
        let started = Instant::now();
        let floor = self.session.floor;
        let mut changes = self.shared.positions.subscribe();
        self.shared.positions.want(&floor);
        let _ = tokio::time::timeout(wait, async {
            loop {
                if changes.changed().await.is_err() {
                    return;
                }
                let snapshot = self.shared.topology.snapshot();
                let has = snapshot.read_schedule.iter().any(|&i| {
                    self.shared.positions.check(
                        &snapshot.backends[i].name,
                        snapshot.backends[i].replay_lsn,
                        &floor,
                    ) == crate::consistency::Check::Has
                });
                if has {
                    return;
                }
                self.shared.positions.want(&floor);
            }
        })
        .await;
        self.shared
            .metrics
            .ryw_wait_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// The routing changed: a connection that no longer fits what it serves
    /// is let go at once when idle; a session whose state lives on it, or
    /// that is inside a transaction on a former primary, ends with one clear
    /// error (writes must not go on against a fenced primary).
    fn on_routing_change(&mut self) -> Result<(), Failure> {
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
    fn finish(&mut self, result: &Result<Outcome, Failure>) {
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

/// The catalog as the router sees it: the session's database.
struct CatalogView<'a> {
    catalog: &'a crate::classify::catalog::Catalog,
    database: &'a str,
}

impl router::Catalog for CatalogView<'_> {
    fn function(&self, name: &str) -> Option<router::FunctionInfo> {
        self.catalog
            .function(self.database, name)
            .map(|f| router::FunctionInfo {
                read: f.read,
                sets_config: f.sets_config,
            })
    }

    fn relation_unlogged(&self, name: &str) -> Option<bool> {
        self.catalog.relation_unlogged(self.database, name)
    }

    fn function_oid(&self, oid: u32) -> Option<bool> {
        self.catalog.function_oid(self.database, oid)
    }
}

/// Replica positions as the router sees them.
struct PositionsView<'a> {
    positions: &'a crate::consistency::Positions,
    snapshot: &'a crate::topology::Snapshot,
}

impl router::Positions for PositionsView<'_> {
    fn check(
        &self,
        backend: usize,
        floor: &crate::consistency::Floor,
    ) -> crate::consistency::Check {
        let b = &self.snapshot.backends[backend];
        self.positions.check(&b.name, b.replay_lsn, floor)
    }
}

/// Resolves on the next routing change, handing the receiver back.
async fn next_change(
    mut receiver: tokio::sync::watch::Receiver<u64>,
) -> (
    tokio::sync::watch::Receiver<u64>,
    Result<(), tokio::sync::watch::error::RecvError>,
) {
    let changed = receiver.changed().await;
    (receiver, changed)
}

/// The buffers one poll looks at.
struct Buffers<'a> {
    client_in: &'a mut BytesMut,
    to_server: &'a BytesMut,
    server_in: &'a mut BytesMut,
    to_client: usize,
    client_dirty: bool,
}

/// What one turn of the I/O poll produced.
enum Io {
    ClientRead(std::io::Result<usize>),
    ServerRead(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    ClientWrote(std::io::Result<usize>),
    ClientFlushed(std::io::Result<()>),
}

/// Polls every I/O the session may do now, in one future: pending writes
/// first (so output drains before more input is taken), then reads.
fn poll_io<'a>(
    client: &'a mut ClientStream,
    mut server: Option<&'a mut tokio::net::TcpStream>,
    b: Buffers<'a>,
    read_client: bool,
    read_server: bool,
) -> impl std::future::Future<Output = Io> + 'a {
    std::future::poll_fn(move |cx| {
        if let Some(server) = server.as_deref_mut() {
            if !b.to_server.is_empty() {
                if let Poll::Ready(r) = Pin::new(&mut *server).poll_write(cx, b.to_server) {
                    return Poll::Ready(Io::ServerWrote(r));
                }
            }
        }
        if b.to_client > 0 {
            if let Poll::Ready(r) =
                Pin::new(&mut *client).poll_write(cx, &b.server_in[..b.to_client])
            {
                return Poll::Ready(Io::ClientWrote(r));
            }
        } else if b.client_dirty {
            if let Poll::Ready(r) = Pin::new(&mut *client).poll_flush(cx) {
                return Poll::Ready(Io::ClientFlushed(r));
            }
        }
        if read_client {
            if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *client), cx, &mut *b.client_in) {
                return Poll::Ready(Io::ClientRead(r));
            }
        }
        if read_server {
            if let Some(server) = server.as_deref_mut() {
                if let Poll::Ready(r) = poll_read_buf(Pin::new(server), cx, &mut *b.server_in) {
                    return Poll::Ready(Io::ServerRead(r));
                }
            }
        }
        Poll::Pending
    })
}

/// Drains the client's output (used before a session ends with an error).
pub(super) async fn flush_client(
    client: &mut ClientStream,
    out: &mut BytesMut,
) -> std::io::Result<()> {
    client.write_all(out).await?;
    client.flush().await
}
