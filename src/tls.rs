//! TLS towards clients: a rustls acceptor built from PEM files, with the ring
//! provider (no aws-lc).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_file {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("tls.key_file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the acceptor; fails naming the file that could not be used.
pub fn acceptor(config: &Tls) -> Result<TlsAcceptor, TlsError> {
    let cert_path = config.cert_file.display().to_string();
    let key_path = config.key_file.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path,
            reason: "no certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|e| TlsError::Key {
        path: key_path,
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
