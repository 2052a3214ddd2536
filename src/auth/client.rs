//! Checking a client's password. The exchange ends with AuthenticationOk
//! appended to `out` but not yet sent, so the caller can send it together with
//! the ParameterStatus messages that follow.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::scram::{mechanisms, ScramServer};
use super::{constant_time_eq, AuthError, UserEntry};
use crate::config::AuthMethod;
use crate::protocol::{encode, message, tag, ProtocolError};
use crate::wire::{self, read_message};

/// Largest authentication message accepted from a client.
const MAX_AUTH_MESSAGE: usize = 8192;

/// Runs the configured method against the client. On success AuthenticationOk
/// (and for SCRAM the server-final message before it) is in `out`, unsent.
/// `binding` is the `tls-server-end-point` data of the client's TLS
/// connection (None on plain TCP): SCRAM then offers channel binding.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
    method: AuthMethod,
    user: &UserEntry,
    binding: Option<&[u8]>,
) -> Result<(), AuthError> {
    let mut buf = BytesMut::new();
    match method {
        AuthMethod::Trust => {}
        AuthMethod::Md5 => {
            let password = user
                .password
                .as_ref()
                .ok_or_else(|| AuthError::WrongPassword(user.name.clone()))?;
            let salt: [u8; 4] = rand::random();
            encode::auth_md5(out, salt);
            wire::send(stream, out).await?;
            expect_password(stream, &mut buf).await?;
            let given = message::password(&buf)?;
            let expected = postgres_protocol::authentication::md5_hash(
                user.name.as_bytes(),
                password.expose().as_bytes(),
                salt,
            );
            if !constant_time_eq(given, expected.as_bytes()) {
                return Err(AuthError::WrongPassword(user.name.clone()));
            }
        }
        AuthMethod::ScramSha256 => {
            let keys = user
                .scram
                .as_ref()
                .ok_or_else(|| AuthError::WrongPassword(user.name.clone()))?;
            encode::auth_sasl(out, mechanisms(binding));
            wire::send(stream, out).await?;
            expect_password(stream, &mut buf).await?;
            let (mechanism, client_first) = message::sasl_initial_response(&buf)?;
            let (exchange, server_first) =
                ScramServer::start(keys, mechanism, client_first, binding)?;
            encode::auth_sasl_continue(out, server_first.as_bytes());
            wire::send(stream, out).await?;
            expect_password(stream, &mut buf).await?;
            let server_final = exchange.finish(&buf, &user.name)?;
            encode::auth_sasl_final(out, server_final.as_bytes());
        }
    }
    encode::auth_ok(out);
    Ok(())
}

/// Reads the client's next message, which must be a password-type ('p') one.
async fn expect_password<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<(), AuthError> {
    let t = read_message(stream, buf, MAX_AUTH_MESSAGE).await?;
    if t != tag::PASSWORD {
        return Err(ProtocolError::Unexpected {
            tag: t,
            phase: "authentication",
        }
        .into());
    }
    Ok(())
}
