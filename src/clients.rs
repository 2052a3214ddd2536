//! The client table: one compact record per logged-in session, for the admin
//! console (`SHOW CLIENTS`, `SHOW SERVERS`, `SHOW POOLS`).
//!
//! What never changes (id, listener, address, login, when it connected) is
//! set at registration; strings are shared with the session's login (`Arc`),
//! not copied. What changes (state, statements to the primary and to
//! replicas, pins, the server connections it holds, its read-your-writes
//! floor) lives in atomics the relay stores at request ends and idle points:
//! no lock on the hot path. The table itself is sharded and locked only to
//! register, unregister and list.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::classify::PinCause;
use crate::router::Listener;

const SHARDS: usize = 16;

/// Where a session's conversation stands, as `SHOW CLIENTS` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Between requests, outside a transaction.
    Idle = 0,
    /// Requests in flight.
    Active = 1,
    /// Inside a transaction, between its requests.
    InTransaction = 2,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::InTransaction => "in transaction",
        }
    }

    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Active,
            2 => ClientState::InTransaction,
            _ => ClientState::Idle,
        }
    }
}

/// One session. See the module doc.
#[derive(Debug)]
pub struct ClientRecord {
    pub id: u64,
    pub listener: Listener,
    pub peer: SocketAddr,
    pub connected_at: SystemTime,
    /// user, database and the other startup parameters (the login's own).
    params: Arc<[(String, String)]>,
    /// The pool key of the session's login (the login's own).
    pub login: Arc<str>,
    state: AtomicU8,
    /// Bit `i` set: the session is pinned by `PinCause::ALL[i]`.
    pins: AtomicU8,
    /// Backend ids (see [`Clients::server_name`]) + 1 of the connection
    /// requests go to now, and of the one the session keeps beside it; 0:
    /// none.
    server: AtomicU16,
    home: AtomicU16,
    /// Serials of those connections (0: none).
    server_serial: AtomicU64,
    home_serial: AtomicU64,
    to_primary: AtomicU64,
    to_replica: AtomicU64,
    /// Read-your-writes floor: the token LSN (0: none), and when a write
    /// last committed, as milliseconds after the table's epoch + 1 (0: none).
    floor_lsn: AtomicU64,
    floor_at: AtomicU64,
}

/// The connections a session holds, as [`ClientRecord::set_servers`] takes
/// them: (backend name, connection serial).
pub type Held<'a> = Option<(&'a str, u64)>;

impl ClientRecord {
    /// A record for a session that logged in with `params` (user, database,
    /// ...) and pool key `login`.
    pub fn new(
        id: u64,
        listener: Listener,
        peer: SocketAddr,
        params: Arc<[(String, String)]>,
        login: Arc<str>,
    ) -> ClientRecord {
        ClientRecord {
            id,
            listener,
            peer,
            connected_at: SystemTime::now(),
            params,
            login,
            state: AtomicU8::new(ClientState::Idle as u8),
            pins: AtomicU8::new(0),
            server: AtomicU16::new(0),
            home: AtomicU16::new(0),
            server_serial: AtomicU64::new(0),
            home_serial: AtomicU64::new(0),
            to_primary: AtomicU64::new(0),
            to_replica: AtomicU64::new(0),
            floor_lsn: AtomicU64::new(0),
            floor_at: AtomicU64::new(0),
        }
    }

    /// A startup parameter of the login (`user`, `database`,
    /// `application_name`, ...).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: ClientState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Requests sent so far to the primary and to replicas.
    pub fn set_counts(&self, to_primary: u64, to_replica: u64) {
        self.to_primary.store(to_primary, Ordering::Relaxed);
        self.to_replica.store(to_replica, Ordering::Relaxed);
    }

    pub fn counts(&self) -> (u64, u64) {
        (
            self.to_primary.load(Ordering::Relaxed),
            self.to_replica.load(Ordering::Relaxed),
        )
    }

