//! One logged-in server connection: opening it ([`connect`]), what it holds
//! of the sessions that used it (settings fingerprint, prepared statements),
//! and pgsplit's own request/reply on it ([`exchange`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::statements::ServerStatements;
use super::stream::ServerStream;
use super::Slot;
use crate::auth::server::{login, LoginError};
use crate::auth::UserEntry;
use crate::cancel::CancelTarget;
use crate::protocol::frame::split_frame;
use crate::protocol::startup::CancelKey;
use crate::protocol::{message, tag};
use crate::tls::backend::{ServerTls, ServerTlsError};

/// A session's login: what a server connection is logged in with, and the
/// pool key for it.
#[derive(Debug, Clone)]
pub struct Login {
    /// Every login parameter in a stable order (plus the read-only flag).
    pub key: Arc<str>,
    /// user, database and the client's other startup parameters.
    pub params: Arc<[(String, String)]>,
    /// Logged in with `default_transaction_read_only = on` (the read-only
    /// port's fallback on the primary).
    pub read_only: bool,
}

impl Login {
    pub fn new(params: Vec<(String, String)>, read_only: bool) -> Login {
        let mut sorted: Vec<&(String, String)> = params.iter().collect();
        sorted.sort();
        let mut key = String::new();
        for (k, v) in sorted {
            key.push_str(k);
            key.push('=');
            key.push_str(v);
            key.push('\0');
        }
        if read_only {
            key.push_str("\0read_only");
        }
        Login {
            key: key.into(),
            params: params.into(),
            read_only,
        }
    }

    /// The same login, read-only.
    pub fn read_only(&self) -> Login {
        Login::new(self.params.to_vec(), true)
    }

    pub fn database(&self) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == "database")
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Sessions that log in with the same parameters share one copy of them (a
/// pooled application's clients all look alike): an idle session then holds
/// two reference counts, not its own strings.
#[derive(Debug, Default)]
pub struct Logins {
    inner: Mutex<LoginTable>,
}

#[derive(Debug, Default)]
struct LoginTable {
    map: HashMap<Arc<str>, Weak<[(String, String)]>>,
    /// Sweep dead entries when the map reaches this size.
    sweep_at: usize,
}

impl Logins {
    /// `login`, sharing the key and parameters of a live equal one.
    pub fn share(&self, login: Login) -> Login {
        let mut table = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((key, params)) = table
            .map
            .get_key_value(&*login.key)
            .and_then(|(key, params)| Some((Arc::clone(key), params.upgrade()?)))
        {
            return Login {
                key,
                params,
                read_only: login.read_only,
            };
        }
        if table.map.len() >= table.sweep_at {
            table.map.retain(|_, params| params.strong_count() > 0);
            table.sweep_at = (table.map.len() * 2).max(1024);
        }
        table
            .map
            .insert(Arc::clone(&login.key), Arc::downgrade(&login.params));
        login
    }
}

/// What a client logging in is told: the server's ParameterStatus and any
/// NoticeResponse it sent during login, as wire bytes.
#[derive(Debug)]
pub struct Greeting {
    pub bytes: BytesMut,
    /// `default_transaction_isolation` is serializable for this login (role
    /// or database default, or a startup parameter).
    pub serializable: bool,
}

/// A backend chosen for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into the snapshot's backends.
    pub backend: usize,
    pub name: Arc<str>,
    pub address: Arc<str>,
}

/// A logged-in connection to one backend.
#[derive(Debug)]
pub struct ServerConn {
    pub stream: ServerStream,
    pub name: Arc<str>,
    /// The configured `host:port`.
    pub address: Arc<str>,
    pub addr: SocketAddr,
    /// The server's own cancel key.
    pub key: CancelKey,
    /// What it said while logging in.
    pub greeting: BytesMut,
    pub login: Arc<str>,
    pub read_only: bool,
    /// Fingerprint of the session settings it holds (0: as logged in).
    pub settings: u64,
    /// A session set its role or session user on it.
    pub role_changed: bool,
    pub statements: ServerStatements,
    /// Unique among connections, for a session to find its last one.
    pub serial: u64,
    /// When it went idle.
    pub idle_since: Instant,
    /// The worker thread whose runtime its socket is registered with.
    pub thread: std::thread::ThreadId,
    /// Sessions run on per-thread runtimes (see [`ServerConn::adopt`]).
    pub per_thread: bool,
    /// Its place under `limits.max_server_connections`.
    pub(super) slot: Slot,
}

