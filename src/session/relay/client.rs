//! Client messages on their way to a server. On the read-write port each
//! batch is routed here: planned at a batch boundary, sent to the server the
//! plan names (switching only at idle points), after bringing that server up
//! to date with the session's state. A batch that arrives while a replica is
//! busy and must go elsewhere waits in the client buffer until it is free.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::retry::{self, Held, Retry};
use super::{scan_client, Duplex, Failure, Phase, Relay, TxStatus, HIGH_WATER};
use crate::classify::Effect;
use crate::pool::ServerConn;
use crate::protocol::encode::{self, Severity};
use crate::protocol::frame::split_frame;
use crate::protocol::{message, tag};
use crate::route::Dest;
use crate::session::error::SessionError;
use crate::session::ryw::Need;
use crate::session::split::{FunctionCache, Functions};
use crate::session::state::SessionState;
use crate::session::upstream::lost;
use crate::topology::lsn::Lsn;

/// What to do with a batch on the read-write port.
enum Step {
    /// At an idle point: go where the plan says.
    Route { dest: Dest, reason: &'static str },
    /// Stay on the current server (a transaction, a batch already open, a
    /// pipelined request it can serve).
    Stay { reason: &'static str },
    /// Wait until the current server is done.
    Hold,
    /// Learn about these functions from `pg_proc`, then plan again.
    Lookup(Vec<Box<str>>),
    /// The batch is not complete yet (no Sync or Flush): read on.
    WaitClient,
}

/// What the relay does after looking at replies held for the safety net.
pub(super) enum HeldStep {
    /// Keep reading the server.
    Wait,
    /// Scan and forward as usual (the net is off, or still holding: see
    /// `Duplex::retry`).
    Go,
    /// The rerun batch ended with a Terminate.
    Terminated,
}

enum BatchEnd {
    /// The whole messages in the buffer end at a request boundary (or there
    /// are none).
    Closed,
    /// They end inside an extended-protocol batch.
    Open,
}

/// Whether the whole messages at the front of `buf` end where the client
/// waits for an answer (Query, Sync, Flush, FunctionCall, Terminate).
fn batch_end(buf: &[u8], max: usize) -> BatchEnd {
    let mut end = BatchEnd::Closed;
    let mut pos = 0;
    while let Ok(Some(frame)) = split_frame(&buf[pos..], max) {
        pos += frame.wire_len();
        end = match frame.tag {
            tag::QUERY | tag::SYNC | tag::FLUSH | tag::FUNCTION_CALL | tag::TERMINATE => {
                BatchEnd::Closed
            }
            _ => BatchEnd::Open,
        };
    }
    end
}

/// Whether a Query's text mentions `min_lsn` (a cheap filter before
/// classifying it for a causal token).
fn memchr_min_lsn(body: &[u8]) -> bool {
    body.windows(7).any(|w| w.eq_ignore_ascii_case(b"min_lsn"))
}

/// How long the replies to a sync may take.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Relay<'_> {
    /// Takes the whole messages the client sent, routes and forwards them.
    /// Returns true when a Terminate follows them.
    pub(super) async fn take_client_bytes(
        &mut self,
        d: &mut Duplex,
        phase: &mut Phase,
    ) -> Result<bool, Failure> {
        let max = self.max_message;
        if self.split.is_none() && (d.skip_to_sync || phase.is_idle()) {
            self.refuse_forbidden(d)?;
        }
        if self.split.is_some() && phase.is_idle() && self.defer_begin(d)? {
            return Ok(false);
        }
        let idle_before = phase.is_idle();
        let ready_before = matches!(phase, Phase::Ready(_));
        let owed_before = phase.owed();
        let deferred = idle_before && !d.deferred_begin.is_empty();
        let in_tx = deferred
            || match *phase {
                Phase::Ready(status) | Phase::Busy { last: status, .. } => status != TxStatus::Idle,
            };
        let mut looked_up = false;
        let step = loop {
            match self.step(d, *phase) {
                Ok(Step::Hold) => {
                    d.held = true;
                    return Ok(false);
                }
                Ok(Step::WaitClient) => return Ok(false),
                Ok(Step::Lookup(names)) if !looked_up => {
                    self.lookup_functions(d, &names).await?;
                    looked_up = true;
                }
                Ok(Step::Lookup(_)) => {
                    break Step::Route {
                        dest: Dest::Primary,
                        reason: "function",
                    }
                }
                Ok(step) => break step,
                Err(e) => return Err(d.fail(e)),
            }
        };
        let step = Some(step).filter(|_| self.split.is_some());

        let mut scratch = SessionState::Clean;
        let state = if self.split.is_some() {
            &mut scratch
        } else {
            &mut d.state
        };
        let (forward, terminate) = scan_client(
            &d.client_buf[d.to_server..],
            max,
            phase,
            state,
            &mut d.open_batch,
        )
        .map_err(|e| d.fail(e.into()))?;
        if forward == 0 {
            return Ok(terminate);
        }
        let tell = |error| Failure {
            error,
            can_tell: true,
        };
        let mut reason = "listener";
        let mut consistency = false;
        if idle_before {
            // A new transaction: held while paused.
            if let Err(ms) = self.upstream.shared.wait_unpaused().await {
                return Err(tell(SessionError::PauseTimeout { ms }));
            }
            let mut dest = match step {
                Some(Step::Route { dest, .. }) => dest,
                _ => self.upstream.dest,
            };
            // A read: may it go to a replica, given what the session wrote?
            let read = match step {
                Some(Step::Route { dest, .. }) => dest == Dest::Replica,
                _ => self.split.is_none(),
            };
            if read && self.read_dest(d).await? == Dest::Primary {
                dest = Dest::Primary;
                consistency = true;
            }
            // Nothing is in flight: a safe point to change servers.
            self.upstream
                .ensure_server(dest, d.state)
                .await
                .map_err(tell)?;
        }
        if let Some(step) = &step {
            reason = match *step {
                Step::Route { reason, .. } | Step::Stay { reason } => reason,
                Step::Hold | Step::Lookup(_) | Step::WaitClient => {
                    unreachable!("handled above")
                }
            };
            if ready_before {
                if let Some(fallback) = self.sync_server(d, forward).await? {
                    reason = fallback;
                }
            }
            if deferred {
                self.send_deferred_begin(d).await?;
            }
            self.record(d, forward, in_tx)?;
        }
        if consistency {
            reason = "consistency";
        }
        let requests = u64::from(phase.owed() - owed_before);
        let target = if self.on_primary() {
            d.traffic.to_primary += requests;
            Dest::Primary
        } else {
            d.traffic.to_replica += requests;
            Dest::Replica
        };
        self.metrics().statements(target.as_str(), reason, requests);
        self.note_consistency(d, forward, target, reason);
        if ready_before && d.started.is_none() {
            d.started = Some(Instant::now());
        }
        d.force_primary = false;
        // Arm the safety net for a one-request read batch sent to a replica
        // at an idle point; anything else forwarded while armed disarms it.
        d.retry = match step {
            Some(Step::Route {
                dest: Dest::Replica,
                ..
            }) if requests == 1 && self.upstream.dest == Dest::Replica => {
                d.retry_buf.clear();
                d.retry_buf
                    .extend_from_slice(&d.client_buf[d.to_server..d.to_server + forward]);
                Retry::Armed
            }
            _ => Retry::Off,
        };
        d.to_server += forward;
        self.try_send_to_server(d)?;
        Ok(terminate)
    }

    /// Where a read may go given the session's read-your-writes condition:
    /// a replica that has what the session must see, or the primary.
    async fn read_dest(&mut self, d: &mut Duplex) -> Result<Dest, Failure> {
        let shared = self.upstream.shared;
        let config = shared.config.load_full();
        let c = &config.consistency;
        let now = std::time::Instant::now();
        let window = std::time::Duration::from_millis(c.window_ms);
        let floor = match self.ryw.need(c.mode, window, now) {
            Need::Nothing => return Ok(Dest::Replica),
            Need::Primary => {
                shared.metrics.read_your_writes("primary");
                return Ok(Dest::Primary);
            }
            Need::Floor => {
                // The primary's insert position now covers every commit the
                // session made.
                match self
                    .ask_lsn(d, Dest::Primary, "SELECT pg_current_wal_insert_lsn()")
                    .await?
                {
                    Some(lsn) => {
                        self.ryw.raise(lsn);
                        self.ryw.dirty = false;
                        lsn.max(self.ryw.floor.unwrap_or(lsn))
                    }
                    None => {
                        shared.metrics.read_your_writes("primary");
                        return Ok(Dest::Primary);
                    }
                }
            }
            Need::Replay(floor) => floor,
        };
        // The session's replica: does it have the floor already?
        if let Err(error) = self.upstream.ensure_server(Dest::Replica, d.state).await {
            tracing::debug!(%error, "no replica for a read with a floor; using the primary");
            shared.metrics.read_your_writes("primary");
            return Ok(Dest::Primary);
        }
        let server = self.upstream.server.as_ref().expect("attached");
        if server.read_only {
            // A read-only session's fallback on the primary sees everything.
            return Ok(Dest::Replica);
        }
        let key = server.key;
        let known = shared
            .topology
            .snapshot()
            .backends
            .iter()
            .find(|b| b.name == server.name && b.address == server.address)
            .and_then(|b| b.replay_lsn);
        let seen = self.ryw.seen.filter(|(k, _)| *k == key).map(|(_, l)| l);
        if known.max(seen).is_some_and(|l| l >= floor) {
            shared.metrics.read_your_writes("replica");
            return Ok(Dest::Replica);
        }
        // Ask it (and, with max_wait_ms, keep asking) where it is.
        let deadline = now + std::time::Duration::from_millis(c.max_wait_ms);
        let mut waited = false;
        loop {
            if let Some(lsn) = self
                .ask_lsn(d, Dest::Replica, "SELECT pg_last_wal_replay_lsn()")
                .await?
            {
                self.ryw.seen = Some((key, lsn));
                if lsn >= floor {
                    if waited {
                        shared.metrics.read_your_writes("waited");
                        shared
                            .metrics
                            .ryw_wait_seconds
                            .observe(now.elapsed().as_secs_f64());
                    } else {
                        shared.metrics.read_your_writes("replica");
                    }
                    return Ok(Dest::Replica);
                }
            }
            if std::time::Instant::now() >= deadline {
                shared.metrics.read_your_writes("primary");
                return Ok(Dest::Primary);
            }
            waited = true;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Runs a one-value LSN query on the server for `dest` (switching to it);
    /// None if the server answered with an error or no LSN.
    async fn ask_lsn(
        &mut self,
        d: &mut Duplex,
        dest: Dest,
        sql: &str,
    ) -> Result<Option<Lsn>, Failure> {
        self.upstream
            .ensure_server(dest, d.state)
            .await
            .map_err(|error| Failure {
                error,
                can_tell: true,
            })?;
        let server = self.upstream.server.as_mut().expect("attached");
        let mut out = BytesMut::new();
        encode::query(&mut out, sql);
        let leftover = d.server_buf.split_off(d.to_client);
        let mut rows = Vec::new();
        let result = tokio::time::timeout(
            SYNC_TIMEOUT,
            run_exchange(server, &out, 1, leftover, self.max_message, Some(&mut rows)),
        )
        .await;
        match result {
            Ok(Ok(None)) => Ok(rows
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())),
            Ok(Ok(Some(_))) => Ok(None),
            Ok(Err(_)) | Err(_) => Err(Failure {
                error: lost(server),
                can_tell: true,
            }),
        }
    }

    /// A write committed and the client wants its LSN: learned from the same
    /// server connection before anything else runs there, and sent as
    /// ParameterStatus `pgsplit.commit_lsn` just ahead of ReadyForQuery.
    pub(super) async fn report_commit(&mut self, d: &mut Duplex) -> Result<(), Failure> {
        // The answer ends with the ReadyForQuery just scanned.
        let end = d.to_client;
        let rfq = end
            .checked_sub(6)
            .filter(|&at| d.server_buf[at] == tag::READY_FOR_QUERY && d.server_buf[at + 4] == 5);
        let Some(at) = rfq else {
            return Ok(());
        };
        let status = d.server_buf[at + 5];
        let Some(lsn) = self
            .ask_lsn_here(d, "SELECT pg_current_wal_insert_lsn()")
            .await?
        else {
            return Ok(());
        };
        self.ryw.raise(lsn);
        self.ryw.dirty = false;
        let tail = d.server_buf.split_off(at);
        let rest = tail[6..].to_vec();
        encode::parameter_status(&mut d.server_buf, "pgsplit.commit_lsn", &lsn.to_string());
        encode::ready_for_query(&mut d.server_buf, status);
        d.to_client = d.server_buf.len();
        d.server_buf.extend_from_slice(&rest);
        Ok(())
    }

    /// `ask_lsn` on the attached server, whatever it serves.
    async fn ask_lsn_here(&mut self, d: &mut Duplex, sql: &str) -> Result<Option<Lsn>, Failure> {
        let dest = self.upstream.dest;
        self.ask_lsn(d, dest, sql).await
    }

    /// After a batch went out: a write on the primary makes the session's
    /// next reads wait for it; `SET pgsplit.min_lsn` raises the floor.
    fn note_consistency(&mut self, d: &Duplex, forward: usize, target: Dest, reason: &str) {
        if self.split.is_some()
            && target == Dest::Primary
            && !matches!(reason, "read" | "hint" | "no_replica" | "consistency")
        {
            if let Some(server) = &self.upstream.server {
                self.ryw.on_primary(&server.name);
            }
            self.ryw.wrote(std::time::Instant::now());
        }
        let batch = &d.client_buf[d.to_server..d.to_server + forward];
        let classifier = self.upstream.shared.classifier.load();
        let mut pos = 0;
        while let Ok(Some(frame)) = split_frame(&batch[pos..], self.max_message) {
            pos += frame.wire_len();
            if frame.tag != tag::QUERY || !memchr_min_lsn(frame.body) {
                continue;
            }
            let Some(sql) = crate::protocol::cstr(frame.body)
                .and_then(|(sql, _)| std::str::from_utf8(sql).ok())
            else {
                continue;
            };
            for effect in &classifier.classify(sql).effects {
                match effect {
                    Effect::MinLsn(Some(lsn)) => {
                        if let Ok(lsn) = lsn.parse() {
                            self.ryw.raise(lsn);
                        }
                    }
                    Effect::MinLsn(None) => {
                        self.ryw.floor = None;
                        self.ryw.dirty = true;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Read-write port, at an idle point: a batch that is only a plain BEGIN
    /// is answered here and kept; the next statement decides where the
    /// transaction runs (see `step`). Returns true when it did so.
    fn defer_begin(&mut self, d: &mut Duplex) -> Result<bool, Failure> {
        if !d.deferred_begin.is_empty() || d.force_primary {
            return Ok(false);
        }
        let buf = &d.client_buf[d.to_server..];
        let Some(frame) = split_frame(buf, self.max_message).map_err(|e| d.fail(e.into()))? else {
            return Ok(false);
        };
        let len = frame.wire_len();
        if frame.tag != tag::QUERY || len != buf.len() {
            return Ok(false);
        }
        let Some(sql) =
            crate::protocol::cstr(frame.body).and_then(|(sql, _)| std::str::from_utf8(sql).ok())
        else {
            return Ok(false);
        };
        let verdict = self.upstream.shared.classifier.load().classify(sql);
        let plain = verdict.statements == 1
            && matches!(
                &verdict.effects[..],
                [Effect::Begin {
                    read_only: None,
                    serializable: false
                }]
            )
            && verdict.hint.is_none();
        if !plain {
            return Ok(false);
        }
        d.deferred_begin.extend_from_slice(&buf[..len]);
        d.client_buf.advance(len);
        let tail = d.server_buf.split_off(d.to_client);
        encode::command_complete(&mut d.server_buf, "BEGIN");
        encode::ready_for_query(&mut d.server_buf, b'T');
        d.to_client = d.server_buf.len();
        d.server_buf.unsplit(tail);
        self.try_send_to_client(d)?;
        Ok(true)
    }

    /// Sends the deferred BEGIN to the attached server, its reply swallowed
    /// (the client had its answer).
    async fn send_deferred_begin(&mut self, d: &mut Duplex) -> Result<(), Failure> {
        let begin = d.deferred_begin.split();
        let server = self.upstream.server.as_mut().expect("attached");
        let leftover = d.server_buf.split_off(d.to_client);
        let result = tokio::time::timeout(
            SYNC_TIMEOUT,
            run_exchange(server, &begin, 1, leftover, self.max_message, None),
        )
        .await;
        d.deferred_begin = begin;
        d.deferred_begin.clear();
        match result {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(error))) => {
                tracing::warn!(%error, "the deferred BEGIN failed");
                Ok(())
            }
            Ok(Err(_)) | Err(_) => Err(Failure {
                error: lost(server),
                can_tell: true,
            }),
        }
    }

    /// Read-only port, at an idle point: answers requests that must not run
    /// on a replica with 25006 instead of forwarding them (a Query; or a
    /// Parse, and then everything up to its Sync).
    fn refuse_forbidden(&mut self, d: &mut Duplex) -> Result<(), Failure> {
        let max = self.max_message;
        let shared = self.upstream.shared;
        let mut answer = BytesMut::new();
        while let Some(frame) =
            split_frame(&d.client_buf[d.to_server..], max).map_err(|e| d.fail(e.into()))?
        {
            let len = frame.wire_len();
            if d.skip_to_sync {
                if frame.tag == tag::SYNC {
                    d.skip_to_sync = false;
                    encode::ready_for_query(&mut answer, b'I');
                }
                d.client_buf.advance(len);
                continue;
            }
            let sql = match frame.tag {
                tag::QUERY => frame.body,
                tag::PARSE => crate::protocol::cstr(frame.body).map_or(&b""[..], |(_, r)| r),
                _ => break,
            };
            let sql = crate::protocol::cstr(sql).map_or(&b""[..], |(s, _)| s);
            let Ok(sql) = std::str::from_utf8(sql) else {
                break;
            };
            if !shared.classifier.load().classify(sql).replica_forbidden {
                break;
            }
            tracing::info!(
                listener = self.upstream.listener.as_str(),
                "refused a statement that must not run on a replica"
            );
            encode::error_response(
                &mut answer,
                Severity::Error,
                crate::error::sqlstate::READ_ONLY_TRANSACTION,
                "pgsplit: this statement changes server state (promotion, WAL replay, advisory locks, large objects, dblink, ALTER SYSTEM or CHECKPOINT) and must not run on a replica; use the read-write port",
            );
            self.metrics()
                .client_error(crate::error::sqlstate::READ_ONLY_TRANSACTION);
            if frame.tag == tag::QUERY {
                encode::ready_for_query(&mut answer, b'I');
            } else {
                d.skip_to_sync = true;
            }
            d.client_buf.advance(len);
        }
        if !answer.is_empty() {
            // Ahead of anything the idle server sent that is not whole yet.
            let tail = d.server_buf.split_off(d.to_client);
            d.server_buf.extend_from_slice(&answer);
            d.to_client = d.server_buf.len();
            d.server_buf.unsplit(tail);
            self.try_send_to_client(d)?;
        }
        Ok(())
    }

    /// Replies held for the safety net: release them, keep holding, or drop
    /// them and send the request to the primary.
    pub(super) async fn held_replies(
        &mut self,
        d: &mut Duplex,
        phase: &mut Phase,
    ) -> Result<HeldStep, Failure> {
        let held = &d.server_buf[d.to_client..];
        match retry::inspect(d.retry, held, self.max_message) {
            Held::Wait => Ok(HeldStep::Wait),
            Held::Refused => {
                d.retry = Retry::Refused;
                Ok(HeldStep::Wait)
            }
            Held::Release => {
                d.retry = Retry::Off;
                Ok(HeldStep::Go)
            }
            Held::Rerun { len } => {
                d.retry = Retry::Off;
                // Drop the refused answer, ReadyForQuery included: the
                // session is idle again, as before the request.
                let rest = d.server_buf.split_off(d.to_client + len);
                d.server_buf.truncate(d.to_client);
                d.server_buf.unsplit(rest);
                *phase = Phase::Ready(TxStatus::Idle);
                d.started = None;
                let server = self
                    .upstream
                    .server
                    .as_ref()
                    .map_or("", |s| s.name.as_str());
                tracing::info!(backend = %server, "a read was refused by the replica (25006); running it on the primary");
                // The request again, ahead of anything the client sent since.
                let mut again = BytesMut::with_capacity(d.retry_buf.len() + d.client_buf.len());
                again.extend_from_slice(&d.retry_buf);
                again.extend_from_slice(&d.client_buf);
                d.client_buf = again;
                d.force_primary = true;
                if self.take_client_bytes(d, phase).await? {
                    return Ok(HeldStep::Terminated);
                }
                Ok(HeldStep::Wait)
            }
        }
    }

    /// Decides what a read-write batch does; `Stay` on the read-only port.
    fn step(&self, d: &Duplex, phase: Phase) -> Result<Step, SessionError> {
        let step = self.step_inner(d, phase);
        if tracing::enabled!(tracing::Level::TRACE) {
            let tags: Vec<char> = {
                let buf = &d.client_buf[d.to_server..];
                let mut pos = 0;
                let mut tags = Vec::new();
                while let Ok(Some(f)) = split_frame(&buf[pos..], self.max_message) {
                    tags.push(f.tag as char);
                    pos += f.wire_len();
                }
                tags
            };
            let what = match &step {
                Ok(Step::Route { dest, reason }) => format!("route {dest:?} ({reason})"),
                Ok(Step::Stay { reason }) => format!("stay ({reason})"),
                Ok(Step::Hold) => "hold".into(),
                Ok(Step::Lookup(n)) => format!("lookup {n:?}"),
                Ok(Step::WaitClient) => "wait for the client".into(),
                Err(e) => format!("error {e}"),
            };
            tracing::trace!(?phase, open_batch = d.open_batch, ?tags, "batch: {what}");
        }
        step
    }

    fn step_inner(&self, d: &Duplex, phase: Phase) -> Result<Step, SessionError> {
        let Some(split) = &self.split else {
            return Ok(Step::Stay { reason: "listener" });
        };
        if d.open_batch {
            return Ok(Step::Stay { reason: "batch" });
        }
        let shared = self.upstream.shared;
        let buf = &d.client_buf[d.to_server..];
        let max = self.max_message;
        let classifier = shared.classifier.load();
        let metrics = &shared.metrics;
        let functions = Functions::new(&shared.functions, self.upstream.database());
        match phase {
            Phase::Ready(TxStatus::Idle) if d.force_primary => Ok(Step::Route {
                dest: Dest::Primary,
                reason: "retried",
            }),
            Phase::Ready(TxStatus::Idle) if !d.deferred_begin.is_empty() => {
                // A transaction that starts with SET TRANSACTION READ ONLY
                // (not SERIALIZABLE) may run on a replica; any other on the
                // primary.
                let read_only = split_frame(buf, max).ok().flatten().is_some_and(|f| {
                    f.tag == tag::QUERY
                        && crate::protocol::cstr(f.body)
                            .and_then(|(sql, _)| std::str::from_utf8(sql).ok())
                            .is_some_and(|sql| {
                                matches!(
                                    classifier.classify(sql).effects.first(),
                                    Some(Effect::SetTransaction {
                                        read_only: Some(true),
                                        serializable: false
                                    })
                                )
                            })
                });
                let replicas = !shared.topology.snapshot().read_schedule.is_empty();
                let dest = if read_only && replicas && split.pinned.is_none() {
                    Dest::Replica
                } else {
                    Dest::Primary
                };
                Ok(Step::Route {
                    dest,
                    reason: "transaction",
                })
            }
            Phase::Ready(TxStatus::Idle) => {
                // An extended-protocol batch is planned whole: its statements
                // share an implicit transaction and cannot be split across
                // servers. The client waits on nothing before its Sync or
                // Flush, so waiting for one costs no round trip.
                match batch_end(buf, max) {
                    BatchEnd::Open if buf.len() < HIGH_WATER => return Ok(Step::WaitClient),
                    BatchEnd::Open => {
                        return Ok(Step::Route {
                            dest: Dest::Primary,
                            reason: "large_batch",
                        })
                    }
                    BatchEnd::Closed => {}
                }
                let replicas = !shared.topology.snapshot().read_schedule.is_empty();
                let plan = split.plan(buf, max, &classifier, replicas, &functions, metrics)?;
                if !plan.unknown.is_empty() {
                    return Ok(Step::Lookup(plan.unknown));
                }
                Ok(Step::Route {
                    dest: plan.dest,
                    reason: plan.reason,
                })
            }
            Phase::Ready(_) => Ok(Step::Stay {
                reason: "transaction",
            }),
            Phase::Busy { last, .. } => {
                let mut reason = "transaction";
                if last == TxStatus::Idle {
                    reason = "pipelined";
                    if self.upstream.dest == Dest::Replica {
                        let plan = split.plan(buf, max, &classifier, true, &functions, metrics)?;
                        if plan.dest != Dest::Replica {
                            return Ok(Step::Hold);
                        }
                        reason = plan.reason;
                    }
                }
                let in_sync = self
                    .upstream
                    .server
                    .as_ref()
                    .is_some_and(|s| split.in_sync(&s.synced, buf, max, &classifier, metrics));
                Ok(if in_sync {
                    Step::Stay { reason }
                } else {
                    Step::Hold
                })
            }
        }
    }

    /// Brings the attached server up to date for the next `forward` bytes.
    /// A replica that fails to take the session's state is left for the
    /// primary; returns the reason label then.
    async fn sync_server(
        &mut self,
        d: &mut Duplex,
        forward: usize,
    ) -> Result<Option<&'static str>, Failure> {
        let max = self.max_message;
        let shared = self.upstream.shared;
        let classifier = shared.classifier.load();
        let mut fallback = None;
        loop {
            let split = self.split.as_ref().expect("read-write port");
            let server = self.upstream.server.as_mut().expect("attached");
            let full = d.last_server != Some(server.key);
            let batch = &d.client_buf[d.to_server..d.to_server + forward];
            let mut out = BytesMut::new();
            let replies = split
                .sync_messages(
                    server,
                    batch,
                    max,
                    full,
                    &classifier,
                    &shared.metrics,
                    &mut out,
                )
                .map_err(|e| d.fail(e.into()))?;
            d.last_server = Some(server.key);
            if replies == 0 {
                return Ok(fallback);
            }
            // Anything the server said while idle and that is not whole yet
            // is read on from here (and not passed on).
            let leftover = d.server_buf.split_off(d.to_client);
            let result = tokio::time::timeout(
                SYNC_TIMEOUT,
                run_exchange(server, &out, replies, leftover, max, None),
            )
            .await;
            let error = match result {
                Ok(Ok(None)) => return Ok(fallback),
                Ok(Ok(Some(error))) => error,
                Ok(Err(_)) | Err(_) => {
                    return Err(Failure {
                        error: lost(server),
                        can_tell: true,
                    })
                }
            };
            if self.upstream.dest == Dest::Primary {
                // The client would have had the same error from a single
                // server; its own statement will say so.
                tracing::debug!(backend = %server.name, %error, "replaying session state failed on the primary");
                return Ok(fallback);
            }
            tracing::info!(backend = %server.name, %error, "replaying session state failed on a replica; using the primary");
            self.upstream
                .detach("it could not take the session's state")
                .await;
            self.upstream
                .ensure_server(Dest::Primary, d.state)
                .await
                .map_err(|error| Failure {
                    error,
                    can_tell: true,
                })?;
            fallback = Some("replay_failed");
        }
    }

    /// Asks the attached server (attaching one if need be) whether the
    /// functions `names` are read-only, and caches the answers for the
    /// session's database. Anything unanswered counts as a write.
    async fn lookup_functions(
        &mut self,
        d: &mut Duplex,
        names: &[Box<str>],
    ) -> Result<(), Failure> {
        let shared = self.upstream.shared;
        let database = self.upstream.database().to_owned();
        for name in names {
            shared.functions.put(&database, name, false);
        }
        let Some(sql) = FunctionCache::lookup_sql(names) else {
            return Ok(());
        };
        if self.upstream.server.is_none() {
            let dest = self.upstream.dest;
            self.upstream
                .ensure_server(dest, d.state)
                .await
                .map_err(|error| Failure {
                    error,
                    can_tell: true,
                })?;
        }
        let server = self.upstream.server.as_mut().expect("attached");
        let mut out = BytesMut::new();
        crate::protocol::encode::query(&mut out, &sql);
        let leftover = d.server_buf.split_off(d.to_client);
        let mut rows = Vec::new();
        let result = tokio::time::timeout(
            SYNC_TIMEOUT,
            run_exchange(server, &out, 1, leftover, self.max_message, Some(&mut rows)),
        )
        .await;
        match result {
            Ok(Ok(None)) => {
                for row in rows {
                    if let [Some(name), Some(read)] = &row[..] {
                        shared.functions.put(&database, name, read == "t");
                    }
                }
                Ok(())
            }
            Ok(Ok(Some(error))) => {
                tracing::warn!(%error, "looking up functions in pg_proc failed; treating them as writes");
                Ok(())
            }
            Ok(Err(_)) | Err(_) => Err(Failure {
                error: lost(server),
                can_tell: true,
            }),
        }
    }

    /// Records the effects of the next `forward` bytes (read-write port).
    fn record(&mut self, d: &mut Duplex, forward: usize, in_tx: bool) -> Result<(), Failure> {
        let shared = self.upstream.shared;
        let classifier = shared.classifier.load();
        let split = self.split.as_mut().expect("read-write port");
        let server = self.upstream.server.as_mut().expect("attached");
        let batch = &d.client_buf[d.to_server..d.to_server + forward];
        let database = self
            .upstream
            .server_params
            .iter()
            .find(|(k, _)| k == "database")
            .map_or("", |(_, v)| v.as_str());
        let functions = Functions::new(&shared.functions, database);
        let pinned = split
            .record(
                batch,
                self.max_message,
                self.upstream.dest,
                server,
                &classifier,
                &functions,
                &shared.metrics,
                in_tx,
            )
            .map_err(|e| Failure {
                error: e.into(),
                can_tell: true,
            })?;
        if let Some(cause) = pinned {
            shared.metrics.pinned(cause.label());
            tracing::debug!(
                cause = cause.label(),
                "session pinned to the primary from now on"
            );
        }
        d.state = split.state();
        Ok(())
    }
}

/// Sends `out` and reads the server's replies up to the `replies`-th
/// ReadyForQuery, starting with the `leftover` bytes already read; DataRows
/// go to `rows` (as text) when given. Returns the first error the server
/// reported, if any. Err: the connection is unusable.
async fn run_exchange(
    server: &mut ServerConn,
    out: &[u8],
    replies: u32,
    mut pending: BytesMut,
    max: usize,
    mut rows: Option<&mut Vec<Vec<Option<String>>>>,
) -> Result<Option<String>, ()> {
    server.stream.write_all(out).await.map_err(drop)?;
    let mut seen = 0;
    let mut error = None;
    while seen < replies {
        match split_frame(&pending, max).map_err(drop)? {
            Some(frame) => {
                match frame.tag {
                    tag::READY_FOR_QUERY => seen += 1,
                    tag::DATA_ROW => {
                        if let Some(rows) = rows.as_deref_mut() {
                            rows.push(message::data_row_text(frame.body).map_err(drop)?);
                        }
                    }
                    tag::ERROR_RESPONSE if error.is_none() => {
                        error = Some(match message::ErrorFields::parse(frame.body) {
                            Ok(f) => format!("{} ({})", f.message, f.code),
                            Err(_) => "an unreadable error".to_owned(),
                        });
                    }
                    _ => {}
                }
                let len = frame.wire_len();
                pending.advance(len);
            }
            None => {
                pending.reserve(4096);
                if server.stream.read_buf(&mut pending).await.map_err(drop)? == 0 {
                    return Err(());
                }
            }
        }
    }
    Ok(error)
}