    pub fn set_pins(&self, causes: impl Iterator<Item = PinCause>) {
        let bits = causes.fold(0u8, |bits, cause| {
            let i = PinCause::ALL.iter().position(|c| *c == cause).unwrap_or(0);
            bits | (1 << i)
        });
        self.pins.store(bits, Ordering::Relaxed);
    }

    /// What pins the session now.
    pub fn pins(&self) -> Vec<PinCause> {
        let bits = self.pins.load(Ordering::Relaxed);
        PinCause::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, c)| *c)
            .collect()
    }

    /// Records the connection requests go to (`active`) and the one the
    /// session keeps beside it (`home`). A name is looked up only when the
    /// serial changed.
    pub fn set_servers(&self, table: &Clients, active: Held<'_>, home: Held<'_>) {
        for ((slot, serial_slot), held) in [
            ((&self.server, &self.server_serial), active),
            ((&self.home, &self.home_serial), home),
        ] {
            let serial = held.map_or(0, |(_, s)| s);
            if serial_slot.load(Ordering::Relaxed) == serial && (serial != 0) {
                continue;
            }
            let id = held.map_or(0, |(name, _)| table.server_id(name));
            slot.store(id, Ordering::Relaxed);
            serial_slot.store(serial, Ordering::Relaxed);
        }
    }

    /// (backend id, serial) of the active connection, and of the kept one.
    pub fn servers(&self) -> [Option<(u16, u64)>; 2] {
        let read = |slot: &AtomicU16, serial: &AtomicU64| {
            let id = slot.load(Ordering::Relaxed);
            (id != 0).then(|| (id, serial.load(Ordering::Relaxed)))
        };
        [
            read(&self.server, &self.server_serial),
            read(&self.home, &self.home_serial),
        ]
    }

    /// Records the read-your-writes floor: a token LSN and when the
    /// session's last write committed.
    pub fn set_floor(&self, table: &Clients, lsn: Option<u64>, committed: Option<Instant>) {
        self.floor_lsn.store(lsn.unwrap_or(0), Ordering::Relaxed);
        let at = committed.map_or(0, |t| {
            t.saturating_duration_since(table.epoch).as_millis() as u64 + 1
        });
        self.floor_at.store(at, Ordering::Relaxed);
    }

    /// The floor: (token LSN, how long ago the last write committed).
    pub fn floor(&self, table: &Clients) -> (Option<u64>, Option<Duration>) {
        let lsn = self.floor_lsn.load(Ordering::Relaxed);
        let at = self.floor_at.load(Ordering::Relaxed);
        let ago = (at != 0).then(|| {
            let committed = table.epoch + Duration::from_millis(at - 1);
            committed.elapsed()
        });
        ((lsn != 0).then_some(lsn), ago)
    }
}

type Shard = Mutex<HashMap<u64, Arc<ClientRecord>>>;

/// See the module doc. One per proxy.
pub struct Clients {
    shards: Box<[Shard]>,
    epoch: Instant,
    /// Backend names seen on server connections, by id - 1. Only grows
    /// (by distinct names, which the configuration bounds).
    names: ArcSwap<Vec<Arc<str>>>,
    adding: Mutex<()>,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epoch: Instant::now(),
            names: ArcSwap::from_pointee(Vec::new()),
            adding: Mutex::new(()),
        }
    }
}

