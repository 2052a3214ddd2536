//! The untagged packets that open a connection: an Int32 length (counting
//! itself), an Int32 code, then a body. Protocol docs, "Message Formats":
//! StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.

use super::{be_i32, cstr, ProtocolError};

pub const SSL_REQUEST_CODE: i32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0 as `major << 16 | minor`.
pub const PROTOCOL_3_0: i32 = 3 << 16;
/// The server's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A client's secret pair for cancelling its running query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
}

/// What a client asked for with its first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(StartupParams),
}

/// A StartupMessage: the requested protocol and the client's parameters, in
/// the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupParams {
    /// Minor protocol version the client asked for (major is always 3).
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl StartupParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The user name; required by the protocol.
    pub fn user(&self) -> Option<&str> {
        self.get("user").filter(|u| !u.is_empty())
    }

    /// The database, defaulting to the user name as the server does.
    pub fn database(&self) -> Option<&str> {
        self.get("database")
            .filter(|d| !d.is_empty())
            .or_else(|| self.user())
    }

    /// Protocol options (`_pq_.*`) the client asked for; pgsplit supports none.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
    }
}

/// Validates the length prefix of a startup packet and returns the body length
/// still to read. Checked before anything is reserved.
pub fn body_len(prefix: [u8; 4]) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(prefix);
    if !(8..=MAX_STARTUP_LEN as u32).contains(&len) {
        return Err(ProtocolError::BadStartupLength { len });
    }
    Ok(len as usize - 4)
}

/// Parses the body (everything after the length) of a startup packet.
pub fn parse(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    if body.len() < 4 {
        return Err(ProtocolError::Malformed {
            what: "startup packet",
        });
    }
    let code = be_i32(body, 0);
    match code {
        SSL_REQUEST_CODE if body.len() == 4 => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if body.len() == 4 => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE if body.len() == 12 => Ok(StartupPacket::Cancel(CancelKey {
            pid: be_i32(body, 4),
            secret: be_i32(body, 8),
        })),
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            Err(ProtocolError::Malformed {
                what: "startup request",
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedVersion { major, minor });
            }
            Ok(StartupPacket::Startup(StartupParams {
                minor,
                params: parse_params(&body[4..])?,
            }))
        }
    }
}

/// Where a client stands before its StartupMessage: which encryption
/// requests it already made. The session reads each packet and does what
/// [`Negotiation::next`] says (the TLS handshake, the one-byte answers); the
/// rules live here, pure.
#[derive(Debug, Default, Clone, Copy)]
pub struct Negotiation {
    asked_ssl: bool,
    asked_gss: bool,
}

/// What the session does with one startup packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Answer an SSLRequest: `S` and the TLS handshake when `accept`, else `N`.
    Ssl { accept: bool },
    /// Answer a GSSENCRequest with `N` (pgsplit speaks no GSSAPI).
    RefuseGss,
    /// Forward this cancel key (the connection carries nothing else).
    Cancel(CancelKey),
    /// Log in with these parameters.
    Startup(StartupParams),
}

impl Negotiation {
    /// The step for the packet whose body (after its length) is `body`.
    /// `tls` says whether pgsplit has a certificate to offer, `is_tls`
    /// whether the connection is already encrypted. Each encryption request
    /// may come once, and none once encrypted.
    pub fn next(&mut self, body: &[u8], tls: bool, is_tls: bool) -> Result<Step, ProtocolError> {
        let repeated = ProtocolError::Malformed {
            what: "repeated encryption request",
        };
        Ok(match parse(body)? {
            StartupPacket::SslRequest if !self.asked_ssl && !is_tls => {
                self.asked_ssl = true;
                Step::Ssl { accept: tls }
            }
            StartupPacket::GssEncRequest if !self.asked_gss && !is_tls => {
                self.asked_gss = true;
                Step::RefuseGss
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => return Err(repeated),
            StartupPacket::Cancel(key) => Step::Cancel(key),
            StartupPacket::Startup(params) => Step::Startup(params),
        })
    }
}

fn parse_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed {
        what: "startup parameters",
    };
    let mut params = Vec::new();
    loop {
        let (name, after) = cstr(rest).ok_or(BAD)?;
        if name.is_empty() {
            if !after.is_empty() {
                return Err(BAD);
            }
            return Ok(params);
        }
        let (value, after) = cstr(after).ok_or(BAD)?;
        let name = std::str::from_utf8(name).map_err(|_| BAD)?;
        let value = std::str::from_utf8(value).map_err(|_| BAD)?;
        params.push((name.to_owned(), value.to_owned()));
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn parses_psql_startup() {
        let body = packet(
            PROTOCOL_3_0,
            b"user\0app\0database\0shop\0application_name\0psql\0client_encoding\0UTF8\0\0",
        );
        let StartupPacket::Startup(p) = parse(&body).unwrap() else {
            panic!()
        };
        assert_eq!(p.user(), Some("app"));
        assert_eq!(p.database(), Some("shop"));
        assert_eq!(p.get("application_name"), Some("psql"));
        assert_eq!(p.params.len(), 4);
    }

    #[test]
    fn database_defaults_to_user() {
        let StartupPacket::Startup(p) = parse(&packet(PROTOCOL_3_0, b"user\0app\0\0")).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.database(), Some("app"));
    }

    #[test]
    fn parses_requests() {
        assert_eq!(
            parse(&packet(SSL_REQUEST_CODE, b"")).unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            parse(&packet(GSSENC_REQUEST_CODE, b"")).unwrap(),
            StartupPacket::GssEncRequest
        );
        let cancel = parse(&packet(CANCEL_REQUEST_CODE, &[0, 0, 0, 7, 0, 0, 0, 9])).unwrap();
        assert_eq!(
            cancel,
            StartupPacket::Cancel(CancelKey { pid: 7, secret: 9 })
        );
    }

    #[test]
    fn rejects_bad_packets() {
        assert!(body_len(4u32.to_be_bytes()).is_err());
        assert!(body_len(1_000_000u32.to_be_bytes()).is_err());
        assert_eq!(body_len(8u32.to_be_bytes()).unwrap(), 4);
        assert!(parse(&packet(2 << 16, b"\0")).is_err());
        assert!(parse(&packet(PROTOCOL_3_0, b"user\0app")).is_err());
        assert!(parse(&packet(PROTOCOL_3_0, b"user\0app\0\0trailing")).is_err());
        assert!(parse(&packet(CANCEL_REQUEST_CODE, b"")).is_err());
        assert!(parse(b"\x04").is_err());
    }

    #[test]
    fn negotiation_answers_each_encryption_request_once() {
        let ssl = packet(SSL_REQUEST_CODE, b"");
        let gss = packet(GSSENC_REQUEST_CODE, b"");
        let mut n = Negotiation::default();
        assert_eq!(n.next(&gss, true, false).unwrap(), Step::RefuseGss);
        assert_eq!(
            n.next(&ssl, true, false).unwrap(),
            Step::Ssl { accept: true }
        );
        // Encrypted now: no request of either kind may follow.
        assert!(n.next(&ssl, true, true).is_err());
        assert!(n.next(&gss, true, true).is_err());
        let mut n = Negotiation::default();
        assert_eq!(
            n.next(&ssl, false, false).unwrap(),
            Step::Ssl { accept: false }
        );
        assert!(n.next(&ssl, false, false).is_err());
        let startup = packet(PROTOCOL_3_0, b"user\0app\0\0");
        assert!(
            matches!(n.next(&startup, false, false).unwrap(), Step::Startup(p) if p.user() == Some("app"))
        );
    }
}
