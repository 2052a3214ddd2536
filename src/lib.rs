//! pgsplit: a PostgreSQL proxy that splits reads from writes.
//!
//! Module map (see ARCHITECTURE.md for the data path and invariants):
//! - [`app`]: listeners, accept loops, shutdown.
//! - [`shared`]: the state sessions, probes and the admin server share.
//! - [`config`]: the TOML file's types, defaults and validation.
//! - [`protocol`]: the wire protocol, pure (no I/O): framing, startup, encoders.
//! - [`wire`]: one-message-at-a-time async reads for startup and login.
//! - [`auth`]: client authentication (SCRAM-SHA-256, md5, trust) and server login.
//! - [`tls`]: the rustls acceptor.
//! - [`topology`]: backend probes, roles, the published snapshot.
//! - [`classify`]: SQL text -> read or write, transaction and session effects
//!   (pure), and the catalog facts that settle what the text cannot.
//! - [`router`]: a framed request + session + topology -> where it goes (pure).
//! - [`consistency`]: read-your-writes floors and the shared replica-position service.
//! - [`pool`]: server connections, pooled per backend and login; shared prepared statements.
//! - [`session`]: one client's life: login, the batch, its state, the relay.
//! - [`cancel`]: client cancel keys mapped to server connections.
//! - [`clients`]: the client table (one compact record per session) for the console.
//! - [`console`]: the admin console on the client ports (database `pgsplit`).
//! - [`explain`]: a statement's route in a fresh session, without running it.
//! - [`metrics`]: Prometheus metrics.
//! - [`admin`]: the admin HTTP listener.
//! - [`error`]: error kinds and SQLSTATEs.
//! - [`workers`]: session threads, one current-thread runtime each.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cancel;
pub mod classify;
pub mod clients;
pub mod config;
pub mod consistency;
pub mod console;
pub mod error;
pub mod explain;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod router;
pub mod session;
pub mod shared;
pub mod tls;
pub mod topology;
pub mod wire;
pub mod workers;
