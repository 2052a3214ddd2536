//! The server side of a session: the attached server connection and how it
//! is chosen, attached, replaced and let go.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::error::SessionError;
use super::relay::Outcome;
use super::state::SessionState;
use crate::app::Shared;
use crate::auth::UserEntry;
use crate::cancel::{send_cancel, CancelHandle};
use crate::pool::{self, ServerConn};
use crate::protocol::encode;
use crate::route::{self, Dest, Listener};
use crate::topology::Snapshot;

/// The server side of a session: the attached server connection, if any, and
/// what is needed to attach another.
pub struct Upstream<'a> {
    /// The active server connection: requests go here.
    pub server: Option<ServerConn>,
    /// What the active connection serves. Always `Replica` on the read-only
    /// port; on the read-write port it follows each request.
    pub dest: Dest,
    /// Read-write port: a connection for the other destination, idle, kept
    /// for the next switch.
    pub parked: Option<ServerConn>,
    pub shared: &'a Arc<Shared>,
    pub listener: Listener,
    pub user: Arc<UserEntry>,
    /// Startup parameters for server logins (user, database, the client's).
    pub server_params: Vec<(String, String)>,
    pub cancel: &'a CancelHandle,
    /// Pool key of this session's logins: user, database and the client's
    /// startup parameters; and the same for read-only logins.
    pub login: Arc<str>,
    pub login_read_only: Arc<str>,
    /// Startup parameter `pgsplit.report_lsn`.
    pub report_lsn: bool,
    /// Startup parameter `pgsplit.min_lsn`.
    pub min_lsn: Option<crate::topology::lsn::Lsn>,
}

