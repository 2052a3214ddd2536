//! Why a request went where it went: the `reason` label of
//! `pgsplit_statements_total`, and what the relay needs to know of it.

use crate::classify::{PinCause, Why};

/// How read-your-writes settled a read that had a floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RywOutcome {
    /// A replica was already known to have it.
    Known,
    /// A replica had it after waiting for fresher positions.
    Waited,
    /// The primary: no replica was known to have it yet.
    Unknown,
    /// The primary: every replica was known to be behind.
    Behind,
    /// The primary: window mode, the session wrote too recently.
    Window,
}

impl RywOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RywOutcome::Known => "known",
            RywOutcome::Waited => "waited",
            RywOutcome::Unknown => "primary_unknown",
            RywOutcome::Behind => "primary_behind",
            RywOutcome::Window => "primary_window",
        }
    }

    /// Every outcome, for metric setup.
    pub const ALL: [RywOutcome; 5] = [
        RywOutcome::Known,
        RywOutcome::Waited,
        RywOutcome::Unknown,
        RywOutcome::Behind,
        RywOutcome::Window,
    ];
}

/// See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A proven read, on a replica.
    Read,
    /// A statement that writes or may (by its kind).
    Statement(Why),
    /// Inside a transaction, or the statement that starts one.
    Transaction,
    /// More of an extended batch (or COPY data) already on its server.
    Batch,
    /// An extended batch past the high-water mark before its Sync.
    LargeBatch,
    /// A read kept home by what pins the session.
    Pinned(PinCause),
    /// `/* pgsplit:primary */` or `pgsplit.route = primary`.
    Hint,
    /// SERIALIZABLE, which a standby refuses.
    Serializable,
    /// A read about the server itself or a node's own state.
    PrimaryOnly,
    /// A read of an unlogged relation, which a standby cannot read.
    Unlogged,
    /// No replica in rotation.
    NoReplica,
    /// Read-your-writes kept the read on the primary.
    Consistency(RywOutcome),
    /// Refused by a replica with a standby-only error: run again here.
    Retried,
    /// A read calling a function not proven read-only.
    Function,
    /// A fastpath FunctionCall.
    FunctionCall,
    /// The read-only port.
    Listener,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Read => "read",
            Reason::Statement(why) => why.label(),
            Reason::Transaction => "transaction",
            Reason::Batch => "batch",
            Reason::LargeBatch => "large_batch",
            Reason::Pinned(_) => "pinned",
            Reason::Hint => "hint",
            Reason::Serializable => "serializable",
            Reason::PrimaryOnly => "primary_only",
            Reason::Unlogged => "unlogged",
            Reason::NoReplica => "no_replica",
            Reason::Consistency(_) => "consistency",
            Reason::Retried => "retried",
            Reason::Function => "function",
            Reason::FunctionCall => "function_call",
            Reason::Listener => "listener",
        }
    }

    /// Whether a request sent to the primary for this reason may have
    /// written (its commit then sets the session's read-your-writes floor).
    /// Reads kept on the primary for other reasons did not.
    pub fn may_write(self) -> bool {
        match self {
            Reason::Statement(why) => !matches!(
                why,
                Why::Read
                    | Why::Explain
                    | Why::Show
                    | Why::CopyTo
                    | Why::Cursor
                    | Why::Prepare
                    | Why::Set
                    | Why::Empty
                    | Why::Pgsplit
            ),
            Reason::Transaction
            | Reason::Batch
            | Reason::LargeBatch
            | Reason::Retried
            | Reason::Function
            | Reason::FunctionCall => true,
            Reason::Read
            | Reason::Pinned(_)
            | Reason::Hint
            | Reason::Serializable
            | Reason::PrimaryOnly
            | Reason::Unlogged
            | Reason::NoReplica
            | Reason::Consistency(_)
            | Reason::Listener => false,
        }
    }
}
