//! Getting a session a server connection for what the router decided, and
//! giving it back clean: choosing the backend (waiting for a primary through
//! a failover, trying the next replica when one is unreachable), taking a
//! connection from the pool, and returning one that may be dirty (in a
//! transaction, mid-statement, holding pinned state) only after it was
//! cancelled, rolled back and reset, in the background.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::error::SessionError;
use super::target;
use crate::auth::UserEntry;
use crate::cancel::send_cancel;
use crate::metrics::InUse;
use crate::pool::{Login, PoolError, ServerConn, Target};
use crate::protocol::encode;
use crate::router::On;
use crate::shared::Shared;
use prometheus_client::metrics::counter::Counter;

/// A connection lent to a session.
#[derive(Debug)]
pub struct Leased {
    /// Boxed: a session keeps up to two, and an idle one none; a box moves
    /// between the pool and sessions without copying.
    pub conn: Box<ServerConn>,
    /// What it serves for the session.
    pub on: On,
    /// Counts it in `pgsplit_server_connections{state="in_use"}`.
    _in_use: InUse,
    /// Counts the requests it serves (`pgsplit_backend_statements_total`).
    pub served: Counter,
    /// It was opened for this session just now.
    pub fresh: bool,
}

/// What a session asks for.
pub struct Want<'a> {
    pub on: On,
    pub login: &'a Login,
    pub user: &'a UserEntry,
    /// The connection the session used last (taken first when idle).
    pub prefer: Option<u64>,
    /// The session's listener: on the read-write port a read may always
    /// fall back to the primary.
    pub read_write: bool,
}

/// A connection for `want`, waiting as the configuration says: for a primary
/// to be known (`health.failover_timeout_ms`), for a free connection
/// (`limits.server_wait_timeout_ms`). An unreachable replica is skipped for
/// the next one, then the primary (read-only on the read-only port, unless
/// `routing.no_replica = "error"`).
///
/// An idle pooled connection is taken without awaiting anything; the rest
/// (waiting, opening a connection) is a large future, boxed so that every
/// session's own future stays small.
pub async fn acquire(shared: &Shared, want: Want<'_>) -> Result<Leased, SessionError> {
    match take_idle(shared, &want) {
        Some(leased) => Ok(leased),
        None => Box::pin(acquire_waiting(shared, want)).await,
    }
}

/// `acquire`'s path without waiting: an idle connection to the primary
/// known now, or to the replica asked for.
fn take_idle(shared: &Shared, want: &Want<'_>) -> Option<Leased> {
    let snapshot = shared.topology.snapshot();
    let (target, on) = match want.on {
        On::Replica(i) if i < snapshot.backends.len() => (target::backend(&snapshot, i), want.on),
        On::Replica(_) | On::Primary => {
            (target::backend(&snapshot, snapshot.primary?), On::Primary)
        }
        On::ReadOnlyPrimary => return None,
    };
    let config = shared.config.load();
    let idle_timeout = Duration::from_millis(config.limits.server_idle_timeout_ms);
    let got = shared
        .pool
        .try_take(&target, want.login, want.prefer, idle_timeout)?;
    Some(Leased {
        _in_use: InUse::of(&got.gauges.in_use),
        served: got.gauges.served,
        conn: got.conn,
        on,
        fresh: false,
    })
}

