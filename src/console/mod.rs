//! The admin console, PgBouncer's habit on pgsplit's own client ports: a
//! client that logs in to the virtual database [`DATABASE`] as one of
//! `admin.users` gets a console instead of a session (see `session` for the
//! login). It speaks the simple query protocol only and answers with real
//! RowDescription / DataRow messages (every column text, as PgBouncer's
//! console does), so `psql`, `\x` and any driver read them.
//!
//! Commands ([`command`]): `SHOW HELP | BACKENDS | POOLS | CLIENTS | SERVERS
//! | STATS | ROUTING | CONFIG | VERSION`, `EXPLAIN ROUTE <sql>`, `PAUSE`,
//! `RESUME`, `RELOAD`, `DRAIN <backend>`, `UNDRAIN <backend>`. The tables
//! are built in [`show`] from what pgsplit already keeps (the topology
//! snapshot, the pool, the client table, the metrics).
//!
//! The console never opens a server connection: it works with every backend
//! down, and while pgsplit is paused (so that `RESUME` can be typed).

pub mod command;
mod show;

use std::sync::Arc;

use bytes::BytesMut;

use self::command::Command;
use crate::clients::{ClientRecord, ClientState};
use crate::error::sqlstate;
use crate::protocol::encode::{self, Severity};
use crate::protocol::startup::CancelKey;
use crate::protocol::{tag, ProtocolError};
use crate::session::error::SessionError;
use crate::session::relay::{Failure, Outcome};
use crate::session::stream::ClientStream;
use crate::shared::Shared;
use crate::wire::{self, WireError};

/// The virtual database that is the console.
pub const DATABASE: &str = "pgsplit";

/// What a console command can fail with; each maps to one SQLSTATE and the
/// session goes on.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Not a console command, or bad arguments (42601).
    #[error("{0}")]
    Syntax(String),
    /// A command (or message) the console does not support (0A000).
    #[error("{0}")]
    Unsupported(String),
    /// `DRAIN` of a backend that is not configured (42704).
    #[error(transparent)]
    Drain(#[from] crate::topology::DrainError),
    /// `RELOAD` of a bad file, or with none (F0000).
    #[error("reload refused: {0}")]
    Reload(String),
    /// A query that is not UTF-8 (22021).
    #[error("the query is not valid UTF-8")]
    Encoding,
}

impl ConsoleError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ConsoleError::Syntax(_) => "42601",
            ConsoleError::Unsupported(_) => sqlstate::FEATURE_NOT_SUPPORTED,
            ConsoleError::Drain(_) => "42704",
            ConsoleError::Reload(_) => "F0000",
            ConsoleError::Encoding => "22021",
        }
    }
}

/// Text columns and their rows (`None` is NULL).
#[derive(Debug, Default)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one value per column.
    pub fn row(&mut self, values: Vec<Option<String>>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push(values);
    }

    /// RowDescription, the DataRows, CommandComplete `tag`.
    fn encode(&self, out: &mut BytesMut, command_tag: &str) {
        encode::row_description(out, self.columns.iter().copied());
        for row in &self.rows {
            encode::data_row(out, row.iter().map(|v| v.as_deref()));
        }
        encode::command_complete(out, command_tag);
    }
}

