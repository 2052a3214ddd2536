//! Client messages on their way to a server. On the read-write port each
//! batch is routed here: planned at a batch boundary, sent to the server the
//! plan names (switching only at idle points), after bringing that server up
//! to date with the session's state. A batch that arrives while a replica is
//! busy and must go elsewhere waits in the client buffer until it is free.

use bytes::{Buf, BytesMut};
use tokio::time::Instant;

use super::retry::{self, Held, Retry};
use super::{scan_client, Duplex, Failure, Phase, Relay, TxStatus, HIGH_WATER};
use crate::classify::Effect;
use crate::protocol::encode::{self, Severity};
use crate::protocol::frame::split_frame;
use crate::protocol::tag;
use crate::route::Dest;
use crate::session::error::SessionError;
use crate::session::split::{Functions, Verdicts};
use crate::session::state::SessionState;

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
            // Not a message a client may send now: let the scan refuse it.
            t if !crate::protocol::is_frontend_tag(t) || t == tag::PASSWORD => {
                return BatchEnd::Closed
            }
            _ => BatchEnd::Open,
        };
    }
    end
}

/// How long the replies to a sync may take.
pub(super) const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
        let Some((sql, _)) = crate::protocol::cstr(frame.body) else {
            return Ok(false);
        };
        let shared = self.upstream.shared;
        let classifier = shared.classifier.load();
        let verdict = Verdicts::new(&classifier, &self.memo).get(sql, &shared.metrics);
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
            let classifier = shared.classifier.load();
            let verdict = Verdicts::new(&classifier, &self.memo).get(sql, &shared.metrics);
            if !verdict.replica_forbidden {
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
        let classifier = Verdicts::new(&classifier, &self.memo);
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
                        && crate::protocol::cstr(f.body).is_some_and(|(sql, _)| {
                            matches!(
                                classifier.get(sql, metrics).effects.first(),
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
}
