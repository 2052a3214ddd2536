//! One probe task per backend: its own connection (tokio-postgres), re-opened
//! with backoff when lost, reading every `health.interval_ms` in one round trip
//! whether the backend is in recovery, its WAL positions, replay state and
//! timeline, timed on pgsplit's clock. A probe that errors or passes
//! `health.timeout_ms` is a failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::time::{timeout, MissedTickBehavior};
use tokio_postgres::SimpleQueryMessage;
use tokio_util::sync::CancellationToken;

use super::{Lsn, Observation, ProbeTime, Reading, Topology};
use crate::config::Config;
use crate::tls::backend::ServerTls;
use crate::tls::postgres::MakeRustls;

/// One query, one round trip (simple protocol), for both roles. Functions that
/// error on the other role are guarded by CASE. The primary's position is its
/// flushed WAL, what walsenders send: WAL only written to the OS (a long
/// transaction's, until the WAL writer flushes it) is not yet lag for anyone.
/// The timeline is the first eight hex digits of the primary's current WAL
/// file name. No server timestamps: time lag is measured on pgsplit's clock
/// (see [`super::lag`]).
const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn() END, \
    pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), \
    CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() <> 'not paused' ELSE false END, \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END";

/// Splits `host:port` (brackets allowed around an IPv6 host).
pub fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// A tokio-postgres configuration for pgsplit's own connection to the
/// backend at `address`, as the health user (`health.user`, database
/// `health.database`).
pub fn client_config(config: &Config, address: &str) -> Option<tokio_postgres::Config> {
    let (host, port) = split_address(address)?;
    let user = config.health_user();
    let mut pg = tokio_postgres::Config::new();
    pg.host(host)
        .port(port)
        .user(&user.name)
        .dbname(&config.health.database)
        .application_name("pgsplit-health")
        .connect_timeout(Duration::from_millis(config.health.timeout_ms));
    if let Some(p) = &user.password {
        pg.password(p.expose());
    }
    Some(pg)
}

/// Connects pgsplit's own tokio-postgres client with `pg`, over TLS when
/// `tls` is given (`[server_tls]`: the same checks as the sessions'
/// connections); the connection runs on a task of its own.
pub async fn connect(
    pg: &tokio_postgres::Config,
    tls: Option<&ServerTls>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    use tokio_postgres::config::SslMode;
    let mut pg = pg.clone();
    let client = match tls {
        None => {
            let (client, connection) = pg
                .ssl_mode(SslMode::Disable)
                .connect(tokio_postgres::NoTls)
                .await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Some(tls) => {
            let (client, connection) = pg
                .ssl_mode(SslMode::Require)
                .connect(MakeRustls::new(tls))
                .await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
    };
    Ok(client)
}

/// Starts a probe task per configured backend, reporting with `generation`
/// (see `Topology::reconfigure`); they stop on `stop`. `queries` gives the
/// counter of a backend's probe queries.
pub fn spawn_all(
    topology: &Arc<Topology>,
    config: &Config,
    tls: Option<Arc<ServerTls>>,
    generation: u64,
    stop: &CancellationToken,
    queries: impl Fn(&str) -> Counter,
) {
    for (index, backend) in config.backends.iter().enumerate() {
        let Some(pg) = client_config(config, &backend.address) else {
            continue;
        };
        let probe = Probe {
            generation,
            index,
            pg,
            tls: tls.clone(),
            topology: topology.clone(),
            interval: Duration::from_millis(config.health.interval_ms),
            timeout: Duration::from_millis(config.health.timeout_ms),
            connect_timeout: Duration::from_millis(config.limits.connect_timeout_ms),
            queries: queries(&backend.name),
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = probe.run() => {}
            }
        });
    }
}

