//! Configuration: the TOML file's types, their defaults, and `validate()`.
//!
//! Only this module knows TOML. Every field's doc states its default and whether
//! a reload may change it; `config/pgsplit.toml` is the commented reference.
//! Secrets live in [`Secret`], which never prints its value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

#[cfg(test)]
mod tests;

/// Why a configuration was refused. Messages name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Where the file stops being valid, and why. Never the file's text:
    /// toml's own message quotes the offending line, which may hold a
    /// password.
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid configuration: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub auth: Auth,
    /// TLS towards clients; absent means clients that ask get `N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// TLS towards backends (libpq's sslmode). Default: disabled.
    #[serde(default)]
    pub server_tls: ServerTls,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub consistency: Consistency,
    #[serde(default)]
    pub pool: Pool,
    #[serde(default)]
    pub runtime: Runtime,
    /// The Postgres nodes. Roles are discovered, never configured.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Users clients may log in as; pgsplit logs in to backends as them too.
    #[serde(default)]
    pub users: Vec<User>,
}

/// `[listen]`: addresses. Changing any of them needs a restart.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Sessions here go to the primary. Default `127.0.0.1:5433`.
    pub read_write: SocketAddr,
    /// Sessions here go to a replica. Default `127.0.0.1:5434`.
    pub read_only: SocketAddr,
    /// HTTP: /healthz, /readyz, /metrics, /status. Default `127.0.0.1:9930`.
    pub admin: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            read_write: ([127, 0, 0, 1], 5433).into(),
            read_only: ([127, 0, 0, 1], 5434).into(),
            admin: ([127, 0, 0, 1], 9930).into(),
        }
    }
}

/// `[limits]`: protection against floods and bad input.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Client connections served at once, both client ports together; the next
    /// one gets SQLSTATE 53300. Default 1000.
    pub max_client_connections: usize,
    /// Largest client message accepted, in bytes; larger ones get 08P01 and
    /// the connection closes. Default 64 MiB.
    pub max_message_size: usize,
    /// A client must finish startup and authentication within this. Default 15000.
    pub login_timeout_ms: u64,
    /// Connecting and logging in to a backend must finish within this. Default 5000.
    pub connect_timeout_ms: u64,
    /// On SIGTERM/SIGINT, sessions get this long to finish their transaction
    /// before they are closed with 57P01. Default 30000.
    pub shutdown_timeout_ms: u64,
    /// While pgsplit is paused (`POST /pause`), a new transaction waits this
    /// long for `POST /resume` before it fails with 57P03. Default 60000.
    pub pause_timeout_ms: u64,
    /// Server connections per backend, in use and idle together. A session
    /// that needs one more waits up to `server_wait_timeout_ms`, then gets
    /// 53300. Default 200. Applies to backends first seen after a change.
    pub max_server_connections: usize,
    /// How long a session waits for a server connection. Default 5000.
    pub server_wait_timeout_ms: u64,
    /// Idle pooled server connections older than this are closed. Default
    /// 60000.
    pub server_idle_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_connections: 1000,
            max_message_size: 64 << 20,
            login_timeout_ms: 15_000,
            connect_timeout_ms: 5_000,
            shutdown_timeout_ms: 30_000,
            pause_timeout_ms: 60_000,
            max_server_connections: 200,
            server_wait_timeout_ms: 5_000,
            server_idle_timeout_ms: 60_000,
        }
    }
}

/// How pgsplit checks a client's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    /// No password: any configured user may log in.
    #[serde(rename = "trust")]
    Trust,
}

/// `[auth]`: client authentication.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// `scram-sha-256` (default), `md5` or `trust`.
    pub method: AuthMethod,
}

/// `[tls]`: TLS towards clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Refuse clients that do not ask for TLS (SQLSTATE 28000). Default false.
    #[serde(default)]
    pub required: bool,
}

/// How pgsplit's connections to backends use TLS, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS, the certificate not checked.
    Require,
    /// TLS, the certificate chained to `ca_file`.
    VerifyCa,
    /// TLS, the certificate chained to `ca_file` and naming the host of the
    /// backend's address.
    VerifyFull,
}

impl ServerTlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTlsMode::Disable => "disable",
            ServerTlsMode::Require => "require",
            ServerTlsMode::VerifyCa => "verify-ca",
            ServerTlsMode::VerifyFull => "verify-full",
        }
    }
}