impl ServerConn {
    pub fn cancel_target(&self) -> CancelTarget {
        CancelTarget {
            addr: self.addr,
            key: self.key,
        }
    }

    /// Whether it has nothing to say: not closed, no message waiting (an
    /// idle server only speaks to say goodbye or to notify).
    pub fn quiet(&mut self) -> bool {
        self.stream.quiet()
    }

    /// Moves its socket to the calling thread's runtime, if it lives on
    /// another (sessions run on per-core runtimes; a socket wakes the
    /// runtime it is registered with). The descriptor is duplicated and
    /// registered here; the old one is deregistered and closed.
    pub fn adopt(&mut self) -> std::io::Result<()> {
        let here = std::thread::current().id();
        if self.thread == here || !self.per_thread {
            return Ok(());
        }
        let dup = {
            use std::os::fd::AsFd;
            std::net::TcpStream::from(self.stream.tcp().as_fd().try_clone_to_owned()?)
        };
        dup.set_nonblocking(true)?;
        let moved = TcpStream::from_std(dup)?;
        drop(self.stream.replace_tcp(moved));
        self.thread = here;
        Ok(())
    }
}

/// Why no server connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("pgsplit could not connect to backend {backend} ({address}): {source}")]
    Unreachable {
        backend: String,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pgsplit timed out after {ms} ms connecting to backend {backend} ({address})")]
    Timeout {
        backend: String,
        address: String,
        ms: u128,
    },
    #[error("pgsplit could not set up TLS with backend {backend} ({address}): {source}")]
    Tls {
        backend: String,
        address: String,
        #[source]
        source: ServerTlsError,
    },
    #[error("backend {backend}: {source}")]
    Login {
        backend: String,
        #[source]
        source: LoginError,
    },
}

impl ConnectError {
    /// SQLSTATE for the client: the server's own code when it refused us (an
    /// unknown database is 3D000 whoever asks), else 08001.
    pub fn sqlstate(&self) -> &str {
        match self {
            ConnectError::Login {
                source: LoginError::Refused { code, .. },
                ..
            } => code,
            _ => crate::error::sqlstate::CANNOT_CONNECT,
        }
    }

    /// The message for the client: the server's own words when it refused us.
    pub fn client_message(&self) -> String {
        match self {
            ConnectError::Login {
                source: LoginError::Refused { message, .. },
                ..
            } => message.clone(),
            other => other.to_string(),
        }
    }

    /// True when another backend might do better (the server was unreachable).
    pub fn is_unreachable(&self) -> bool {
        !matches!(
            self,
            ConnectError::Login {
                source: LoginError::Refused { .. },
                ..
            }
        )
    }
}

