//! One client's life: TLS negotiation, startup, authentication, choosing and
//! logging in to a server, then the relay until the client leaves.
//!
//! Every failure ends in [`SessionError`], which is reported to the client as
//! one ErrorResponse with its SQLSTATE (when the client can still hear it) and
//! logged once, at a level set by who caused it.

pub mod error;
pub mod relay;
pub mod ryw;
pub mod split;
pub mod state;
pub mod stream;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use self::error::SessionError;
use self::relay::{Failure, Outcome, Relay, Traffic};
use self::ryw::Ryw;
use self::split::Split;
use self::stream::ClientStream;
use self::upstream::Upstream;
use crate::app::{Admission, Shared};
use crate::auth::{client::authenticate, AuthError};
use crate::cancel::{send_cancel, CancelHandle};
use crate::error::ErrorKind;
use crate::protocol::encode::{self, Severity};
use crate::protocol::startup::{self, StartupPacket, StartupParams};
use crate::protocol::ProtocolError;
use crate::route::{Dest, Listener};
use crate::wire;

/// Serves one accepted client connection to its end. Never panics on bad
/// input; every error is answered and logged here.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    shared: Arc<Shared>,
    admission: Admission,
) {
    tcp.set_nodelay(true).ok();
    let started = Instant::now();
    let metrics = shared.metrics.listener(listener);
    metrics.connections.inc();
    metrics.connections_total.inc();
    let mut stream = ClientStream::Plain(tcp);
    let mut who = Who::default();
    let result = run(&mut stream, listener, &shared, admission, &mut who).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(outcome) => {
            let t = who.traffic;
            tracing::info!(
                client = %peer, user = who.user, database = who.database, listener = listener.as_str(),
                backend = who.backend, duration_ms = elapsed_ms, bytes_in = t.bytes_in,
                bytes_out = t.bytes_out, to_primary = t.to_primary, to_replica = t.to_replica,
                end = ?outcome, "session ended"
            );
        }
        Err(Failure { error, can_tell }) => {
            if let (true, Some(code)) = (can_tell, error.sqlstate()) {
                let mut out = BytesMut::new();
                encode::error_response(&mut out, Severity::Fatal, code, &error.client_message());
                let _ = stream.write_all(&out).await;
                let _ = stream.flush().await;
                metrics.client_error(code);
            }
            let code = error.sqlstate().unwrap_or("-");
            let t = who.traffic;
            macro_rules! log_end {
                ($level:ident) => {
                    tracing::$level!(
                        client = %peer, user = who.user, database = who.database, listener = listener.as_str(),
                        backend = who.backend, duration_ms = elapsed_ms, bytes_in = t.bytes_in,
                        bytes_out = t.bytes_out, to_primary = t.to_primary, to_replica = t.to_replica,
                        sqlstate = code, error = %error, "session ended with an error"
                    )
                };
            }
            match error.kind() {
                ErrorKind::Server | ErrorKind::Internal => log_end!(warn),
                _ => log_end!(info),
            }
        }
    }
    let _ = stream.shutdown().await;
    metrics.connections.dec();
}

/// What the session log line says about the client.
#[derive(Default)]
struct Who {
    user: String,
    database: String,
    backend: String,
    traffic: Traffic,
}

async fn run(
    stream: &mut ClientStream,
    listener: Listener,
    shared: &Arc<Shared>,
    admission: Admission,
    who: &mut Who,
) -> Result<Outcome, Failure> {
    let tell = |error: SessionError| Failure {
        error,
        can_tell: true,
    };
    let config = shared.config.load_full();
    let login_ms = config.limits.login_timeout_ms;
    let cancel = shared.cancels.register();
    let upstream = match tokio::time::timeout(
        Duration::from_millis(login_ms),
        log_in(stream, listener, shared, &admission, &cancel, who),
    )
    .await
    {
        Err(_) => return Err(tell(SessionError::LoginTimeout { ms: login_ms })),
        Ok(Err(e)) => return Err(tell(e)),
        Ok(Ok(None)) => return Ok(Outcome::Terminated),
        Ok(Ok(Some(upstream))) => upstream,
    };
    let (report_lsn, min_lsn) = (upstream.report_lsn, upstream.min_lsn);
    let relay = Relay {
        client: stream,
        upstream,
        max_message: config.limits.max_message_size,
        split: (listener == Listener::ReadWrite).then(Split::default),
        ryw: Ryw {
            report: report_lsn,
            floor: min_lsn,
            ..Ryw::default()
        },
        memo: Default::default(),
    };
    match relay.run(&mut who.traffic).await {
        Ok(Outcome::Shutdown) => Err(Failure {
            error: SessionError::Shutdown,
            can_tell: true,
        }),
        other => other,
    }
}

