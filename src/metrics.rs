//! Prometheus metrics. Handles with labels are resolved once (per listener, per
//! backend) so the hot path is one atomic add; label values are bounded (no SQL,
//! no client addresses). Backend gauges are refreshed from the topology snapshot
//! when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::classify::PinCause;
use crate::pool::PoolGauges;
use crate::router::Listener;
use crate::topology::{Role, Snapshot};

mod samples;
pub use samples::{parse_samples, Sample};

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
struct DurationLabels {
    listener: &'static str,
    target: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    listener: &'static str,
    target: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerBytesLabels {
    listener: &'static str,
    target: &'static str,
    direction: &'static str,
}

/// Bytes between pgsplit and the servers of one target kind, for one
/// listener.
#[derive(Clone, Debug)]
pub struct ServerBytes {
    /// Sent to servers (client requests, and pgsplit's own on their behalf).
    pub sent: Counter,
    /// Received from servers.
    pub received: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    backend: String,
    state: &'static str,
}

/// Holds one `pgsplit_server_connections{state="in_use"}` while alive.
#[derive(Debug)]
pub struct InUse(Gauge);

impl InUse {
    /// Counts one more in `gauge` until the guard drops.
    pub fn of(gauge: &Gauge) -> InUse {
        gauge.inc();
        InUse(gauge.clone())
    }

    /// The gauge it counts in (to count the same connection again later
    /// without looking the label up).
    pub fn gauge(&self) -> &Gauge {
        &self.0
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.dec();
    }
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
    pub connections_total: Counter,
    errors: Family<ErrorLabels, Counter>,
    pub bytes_to_server: Counter,
    pub bytes_to_client: Counter,
    /// Request-to-ReadyForQuery time, for requests served by the primary.
    pub duration_primary: Histogram,
    /// The same for requests served by a replica.
    pub duration_replica: Histogram,
    statements: Family<StatementLabels, Counter>,
    /// Server bytes of sessions on this listener, to and from the primary.
    pub primary_bytes: ServerBytes,
    /// The same for replicas.
    pub replica_bytes: ServerBytes,
}

impl ListenerMetrics {
    /// Counts requests sent to `target`, with a bounded `reason`.
    pub fn statements(&self, target: &'static str, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        self.statements
            .get_or_create(&StatementLabels {
                listener: self.listener.as_str(),
                target,
                reason,
            })
            .inc_by(n);
    }

