//! The hot path: bytes between a logged-in client and its server connection.
//!
//! Client bytes are split into whole messages (bounded by `max_message_size`)
//! so pgsplit can see Terminate and count requests; server bytes stream through
//! a [`StreamScanner`] that only holds back ReadyForQuery and ErrorResponse.
//! Each read is forwarded with one write of the complete messages it contains:
//! no message is decoded, re-encoded or allocated for.
//!
//! At idle points (no request outstanding, no transaction open) the server
//! connection may be dropped and another attached before the next request:
//! when the server went away, or when the topology says it should no longer
//! serve this session (a new primary, a replica out of rotation). A session
//! caught inside a transaction on a backend that stopped being the primary
//! gets one clear error instead.

use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use super::error::SessionError;
use super::ryw::Ryw;
use super::split::Split;
use super::state::SessionState;
use super::stream::ClientStream;
use super::upstream::{eligible, lost, moved_error, Upstream};
use crate::metrics::ListenerMetrics;
use crate::protocol::frame::{bytes_wanted, split_frame, StreamScanner};
use crate::protocol::{is_frontend_tag, message, tag, ProtocolError};
use crate::route::Dest;

mod client;
mod consistency;
mod retry;
mod server_state;
#[cfg(test)]
mod tests;

use self::client::HeldStep;
use self::retry::Retry;

/// Read size for each side; buffers grow beyond it only for a large client
/// message (up to the limit) or a large watched server message.
const READ_SIZE: usize = 16 * 1024;

/// Transaction status from the last ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InBlock,
    Failed,
}

impl TxStatus {
    fn from_byte(b: u8) -> TxStatus {
        match b {
            b'T' => TxStatus::InBlock,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Idle,
        }
    }
}

/// Where the conversation with the server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing owed: the server's last word was ReadyForQuery.
    Ready(TxStatus),
    /// `owed` ReadyForQuery messages are still to come (one per Query, Sync or
    /// FunctionCall sent), or extended-protocol messages await their Sync.
    Busy { owed: u32, last: TxStatus },
}

impl Phase {
    fn sent_request(&mut self) {
        *self = match *self {
            Phase::Ready(last) => Phase::Busy { owed: 1, last },
            Phase::Busy { owed, last } => Phase::Busy {
                owed: owed + 1,
                last,
            },
        }
    }

    fn sent_unsynced(&mut self) {
        if let Phase::Ready(last) = *self {
            *self = Phase::Busy { owed: 0, last };
        }
    }

    fn got_ready(&mut self, status: TxStatus) {
        *self = match *self {
            Phase::Busy { owed, .. } if owed > 1 => Phase::Busy {
                owed: owed - 1,
                last: status,
            },
            _ => Phase::Ready(status),
        }
    }

    /// Requests whose ReadyForQuery is still to come.
    fn owed(self) -> u32 {
        match self {
            Phase::Ready(_) => 0,
            Phase::Busy { owed, .. } => owed,
        }
    }

    /// At an idle point: no request outstanding and no transaction open.
    pub fn is_idle(self) -> bool {
        self == Phase::Ready(TxStatus::Idle)
    }
}

/// How a relay ended without error.
#[derive(Debug)]
pub enum Outcome {
    /// The client sent Terminate.
    Terminated,
    /// The client closed its socket; `busy` if a query was running.
    ClientGone { busy: bool },
    /// pgsplit is shutting down and the session reached an idle point.
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
    /// Bytes from the client forwarded to servers.
    pub bytes_in: u64,
    /// Bytes from servers forwarded to the client.
    pub bytes_out: u64,
    /// Requests (Query, Sync, FunctionCall) served by the primary.
    pub to_primary: u64,
    /// Requests served by a replica.
    pub to_replica: u64,
}

/// A logged-in session: its client and its upstream.
pub struct Relay<'a> {
    pub client: &'a mut ClientStream,
    pub upstream: Upstream<'a>,
    pub max_message: usize,
    /// Per-statement routing state (read-write port only).
    pub split: Option<Split>,
    /// What the session's reads must see.
    pub ryw: Ryw,
    /// The session's last classified text (see `split::Memo`).
    pub memo: std::sync::Mutex<super::split::Memo>,
}