/// A command's answer, before it is encoded.
enum Reply {
    Rows(Table, &'static str),
    Done {
        tag: &'static str,
        notice: Option<String>,
    },
    Empty,
}

/// Serves a console client to its end: the greeting (ParameterStatus,
/// BackendKeyData, ReadyForQuery), then one answer per query. Ends with
/// the client, or at shutdown (`Outcome::Shutdown`, told as 57P01 by the
/// caller).
pub async fn serve(
    stream: &mut ClientStream,
    shared: &Arc<Shared>,
    record: &ClientRecord,
    key: CancelKey,
) -> Result<Outcome, Failure> {
    let tell = |error: SessionError| Failure {
        error,
        can_tell: true,
    };
    let mut out = BytesMut::new();
    let user = record.param("user").unwrap_or("");
    for (name, value) in [
        (
            "server_version",
            concat!("16.0 (pgsplit ", env!("CARGO_PKG_VERSION"), ")"),
        ),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "off"),
        ("session_authorization", user),
        (
            "application_name",
            record.param("application_name").unwrap_or(""),
        ),
    ] {
        encode::parameter_status(&mut out, name, value);
    }
    encode::backend_key_data(&mut out, key);
    encode::ready_for_query(&mut out, b'I');
    wire::send(stream, &mut out)
        .await
        .map_err(|e| tell(e.into()))?;
    tracing::info!(user, "admin console opened");
    let max = shared.config.load().limits.max_message_size;
    let mut buf = BytesMut::new();
    // After an extended-protocol message: its error is sent, the rest of
    // the batch is skipped up to its Sync (as a server skips after an error).
    let mut skipping = false;
    loop {
        let read = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => return Ok(Outcome::Shutdown),
            read = wire::read_message(stream, &mut buf, max) => read,
        };
        let message = match read {
            Ok(t) => t,
            Err(WireError::Closed) => return Ok(Outcome::ClientGone { busy: false }),
            Err(e) => return Err(tell(e.into())),
        };
        match message {
            tag::TERMINATE => return Ok(Outcome::Terminated),
            tag::QUERY => {
                record.set_state(ClientState::Active);
                let text = buf.strip_suffix(b"\0").unwrap_or(&buf);
                let reply = match std::str::from_utf8(text) {
                    Ok(text) => run(shared, text),
                    Err(_) => Err(ConsoleError::Encoding),
                };
                match reply {
                    Ok(Reply::Rows(table, command_tag)) => table.encode(&mut out, command_tag),
                    Ok(Reply::Done { tag, notice }) => {
                        if let Some(notice) = notice {
                            encode::notice(&mut out, "00000", &notice);
                        }
                        encode::command_complete(&mut out, tag);
                    }
                    Ok(Reply::Empty) => encode::empty_query_response(&mut out),
                    Err(e) => {
                        tracing::debug!(error = %e, "console command refused");
                        encode::error_response(
                            &mut out,
                            Severity::Error,
                            e.sqlstate(),
                            &e.to_string(),
                        );
                    }
                }
                encode::ready_for_query(&mut out, b'I');
                record.set_state(ClientState::Idle);
            }
            tag::PARSE
            | tag::BIND
            | tag::DESCRIBE
            | tag::EXECUTE
            | tag::CLOSE
            | tag::FLUSH
            | tag::FUNCTION_CALL => {
                if !skipping {
                    let e = ConsoleError::Unsupported(
                        "the admin console speaks the simple query protocol only (no Parse/Bind/Execute, no prepared statements); use psql or a driver's simple_query".into(),
                    );
                    encode::error_response(&mut out, Severity::Error, e.sqlstate(), &e.to_string());
                }
                if message == tag::FUNCTION_CALL {
                    encode::ready_for_query(&mut out, b'I');
                } else {
                    skipping = true;
                }
            }
            tag::SYNC => {
                skipping = false;
                encode::ready_for_query(&mut out, b'I');
            }
            other => {
                return Err(tell(
                    ProtocolError::Unexpected {
                        tag: other,
                        phase: "the admin console",
                    }
                    .into(),
                ))
            }
        }
        if !out.is_empty() {
            wire::send(stream, &mut out)
                .await
                .map_err(|e| tell(e.into()))?;
        }
    }
}

/// Runs one query's command.
fn run(shared: &Shared, text: &str) -> Result<Reply, ConsoleError> {
    Ok(match command::parse(text)? {
        Command::Empty => Reply::Empty,
        Command::Show(item) => Reply::Rows(show::show(shared, item), "SHOW"),
        Command::ExplainRoute(sql) => Reply::Rows(show::explain_route(shared, &sql), "EXPLAIN"),
        Command::Pause => {
            let already = shared.is_paused();
            shared.pause();
            Reply::Done {
                tag: "PAUSE",
                notice: already.then(|| "pgsplit was already paused".to_owned()),
            }
        }
        Command::Resume => {
            let paused = shared.is_paused();
            shared.resume();
            Reply::Done {
                tag: "RESUME",
                notice: (!paused).then(|| "pgsplit was not paused".to_owned()),
            }
        }
        Command::Reload => {
            let summary = shared.reload_file().map_err(ConsoleError::Reload)?;
            Reply::Done {
                tag: "RELOAD",
                notice: Some(summary),
            }
        }
        Command::Drain(backend) => {
            let changed = shared.topology.set_drained(&backend, true)?;
            Reply::Done {
                tag: "DRAIN",
                notice: (!changed).then(|| format!("{backend} was already drained")),
            }
        }
        Command::Undrain(backend) => {
            let changed = shared.topology.set_drained(&backend, false)?;
            let notice = if changed {
                let snapshot = shared.topology.snapshot();
                snapshot
                    .backends
                    .iter()
                    .find(|b| b.name == backend)
                    .filter(|b| !b.in_rotation)
                    .map(|b| {
                        format!(
                            "{backend} is undrained but still out of rotation: {}",
                            b.reason.as_deref().unwrap_or("not a replica in rotation")
                        )
                    })
            } else {
                Some(format!("{backend} was not drained"))
            };
            Reply::Done {
                tag: "UNDRAIN",
                notice,
            }
        }
    })
}
