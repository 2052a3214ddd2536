//! Server connections: opening a TCP connection to a backend and logging in as
//! the client's user ([`connect`]), one request/reply exchange on a connection
//! pgsplit itself drives ([`exchange`]), and the pool of idle connections
//! ([`idle::Pool`]) that sessions borrow from and give back to.

pub mod idle;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::server::{login, LoginError};
use crate::auth::UserEntry;
use crate::cancel::CancelTarget;
use crate::protocol::frame::split_frame;
use crate::protocol::startup::CancelKey;
use crate::protocol::{message, tag};
use crate::route::Target;

/// A logged-in connection to one backend.
#[derive(Debug)]
pub struct ServerConn {
    pub stream: TcpStream,
    /// Index of the configured backend.
    pub backend: usize,
    pub name: String,
    /// The configured `host:port`.
    pub address: String,
    pub addr: SocketAddr,
    /// The server's own cancel key.
    pub key: CancelKey,
    /// ParameterStatus messages from login, as wire bytes.
    pub parameters: BytesMut,
    /// Logged in with `default_transaction_read_only = on` (a read-only
    /// session served by the primary).
    pub read_only: bool,
    /// Counts this connection in `pgsplit_server_connections` while it lives.
    pub in_use: Option<crate::metrics::InUse>,
    /// Its backend's `in_use` gauge, once known.
    pub in_use_gauge: Option<prometheus_client::metrics::gauge::Gauge>,
    /// How much of its session's state this connection holds.
    pub synced: Synced,
    /// Its place under `limits.max_server_connections` (freed on drop).
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Whether an idle server connection has nothing to say: not closed, no
/// message waiting (an idle server only speaks to say goodbye or to notify).
pub fn quiet(server: &ServerConn) -> bool {
    let mut probe = [0u8; 1];
    matches!(server.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The session state a server connection holds, as versions of the session's
/// own records (see `session::split`): settings up to `set_version` within
/// `epoch` (bumped by RESET ALL / DISCARD ALL), and prepared statements by
/// name and version.
#[derive(Debug, Default)]
pub struct Synced {
    pub epoch: u64,
    pub set_version: u64,
    pub prepared: std::collections::HashMap<Box<str>, u64>,
}

impl Synced {
    /// Holds no setting and no prepared statement of any session.
    pub fn is_empty(&self) -> bool {
        self.set_version == 0 && self.prepared.is_empty()
    }
}

impl ServerConn {
    pub fn cancel_target(&self) -> CancelTarget {
        CancelTarget {
            addr: self.addr,
            key: self.key,
        }
    }
}

/// Why no server connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("pgsplit could not connect to backend {backend} ({address}): {source}")]
    Unreachable {
        backend: String,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pgsplit timed out after {ms} ms connecting to backend {backend} ({address})")]
    Timeout {
        backend: String,
        address: String,
        ms: u128,
    },
    #[error("backend {backend}: {source}")]
    Login {
        backend: String,
        #[source]
        source: LoginError,
    },
}

impl ConnectError {
    /// SQLSTATE for the client: the server's own code when it refused us (an
    /// unknown database is 3D000 whoever asks), else 08001.
    pub fn sqlstate(&self) -> &str {
        match self {
            ConnectError::Login {
                source: LoginError::Refused { code, .. },
                ..
            } => code,
            _ => "08001",
        }
    }

    /// The message for the client: the server's own words when it refused us.
    pub fn client_message(&self) -> String {
        match self {
            ConnectError::Login {
                source: LoginError::Refused { message, .. },
                ..
            } => message.clone(),
            other => other.to_string(),
        }
    }

    /// True when another backend might do better (the server was unreachable).
    pub fn is_unreachable(&self) -> bool {
        !matches!(
            self,
            ConnectError::Login {
                source: LoginError::Refused { .. },
                ..
            }
        )
    }
}

/// Connects to `target` and logs in with `params` (which must include `user`
/// and `database`), all within `timeout`.
pub async fn connect(
    target: &Target,
    user: &UserEntry,
    params: &[(&str, &str)],
    timeout: Duration,
) -> Result<ServerConn, ConnectError> {
    let timed_out = || ConnectError::Timeout {
        backend: target.name.clone(),
        address: target.address.clone(),
        ms: timeout.as_millis(),
    };
    let work = async {
        let stream = TcpStream::connect(&target.address)
            .await
            .map_err(|source| ConnectError::Unreachable {
                backend: target.name.clone(),
                address: target.address.clone(),
                source,
            })?;
        stream.set_nodelay(true).ok();
        let addr = stream
            .peer_addr()
            .map_err(|source| ConnectError::Unreachable {
                backend: target.name.clone(),
                address: target.address.clone(),
                source,
            })?;
        let mut stream = stream;
        let read_only = [("default_transaction_read_only", "on")];
        let extra: &[(&str, &str)] = if target.read_only { &read_only } else { &[] };
        let login = login(&mut stream, user, params.iter().chain(extra).copied())
            .await
            .map_err(|source| ConnectError::Login {
                backend: target.name.clone(),
                source,
            })?;
        Ok(ServerConn {
            stream,
            backend: target.backend,
            name: target.name.clone(),
            address: target.address.clone(),
            addr,
            key: login.key,
            parameters: login.parameters,
            read_only: target.read_only,
            in_use: None,
            in_use_gauge: None,
            synced: Synced::default(),
            permit: None,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| timed_out())?
}

/// Sends `out` and reads the server's replies up to the `replies`-th
/// ReadyForQuery, starting with the `leftover` bytes already read; DataRows
/// go to `rows` (as text) when given. Returns the first error the server
/// reported, if any. Err: the connection is unusable.
pub async fn exchange(
    server: &mut ServerConn,
    out: &[u8],
    replies: u32,
    mut pending: BytesMut,
    max: usize,
    mut rows: Option<&mut Vec<Vec<Option<String>>>>,
) -> Result<Option<String>, ()> {
    server.stream.write_all(out).await.map_err(drop)?;
    let mut seen = 0;
    let mut error = None;
    while seen < replies {
        match split_frame(&pending, max).map_err(drop)? {
            Some(frame) => {
                match frame.tag {
                    tag::READY_FOR_QUERY => seen += 1,
                    tag::DATA_ROW => {
                        if let Some(rows) = rows.as_deref_mut() {
                            rows.push(message::data_row_text(frame.body).map_err(drop)?);
                        }
                    }
                    tag::ERROR_RESPONSE if error.is_none() => {
                        error = Some(match message::ErrorFields::parse(frame.body) {
                            Ok(f) => format!("{} ({})", f.message, f.code),
                            Err(_) => "an unreadable error".to_owned(),
                        });
                    }
                    _ => {}
                }
                let len = frame.wire_len();
                pending.advance(len);
            }
            None => {
                pending.reserve(4096);
                if server.stream.read_buf(&mut pending).await.map_err(drop)? == 0 {
                    return Err(());
                }
            }
        }
    }
    Ok(error)
}