impl Relay<'_> {
    fn metrics(&self) -> &ListenerMetrics {
        self.upstream
            .shared
            .metrics
            .listener(self.upstream.listener)
    }

    /// Whether this session's requests run on the primary now.
    fn on_primary(&self) -> bool {
        self.upstream.dest == Dest::Primary
            || self.upstream.server.as_ref().is_some_and(|s| s.read_only)
    }

    /// The duration histogram for where this session's requests run now.
    fn duration(&self) -> &prometheus_client::metrics::histogram::Histogram {
        let metrics = self.metrics();
        if self.on_primary() {
            &metrics.duration_primary
        } else {
            &metrics.duration_replica
        }
    }

    /// Runs until the client leaves, the server is lost mid-request, or
    /// shutdown finds the session idle.
    ///
    /// Both directions move independently: a read on one side is forwarded
    /// by polling the other side's write, never by blocking on it, so a client
    /// that pipelines large requests while the server streams large results
    /// cannot deadlock the pair. Each side stops being read while more than
    /// `HIGH_WATER` bytes wait to go out of it.
    pub async fn run(mut self, traffic: &mut Traffic) -> Result<Outcome, Failure> {
        let mut d = Duplex::default();
        let result = self.turns(&mut d).await;
        *traffic = d.traffic;
        result
    }

    async fn turns(&mut self, d: &mut Duplex) -> Result<Outcome, Failure> {
        let max = self.max_message;
        let mut phase = Phase::Ready(TxStatus::Idle);
        let mut draining = false;
        // Made once and kept across turns: building them anew each turn would
        // register and drop a waiter on state shared by every session.
        let shutdown = self.upstream.shared.shutdown.clone().cancelled_owned();
        tokio::pin!(shutdown);
        let hard_stop = self.upstream.shared.hard_stop.clone().cancelled_owned();
        tokio::pin!(hard_stop);
        let mut routing = self.upstream.shared.topology.subscribe_routing();
        routing.mark_unchanged();
        let mut routing_change = Box::pin(next_change(routing));
        // A second receiver, only peeked at before forwarding a request, so a
        // request that arrives together with a routing change never reaches a
        // backend the topology already retired (one atomic load).
        let mut routing_peek = self.upstream.shared.topology.subscribe_routing();
        routing_peek.mark_unchanged();

        let outcome = loop {
            if draining
                && phase.is_idle()
                && d.to_client == 0
                && !d.client_dirty
                && d.deferred_begin.is_empty()
            {
                break Outcome::Shutdown;
            }
            // Room for the rest of a partial client message (bounded by the
            // limit, checked on its header) or for a normal read.
            let read_client = d.to_server < HIGH_WATER && !d.held;
            let read_server = self.upstream.server.is_some() && d.to_client < HIGH_WATER;
            if read_client {
                let wanted = bytes_wanted(&d.client_buf[d.to_server..], max)
                    .map_err(|e| d.fail(e.into()))?;
                d.client_buf.reserve(wanted.max(READ_SIZE));
            }
            if read_server {
                d.server_buf.reserve(READ_SIZE);
            }
            let client = &mut *self.client;
            let server = self.upstream.server.as_mut().map(|s| &mut s.stream);
            let io = poll_io(client, server, &mut *d, read_client, read_server);

            let event = tokio::select! {
                // I/O first: the other two only matter when it has nothing to do.
                biased;
                event = io => event,
                (receiver, changed) = &mut routing_change => {
                    routing_change = Box::pin(next_change(receiver));
                    if changed.is_ok() {
                        self.on_routing_change(phase, d).await?;
                    }
                    continue;
                }
                _ = &mut hard_stop => {
                    // The grace period is over: whatever is in flight is
                    // cancelled and an open transaction rolls back with the
                    // server connection.
                    self.upstream.abandon(!phase.is_idle());
                    return Err(d.fail(SessionError::Shutdown));
                }
                _ = &mut shutdown, if !draining => {
                    // Close at the next idle point (now, if idle).
                    draining = true;
                    continue;
                }
            };

            match event {
                Io::ClientRead(Ok(0)) => {
                    break Outcome::ClientGone {
                        busy: !phase.is_idle(),
                    }
                }
                Io::ClientRead(Ok(_)) => {
                    if routing_peek.has_changed().unwrap_or(false) {
                        routing_peek.mark_unchanged();
                        self.on_routing_change(phase, d).await?;
                    }
                    if self.take_client_bytes(d, &mut phase).await? {
                        self.drain_to_server(&mut *d).await;
                        break Outcome::Terminated;
                    }
                }
                Io::ClientRead(Err(e)) => return Err(d.fail(SessionError::ClientIo(e))),
                Io::ServerRead(Ok(0)) | Io::ServerRead(Err(_)) => {
                    // Whatever the server said before it went goes to the client.
                    d.flush_to_client(self.client)
                        .await
                        .map_err(|e| d.fail(SessionError::ClientIo(e)))?;
                    if phase.is_idle() && d.scanner.at_boundary() && d.state.is_clean() {
                        // Gone between requests: the next one reconnects.
                        self.upstream
                            .detach("the server closed the connection while idle")
                            .await;
                        d.server_buf.clear();
                        continue;
                    }
                    let error = lost(self.upstream.server.as_ref().expect("reading from it"));
                    return Err(Failure {
                        can_tell: d.scanner.at_boundary() && !d.server_fatal,
                        error,
                    });
                }
                Io::ServerRead(Ok(_)) => {
                    if phase.is_idle() && d.scanner.at_boundary() {
                        if d.take_idle_messages(max, d.state.is_clean()) {
                            d.flush_to_client(self.client)
                                .await
                                .map_err(|e| d.fail(SessionError::ClientIo(e)))?;
                            let why = d.fatal_reason.take().unwrap_or_default();
                            self.upstream.detach(&why).await;
                            d.server_buf.clear();
                            continue;
                        }
                    } else {
                        if d.retry != Retry::Off {
                            match self.held_replies(d, &mut phase).await? {
                                HeldStep::Wait => continue,
                                HeldStep::Go => {}
                                HeldStep::Terminated => {
                                    self.drain_to_server(&mut *d).await;
                                    break Outcome::Terminated;
                                }
                            }
                            if d.retry != Retry::Off {
                                continue;
                            }
                        }
                        let Duplex {
                            scanner,
                            server_buf,
                            to_client,
                            server_fatal,
                            ..
                        } = &mut *d;
                        let forward = scanner
                            .scan(
                                &server_buf[*to_client..],
                                max,
                                |t| t == tag::READY_FOR_QUERY || t == tag::ERROR_RESPONSE,
                                |t, body| match t {
                                    tag::READY_FOR_QUERY => phase.got_ready(TxStatus::from_byte(
                                        body.first().copied().unwrap_or(b'I'),
                                    )),
                                    _ => *server_fatal |= message::error_is_fatal(body),
                                },
                            )
                            .map_err(|_| Failure {
                                error: lost(
                                    self.upstream.server.as_ref().expect("reading from it"),
                                ),
                                can_tell: false,
                            })?;
                        *to_client += forward;
                        // The last request's answer is in, but the client has
                        // already sent part of its next extended batch (no
                        // Sync yet): that is not a point where anything may
                        // be sent in between, or the server changed.
                        if let (true, Phase::Ready(status)) = (d.open_batch, phase) {
                            phase = Phase::Busy {
                                owed: 0,
                                last: status,
                            };
                        }
                        if matches!(phase, Phase::Ready(_)) {
                            if let Some(started) = d.started.take() {
                                self.duration().observe(started.elapsed().as_secs_f64());
                            }
                        }
                    }
                    if self.ryw.dirty
                        && phase.is_idle()
                        && d.to_server == 0
                        && self.upstream.dest == Dest::Primary
                        && self.split.is_some()
                        && (self.ryw.report
                            || self.upstream.shared.config.load().consistency.mode
                                == crate::config::ConsistencyMode::Lsn)
                    {
                        self.learn_commit(d).await?;
                    }
                    self.try_send_to_client(&mut *d)?;
                    if self.can_give_back(d, phase) {
                        // The read is done: its replica connection goes back
                        // to the pool for the next read, this session's or
                        // another's.
                        self.upstream.give_back();
                    }
                    if d.held && matches!(phase, Phase::Ready(_)) && d.to_server == 0 {
                        // The server is done: what waited goes now.
                        d.held = false;
                        if self.take_client_bytes(d, &mut phase).await? {
                            self.drain_to_server(&mut *d).await;
                            break Outcome::Terminated;
                        }
                    }
                }
                Io::ServerWrote(Ok(n)) => d.sent_to_server(n, self.metrics()),
                Io::ServerWrote(Err(_)) => {
                    return Err(d.fail(lost(self.upstream.server.as_ref().expect("writing to it"))));
                }
                Io::ClientWrote(Ok(n)) => d.sent_to_client(n, self.metrics()),
                Io::ClientFlushed(Ok(())) => d.client_dirty = false,
                Io::ClientWrote(Err(e)) | Io::ClientFlushed(Err(e)) => {
                    return Err(d.fail(SessionError::ClientIo(e)))
                }
            }
        };
        // A server connection with nothing in flight or unread can be reused.
        let idle = phase.is_idle()
            && d.to_server == 0
            && d.server_buf.len() == d.to_client
            && d.scanner.at_boundary();
        self.upstream.finish(&outcome, idle).await;
        Ok(outcome)
    }

    /// Whether the active connection is a replica's, idle, holding nothing of
    /// the session: it may go back to the pool (read-write port only).
    fn can_give_back(&self, d: &Duplex, phase: Phase) -> bool {
        phase.is_idle()
            && self.upstream.dest == Dest::Replica
            && self
                .split
                .as_ref()
                .is_some_and(Split::holds_no_server_state)
            && d.to_server == 0
            && !d.held
            && d.retry == Retry::Off
            && d.server_buf.len() == d.to_client
            && d.scanner.at_boundary()
            && self
                .upstream
                .server
                .as_ref()
                .is_some_and(|s| s.synced.is_empty())
    }

    /// Writes what the server can take right now without waiting (the common
    /// case: one write per request, no extra trip through the loop).
    fn try_send_to_server(&mut self, d: &mut Duplex) -> Result<(), Failure> {
        let Some(server) = self.upstream.server.as_mut() else {
            return Ok(());
        };
        while d.to_server > 0 {
            match server.stream.try_write(&d.client_buf[..d.to_server]) {
                Ok(n) => d.sent_to_server(
                    n,
                    self.upstream
                        .shared
                        .metrics
                        .listener(self.upstream.listener),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(d.fail(lost(server))),
            }
        }
        Ok(())
    }

    /// Same towards the client (plain or TLS).
    fn try_send_to_client(&mut self, d: &mut Duplex) -> Result<(), Failure> {
        let metrics = self
            .upstream
            .shared
            .metrics
            .listener(self.upstream.listener);
        let mut cx = Context::from_waker(Waker::noop());
        while d.to_client > 0 {
            match Pin::new(&mut *self.client).poll_write(&mut cx, &d.server_buf[..d.to_client]) {
                Poll::Ready(Ok(n)) => d.sent_to_client(n, metrics),
                Poll::Ready(Err(e)) => return Err(d.fail(SessionError::ClientIo(e))),
                Poll::Pending => return Ok(()),
            }
        }
        if d.client_dirty {
            match Pin::new(&mut *self.client).poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => d.client_dirty = false,
                Poll::Ready(Err(e)) => return Err(d.fail(SessionError::ClientIo(e))),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Before ending on Terminate: what the client sent before it still goes.
    async fn drain_to_server(&mut self, d: &mut Duplex) {
        if let Some(server) = self.upstream.server.as_mut() {
            let pending = &d.client_buf[..d.to_server];
            let _ = tokio::time::timeout(Duration::from_secs(5), server.stream.write_all(pending))
                .await;
        }
    }

    /// The routing changed: leave a server that should no longer serve this
    /// session, now if idle; a read-write session inside a transaction on a
    /// former primary ends with one clear error.
    async fn on_routing_change(&mut self, phase: Phase, d: &Duplex) -> Result<(), Failure> {
        let snapshot = self.upstream.shared.topology.snapshot();
        self.upstream.prune_parked(&snapshot);
        let Some(server) = self.upstream.server.as_ref() else {
            return Ok(());
        };
        if eligible(&snapshot, self.upstream.dest.rule(), server) {
            return Ok(());
        }
        let idle = phase.is_idle() && d.to_server == 0;
        if idle && d.state.is_clean() {
            self.upstream.detach("the topology changed").await;
            return Ok(());
        }
        // Writes must not go on against a former primary; a session with state
        // that cannot move is told at its idle point. A read-only session
        // finishes its transaction where it is.
        if idle || self.upstream.dest == Dest::Primary {
            let error = moved_error(&snapshot, self.upstream.dest.rule(), server);
            // Stop a statement still running on the former primary.
            self.upstream.abandon(!idle);
            return Err(d.fail(error));
        }
        Ok(())
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

/// Bytes above which a side is no longer read until the other side took some.
const HIGH_WATER: usize = 256 * 1024;

/// Both directions' buffers. `client_buf[..to_server]` and
/// `server_buf[..to_client]` are whole, scanned messages (or for the server,
/// streamed pieces) waiting to be written; what follows is not yet scanned.
struct Duplex {
    client_buf: BytesMut,
    to_server: usize,
    server_buf: BytesMut,
    to_client: usize,
    scanner: StreamScanner,
    /// A write to the client may sit in a TLS buffer until flushed.
    client_dirty: bool,
    server_fatal: bool,
    fatal_reason: Option<String>,
    state: SessionState,
    /// When the request now in flight was sent (for the duration histogram).
    started: Option<Instant>,
    traffic: Traffic,
    /// The last message forwarded left an extended-protocol batch open.
    open_batch: bool,
    /// Client messages wait in `client_buf` until the server is done with
    /// the current request (they must go elsewhere, or need a sync first).
    held: bool,
    /// The server connection the last batch went to (its cancel key): a
    /// different one gets a full sync.
    last_server: Option<crate::protocol::startup::CancelKey>,
    /// The safety net for the request in flight, and a copy of it.
    retry: Retry,
    retry_buf: BytesMut,
    /// The next batch goes to the primary whatever it is (a retried one).
    force_primary: bool,
    /// Read-only port: a refused Parse; drop messages up to its Sync.
    skip_to_sync: bool,
    /// Read-write port: a plain BEGIN answered by pgsplit and not sent yet;
    /// the statement after it decides where the transaction runs.
    deferred_begin: BytesMut,
}

impl Default for Duplex {
    fn default() -> Self {
        Duplex {
            client_buf: BytesMut::with_capacity(READ_SIZE),
            to_server: 0,
            server_buf: BytesMut::with_capacity(READ_SIZE),
            to_client: 0,
            scanner: StreamScanner::new(),
            client_dirty: false,
            server_fatal: false,
            fatal_reason: None,
            state: SessionState::Clean,
            started: None,
            traffic: Traffic::default(),
            open_batch: false,
            held: false,
            last_server: None,
            retry: Retry::Off,
            retry_buf: BytesMut::new(),
            force_primary: false,
            skip_to_sync: false,
            deferred_begin: BytesMut::new(),
        }
    }
}

impl Duplex {
    fn fail(&self, error: SessionError) -> Failure {
        Failure {
            error,
            can_tell: self.scanner.at_boundary() && self.to_client == 0,
        }
    }

    fn sent_to_server(&mut self, n: usize, metrics: &ListenerMetrics) {
        self.client_buf.advance(n);
        self.to_server -= n;
        self.traffic.bytes_in += n as u64;
        metrics.bytes_to_server.inc_by(n as u64);
    }

    fn sent_to_client(&mut self, n: usize, metrics: &ListenerMetrics) {
        self.server_buf.advance(n);
        self.to_client -= n;
        self.client_dirty = true;
        self.traffic.bytes_out += n as u64;
        metrics.bytes_to_client.inc_by(n as u64);
    }

    async fn flush_to_client(&mut self, client: &mut ClientStream) -> std::io::Result<()> {
        if self.to_client > 0 {
            client.write_all(&self.server_buf[..self.to_client]).await?;
            self.server_buf.advance(self.to_client);
            self.to_client = 0;
        }
        client.flush().await?;
        self.client_dirty = false;
        Ok(())
    }

    /// While idle, the server only sends asynchronous messages (notices,
    /// notifications, parameter changes) or a FATAL error before it hangs up.
    /// Queues the former for the client. For a clean session, drops the latter
    /// and the rest and returns true (the session detaches without telling the
    /// client: its next request gets a fresh server); a session with state
    /// gets the FATAL like any other message.
    fn take_idle_messages(&mut self, max: usize, clean: bool) -> bool {
        while let Ok(Some(frame)) = split_frame(&self.server_buf[self.to_client..], max) {
            let fatal = frame.tag == tag::ERROR_RESPONSE && message::error_is_fatal(frame.body);
            // A session holding state hears the server's own last word.
            self.server_fatal |= fatal;
            if fatal && clean {
                let message = message::ErrorFields::parse(frame.body)
                    .map(|f| f.message.to_owned())
                    .unwrap_or_default();
                self.fatal_reason =
                    Some(format!("the server ended the idle connection: {message}"));
                self.server_buf.truncate(self.to_client);
                return true;
            }
            self.to_client += frame.wire_len();
        }
        false
    }
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
    d: &'a mut Duplex,
    read_client: bool,
    read_server: bool,
) -> impl std::future::Future<Output = Io> + 'a {
    std::future::poll_fn(move |cx| {
        if let Some(server) = server.as_deref_mut() {
            if d.to_server > 0 {
                if let Poll::Ready(r) =
                    Pin::new(&mut *server).poll_write(cx, &d.client_buf[..d.to_server])
                {
                    return Poll::Ready(Io::ServerWrote(r));
                }
            }
        }
        if d.to_client > 0 {
            if let Poll::Ready(r) =
                Pin::new(&mut *client).poll_write(cx, &d.server_buf[..d.to_client])
            {
                return Poll::Ready(Io::ClientWrote(r));
            }
        } else if d.client_dirty {
            if let Poll::Ready(r) = Pin::new(&mut *client).poll_flush(cx) {
                return Poll::Ready(Io::ClientFlushed(r));
            }
        }
        if read_client {
            if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *client), cx, &mut d.client_buf) {
                return Poll::Ready(Io::ClientRead(r));
            }
        }
        if read_server {
            if let Some(server) = server.as_deref_mut() {
                if let Poll::Ready(r) = poll_read_buf(Pin::new(server), cx, &mut d.server_buf) {
                    return Poll::Ready(Io::ServerRead(r));
                }
            }
        }
        Poll::Pending
    })
}

/// Walks the whole client messages at the front of `buf`: returns how many
/// bytes to forward and whether a Terminate follows them. Counts requests into
/// `phase`; `open_batch` says whether the last one forwarded leaves an
/// extended-protocol batch open (no Sync yet). Rejects message types a client
/// may not send after startup.
fn scan_client(
    buf: &[u8],
    max: usize,
    phase: &mut Phase,
    state: &mut SessionState,
    open_batch: &mut bool,
) -> Result<(usize, bool), ProtocolError> {
    let mut pos = 0;
    while let Some(frame) = split_frame(&buf[pos..], max)? {
        state.note(frame.tag, frame.body);
        match frame.tag {
            tag::QUERY | tag::SYNC | tag::FUNCTION_CALL | tag::TERMINATE => *open_batch = false,
            // A Flush asks for output; it neither opens nor closes a batch.
            tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {}
            _ => *open_batch = true,
        }
        match frame.tag {
            tag::TERMINATE => return Ok((pos, true)),
            tag::QUERY | tag::SYNC | tag::FUNCTION_CALL => phase.sent_request(),
            tag::PASSWORD => {
                return Err(ProtocolError::Unexpected {
                    tag: frame.tag,
                    phase: "a session",
                })
            }
            t if is_frontend_tag(t) => phase.sent_unsynced(),
            t => return Err(ProtocolError::UnknownTag { tag: t }),
        }
        pos += frame.wire_len();
    }
    Ok((pos, false))
}
