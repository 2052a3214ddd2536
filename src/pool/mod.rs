//! Server connections: the pool sessions take them from and give them back
//! to, per backend and login, within `limits.max_server_connections` per
//! backend.
//!
//! - A connection is only ever given back idle: ReadyForQuery `I`, nothing
//!   unread, no request in flight. Whatever else it holds (settings of the
//!   session that used it, shared prepared statements) is recorded on it, so
//!   the next session brings it to its own state (see `session`).
//! - When a backend is full, sessions wait in FIFO order: a connection given
//!   back goes to the first waiter of its login; for a waiter of another
//!   login it is closed, making room for a new one. A waiter gives up after
//!   `server_wait_timeout_ms` with 53300.
//! - Idle connections are kept per worker thread (a socket wakes the runtime
//!   it is registered with); a session takes another thread's before it
//!   waits, moving the socket to its own runtime.
//! - A connection that has anything to say while idle (the server closed it,
//!   a restart, `pg_terminate_backend`) or that waited longer than the idle
//!   timeout is dropped when taken, never handed out.
//! - What a client logging in is told (the server's ParameterStatus) is
//!   cached per backend and login, so a login needs no server connection
//!   once one was made.

pub mod conn;
pub mod statements;
pub mod stream;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

pub use conn::{exchange, query, ConnectError, Greeting, Login, ServerConn, Target};

use crate::auth::UserEntry;
use crate::tls::backend::ServerTls;

/// No connection came free in time.
#[derive(Debug, thiserror::Error)]
#[error("all {max} connections to backend {backend} are in use (limits.max_server_connections); none came free within {waited_ms} ms")]
pub struct PoolTimeout {
    pub backend: String,
    pub max: usize,
    pub waited_ms: u128,
}

/// Why a session got no connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Timeout(#[from] PoolTimeout),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// The metrics the pool keeps up to date, per backend.
#[derive(Debug, Clone)]
pub struct PoolGauges {
    pub in_use: Gauge,
    pub idle: Gauge,
    pub waiting: Gauge,
    pub wait_seconds: Histogram,
    /// Requests the backend served (`pgsplit_backend_statements_total`).
    pub served: prometheus_client::metrics::counter::Counter,
}

/// A backend's connections, as [`Pool::overview`] shows them.
#[derive(Debug, Clone)]
pub struct BackendView {
    pub backend: String,
    pub address: String,
    /// Connections open or being opened (idle and lent together).
    pub open: usize,
    /// `limits.max_server_connections` as it applies to this backend.
    pub max: usize,
    /// Logins with connections, waiters or a greeting here.
    pub logins: Vec<LoginView>,
}

/// One login's share of a backend's connections.
#[derive(Debug, Clone)]
pub struct LoginView {
    /// The pool key (see [`Login`]).
    pub login: Arc<str>,
    pub idle: usize,
    pub waiting: usize,
}

/// An idle connection, as [`Pool::idle_connections`] shows it.
#[derive(Debug, Clone)]
pub struct IdleView {
    pub backend: String,
    pub serial: u64,
    pub login: Arc<str>,
    pub addr: std::net::SocketAddr,
    pub idle_for: Duration,
}

/// Idle connections are kept per login and per thread.
type IdleKey = (Option<std::thread::ThreadId>, Arc<str>);

/// What a waiter is handed.
enum Grant {
    /// An idle connection of its login.
    Conn(Box<ServerConn>),
    /// Room for a new one.
    Slot(Slot),
}

struct Waiter {
    login: Arc<str>,
    grant: oneshot::Sender<Grant>,
}

struct Backend {
    address: Arc<str>,
    max: usize,
    /// Connections open or being opened (idle ones included).
    open: usize,
    /// Boxed: a connection moves to a session and back without a copy.
    #[allow(clippy::vec_box)]
    idle: HashMap<IdleKey, Vec<Box<ServerConn>>>,
    waiters: VecDeque<Waiter>,
    greetings: HashMap<Arc<str>, Arc<Greeting>>,
    gauges: PoolGauges,
    /// False while the backend serves nothing (a fenced old primary, a
    /// replica out of rotation): connections given back close.
    serving: bool,
}

