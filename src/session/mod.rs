//! One client's life: TLS negotiation, startup, authentication, the greeting
//! (the server's ParameterStatus, cached per backend and login, so a login
//! needs no server connection once one was made), then the relay until the
//! client leaves.
//!
//! Every failure ends in [`SessionError`], which is reported to the client as
//! one ErrorResponse with its SQLSTATE (when the client can still hear it) and
//! logged once, at a level set by who caused it.
//!
//! A login to the virtual database `pgsplit` is the admin console instead
//! (`crate::console`): allowed users only, never a server connection.
//!
//! The pieces, in the order a request meets them: [`batch`] frames it once;
//! the router (`crate::router`) decides where it goes from [`state`] and the
//! topology; [`server`] gets a connection; [`forward`] says what that
//! connection is sent; [`replies`] what its answers mean; [`relay`] does
//! the I/O.

pub mod batch;
pub mod error;
pub mod forward;
pub mod relay;
pub mod replies;
pub mod retry;
pub mod server;
pub mod state;
pub mod stream;
pub mod target;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use self::error::SessionError;
use self::relay::{Failure, Outcome, Relay, Start, Traffic};
use self::server::{Leased, Want};
use self::state::SessionState;
use self::stream::ClientStream;
use crate::auth::{client::authenticate, AuthError, UserEntry};
use crate::cancel::send_cancel;
use crate::clients::ClientRecord;
use crate::config::PoolMode;
use crate::error::ErrorKind;
use crate::pool::{Greeting, Login};
use crate::protocol::encode::{self, Severity};
use crate::protocol::startup::{self, Negotiation, StartupParams, Step};
use crate::router::{Listener, On};
use crate::shared::{Admission, Shared};
use crate::wire;

/// Serves one accepted client connection to its end. Never panics on bad
/// input; every error is answered and logged here.
///
/// A plain function returning the future (not an `async fn`): an idle
/// session is mostly this future's state, and an `async fn` would keep each
/// argument twice (as passed, and moved into its body).
pub fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    shared: Arc<Shared>,
    admission: Admission,
) -> impl std::future::Future<Output = ()> {
    tcp.set_nodelay(true).ok();
    let started = Instant::now();
    let mut stream = ClientStream::Plain(tcp);
    let mut who = Who::default();
    async move {
        let metrics = shared.metrics.listener(listener);
        metrics.connections.inc();
        metrics.connections_total.inc();
        // What the end needs lives in its own future, built once the run
        // is over: it takes no room in this one while the session runs.
        let ended = {
            let result = run(&mut stream, peer, listener, &shared, admission, &mut who).await;
            let end = End {
                peer,
                listener,
                started,
                who: &who,
                metrics,
            };
            end.finish(&mut stream, result)
        };
        ended.await;
        metrics.connections.dec();
    }
}

/// How a session ended, for its last words to the client and its log line.
struct End<'a> {
    peer: SocketAddr,
    listener: Listener,
    started: Instant,
    who: &'a Who,
    metrics: &'a crate::metrics::ListenerMetrics,
}

impl End<'_> {
    /// Tells the client why it ends (when it can), logs the session's end
    /// once, and closes the stream.
    async fn finish(self, stream: &mut ClientStream, result: Result<Outcome, Failure>) {
        let End {
            peer,
            listener,
            started,
            who,
            metrics,
        } = self;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let t = who.traffic;
        match result {
            Ok(outcome) => {
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
                    encode::error_response(
                        &mut out,
                        Severity::Fatal,
                        code,
                        &error.client_message(),
                    );
                    let _ = stream.write_all(&out).await;
                    let _ = stream.flush().await;
                    metrics.client_error(code);
                }
                let code = error.sqlstate().unwrap_or("-");
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
    }
}

/// What the session log line says about the client.
#[derive(Default)]
struct Who {
    user: String,
    database: String,
    backend: String,
    traffic: Traffic,
}

/// What a login opened.
enum Entry {
    /// Boxed: large, and moved once.
    Session(Box<LoggedIn>),
    /// The admin console, for this user; `params` as the client sent them.
    Console { params: Arc<[(String, String)]> },
}

/// A client that finished logging in.
struct LoggedIn {
    user: Arc<UserEntry>,
    login: Login,
    session: SessionState,
    report_lsn: bool,
    home: Option<Leased>,
}

