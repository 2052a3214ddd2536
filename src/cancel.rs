//! Cancel keys: pgsplit gives each client its own BackendKeyData and keeps, per
//! client, where its current server connection is and that server's key, so a
//! CancelRequest reaches the query it means.
//!
//! The registry is sharded by pid so registrations from many sessions do not
//! contend on one lock; each session updates its own slot without touching the
//! registry at all. No lock here is held across `.await`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::encode;
use crate::protocol::startup::CancelKey;

const SHARDS: usize = 16;

/// Where to send a cancel for one client's running query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub key: CancelKey,
}

/// One client's entry.
#[derive(Debug)]
pub struct CancelSlot {
    key: CancelKey,
    target: Mutex<Option<CancelTarget>>,
}

impl CancelSlot {
    /// Points the client's key at a server connection (or at none).
    pub fn set(&self, target: Option<CancelTarget>) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    pub fn get(&self) -> Option<CancelTarget> {
        *self.target.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
pub struct CancelRegistry {
    shards: [Mutex<HashMap<i32, Arc<CancelSlot>>>; SHARDS],
}

/// A registered key; unregisters itself when dropped.
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    slot: Arc<CancelSlot>,
}

impl CancelHandle {
    pub fn key(&self) -> CancelKey {
        self.slot.key
    }
    pub fn slot(&self) -> &CancelSlot {
        &self.slot
    }
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        let key = self.slot.key;
        self.registry
            .shard(key.pid)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key.pid);
    }
}

impl CancelRegistry {
    fn shard(&self, pid: i32) -> &Mutex<HashMap<i32, Arc<CancelSlot>>> {
        &self.shards[pid as usize % SHARDS]
    }

    /// Issues a fresh random key for a new client.
    pub fn register(self: &Arc<Self>) -> CancelHandle {
        loop {
            // Positive pids, as real servers have; secrets are any i32.
            let pid = (rand::random::<u32>() >> 1) as i32;
            let key = CancelKey {
                pid,
                secret: rand::random(),
            };
            let mut shard = self.shard(pid).lock().unwrap_or_else(|p| p.into_inner());
            if pid == 0 || shard.contains_key(&pid) {
                continue;
            }
            let slot = Arc::new(CancelSlot {
                key,
                target: Mutex::new(None),
            });
            shard.insert(pid, slot.clone());
            return CancelHandle {
                registry: self.clone(),
                slot,
            };
        }
    }

    /// The target for a client's key, if the key is known and its secret matches.
    pub fn lookup(&self, key: CancelKey) -> Option<CancelTarget> {
        let slot = self
            .shard(key.pid)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key.pid)
            .cloned()?;
        if slot.key.secret != key.secret {
            return None;
        }
        slot.get()
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends a CancelRequest to a server and waits (briefly) for it to hang up,
/// which it does once the request is processed.
pub async fn send_cancel(target: CancelTarget, wait: Duration) -> std::io::Result<()> {
    let mut stream = tokio::time::timeout(wait, TcpStream::connect(target.addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream
        .write_all(&encode::cancel_request(target.key))
        .await?;
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(wait, stream.read(&mut sink)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_targets_and_unregister() {
        let reg = Arc::new(CancelRegistry::default());
        let a = reg.register();
        let b = reg.register();
        assert_ne!(a.key(), b.key());
        let t = CancelTarget {
            addr: "127.0.0.1:5432".parse().unwrap(),
            key: CancelKey { pid: 42, secret: 7 },
        };
        a.slot().set(Some(t));
        assert_eq!(reg.lookup(a.key()), Some(t));
        assert_eq!(reg.lookup(b.key()), None);
        let wrong = CancelKey {
            secret: a.key().secret.wrapping_add(1),
            ..a.key()
        };
        assert_eq!(reg.lookup(wrong), None);
        let key = a.key();
        drop(a);
        assert_eq!(reg.lookup(key), None);
        assert_eq!(reg.len(), 1);
    }
}
