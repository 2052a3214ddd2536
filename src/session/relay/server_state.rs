//! Server connections brought up to date for the session: replaying its
//! settings and prepared statements (see `session::split`), recording what a
//! batch changes, learning about functions from `pg_proc`, and sending a
//! deferred BEGIN.

use bytes::BytesMut;

use super::client::SYNC_TIMEOUT;
use super::{Duplex, Failure, Relay};
use crate::route::Dest;
use crate::session::split::{FunctionCache, Functions, Verdicts};
use crate::session::upstream::lost;

impl Relay<'_> {
    /// Brings the attached server up to date for the next `forward` bytes.
    /// A replica that fails to take the session's state is left for the
    /// primary; returns the reason label then.
    pub(super) async fn sync_server(
        &mut self,
        d: &mut Duplex,
        forward: usize,
    ) -> Result<Option<&'static str>, Failure> {
        let max = self.max_message;
        let shared = self.upstream.shared;
        let classifier = shared.classifier.load();
        let classifier = Verdicts::new(&classifier, &self.memo);
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
                crate::pool::exchange(server, &out, replies, leftover, max, None),
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
    pub(super) async fn lookup_functions(
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
        match self.query(d, None, &sql).await? {
            Ok(rows) => {
                for row in rows {
                    if let [Some(name), Some(read)] = &row[..] {
                        shared.functions.put(&database, name, read == "t");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "looking up functions in pg_proc failed; treating them as writes");
            }
        }
        Ok(())
    }

    /// Records the effects of the next `forward` bytes (read-write port).
    pub(super) fn record(
        &mut self,
        d: &mut Duplex,
        forward: usize,
        in_tx: bool,
    ) -> Result<(), Failure> {
        let shared = self.upstream.shared;
        let classifier = shared.classifier.load();
        let classifier = Verdicts::new(&classifier, &self.memo);
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

    /// Sends the deferred BEGIN to the attached server, its reply swallowed
    /// (the client had its answer).
    pub(super) async fn send_deferred_begin(&mut self, d: &mut Duplex) -> Result<(), Failure> {
        let begin = d.deferred_begin.split();
        let server = self.upstream.server.as_mut().expect("attached");
        let leftover = d.server_buf.split_off(d.to_client);
        let result = tokio::time::timeout(
            SYNC_TIMEOUT,
            crate::pool::exchange(server, &begin, 1, leftover, self.max_message, None),
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
}