async fn run(
    stream: &mut ClientStream,
    peer: SocketAddr,
    listener: Listener,
    shared: &Arc<Shared>,
    admission: Admission,
    who: &mut Who,
) -> Result<Outcome, Failure> {
    let tell = |error: SessionError| Failure {
        error,
        can_tell: true,
    };
    let login_ms = shared.config.load().limits.login_timeout_ms;
    let cancel = shared.cancels.register();
    let id = shared.session_id();
    // The client table's record outlives the relay, which borrows it.
    let registered;
    // In a block: what the login left (the relay takes it) must not stay
    // in this future's state while the session runs.
    let relay = {
        let entry = match tokio::time::timeout(
            Duration::from_millis(login_ms),
            Box::pin(log_in(stream, listener, shared, &admission, who)),
        )
        .await
        {
            Err(_) => return Err(tell(SessionError::LoginTimeout { ms: login_ms })),
            Ok(Err(e)) => return Err(tell(e)),
            Ok(Ok(None)) => return Ok(Outcome::Terminated),
            Ok(Ok(Some(entry))) => entry,
        };
        let logged_in = match entry {
            Entry::Session(logged_in) => logged_in,
            Entry::Console { params } => {
                who.backend = "console".into();
                let registered = shared.clients.register(ClientRecord::new(
                    id,
                    listener,
                    peer,
                    params,
                    Arc::from(""),
                ));
                let result = Box::pin(crate::console::serve(
                    stream,
                    shared,
                    &registered.record,
                    cancel.key(),
                ))
                .await;
                drop(admission);
                return match result {
                    Ok(Outcome::Shutdown) => Err(tell(SessionError::Shutdown)),
                    other => other,
                };
            }
        };
        registered = shared.clients.register(ClientRecord::new(
            id,
            listener,
            peer,
            Arc::clone(&logged_in.login.params),
            Arc::clone(&logged_in.login.key),
        ));
        let mut out = BytesMut::new();
        encode::backend_key_data(&mut out, cancel.key());
        encode::ready_for_query(&mut out, b'I');
        wire::send(stream, &mut out)
            .await
            .map_err(|e| tell(e.into()))?;
        Box::new(Relay::new(Start {
            shared,
            listener,
            id,
            record: &registered.record,
            client: stream,
            cancel: &cancel,
            user: logged_in.user,
            login: logged_in.login,
            session: logged_in.session,
            report_lsn: logged_in.report_lsn,
            home: logged_in.home,
        }))
    };
    let (result, traffic) = relay.run().await;
    who.traffic = traffic;
    drop(admission);
    match result {
        Ok(Outcome::Shutdown) => Err(Failure {
            error: SessionError::Shutdown,
            can_tell: true,
        }),
        other => other,
    }
}

/// Startup, authentication and the greeting (everything but BackendKeyData
/// and ReadyForQuery; the console sends its own greeting). Ok(None) for a
/// connection that only carried a CancelRequest.
async fn log_in(
    stream: &mut ClientStream,
    listener: Listener,
    shared: &Arc<Shared>,
    admission: &Admission,
    who: &mut Who,
) -> Result<Option<Entry>, SessionError> {
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
    // Channel binding data of pgsplit's certificate, for a client on TLS.
    let binding = match &shared.tls {
        Some(tls) if stream.is_tls() => tls.end_point.as_deref(),
        _ => None,
    };
    authenticate(stream, &mut out, config.auth.method, &user, binding).await?;
    if database == crate::console::DATABASE {
        if listener == Listener::ReadOnly && !config.admin.console_on_read_only {
            return Err(SessionError::ConsoleOnReadOnly);
        }
        if !config.admin.users.contains(&user_name) {
            return Err(SessionError::ConsoleNotAllowed { user: user_name });
        }
        wire::send(stream, &mut out).await?;
        let params: Vec<(String, String)> = params
            .params
            .into_iter()
            .filter(|(k, _)| k != "database" && !k.starts_with("_pq_."))
            .chain([("database".to_owned(), database)])
            .collect();
        return Ok(Some(Entry::Console {
            params: params.into(),
        }));
    }

    // The client's parameters go to the server, except the ones pgsplit
    // reads itself.
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
    let mut server_params = vec![
        ("user".to_owned(), user_name.clone()),
        ("database".to_owned(), database),
    ];
    server_params.extend(params.params.into_iter().filter(|(k, _)| {
        !matches!(k.as_str(), "user" | "database" | "replication")
            && !k.starts_with("_pq_.")
            && !k.starts_with("pgsplit.")
    }));
    let login = shared.pool.share_login(Login::new(server_params, false));
    shared
        .wait_unpaused()
        .await
        .map_err(|ms| SessionError::PauseTimeout { ms })?;
    let keep = config.pool.mode == PoolMode::Session;
    let (greeting, home, backend) = greet(shared, listener, &login, &user, keep).await?;
    who.backend = backend;
    out.extend_from_slice(&greeting.bytes);
    wire::send(stream, &mut out).await?;
    let mut session = SessionState::default();
    session.isolation.login_serializable = greeting.serializable;
    if let Some(lsn) = min_lsn {
        session.floor.raise(lsn);
    }
    Ok(Some(Entry::Session(Box::new(LoggedIn {
        user,
        login,
        session,
        report_lsn,
        home,
    }))))
}

