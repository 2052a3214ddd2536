//! Idle server connections kept for reuse, per backend and login (user,
//! database and the client's other startup parameters), and the per-backend
//! bound on connections.
//!
//! A connection is only ever put here idle (ReadyForQuery `I`, nothing
//! unread) and holding no session state: the session that lends it either
//! has none (its settings and prepared statements are replayed by
//! `session::split` wherever it goes) or it is reset with DISCARD ALL first.
//! A connection that has anything to say while idle (the server closed it)
//! or that waited longer than the idle timeout is dropped when taken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ServerConn;

/// No slot for a new server connection came free in time.
#[derive(Debug, thiserror::Error)]
#[error("all {max} connections to backend {backend} are in use (limits.max_server_connections); none came free within {waited_ms} ms")]
pub struct PoolTimeout {
    pub backend: String,
    pub max: usize,
    pub waited_ms: u128,
}

struct Idle {
    conn: ServerConn,
    since: Instant,
}

struct Backend {
    address: String,
    slots: Arc<Semaphore>,
    max: usize,
    idle: HashMap<Arc<str>, Vec<Idle>>,
    idle_gauge: Gauge,
}

/// See the module doc.
#[derive(Default)]
pub struct Pool {
    backends: Mutex<HashMap<String, Backend>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Backend>> {
        self.backends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `backend` (at `address`) for `login`, if one is
    /// alive and fresh.
    pub fn take(
        &self,
        backend: &str,
        address: &str,
        login: &str,
        idle_timeout: Duration,
    ) -> Option<ServerConn> {
        let mut backends = self.lock();
        let b = backends.get_mut(backend)?;
        if b.address != address {
            return None;
        }
        let list = b.idle.get_mut(login)?;
        while let Some(idle) = list.pop() {
            b.idle_gauge.dec();
            if idle.since.elapsed() < idle_timeout && super::quiet(&idle.conn) {
                return Some(idle.conn);
            }
        }
        None
    }

    /// A slot for one more connection to `backend`, waiting up to `wait`
    /// for one to come free. `max` applies when the backend is first seen.
    pub async fn slot(
        &self,
        backend: &str,
        address: &str,
        max: usize,
        wait: Duration,
        idle_gauge: impl FnOnce() -> Gauge,
    ) -> Result<OwnedSemaphorePermit, PoolTimeout> {
        let (slots, max) = {
            let mut backends = self.lock();
            let b = backends
                .entry(backend.to_owned())
                .or_insert_with(|| Backend {
                    address: address.to_owned(),
                    slots: Arc::new(Semaphore::new(max)),
                    max,
                    idle: HashMap::new(),
                    idle_gauge: idle_gauge(),
                });
            if b.address != address {
                // The backend moved (a reload): its idle connections go.
                let dropped: usize = b.idle.values().map(Vec::len).sum();
                b.idle_gauge.dec_by(dropped as i64);
                b.idle.clear();
                b.address = address.to_owned();
            }
            if let Ok(permit) = b.slots.clone().try_acquire_owned() {
                return Ok(permit);
            }
            // Full: an idle connection of another login makes room.
            if let Some(list) = b.idle.values_mut().find(|l| !l.is_empty()) {
                list.pop();
                b.idle_gauge.dec();
            }
            (b.slots.clone(), b.max)
        };
        let started = Instant::now();
        match tokio::time::timeout(wait, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(PoolTimeout {
                backend: backend.to_owned(),
                max,
                waited_ms: started.elapsed().as_millis(),
            }),
        }
    }

    /// Keeps an idle connection (see the module doc for what it must be).
    pub fn put(&self, login: Arc<str>, conn: ServerConn) {
        let mut backends = self.lock();
        let Some(b) = backends.get_mut(&conn.name) else {
            return;
        };
        if b.address != conn.address {
            return;
        }
        b.idle_gauge.inc();
        b.idle.entry(login).or_default().push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Idle connections per backend (for `/status`).
    pub fn idle_counts(&self) -> Vec<(String, usize)> {
        self.lock()
            .iter()
            .map(|(name, b)| (name.clone(), b.idle.values().map(Vec::len).sum()))
            .collect()
    }
}