/// `[server_tls]`: TLS towards backends, for the sessions' server
/// connections, the health probes and the position poller alike. Restart
/// to change.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTls {
    /// `"disable"` (default), `"require"`, `"verify-ca"` or `"verify-full"`.
    pub mode: ServerTlsMode,
    /// PEM file of the CA certificates a backend's certificate must chain
    /// to (libpq's `sslrootcert`). Required by `verify-ca` and
    /// `verify-full`, refused otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain pgsplit presents to backends (libpq's
    /// `sslcert`), with `key_file`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (libpq's `sslkey`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// `[health]`: probing backends.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Time between probes of each backend. Default 500.
    pub interval_ms: u64,
    /// A probe slower than this counts as failed. Default 1000.
    pub timeout_ms: u64,
    /// How long a session waits for a primary to be known before it fails.
    /// Default 10000.
    pub failover_timeout_ms: u64,
    /// User the probes log in as (one of `[[users]]`). Default: the first user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Database the probes connect to. Default `postgres`.
    pub database: String,
    /// Failed probes in a row that take a backend out (down). Default 3.
    pub fall: u32,
    /// Good probes in a row that bring a replica back into rotation. Default 2.
    pub rise: u32,
    /// A replica further behind the primary than this many bytes of WAL leaves
    /// read rotation. Default 16 MiB.
    pub max_lag_bytes: u64,
    /// A replica that has had WAL to replay for longer than this leaves read
    /// rotation. Default 5000.
    pub max_lag_ms: u64,
    /// To come back, a replica's lag must be under the thresholds times this
    /// fraction (hysteresis). Default 0.5.
    pub readmit_fraction: f64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            interval_ms: 500,
            timeout_ms: 1000,
            failover_timeout_ms: 10_000,
            user: None,
            database: "postgres".into(),
            fall: 3,
            rise: 2,
            max_lag_bytes: 16 << 20,
            max_lag_ms: 5_000,
            readmit_fraction: 0.5,
        }
    }
}

/// What reads do when no replica may serve them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoReplica {
    /// Serve them from the primary (read-only sessions there get
    /// `default_transaction_read_only = on`).
    #[default]
    Primary,
    /// Fail them with SQLSTATE 57P03.
    Error,
}

/// How a session's reads after its own writes are kept consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyMode {
    /// Reads go to replicas whose replay LSN covers the session's last
    /// commit (else the primary).
    #[default]
    Lsn,
    /// Reads go to the primary for `window_ms` after a write.
    Window,
    /// No read-your-writes: reads may be stale.
    Off,
}

/// `[consistency]`: read-your-writes on the read-write port. Reloadable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Consistency {
    /// `"lsn"` (default), `"window"` or `"off"`.
    pub mode: ConsistencyMode,
    /// Window mode: how long after a write reads stay on the primary.
    /// Default 5000.
    pub window_ms: u64,
    /// Lsn mode: how long a read may wait for a replica to reach the
    /// session's LSN before going to the primary. Default 0 (no wait).
    pub max_wait_ms: u64,
    /// Lsn mode: while reads wait for replica positions pgsplit does not
    /// know yet, it polls the primary and the replicas (on its own
    /// connections) at most this often. Default 5.
    pub poll_ms: u64,
}

impl Default for Consistency {
    fn default() -> Self {
        Consistency {
            mode: ConsistencyMode::Lsn,
            window_ms: 5000,
            max_wait_ms: 0,
            poll_ms: 5,
        }
    }
}

/// `[routing]`: where reads go. Reloadable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// The primary also serves reads, by its `weight`, alongside in-rotation
    /// replicas. Default false.
    pub primary_reads: bool,
    /// With no replica in rotation: `"primary"` (default) or `"error"`.
    /// (Read-only port only: reads on the read-write port fall back to the
    /// primary.)
    pub no_replica: NoReplica,
    /// Functions to treat as read-only on top of the built-in list (user
    /// functions known to be safe on a replica). Default empty.
    pub read_functions: Vec<String>,
    /// Functions to treat as writes, whatever else says otherwise. Default
    /// empty.
    pub write_functions: Vec<String>,
    /// Statement texts whose verdict is cached. Default 10000; 0 disables.
    pub classify_cache: usize,
    /// Relations (views, tables) describing a node's own runtime state: on
    /// the read-write port, reads of them go to the primary, since a replica
    /// would answer about itself. An entry ending in `*` matches a prefix.
    /// Default: `pg_stat_*`, `pg_statio_*`, `pg_locks`, `pg_prepared_xacts`,
    /// `pg_replication_slots`, `pg_replication_origin_status`, `pg_settings`,
    /// `pg_backend_memory_contexts`, `pg_file_settings`, `pg_hba_file_rules`,
    /// `pg_ident_file_mappings`, `pg_shmem_allocations`.
    pub primary_relations: Vec<String>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            primary_reads: false,
            no_replica: NoReplica::default(),
            read_functions: Vec::new(),
            write_functions: Vec::new(),
            classify_cache: 10_000,
            primary_relations: crate::classify::DEFAULT_PRIMARY_RELATIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// How long a client keeps a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Only for a transaction: between transactions a client holds no
    /// server connection (unless something pins it to one).
    #[default]
    Transaction,
    /// For the client's whole session (its own primary connection on the
    /// read-write port, its own replica on the read-only port).
    Session,
}

