//! TLS towards backends, as libpq's `sslmode`: `disable` (plain TCP),
//! `require` (encrypted, the certificate not checked: no eavesdropping, but
//! no protection from an active man in the middle), `verify-ca` (the
//! certificate must chain to `server_tls.ca_file`) and `verify-full` (and
//! name the host of the backend's address). The same settings serve the
//! sessions' server connections ([`ServerTls::connect`]) and pgsplit's own
//! tokio-postgres connections (probes, position poller; see
//! [`super::postgres`]).
//!
//! A connection asks with an SSLRequest; a server that answers `N` is an
//! error under every mode but `disable` (there is no `prefer`: a proxy
//! that silently falls back to plain text protects nothing).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{certificates, private_key, provider, TlsError};
use crate::config::{ServerTls as Settings, ServerTlsMode};
use crate::protocol::encode;

/// Why TLS with a backend could not be set up. The caller names the backend.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error("the server does not accept TLS (it answered {answer:?} to SSLRequest) and server_tls.mode = \"{mode}\"")]
    Refused { answer: char, mode: &'static str },
    #[error("{host:?} is not a valid host name for TLS")]
    BadName { host: String },
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The connector for one configuration (None under `disable`).
pub struct ServerTls {
    mode: ServerTlsMode,
    connector: TlsConnector,
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTls({})", self.mode.as_str())
    }
}

impl ServerTls {
    /// Builds the connector from `[server_tls]`, reading its files; None
    /// when the mode is `disable`.
    pub fn new(settings: &Settings) -> Result<Option<Arc<ServerTls>>, TlsError> {
        let provider = provider();
        let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
            ServerTlsMode::Disable => return Ok(None),
            ServerTlsMode::Require => Arc::new(AnyCertificate(Arc::clone(&provider))),
            ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull => {
                let path = settings.ca_file.as_deref().ok_or_else(|| TlsError::File {
                    key: "server_tls.ca_file",
                    path: String::new(),
                    reason: format!("required by mode = \"{}\"", settings.mode.as_str()),
                })?;
                let mut roots = RootCertStore::empty();
                for cert in certificates("server_tls.ca_file", path)? {
                    roots.add(cert).map_err(|e| TlsError::File {
                        key: "server_tls.ca_file",
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                }
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::File {
                            key: "server_tls.ca_file",
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        })?;
                if settings.mode == ServerTlsMode::VerifyCa {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => builder.with_client_auth_cert(
                certificates("server_tls.cert_file", cert)?,
                private_key("server_tls.key_file", key)?,
            )?,
            _ => builder.with_no_client_auth(),
        };
        // What PostgreSQL 17 and later expect of a TLS client; older
        // servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        let config = Arc::new(config);
        Ok(Some(Arc::new(ServerTls {
            mode: settings.mode,
            connector: TlsConnector::from(Arc::clone(&config)),
            config,
        })))
    }

    pub fn mode(&self) -> ServerTlsMode {
        self.mode
    }

    /// The rustls configuration (for tokio-postgres, see [`super::postgres`]).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.config)
    }

    /// Asks `tcp`'s server for TLS (SSLRequest) and shakes hands, checking
    /// its certificate against `host` as the mode says. Not cancel-safe.
    pub async fn connect(
        &self,
        mut tcp: TcpStream,
        host: &str,
    ) -> Result<TlsStream<TcpStream>, ServerTlsError> {
        let name = server_name(host)?;
        let mut request = bytes::BytesMut::with_capacity(8);
        encode::ssl_request(&mut request);
        tcp.write_all(&request).await?;
        // One byte, read alone: nothing may be read past it before TLS
        // starts (CVE-2021-23222).
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        if answer[0] != b'S' {
            return Err(ServerTlsError::Refused {
                answer: char::from(answer[0]),
                mode: self.mode.as_str(),
            });
        }
        self.connector
            .connect(name, tcp)
            .await
            .map_err(ServerTlsError::Handshake)
    }
}

/// The name a backend's certificate is checked against: the host part of
/// its address (a DNS name or an IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, ServerTlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| ServerTlsError::BadName {
        host: host.to_owned(),
    })
}

/// `require`: any certificate, but the handshake's signatures are still
/// checked (the session key belongs to whoever holds that certificate).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first, then the name: a name error means
        // the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
