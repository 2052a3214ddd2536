//! SCRAM-SHA-256 as a server (RFC 5802, RFC 7677), pure: two steps, no I/O.
//!
//! Channel binding (SCRAM-SHA-256-PLUS, `tls-server-end-point`, RFC 5929) is
//! offered to clients on TLS when pgsplit's certificate allows it (see
//! `crate::tls::end_point`), as PostgreSQL does. Then:
//! - SCRAM-SHA-256-PLUS must come with `p=tls-server-end-point`, and the
//!   client's final message must carry the binding data of pgsplit's own
//!   certificate (a man in the middle presenting another certificate fails);
//! - SCRAM-SHA-256 with `n` (the client chose not to bind) is accepted;
//!   with `y` ("I could bind, but you did not offer it") it is refused, since
//!   pgsplit did offer it: someone removed it on the way (a downgrade).
//!
//! Without TLS only SCRAM-SHA-256 is offered, `y` is accepted and `p=` is
//! refused.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{constant_time_eq, AuthError};

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// With channel binding.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel binding type offered.
const END_POINT: &str = "tls-server-end-point";

/// The mechanisms offered to a client, best first: with `binding` (the
/// client is on TLS and pgsplit's certificate gives binding data) the PLUS
/// one too.
pub fn mechanisms(binding: Option<&[u8]>) -> &'static [&'static str] {
    match binding {
        Some(_) => &[MECHANISM_PLUS, MECHANISM],
        None => &[MECHANISM],
    }
}

/// The keys a server keeps for one password: never the password itself.
#[derive(Clone)]
pub struct ScramKeys {
    salt_b64: String,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(<redacted>)")
    }
}

impl ScramKeys {
    /// Derives keys with a fresh random salt and 4096 iterations, as Postgres
    /// does for `password_encryption = scram-sha-256`.
    pub fn derive(password: &[u8]) -> ScramKeys {
        let verifier = postgres_protocol::password::scram_sha_256(password);
        Self::from_verifier(&verifier).expect("postgres-protocol produces a well-formed verifier")
    }