    /// The server byte counters for connections to a replica or not.
    pub fn server_bytes(&self, replica: bool) -> &ServerBytes {
        if replica {
            &self.replica_bytes
        } else {
            &self.primary_bytes
        }
    }

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
    server_connections: Family<ServerLabels, Gauge>,
    pool_waiting: Family<BackendLabel, Gauge>,
    pool_wait_seconds: Family<BackendLabel, Histogram>,
    backend_statements: Family<BackendLabel, Counter>,
    internal_queries: Family<InternalLabels, Counter>,
    prepared: [Counter; 3],
    pins: Family<CauseLabel, Counter>,
    pinned_sessions: Family<CauseLabel, Gauge>,
    ryw: Family<OutcomeLabel, Counter>,
    /// Time reads waited for a replica to reach their session's LSN.
    pub ryw_wait_seconds: Histogram,
    /// Time to classify one message's SQL (cache hits included).
    pub classify_seconds: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InternalLabels {
    backend: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
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
        // Same family name as the gauge: the exposition (0.0.4 text, see
        // `render`) names its samples pgsplit_client_connections_total.
        let connections_total = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "pgsplit_client_connections",
            "Client connections accepted",
            connections_total.clone(),
        );
        let durations = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                10.0,
            ])
        });
        registry.register(
            "pgsplit_statement_duration_seconds",
            "Time from a request to its ReadyForQuery, by listener and target",
            durations.clone(),
        );
        let statements = Family::<StatementLabels, Counter>::default();
        registry.register(
            "pgsplit_statements",
            "Requests (Query, Sync, FunctionCall) by listener, target and routing reason",
            statements.clone(),
        );
        let ryw = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "pgsplit_read_your_writes",
            "Reads with a read-your-writes condition, by where they went (replica, primary, waited)",
            ryw.clone(),
        );
        let ryw_wait_seconds = Histogram::new([
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        ]);
        registry.register(
            "pgsplit_read_your_writes_wait_seconds",
            "Time a read waited for a replica to reach its session's LSN",
            ryw_wait_seconds.clone(),
        );
        let pins = Family::<CauseLabel, Counter>::default();
        registry.register(
            "pgsplit_session_pins",
            "Sessions that became pinned to their server connection, by what pinned them",
            pins.clone(),
        );
        let pinned_sessions = Family::<CauseLabel, Gauge>::default();
        registry.register(
            "pgsplit_pinned_sessions",
            "Sessions pinned to their server connection now, by cause (a session with two causes counts under both)",
            pinned_sessions.clone(),
        );
        let pool_waiting = Family::<BackendLabel, Gauge>::default();
        registry.register(
            "pgsplit_pool_waiting_clients",
            "Sessions waiting for a server connection to a backend (all of its connections are in use)",
            pool_waiting.clone(),
        );
        let pool_wait_seconds = Family::<BackendLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "pgsplit_pool_wait_seconds",
            "How long sessions waited for a server connection when all were in use",
            pool_wait_seconds.clone(),
        );
        let backend_statements = Family::<BackendLabel, Counter>::default();
        registry.register(
            "pgsplit_backend_statements",
            "Requests served by each backend (client requests, not pgsplit's own queries)",
            backend_statements.clone(),
        );
        let server_bytes = Family::<ServerBytesLabels, Counter>::default();
        registry.register(
            "pgsplit_server_bytes",
            "Bytes between pgsplit and servers, by the sessions' listener, target (primary, replica) and direction (sent, received)",
            server_bytes.clone(),
        );
        let internal_queries = Family::<InternalLabels, Counter>::default();
        registry.register(
            "pgsplit_internal_queries",
            "Queries pgsplit sent on its own behalf, by backend and kind (probe, position, catalog, sync, login)",
            internal_queries.clone(),
        );
        let prepared_family = Family::<EventLabel, Counter>::default();
        registry.register(
            "pgsplit_prepared_statements",
            "Client Parses of named statements: prepared on a server connection, reused (held by the connection, or a statement servers already parsed answered by pgsplit), or evicted from one",
            prepared_family.clone(),
        );
        let prepared = ["prepared", "reused", "evicted"]
            .map(|event| prepared_family.get_or_create(&EventLabel { event }).clone());
        let classify_seconds = Histogram::new([
            0.000_000_5,
            0.000_001,
            0.000_002,
            0.000_005,
            0.000_01,
            0.000_02,
            0.000_05,
            0.000_1,
            0.001,
        ]);
        registry.register(
            "pgsplit_classify_duration_seconds",
            "Time to classify one message's SQL, cache lookups included",
            classify_seconds.clone(),
        );
        let server_connections = Family::<ServerLabels, Gauge>::default();
        registry.register(
            "pgsplit_server_connections",
            "Server connections, by backend and state",
            server_connections.clone(),
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
        // Each lookup's guard must be released before the next one (a
        // get_or_create that inserts takes the family's write lock), so every
        // handle is cloned out in its own statement.
        let listener = |l: Listener| {
            let name = ListenerLabel {
                listener: l.as_str(),
            };
            let connections_now = connections.get_or_create(&name).clone();
            let accepted = connections_total.get_or_create(&name).clone();
            let duration = |target| {
                durations
                    .get_or_create(&DurationLabels {
                        listener: l.as_str(),
                        target,
                    })
                    .clone()
            };
            let duration_primary = duration("primary");
            let duration_replica = duration("replica");
            let bytes_of = |target, direction| {
                server_bytes
                    .get_or_create(&ServerBytesLabels {
                        listener: l.as_str(),
                        target,
                        direction,
                    })
                    .clone()
            };
            let primary_bytes = ServerBytes {
                sent: bytes_of("primary", "sent"),
                received: bytes_of("primary", "received"),
            };
            let replica_bytes = ServerBytes {
                sent: bytes_of("replica", "sent"),
                received: bytes_of("replica", "received"),
            };
            ListenerMetrics {
                listener: l,
                connections: connections_now,
                connections_total: accepted,
                errors: errors.clone(),
                bytes_to_server: to_server.clone(),
                bytes_to_client: to_client.clone(),
                duration_primary,
                duration_replica,
                statements: statements.clone(),
                primary_bytes,
                replica_bytes,
            }
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
            server_connections,
            pool_waiting,
            pool_wait_seconds,
            backend_statements,
            internal_queries,
            prepared,
            pins,
            pinned_sessions,
            ryw,
            ryw_wait_seconds,
            classify_seconds,
        }
    }

    /// The handles the pool keeps up to date for `backend`.
    pub fn pool_gauges(&self, backend: &str) -> PoolGauges {
        let state = |state| {
            self.server_connections
                .get_or_create(&ServerLabels {
                    backend: backend.to_owned(),
                    state,
                })
                .clone()
        };
        let label = BackendLabel {
            backend: backend.to_owned(),
        };
        let in_use = state("in_use");
        let idle = state("idle");
        let waiting = self.pool_waiting.get_or_create(&label).clone();
        let wait_seconds = self.pool_wait_seconds.get_or_create(&label).clone();
        let served = self.backend_statements.get_or_create(&label).clone();
        PoolGauges {
            in_use,
            idle,
            waiting,
            wait_seconds,
            served,
        }
    }

    /// Counts a query pgsplit sent on its own behalf.
    pub fn internal_query(&self, backend: &str, kind: &'static str) {
        self.internal_queries_counter(backend, kind).inc();
    }

    /// The counter of pgsplit's own queries of one kind on one backend, for
    /// a task that counts many (a probe).
    pub fn internal_queries_counter(&self, backend: &str, kind: &'static str) -> Counter {
        self.internal_queries
            .get_or_create(&InternalLabels {
                backend: backend.to_owned(),
                kind,
            })
            .clone()
    }

    /// Counts what forwarding did with shared prepared statements.
    pub fn prepared_statements(&self, prepared: u32, reused: u32, evicted: u32) {
        for (counter, n) in self.prepared.iter().zip([prepared, reused, evicted]) {
            if n > 0 {
                counter.inc_by(u64::from(n));
            }
        }
    }

    /// Server connections to `backend`: (in use, idle in the pool).
    pub fn server_counts(&self, backend: &str) -> (i64, i64) {
        let count = |state| {
            self.server_connections
                .get(&ServerLabels {
                    backend: backend.to_owned(),
                    state,
                })
                .map_or(0, |g| g.get())
        };
        let in_use = count("in_use");
        let idle = count("idle");
        (in_use, idle)
    }

    /// Counts a read with a read-your-writes condition, by outcome.
    pub fn read_your_writes(&self, outcome: &'static str) {
        self.ryw.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// A session gained (`delta` 1) or lost (-1) a pin cause.
    pub fn pinned(&self, cause: PinCause, delta: i64) {
        let label = CauseLabel {
            cause: cause.label(),
        };
        self.pinned_sessions.get_or_create(&label).inc_by(delta);
        if delta > 0 {
            self.pins.get_or_create(&label).inc();
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
        let mut open_metrics = String::new();
        prometheus_client::encoding::text::encode(&mut open_metrics, &self.registry)
            .expect("writing to a String cannot fail");
        to_prometheus_text(&open_metrics)
    }
}

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4, which every
/// scraper reads and which lets a gauge `x` and a counter `x_total` live side
/// by side: counter and info families are named by their samples (`x_total`,
/// `x_info`, typed counter and gauge), and `# EOF` goes.
fn to_prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let mut pending_help: Option<&str> = None;
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                other => (name.to_owned(), other),
            };
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_does_not_deadlock_and_renders_prometheus_text() {
        let m = Metrics::new();
        m.read_write.connections_total.inc();
        let text = m.render(&Snapshot::default());
        assert!(text.contains("# TYPE pgsplit_client_connections gauge"));
        assert!(text.contains("# TYPE pgsplit_client_connections_total counter"));
        assert!(text.contains("pgsplit_client_connections_total{listener=\"read_write\"} 1"));
        assert!(text.contains("# TYPE pgsplit_build_info gauge"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn samples_read_back_what_render_wrote() {
        let m = Metrics::new();
        m.read_write.statements("replica", "read", 3);
        m.read_only.primary_bytes.sent.inc_by(7);
        m.pool_gauges("pg \"1\"").served.inc_by(2);
        let samples = m.samples(&Snapshot::default());
        let find = |name: &str, label: &str, value: &str| {
            samples
                .iter()
                .find(|s| s.name == name && s.label(label) == value)
                .map(|s| s.value)
        };
        assert_eq!(
            find("pgsplit_statements_total", "reason", "read"),
            Some(3.0)
        );
        let bytes = samples
            .iter()
            .find(|s| {
                s.name == "pgsplit_server_bytes_total"
                    && s.label("listener") == "read_only"
                    && s.label("target") == "primary"
                    && s.label("direction") == "sent"
            })
            .unwrap();
        assert_eq!(bytes.value, 7.0);
        assert_eq!(
            find("pgsplit_backend_statements_total", "backend", "pg \"1\""),
            Some(2.0)
        );
        let buckets = samples
            .iter()
            .filter(|s| s.name == "pgsplit_statement_duration_seconds_bucket")
            .count();
        assert!(buckets > 10, "{buckets}");
        assert_eq!(
            parse_samples("garbage{\nx one\n# c\nok 2"),
            [Sample {
                name: "ok".into(),
                labels: vec![],
                value: 2.0
            }]
        );
    }
}
