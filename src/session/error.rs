//! How a session can end badly, and what the client is told.

use crate::auth::AuthError;
use crate::error::{sqlstate, ErrorKind};
use crate::pool::ConnectError;
use crate::protocol::ProtocolError;
use crate::session::target::RouteError;
use crate::wire::WireError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    PoolTimeout(#[from] crate::pool::PoolTimeout),
    #[error("sorry, too many clients already (max_client_connections = {max})")]
    TooManyClients { max: usize },
    #[error("timed out after {ms} ms waiting for the client to log in (limits.login_timeout_ms)")]
    LoginTimeout { ms: u64 },
    #[error("pgsplit requires TLS on this port; connect with sslmode=require")]
    TlsRequired,
    #[error("no user name specified in startup packet")]
    NoUser,
    #[error("invalid value for startup parameter {name}: {why}")]
    BadParameter {
        name: &'static str,
        why: &'static str,
    },
    #[error(
        "replication connections are not supported by pgsplit; connect to the backend directly"
    )]
    Replication,
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("lost the connection to backend {backend} ({address})")]
    ServerLost { backend: String, address: String },
    #[error("{old} is no longer the primary ({}); the open transaction on {old} was abandoned, reconnect and retry", match new { Some(n) => format!("{n} is"), None => "none is known yet".to_owned() })]
    PrimaryChanged { old: String, new: Option<String> },
    #[error("pgsplit ended this session: backend {backend} {why}, and the session's state (prepared statements, settings, LISTEN, ...) cannot move to another server; reconnect")]
    Moved { backend: String, why: String },
    #[error("user \"{user}\" is not allowed to use the admin console (database \"pgsplit\"); list it in admin.users")]
    ConsoleNotAllowed { user: String },
    #[error("the admin console is not served on the read-only port (admin.console_on_read_only = false); connect to the read-write port")]
    ConsoleOnReadOnly,
    #[error("pgsplit is paused for maintenance and was not resumed within limits.pause_timeout_ms ({ms} ms)")]
    PauseTimeout { ms: u64 },
    #[error("terminating connection because pgsplit is shutting down")]
    Shutdown,
    #[error("client closed the connection")]
    ClientGone,
    #[error("client connection failed: {0}")]
    ClientIo(#[source] std::io::Error),
}

impl From<WireError> for SessionError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Closed => SessionError::ClientGone,
            WireError::Io(e) => SessionError::ClientIo(e),
            WireError::Protocol(p) => SessionError::Protocol(p),
        }
    }
}

impl SessionError {
    /// SQLSTATE for an ErrorResponse, or None when nobody is left to tell.
    pub fn sqlstate(&self) -> Option<&str> {
        Some(match self {
            SessionError::Protocol(_) | SessionError::LoginTimeout { .. } => {
                sqlstate::PROTOCOL_VIOLATION
            }
            SessionError::Auth(AuthError::Wire(WireError::Closed | WireError::Io(_))) => {
                return None
            }
            SessionError::Auth(e) => e.sqlstate(),
            SessionError::Route(e) => e.sqlstate(),
            SessionError::Connect(e) => e.sqlstate(),
            SessionError::TooManyClients { .. } | SessionError::PoolTimeout(_) => {
                sqlstate::TOO_MANY_CONNECTIONS
            }
            SessionError::TlsRequired
            | SessionError::NoUser
            | SessionError::ConsoleNotAllowed { .. }
            | SessionError::ConsoleOnReadOnly => sqlstate::INVALID_AUTHORIZATION,
            SessionError::Replication => sqlstate::FEATURE_NOT_SUPPORTED,
            SessionError::BadParameter { .. } => sqlstate::INVALID_PARAMETER_VALUE,
            SessionError::ServerLost { .. }
            | SessionError::PrimaryChanged { .. }
            | SessionError::Moved { .. } => sqlstate::CONNECTION_FAILURE,
            SessionError::Shutdown => sqlstate::ADMIN_SHUTDOWN,
            SessionError::PauseTimeout { .. } => sqlstate::CANNOT_CONNECT_NOW,
            SessionError::Tls(_) | SessionError::ClientGone | SessionError::ClientIo(_) => {
                return None
            }
        })
    }

    /// The message for the client.
    pub fn client_message(&self) -> String {
        match self {
            SessionError::Connect(e) => e.client_message(),
            other => other.to_string(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            SessionError::Protocol(_)
            | SessionError::Auth(_)
            | SessionError::TlsRequired
            | SessionError::NoUser
            | SessionError::ConsoleNotAllowed { .. }
            | SessionError::ConsoleOnReadOnly
            | SessionError::BadParameter { .. }
            | SessionError::Replication
            | SessionError::Tls(_)
            | SessionError::ClientGone
            | SessionError::ClientIo(_) => ErrorKind::Client,
            SessionError::LoginTimeout { .. } => ErrorKind::Timeout,
            SessionError::Route(_)
            | SessionError::Connect(_)
            | SessionError::ServerLost { .. }
            | SessionError::PrimaryChanged { .. }
            | SessionError::Moved { .. } => ErrorKind::Server,
            SessionError::TooManyClients { .. }
            | SessionError::PoolTimeout(_)
            | SessionError::Shutdown
            | SessionError::PauseTimeout { .. } => ErrorKind::Service,
        }
    }
}
