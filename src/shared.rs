//! Everything sessions, probes, the position poller and the admin server
//! share, in one value passed by `Arc` (no global state: two proxies can run
//! in one process, as the integration tests do): the configuration and users
//! (swapped whole on reload), the topology, the pool, the caches that fill
//! from the backends (catalog facts, replica positions, shared prepared
//! statements), cancel keys, the client table, metrics, and the shutdown and
//! pause signals.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::auth::Users;
use crate::cancel::CancelRegistry;
use crate::classify::catalog::Catalog;
use crate::classify::Classifier;
use crate::clients::Clients;
use crate::config::Config;
use crate::consistency::Positions;
use crate::metrics::Metrics;
use crate::pool::statements::Registry;
use crate::pool::Pool;
use crate::tls::backend::ServerTls;
use crate::tls::ClientTls;
use crate::topology::Topology;

/// Everything sessions, probes and the admin server share.
pub struct Shared {
    pub config: ArcSwap<Config>,
    pub users: ArcSwap<Users>,
    pub topology: Arc<Topology>,
    pub cancels: Arc<CancelRegistry>,
    pub metrics: Metrics,
    /// TLS towards clients (`[tls]`).
    pub tls: Option<ClientTls>,
    /// TLS towards backends (`[server_tls]`; None when disabled). Built at
    /// start: a reload that changes it needs a restart.
    pub server_tls: Option<Arc<ServerTls>>,
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
    config_generation: AtomicU64,
    /// Server connections.
    pub pool: Pool,
    /// What the backends' catalogs said about names the classifier does not
    /// know.
    pub catalog: Catalog,
    /// Statement classifier (with its cache), rebuilt on reload.
    pub classifier: ArcSwap<Classifier>,
    /// Replica positions for read-your-writes.
    pub positions: Positions,
    /// Protocol-level prepared statements, interned.
    pub statements: Registry,
    /// Logged-in sessions, for the admin console.
    pub clients: Clients,
    /// Clients admitted and not yet gone.
    admitted: AtomicUsize,
    /// Clients over the limit that are being told so.
    rejecting: AtomicUsize,
    /// Session ids.
    next_session: AtomicU64,
    /// The process's open file limit (0: unknown).
    fd_limit: AtomicUsize,
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
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
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
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admission> {
        let max = self.max_clients();
        if self.admitted.fetch_add(1, Ordering::AcqRel) < max {
            return Some(Admission::Granted(ClientSlot(self.clone())));
        }
        self.admitted.fetch_sub(1, Ordering::AcqRel);
        if self.rejecting.fetch_add(1, Ordering::AcqRel) < max.max(64) {
            return Some(Admission::Rejected {
                max,
                _slot: RejectSlot(self.clone()),
            });
        }
        self.rejecting.fetch_sub(1, Ordering::AcqRel);
        None
    }

    /// Builds the shared state for `config` (the probes are started by
    /// the caller).
    pub fn new(
        config: Config,
        tls: Option<ClientTls>,
        server_tls: Option<Arc<ServerTls>>,
    ) -> Shared {
        let metrics = Metrics::new();
        Shared {
            users: ArcSwap::from_pointee(Users::from_config(&config)),
            topology: Topology::new(&config, metrics.primary_changes.clone()),
            cancels: Arc::new(CancelRegistry::default()),
            metrics,
            tls,
            pool: Pool::new(server_tls.clone()),
            server_tls,
            shutdown: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            paused: tokio::sync::watch::channel(false).0,
            probe_stop: std::sync::Mutex::new(CancellationToken::new()),
            config_path: std::sync::Mutex::new(None),
            config_generation: AtomicU64::new(0),
            admitted: AtomicUsize::new(0),
            rejecting: AtomicUsize::new(0),
            next_session: AtomicU64::new(0),
            fd_limit: AtomicUsize::new(0),
            classifier: ArcSwap::from_pointee(classifier_for(&config)),
            catalog: Catalog::default(),
            positions: Positions::default(),
            statements: Registry::default(),
            clients: Clients::default(),
            config: ArcSwap::from_pointee(config),
        }
    }

    /// Clients admitted at most: `limits.max_client_connections`, or fewer
    /// when the file descriptor limit could not hold that many next to the
    /// server connections (so connected sessions never run out).
    pub fn max_clients(&self) -> usize {
        let config = self.config.load();
        let fds = self.fd_limit.load(Ordering::Relaxed);
        let configured = config.limits.max_client_connections;
        if fds == 0 {
            return configured;
        }
        let backends = config.backends.len();
        let servers = config.limits.max_server_connections * backends + 3 * backends + 64;
        configured.min(fds.saturating_sub(servers).max(1))
    }

    /// Records the file descriptor limit in force.
    pub fn set_fd_limit(&self, limit: u64) {
        self.fd_limit.store(
            usize::try_from(limit).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
    }

    /// A new session id.
    pub fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The current probe stop token (for starting probes).
    pub fn probe_stop(&self) -> CancellationToken {
        self.probe_stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn client_count(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
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
        if old.server_tls != new.server_tls {
            restart.push("server_tls");
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
            crate::topology::probe::spawn_all(
                &self.topology,
                &new,
                self.server_tls.clone(),
                generation,
                &stop,
                |backend| self.metrics.internal_queries_counter(backend, "probe"),
            );
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

pub(crate) fn classifier_for(config: &Config) -> Classifier {
    Classifier::new(
        &config.routing.read_functions,
        &config.routing.write_functions,
        config.routing.classify_cache,
    )
    .with_primary_relations(&config.routing.primary_relations)
}
