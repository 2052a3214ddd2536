//! Client batches on their way in: framed once, routed by the router (with
//! the catalog and the position service as it sees them), and sent where it
//! said: the connection made ready, the batch forwarded, its request
//! recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use super::{CopyIn, Failure, Intake, Net, Relay, Request, Unsynced, HIGH_WATER};
use crate::router::{self, Decision, Flow, Listener, On, Route, To};
use crate::session::batch::{Batch, End, Kind};
use crate::session::error::SessionError;
use crate::session::forward::{forward, Ends};
use crate::session::state::TxStatus;

impl Relay<'_> {
    /// Frames and dispatches the client's whole batches. `retry`: the
    /// first is one the safety net put back (it goes to the primary).
    /// Returns true when the client sent Terminate.
    pub(super) async fn on_client_bytes(&mut self, retry: bool) -> Result<bool, Failure> {
        let mut retry = retry;
        let mut waited = false;
        let mut looked_up = false;
        loop {
            match self.intake {
                Intake::Held => return Ok(false),
                Intake::Skipping => {
                    if !self.skip_refused()? || self.intake == Intake::Skipping {
                        return Ok(false);
                    }
                    continue;
                }
                Intake::Open => {}
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
                self.intake = Intake::Held;
                return Ok(false);
            }
            let decision = self.decide(&batch, waited, looked_up, retry);
            let result = match decision {
                Decision::Hold => {
                    self.intake = Intake::Held;
                    Ok(())
                }
                Decision::Lookup(_) if !self.requests.is_empty() || !self.replies.is_empty() => {
                    // pgsplit's own query waits for the connection to be
                    // quiet (a pipeline inside a transaction).
                    self.intake = Intake::Held;
                    Ok(())
                }
                Decision::Lookup(lookups) => {
                    looked_up = true;
                    // Rare and large: boxed (see `Pool::checkout`).
                    let done = Box::pin(self.lookup(&lookups)).await;
                    self.batch = batch;
                    done?;
                    continue;
                }
                Decision::WaitPositions => {
                    waited = true;
                    // Rare (max_wait_ms > 0) and large: boxed, so an idle
                    // session's state does not carry it.
                    Box::pin(self.wait_positions()).await;
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
            if self.intake == Intake::Held {
                return Ok(false);
            }
            retry = false;
            waited = false;
            looked_up = false;
        }
    }

    /// The router's view of where the conversation stands.
    pub(super) fn flow(&self) -> Flow {
        if self.deferred_begin.is_some() {
            return Flow::DeferredBegin;
        }
        let Some(on) = self.active.as_ref().map(|l| l.on) else {
            return Flow::Idle;
        };
        let copying = self.copy != CopyIn::Off;
        if self.open == Unsynced::Movable && !copying && self.tx == TxStatus::Idle {
            Flow::Described { on }
        } else if self.open != Unsynced::Nothing || copying {
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

    pub(super) fn decide(
        &self,
        batch: &Batch,
        waited: bool,
        looked_up: bool,
        retry: bool,
    ) -> Decision {
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
            known_parse: batch
                .lone_named_parse()
                .is_some_and(|parse| match &parse.kind {
                    Kind::Parse { body, .. } => self
                        .shared
                        .statements
                        .proven(parse.slice(&self.client_in, body)),
                    _ => false,
                }),
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
    pub(super) fn settle(&mut self) {
        crate::protocol::encode::sync(&mut self.to_server);
        self.replies.push(crate::session::replies::Item::Own(
            crate::session::replies::Await::Ready,
        ));
        self.open = Unsynced::Nothing;
        self.intake = Intake::Held;
        self.try_send_to_server();
    }

    /// Sends a batch where the router said.
    pub(super) async fn send(&mut self, batch: &Batch, route: Route) -> Result<(), Failure> {
        let at_idle = self.idle_point();
        if at_idle && self.shared.is_paused() {
            if let Err(ms) = Box::pin(self.shared.wait_unpaused()).await {
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
        let ends_copy = |m: &crate::session::batch::Msg| {
            matches!(
                m.tag,
                crate::protocol::tag::COPY_DONE | crate::protocol::tag::COPY_FAIL
            )
        };
        if let CopyIn::Extended { done } = &mut self.copy {
            if batch.end == End::Copy && batch.msgs.iter().any(ends_copy) {
                *done = true;
            }
        }
        if let CopyIn::Extended { done } = self.copy {
            if batch.end == End::Sync && batch.msgs.len() == 1 {
                // Ignored by the server in COPY mode, or (after the copy
                // ended) answered with the COPY batch's own ReadyForQuery.
                self.to_server
                    .extend_from_slice(&self.client_in[..batch.len]);
                self.copy = if done {
                    CopyIn::Ending
                } else {
                    CopyIn::Extended { done }
                };
                self.client_in.advance(batch.len);
                self.try_send_to_server();
                return Ok(());
            }
        }
        let mut route = route;
        // Replaying settings is boxed (only a session whose settings differ
        // from the connection's pays for it).
        if at_idle && !self.settings_synced() && !Box::pin(self.sync_settings()).await? {
            // A replica could not take the session's settings: the primary.
            self.connect_for(To::Primary, true).await?;
            Box::pin(self.sync_settings()).await?;
            route.reason = router::Reason::Statement(crate::classify::Why::Session);
        }
        let at_boundary = self.open == Unsynced::Nothing;
        if let Some(begin) = self.deferred_begin.take() {
            self.to_server.extend_from_slice(&begin);
            self.replies.push(crate::session::replies::Item::Own(
                crate::session::replies::Await::Ready,
            ));
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
            let replay = self.replay.get_or_insert_with(|| super::Replay {
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
        if let Some(active) = &self.active {
            active.served.inc_by(n);
        }
        self.record
            .set_counts(self.traffic.to_primary, self.traffic.to_replica);
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
        self.publish();
        Ok(())
    }

    /// Waits for fresher replica positions, up to `max_wait_ms`.
    pub(super) async fn wait_positions(&mut self) {
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