    /// The keys as a Postgres verifier (`pg_authid.rolpassword` format): a
    /// secret, for tests that check it is never shown.
    pub fn verifier(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            self.salt_b64,
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    /// Parses a Postgres verifier: `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`.
    pub fn from_verifier(v: &str) -> Option<ScramKeys> {
        let rest = v.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(ScramKeys {
            salt_b64: salt.to_owned(),
            iterations: iter.parse().ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A SCRAM exchange after the server-first message was produced.
pub struct ScramServer<'k> {
    keys: &'k ScramKeys,
    gs2_header: String,
    /// The channel binding data the client must send back: empty unless
    /// it binds.
    binding: Vec<u8>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl<'k> ScramServer<'k> {
    /// Takes the mechanism the client chose and its client-first message;
    /// returns the exchange and the server-first message to send. `binding`
    /// is what [`mechanisms`] was given: the `tls-server-end-point` data of
    /// the client's TLS connection, if offered.
    pub fn start(
        keys: &'k ScramKeys,
        mechanism: &str,
        client_first: &[u8],
        binding: Option<&[u8]>,
    ) -> Result<(Self, String), AuthError> {
        let plus = match mechanism {
            MECHANISM => false,
            MECHANISM_PLUS if binding.is_some() => true,
            _ => return Err(AuthError::BadMechanism),
        };
        let msg = std::str::from_utf8(client_first).map_err(|_| AuthError::Scram("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(AuthError::Scram("missing GS2 header"))?;
        let bound = match (flag, plus) {
            ("n", false) => Vec::new(),
            ("y", false) if binding.is_none() => Vec::new(),
            ("y", false) => {
                return Err(AuthError::Scram(
                    "channel binding negotiation error: the client thinks pgsplit offered no channel binding, but it did",
                ))
            }
            (f, true) if f.strip_prefix("p=") == Some(END_POINT) => {
                binding.unwrap_or_default().to_vec()
            }
            (f, true) if f.starts_with("p=") => {
                return Err(AuthError::Scram("unsupported channel binding type"))
            }
            (_, true) => {
                return Err(AuthError::Scram(
                    "SCRAM-SHA-256-PLUS was chosen without channel binding",
                ))
            }
            (f, false) if f.starts_with("p=") => {
                return Err(AuthError::Scram(
                    "channel binding was asked for with SCRAM-SHA-256 (it needs SCRAM-SHA-256-PLUS)",
                ))
            }
            _ => return Err(AuthError::Scram("bad channel binding flag")),
        };
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(AuthError::Scram("missing GS2 header"))?;
        if !authzid.is_empty() {
            return Err(AuthError::Scram("authorization identity is not supported"));
        }
        let gs2_header = format!("{flag},,");
        let client_nonce = bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(AuthError::Scram("missing client nonce"))?;
        if !bare.starts_with("n=") {
            return Err(AuthError::Scram("missing user name attribute"));
        }
        let mut random = [0u8; 18];
        rand::fill(&mut random);
        let nonce = format!("{client_nonce}{}", B64.encode(random));
        let server_first = format!("r={nonce},s={},i={}", keys.salt_b64, keys.iterations);
        let exchange = ScramServer {
            keys,
            gs2_header,
            binding: bound,
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Takes the client-final message; on a correct proof returns the
    /// server-final message (`v=...`). `user` only names the user in the error.
    pub fn finish(self, client_final: &[u8], user: &str) -> Result<String, AuthError> {
        let msg = std::str::from_utf8(client_final).map_err(|_| AuthError::Scram("not UTF-8"))?;
        let (without_proof, proof_b64) = msg
            .rsplit_once(",p=")
            .ok_or(AuthError::Scram("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(AuthError::Scram("missing channel binding"))?;
        let mut expected = self.gs2_header.as_bytes().to_vec();
        expected.extend_from_slice(&self.binding);
        if !constant_time_eq(binding.as_bytes(), B64.encode(&expected).as_bytes()) {
            return Err(AuthError::Scram("channel binding check failed"));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(AuthError::Scram("missing nonce"))?;
        if nonce != self.nonce {
            return Err(AuthError::Scram("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof_b64)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(AuthError::Scram("malformed proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.keys.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if !constant_time_eq(&stored, &self.keys.stored_key) {
            return Err(AuthError::WrongPassword(user.to_owned()));
        }
        let server_signature = hmac(&self.keys.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs a whole exchange with postgres-protocol's client implementation.
    fn exchange(server_password: &str, client_password: &str) -> Result<(), AuthError> {
        bound_exchange(
            server_password,
            client_password,
            None,
            MECHANISM,
            ChannelBinding::unsupported(),
        )
    }

    /// An exchange where pgsplit offers `offered` binding data, and the
    /// client chooses `mechanism` with `binding`.
    fn bound_exchange(
        server_password: &str,
        client_password: &str,
        offered: Option<&[u8]>,
        mechanism: &str,
        binding: ChannelBinding,
    ) -> Result<(), AuthError> {
        let keys = ScramKeys::derive(server_password.as_bytes());
        let mut client = ScramSha256::new(client_password.as_bytes(), binding);
        let (server, server_first) =
            ScramServer::start(&keys, mechanism, client.message(), offered)?;
        client.update(server_first.as_bytes()).unwrap();
        let server_final = server.finish(client.message(), "app")?;
        client
            .finish(server_final.as_bytes())
            .expect("client accepts the server signature");
        Ok(())
    }

    #[test]
    fn right_password_passes_and_server_proves_itself() {
        exchange("s3cret", "s3cret").unwrap();
    }

    #[test]
    fn wrong_password_is_refused() {
        assert!(
            matches!(exchange("s3cret", "guess"), Err(AuthError::WrongPassword(u)) if u == "app")
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let keys = ScramKeys::derive(b"pw");
        let start = |first: &[u8]| ScramServer::start(&keys, MECHANISM, first, None);
        assert!(start(b"garbage").is_err());
        assert!(start(b"p=tls-server-end-point,,n=,r=abc").is_err());
        assert!(start(b"n,a=admin,n=,r=abc").is_err());
        let (server, _) = start(b"n,,n=,r=abc").unwrap();
        assert!(server.finish(b"c=biws,r=wrongnonce,p=AAAA", "u").is_err());
    }

    const END_POINT_DATA: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn channel_binding_is_offered_only_with_tls_data() {
        assert_eq!(mechanisms(None), &[MECHANISM]);
        assert_eq!(
            mechanisms(Some(END_POINT_DATA)),
            &[MECHANISM_PLUS, MECHANISM]
        );
    }

    #[test]
    fn a_bound_login_passes_with_pgsplits_certificate_data() {
        let binding = ChannelBinding::tls_server_end_point(END_POINT_DATA.to_vec());
        bound_exchange("pw", "pw", Some(END_POINT_DATA), MECHANISM_PLUS, binding).unwrap();
        // The password still counts.
        let binding = ChannelBinding::tls_server_end_point(END_POINT_DATA.to_vec());
        let e = bound_exchange("pw", "nope", Some(END_POINT_DATA), MECHANISM_PLUS, binding);
        assert!(matches!(e, Err(AuthError::WrongPassword(_))), "{e:?}");
    }

    #[test]
    fn a_bound_login_through_another_certificate_fails() {
        // A man in the middle terminates TLS with its own certificate: the
        // client binds to that one.
        let theirs = ChannelBinding::tls_server_end_point(b"another certificate".to_vec());
        let e = bound_exchange("pw", "pw", Some(END_POINT_DATA), MECHANISM_PLUS, theirs);
        assert!(
            matches!(e, Err(AuthError::Scram(m)) if m.contains("channel binding check failed")),
            "{e:?}"
        );
    }

    #[test]
    fn downgrades_and_unoffered_binding_are_refused() {
        // "y": the client could bind but saw no PLUS; pgsplit offered it.
        let e = bound_exchange(
            "pw",
            "pw",
            Some(END_POINT_DATA),
            MECHANISM,
            ChannelBinding::unrequested(),
        );
        assert!(
            matches!(e, Err(AuthError::Scram(m)) if m.contains("negotiation")),
            "{e:?}"
        );
        // Without TLS, "y" is the truth.
        bound_exchange("pw", "pw", None, MECHANISM, ChannelBinding::unrequested()).unwrap();
        // PLUS was not offered without TLS.
        let binding = ChannelBinding::tls_server_end_point(END_POINT_DATA.to_vec());
        let e = bound_exchange("pw", "pw", None, MECHANISM_PLUS, binding);
        assert!(matches!(e, Err(AuthError::BadMechanism)), "{e:?}");
        // Choosing not to bind over TLS is the client's right (libpq's
        // channel_binding=disable).
        bound_exchange(
            "pw",
            "pw",
            Some(END_POINT_DATA),
            MECHANISM,
            ChannelBinding::unsupported(),
        )
        .unwrap();
    }

    #[test]
    fn parses_postgres_verifier() {
        let v = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=:dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=";
        let k = ScramKeys::from_verifier(v).unwrap();
        assert_eq!(k.iterations, 4096);
        assert_eq!(k.verifier(), v);
        assert!(ScramKeys::from_verifier("md5abc").is_none());
    }
}
