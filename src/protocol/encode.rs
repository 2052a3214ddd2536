//! Writers for the messages pgsplit produces itself. Each appends one message to
//! the caller's buffer and patches its length afterwards; none allocates beyond
//! growing that buffer.

use bytes::{BufMut, BytesMut};

use super::startup::{CancelKey, CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE};

/// Writes a tagged message whose body `body` produces.
fn tagged(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Severity of an error we report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The connection ends after this message.
    Fatal,
}

impl Severity {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Severity::Error => b"ERROR",
            Severity::Fatal => b"FATAL",
        }
    }
}

/// ErrorResponse with severity, SQLSTATE and a message (fields S, V, C, M).
pub fn error_response(buf: &mut BytesMut, severity: Severity, sqlstate: &str, message: &str) {
    error_with_hint(buf, severity, sqlstate, message, None);
}

/// An ErrorResponse with a hint (psql shows it on its own line).
pub fn error_with_hint(
    buf: &mut BytesMut,
    severity: Severity,
    sqlstate: &str,
    message: &str,
    hint: Option<&str>,
) {
    tagged(buf, b'E', |b| {
        b.put_u8(b'S');
        put_cstr(b, severity.as_bytes());
        b.put_u8(b'V');
        put_cstr(b, severity.as_bytes());
        b.put_u8(b'C');
        put_cstr(b, sqlstate.as_bytes());
        b.put_u8(b'M');
        put_cstr(b, message.as_bytes());
        if let Some(hint) = hint {
            b.put_u8(b'H');
            put_cstr(b, hint.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn auth_ok(buf: &mut BytesMut) {
    tagged(buf, b'R', |b| b.put_i32(0));
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    tagged(buf, b'R', |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

pub fn auth_cleartext(buf: &mut BytesMut) {
    tagged(buf, b'R', |b| b.put_i32(3));
}

/// AuthenticationSASL listing the mechanisms offered.
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    tagged(buf, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    tagged(buf, b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(buf: &mut BytesMut, key: CancelKey) {
    tagged(buf, b'K', |b| {
        b.put_i32(key.pid);
        b.put_i32(key.secret);
    });
}

pub fn command_complete(buf: &mut BytesMut, command_tag: &str) {
    tagged(buf, b'C', |b| put_cstr(b, command_tag.as_bytes()));
}

pub fn parse_complete(buf: &mut BytesMut) {
    tagged(buf, b'1', |_| {});
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    tagged(buf, b'Z', |b| b.put_u8(status));
}

/// OID of type `text` (`pg_type.dat`): the admin console's columns are all
/// text, as PgBouncer's console answers.
pub const TEXT_OID: u32 = 25;

/// RowDescription of text columns (protocol 3.0, "RowDescription": name,
/// table OID 0, column 0, type `text`, size -1, modifier -1, text format).
pub fn row_description<'a>(buf: &mut BytesMut, columns: impl ExactSizeIterator<Item = &'a str>) {
    tagged(buf, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for name in columns {
            put_cstr(b, name.as_bytes());
            b.put_u32(0);
            b.put_i16(0);
            b.put_u32(TEXT_OID);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
    });
}

/// DataRow of text values (`None` is NULL, length -1).
pub fn data_row<'a>(buf: &mut BytesMut, values: impl ExactSizeIterator<Item = Option<&'a str>>) {
    tagged(buf, b'D', |b| {
        b.put_i16(values.len() as i16);
        for value in values {
            match value {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// EmptyQueryResponse: the answer to a query string with no command.
pub fn empty_query_response(buf: &mut BytesMut) {
    tagged(buf, b'I', |_| {});
}

/// NoticeResponse with severity NOTICE, a SQLSTATE and a message.
pub fn notice(buf: &mut BytesMut, sqlstate: &str, message: &str) {
    tagged(buf, b'N', |b| {
        for (field, value) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', sqlstate),
            (b'M', message),
        ] {
            b.put_u8(field);
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    });
}

/// NegotiateProtocolVersion: the newest protocol version we speak, as a whole
/// version code (`3 << 16 | minor`, which is what PostgreSQL sends and libpq
/// reads), and the protocol options we do not recognise.
pub fn negotiate_protocol_version<'a>(
    buf: &mut BytesMut,
    newest: i32,
    unsupported: impl ExactSizeIterator<Item = &'a str>,
) {
    tagged(buf, b'v', |b| {
        b.put_i32(newest);
        b.put_i32(unsupported.len() as i32);
        for name in unsupported {
            put_cstr(b, name.as_bytes());
        }
    });
}

// Messages pgsplit sends to servers.

/// StartupMessage for protocol 3.0 with the given parameters.
pub fn startup_message<'a>(
    buf: &mut BytesMut,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(buf, k.as_bytes());
        put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(SSL_REQUEST_CODE);
}

pub fn cancel_request(key: CancelKey) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&16i32.to_be_bytes());
    out[4..8].copy_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out[8..12].copy_from_slice(&key.pid.to_be_bytes());
    out[12..16].copy_from_slice(&key.secret.to_be_bytes());
    out
}

/// PasswordMessage carrying `password` (cleartext or an "md5..." digest).
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    tagged(buf, b'p', |b| put_cstr(b, password));
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    tagged(buf, b'p', |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'p', |b| b.put_slice(data));
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    tagged(buf, b'Q', |b| put_cstr(b, sql.as_bytes()));
}

/// Close (a prepared statement).
pub fn close_statement(buf: &mut BytesMut, name: &[u8]) {
    tagged(buf, b'C', |b| {
        b.put_u8(b'S');
        put_cstr(b, name);
    });
}

pub fn sync(buf: &mut BytesMut) {
    tagged(buf, b'S', |_| {});
}

pub fn terminate(buf: &mut BytesMut) {
    tagged(buf, b'X', |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{frame::split_frame, message};

    #[test]
    fn error_response_round_trips() {
        let mut buf = BytesMut::new();
        error_response(
            &mut buf,
            Severity::Fatal,
            "28P01",
            "password authentication failed for user \"app\"",
        );
        let frame = split_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(frame.wire_len(), buf.len());
        let fields = message::ErrorFields::parse(frame.body).unwrap();
        assert_eq!(fields.code, "28P01");
        assert_eq!(fields.severity, "FATAL");
        assert!(fields.message.contains("app"));
    }

    #[test]
    fn ready_for_query_is_six_bytes() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, b'I');
        assert_eq!(&buf[..], b"Z\0\0\0\x05I");
    }

    #[test]
    fn startup_message_matches_the_wire() {
        let mut buf = BytesMut::new();
        startup_message(&mut buf, [("user", "app")]);
        assert_eq!(&buf[..], b"\0\0\0\x12\0\x03\0\0user\0app\0\0");
    }

    #[test]
    fn result_set_messages_match_the_wire() {
        let mut buf = BytesMut::new();
        row_description(&mut buf, ["a"].into_iter());
        assert_eq!(
            &buf[..],
            b"T\0\0\0\x1a\0\x01a\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0"
        );
        buf.clear();
        data_row(&mut buf, [Some("xy"), None].into_iter());
        assert_eq!(&buf[..], b"D\0\0\0\x10\0\x02\0\0\0\x02xy\xff\xff\xff\xff");
        buf.clear();
        empty_query_response(&mut buf);
        assert_eq!(&buf[..], b"I\0\0\0\x04");
        buf.clear();
        notice(&mut buf, "00000", "hi");
        let frame = split_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(frame.tag, b'N');
        let fields = message::ErrorFields::parse(frame.body).unwrap();
        assert_eq!((fields.code, fields.message), ("00000", "hi"));
    }

    #[test]
    fn cancel_request_layout() {
        let wire = cancel_request(CancelKey { pid: 1, secret: -1 });
        assert_eq!(&wire[..8], &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]);
        assert_eq!(&wire[8..], &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
    }
}
