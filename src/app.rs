//! Wiring: binds the listeners, starts the probes and the admin server, accepts
//! clients and spawns a session for each, and shuts everything down in order.
//!
//! All shared state lives in one [`Shared`] (see `shared`) passed by `Arc`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::router::Listener;
pub use crate::shared::{Admission, Shared};
use crate::workers::Workers;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A running proxy.
pub struct Proxy {
    pub shared: Arc<Shared>,
    pub read_write_addr: SocketAddr,
    pub read_only_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    tracker: TaskTracker,
    admin_stop: CancellationToken,
    admin_task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Binds every listener (port 0 picks a free port), starts probes, the admin
    /// server and the accept loops on the current tokio runtime, and runs the
    /// sessions there too.
    pub async fn start(config: Config) -> Result<Proxy, StartError> {
        Self::start_with(config, None).await
    }

    /// Like [`Proxy::start`], with the sessions on `workers` when given.
    pub async fn start_with(
        config: Config,
        workers: Option<Arc<Workers>>,
    ) -> Result<Proxy, StartError> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, what, source })
        };
        let rw = bind(config.listen.read_write, "listen.read_write").await?;
        let ro = bind(config.listen.read_only, "listen.read_only").await?;
        let admin = bind(config.listen.admin, "listen.admin").await?;
        let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let server_tls = crate::tls::backend::ServerTls::new(&config.server_tls)?;
        let local = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
        let (read_write_addr, read_only_addr, admin_addr) = (local(&rw), local(&ro), local(&admin));

        let shared = Arc::new(Shared::new(config, tls, server_tls));
        match raise_fd_limit() {
            Ok(limit) => {
                shared.set_fd_limit(limit);
                let max = shared.max_clients();
                if max < shared.config.load().limits.max_client_connections {
                    tracing::warn!(
                        fd_limit = limit,
                        max_clients = max,
                        "the open file limit holds fewer clients than limits.max_client_connections"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the open file limit"),
        }
        // Sessions on worker threads keep pooled connections on their own
        // thread (each socket belongs to the runtime that registered it).
        shared.pool.set_per_thread(workers.is_some());
        let tracker = TaskTracker::new();
        let config = shared.config.load_full();
        let probe_stop = shared.probe_stop();
        crate::topology::probe::spawn_all(
            &shared.topology,
            &config,
            shared.server_tls.clone(),
            shared.topology.probe_generation(),
            &probe_stop,
            |backend| shared.metrics.internal_queries_counter(backend, "probe"),
        );
        tokio::spawn(crate::consistency::run_poller(
            shared.clone(),
            shared.shutdown.clone(),
        ));
        tokio::spawn(prune_pool(shared.clone()));
        for (listener, kind) in [(rw, Listener::ReadWrite), (ro, Listener::ReadOnly)] {
            tracker.spawn(accept_loop(
                listener,
                kind,
                shared.clone(),
                tracker.clone(),
                workers.clone(),
            ));
        }
        // The admin server outlives the drain (so /readyz can say 503 during
        // it); it stops when shutdown is complete.
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(crate::admin::serve(
            admin,
            shared.clone(),
            admin_stop.clone(),
        ));
        tracing::info!(
            read_write = %read_write_addr, read_only = %read_only_addr, admin = %admin_addr,
            backends = config.backends.len(), "pgsplit is listening"
        );
        if config.admin_exposed() {
            tracing::warn!(
                admin = %admin_addr,
                "the admin port is not on loopback and has no admin.token: anyone who reaches it \
                 can read /status and /metrics, pause and reload"
            );
        }
        Ok(Proxy {
            shared,
            read_write_addr,
            read_only_addr,
            admin_addr,
            tracker,
            admin_stop,
            admin_task,
        })
    }

    /// Stops accepting, lets sessions reach an idle point (or answers 57P01
    /// after `grace`), stops probes; returns when every task has ended.
    pub async fn shutdown(self, grace: Duration) {
        self.shared.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            let busy = self.shared.client_count();
            tracing::warn!(
                sessions = busy,
                "shutdown grace period over; ending busy sessions with 57P01"
            );
            self.shared.hard_stop.cancel();
            if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
                .await
                .is_err()
            {
                tracing::error!("tasks still running 5 s after the hard stop; exiting anyway");
            }
        }
        self.admin_stop.cancel();
        let _ = self.admin_task.await;
    }

    /// Resolves when shutdown has been requested.
    pub async fn stopping(&self) {
        self.shared.shutdown.cancelled().await
    }
}

async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    workers: Option<Arc<Workers>>,
) {
    // A descriptor kept in reserve: when the process runs out, it is given
    // up for a moment to tell one waiting client why (53300) instead of
    // leaving it hanging in the backlog.
    let mut reserve = std::fs::File::open("/dev/null").ok();
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Some(admission) = shared.admit() else {
                    tracing::warn!(client = %peer, "connection flood: closing without a reply");
                    continue;
                };
                let shared = shared.clone();
                match &workers {
                    None => {
                        tracker.spawn(crate::session::serve(tcp, peer, kind, shared, admission));
                    }
                    // Hand the socket to a worker's reactor.
                    Some(workers) => match tcp.into_std() {
                        Ok(std_tcp) => {
                            let session = async move {
                                match TcpStream::from_std(std_tcp) {
                                    Ok(tcp) => {
                                        crate::session::serve(tcp, peer, kind, shared, admission)
                                            .await
                                    }
                                    Err(e) => {
                                        tracing::warn!(client = %peer, error = %e, "cannot hand over a connection")
                                    }
                                }
                            };
                            tracker.spawn_on(session, workers.pick());
                        }
                        Err(e) => {
                            tracing::warn!(client = %peer, error = %e, "cannot hand over a connection")
                        }
                    },
                }
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                shared
                    .metrics
                    .listener(kind)
                    .client_error(crate::error::sqlstate::TOO_MANY_CONNECTIONS);
                tracing::warn!(
                    listener = kind.as_str(),
                    "out of file descriptors: refusing a client with 53300"
                );
                drop(reserve.take());
                if let Ok((tcp, _)) = listener.accept().await {
                    refuse_now(tcp).await;
                }
                reserve = std::fs::File::open("/dev/null").ok();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                // Anything else: back off instead of spinning.
                tracing::warn!(error = %e, listener = kind.as_str(), "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// On every routing change: idle pooled connections to backends that serve
/// nothing now (a fenced former primary, a removed backend) are closed.
async fn prune_pool(shared: Arc<Shared>) {
    let mut routing = shared.topology.subscribe_routing();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            changed = routing.changed() => if changed.is_err() { return },
        }
        let snapshot = shared.topology.snapshot();
        shared.pool.prune(|name| {
            snapshot
                .backends
                .iter()
                .position(|b| b.name == name)
                .is_some_and(|i| snapshot.primary == Some(i) || snapshot.read_schedule.contains(&i))
        });
        if let Some(p) = snapshot.primary {
            shared.positions.follow_primary(&snapshot.backends[p].name);
        }
    }
}

/// Tells a client pgsplit has no room (53300) and closes, without reading
/// its startup packet (libpq and the drivers report an error sent at once).
async fn refuse_now(mut tcp: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    crate::protocol::encode::error_response(
        &mut out,
        crate::protocol::encode::Severity::Fatal,
        crate::error::sqlstate::TOO_MANY_CONNECTIONS,
        "sorry, pgsplit is out of file descriptors; try again later",
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&out)).await;
}

/// Raises the soft limit on open files to the hard limit (a proxy holds two
/// descriptors per client). Returns the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Ok(limit.rlim_cur)
}
