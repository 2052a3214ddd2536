//! pgsplit: a PostgreSQL proxy that splits reads from writes.
//!
//! Module map (see ARCHITECTURE.md for the data path and invariants):
//! - [`app`]: listeners, accept loops, shared state, shutdown.
//! - [`config`]: the TOML file's types, defaults and validation.
//! - [`protocol`]: the wire protocol, pure (no I/O): framing, startup, encoders.
//! - [`wire`]: one-message-at-a-time async reads for startup and login.
//! - [`auth`]: client authentication (SCRAM-SHA-256, md5, trust) and server login.
//! - [`tls`]: the rustls acceptor.
//! - [`topology`]: backend probes, roles, the published snapshot.
//! - [`classify`]: SQL text -> read or write, transaction and session effects (pure).
//! - [`route`]: listener + snapshot -> backend.
//! - [`pool`]: server connections.
//! - [`session`]: one client's life and the hot relay loop.
//! - [`cancel`]: client cancel keys mapped to server connections.
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: the admin HTTP listener.
//! - [`error`]: error kinds and SQLSTATEs.
//! - [`workers`]: session threads, one current-thread runtime each.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cancel;
pub mod classify;
pub mod config;
pub mod error;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod route;
pub mod session;
pub mod tls;
pub mod topology;
pub mod wire;
pub mod workers;
