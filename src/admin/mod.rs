//! The admin HTTP listener, the only place that knows HTTP: `/healthz`
//! (alive), `/readyz` (a primary is known and we are not draining),
//! `/metrics` (Prometheus text), `/status` (JSON for people), `/events` (the
//! last topology events, JSON) and `/` (the status page: one self-contained
//! HTML file, `page.html`, that polls `/status` and `/events` and keeps its
//! own five-minute history in the browser).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::Shared;
use crate::router::Listener;

/// Accepts admin connections until `stop`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, &req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

/// The status page.
const PAGE: &str = include_str!("page.html");

#[derive(Serialize)]
struct Status<'a> {
    version: &'static str,
    draining: bool,
    paused: bool,
    config_generation: u64,
    client_connections: usize,
    /// How often backends are probed (the page polls at least as often as
    /// half of this, and at least every second).
    health_interval_ms: u64,
    primary: Option<&'a str>,
    listeners: Vec<ListenerStatus>,
    /// Server connections per backend, by state.
    servers: Vec<ServerStatus<'a>>,
    /// Requests since start, by target (`primary`, `replica`).
    statements: BTreeMap<String, u64>,
    /// Requests since start, by the backend that served them.
    backend_statements: BTreeMap<String, u64>,
    /// Reads with a read-your-writes condition since start, by outcome.
    read_your_writes: BTreeMap<String, u64>,
    /// Sessions pinned now, by cause.
    pinned_sessions: BTreeMap<String, u64>,
    topology: &'a crate::topology::Snapshot,
}

#[derive(Serialize)]
struct ListenerStatus {
    listener: &'static str,
    address: String,
    client_connections: i64,
}

#[derive(Serialize)]
struct ServerStatus<'a> {
    backend: &'a str,
    /// Lent to a session now.
    in_use: i64,
    /// Logged in and waiting in the pool.
    idle: i64,
}

/// Whether the request carries the configured bearer token (constant time in
/// the token's content).
fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let config = shared.config.load();
    let Some(token) = config.admin.token.as_ref() else {
        return true;
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (given.as_bytes(), token.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn handle(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    // The page itself holds no data (it asks /status and /events, sending
    // the token a person typed into it), so a browser can load it.
    let open = matches!(req.uri().path(), "/healthz" | "/readyz")
        || (req.uri().path() == "/" && req.method() == Method::GET);
    if !open && !authorized(shared, req) {
        let mut response = reply(
            StatusCode::UNAUTHORIZED,
            TEXT,
            "this endpoint needs Authorization: Bearer <admin.token>\n",
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"pgsplit\""),
        );
        return response;
    }
    if req.method() == Method::POST {
        return match req.uri().path() {
            "/pause" => {
                shared.pause();
                reply(StatusCode::OK, TEXT, "paused\n")
            }
            "/resume" => {
                shared.resume();
                reply(StatusCode::OK, TEXT, "resumed\n")
            }
            "/reload" => match shared.reload_file() {
                Ok(summary) => reply(StatusCode::OK, TEXT, summary + "\n"),
                Err(e) => reply(
                    StatusCode::BAD_REQUEST,
                    TEXT,
                    format!("reload refused: {e}\n"),
                ),
            },
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "POST /pause, /resume or /reload\n",
            ),
        };
    }
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET or POST only\n");
    }
    let snapshot = shared.topology.snapshot();
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" => {
            if shared.shutdown.is_cancelled() {
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "draining\n")
            } else if snapshot.primary.is_none() {
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "no primary known\n")
            } else {
                reply(StatusCode::OK, TEXT, "ready\n")
            }
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(&snapshot),
        ),
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/events" => {
            let events = shared.topology.events(crate::topology::events::KEPT);
            let body = serde_json::to_string_pretty(&events)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            reply(StatusCode::OK, "application/json", body + "\n")
        }
        "/status" => {
            let samples = shared.metrics.samples(&snapshot);
            let total_by = |name: &str, label: &str| {
                let mut out: BTreeMap<String, u64> = BTreeMap::new();
                for s in samples.iter().filter(|s| s.name == name) {
                    *out.entry(s.label(label).to_owned()).or_default() += s.value.max(0.0) as u64;
                }
                out
            };
            let status = Status {
                version: env!("CARGO_PKG_VERSION"),
                draining: shared.shutdown.is_cancelled(),
                paused: shared.is_paused(),
                config_generation: shared.config_generation(),
                client_connections: shared.client_count(),
                health_interval_ms: shared.config.load().health.interval_ms,
                statements: total_by("pgsplit_statements_total", "target"),
                backend_statements: total_by("pgsplit_backend_statements_total", "backend"),
                read_your_writes: total_by("pgsplit_read_your_writes_total", "outcome"),
                pinned_sessions: total_by("pgsplit_pinned_sessions", "cause"),
                primary: snapshot.primary.map(|p| snapshot.backends[p].name.as_str()),
                listeners: listener_status(shared),
                servers: snapshot
                    .backends
                    .iter()
                    .map(|b| {
                        let (in_use, idle) = shared.metrics.server_counts(&b.name);
                        ServerStatus {
                            backend: &b.name,
                            in_use,
                            idle,
                        }
                    })
                    .collect(),
                topology: &snapshot,
            };
            let body = serde_json::to_string_pretty(&status)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            reply(StatusCode::OK, "application/json", body + "\n")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try / /healthz /readyz /metrics /status /events\n",
        ),
    }
}

fn listener_status(shared: &Shared) -> Vec<ListenerStatus> {
    let config = shared.config.load();
    [
        (Listener::ReadWrite, config.listen.read_write),
        (Listener::ReadOnly, config.listen.read_only),
    ]
    .into_iter()
    .map(|(listener, address)| ListenerStatus {
        listener: listener.as_str(),
        address: address.to_string(),
        client_connections: shared.metrics.listener(listener).connections.get(),
    })
    .collect()
}
