//! Wiring: binds the listeners, starts the probes and the admin server, accepts
//! clients and spawns a session for each, and shuts everything down in order.
//!
//! All shared state lives in one [`Shared`] passed by `Arc`, so two proxies can
//! run in one process (the integration tests do).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Users;
use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::route::Listener;
use crate::topology::Topology;
use crate::workers::Workers;

/// Everything sessions, probes and the admin server share.
pub struct Shared {
    pub config: ArcSwap<Config>,
    pub users: ArcSwap<Users>,
    pub topology: Arc<Topology>,
    pub cancels: Arc<CancelRegistry>,
    pub metrics: Metrics,
    pub tls: Option<TlsAcceptor>,
    /// Set when shutdown begins; sessions close at their next idle point.
    pub shutdown: CancellationToken,
    /// Set when the shutdown grace period is over; busy sessions get 57P01.
    pub hard_stop: CancellationToken,
    /// True while paused: new transactions wait (see [`Shared::wait_unpaused`]).
    paused: tokio::sync::watch::Sender<bool>,
    /// Stops the current generation of probes (a child of `shutdown`).
    probe_stop: std::sync::Mutex<CancellationToken>,
    /// Where `reload_file` reads from.
    config_path: std::sync::Mutex<Option<std::path::PathBuf>>,
    /// Configurations applied since start (0 = the first).
    config_generation: std::sync::atomic::AtomicU64,
    /// Idle server connections for reuse.
    pub pool: crate::pool::idle::Pool,
    /// What `pg_proc` said about functions the classifier does not know.
    pub functions: crate::session::split::FunctionCache,
    /// Statement classifier (with its cache), rebuilt on reload.
    pub classifier: ArcSwap<crate::classify::Classifier>,
    /// Clients admitted and not yet gone.
    clients: AtomicUsize,
    /// Clients over the limit that are being told so.
    rejecting: AtomicUsize,
}

/// Whether a new client may be served.
pub enum Admission {
    /// Holds a slot until dropped.
    Granted(ClientSlot),
    /// Over `max_client_connections`: finish startup, then answer 53300.
    Rejected { max: usize, _slot: RejectSlot },
}

