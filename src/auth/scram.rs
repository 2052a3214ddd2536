//! SCRAM-SHA-256 as a server (RFC 5802, RFC 7677), pure: two steps, no I/O.
//!
//! pgsplit does not offer SCRAM-SHA-256-PLUS (channel binding), so a client
//! that says `y,,` ("I could bind but you did not offer it") is accepted and one
//! that demands binding (`p=`) is refused.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{constant_time_eq, AuthError};

pub const MECHANISM: &str = "SCRAM-SHA-256";

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
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl<'k> ScramServer<'k> {
    /// Takes the client-first message; returns the exchange and the
    /// server-first message to send.
    pub fn start(keys: &'k ScramKeys, client_first: &[u8]) -> Result<(Self, String), AuthError> {
        let msg = std::str::from_utf8(client_first).map_err(|_| AuthError::Scram("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(AuthError::Scram("missing GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(AuthError::Scram("channel binding was not offered"))
            }
            _ => return Err(AuthError::Scram("bad channel binding flag")),
        }
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
        if binding != B64.encode(&self.gs2_header) {
            return Err(AuthError::Scram("channel binding does not match"));
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
        let keys = ScramKeys::derive(server_password.as_bytes());
        let mut client =
            ScramSha256::new(client_password.as_bytes(), ChannelBinding::unsupported());
        let (server, server_first) = ScramServer::start(&keys, client.message())?;
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
        assert!(ScramServer::start(&keys, b"garbage").is_err());
        assert!(ScramServer::start(&keys, b"p=tls-server-end-point,,n=,r=abc").is_err());
        assert!(ScramServer::start(&keys, b"n,a=admin,n=,r=abc").is_err());
        let (server, _) = ScramServer::start(&keys, b"n,,n=,r=abc").unwrap();
        assert!(server.finish(b"c=biws,r=wrongnonce,p=AAAA", "u").is_err());
    }

    #[test]
    fn parses_postgres_verifier() {
        let v = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=:dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=";
        let k = ScramKeys::from_verifier(v).unwrap();
        assert_eq!(k.iterations, 4096);
        assert!(ScramKeys::from_verifier("md5abc").is_none());
    }
}