/// Startup, authentication and the first server. Ok(None) for a connection
/// that only carried a CancelRequest.
async fn log_in<'a>(
    stream: &mut ClientStream,
    listener: Listener,
    shared: &'a Arc<Shared>,
    admission: &Admission,
    cancel: &'a CancelHandle,
    who: &mut Who,
) -> Result<Option<Upstream<'a>>, SessionError> {
    let config = shared.config.load_full();
    let Some(params) = negotiate(stream, shared).await? else {
        return Ok(None);
    };
    if config.tls.as_ref().is_some_and(|t| t.required) && !stream.is_tls() {
        return Err(SessionError::TlsRequired);
    }
    let user_name = params.user().ok_or(SessionError::NoUser)?.to_owned();
    let database = params.database().unwrap_or(&user_name).to_owned();
    who.user = user_name.clone();
    who.database = database.clone();
    if params
        .get("replication")
        .is_some_and(|v| v != "false" && v != "0" && v != "off")
    {
        return Err(SessionError::Replication);
    }
    let mut out = BytesMut::with_capacity(1024);
    let options: Vec<&str> = params.protocol_options().collect();
    if params.minor > 0 || !options.is_empty() {
        encode::negotiate_protocol_version(&mut out, startup::PROTOCOL_3_0, options.into_iter());
    }
    if let Admission::Rejected { max, .. } = admission {
        return Err(SessionError::TooManyClients { max: *max });
    }
    let users = shared.users.load_full();
    let user = users
        .get(&user_name)
        .ok_or_else(|| AuthError::UnknownUser(user_name.clone()))?
        .clone();
    authenticate(stream, &mut out, config.auth.method, &user).await?;

    // The client's parameters go to the server, except the ones pgsplit sets.
    let mut server_params = vec![
        ("user".to_owned(), user_name.clone()),
        ("database".to_owned(), database),
    ];
    let report_lsn = params
        .get("pgsplit.report_lsn")
        .is_some_and(|v| matches!(v, "on" | "true" | "1" | "yes"));
    let min_lsn = match params.get("pgsplit.min_lsn") {
        Some(v) => Some(v.parse::<crate::topology::lsn::Lsn>().map_err(|why| {
            SessionError::BadParameter {
                name: "pgsplit.min_lsn",
                why,
            }
        })?),
        None => None,
    };
    server_params.extend(params.params.into_iter().filter(|(k, _)| {
        !matches!(k.as_str(), "user" | "database" | "replication")
            && !k.starts_with("_pq_.")
            && !k.starts_with("pgsplit.")
    }));
    // The pool key: every login parameter, in a stable order.
    let login = {
        let mut sorted: Vec<&(String, String)> = server_params.iter().collect();
        sorted.sort();
        sorted
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\0")
    };
    let mut upstream = Upstream {
        server: None,
        dest: match listener {
            Listener::ReadWrite => Dest::Primary,
            Listener::ReadOnly => Dest::Replica,
        },
        parked: None,
        shared,
        listener,
        user,
        server_params,
        cancel,
        login: login.clone().into(),
        login_read_only: format!("{login}\0read_only").into(),
        report_lsn,
        min_lsn,
    };
    shared
        .wait_unpaused()
        .await
        .map_err(|ms| SessionError::PauseTimeout { ms })?;
    upstream.attach().await?;
    let server = upstream.server.as_ref().expect("attached");
    who.backend = server.name.clone();
    out.extend_from_slice(&server.parameters);
    encode::backend_key_data(&mut out, cancel.key());
    encode::ready_for_query(&mut out, b'I');
    wire::send(stream, &mut out).await?;
    Ok(Some(upstream))
}

/// Reads startup packets, answering SSLRequest and GSSENCRequest, until a
/// StartupMessage (returned) or a CancelRequest (handled; returns None).
async fn negotiate(
    stream: &mut ClientStream,
    shared: &Shared,
) -> Result<Option<StartupParams>, SessionError> {
    let mut asked_ssl = false;
    let mut asked_gss = false;
    loop {
        let mut prefix = [0u8; 4];
        wire::read_exact(stream, &mut prefix).await?;
        let mut body = vec![0u8; startup::body_len(prefix)?];
        wire::read_exact(stream, &mut body).await?;
        match startup::parse(&body)? {
            StartupPacket::SslRequest if !asked_ssl && !stream.is_tls() => {
                asked_ssl = true;
                match &shared.tls {
                    Some(acceptor) => {
                        stream
                            .write_all(b"S")
                            .await
                            .map_err(SessionError::ClientIo)?;
                        let tcp = stream.take_plain().expect("not TLS yet");
                        let tls = acceptor.accept(tcp).await.map_err(SessionError::Tls)?;
                        *stream = ClientStream::Tls(Box::new(tls));
                    }
                    None => stream
                        .write_all(b"N")
                        .await
                        .map_err(SessionError::ClientIo)?,
                }
            }
            StartupPacket::GssEncRequest if !asked_gss && !stream.is_tls() => {
                asked_gss = true;
                stream
                    .write_all(b"N")
                    .await
                    .map_err(SessionError::ClientIo)?;
            }
            StartupPacket::Cancel(key) => {
                if let Some(target) = shared.cancels.lookup(key) {
                    tracing::debug!(pid = key.pid, "forwarding cancel request");
                    let _ = send_cancel(target, Duration::from_secs(5)).await;
                }
                return Ok(None);
            }
            StartupPacket::Startup(params) => return Ok(Some(params)),
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                return Err(ProtocolError::Malformed {
                    what: "repeated encryption request",
                }
                .into())
            }
        }
    }
}