async fn acquire_waiting(shared: &Shared, want: Want<'_>) -> Result<Leased, SessionError> {
    let config = shared.config.load_full();
    let deadline = Instant::now() + Duration::from_millis(config.health.failover_timeout_ms);
    let mut on = want.on;
    let mut tried: Vec<usize> = Vec::new();
    let mut changes = shared.topology.subscribe();
    loop {
        let snapshot = shared.topology.snapshot();
        let (target, login) = match on {
            On::Replica(i) if i < snapshot.backends.len() => {
                (target::backend(&snapshot, i), want.login.clone())
            }
            On::Replica(_) | On::Primary => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let t = target::primary(&shared.topology, remaining).await?;
                on = On::Primary;
                (t, want.login.clone())
            }
            On::ReadOnlyPrimary => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                (
                    target::primary(&shared.topology, remaining).await?,
                    want.login.read_only(),
                )
            }
        };
        match checkout(shared, &target, &login, want.user, want.prefer).await {
            Ok((conn, fresh, in_use, served)) => {
                tracing::trace!(backend = %target.name, addr = %conn.addr, serial = conn.serial, fresh, ?on, "connection for the session");
                return Ok(Leased {
                    conn,
                    on,
                    _in_use: in_use,
                    served,
                    fresh,
                });
            }
            Err(PoolError::Connect(e)) if e.is_unreachable() && Instant::now() < deadline => {
                tracing::warn!(backend = %target.name, error = %e, "backend unreachable; trying again");
                if let On::Replica(i) = on {
                    tried.push(i);
                    let next = snapshot
                        .read_schedule
                        .iter()
                        .copied()
                        .find(|r| !tried.contains(r) && Some(*r) != snapshot.primary);
                    on = match next {
                        Some(r) => On::Replica(r),
                        None if want.read_write => On::Primary,
                        None => target::without_replica(config.routing.no_replica, &snapshot)?,
                    };
                } else {
                    // The probes will notice; wait for news (or a moment).
                    changes.mark_unchanged();
                    let _ =
                        tokio::time::timeout(Duration::from_millis(250), changes.changed()).await;
                }
            }
            Err(PoolError::Connect(e)) => return Err(e.into()),
            Err(PoolError::Timeout(e)) => return Err(e.into()),
        }
    }
}

async fn checkout(
    shared: &Shared,
    target: &Target,
    login: &Login,
    user: &UserEntry,
    prefer: Option<u64>,
) -> Result<(Box<ServerConn>, bool, InUse, Counter), PoolError> {
    let config = shared.config.load();
    let limits = &config.limits;
    let metrics = &shared.metrics;
    let got = shared
        .pool
        .checkout(
            target,
            login,
            user,
            prefer,
            limits.max_server_connections,
            Duration::from_millis(limits.server_wait_timeout_ms),
            Duration::from_millis(limits.connect_timeout_ms),
            Duration::from_millis(limits.server_idle_timeout_ms),
            || metrics.pool_gauges(&target.name),
        )
        .await?;
    let in_use = InUse::of(&got.gauges.in_use);
    Ok((got.conn, got.fresh, in_use, got.gauges.served))
}

impl Leased {
    /// Gives it back to the pool: it is idle and clean (ReadyForQuery `I`,
    /// nothing unread, nothing owed).
    pub fn give_back(self, shared: &Shared) {
        shared.pool.checkin(self.conn);
    }
}

/// How a connection leaves its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaving {
    /// Idle, nothing of the session on it but recorded state: straight back
    /// to the pool.
    Clean,
    /// Idle or inside a transaction: ROLLBACK first; `discard` when it holds
    /// the session's pinned state (temp tables, LISTEN, locks...): DISCARD
    /// ALL too.
    Reset { discard: bool },
    /// A request may be running: cancel it and close the connection (what
    /// the client sent after it must not run for nobody).
    Busy,
}

/// Returns a connection to the pool after making it clean, in the
/// background; one that cannot be made clean within a few seconds is
/// closed. Nothing dirty ever reaches another session.
pub fn release(shared: &Arc<Shared>, leased: Leased, leaving: Leaving) {
    match leaving {
        Leaving::Clean => leased.give_back(shared),
        Leaving::Busy => {
            let target = leased.conn.cancel_target();
            drop(leased);
            tokio::spawn(send_cancel(target, Duration::from_secs(5)));
        }
        Leaving::Reset { discard } => {
            let shared = Arc::clone(shared);
            tokio::spawn(async move {
                let Leased {
                    mut conn, _in_use, ..
                } = leased;
                let mut out = BytesMut::new();
                // ROLLBACK outside a transaction only warns.
                encode::query(&mut out, "ROLLBACK");
                if discard {
                    encode::query(&mut out, "DISCARD ALL");
                }
                let replies = if discard { 2 } else { 1 };
                let reset = tokio::time::timeout(
                    Duration::from_secs(5),
                    crate::pool::exchange(&mut conn, &out, replies, BytesMut::new(), 1 << 24, None),
                )
                .await;
                if let Ok(Ok(None)) = reset {
                    if discard {
                        conn.settings = 0;
                        conn.role_changed = false;
                        conn.statements.clear();
                    }
                    shared.pool.checkin(conn);
                }
            });
        }
    }
}
