//! What every error a client can see has in common: a kind (for the log level
//! and metrics) and a SQLSTATE with a plain message. Each module keeps its own
//! error enum; this is the vocabulary they map to.

/// Who caused an error, which sets how loudly it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client did something wrong (bad password, bad bytes): info.
    Client,
    /// A backend failed or went away: warn.
    Server,
    /// Timeouts waiting for a peer: info.
    Timeout,
    /// pgsplit is shutting down or at a limit it was told to keep: info.
    Service,
    /// A bug or an impossible state: error.
    Internal,
}

/// SQLSTATE codes pgsplit produces itself (PostgreSQL docs, Appendix A).
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CANNOT_CONNECT: &str = "08001";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const READ_ONLY_TRANSACTION: &str = "25006";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    pub const OUT_OF_MEMORY: &str = "53200";
}
