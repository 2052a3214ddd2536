//! TLS, with rustls and the ring provider (no aws-lc): towards clients, an
//! acceptor built from PEM files (here); towards backends, libpq's sslmode
//! ([`backend`]), also for pgsplit's own tokio-postgres connections
//! ([`postgres`]); and the `tls-server-end-point` channel binding data
//! SCRAM-SHA-256-PLUS binds to ([`end_point`]).

pub mod backend;
pub mod end_point;
pub mod postgres;

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;

/// A TLS file that could not be used, or a configuration rustls refused.
/// `key` names the configuration key (`tls.cert_file`, `server_tls.ca_file`, ...).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {path}: {reason}")]
    File {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// TLS towards clients: the acceptor, and the channel binding data of the
/// certificate it presents.
pub struct ClientTls {
    pub acceptor: TlsAcceptor,
    /// `tls-server-end-point` data of pgsplit's certificate; None when its
    /// signature algorithm names no usable hash (then SCRAM-SHA-256-PLUS is
    /// not offered).
    pub end_point: Option<Vec<u8>>,
}

/// Reads a PEM certificate chain (at least one certificate).
pub(crate) fn certificates(
    key: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::File {
        key,
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificate found".into()));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub(crate) fn private_key(
    key: &'static str,
    path: &std::path::Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        key,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the acceptor; fails naming the file that could not be used.
pub fn acceptor(config: &Tls) -> Result<ClientTls, TlsError> {
    let certs = certificates("tls.cert_file", &config.cert_file)?;
    let key = private_key("tls.key_file", &config.key_file)?;
    let end_point = end_point::of(&certs[0]);
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(ClientTls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        end_point,
    })
}
