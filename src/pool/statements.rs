//! Protocol-level prepared statements shared per server connection.
//!
//! A client's named statement is identified by what makes it that statement:
//! its query text and parameter types (the Parse body after the name). The
//! [`Registry`] interns each distinct body once, process-wide, and gives it
//! an id; on a server connection the statement is prepared under the name
//! `pgsplit_<id>`, at most once, whichever session asked first. Each server
//! connection keeps a bounded [`ServerStatements`] (least recently used
//! first out, closed on the server when evicted). Sessions map their own
//! client names to keys (see `session::state`), so two sessions may use the
//! same name for different statements, or different names for one.
//!
//! SQL-level `PREPARE name` statements keep the client's name on the server;
//! a connection remembers which text each such name holds there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// What makes two prepared statements the same: the Parse body after the
/// name (query text, its NUL, parameter count and types).
#[derive(Debug)]
pub struct StatementKey {
    pub id: u64,
    pub body: Box<[u8]>,
    /// A server has answered its Parse with ParseComplete: the text parses
    /// (pgsplit may then answer a lone Parse of it without a server).
    pub proven: AtomicBool,
}

impl StatementKey {
    /// The server-side name, written into `out` (no allocation).
    pub fn write_name(&self, out: &mut bytes::BytesMut) {
        write_server_name(self.id, out);
    }

    /// The server-side name as a string (for logs and tests).
    pub fn server_name(&self) -> String {
        format!("{NAME_PREFIX}{}", self.id)
    }
}

/// The longest server-side name: the prefix and 20 digits.
pub const MAX_NAME_LEN: usize = NAME_PREFIX.len() + 20;

/// Statement `id`'s server-side name in a buffer of its own (on the stack):
/// the buffer and the name's length.
pub fn server_name(id: u64) -> ([u8; MAX_NAME_LEN], usize) {
    let mut buf = [0u8; MAX_NAME_LEN];
    let mut rest = &mut buf[..];
    write_server_name(id, &mut rest);
    let len = MAX_NAME_LEN - rest.len();
    (buf, len)
}

/// Server-side statement names are this prefix and a number.
pub const NAME_PREFIX: &str = "pgsplit_";

/// Writes `pgsplit_<id>` into `out`.
pub fn write_server_name(id: u64, out: &mut impl bytes::BufMut) {
    out.put_slice(NAME_PREFIX.as_bytes());
    let mut digits = [0u8; 20];
    let mut n = id;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Interns statement bodies process-wide. Entries live while a session or a
/// server connection holds the key; dead ones are swept as the map grows.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    map: HashMap<Box<[u8]>, Weak<StatementKey>>,
    next: u64,
    /// Sweep dead entries when the map reaches this size.
    sweep_at: usize,
}

impl Registry {
    /// The key for `body`, the same one every time while it lives.
    pub fn intern(&self, body: &[u8]) -> Arc<StatementKey> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = inner.map.get(body).and_then(Weak::upgrade) {
            return key;
        }
        inner.next += 1;
        let key = Arc::new(StatementKey {
            id: inner.next,
            body: body.into(),
            proven: AtomicBool::new(false),
        });
        inner.map.insert(body.into(), Arc::downgrade(&key));
        if inner.map.len() >= inner.sweep_at {
            inner.map.retain(|_, weak| weak.strong_count() > 0);
            inner.sweep_at = (inner.map.len() * 2).max(1024);
        }
        key
    }

    /// Whether `body` is a statement a server has parsed (and that is still
    /// held somewhere). Allocates nothing.
    pub fn proven(&self, body: &[u8]) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .map
            .get(body)
            .and_then(Weak::upgrade)
            .is_some_and(|key| key.proven.load(Ordering::Relaxed))
    }

    /// Statements alive (held by a session or a server connection).
    pub fn live(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.map.values().filter(|w| w.strong_count() > 0).count()
    }
}

