//! Authentication, both ways: checking a client's password ([`client`]) and
//! logging in to a server as the configured user ([`server`]).
//!
//! pgsplit holds each user's password (from the config or the environment) and
//! derives the SCRAM keys once per configuration load, so a client login costs a
//! few HMACs, not a PBKDF2 run.

pub mod client;
pub mod scram;
pub mod server;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, Secret};
use crate::protocol::ProtocolError;

/// Why a client was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("user \"{0}\" is not configured in pgsplit")]
    UnknownUser(String),
    #[error("password authentication failed for user \"{0}\"")]
    WrongPassword(String),
    #[error("client selected an invalid SASL authentication mechanism")]
    BadMechanism,
    #[error("malformed SCRAM message: {0}")]
    Scram(&'static str),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
}

impl AuthError {
    /// SQLSTATE for the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::UnknownUser(_) => "28000",
            AuthError::WrongPassword(_) => "28P01",
            AuthError::BadMechanism
            | AuthError::Scram(_)
            | AuthError::Protocol(_)
            | AuthError::Wire(_) => "08P01",
        }
    }
}

/// A configured user, ready to authenticate clients and log in to servers.
#[derive(Debug)]
pub struct UserEntry {
    pub name: String,
    /// None only under `auth.method = "trust"` with no password given, in
    /// which case servers must trust pgsplit too.
    pub password: Option<Secret>,
    pub scram: Option<scram::ScramKeys>,
}

/// All users of one configuration generation, by name.
#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, Arc<UserEntry>>,
}

impl Users {
    /// Derives every user's SCRAM keys (a PBKDF2 run each).
    pub fn from_config(config: &Config) -> Users {
        let by_name = config
            .users
            .iter()
            .map(|u| {
                let scram = u
                    .password
                    .as_ref()
                    .map(|p| scram::ScramKeys::derive(p.expose().as_bytes()));
                let entry = UserEntry {
                    name: u.name.clone(),
                    password: u.password.clone(),
                    scram,
                };
                (u.name.clone(), Arc::new(entry))
            })
            .collect();
        Users { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<UserEntry>> {
        self.by_name.get(name)
    }
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
