//! Read-only views over the few messages pgsplit looks inside. Everything else
//! passes through as bytes. Each `parse` takes a message body (after the type
//! byte and length) and fails with [`ProtocolError::Malformed`] rather than
//! panicking on a lying field.

use super::{be_i32, cstr, ProtocolError};
use crate::protocol::startup::CancelKey;

/// An Authentication ('R') request from a server.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5 {
        salt: [u8; 4],
    },
    /// Mechanisms offered, NUL-separated in the body.
    Sasl(Vec<&'a str>),
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSS, SSPI and anything newer: not supported towards servers.
    Other(i32),
}

impl<'a> AuthRequest<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, ProtocolError> {
        const BAD: ProtocolError = ProtocolError::Malformed {
            what: "authentication request",
        };
        if body.len() < 4 {
            return Err(BAD);
        }
        let rest = &body[4..];
        Ok(match be_i32(body, 0) {
            0 => AuthRequest::Ok,
            3 => AuthRequest::Cleartext,
            5 => {
                let salt: [u8; 4] = rest.try_into().map_err(|_| BAD)?;
                AuthRequest::Md5 { salt }
            }
            10 => {
                let mut mechs = Vec::new();
                let mut rest = rest;
                while let Some((m, after)) = cstr(rest) {
                    if m.is_empty() {
                        break;
                    }
                    mechs.push(std::str::from_utf8(m).map_err(|_| BAD)?);
                    rest = after;
                }
                AuthRequest::Sasl(mechs)
            }
            11 => AuthRequest::SaslContinue(rest),
            12 => AuthRequest::SaslFinal(rest),
            other => AuthRequest::Other(other),
        })
    }
}

/// The fields of an ErrorResponse or NoticeResponse that pgsplit uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// Non-localized severity (field V), else the localized one (S).
    pub severity: &'a str,
    pub code: &'a str,
    pub message: &'a str,
}

impl<'a> ErrorFields<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, ProtocolError> {
        const BAD: ProtocolError = ProtocolError::Malformed {
            what: "error response",
        };
        let mut out = ErrorFields::default();
        let mut localized_severity = "";
        let mut rest = body;
        loop {
            let (&field, after) = rest.split_first().ok_or(BAD)?;
            if field == 0 {
                break;
            }
            let (value, after) = cstr(after).ok_or(BAD)?;
            let value = std::str::from_utf8(value).unwrap_or("");
            match field {
                b'V' => out.severity = value,
                b'S' => localized_severity = value,
                b'C' => out.code = value,
                b'M' => out.message = value,
                _ => {}
            }
            rest = after;
        }
        if out.severity.is_empty() {
            out.severity = localized_severity;
        }
        Ok(out)
    }

    /// FATAL or PANIC: the server closes the connection after this message.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity, "FATAL" | "PANIC")
    }
}

/// Reads just the severity of an ErrorResponse body, for the hot path.
pub fn error_is_fatal(body: &[u8]) -> bool {
    ErrorFields::parse(body)
        .map(|f| f.is_fatal())
        .unwrap_or(false)
}

/// BackendKeyData ('K').
pub fn backend_key_data(body: &[u8]) -> Result<CancelKey, ProtocolError> {
    if body.len() != 8 {
        return Err(ProtocolError::Malformed {
            what: "BackendKeyData",
        });
    }
    Ok(CancelKey {
        pid: be_i32(body, 0),
        secret: be_i32(body, 4),
    })
}

/// ParameterStatus ('S'): name and value.
/// A DataRow's columns as text (`None` for NULL); non-UTF-8 is an error.
pub fn data_row_text(body: &[u8]) -> Result<Vec<Option<String>>, ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed { what: "data row" };
    let count = body.get(..2).ok_or(BAD)?;
    let count = u16::from_be_bytes([count[0], count[1]]) as usize;
    let mut rest = &body[2..];
    let mut columns = Vec::with_capacity(count);
    for _ in 0..count {
        let len = rest.get(..4).ok_or(BAD)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        rest = &rest[4..];
        if len < 0 {
            columns.push(None);
            continue;
        }
        let value = rest.get(..len as usize).ok_or(BAD)?;
        columns.push(Some(
            std::str::from_utf8(value).map_err(|_| BAD)?.to_owned(),
        ));
        rest = &rest[len as usize..];
    }
    Ok(columns)
}

pub fn parameter_status(body: &[u8]) -> Result<(&str, &str), ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed {
        what: "ParameterStatus",
    };
    let (name, rest) = cstr(body).ok_or(BAD)?;
    let (value, _) = cstr(rest).ok_or(BAD)?;
    Ok((
        std::str::from_utf8(name).map_err(|_| BAD)?,
        std::str::from_utf8(value).map_err(|_| BAD)?,
    ))
}

/// A client's SASLInitialResponse ('p' during SASL): mechanism and data.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed {
        what: "SASLInitialResponse",
    };
    let (mech, rest) = cstr(body).ok_or(BAD)?;
    if rest.len() < 4 {
        return Err(BAD);
    }
    let len = be_i32(rest, 0);
    let data = &rest[4..];
    if len < 0 || len as usize != data.len() {
        return Err(BAD);
    }
    Ok((std::str::from_utf8(mech).map_err(|_| BAD)?, data))
}

/// A client's PasswordMessage: the NUL-terminated password.
pub fn password(body: &[u8]) -> Result<&[u8], ProtocolError> {
    match cstr(body) {
        Some((pw, [])) => Ok(pw),
        _ => Err(ProtocolError::Malformed {
            what: "PasswordMessage",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_auth_requests() {
        assert_eq!(AuthRequest::parse(&[0, 0, 0, 0]).unwrap(), AuthRequest::Ok);
        assert_eq!(
            AuthRequest::parse(&[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(),
            AuthRequest::Md5 { salt: [1, 2, 3, 4] }
        );
        assert_eq!(
            AuthRequest::parse(b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0").unwrap(),
            AuthRequest::Sasl(vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
        );
        assert!(AuthRequest::parse(&[0, 0, 0, 5, 1]).is_err());
        assert!(AuthRequest::parse(&[0, 0]).is_err());
    }

    #[test]
    fn parses_server_error() {
        // Bytes as Postgres 15 sends them for an unknown database.
        let body = b"SFATAL\0VFATAL\0C3D000\0Mdatabase \"nope\" does not exist\0Fpostinit.c\0L885\0RInitPostgres\0\0";
        let f = ErrorFields::parse(body).unwrap();
        assert_eq!(f.code, "3D000");
        assert!(f.is_fatal());
        assert!(error_is_fatal(body));
        assert!(ErrorFields::parse(b"SERROR\0C42").is_err());
    }

    #[test]
    fn parses_client_auth_messages() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&5i32.to_be_bytes());
        body.extend_from_slice(b"n,,xx");
        assert_eq!(
            sasl_initial_response(&body).unwrap(),
            ("SCRAM-SHA-256", &b"n,,xx"[..])
        );
        body.push(b'!');
        assert!(sasl_initial_response(&body).is_err());
        assert_eq!(password(b"secret\0").unwrap(), b"secret");
        assert!(password(b"secret").is_err());
    }
}
