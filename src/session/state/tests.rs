//! The session's bookkeeping, without a server: each test runs simple
//! queries through `send` and `on_ready` as the relay does, saying how each
//! request's ReadyForQuery ended it, and looks at what the session holds.
//! `settings`: committed settings, their fingerprint and sync SQL, staging
//! through transactions, savepoints and errors, isolation, pgsplit's own
//! settings. `pins`: what pins and what provably releases each pin, and
//! which reads may see temp objects. `statements`: SQL and protocol-level
//! prepared statements and what SQL a batch runs.

use super::*;
use crate::classify::{Classifier, Verdict};
use crate::pool::statements::Registry;
use crate::session::batch::Batch;
use crate::topology::Lsn;
use TxStatus::{Failed, Idle, InBlock};

/// One request and how its ReadyForQuery ended it.
#[derive(Debug, Clone, Copy)]
struct Step {
    sql: &'static str,
    after: TxStatus,
    error: bool,
}

/// A request that ends idle, without an error.
fn ok(sql: &'static str) -> Step {
    Step {
        sql,
        after: Idle,
        error: false,
    }
}

/// A request that leaves a transaction open.
fn open(sql: &'static str) -> Step {
    Step {
        sql,
        after: InBlock,
        error: false,
    }
}

/// A request that fails outside a transaction block.
fn fails(sql: &'static str) -> Step {
    Step {
        sql,
        after: Idle,
        error: true,
    }
}

/// A request that fails inside a transaction block.
fn aborts(sql: &'static str) -> Step {
    Step {
        sql,
        after: Failed,
        error: true,
    }
}

/// A session, and the transaction status its last request left.
struct Session {
    state: SessionState,
    tx: TxStatus,
    classifier: Classifier,
}

impl Session {
    fn new() -> Session {
        Session {
            state: SessionState::default(),
            tx: Idle,
            classifier: Classifier::new(&[], &[], 0),
        }
    }

    fn after(steps: &[Step]) -> Session {
        let mut s = Session::new();
        for step in steps {
            s.run(*step);
        }
        s
    }

    fn verdict(&self, sql: &str) -> Arc<Verdict> {
        Arc::new(self.classifier.classify_uncached(sql))
    }

    /// Sends one simple Query and applies its ReadyForQuery.
    fn run(&mut self, step: Step) -> (Sent, Option<PinCause>) {
        let verdict = self.verdict(step.sql);
        let mut staged = Staged::default();
        let sent = self.state.send([&verdict], &mut staged);
        let pin = self.state.on_ready(staged, self.tx, step.after, step.error);
        self.tx = step.after;
        (sent, pin)
    }

    /// The committed settings, by the statements that set them.
    fn settings(&self) -> Vec<&str> {
        self.state
            .settings
            .entries
            .iter()
            .map(|(_, sql)| &**sql)
            .collect()
    }

    fn causes(&self) -> Vec<PinCause> {
        self.state.pins.causes().collect()
    }
}

/// Asserts that every case holds, reporting all failures at once.
fn check(failures: Vec<String>, cases: usize) {
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

mod pins;
mod settings;
mod statements;
