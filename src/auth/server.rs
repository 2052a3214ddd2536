//! Logging in to a server as a configured user: StartupMessage, whatever
//! authentication the server asks for (trust, cleartext, md5, SCRAM-SHA-256),
//! then the server's ParameterStatus and BackendKeyData until ReadyForQuery.

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncRead, AsyncWrite};

use super::UserEntry;
use crate::protocol::message::{self, AuthRequest, ErrorFields};
use crate::protocol::startup::CancelKey;
use crate::protocol::{encode, tag, ProtocolError};
use crate::wire::{self, read_message, WireError};

/// Largest message accepted from a server during login.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// What a server told us while we logged in.
#[derive(Debug)]
pub struct ServerLogin {
    /// The server's own cancel key (never shown to the client).
    pub key: CancelKey,
    /// The server's ParameterStatus and NoticeResponse messages, as wire
    /// bytes, to replay to a client logging in.
    pub greeting: BytesMut,
}

/// Why a login to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{message}")]
    Refused { code: String, message: String },
    #[error("server asked for authentication method {0}, which pgsplit does not support")]
    Unsupported(String),
    #[error("server asked for a password but user {0:?} has none configured")]
    NoPassword(String),
    #[error("SCRAM exchange with the server failed: {0}")]
    Scram(#[source] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl From<ProtocolError> for LoginError {
    fn from(e: ProtocolError) -> Self {
        LoginError::Wire(WireError::Protocol(e))
    }
}

/// Logs in over `stream` with `params` (user, database and the client's other
/// startup parameters). Not cancel-safe: drop the stream if abandoned.
pub async fn login<'a, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    user: &UserEntry,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<ServerLogin, LoginError> {
    let mut out = BytesMut::with_capacity(256);
    let mut buf = BytesMut::with_capacity(256);
    encode::startup_message(&mut out, params);
    wire::send(stream, &mut out).await?;

    let mut scram: Option<ScramSha256> = None;
    let mut key = None;
    let mut greeting = BytesMut::new();
    let password = || {
        user.password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .ok_or_else(|| LoginError::NoPassword(user.name.clone()))
    };
    loop {
        let t = read_message(stream, &mut buf, MAX_LOGIN_MESSAGE).await?;
        match t {
            tag::AUTHENTICATION => match AuthRequest::parse(&buf)? {
                AuthRequest::Ok => {}
                AuthRequest::Cleartext => {
                    encode::password_message(&mut out, password()?);
                    wire::send(stream, &mut out).await?;
                }
                AuthRequest::Md5 { salt } => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        user.name.as_bytes(),
                        password()?,
                        salt,
                    );
                    encode::password_message(&mut out, hash.as_bytes());
                    wire::send(stream, &mut out).await?;
                }
                AuthRequest::Sasl(mechanisms) => {
                    if !mechanisms.contains(&"SCRAM-SHA-256") {
                        return Err(LoginError::Unsupported(mechanisms.join(", ")));
                    }
                    let client = ScramSha256::new(password()?, ChannelBinding::unsupported());
                    encode::sasl_initial_response(&mut out, "SCRAM-SHA-256", client.message());
                    wire::send(stream, &mut out).await?;
                    scram = Some(client);
                }
                AuthRequest::SaslContinue(data) => {
                    let client = scram.as_mut().ok_or(ProtocolError::Malformed {
                        what: "SASL exchange",
                    })?;
                    client.update(data).map_err(LoginError::Scram)?;
                    encode::sasl_response(&mut out, client.message());
                    wire::send(stream, &mut out).await?;
                }
                AuthRequest::SaslFinal(data) => {
                    let client = scram.as_mut().ok_or(ProtocolError::Malformed {
                        what: "SASL exchange",
                    })?;
                    client.finish(data).map_err(LoginError::Scram)?;
                }
                AuthRequest::Other(code) => {
                    return Err(LoginError::Unsupported(format!("code {code}")))
                }
            },
            tag::PARAMETER_STATUS | tag::NOTICE_RESPONSE => {
                if t == tag::PARAMETER_STATUS {
                    message::parameter_status(&buf)?;
                }
                greeting.put_u8(t);
                greeting.put_i32(buf.len() as i32 + 4);
                greeting.extend_from_slice(&buf);
            }
            tag::BACKEND_KEY_DATA => key = Some(message::backend_key_data(&buf)?),
            tag::READY_FOR_QUERY => {
                let key = key.ok_or(ProtocolError::Malformed {
                    what: "login without BackendKeyData",
                })?;
                return Ok(ServerLogin { key, greeting });
            }
            tag::ERROR_RESPONSE => {
                let f = ErrorFields::parse(&buf)?;
                return Err(LoginError::Refused {
                    code: f.code.to_owned(),
                    message: f.message.to_owned(),
                });
            }
            // NegotiateProtocolVersion: nothing to do.
            _ => {}
        }
    }
}
