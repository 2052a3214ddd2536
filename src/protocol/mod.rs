//! The PostgreSQL v3 wire protocol, pure: no I/O, no tokio.
//!
//! What lives here:
//! - [`frame`]: finding message boundaries in a byte buffer without copying, with
//!   every declared length checked against a limit *before* anything is reserved;
//! - [`startup`]: the untagged packets a client sends first (SSLRequest,
//!   GSSENCRequest, CancelRequest, StartupMessage);
//! - [`encode`]: writers for the few messages pgsplit produces itself, into a
//!   caller's `BytesMut`;
//! - [`message`]: read-only views over the few messages pgsplit looks
//!   inside (authentication exchanges, ErrorResponse, BackendKeyData).
//!
//! What must not live here: sockets, timers, routing decisions. Everything in this
//! module can be driven from a unit test with byte fixtures.
//!
//! Reference: PostgreSQL docs, chapter "Frontend/Backend Protocol" (55 in v15),
//! sections "Message Flow" and "Message Formats".

pub mod encode;
#[cfg(test)]
pub mod fixtures;
pub mod frame;
pub mod message;
pub mod startup;

/// Length of a tagged message header: one type byte plus an Int32 length.
pub const HEADER_LEN: usize = 5;

/// Message type bytes (protocol docs, "Message Formats").
pub mod tag {
    // Sent by clients (frontend).
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    pub const DESCRIBE: u8 = b'D';
    pub const CLOSE: u8 = b'C';
    pub const FLUSH: u8 = b'H';
    pub const SYNC: u8 = b'S';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    /// PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse.
    pub const PASSWORD: u8 = b'p';

    // Sent by servers (backend).
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const DATA_ROW: u8 = b'D';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const NO_DATA: u8 = b'n';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
}

/// Whether `t` is a message type a client may send after startup.
pub fn is_frontend_tag(t: u8) -> bool {
    matches!(
        t,
        b'Q' | b'P'
            | b'B'
            | b'E'
            | b'D'
            | b'C'
            | b'H'
            | b'S'
            | b'F'
            | b'X'
            | b'd'
            | b'c'
            | b'f'
            | b'p'
    )
}

/// A violation of the wire protocol by the peer. Always answered with SQLSTATE
/// 08P01 (protocol_violation) and the end of the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message length {len} is below the minimum of 4")]
    LengthTooSmall { len: u32 },
    #[error("message of {len} bytes exceeds the limit of {max} bytes (max_message_size)")]
    TooLarge { len: u32, max: usize },
    #[error("invalid frontend message type {tag:#04x}")]
    UnknownTag { tag: u8 },
    #[error("startup packet length {len} is out of range")]
    BadStartupLength { len: u32 },
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("malformed {what}")]
    Malformed { what: &'static str },
    #[error("unexpected message type {tag:#04x} during {phase}")]
    Unexpected { tag: u8, phase: &'static str },
}

/// Reads a big-endian i32 at `at`. Callers check bounds first.
pub(crate) fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Splits a NUL-terminated string off the front of `buf`, returning it and the rest.
pub(crate) fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}