/// A session's place in the table; unregisters it when dropped.
pub struct Registered<'a> {
    table: &'a Clients,
    pub record: Arc<ClientRecord>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(self.table.shard(self.record.id)).remove(&self.record.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Clients {
    fn shard(&self, id: u64) -> &Shard {
        &self.shards[(id as usize) % SHARDS]
    }

    /// Adds a session until the returned guard drops.
    pub fn register(&self, record: ClientRecord) -> Registered<'_> {
        let record = Arc::new(record);
        lock(self.shard(record.id)).insert(record.id, Arc::clone(&record));
        Registered {
            table: self,
            record,
        }
    }

    /// Every session now, by id.
    pub fn list(&self) -> Vec<Arc<ClientRecord>> {
        let mut all: Vec<Arc<ClientRecord>> = self
            .shards
            .iter()
            .flat_map(|s| lock(s).values().cloned().collect::<Vec<_>>())
            .collect();
        all.sort_by_key(|r| r.id);
        all
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of backend `name` (1-based; 0 when the table is full).
    fn server_id(&self, name: &str) -> u16 {
        let find = |names: &[Arc<str>]| names.iter().position(|n| **n == *name);
        if let Some(i) = find(&self.names.load()) {
            return (i + 1) as u16;
        }
        let _adding = lock(&self.adding);
        let names = self.names.load_full();
        if let Some(i) = find(&names) {
            return (i + 1) as u16;
        }
        if names.len() >= usize::from(u16::MAX - 1) {
            return 0;
        }
        let mut more = (*names).clone();
        more.push(name.into());
        let id = more.len() as u16;
        self.names.store(Arc::new(more));
        id
    }

    /// The backend name of an id from [`ClientRecord::servers`].
    pub fn server_name(&self, id: u16) -> Option<Arc<str>> {
        self.names
            .load()
            .get(usize::from(id).checked_sub(1)?)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> ClientRecord {
        let params: Arc<[(String, String)]> = vec![
            ("user".to_owned(), "app".to_owned()),
            ("database".to_owned(), "app".to_owned()),
            ("application_name".to_owned(), "psql".to_owned()),
        ]
        .into();
        ClientRecord::new(
            id,
            Listener::ReadWrite,
            "127.0.0.1:5000".parse().unwrap(),
            params,
            "user=app\0".into(),
        )
    }

    #[test]
    fn a_record_stays_small() {
        // Every idle client costs this, next to its session's own future.
        assert!(
            std::mem::size_of::<ClientRecord>() <= 192,
            "{}",
            std::mem::size_of::<ClientRecord>()
        );
    }

    #[test]
    fn registration_lasts_as_long_as_its_guard() {
        let table = Clients::default();
        let a = table.register(record(1));
        let b = table.register(record(17));
        assert_eq!(
            table.list().iter().map(|r| r.id).collect::<Vec<_>>(),
            [1, 17]
        );
        drop(a);
        assert_eq!(table.len(), 1);
        assert_eq!(b.record.param("application_name"), Some("psql"));
        drop(b);
        assert!(table.is_empty());
    }

    #[test]
    fn mutable_fields_read_back() {
        let table = Clients::default();
        let r = table.register(record(1));
        let rec = &r.record;
        assert_eq!(rec.state(), ClientState::Idle);
        rec.set_state(ClientState::InTransaction);
        assert_eq!(rec.state().as_str(), "in transaction");
        rec.set_counts(3, 4);
        assert_eq!(rec.counts(), (3, 4));
        rec.set_pins([PinCause::Listen, PinCause::Other].into_iter());
        assert_eq!(rec.pins(), [PinCause::Listen, PinCause::Other]);
        rec.set_servers(&table, Some(("pg2", 9)), Some(("pg1", 3)));
        let [active, home] = rec.servers();
        let (id, serial) = active.unwrap();
        assert_eq!((&*table.server_name(id).unwrap(), serial), ("pg2", 9));
        assert_eq!(&*table.server_name(home.unwrap().0).unwrap(), "pg1");
        rec.set_servers(&table, Some(("pg1", 4)), None);
        assert_eq!(
            rec.servers()[0].unwrap().0,
            home.unwrap().0,
            "ids are stable"
        );
        assert_eq!(rec.servers()[1], None);
        assert_eq!(rec.floor(&table), (None, None));
        rec.set_floor(&table, Some(42), Some(Instant::now()));
        let (lsn, ago) = rec.floor(&table);
        assert_eq!(lsn, Some(42));
        assert!(ago.unwrap() < Duration::from_secs(5));
    }
}
