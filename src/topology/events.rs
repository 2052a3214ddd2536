//! What changed in the topology, for people: primary changes, backends going
//! down and coming back, replicas leaving and rejoining read rotation (with
//! why), drains by an operator and configuration reloads. A bounded ring
//! ([`KEPT`] events), served as JSON at `/events` and shown on the status
//! page. [`diff`] is pure: it compares two snapshots.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Role, Snapshot};

/// Events kept; older ones are dropped.
pub const KEPT: usize = 100;

/// The reason a drained backend gives for being out of rotation.
pub const DRAINED: &str = "drained by an operator";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A (new) primary was elected.
    Primary,
    /// No backend can be told to be the primary.
    NoPrimary,
    /// A backend answers probes again.
    Up,
    /// A backend failed `fall` probes in a row.
    Down,
    /// A backend left read rotation.
    LeftRotation,
    /// A backend rejoined read rotation.
    JoinedRotation,
    /// An operator took a backend out of rotation (`DRAIN`).
    Drained,
    /// An operator let it back (`UNDRAIN`).
    Undrained,
    /// A configuration was applied.
    Reload,
}

/// One event (also its `/events` JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Increases by one per event, from 1.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// What it means, in words (why a backend left rotation, ...).
    pub detail: String,
}

/// An event before it is numbered and dated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: EventKind,
    pub backend: Option<String>,
    pub detail: String,
}

impl Change {
    pub fn new(kind: EventKind, backend: Option<&str>, detail: impl Into<String>) -> Change {
        Change {
            kind,
            backend: backend.map(str::to_owned),
            detail: detail.into(),
        }
    }
}

/// The ring. Not synchronised: the topology keeps it under a lock.
#[derive(Debug, Default)]
pub struct Events {
    ring: VecDeque<Event>,
    next_seq: u64,
}

impl Events {
    /// Numbers, dates and keeps `changes`, dropping the oldest past [`KEPT`].
    pub fn record(&mut self, changes: impl IntoIterator<Item = Change>) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for change in changes {
            self.next_seq += 1;
            if self.ring.len() == KEPT {
                self.ring.pop_front();
            }
            self.ring.push_back(Event {
                seq: self.next_seq,
                at_ms,
                kind: change.kind,
                backend: change.backend,
                detail: change.detail,
            });
        }
    }

    /// The last `n` events, oldest first.
    pub fn last(&self, n: usize) -> Vec<Event> {
        let skip = self.ring.len().saturating_sub(n);
        self.ring.iter().skip(skip).cloned().collect()
    }
}

