//! The router, table-driven, without a cluster: each case is a world (the
//! topology, the session's state, what the catalog and the position service
//! know, where the conversation stands), a batch of client messages, and
//! where it must go.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::classify::{Classifier, PinCause};
use crate::config::{ConsistencyMode, NoReplica};
use crate::consistency::{Check, Floor};
use crate::pool::statements::Registry;
use crate::protocol::fixtures::*;
use crate::session::batch::Batch;
use crate::session::state::{Prepared, SessionState, Unnamed};
use crate::topology::{BackendStatus, Lsn, Role, Snapshot};

/// Backend indexes of the test topology.
const PG1: usize = 0;
const PG2: usize = 1;
const PG3: usize = 2;

fn backend(name: &str, role: Role, in_rotation: bool) -> BackendStatus {
    BackendStatus {
        name: name.into(),
        address: format!("{name}:5432"),
        weight: 1,
        role,
        healthy: true,
        in_rotation,
        drained: false,
        lag_bytes: None,
        lag_ms: None,
        replay_lsn: None,
        current_lsn: None,
        timeline: Some(1),
        reason: None,
        last_error: None,
    }
}

fn snapshot(replicas: &[usize]) -> Snapshot {
    Snapshot {
        generation: 1,
        routing_epoch: 1,
        backends: vec![
            backend("pg1", Role::Primary, true),
            backend("pg2", Role::Replica, replicas.contains(&PG2)),
            backend("pg3", Role::Replica, replicas.contains(&PG3)),
        ],
        primary: Some(PG1),
        primaries_seen: 1,
        read_schedule: replicas.to_vec(),
        complete: true,
    }
}

#[derive(Default)]
struct FakeCatalog {
    functions: HashMap<&'static str, FunctionInfo>,
    unlogged: HashMap<&'static str, bool>,
    oids: HashMap<u32, bool>,
}

impl Catalog for FakeCatalog {
    fn function(&self, name: &str) -> Option<FunctionInfo> {
        self.functions.get(name).copied()
    }
    fn relation_unlogged(&self, name: &str) -> Option<bool> {
        // Names the tests do not mention are ordinary tables.
        Some(self.unlogged.get(name).copied().unwrap_or(false))
    }
    fn function_oid(&self, oid: u32) -> Option<bool> {
        self.oids.get(&oid).copied()
    }
}

#[derive(Default)]
struct FakePositions {
    checks: HashMap<usize, Check>,
}

impl Positions for FakePositions {
    fn check(&self, backend: usize, floor: &Floor) -> Check {
        if floor.is_empty() {
            return Check::Has;
        }
        self.checks.get(&backend).copied().unwrap_or(Check::Unknown)
    }
}

/// Everything a case sets up.
struct World {
    listener: Listener,
    snapshot: Snapshot,
    session: SessionState,
    catalog: FakeCatalog,
    positions: FakePositions,
    policy: Policy,
    flow: Flow,
    ticket: usize,
    preferred: Option<usize>,
    retry: bool,
    waited: bool,
    looked_up: bool,
    home: Option<On>,
    known_parse: bool,
    now: Instant,
    classifier: Classifier,
    registry: Registry,
}

impl World {
    fn rw() -> World {
        World {
            listener: Listener::ReadWrite,
            snapshot: snapshot(&[PG2, PG3]),
            session: SessionState::default(),
            catalog: FakeCatalog::default(),
            positions: FakePositions::default(),
            policy: Policy {
                consistency: ConsistencyMode::Lsn,
                window: Duration::from_secs(5),
                max_wait: Duration::ZERO,
                no_replica: NoReplica::Primary,
            },
            flow: Flow::Idle,
            ticket: 0,
            preferred: None,
            retry: false,
            waited: false,
            looked_up: false,
            home: None,
            known_parse: false,
            now: Instant::now(),
            classifier: Classifier::new(&["app_read".into()], &["app_write".into()], 0),
            registry: Registry::default(),
        }
    }

    fn ro() -> World {
        World {
            listener: Listener::ReadOnly,
            ..World::rw()
        }
    }

    fn verdict(&self, sql: &str) -> Arc<crate::classify::Verdict> {
        Arc::new(self.classifier.classify_uncached(sql))
    }

    /// The session has a protocol-level statement `name` for `sql`.
    fn prepared(mut self, name: &str, sql: &str) -> World {
        let key = self.registry.intern(format!("{sql}\0\0\0").as_bytes());
        let verdict = self.verdict(sql);
        self.session
            .statements
            .named
            .insert(name.as_bytes().into(), Arc::new(Prepared { key, verdict }));
        self
    }

    /// The session's unnamed statement (parsed in an earlier batch).
    fn unnamed(mut self, sql: &str) -> World {
        let verdict = self.verdict(sql);
        self.session.statements.unnamed = Some(Unnamed {
            seq: 1,
            parse: parse("", sql).into_boxed_slice(),
            verdict,
        });
        self
    }

    /// Runs SQL through the session's own bookkeeping, as if it committed.
    fn did(mut self, sql: &str) -> World {
        let verdict = self.verdict(sql);
        let mut staged = crate::session::state::Staged::default();
        self.session.send([&verdict], &mut staged);
        self.session.on_ready(
            staged,
            crate::session::state::TxStatus::Idle,
            crate::session::state::TxStatus::Idle,
            false,
        );
        self
    }