/// A SQL-level prepared statement name on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlName {
    /// Holds the statement whose PREPARE text hashes to this.
    Holds(u64),
    /// A request that prepared or deallocated it failed: it may or may not
    /// exist.
    Unknown,
}

/// The statements one server connection holds.
#[derive(Debug, Default)]
pub struct ServerStatements {
    /// Prepared protocol-level statements by id, with their last use.
    held: HashMap<u64, (Arc<StatementKey>, u64)>,
    tick: u64,
    /// SQL `PREPARE`d names.
    pub sql: HashMap<Box<str>, SqlName>,
    /// Who last parsed the unnamed statement here: (session id, its parse
    /// count). Any other unnamed Parse or simple Query replaces it.
    pub unnamed: Option<(u64, u64)>,
}

impl ServerStatements {
    /// Whether statement `id` is prepared here; marks it used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self.held.get_mut(&id) {
            Some((_, used)) => {
                *used = tick;
                true
            }
            None => false,
        }
    }

    /// Records `key` as prepared here (its Parse is on its way). When more
    /// than `max` are held, returns the least recently used one (other than
    /// those in `keep`), already forgotten: the caller must Close it on the
    /// server.
    pub fn add(&mut self, key: &Arc<StatementKey>, max: usize, keep: &[u64]) -> Option<u64> {
        self.tick += 1;
        self.held.insert(key.id, (Arc::clone(key), self.tick));
        if self.held.len() <= max.max(1) {
            return None;
        }
        let victim = self
            .held
            .iter()
            .filter(|(id, _)| !keep.contains(id))
            .min_by_key(|(_, (_, used))| *used)
            .map(|(id, _)| *id)?;
        self.held.remove(&victim);
        Some(victim)
    }

    /// The server answered statement `id`'s Parse with ParseComplete.
    pub fn prove(&mut self, id: u64) {
        if let Some((key, _)) = self.held.get(&id) {
            key.proven.store(true, Ordering::Relaxed);
        }
    }

    /// Forgets `id` (its Parse failed, or it was closed).
    pub fn remove(&mut self, id: u64) {
        self.held.remove(&id);
    }

    /// Protocol-level statements held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Everything is gone from the server (DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.held.clear();
        self.sql.clear();
        self.unnamed = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_body_is_one_key_while_it_lives() {
        let r = Registry::default();
        let a = r.intern(b"SELECT 1\0\0\0");
        let b = r.intern(b"SELECT 1\0\0\0");
        let c = r.intern(b"SELECT 2\0\0\0");
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(a.id, c.id);
        assert_eq!(r.live(), 2);
        let id = a.id;
        drop((a, b));
        assert_eq!(r.live(), 1);
        // Gone: a new id, so no connection mistakes it for the old one.
        assert_ne!(r.intern(b"SELECT 1\0\0\0").id, id);
    }

    #[test]
    fn server_names_are_written_without_allocating() {
        let mut out = bytes::BytesMut::with_capacity(32);
        write_server_name(0, &mut out);
        out.extend_from_slice(b",");
        write_server_name(1234567, &mut out);
        assert_eq!(&out[..], b"pgsplit_0,pgsplit_1234567");
        let (buf, len) = server_name(u64::MAX);
        assert_eq!(&buf[..len], b"pgsplit_18446744073709551615");
    }

    #[test]
    fn least_recently_used_goes_first_but_never_one_in_use() {
        let r = Registry::default();
        let keys: Vec<_> = (0..4)
            .map(|i| r.intern(format!("SELECT {i}\0\0\0").as_bytes()))
            .collect();
        let mut s = ServerStatements::default();
        for k in &keys[..3] {
            assert_eq!(s.add(k, 3, &[]), None);
        }
        assert!(s.touch(keys[0].id));
        // keys[1] is the least recently used; keys[2] is kept.
        assert_eq!(s.add(&keys[3], 3, &[keys[1].id]), Some(keys[2].id));
        assert!(!s.touch(keys[2].id));
        assert_eq!(s.len(), 3);
        s.clear();
        assert!(s.is_empty());
    }
}
