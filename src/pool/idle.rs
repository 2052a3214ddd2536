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
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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
    idle: HashMap<IdleKey, Vec<Idle>>,
    idle_gauge: Gauge,
    /// Woken when a connection comes back, for sessions waiting for one.
    returned: Arc<Notify>,
}

/// What a session that needs a connection got.
pub enum Acquired {
    /// Room to open a new one.
    Slot(OwnedSemaphorePermit),
    /// An idle one of its login (given back while it waited).
    Idle(Box<ServerConn>),
}

/// What a session that must wait waits on.
struct WaitOn {
    slots: Arc<Semaphore>,
    returned: Arc<Notify>,
    max: usize,
}

/// Idle connections are kept per login and, when sessions run on worker
/// threads (one runtime each), per thread: a socket serves best, and wakes
/// only, the runtime that registered it.
type IdleKey = (Option<std::thread::ThreadId>, Arc<str>);

/// See the module doc.
#[derive(Default)]
pub struct Pool {
    backends: Mutex<HashMap<String, Backend>>,
    per_thread: std::sync::atomic::AtomicBool,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Backend>> {
        self.backends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep idle connections per thread (sessions run on worker threads).
    pub fn set_per_thread(&self, on: bool) {
        self.per_thread
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn key(&self, login: &Arc<str>) -> IdleKey {
        let thread = self
            .per_thread
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| std::thread::current().id());
        (thread, Arc::clone(login))
    }

    /// An idle connection to `backend` (at `address`) for `login`, if one is
    /// alive and fresh.
    pub fn take(
        &self,
        backend: &str,
        address: &str,
        login: &Arc<str>,
        idle_timeout: Duration,
    ) -> Option<ServerConn> {
        let key = self.key(login);
        let mut backends = self.lock();
        let b = backends.get_mut(backend)?;
        if b.address != address {
            return None;
        }
        let list = b.idle.get_mut(&key)?;
        while let Some(idle) = list.pop() {
            b.idle_gauge.dec();
            if idle.since.elapsed() < idle_timeout && super::quiet(&idle.conn) {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Room for one more connection to `backend`, or an idle one of `login`
    /// given back meanwhile, waiting up to `wait`. When the backend is full,
    /// idle connections of other logins are closed to make room. `max`
    /// applies when the backend is first seen.
    pub async fn acquire(
        &self,
        backend: &str,
        address: &str,
        login: &Arc<str>,
        max: usize,
        wait: Duration,
        idle_gauge: impl FnOnce() -> Gauge,
    ) -> Result<Acquired, PoolTimeout> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let mut idle_gauge = Some(idle_gauge);
        loop {
            let on = match self.try_acquire(backend, address, login, max, &mut idle_gauge) {
                Ok(acquired) => return Ok(acquired),
                Err(on) => on,
            };
            let returned = on.returned.notified();
            tokio::select! {
                permit = on.slots.acquire_owned() => {
                    if let Ok(permit) = permit {
                        return Ok(Acquired::Slot(permit));
                    }
                }
                _ = returned => {}
                // A connection given back between the attempt above and the
                // wait would go unnoticed: look again now and then.
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(PoolTimeout {
                        backend: backend.to_owned(),
                        max: on.max,
                        waited_ms: started.elapsed().as_millis(),
                    });
                }
            }
        }
    }

    /// One attempt without waiting.
    fn try_acquire<G: FnOnce() -> Gauge>(
        &self,
        backend: &str,
        address: &str,
        login: &Arc<str>,
        max: usize,
        idle_gauge: &mut Option<G>,
    ) -> Result<Acquired, WaitOn> {
        let key = self.key(login);
        let mut backends = self.lock();
        if !backends.contains_key(backend) {
            let gauge = idle_gauge.take().map(|f| f()).unwrap_or_default();
            backends.insert(
                backend.to_owned(),
                Backend {
                    address: address.to_owned(),
                    slots: Arc::new(Semaphore::new(max)),
                    max,
                    idle: HashMap::new(),
                    idle_gauge: gauge,
                    returned: Arc::default(),
                },
            );
        }
        let b = backends.get_mut(backend).expect("inserted above");
        if b.address != address {
            // The backend moved (a reload): its idle connections go.
            let dropped: usize = b.idle.values().map(Vec::len).sum();
            b.idle_gauge.dec_by(dropped as i64);
            b.idle.clear();
            b.address = address.to_owned();
        }
        if let Some(idle) = b.idle.get_mut(&key).and_then(Vec::pop) {
            b.idle_gauge.dec();
            return Ok(Acquired::Idle(Box::new(idle.conn)));
        }
        if let Ok(permit) = b.slots.clone().try_acquire_owned() {
            return Ok(Acquired::Slot(permit));
        }
        // Full: an idle connection of another login makes room (its permit
        // is freed as it closes).
        if let Some(list) = b.idle.values_mut().find(|l| !l.is_empty()) {
            list.pop();
            b.idle_gauge.dec();
            if let Ok(permit) = b.slots.clone().try_acquire_owned() {
                return Ok(Acquired::Slot(permit));
            }
        }
        Err(WaitOn {
            slots: b.slots.clone(),
            returned: b.returned.clone(),
            max: b.max,
        })
    }

    /// Keeps an idle connection (see the module doc for what it must be).
    pub fn put(&self, login: Arc<str>, conn: ServerConn) {
        let key = self.key(&login);
        let mut backends = self.lock();
        let Some(b) = backends.get_mut(&conn.name) else {
            return;
        };
        if b.address != conn.address {
            return;
        }
        b.idle_gauge.inc();
        b.idle.entry(key).or_default().push(Idle {
            conn,
            since: Instant::now(),
        });
        b.returned.notify_waiters();
    }
}