/// What changed from `old` to `new`, backends matched by name. A backend
/// whose `drained` flag changed reports that (not the rotation change it
/// brings).
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    let primary_of = |s: &Snapshot| s.primary.map(|p| s.backends[p].name.clone());
    let (was, is) = (primary_of(old), primary_of(new));
    if was != is {
        match (&is, &was) {
            (Some(p), Some(w)) => out.push(Change::new(
                EventKind::Primary,
                Some(p),
                format!("{p} is the primary (was {w})"),
            )),
            (Some(p), None) => out.push(Change::new(
                EventKind::Primary,
                Some(p),
                format!("{p} is the primary"),
            )),
            (None, _) if new.primaries_seen > 1 => out.push(Change::new(
                EventKind::NoPrimary,
                None,
                format!(
                    "{} backends claim to be primary on the same timeline; writes are refused",
                    new.primaries_seen
                ),
            )),
            (None, Some(w)) => out.push(Change::new(
                EventKind::NoPrimary,
                None,
                format!("no primary (was {w})"),
            )),
            (None, None) => {}
        }
    }
    for b in &new.backends {
        let before = old.backends.iter().find(|o| o.name == b.name);
        let (was_healthy, was_in, was_drained) = before.map_or((false, false, false), |o| {
            (o.healthy, o.in_rotation, o.drained)
        });
        let name = Some(b.name.as_str());
        if b.healthy != was_healthy {
            if b.healthy {
                let role = match b.role {
                    Role::Primary => "a primary",
                    Role::Replica => "a replica",
                    Role::Unknown => "a backend",
                };
                out.push(Change::new(EventKind::Up, name, format!("up as {role}")));
            } else if before.is_some() {
                let why = b.last_error.as_deref().unwrap_or("probes fail");
                out.push(Change::new(EventKind::Down, name, format!("down: {why}")));
            }
        }
        if b.drained != was_drained {
            if b.drained {
                out.push(Change::new(EventKind::Drained, name, DRAINED));
            } else {
                let detail = if b.in_rotation {
                    "undrained by an operator; back in read rotation".to_owned()
                } else {
                    format!(
                        "undrained by an operator; still out of rotation: {}",
                        b.reason.as_deref().unwrap_or("unknown")
                    )
                };
                out.push(Change::new(EventKind::Undrained, name, detail));
            }
        } else if b.in_rotation != was_in {
            if b.in_rotation {
                out.push(Change::new(
                    EventKind::JoinedRotation,
                    name,
                    "joined read rotation",
                ));
            } else if before.is_some() {
                let why = b.reason.as_deref().unwrap_or("unknown");
                out.push(Change::new(
                    EventKind::LeftRotation,
                    name,
                    format!("left read rotation: {why}"),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::BackendStatus;

    fn backend(name: &str, role: Role, in_rotation: bool) -> BackendStatus {
        BackendStatus {
            name: name.into(),
            address: format!("{name}:5432"),
            weight: 1,
            role,
            healthy: role != Role::Unknown,
            in_rotation,
            drained: false,
            lag_bytes: None,
            lag_ms: None,
            replay_lsn: None,
            current_lsn: None,
            timeline: None,
            reason: (!in_rotation).then(|| "replay is paused with WAL waiting".into()),
            last_error: None,
        }
    }

    fn snapshot(backends: Vec<BackendStatus>, primary: Option<usize>) -> Snapshot {
        Snapshot {
            primaries_seen: usize::from(primary.is_some()),
            backends,
            primary,
            ..Snapshot::default()
        }
    }

    #[test]
    fn rotation_and_primary_changes_are_events_with_their_reasons() {
        let old = snapshot(
            vec![
                backend("pg1", Role::Primary, false),
                backend("pg2", Role::Replica, true),
            ],
            Some(0),
        );
        let mut new = snapshot(
            vec![
                backend("pg1", Role::Primary, false),
                backend("pg2", Role::Replica, false),
            ],
            Some(0),
        );
        assert_eq!(
            diff(&old, &new),
            [Change::new(
                EventKind::LeftRotation,
                Some("pg2"),
                "left read rotation: replay is paused with WAL waiting"
            )]
        );
        assert_eq!(
            diff(&new, &old),
            [Change::new(
                EventKind::JoinedRotation,
                Some("pg2"),
                "joined read rotation"
            )]
        );
        new.backends[1].drained = true;
        new.backends[1].reason = Some(DRAINED.into());
        assert_eq!(diff(&old, &new)[0].kind, EventKind::Drained);
        let promoted = snapshot(
            vec![
                backend("pg1", Role::Unknown, false),
                backend("pg2", Role::Primary, false),
            ],
            Some(1),
        );
        let changes = diff(&old, &promoted);
        assert_eq!(
            changes[0],
            Change::new(
                EventKind::Primary,
                Some("pg2"),
                "pg2 is the primary (was pg1)"
            )
        );
        assert!(changes.iter().any(|c| c.kind == EventKind::Down));
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn the_ring_is_bounded_and_numbered() {
        let mut events = Events::default();
        events.record((0..KEPT + 5).map(|i| Change::new(EventKind::Reload, None, i.to_string())));
        let all = events.last(usize::MAX);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].seq, 6);
        assert_eq!(all.last().unwrap().seq, (KEPT + 5) as u64);
        let last = events.last(20);
        assert_eq!(last.len(), 20);
        assert_eq!(last[19].detail, (KEPT + 4).to_string());
    }
}