/// `[pool]`: server connection pooling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pool {
    /// `"transaction"` (default) or `"session"`, on both ports. Reloadable
    /// (applies to new clients).
    pub mode: PoolMode,
    /// Protocol-level prepared statements one server connection keeps
    /// (shared by the sessions that use it); the least recently used one is
    /// closed past this. Default 500. Reloadable.
    pub max_prepared_statements: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            mode: PoolMode::Transaction,
            max_prepared_statements: 500,
        }
    }
}

/// `[runtime]`: the process itself.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Tokio worker threads. Default: one per core. Restart to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
}

/// `[[backends]]`: one Postgres node.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Unique name, used in logs, metrics and errors.
    pub name: String,
    /// `host:port`; the host may be a DNS name, resolved at each connect.
    pub address: String,
    /// Share of reads relative to other replicas; 0 means never for reads.
    /// Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `[admin]`: the admin HTTP endpoints and the admin console. Reloadable.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// When set, every endpoint but `/healthz` and `/readyz` (which
    /// orchestrators probe without credentials) and the status page `/`
    /// (no data; it asks for the token and sends it) requires
    /// `Authorization: Bearer <token>`. Default: none (bind the admin
    /// address to loopback or a private network instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Read the token from this environment variable instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Users (each one of `[[users]]`, with its password) who may open the
    /// admin console: database `pgsplit` on a client port. Default empty:
    /// no console.
    #[serde(default)]
    pub users: Vec<String>,
    /// The console is also served on the read-only port. Default false:
    /// there it is refused (28000), so a read-only port exposed to more
    /// clients cannot pause or drain anything.
    #[serde(default)]
    pub console_on_read_only: bool,
}

