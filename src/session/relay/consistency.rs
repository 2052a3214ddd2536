//! Read-your-writes in the relay: where a read may go given what its
//! session wrote (see `session::ryw`), asking servers for LSNs, and the
//! `pgsplit.commit_lsn` report.

use bytes::BytesMut;

use super::client::SYNC_TIMEOUT;
use super::{Duplex, Failure, Relay};
use crate::classify::Effect;
use crate::protocol::encode;
use crate::protocol::frame::split_frame;
use crate::protocol::tag;
use crate::route::Dest;
use crate::session::ryw::Need;
use crate::session::split::Verdicts;
use crate::session::upstream::lost;
use crate::topology::lsn::Lsn;

impl Relay<'_> {
    /// Where a read may go given the session's read-your-writes condition:
    /// a replica that has what the session must see, or the primary.
    pub(super) async fn read_dest(&mut self, d: &mut Duplex) -> Result<Dest, Failure> {
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
        // A replica that has the floor already: the session's own, or, when
        // that one is behind and holds nothing of the session, the next ones
        // in the schedule.
        let replicas = shared.topology.snapshot().read_schedule.len().max(1);
        for attempt in 1..=replicas {
            if let Err(error) = self.upstream.ensure_server(Dest::Replica, d.state).await {
                tracing::debug!(%error, "no replica for a read with a floor; using the primary");
                shared.metrics.read_your_writes("primary");
                return Ok(Dest::Primary);
            }
            match self.replica_has(d, floor).await? {
                Some(true) => {
                    shared.metrics.read_your_writes("replica");
                    return Ok(Dest::Replica);
                }
                _ if attempt < replicas && self.can_give_back_for_another() => {
                    self.upstream.give_back();
                }
                _ => break,
            }
        }
        // With max_wait_ms, keep asking the one it has.
        let deadline = now + std::time::Duration::from_millis(c.max_wait_ms);
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            if self.replica_has(d, floor).await? == Some(true) {
                shared.metrics.read_your_writes("waited");
                shared
                    .metrics
                    .ryw_wait_seconds
                    .observe(now.elapsed().as_secs_f64());
                return Ok(Dest::Replica);
            }
        }
        shared.metrics.read_your_writes("primary");
        Ok(Dest::Primary)
    }

    /// Whether the attached replica has replayed up to `floor`: from the
    /// probes or the session's last look when they say so, else asked now.
    /// None when it could not say.
    async fn replica_has(&mut self, d: &mut Duplex, floor: Lsn) -> Result<Option<bool>, Failure> {
        let shared = self.upstream.shared;
        let server = self.upstream.server.as_ref().expect("attached");
        if server.read_only {
            // A read-only session's fallback on the primary sees everything.
            return Ok(Some(true));
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
            return Ok(Some(true));
        }
        let lsn = self
            .ask_lsn(d, Dest::Replica, "SELECT pg_last_wal_replay_lsn()")
            .await?;
        if let Some(lsn) = lsn {
            self.ryw.seen = Some((key, lsn));
        }
        Ok(lsn.map(|l| l >= floor))
    }

    /// Whether the attached replica connection may go back to the pool so
    /// that another replica can be tried: it holds nothing of the session.
    fn can_give_back_for_another(&self) -> bool {
        self.split
            .as_ref()
            .is_some_and(crate::session::split::Split::holds_no_server_state)
            && self
                .upstream
                .server
                .as_ref()
                .is_some_and(|s| s.synced.is_empty())
    }

    /// Runs a one-value LSN query on the server for `dest` (switching to it);
    /// None if the server answered with an error or no LSN.
    pub(super) async fn ask_lsn(
        &mut self,
        d: &mut Duplex,
        dest: Dest,
        sql: &str,
    ) -> Result<Option<Lsn>, Failure> {
        let rows = self.query(d, Some(dest), sql).await?;
        Ok(rows.ok().and_then(|rows| {
            rows.first()
                .and_then(|r| r.first())
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
        }))
    }

    /// Runs pgsplit's own simple query on the server for `dest` (switching
    /// to it), or on the attached one (attaching one if need be), with the
    /// replies kept from the client: its rows as text, or the server's error.
    pub(super) async fn query(
        &mut self,
        d: &mut Duplex,
        dest: Option<Dest>,
        sql: &str,
    ) -> Result<Result<Vec<Vec<Option<String>>>, String>, Failure> {
        let dest = dest.unwrap_or(self.upstream.dest);
        if self.upstream.server.is_none() || dest != self.upstream.dest {
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
        encode::query(&mut out, sql);
        let leftover = d.server_buf.split_off(d.to_client);
        let mut rows = Vec::new();
        let result = tokio::time::timeout(
            SYNC_TIMEOUT,
            crate::pool::exchange(server, &out, 1, leftover, self.max_message, Some(&mut rows)),
        )
        .await;
        match result {
            Ok(Ok(None)) => Ok(Ok(rows)),
            Ok(Ok(Some(error))) => Ok(Err(error)),
            Ok(Err(_)) | Err(_) => Err(Failure {
                error: lost(server),
                can_tell: true,
            }),
        }
    }

    /// A write committed: its LSN is learned from the same server connection
    /// before anything else runs there (the floor for the session's next
    /// reads, as tight as it gets), and, for a client that asked, sent as
    /// ParameterStatus `pgsplit.commit_lsn` just ahead of ReadyForQuery.
    pub(super) async fn learn_commit(&mut self, d: &mut Duplex) -> Result<(), Failure> {
        let Some(lsn) = self
            .ask_lsn_here(d, "SELECT pg_current_wal_insert_lsn()")
            .await?
        else {
            return Ok(());
        };
        self.ryw.raise(lsn);
        self.ryw.dirty = false;
        if !self.ryw.report {
            return Ok(());
        }
        // The answer ends with the ReadyForQuery just scanned.
        let rfq = d
            .to_client
            .checked_sub(6)
            .filter(|&at| d.server_buf[at] == tag::READY_FOR_QUERY && d.server_buf[at + 4] == 5);
        let Some(at) = rfq else {
            return Ok(());
        };
        let status = d.server_buf[at + 5];
        let tail = d.server_buf.split_off(at);
        let rest = tail[6..].to_vec();
        encode::parameter_status(&mut d.server_buf, "pgsplit.commit_lsn", &lsn.to_string());
        encode::ready_for_query(&mut d.server_buf, status);
        d.to_client = d.server_buf.len();
        d.server_buf.extend_from_slice(&rest);
        Ok(())
    }

    /// `ask_lsn` on the attached server, whatever it serves.
    pub(super) async fn ask_lsn_here(
        &mut self,
        d: &mut Duplex,
        sql: &str,
    ) -> Result<Option<Lsn>, Failure> {
        let dest = self.upstream.dest;
        self.ask_lsn(d, dest, sql).await
    }

    /// After a batch went out: a write on the primary makes the session's
    /// next reads wait for it; `SET pgsplit.min_lsn` raises the floor.
    pub(super) fn note_consistency(
        &mut self,
        d: &Duplex,
        forward: usize,
        target: Dest,
        reason: &str,
    ) {
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
            let Some((sql, _)) = crate::protocol::cstr(frame.body) else {
                continue;
            };
            let verdict =
                Verdicts::new(&classifier, &self.memo).get(sql, &self.upstream.shared.metrics);
            for effect in &verdict.effects {
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
}

/// Whether a Query's text mentions `min_lsn` (a cheap filter before
/// classifying it for a causal token).
fn memchr_min_lsn(body: &[u8]) -> bool {
    body.windows(7).any(|w| w.eq_ignore_ascii_case(b"min_lsn"))
}
