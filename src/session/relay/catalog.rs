//! pgsplit's own round trips on a session's connection, at idle points:
//! bringing the connection to the session's settings, and asking the
//! catalog about names the classifier could not settle.

use std::time::Duration;

use bytes::BytesMut;

use super::{Failure, Relay};
use crate::classify::catalog::Catalog;
use crate::protocol::encode;
use crate::router::{Lookup, On, To};
use crate::session::error::SessionError;
use crate::session::server::Leaving;

/// How long pgsplit's own queries may take.
const OWN_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

impl Relay<'_> {
    /// Whether the connection already has the session's settings (or
    /// there is none).
    pub(super) fn settings_synced(&self) -> bool {
        self.active
            .as_ref()
            .is_none_or(|leased| leased.conn.settings == self.session.settings.fingerprint())
    }

    /// Brings the active connection to the session's settings (one round
    /// trip, only when its fingerprint differs). Returns false when a
    /// replica could not take them (the caller goes to the primary); on the
    /// primary a failure is logged and the request goes on (the client
    /// would have had the same error from a server of its own).
    pub(super) async fn sync_settings(&mut self) -> Result<bool, Failure> {
        let fingerprint = self.session.settings.fingerprint();
        let Some(leased) = self.active.as_mut() else {
            return Ok(true);
        };
        if leased.conn.settings == fingerprint {
            return Ok(true);
        }
        let sql = self.session.settings.sync_sql(leased.conn.role_changed);
        let mut out = BytesMut::new();
        encode::query(&mut out, &sql);
        self.shared
            .metrics
            .internal_query(&leased.conn.name, "sync");
        let result = tokio::time::timeout(
            OWN_QUERY_TIMEOUT,
            crate::pool::exchange(&mut leased.conn, &out, 1, BytesMut::new(), self.max, None),
        )
        .await;
        match result {
            Ok(Ok(None)) => {
                leased.conn.settings = fingerprint;
                leased.conn.role_changed = self.session.settings.sets_role();
                Ok(true)
            }
            Ok(Ok(Some(error))) => {
                let backend = leased.conn.name.to_string();
                if leased.on == On::Primary {
                    tracing::debug!(%backend, %error, "replaying session settings failed on the primary");
                    Ok(true)
                } else {
                    tracing::info!(%backend, %error, "replaying session settings failed on a replica; using the primary");
                    let leased = self.active.take().expect("checked");
                    self.release(leased, Leaving::Reset { discard: false });
                    Ok(false)
                }
            }
            Ok(Err(())) | Err(_) => {
                let error = SessionError::ServerLost {
                    backend: leased.conn.name.to_string(),
                    address: leased.conn.addr.to_string(),
                };
                let leased = self.active.take().expect("checked");
                self.release(leased, Leaving::Busy);
                Err(Failure {
                    error,
                    can_tell: true,
                })
            }
        }
    }

    /// Asks the catalog what the router needs settled, on a connection of
    /// the session's database (the active one, or one taken for it), and
    /// caches the answers. Unanswered names stay writes for a while.
    pub(super) async fn lookup(&mut self, lookups: &[Lookup]) -> Result<(), Failure> {
        let database = self.login.database().to_owned();
        let mut functions: Vec<Box<str>> = Vec::new();
        let mut relations: Vec<Box<str>> = Vec::new();
        let mut oids: Vec<u32> = Vec::new();
        for l in lookups {
            match l {
                Lookup::Function(name) => functions.push(name.clone()),
                Lookup::Relation(name) => relations.push(name.clone()),
                Lookup::FunctionOid(oid) => oids.push(*oid),
            }
        }
        if self.active.is_none() {
            let to = match self.listener {
                crate::router::Listener::ReadWrite => To::Primary,
                crate::router::Listener::ReadOnly => To::Current,
            };
            self.connect_for(to, true).await?;
        }
        let classifier = self.shared.classifier.load_full();
        if let Some(sql) = Catalog::functions_sql(&functions) {
            match self.own_query(&sql).await? {
                Ok(rows) => self
                    .shared
                    .catalog
                    .put_functions(&database, &functions, &rows),
                Err(error) => {
                    tracing::warn!(%error, "looking up functions in pg_proc failed; treating them as writes");
                    self.shared
                        .catalog
                        .put_unknown_functions(&database, &functions);
                }
            }
        }
        if let Some(sql) = Catalog::relations_sql(&relations) {
            match self.own_query(&sql).await? {
                Ok(rows) => self
                    .shared
                    .catalog
                    .put_relations(&database, &relations, &rows),
                Err(error) => {
                    tracing::warn!(%error, "looking up relations in pg_class failed; reads of them go to the primary");
                    self.shared
                        .catalog
                        .put_relations(&database, &relations, &[]);
                }
            }
        }
        if let Some(sql) = Catalog::oids_sql(&oids) {
            let rows = self.own_query(&sql).await?.unwrap_or_default();
            self.shared
                .catalog
                .put_oids(&database, &oids, &rows, &classifier);
        }
        Ok(())
    }

    /// pgsplit's own simple query on the active connection: its rows as
    /// text, or the server's error.
    async fn own_query(
        &mut self,
        sql: &str,
    ) -> Result<Result<Vec<Vec<Option<String>>>, String>, Failure> {
        let leased = self.active.as_mut().expect("connected for the query");
        self.shared
            .metrics
            .internal_query(&leased.conn.name, "catalog");
        match crate::pool::query(&mut leased.conn, sql, OWN_QUERY_TIMEOUT).await {
            Ok(answer) => Ok(answer),
            Err(()) => {
                let error = SessionError::ServerLost {
                    backend: leased.conn.name.to_string(),
                    address: leased.conn.addr.to_string(),
                };
                let leased = self.active.take().expect("checked");
                self.release(leased, Leaving::Busy);
                Err(Failure {
                    error,
                    can_tell: true,
                })
            }
        }
    }
}