impl Upstream<'_> {
    /// Makes sure a server connection fit for this session is attached,
    /// replacing one the topology no longer allows. Only called at idle points.
    pub(super) async fn ensure_server(
        &mut self,
        dest: Dest,
        state: SessionState,
    ) -> Result<(), SessionError> {
        self.switch_to(dest);
        if let Some(server) = &self.server {
            let snapshot = self.shared.topology.snapshot();
            if eligible(&snapshot, self.dest.rule(), server) {
                return Ok(());
            }
            if !state.is_clean() {
                let error = moved_error(&snapshot, self.dest.rule(), server);
                self.detach("the topology changed under a session with state")
                    .await;
                return Err(error);
            }
            self.detach("the topology changed").await;
        }
        self.attach().await
    }

    /// The database the session logged in to.
    pub fn database(&self) -> &str {
        self.server_params
            .iter()
            .find(|(k, _)| k == "database")
            .map_or("", |(_, v)| v.as_str())
    }

    /// Makes the connection for `dest` the active one (parking the other), if
    /// it is not already. Only at idle points. A parked connection that the
    /// server closed (or that has anything to say while idle) is dropped.
    fn switch_to(&mut self, dest: Dest) {
        if dest == self.dest {
            return;
        }
        std::mem::swap(&mut self.server, &mut self.parked);
        self.dest = dest;
        if self.server.as_ref().is_some_and(|s| !pool::quiet(s)) {
            self.server = None;
        }
        self.cancel
            .slot()
            .set(self.server.as_ref().map(ServerConn::cancel_target));
    }

    /// Drops the parked connection if the topology no longer lets it serve
    /// its destination.
    pub(super) fn prune_parked(&mut self, snapshot: &Snapshot) {
        let other = match self.dest {
            Dest::Primary => Dest::Replica,
            Dest::Replica => Dest::Primary,
        };
        if self
            .parked
            .as_ref()
            .is_some_and(|p| !eligible(snapshot, other.rule(), p))
        {
            self.parked = None;
        }
    }

    /// Chooses a backend and logs in to it, waiting up to
    /// `health.failover_timeout_ms` for one to be reachable.
    pub async fn attach(&mut self) -> Result<(), SessionError> {
        let config = self.shared.config.load_full();
        let wait = Duration::from_millis(config.health.failover_timeout_ms);
        let deadline = Instant::now() + wait;
        let connect_timeout = Duration::from_millis(config.limits.connect_timeout_ms);
        let idle_timeout = Duration::from_millis(config.limits.server_idle_timeout_ms);
        let mut tried = Vec::new();
        let mut changes = self.shared.topology.subscribe();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A read on the read-write port may always fall back to the primary.
            let no_replica = match self.listener {
                Listener::ReadWrite => crate::config::NoReplica::Primary,
                Listener::ReadOnly => config.routing.no_replica,
            };
            let target = route::choose(
                &self.shared.topology,
                self.dest.rule(),
                no_replica,
                remaining,
                &tried,
            )
            .await?;
            // A read-only session sent to the primary (a fallback) stays
            // read-only there.
            let mut target = target;
            target.read_only |= self.listener == Listener::ReadOnly && self.dest == Dest::Primary;
            let login = self.login_key(target.read_only);
            let pooled = self
                .shared
                .pool
                .take(&target.name, &target.address, login, idle_timeout);
            let connected = match pooled {
                Some(server) => Ok(server),
                None => self.connect(&target, &config, connect_timeout).await,
            };
            match connected {
                Ok(mut server) => {
                    let in_use = match &server.in_use_gauge {
                        Some(gauge) => crate::metrics::InUse::of(gauge),
                        None => self.shared.metrics.server_in_use(&server.name),
                    };
                    server.in_use_gauge = Some(in_use.gauge().clone());
                    server.in_use = Some(in_use);
                    self.cancel.slot().set(Some(server.cancel_target()));
                    self.server = Some(server);
                    return Ok(());
                }
                Err(SessionError::Connect(e))
                    if e.is_unreachable() && Instant::now() < deadline =>
                {
                    tracing::warn!(backend = %target.name, error = %e, "backend unreachable; trying again");
                    if self.dest == Dest::Replica {
                        tried.push(target.backend);
                    } else {
                        // The probes will notice; wait for news (or a moment).
                        changes.mark_unchanged();
                        let _ = tokio::time::timeout(Duration::from_millis(250), changes.changed())
                            .await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The pool key of this session's logins (read-only ones apart).
    fn login_key(&self, read_only: bool) -> &Arc<str> {
        if read_only {
            &self.login_read_only
        } else {
            &self.login
        }
    }

    /// A new server connection to `target`, within the per-backend bound.
    async fn connect(
        &self,
        target: &route::Target,
        config: &crate::config::Config,
        connect_timeout: Duration,
    ) -> Result<ServerConn, SessionError> {
        let metrics = &self.shared.metrics;
        let acquired = self
            .shared
            .pool
            .acquire(
                &target.name,
                &target.address,
                self.login_key(target.read_only),
                config.limits.max_server_connections,
                Duration::from_millis(config.limits.server_wait_timeout_ms),
                || metrics.server_idle_gauge(&target.name),
            )
            .await?;
        let permit = match acquired {
            pool::idle::Acquired::Slot(permit) => permit,
            pool::idle::Acquired::Idle(server) => return Ok(*server),
        };
        let params: Vec<(&str, &str)> = self
            .server_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut server = pool::connect(target, &self.user, &params, connect_timeout).await?;
        server.permit = Some(permit);
        Ok(server)
    }

    /// Gives the active connection back to the pool as it is: only for one
    /// that is idle and holds no session state.
    pub(super) fn give_back(&mut self) {
        if let Some(mut server) = self.server.take() {
            self.cancel.slot().set(None);
            server.in_use = None;
            let login = if server.read_only {
                self.login_read_only.clone()
            } else {
                self.login.clone()
            };
            self.shared.pool.put(login, server);
        }
    }

    /// Resets an idle connection (DISCARD ALL) and gives it back to the pool,
    /// in the background; a connection that fails that is dropped.
    fn reset_and_give_back(&self, mut server: ServerConn) {
        server.in_use = None;
        let shared = Arc::clone(self.shared);
        let login = if server.read_only {
            self.login_read_only.clone()
        } else {
            self.login.clone()
        };
        tokio::spawn(async move {
            let mut out = BytesMut::new();
            encode::query(&mut out, "DISCARD ALL");
            let reset = tokio::time::timeout(
                Duration::from_secs(5),
                pool::exchange(&mut server, &out, 1, BytesMut::new(), 1 << 20, None),
            )
            .await;
            if let Ok(Ok(None)) = reset {
                server.synced = pool::Synced::default();
                shared.pool.put(login, server);
            }
        });
    }

    /// Drops the server connection without a goodbye; if a statement may be
    /// running on it, cancels that on the server so it does not run on.
    pub(super) fn abandon(&mut self, busy: bool) {
        self.cancel.slot().set(None);
        if let Some(server) = self.server.take() {
            if busy {
                tokio::spawn(send_cancel(server.cancel_target(), Duration::from_secs(5)));
            }
        }
    }

    /// Moves off the server connection at an idle point (logged: the session
    /// goes on elsewhere).
    pub(super) async fn detach(&mut self, why: &str) {
        if let Some(server) = &self.server {
            tracing::info!(backend = %server.name, listener = self.listener.as_str(), "leaving server: {why}");
        }
        self.close_server().await;
    }

    /// Drops the server connection, saying goodbye politely.
    pub(super) async fn close_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            self.cancel.slot().set(None);
            let mut out = BytesMut::new();
            encode::terminate(&mut out);
            let _ = server.stream.write_all(&out).await;
        }
    }

    /// The session is over: connections left idle go back to the pool,
    /// reset; one with a request still running is cancelled and dropped.
    pub(super) async fn finish(&mut self, outcome: &Outcome, idle: bool) {
        if let Some(parked) = self.parked.take() {
            // Parked connections are always idle.
            self.reset_and_give_back(parked);
        }
        match outcome {
            // Stop the orphaned query so its server connection ends now rather
            // than when the query finishes.
            Outcome::ClientGone { busy: true } => self.abandon(true),
            _ if idle => {
                if let Some(server) = self.server.take() {
                    self.reset_and_give_back(server);
                }
            }
            _ => self.close_server().await,
        }
        self.cancel.slot().set(None);
    }
}

/// Whether `server` may keep serving a session on `listener`.
pub(super) fn eligible(snapshot: &Snapshot, listener: Listener, server: &ServerConn) -> bool {
    // Backends are matched by name and address, not index: a reload may
    // add or remove backends and shift the indexes.
    let is = |i: usize| {
        snapshot.backends[i].name == server.name && snapshot.backends[i].address == server.address
    };
    let primary = snapshot.primary.is_some_and(is);
    match listener {
        Listener::ReadWrite => primary,
        // A read-only session on the primary as a fallback (not because the
        // primary serves reads) moves as soon as anything else may serve it.
        Listener::ReadOnly => {
            snapshot.read_schedule.iter().any(|&i| is(i))
                || (server.read_only && primary && snapshot.read_schedule.is_empty())
        }
    }
}

/// The error for a session that must leave `server` but cannot move.
pub(super) fn moved_error(
    snapshot: &Snapshot,
    listener: Listener,
    server: &ServerConn,
) -> SessionError {
    match listener {
        Listener::ReadWrite => SessionError::PrimaryChanged {
            old: server.name.clone(),
            new: snapshot.primary.map(|p| snapshot.name(p).to_owned()),
        },
        Listener::ReadOnly => SessionError::Moved {
            backend: server.name.clone(),
            why: match snapshot
                .backends
                .iter()
                .find(|b| b.name == server.name)
                .and_then(|b| b.reason.as_deref())
            {
                Some(reason) => format!("left read rotation ({reason})"),
                None => "no longer serves reads".into(),
            },
        },
    }
}

pub(super) fn lost(server: &ServerConn) -> SessionError {
    SessionError::ServerLost {
        backend: server.name.clone(),
        address: server.addr.to_string(),
    }
}