/// `[[users]]`: a login.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// The password, checked against clients and used to log in to backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Read the password from this environment variable instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// A string that never shows up in logs or `--check` output.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse {
                line,
                column,
                message,
                ..
            } => ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text; resolves `password_env`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |span| span.start).min(text.len());
            let before = text.as_bytes()[..at].split(|&b| b == b'\n');
            let (line, column) = before
                .enumerate()
                .last()
                .map_or((1, 1), |(i, last)| (i + 1, last.len() + 1));
            ConfigError::Parse {
                path: PathBuf::from("<config>"),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        config.resolve_passwords(|var| std::env::var(var).ok())?;
        config.validate()?;
        Ok(config)
    }

    fn resolve_passwords(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        match (&self.admin.token, &self.admin.token_env) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "admin.token_env",
                    "set either token or token_env, not both",
                ))
            }
            (None, Some(var)) => {
                let value = env(var).ok_or_else(|| {
                    invalid(
                        "admin.token_env",
                        format!("environment variable {var} is not set"),
                    )
                })?;
                self.admin.token = Some(Secret(value));
            }
            _ => {}
        }
        if self.admin.token.as_ref().is_some_and(|t| t.0.is_empty()) {
            return Err(invalid("admin.token", "must not be empty"));
        }
        for (i, user) in self.users.iter_mut().enumerate() {
            match (&user.password, &user.password_env) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        format!("users[{i}].password_env"),
                        "set either password or password_env, not both",
                    ))
                }
                (None, Some(var)) => {
                    let value = env(var).ok_or_else(|| {
                        invalid(
                            format!("users[{i}].password_env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?;
                    user.password = Some(Secret(value));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks everything serde cannot: presence, uniqueness, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backends.is_empty() {
            return Err(invalid(
                "backends",
                "at least one [[backends]] entry is required",
            ));
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.name.is_empty() {
                return Err(invalid(format!("backends[{i}].name"), "must not be empty"));
            }
            if self.backends[..i].iter().any(|o| o.name == b.name) {
                return Err(invalid(
                    format!("backends[{i}].name"),
                    format!("duplicate name {:?}", b.name),
                ));
            }
            match b.address.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => {
                    return Err(invalid(
                        format!("backends[{i}].address"),
                        format!("{:?} is not host:port", b.address),
                    ))
                }
            }
        }
        if self.users.is_empty() {
            return Err(invalid("users", "at least one [[users]] entry is required"));
        }
        for (i, u) in self.users.iter().enumerate() {
            if u.name.is_empty() {
                return Err(invalid(format!("users[{i}].name"), "must not be empty"));
            }
            if self.users[..i].iter().any(|o| o.name == u.name) {
                return Err(invalid(
                    format!("users[{i}].name"),
                    format!("duplicate user {:?}", u.name),
                ));
            }
            if u.password.is_none() && self.auth.method != AuthMethod::Trust {
                return Err(invalid(
                    format!("users[{i}].password"),
                    "required (or password_env) unless auth.method = \"trust\"",
                ));
            }
        }
        for (i, name) in self.admin.users.iter().enumerate() {
            if !self.users.iter().any(|u| &u.name == name) {
                return Err(invalid(
                    format!("admin.users[{i}]"),
                    format!("{name:?} is not one of [[users]]"),
                ));
            }
        }
        if let Some(user) = &self.health.user {
            if !self.users.iter().any(|u| &u.name == user) {
                return Err(invalid(
                    "health.user",
                    format!("{user:?} is not one of [[users]]"),
                ));
            }
        }
        let l = &self.listen;
        let clash =
            l.read_write == l.read_only || l.read_write == l.admin || l.read_only == l.admin;
        // Port 0 (pick any free port) may repeat.
        if clash && l.read_write.port() != 0 {
            return Err(invalid(
                "listen",
                "read_write, read_only and admin must differ",
            ));
        }
        let lim = &self.limits;
        if !(1024..=(1 << 30)).contains(&lim.max_message_size) {
            return Err(invalid(
                "limits.max_message_size",
                "must be between 1024 and 1073741824",
            ));
        }
        if lim.max_client_connections == 0 {
            return Err(invalid(
                "limits.max_client_connections",
                "must be at least 1",
            ));
        }
        if lim.max_server_connections == 0 {
            return Err(invalid(
                "limits.max_server_connections",
                "must be at least 1",
            ));
        }
        for (key, v) in [
            ("limits.login_timeout_ms", lim.login_timeout_ms),
            ("limits.connect_timeout_ms", lim.connect_timeout_ms),
            ("health.interval_ms", self.health.interval_ms),
            ("health.timeout_ms", self.health.timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.health.fall == 0 || self.health.rise == 0 {
            return Err(invalid("health.fall", "fall and rise must be at least 1"));
        }
        if !(self.health.readmit_fraction > 0.0 && self.health.readmit_fraction <= 1.0) {
            return Err(invalid("health.readmit_fraction", "must be in (0, 1]"));
        }
        if self.pool.max_prepared_statements == 0 {
            return Err(invalid(
                "pool.max_prepared_statements",
                "must be at least 1",
            ));
        }
        self.validate_server_tls()?;
        if self.runtime.worker_threads == Some(0) {
            return Err(invalid("runtime.worker_threads", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_server_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.server_tls;
        let mode = tls.mode.as_str();
        let verifies = matches!(
            tls.mode,
            ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull
        );
        match (verifies, &tls.ca_file) {
            (true, None) => {
                return Err(invalid(
                    "server_tls.ca_file",
                    format!("required by mode = \"{mode}\""),
                ))
            }
            (false, Some(_)) => {
                return Err(invalid(
                    "server_tls.ca_file",
                    format!("not used by mode = \"{mode}\" (use \"verify-ca\" or \"verify-full\" to check certificates)"),
                ))
            }
            _ => {}
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(invalid(
                "server_tls.cert_file",
                "cert_file and key_file go together",
            ));
        }
        if tls.mode == ServerTlsMode::Disable && tls.cert_file.is_some() {
            return Err(invalid(
                "server_tls.cert_file",
                "not used by mode = \"disable\"",
            ));
        }
        Ok(())
    }

    /// The user probes log in as.
    pub fn health_user(&self) -> &User {
        let name = self.health.user.as_deref();
        self.users
            .iter()
            .find(|u| Some(u.name.as_str()) == name)
            .unwrap_or(&self.users[0])
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Whether the admin port is open beyond loopback without a token: then
    /// anyone who reaches it can read `/status` and `/metrics` and pause or
    /// reload pgsplit (logged as a warning at start).
    pub fn admin_exposed(&self) -> bool {
        !self.listen.admin.ip().is_loopback() && self.admin.token.is_none()
    }

    /// The effective configuration as TOML, secrets redacted (for `--check`).
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.admin.token_env.is_some() {
            shown.admin.token = None;
        }
        for u in &mut shown.users {
            if u.password_env.is_some() {
                u.password = None;
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