    fn pinned(mut self, cause: PinCause) -> World {
        self.session.pin(cause);
        self
    }

    /// Servers have parsed the statement of the batch's Parse.
    fn known_parse(mut self) -> World {
        self.known_parse = true;
        self
    }

    fn home(mut self, on: On) -> World {
        self.home = Some(on);
        self
    }

    fn flow(mut self, flow: Flow) -> World {
        self.flow = flow;
        self
    }

    fn function(mut self, name: &'static str, read: bool, sets_config: bool) -> World {
        self.catalog
            .functions
            .insert(name, FunctionInfo { read, sets_config });
        self
    }

    fn unlogged(mut self, name: &'static str) -> World {
        self.catalog.unlogged.insert(name, true);
        self
    }

    /// The session committed a write a moment ago.
    fn wrote(mut self) -> World {
        self.session.floor.committed_before = Some(self.now);
        self.session.floor.wrote_at = Some(self.now);
        self
    }

    fn check(mut self, backend: usize, check: Check) -> World {
        self.positions.checks.insert(backend, check);
        self
    }

    fn mode(mut self, mode: ConsistencyMode) -> World {
        self.policy.consistency = mode;
        self
    }

    fn replicas(mut self, replicas: &[usize]) -> World {
        self.snapshot = snapshot(replicas);
        self
    }

    fn route(&self, msgs: &[Vec<u8>]) -> Decision {
        let bytes: Vec<u8> = msgs.concat();
        let mut batch = Batch::default();
        let framed = batch
            .frame(&bytes, 1 << 20, 1 << 20, |sql| {
                Arc::new(
                    self.classifier
                        .classify_uncached(std::str::from_utf8(sql).unwrap()),
                )
            })
            .expect("valid messages");
        assert!(framed, "a whole batch");
        assert_eq!(batch.len, bytes.len(), "one batch");
        route(&Input {
            listener: self.listener,
            batch: &batch,
            bytes: &bytes,
            session: &self.session,
            flow: self.flow,
            snapshot: &self.snapshot,
            catalog: &self.catalog,
            positions: &self.positions,
            policy: self.policy,
            ticket: self.ticket,
            preferred: self.preferred,
            now: self.now,
            retry: self.retry,
            waited: self.waited,
            looked_up: self.looked_up,
            home: self.home,
            known_parse: self.known_parse,
        })
    }
}

fn fcall(oid: u32) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    msg(b'F', &body)
}

/// An extended-protocol run of `sql` through the unnamed statement.
fn ext(sql: &str) -> Vec<Vec<u8>> {
    vec![parse("", sql), bind(""), execute(), sync()]
}

/// What a case expects.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// The primary, with this reason label.
    Primary(&'static str),
    /// This replica, with this reason label.
    Replica(usize, &'static str),
    /// Any replica.
    AnyReplica,
    Current(&'static str),
    ReadOnlyPrimary,
    Hold,
    Lookup,
    Wait,
    Settle,
    /// An answer pgsplit gives itself, by kind.
    Answer(&'static str),
    /// A read-only port refusal.
    Refused,
}

fn answer_kind(a: &Answer) -> &'static str {
    match a {
        Answer::Begin => "begin",
        Answer::EndDeferred { commit: true } => "commit",
        Answer::EndDeferred { commit: false } => "rollback",
        Answer::PgsplitSetting => "setting",
        Answer::BadSetting => "bad_setting",
        Answer::Deallocate { .. } => "deallocate",
        Answer::NoSuchStatement(_) => "no_such_statement",
        Answer::TransactionAborted => "aborted",
        Answer::DiscardAll => "discard_all",
        Answer::Refuse(_) => "refused",
        Answer::NoReplica => "no_replica",
        Answer::Parse => "parse",
    }
}

fn matches(decision: &Decision, want: Want) -> bool {
    match (decision, want) {
        (Decision::Send(r), Want::Primary(label)) => {
            r.to == To::Primary && r.reason.label() == label
        }
        (Decision::Send(r), Want::Replica(i, label)) => {
            r.to == To::Replica(i) && r.reason.label() == label
        }
        (Decision::Send(r), Want::AnyReplica) => matches!(r.to, To::Replica(_)),
        (Decision::Send(r), Want::Current(label)) => {
            r.to == To::Current && r.reason.label() == label
        }
        (Decision::Send(r), Want::ReadOnlyPrimary) => r.to == To::ReadOnlyPrimary,
        (Decision::Hold, Want::Hold) => true,
        (Decision::Lookup(_), Want::Lookup) => true,
        (Decision::WaitPositions, Want::Wait) => true,
        (Decision::Settle, Want::Settle) => true,
        (Decision::Answer(Answer::Refuse(_)), Want::Refused) => true,
        (Decision::Answer(a), Want::Answer(kind)) => answer_kind(a) == kind,
        _ => false,
    }
}

/// Runs a table: every case, all failures reported at once.
fn run(cases: Vec<(&str, World, Vec<Vec<u8>>, Want)>) {
    let mut failures = Vec::new();
    let n = cases.len();
    for (name, world, msgs, want) in cases {
        let decision = world.route(&msgs);
        if !matches(&decision, want) {
            failures.push(format!("{name}: want {want:?}, got {decision:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

mod read_only;
mod read_write;
mod read_write_lookups;
mod sessions;
