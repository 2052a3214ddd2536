//! Requests pgsplit answers itself: its own settings, a deferred BEGIN (and
//! the COMMIT or ROLLBACK of one that sent nothing), DEALLOCATE and DISCARD
//! ALL of a session that holds nothing on a server, and the read-only
//! port's refusals.

use bytes::{Buf, BytesMut};

use super::{Failure, Intake, Relay};
use crate::error::sqlstate;
use crate::protocol::encode::{self, Severity};
use crate::protocol::frame::split_frame;
use crate::protocol::tag;
use crate::router::{Answer, Refusal};
use crate::session::batch::{Batch, End, Kind};
use crate::session::state::Prepared;
use crate::session::state::{Staged, TxStatus};
use std::sync::Arc;

impl Relay<'_> {
    /// Answers `batch` without a server.
    pub(super) fn answer(&mut self, batch: &Batch, answer: Answer) -> Result<(), Failure> {
        let mut out = BytesMut::new();
        let status = match self.deferred_begin {
            Some(_) => TxStatus::InBlock,
            None => self.tx,
        };
        let mut ready = Some(status);
        match &answer {
            Answer::Begin => {
                self.deferred_begin = Some(BytesMut::from(&self.client_in[..batch.len]));
                encode::command_complete(&mut out, "BEGIN");
                ready = Some(TxStatus::InBlock);
            }
            Answer::EndDeferred { commit } => {
                self.deferred_begin = None;
                encode::command_complete(&mut out, if *commit { "COMMIT" } else { "ROLLBACK" });
                ready = Some(TxStatus::Idle);
            }
            Answer::PgsplitSetting => {
                let mut staged = Staged::default();
                self.session.send(batch.verdicts(), &mut staged);
                let statements = batch.single_query().map_or(1, |v| v.statements);
                for _ in 0..statements {
                    encode::command_complete(&mut out, "SET");
                }
            }
            Answer::BadSetting => encode::error_response(
                &mut out,
                Severity::Error,
                sqlstate::INVALID_PARAMETER_VALUE,
                "invalid value for parameter \"pgsplit.min_lsn\": expected an LSN such as 0/16B3748",
            ),
            Answer::Deallocate { all } => {
                let mut staged = Staged::default();
                self.session.send(batch.verdicts(), &mut staged);
                encode::command_complete(&mut out, if *all { "DEALLOCATE ALL" } else { "DEALLOCATE" });
            }
            Answer::NoSuchStatement(name) => encode::error_response(
                &mut out,
                Severity::Error,
                sqlstate::INVALID_SQL_STATEMENT_NAME,
                &format!("prepared statement \"{name}\" does not exist"),
            ),
            Answer::TransactionAborted => encode::error_response(
                &mut out,
                Severity::Error,
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ),
            Answer::Parse => {
                if let Some(parse) = batch.lone_named_parse() {
                    if let Kind::Parse {
                        name,
                        body,
                        verdict,
                    } = &parse.kind
                    {
                        let bytes = &self.client_in[..batch.len];
                        let key = self.shared.statements.intern(parse.slice(bytes, body));
                        self.session.statements.named.insert(
                            parse.slice(bytes, name).into(),
                            Arc::new(Prepared {
                                key,
                                verdict: Arc::clone(verdict),
                            }),
                        );
                    }
                }
                self.shared.metrics.prepared_statements(0, 1, 0);
                encode::parse_complete(&mut out);
            }
            Answer::DiscardAll => {
                self.session.discard_all();
                encode::command_complete(&mut out, "DISCARD ALL");
            }
            Answer::Refuse(refusal) => {
                let message = match refusal {
                    Refusal::Write => "cannot execute this statement in a read-only transaction: it writes, or its effect outlasts it",
                    Refusal::ReadWrite => "cannot make a transaction read-write on a read-only connection",
                    Refusal::FunctionCall => "cannot execute this function call in a read-only transaction: it is not known to be read-only",
                };
                tracing::info!(listener = self.listener.as_str(), "refused a statement that must not run on a replica");
                self.metrics().client_error(sqlstate::READ_ONLY_TRANSACTION);
                encode::error_with_hint(
                    &mut out,
                    Severity::Error,
                    sqlstate::READ_ONLY_TRANSACTION,
                    message,
                    Some("pgsplit's read-only port serves replicas; send writes to its read-write port."),
                );
                if !matches!(batch.end, End::Query | End::Sync | End::FunctionCall) {
                    // An extended batch: skip the client's messages up to
                    // its Sync, as a server would after an error.
                    self.intake = Intake::Skipping;
                    ready = None;
                }
            }
            Answer::NoReplica => {
                let snapshot = self.shared.topology.snapshot();
                let error = crate::session::target::RouteError::NoReplica {
                    situation: crate::session::target::describe_readers(&snapshot),
                };
                encode::error_response(&mut out, Severity::Error, error.sqlstate(), &error.to_string());
            }
        }
        if let Some(status) = ready {
            if batch.requests > 0 {
                encode::ready_for_query(&mut out, status.byte());
            }
        }
        self.client_in.advance(batch.len);
        self.sync_pin_gauges();
        self.publish();
        self.answer_client(&out)
    }

    /// Drops client messages up to and including a Sync after a refused
    /// extended batch, and answers that Sync. Returns true when it made
    /// progress.
    pub(super) fn skip_refused(&mut self) -> Result<bool, Failure> {
        let mut progressed = false;
        while let Some(frame) =
            split_frame(&self.client_in, self.max).map_err(|e| self.fail(e.into()))?
        {
            let len = frame.wire_len();
            let sync = frame.tag == tag::SYNC;
            self.client_in.advance(len);
            progressed = true;
            if sync {
                self.intake = Intake::Open;
                let mut out = BytesMut::new();
                encode::ready_for_query(&mut out, self.tx.byte());
                self.answer_client(&out)?;
                break;
            }
        }
        Ok(progressed)
    }
}