struct Probe {
    generation: u64,
    index: usize,
    pg: tokio_postgres::Config,
    tls: Option<Arc<ServerTls>>,
    topology: Arc<Topology>,
    interval: Duration,
    /// For the probe query.
    timeout: Duration,
    /// For connecting and logging in (`limits.connect_timeout_ms`, as for
    /// sessions' connections): a slow login is not a slow server.
    connect_timeout: Duration,
    queries: Counter,
}

impl Probe {
    async fn run(self) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut client: Option<tokio_postgres::Client> = None;
        // Reconnect backoff: skip ticks after consecutive connect failures,
        // doubling up to 8 intervals, so a dead backend is not hammered.
        let (mut skip, mut backoff) = (0u32, 0u32);
        loop {
            ticker.tick().await;
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let connected = client.as_ref().is_some_and(|c| !c.is_closed());
            let observation = match self.probe(&mut client).await {
                Ok((reading, time)) => {
                    backoff = 0;
                    Observation::Up { reading, time }
                }
                Err(error) => {
                    client = None;
                    if !connected {
                        backoff = (backoff * 2).clamp(1, 8);
                        skip = backoff - 1;
                    }
                    Observation::Down { error }
                }
            };
            self.topology
                .observe(self.generation, self.index, observation);
        }
    }

    /// One reading, timed around the query alone (not the connect).
    async fn probe(
        &self,
        client: &mut Option<tokio_postgres::Client>,
    ) -> Result<(Reading, ProbeTime), String> {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            let c = timeout(self.connect_timeout, connect(&self.pg, self.tls.as_deref()))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| describe(&e))?;
            *client = Some(c);
        }
        let c = client.as_ref().expect("connected above");
        let sent = Instant::now();
        self.queries.inc();
        let messages = timeout(self.timeout, c.simple_query(PROBE_SQL))
            .await
            .map_err(|_| "probe timed out".to_string())?
            .map_err(|e| describe(&e))?;
        let answered = Instant::now();
        let row = messages
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .ok_or("probe returned no row")?;
        Ok((parse_row(|i| row.get(i))?, ProbeTime { sent, answered }))
    }
}

/// An error with its cause, e.g. "error connecting to server: Connection refused".
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Reads the probe's columns (text, NULL as None).
fn parse_row<'a>(col: impl Fn(usize) -> Option<&'a str>) -> Result<Reading, String> {
    let lsn = |i: usize| {
        col(i)
            .map(|s| s.parse::<Lsn>().map_err(|e| format!("column {i}: {e}")))
            .transpose()
    };
    let in_recovery = col(0) == Some("t");
    Ok(Reading {
        in_recovery,
        current_lsn: lsn(1)?,
        receive_lsn: lsn(2)?,
        replay_lsn: lsn(3)?,
        replay_paused: col(4) == Some("t"),
        timeline: col(5).and_then(|s| u32::from_str_radix(s, 16).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_addresses() {
        assert_eq!(split_address("db.local:5432"), Some(("db.local", 5432)));
        assert_eq!(split_address("[::1]:6432"), Some(("::1", 6432)));
        assert_eq!(split_address("nope"), None);
    }

    #[test]
    fn parses_probe_rows_as_postgres_sends_them() {
        let primary = [
            Some("f"),
            Some("0/3000148"),
            None,
            None,
            Some("f"),
            Some("00000002"),
        ];
        let r = parse_row(|i| primary[i]).unwrap();
        assert!(!r.in_recovery);
        assert_eq!(r.current_lsn, Some(Lsn(0x3000148)));
        assert_eq!(r.timeline, Some(2));
        let replica = [
            Some("t"),
            None,
            Some("0/3000148"),
            Some("0/3000100"),
            Some("t"),
            None,
        ];
        let r = parse_row(|i| replica[i]).unwrap();
        assert!(r.in_recovery && r.replay_paused);
        assert_eq!(r.replay_lsn, Some(Lsn(0x3000100)));
        assert!(parse_row(|i| [Some("t"), Some("garbage")].get(i).copied().flatten()).is_err());
    }
}
