//! Client messages on their way to a server. On the read-write port each
//! batch is routed here: planned at a batch boundary, sent to the server the
//! plan names (switching only at idle points), after bringing that server up
//! to date with the session's state. A batch that arrives while a replica is
//! busy and must go elsewhere waits in the client buffer until it is free.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::retry::{self, Held, Retry};
use super::{scan_client, Duplex, Failure, Phase, Relay, TxStatus};
use crate::pool::ServerConn;
use crate::protocol::encode::{self, Severity};
use crate::protocol::frame::split_frame;
use crate::protocol::{message, tag};
use crate::route::Dest;
use crate::session::error::SessionError;
use crate::session::split::{FunctionCache, Functions};
use crate::session::state::SessionState;
use crate::session::upstream::lost;

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
        let idle_before = phase.is_idle();
        let ready_before = matches!(phase, Phase::Ready(_));
        let owed_before = phase.owed();
        let in_tx = match *phase {
            Phase::Ready(status) | Phase::Busy { last: status, .. } => status != TxStatus::Idle,
        };
        let mut looked_up = false;
        let step = loop {
            match self.step(d, *phase) {
                Ok(Step::Hold) => {
                    d.held = true;
                    return Ok(false);
                }
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
        if idle_before {
            // A new transaction: held while paused.
            if let Err(ms) = self.upstream.shared.wait_unpaused().await {
                return Err(tell(SessionError::PauseTimeout { ms }));
            }
            let dest = match step {
                Some(Step::Route { dest, .. }) => dest,
                _ => self.upstream.dest,
            };
            // Nothing is in flight: a safe point to change servers.
            self.upstream
                .ensure_server(dest, d.state)
                .await
                .map_err(tell)?;
        }
        if let Some(step) = &step {
            reason = match *step {
                Step::Route { reason, .. } | Step::Stay { reason } => reason,
                Step::Hold | Step::Lookup(_) => unreachable!("handled above"),
            };
            if ready_before {
                if let Some(fallback) = self.sync_server(d, forward).await? {
                    reason = fallback;
                }
            }
            self.record(d, forward, in_tx)?;
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

    /// Read-only port, at an idle point: answers requests that must not run
    /// on a replica with 25006 instead of forwarding them (a Query; or a
    /// Parse, and then everything up to its Sync).
    fn refuse_forbidden(&mut self, d: &mut Duplex) -> Result<(), Failure> {
        let max = self.max_message;
        let shared = self.upstream.shared;
        let mut answer = BytesMut::new();
        loop {
            let Some(frame) =
                split_frame(&d.client_buf[d.to_server..], max).map_err(|e| d.fail(e.into()))?
            else {
                break;
            };
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
            Phase::Ready(TxStatus::Idle) => {
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