struct Inner {
    backends: Mutex<HashMap<Arc<str>, Backend>>,
    logins: conn::Logins,
    /// TLS towards backends (`[server_tls]`), None for plain TCP.
    tls: Option<Arc<ServerTls>>,
    per_thread: AtomicBool,
    serial: AtomicU64,
}

/// See the module doc. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Default for Pool {
    /// A pool of plain TCP connections.
    fn default() -> Self {
        Pool::new(None)
    }
}

impl Pool {
    /// A pool whose connections use `tls` (None: plain TCP).
    pub fn new(tls: Option<Arc<ServerTls>>) -> Self {
        Pool {
            inner: Arc::new(Inner {
                backends: Mutex::new(HashMap::new()),
                logins: conn::Logins::default(),
                tls,
                per_thread: AtomicBool::new(false),
                serial: AtomicU64::new(0),
            }),
        }
    }
}

/// A connection's place under the bound; freed (and handed to the first
/// waiter) when dropped.
#[derive(Debug)]
pub struct Slot {
    pool: Weak<Inner>,
    backend: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(inner) = self.pool.upgrade() else {
            return;
        };
        let mut backends = lock(&inner.backends);
        let Some(b) = backends.get_mut(&self.backend) else {
            return;
        };
        b.open = b.open.saturating_sub(1);
        // The first waiter takes the room.
        while let Some(w) = b.waiters.pop_front() {
            b.gauges.waiting.dec();
            b.open += 1;
            let slot = Slot {
                pool: self.pool.clone(),
                backend: Arc::clone(&self.backend),
            };
            match w.grant.send(Grant::Slot(slot)) {
                Ok(()) => break,
                Err(Grant::Slot(mut slot)) => {
                    // Gone: undo, without this drop taking the lock again.
                    b.open -= 1;
                    slot.pool = Weak::new();
                }
                Err(Grant::Conn(_)) => unreachable!("a slot was sent"),
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one checkout attempt came to.
enum Next {
    Got(Box<ServerConn>, PoolGauges),
    Open(Slot, PoolGauges),
    Wait(oneshot::Receiver<Grant>, PoolGauges),
}

/// How a checkout went, for its caller's bookkeeping.
pub struct Checkout {
    pub conn: Box<ServerConn>,
    /// A new connection was opened for it.
    pub fresh: bool,
    /// The backend's metric handles.
    pub gauges: PoolGauges,
}

impl Pool {
    /// Keep idle connections per thread (sessions run on worker threads).
    pub fn set_per_thread(&self, on: bool) {
        self.inner.per_thread.store(on, Ordering::Relaxed);
    }

    fn key(&self, login: &Arc<str>) -> IdleKey {
        let thread = self
            .inner
            .per_thread
            .load(Ordering::Relaxed)
            .then(|| std::thread::current().id());
        (thread, Arc::clone(login))
    }

    /// A connection to `target` for `login`: an idle one (preferably
    /// `prefer`, the session's last), else a new one, else the first freed,
    /// waiting up to `wait`. `max` and `gauges` apply when the backend is
    /// first seen.
    #[allow(clippy::too_many_arguments)]
    pub async fn checkout(
        &self,
        target: &Target,
        login: &Login,
        user: &UserEntry,
        prefer: Option<u64>,
        max: usize,
        wait: Duration,
        connect_timeout: Duration,
        idle_timeout: Duration,
        gauges: impl FnOnce() -> PoolGauges,
    ) -> Result<Checkout, PoolError> {
        let started = Instant::now();
        let (receiver, waiting_gauges) =
            match self.try_checkout(target, login, prefer, max, idle_timeout, gauges) {
                Next::Got(mut conn, gauges) => {
                    conn.adopt().ok();
                    return Ok(Checkout {
                        conn,
                        fresh: false,
                        gauges,
                    });
                }
                // Opening a connection is the rare, large future: boxed, so
                // every session's own future stays small while it is idle.
                Next::Open(slot, gauges) => {
                    return Box::pin(self.open(target, login, user, slot, connect_timeout, gauges))
                        .await;
                }
                Next::Wait(receiver, gauges) => (receiver, gauges),
            };
        let max = self.max_of(&target.name);
        let granted = tokio::time::timeout(wait, receiver).await;
        waiting_gauges
            .wait_seconds
            .observe(started.elapsed().as_secs_f64());
        match granted {
            Ok(Ok(Grant::Conn(mut conn))) => {
                conn.adopt().ok();
                Ok(Checkout {
                    conn,
                    fresh: false,
                    gauges: waiting_gauges,
                })
            }
            Ok(Ok(Grant::Slot(slot))) => {
                Box::pin(self.open(target, login, user, slot, connect_timeout, waiting_gauges))
                    .await
            }
            Ok(Err(_)) | Err(_) => {
                // Timed out (or the pool dropped us): leave the queue.
                self.forget_waiters(&target.name);
                Err(PoolTimeout {
                    backend: target.name.to_string(),
                    max,
                    waited_ms: started.elapsed().as_millis(),
                }
                .into())
            }
        }
    }

    /// An idle connection of `login` to `target`, if one is there now
    /// (nothing reserved, no wait): the common case, with no future to
    /// await.
    pub fn try_take(
        &self,
        target: &Target,
        login: &Login,
        prefer: Option<u64>,
        idle_timeout: Duration,
    ) -> Option<Checkout> {
        let mut stale = Vec::new();
        let got = {
            let mut backends = lock(&self.inner.backends);
            let b = backends.get_mut(&target.name)?;
            if b.address != target.address {
                return None;
            }
            self.take_idle(b, &login.key, prefer, idle_timeout, &mut stale)
                .map(|conn| (conn, b.gauges.clone()))
        };
        drop(stale);
        let (mut conn, gauges) = got?;
        conn.adopt().ok();
        Some(Checkout {
            conn,
            fresh: false,
            gauges,
        })
    }

    /// One attempt, without waiting: an idle connection, room for a new
    /// one, or a place in the queue.
    fn try_checkout(
        &self,
        target: &Target,
        login: &Login,
        prefer: Option<u64>,
        max: usize,
        idle_timeout: Duration,
        gauges: impl FnOnce() -> PoolGauges,
    ) -> Next {
        let mut stale = Vec::new();
        let next = {
            let mut backends = lock(&self.inner.backends);
            let b = backends
                .entry(Arc::clone(&target.name))
                .or_insert_with(|| Backend {
                    address: Arc::clone(&target.address),
                    max,
                    open: 0,
                    idle: HashMap::new(),
                    waiters: VecDeque::new(),
                    greetings: HashMap::new(),
                    gauges: gauges(),
                    serving: true,
                });
            if b.address != target.address {
                // The backend moved (a reload): its idle connections go.
                for (_, list) in b.idle.drain() {
                    b.gauges.idle.dec_by(list.len() as i64);
                    stale.extend(list);
                }
                b.greetings.clear();
                b.address = Arc::clone(&target.address);
            }
            if let Some(conn) = self.take_idle(b, &login.key, prefer, idle_timeout, &mut stale) {
                Next::Got(conn, b.gauges.clone())
            } else if b.open < b.max {
                b.open += 1;
                let slot = Slot {
                    pool: Arc::downgrade(&self.inner),
                    backend: Arc::clone(&target.name),
                };
                Next::Open(slot, b.gauges.clone())
            } else if let Some(mut victim) = b
                .idle
                .values_mut()
                .find(|l| !l.is_empty())
                .and_then(Vec::pop)
            {
                // Full: an idle connection of another login makes room
                // (there are no waiters then: a connection given back goes
                // to them). Its place becomes ours: closing it frees nothing.
                b.gauges.idle.dec();
                victim.slot.pool = Weak::new();
                stale.push(victim);
                let slot = Slot {
                    pool: Arc::downgrade(&self.inner),
                    backend: Arc::clone(&target.name),
                };
                Next::Open(slot, b.gauges.clone())
            } else {
                let (tx, rx) = oneshot::channel();
                b.waiters.push_back(Waiter {
                    login: Arc::clone(&login.key),
                    grant: tx,
                });
                b.gauges.waiting.inc();
                Next::Wait(rx, b.gauges.clone())
            }
        };
        // Closed outside the lock (a slot's drop takes it).
        drop(stale);
        next
    }

    fn max_of(&self, backend: &str) -> usize {
        lock(&self.inner.backends).get(backend).map_or(0, |b| b.max)
    }

    /// Drops waiters that gave up.
    fn forget_waiters(&self, backend: &str) {
        let mut backends = lock(&self.inner.backends);
        if let Some(b) = backends.get_mut(backend) {
            let before = b.waiters.len();
            b.waiters.retain(|w| !w.grant.is_closed());
            b.gauges.waiting.dec_by((before - b.waiters.len()) as i64);
        }
    }

    /// Takes a live idle connection of `login`: the preferred one, else the
    /// newest of this thread, else another thread's. Dead or stale ones go
    /// to `stale` (closed by the caller, outside the lock).
    #[allow(clippy::vec_box)]
    fn take_idle(
        &self,
        b: &mut Backend,
        login: &Arc<str>,
        prefer: Option<u64>,
        idle_timeout: Duration,
        stale: &mut Vec<Box<ServerConn>>,
    ) -> Option<Box<ServerConn>> {
        let key = self.key(login);
        // This thread's list first, then (per-thread lists) the others'.
        let others = key.0.is_some();
        let mut next = Some(key);
        while let Some(k) = next.take() {
            if others {
                next = b
                    .idle
                    .iter()
                    .find(|(o, list)| o.1 == *login && o.0 != k.0 && !list.is_empty())
                    .map(|(o, _)| o.clone());
            }
            let Some(list) = b.idle.get_mut(&k) else {
                continue;
            };
            if let Some(serial) = prefer {
                if let Some(pos) = list.iter().position(|c| c.serial == serial) {
                    let mut conn = list.remove(pos);
                    b.gauges.idle.dec();
                    if conn.idle_since.elapsed() < idle_timeout && conn.quiet() {
                        return Some(conn);
                    }
                    stale.push(conn);
                }
            }
            while let Some(mut conn) = list.pop() {
                b.gauges.idle.dec();
                if conn.idle_since.elapsed() < idle_timeout && conn.quiet() {
                    return Some(conn);
                }
                tracing::debug!(backend = %conn.name, serial = conn.serial, "dropping an idle connection that is stale or closed");
                stale.push(conn);
            }
        }
        None
    }

    async fn open(
        &self,
        target: &Target,
        login: &Login,
        user: &UserEntry,
        slot: Slot,
        timeout: Duration,
        gauges: PoolGauges,
    ) -> Result<Checkout, PoolError> {
        let serial = self.inner.serial.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(backend = %target.name, serial, "opening a server connection");
        let tls = self.inner.tls.as_deref();
        let mut conn = conn::connect(target, tls, user, login, timeout, slot, serial).await?;
        conn.per_thread = self.inner.per_thread.load(Ordering::Relaxed);
        Ok(Checkout {
            conn,
            fresh: true,
            gauges,
        })
    }

    /// Gives back an idle connection (see the module doc for what it must
    /// be): to the first waiter of its login, else closed for the first
    /// waiter of another login, else kept.
    pub fn checkin(&self, mut conn: Box<ServerConn>) {
        conn.idle_since = Instant::now();
        let mut closed = None;
        // Closed after the lock is let go: its slot takes the lock to free
        // its place.
        let mut retired = None;
        {
            let mut backends = lock(&self.inner.backends);
            let Some(b) = backends.get_mut(&conn.name) else {
                return;
            };
            if b.address != conn.address {
                return;
            }
            let mut conn = Some(conn);
            while let Some(w) = b.waiters.pop_front() {
                b.gauges.waiting.dec();
                let c = conn.take().expect("ours until handed over");
                if w.login == c.login {
                    match w.grant.send(Grant::Conn(c)) {
                        Ok(()) => return,
                        Err(Grant::Conn(c)) => conn = Some(c),
                        Err(Grant::Slot(_)) => unreachable!("a connection was sent"),
                    }
                    continue;
                }
                // Another login: this connection closes and its place goes
                // to the waiter.
                let slot = Slot {
                    pool: Arc::downgrade(&self.inner),
                    backend: Arc::clone(&c.name),
                };
                match w.grant.send(Grant::Slot(slot)) {
                    Ok(()) => {
                        closed = Some(c);
                        break;
                    }
                    Err(Grant::Slot(mut slot)) => {
                        slot.pool = Weak::new();
                        conn = Some(c);
                    }
                    Err(Grant::Conn(_)) => unreachable!("a slot was sent"),
                }
            }
            match conn {
                Some(c) if b.serving => {
                    let key = self.key(&c.login);
                    b.gauges.idle.inc();
                    b.idle.entry(key).or_default().push(c);
                }
                Some(c) => retired = Some(c),
                None => {}
            }
        }
        drop(retired);
        if let Some(mut c) = closed {
            // Its place moved to the waiter: closing it frees nothing.
            c.slot.pool = Weak::new();
            drop(c);
        }
    }

    /// The cached greeting for clients of `login` on `backend`.
    /// `login`, sharing its strings with a live session that logged in
    /// with the same parameters (see [`conn::Logins`]).
    pub fn share_login(&self, login: Login) -> Login {
        self.inner.logins.share(login)
    }

    pub fn greeting(&self, backend: &str, login: &Arc<str>) -> Option<Arc<Greeting>> {
        lock(&self.inner.backends)
            .get(backend)?
            .greetings
            .get(login)
            .cloned()
    }

    /// Caches the greeting for clients of `login` on `backend`.
    pub fn set_greeting(&self, backend: &str, login: &Arc<str>, greeting: Arc<Greeting>) {
        if let Some(b) = lock(&self.inner.backends).get_mut(backend) {
            b.greetings.insert(Arc::clone(login), greeting);
        }
    }

    /// Closes the idle connections of backends `keep` rejects (no longer the
    /// primary nor a reader: fenced, removed, down).
    pub fn prune(&self, keep: impl Fn(&str) -> bool) {
        let mut closed = Vec::new();
        {
            let mut backends = lock(&self.inner.backends);
            for (name, b) in backends.iter_mut() {
                b.serving = keep(name);
                if b.serving {
                    continue;
                }
                for (_, list) in b.idle.drain() {
                    b.gauges.idle.dec_by(list.len() as i64);
                    closed.extend(list);
                }
                b.greetings.clear();
            }
        }
        if !closed.is_empty() {
            tracing::info!(
                connections = closed.len(),
                "closed idle connections to backends that serve nothing now"
            );
        }
    }

    /// Every backend's connections, per login, for the admin console.
    pub fn overview(&self) -> Vec<BackendView> {
        let backends = lock(&self.inner.backends);
        let mut out: Vec<BackendView> = backends
            .iter()
            .map(|(name, b)| {
                let mut logins: Vec<LoginView> = Vec::new();
                fn entry<'a>(
                    logins: &'a mut Vec<LoginView>,
                    login: &Arc<str>,
                ) -> &'a mut LoginView {
                    match logins.iter().position(|l| l.login == *login) {
                        Some(i) => &mut logins[i],
                        None => {
                            logins.push(LoginView {
                                login: Arc::clone(login),
                                idle: 0,
                                waiting: 0,
                            });
                            logins.last_mut().expect("just pushed")
                        }
                    }
                }
                for ((_, login), list) in &b.idle {
                    entry(&mut logins, login).idle += list.len();
                }
                for w in &b.waiters {
                    entry(&mut logins, &w.login).waiting += 1;
                }
                for login in b.greetings.keys() {
                    entry(&mut logins, login);
                }
                logins.sort_by(|a, b| a.login.cmp(&b.login));
                BackendView {
                    backend: name.to_string(),
                    address: b.address.to_string(),
                    open: b.open,
                    max: b.max,
                    logins,
                }
            })
            .collect();
        out.sort_by(|a, b| a.backend.cmp(&b.backend));
        out
    }

    /// The idle connections in the pool now, by backend and serial.
    pub fn idle_connections(&self) -> Vec<IdleView> {
        let backends = lock(&self.inner.backends);
        let mut out: Vec<IdleView> = backends
            .values()
            .flat_map(|b| b.idle.values().flatten())
            .map(|c| IdleView {
                backend: c.name.to_string(),
                serial: c.serial,
                login: Arc::clone(&c.login),
                addr: c.addr,
                idle_for: c.idle_since.elapsed(),
            })
            .collect();
        out.sort_by(|a, b| (&a.backend, a.serial).cmp(&(&b.backend, b.serial)));
        out
    }

    /// Per backend: (open, idle, waiting) connections, for `/status`.
    pub fn counts(&self) -> Vec<(String, usize, usize, usize)> {
        let backends = lock(&self.inner.backends);
        let mut out: Vec<_> = backends
            .iter()
            .map(|(name, b)| {
                let idle = b.idle.values().map(Vec::len).sum();
                (name.to_string(), b.open, idle, b.waiters.len())
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests;
