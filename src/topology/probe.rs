//! One probe task per backend: its own connection (tokio-postgres), re-opened
//! when lost, asking `pg_is_in_recovery()` every `health.interval_ms`. A probe
//! that errors or passes `health.timeout_ms` counts as the backend being down.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Observation, Topology};
use crate::config::Config;

/// Splits `host:port` (brackets allowed around an IPv6 host).
pub fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// Starts a probe task per configured backend; they stop on `shutdown`.
pub fn spawn_all(
    topology: &Arc<Topology>,
    config: &Config,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    let user = config.health_user();
    for (index, backend) in config.backends.iter().enumerate() {
        let Some((host, port)) = split_address(&backend.address) else {
            continue;
        };
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
        let probe = Probe {
            index,
            pg,
            topology: topology.clone(),
            interval: Duration::from_millis(config.health.interval_ms),
            timeout: Duration::from_millis(config.health.timeout_ms),
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = probe.run() => {}
            }
        });
    }
}

struct Probe {
    index: usize,
    pg: tokio_postgres::Config,
    topology: Arc<Topology>,
    interval: Duration,
    timeout: Duration,
}

impl Probe {
    async fn run(self) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut client: Option<tokio_postgres::Client> = None;
        loop {
            ticker.tick().await;
            let observation = match self.probe(&mut client).await {
                Ok(in_recovery) => Observation::Up { in_recovery },
                Err(error) => {
                    client = None;
                    Observation::Down { error }
                }
            };
            self.topology.observe(self.index, observation);
        }
    }

    async fn probe(&self, client: &mut Option<tokio_postgres::Client>) -> Result<bool, String> {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            let (c, connection) = timeout(self.timeout, self.pg.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            *client = Some(c);
        }
        let c = client.as_ref().expect("connected above");
        let row = timeout(self.timeout, c.query_one("SELECT pg_is_in_recovery()", &[]))
            .await
            .map_err(|_| "probe timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_addresses() {
        assert_eq!(
            super::split_address("db.local:5432"),
            Some(("db.local", 5432))
        );
        assert_eq!(super::split_address("[::1]:6432"), Some(("::1", 6432)));
        assert_eq!(super::split_address("nope"), None);
    }
}