/// Connects to `target` and logs in as `user` with `login`, within
/// `timeout`. The connection takes `slot`.
pub(super) async fn connect(
    target: &Target,
    tls: Option<&ServerTls>,
    user: &UserEntry,
    login_as: &Login,
    timeout: Duration,
    slot: Slot,
    serial: u64,
) -> Result<Box<ServerConn>, ConnectError> {
    let unreachable = |source| ConnectError::Unreachable {
        backend: target.name.to_string(),
        address: target.address.to_string(),
        source,
    };
    let work = async {
        let stream = TcpStream::connect(&*target.address)
            .await
            .map_err(unreachable)?;
        stream.set_nodelay(true).ok();
        let addr = stream.peer_addr().map_err(unreachable)?;
        let mut stream = match tls {
            None => ServerStream::Plain(stream),
            Some(tls) => {
                let host = crate::topology::probe::split_address(&target.address)
                    .map_or(&*target.address, |(host, _)| host);
                let tls = tls
                    .connect(stream, host)
                    .await
                    .map_err(|source| ConnectError::Tls {
                        backend: target.name.to_string(),
                        address: target.address.to_string(),
                        source,
                    })?;
                ServerStream::Tls(Box::new(tls))
            }
        };
        let read_only = [("default_transaction_read_only", "on")];
        let extra: &[(&str, &str)] = if login_as.read_only { &read_only } else { &[] };
        let params = login_as
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().copied());
        let logged_in =
            login(&mut stream, user, params)
                .await
                .map_err(|source| ConnectError::Login {
                    backend: target.name.to_string(),
                    source,
                })?;
        Ok((stream, addr, logged_in))
    };
    let (stream, addr, logged_in) =
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ConnectError::Timeout {
                backend: target.name.to_string(),
                address: target.address.to_string(),
                ms: timeout.as_millis(),
            })??;
    Ok(Box::new(ServerConn {
        stream,
        name: Arc::clone(&target.name),
        address: Arc::clone(&target.address),
        addr,
        key: logged_in.key,
        greeting: logged_in.greeting,
        login: Arc::clone(&login_as.key),
        read_only: login_as.read_only,
        settings: 0,
        role_changed: false,
        statements: ServerStatements::default(),
        serial,
        idle_since: Instant::now(),
        thread: std::thread::current().id(),
        per_thread: false,
        slot,
    }))
}

/// Sends `out` and reads the server's replies up to the `replies`-th
/// ReadyForQuery, starting with the `pending` bytes already read; DataRows
/// go to `rows` (as text) when given. Returns the first error the server
/// reported, if any. Err: the connection is unusable.
pub async fn exchange(
    server: &mut ServerConn,
    out: &[u8],
    replies: u32,
    mut pending: BytesMut,
    max: usize,
    mut rows: Option<&mut Vec<Vec<Option<String>>>>,
) -> Result<Option<String>, ()> {
    server.stream.write_all(out).await.map_err(drop)?;
    // TLS keeps what it wrote until flushed.
    server.stream.flush().await.map_err(drop)?;
    let mut seen = 0;
    let mut error = None;
    while seen < replies {
        match split_frame(&pending, max).map_err(drop)? {
            Some(frame) => {
                match frame.tag {
                    tag::READY_FOR_QUERY => seen += 1,
                    tag::DATA_ROW => {
                        if let Some(rows) = rows.as_deref_mut() {
                            rows.push(message::data_row_text(frame.body).map_err(drop)?);
                        }
                    }
                    tag::ERROR_RESPONSE if error.is_none() => {
                        error = Some(match message::ErrorFields::parse(frame.body) {
                            Ok(f) => format!("{} ({})", f.message, f.code),
                            Err(_) => "an unreadable error".to_owned(),
                        });
                    }
                    _ => {}
                }
                let len = frame.wire_len();
                pending.advance(len);
            }
            None => {
                pending.reserve(4096);
                if server.stream.read_buf(&mut pending).await.map_err(drop)? == 0 {
                    return Err(());
                }
            }
        }
    }
    Ok(error)
}

/// Runs one simple query on `server` with a time limit: its rows as text,
/// or the server's error. Err: the connection is unusable.
pub async fn query(
    server: &mut ServerConn,
    sql: &str,
    timeout: Duration,
) -> Result<Result<Vec<Vec<Option<String>>>, String>, ()> {
    let mut out = BytesMut::new();
    crate::protocol::encode::query(&mut out, sql);
    let mut rows = Vec::new();
    match tokio::time::timeout(
        timeout,
        exchange(server, &out, 1, BytesMut::new(), 1 << 24, Some(&mut rows)),
    )
    .await
    {
        Ok(Ok(None)) => Ok(Ok(rows)),
        Ok(Ok(Some(error))) => Ok(Err(error)),
        _ => Err(()),
    }
}
