//! Prometheus metrics. Handles with labels are resolved once (per listener, per
//! backend) so the hot path is one atomic add; label values are bounded (no SQL,
//! no client addresses). Backend gauges are refreshed from the topology snapshot
//! when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::route::Listener;
use crate::topology::{Role, Snapshot};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    listener: &'static str,
    sqlstate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

/// Per-listener handles, resolved once.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    pub listener: Listener,
    pub connections: Gauge,
    errors: Family<ErrorLabels, Counter>,
    pub bytes_to_server: Counter,
    pub bytes_to_client: Counter,
}

impl ListenerMetrics {
    /// Counts an error sent to a client, by SQLSTATE.
    pub fn client_error(&self, sqlstate: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                listener: self.listener.as_str(),
                sqlstate: sqlstate.to_owned(),
            })
            .inc();
    }
}

pub struct Metrics {
    registry: Registry,
    pub read_write: ListenerMetrics,
    pub read_only: ListenerMetrics,
    backend_up: Family<BackendLabel, Gauge>,
    backend_is_primary: Family<BackendLabel, Gauge>,
    backend_in_rotation: Family<BackendLabel, Gauge>,
    backend_lag_bytes: Family<BackendLabel, Gauge>,
    backend_lag_seconds: Family<BackendLabel, Gauge<f64, AtomicU64>>,
    primaries_seen: Gauge,
    /// Changes of the elected primary; incremented by the topology.
    pub primary_changes: Counter,
    config_reloads: Family<ResultLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register(
            "pgsplit_build",
            "pgsplit version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let connections = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "pgsplit_client_connections",
            "Client connections open now",
            connections.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "pgsplit_client_errors",
            "Errors sent to clients, by SQLSTATE",
            errors.clone(),
        );
        let bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "pgsplit_bytes",
            "Bytes forwarded between clients and servers",
            bytes.clone(),
        );
        let backend_up = Family::<BackendLabel, Gauge>::default();
        registry.register(
            "pgsplit_backend_up",
            "1 if the last health probe succeeded",
            backend_up.clone(),
        );
        let backend_is_primary = Family::<BackendLabel, Gauge>::default();
        registry.register(
            "pgsplit_backend_is_primary",
            "1 if the backend is the primary pgsplit writes to",
            backend_is_primary.clone(),
        );
        let backend_in_rotation = Family::<BackendLabel, Gauge>::default();
        registry.register(
            "pgsplit_backend_in_rotation",
            "1 if the backend may serve reads now",
            backend_in_rotation.clone(),
        );
        let backend_lag_bytes = Family::<BackendLabel, Gauge>::default();
        registry.register(
            "pgsplit_backend_lag_bytes",
            "Bytes of WAL the replica has yet to replay, against the primary",
            backend_lag_bytes.clone(),
        );
        let backend_lag_seconds = Family::<BackendLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "pgsplit_backend_lag_seconds",
            "How long the replica has had WAL waiting to be replayed",
            backend_lag_seconds.clone(),
        );
        let primary_changes = Counter::default();
        registry.register(
            "pgsplit_primary_changes",
            "Changes of the primary pgsplit writes to",
            primary_changes.clone(),
        );
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "pgsplit_config_reloads",
            "Configuration reloads, by result (success, error)",
            config_reloads.clone(),
        );
        let primaries_seen = Gauge::default();
        registry.register(
            "pgsplit_primaries_seen",
            "Reachable backends not in recovery (more than 1 is split brain)",
            primaries_seen.clone(),
        );
        // Each guard is released (the handle cloned out) before the next lookup.
        let to_server = bytes
            .get_or_create(&DirectionLabel {
                direction: "client_to_server",
            })
            .clone();
        let to_client = bytes
            .get_or_create(&DirectionLabel {
                direction: "server_to_client",
            })
            .clone();
        let listener = |l: Listener| ListenerMetrics {
            listener: l,
            connections: connections
                .get_or_create(&ListenerLabel {
                    listener: l.as_str(),
                })
                .clone(),
            errors: errors.clone(),
            bytes_to_server: to_server.clone(),
            bytes_to_client: to_client.clone(),
        };
        Metrics {
            read_write: listener(Listener::ReadWrite),
            read_only: listener(Listener::ReadOnly),
            registry,
            backend_up,
            backend_is_primary,
            backend_in_rotation,
            backend_lag_bytes,
            backend_lag_seconds,
            primaries_seen,
            primary_changes,
            config_reloads,
        }
    }

    /// Counts a configuration reload.
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn listener(&self, l: Listener) -> &ListenerMetrics {
        match l {
            Listener::ReadWrite => &self.read_write,
            Listener::ReadOnly => &self.read_only,
        }
    }

    /// The exposition in Prometheus/OpenMetrics text, backend gauges refreshed
    /// from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        for (i, b) in snapshot.backends.iter().enumerate() {
            let label = BackendLabel {
                backend: b.name.clone(),
            };
            self.backend_up
                .get_or_create(&label)
                .set(i64::from(b.healthy));
            let primary = snapshot.primary == Some(i) && b.role == Role::Primary;
            self.backend_is_primary
                .get_or_create(&label)
                .set(i64::from(primary));
            self.backend_in_rotation
                .get_or_create(&label)
                .set(i64::from(b.in_rotation));
            self.backend_lag_bytes
                .get_or_create(&label)
                .set(b.lag_bytes.unwrap_or(0) as i64);
            self.backend_lag_seconds
                .get_or_create(&label)
                .set(b.lag_ms.unwrap_or(0) as f64 / 1000.0);
        }
        self.primaries_seen.set(snapshot.primaries_seen as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