/// What a client logging in on `listener` is told, from the cache or from
/// a connection to the backend it would use first (kept in session mode).
/// Also learns, once per backend and login, whether the login's default
/// isolation is SERIALIZABLE (a role or database default is seen nowhere
/// else).
async fn greet(
    shared: &Arc<Shared>,
    listener: Listener,
    login: &Login,
    user: &Arc<UserEntry>,
    keep: bool,
) -> Result<(Arc<Greeting>, Option<Leased>, String), SessionError> {
    let config = shared.config.load_full();
    let on = match listener {
        Listener::ReadWrite => On::Primary,
        Listener::ReadOnly => {
            // Until every backend answered once, replicas may be a probe away.
            target::complete(
                &shared.topology,
                Duration::from_millis(config.health.failover_timeout_ms),
            )
            .await;
            let snapshot = shared.topology.snapshot();
            // Where its first read would go (the read itself moves the
            // schedule on).
            let pick = shared.topology.ticket();
            match snapshot
                .read_schedule
                .get(pick % snapshot.read_schedule.len().max(1))
            {
                Some(&i) if Some(i) != snapshot.primary => On::Replica(i),
                Some(_) => On::Primary,
                None => target::without_replica(config.routing.no_replica, &snapshot)?,
            }
        }
    };
    let login_key = match on {
        On::ReadOnlyPrimary => login.read_only().key,
        _ => login.key.clone(),
    };
    if !keep {
        let snapshot = shared.topology.snapshot();
        let backend = match on {
            On::Replica(i) => Some(i),
            _ => snapshot.primary,
        };
        if let Some(b) = backend.map(|i| &snapshot.backends[i]) {
            if let Some(greeting) = shared.pool.greeting(&b.name, &login_key) {
                return Ok((greeting, None, b.name.clone()));
            }
        }
    }
    let mut leased = server::acquire(
        shared,
        Want {
            on,
            login,
            user,
            prefer: None,
            read_write: listener == Listener::ReadWrite,
        },
    )
    .await?;
    let backend = leased.conn.name.to_string();
    let greeting = match shared.pool.greeting(&backend, &login_key) {
        Some(greeting) => greeting,
        None => {
            shared.metrics.internal_query(&backend, "login");
            let isolation = crate::pool::query(
                &mut leased.conn,
                "SELECT pg_catalog.current_setting('default_transaction_isolation')",
                Duration::from_secs(10),
            )
            .await
            .map_err(|()| SessionError::ServerLost {
                backend: backend.clone(),
                address: leased.conn.addr.to_string(),
            })?;
            let serializable = isolation.is_ok_and(|rows| {
                rows.first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.as_deref())
                    == Some("serializable")
            });
            let greeting = Arc::new(Greeting {
                bytes: leased.conn.greeting.clone(),
                serializable,
            });
            shared
                .pool
                .set_greeting(&backend, &login_key, Arc::clone(&greeting));
            greeting
        }
    };
    if keep {
        return Ok((greeting, Some(leased), backend));
    }
    leased.give_back(shared);
    Ok((greeting, None, backend))
}

/// Reads startup packets, answering SSLRequest and GSSENCRequest, until a
/// StartupMessage (returned) or a CancelRequest (handled; returns None).
async fn negotiate(
    stream: &mut ClientStream,
    shared: &Shared,
) -> Result<Option<StartupParams>, SessionError> {
    let mut negotiation = Negotiation::default();
    loop {
        let mut prefix = [0u8; 4];
        wire::read_exact(stream, &mut prefix).await?;
        let mut body = vec![0u8; startup::body_len(prefix)?];
        wire::read_exact(stream, &mut body).await?;
        match negotiation.next(&body, shared.tls.is_some(), stream.is_tls())? {
            Step::Ssl { accept: true } => {
                let acceptor = &shared.tls.as_ref().expect("TLS is configured").acceptor;
                stream
                    .write_all(b"S")
                    .await
                    .map_err(SessionError::ClientIo)?;
                let tcp = stream.take_plain().expect("not TLS yet");
                let tls = acceptor.accept(tcp).await.map_err(SessionError::Tls)?;
                *stream = ClientStream::Tls(Box::new(tls));
            }
            Step::Ssl { accept: false } | Step::RefuseGss => stream
                .write_all(b"N")
                .await
                .map_err(SessionError::ClientIo)?,
            Step::Cancel(key) => {
                if let Some(target) = shared.cancels.lookup(key) {
                    tracing::debug!(pid = key.pid, "forwarding cancel request");
                    let _ = send_cancel(target, Duration::from_secs(5)).await;
                }
                return Ok(None);
            }
            Step::Startup(params) => return Ok(Some(params)),
        }
    }
}
