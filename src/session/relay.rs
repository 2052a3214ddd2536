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
mod conns;
mod intake;
mod io;
mod scan;

use io::{next_change, poll_io, Buffers, Io};

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::batch::Batch;
use super::error::SessionError;
use super::replies::Replies;
use super::server::Leased;
use super::state::{SessionState, Staged, TxStatus};
use super::stream::ClientStream;
use crate::auth::UserEntry;
use crate::cancel::CancelHandle;
use crate::clients::{ClientRecord, ClientState};
use crate::config::PoolMode;
use crate::metrics::ListenerMetrics;
use crate::pool::Login;
use crate::protocol::frame::bytes_wanted;
use crate::router::Listener;
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
pub enum Net {
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

/// Where a COPY FROM STDIN stands. The server ignores Syncs while in COPY
/// mode, which matters for a COPY an extended batch started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CopyIn {
    Off,
    /// Running; the client's Syncs are answered as usual (a COPY from a
    /// simple Query, or from an extended batch not synced yet).
    Plain,
    /// Running, from an extended batch whose Sync the server ignored: the
    /// client's Syncs bring no ReadyForQuery of their own, up to and
    /// including the first after CopyDone/CopyFail (`done`), whose answer
    /// is the batch's.
    Extended {
        done: bool,
    },
    /// That last Sync went; the batch's ReadyForQuery is due.
    Ending,
}

/// What happens to the client's next bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intake {
    /// Framed, routed and sent as they come.
    Open,
    /// Left waiting until the connection is quiet (the requests in flight
    /// answered), then routed.
    Held,
    /// Dropped up to the next Sync: pgsplit refused the extended batch
    /// they belong to.
    Skipping,
}

/// Everything the session needs from its login.
pub struct Start<'a> {
    pub shared: &'a Arc<Shared>,
    pub listener: Listener,
    pub id: u64,
    /// The session's record in the client table.
    pub record: &'a ClientRecord,
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
    record: &'a ClientRecord,
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
    /// What happens to the client's next bytes.
    intake: Intake,
    /// A server message whose body is still streaming through.
    streaming: Option<(usize, super::replies::Action)>,
    batch: Batch,
    /// The connection the session used last.
    last_serial: Option<u64>,
    /// The replica the session reads from (by name).
    preferred: Option<Arc<str>>,
    replay: Option<Replay>,
    /// A FATAL error from the server went to the client.
    server_fatal: bool,
    /// A COPY FROM STDIN of the request in flight.
    copy: CopyIn,
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
            record: start.record,
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
            intake: Intake::Open,
            streaming: None,
            batch: Batch::default(),
            last_serial: None,
            preferred: None,
            replay: None,
            server_fatal: false,
            copy: CopyIn::Off,
            counted_pins: Vec::new(),
            traffic: Traffic::default(),
            draining: false,
        };
        if let Some(home) = start.home {
            relay.activate(home);
        }
        relay.publish();
        relay
    }

    /// Stores what `SHOW CLIENTS` says of the session in its record: its
    /// state, pins, connections and read-your-writes floor (a few relaxed
    /// atomic stores, at request ends and idle points).
    fn publish(&self) {
        let record = self.record;
        let state = if !self.requests.is_empty() || !self.replies.is_empty() {
            ClientState::Active
        } else if self.tx != TxStatus::Idle || self.deferred_begin.is_some() {
            ClientState::InTransaction
        } else {
            ClientState::Idle
        };
        record.set_state(state);
        record.set_pins(self.session.pins.causes());
        fn held(l: &Option<Leased>) -> crate::clients::Held<'_> {
            l.as_ref().map(|l| (&*l.conn.name, l.conn.serial))
        }
        record.set_servers(&self.shared.clients, held(&self.active), held(&self.home));
        let floor = &self.session.floor;
        record.set_floor(
            &self.shared.clients,
            floor.lsn.map(|l| l.0),
            floor.committed_before,
        );
    }

    fn metrics(&self) -> &ListenerMetrics {
        self.shared.metrics.listener(self.listener)
    }

    /// The server byte counters of the active connection's kind.
    fn server_bytes(&self) -> &crate::metrics::ServerBytes {
        let replica = self
            .active
            .as_ref()
            .is_some_and(|a| matches!(a.on, crate::router::On::Replica(_)));
        self.metrics().server_bytes(replica)
    }

    /// Runs until the client leaves, a server is lost mid-request, or
    /// shutdown finds the session idle; then gives its connections back.
    ///
    /// Boxed: an idle session is mostly this future, and an `async fn`
    /// taking the relay by value would hold it twice (the argument and the
    /// local it is moved into).
    pub async fn run(mut self: Box<Self>) -> (Result<Outcome, Failure>, Traffic) {
        let result = self.turns().await;
        self.finish(&result);
        self.publish();
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
            let read_client = self.intake != Intake::Held && self.to_server.len() < HIGH_WATER;
            let read_server = self.active.is_some() && self.to_client < HIGH_WATER;
            if read_client && self.client_in.capacity() > 0 {
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
            let event = match event {
                Io::ClientReadable => {
                    // The client sent something: read it now, into a buffer
                    // taken for it (an idle session holds none).
                    self.client_in.reserve(READ_SIZE);
                    let (client, buf) = (&mut *self.client, &mut self.client_in);
                    let read =
                        std::future::poll_fn(|cx| Poll::Ready(client.read_now(cx, buf))).await;
                    match read {
                        Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            self.client_in = BytesMut::new();
                            continue;
                        }
                        Some(read) => Io::ClientRead(read),
                        // TLS: its poll reads.
                        None => continue,
                    }
                }
                other => other,
            };
            match event {
                Io::ClientRead(Ok(0)) => {
                    return Ok(Outcome::ClientGone {
                        busy: !self.requests.is_empty() || self.open != Unsynced::Nothing,
                    })
                }
                Io::ClientRead(Ok(n)) => {
                    self.traffic.bytes_in += n as u64;
                    if self.on_client_bytes(false).await? {
                        return Ok(Outcome::Terminated);
                    }
                }
                Io::ClientRead(Err(e)) => return Err(self.fail(SessionError::ClientIo(e))),
                Io::ClientReadable => unreachable!("read above"),
                Io::ServerRead(Ok(0)) | Io::ServerRead(Err(_)) => self.on_server_closed().await?,
                Io::ServerRead(Ok(n)) => {
                    self.server_bytes().received.inc_by(n as u64);
                    if self.on_server_bytes().await? {
                        return Ok(Outcome::Terminated);
                    }
                }
                Io::ServerWrote(Ok(n)) => {
                    self.to_server.advance(n);
                    self.count_sent_to_server(n);
                }
                Io::ServerWrote(Err(_)) | Io::ServerFlushed(Err(_)) => {
                    self.on_server_closed().await?
                }
                Io::ServerFlushed(Ok(())) => {}
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
            } else if self.intake == Intake::Held && self.quiet() {
                // Inside a transaction: what waited for the connection to
                // be quiet goes now.
                self.intake = Intake::Open;
                if self.on_client_bytes(false).await? {
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
}