pub struct ClientSlot(Arc<Shared>);
impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct RejectSlot(Arc<Shared>);
impl Drop for RejectSlot {
    fn drop(&mut self) {
        self.0.rejecting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Admits a client, or marks it for a 53300 answer; None when even the
    /// rejection queue is full (the socket is then closed at once).
    fn admit(self: &Arc<Self>) -> Option<Admission> {
        let max = self.config.load().limits.max_client_connections;
        if self.clients.fetch_add(1, Ordering::AcqRel) < max {
            return Some(Admission::Granted(ClientSlot(self.clone())));
        }
        self.clients.fetch_sub(1, Ordering::AcqRel);
        if self.rejecting.fetch_add(1, Ordering::AcqRel) < max.max(64) {
            return Some(Admission::Rejected {
                max,
                _slot: RejectSlot(self.clone()),
            });
        }
        self.rejecting.fetch_sub(1, Ordering::AcqRel);
        None
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }

    /// How many configurations were applied since start (0 = the first).
    pub fn config_generation(&self) -> u64 {
        self.config_generation.load(Ordering::Acquire)
    }

    /// Sets the file [`Shared::reload_file`] reads.
    pub fn set_config_path(&self, path: std::path::PathBuf) {
        *self.config_path.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// Reads, validates and applies the configuration file (SIGHUP, POST
    /// /reload). A bad file changes nothing; the error says why.
    pub fn reload_file(&self) -> Result<String, String> {
        let path = self
            .config_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(path) = path else {
            return Err("no configuration file to reload (started without --config)".into());
        };
        match Config::load(&path) {
            Ok(config) => Ok(self.reload(config)),
            Err(e) => {
                self.metrics.config_reload("error");
                tracing::error!(error = %e, "configuration reload refused; keeping the running configuration");
                Err(e.to_string())
            }
        }
    }

    /// Applies a validated configuration: users and passwords, limits, auth
    /// method, health thresholds, routing settings, backends added or removed,
    /// weights. Sessions read it at their next login or transaction; those whose
    /// backend no longer fits move at their next idle point. Listen addresses,
    /// TLS files and worker threads need a restart: named in the log and the
    /// returned summary.
    pub fn reload(&self, new: Config) -> String {
        let old = self.config.load_full();
        let mut restart = Vec::new();
        if old.listen.read_write != new.listen.read_write {
            restart.push("listen.read_write");
        }
        if old.listen.read_only != new.listen.read_only {
            restart.push("listen.read_only");
        }
        if old.listen.admin != new.listen.admin {
            restart.push("listen.admin");
        }
        if format!("{:?}", old.tls) != format!("{:?}", new.tls) {
            restart.push("tls");
        }
        if old.runtime.worker_threads != new.runtime.worker_threads {
            restart.push("runtime.worker_threads");
        }
        self.users.store(Arc::new(Users::from_config(&new)));
        let routing = (
            &old.routing.read_functions,
            &old.routing.write_functions,
            &old.routing.primary_relations,
            old.routing.classify_cache,
        );
        if routing
            != (
                &new.routing.read_functions,
                &new.routing.write_functions,
                &new.routing.primary_relations,
                new.routing.classify_cache,
            )
        {
            self.classifier.store(Arc::new(classifier_for(&new)));
        }
        let generation = self.topology.reconfigure(&new);
        {
            let mut stop = self.probe_stop.lock().unwrap_or_else(|p| p.into_inner());
            stop.cancel();
            *stop = self.shutdown.child_token();
            crate::topology::probe::spawn_all(&self.topology, &new, generation, &stop);
        }
        let backends = new.backends.len();
        self.config.store(Arc::new(new));
        let n = self.config_generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.config_reload("success");
        let summary = if restart.is_empty() {
            format!("configuration {n} applied ({backends} backends)")
        } else {
            format!(
                "configuration {n} applied ({backends} backends); these changes need a restart and were not applied: {}",
                restart.join(", ")
            )
        };
        tracing::warn!("{summary}");
        summary
    }

    /// Holds new transactions (and new server connections) until [`Shared::resume`].
    pub fn pause(&self) {
        if !self.paused.send_replace(true) {
            tracing::warn!("paused: new transactions wait for POST /resume");
        }
    }

    pub fn resume(&self) {
        if self.paused.send_replace(false) {
            tracing::warn!("resumed");
        }
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Returns at once when not paused; else waits for a resume up to
    /// `limits.pause_timeout_ms`. Err(ms) when the pause outlasted it.
    pub async fn wait_unpaused(&self) -> Result<(), u64> {
        if !self.is_paused() {
            return Ok(());
        }
        let ms = self.config.load().limits.pause_timeout_ms;
        let mut rx = self.paused.subscribe();
        let resumed =
            tokio::time::timeout(Duration::from_millis(ms), rx.wait_for(|paused| !paused))
                .await
                .is_ok();
        if resumed {
            Ok(())
        } else {
            Err(ms)
        }
    }
}

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
        let local = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
        let (read_write_addr, read_only_addr, admin_addr) = (local(&rw), local(&ro), local(&admin));

        let metrics = Metrics::new();
        let shared = Arc::new(Shared {
            users: ArcSwap::from_pointee(Users::from_config(&config)),
            topology: Topology::new(&config, metrics.primary_changes.clone()),
            cancels: Arc::new(CancelRegistry::default()),
            metrics,
            tls,
            shutdown: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            paused: tokio::sync::watch::channel(false).0,
            probe_stop: std::sync::Mutex::new(CancellationToken::new()),
            config_path: std::sync::Mutex::new(None),
            config_generation: std::sync::atomic::AtomicU64::new(0),
            clients: AtomicUsize::new(0),
            rejecting: AtomicUsize::new(0),
            classifier: ArcSwap::from_pointee(classifier_for(&config)),
            functions: Default::default(),
            pool: Default::default(),
            config: ArcSwap::from_pointee(config),
        });
        // Sessions on worker threads keep pooled connections on their own
        // thread (each socket belongs to the runtime that registered it).
        shared.pool.set_per_thread(workers.is_some());
        let tracker = TaskTracker::new();
        let config = shared.config.load_full();
        let probe_stop = shared
            .probe_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        crate::topology::probe::spawn_all(
            &shared.topology,
            &config,
            shared.topology.probe_generation(),
            &probe_stop,
        );
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
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, listener = kind.as_str(), "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn classifier_for(config: &Config) -> crate::classify::Classifier {
    crate::classify::Classifier::new(
        &config.routing.read_functions,
        &config.routing.write_functions,
        config.routing.classify_cache,
    )
    .with_primary_relations(&config.routing.primary_relations)
}
