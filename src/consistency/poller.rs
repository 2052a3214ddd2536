//! The position poller: reads the primary's insert position and replicas'
//! replay positions on its own connections, only while some read waits for
//! one, at most every `consistency.poll_ms`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;
use tokio_util::sync::CancellationToken;

use super::replicas;
use crate::shared::Shared;
use crate::topology::Lsn;

/// One connection per backend, by name (with the address it was opened to).
type Clients = HashMap<String, (String, Arc<tokio_postgres::Client>)>;

/// Runs until `stop`.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut clients = Clients::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.positions.demand.notified() => {}
        }
        // Poll while reads keep waiting, no more often than the interval.
        loop {
            let started = tokio::time::Instant::now();
            let snapshot = shared.topology.snapshot();
            let in_rotation = replicas(&snapshot);
            let names: Vec<String> = in_rotation.iter().map(|(n, _)| n.clone()).collect();
            let (primary, wanted) = shared.positions.wants(&names);
            if !primary && wanted.is_empty() {
                break;
            }
            let config = shared.config.load_full();
            let timeout = Duration::from_millis(config.health.timeout_ms);
            if let Some(p) = snapshot.primary {
                let b = &snapshot.backends[p];
                shared.positions.follow_primary(&b.name);
                if primary {
                    let start = Instant::now();
                    let sql = "SELECT pg_catalog.pg_current_wal_insert_lsn()";
                    if let Some(lsn) =
                        read_lsn(&shared, &mut clients, &b.name, &b.address, sql, timeout).await
                    {
                        shared.positions.record_primary(&b.name, start, lsn);
                    }
                }
            }
            // The replicas at once, after the primary (their positions are
            // compared with its reading).
            let sql = "SELECT pg_catalog.pg_last_wal_replay_lsn()";
            let mut replies = tokio::task::JoinSet::new();
            for (name, address) in in_rotation.iter().filter(|(n, _)| wanted.contains(n)) {
                if let Some(client) = connected(&shared, &mut clients, name, address, timeout).await
                {
                    shared.metrics.internal_query(name, "position");
                    let name = name.clone();
                    replies.spawn(async move {
                        let answer = tokio::time::timeout(timeout, client.simple_query(sql)).await;
                        (name, answer)
                    });
                }
            }
            while let Some(Ok((name, answer))) = replies.join_next().await {
                match answer {
                    Ok(Ok(messages)) => {
                        if let Some(lsn) = first_lsn(&messages) {
                            shared.positions.record_replay(&name, lsn);
                        }
                    }
                    _ => {
                        clients.remove(&name);
                    }
                }
            }
            let interval = Duration::from_millis(config.consistency.poll_ms);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(started + interval) => {}
            }
        }
    }
}

/// Runs a one-LSN query on `name`'s connection (opening it if need be).
/// None when the backend did not answer in time or answered no LSN.
async fn read_lsn(
    shared: &Shared,
    clients: &mut Clients,
    name: &str,
    address: &str,
    sql: &str,
    timeout: Duration,
) -> Option<Lsn> {
    let client = connected(shared, clients, name, address, timeout).await?;
    shared.metrics.internal_query(name, "position");
    match tokio::time::timeout(timeout, client.simple_query(sql)).await {
        Ok(Ok(messages)) => first_lsn(&messages),
        _ => {
            clients.remove(name);
            None
        }
    }
}

/// The LSN in the first row's first column.
fn first_lsn(messages: &[SimpleQueryMessage]) -> Option<Lsn> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
        _ => None,
    })
}

/// `name`'s connection (a handle to it), opened if need be.
async fn connected(
    shared: &Shared,
    clients: &mut Clients,
    name: &str,
    address: &str,
    timeout: Duration,
) -> Option<Arc<tokio_postgres::Client>> {
    if clients
        .get(name)
        .is_some_and(|(a, c)| a != address || c.is_closed())
    {
        clients.remove(name);
    }
    if !clients.contains_key(name) {
        let config = shared.config.load();
        let pg = crate::topology::probe::client_config(&config, address)?;
        let client = tokio::time::timeout(
            timeout,
            crate::topology::probe::connect(&pg, shared.server_tls.as_deref()),
        )
        .await
        .ok()?
        .ok()?;
        clients.insert(name.to_owned(), (address.to_owned(), Arc::new(client)));
    }
    clients.get(name).map(|(_, client)| Arc::clone(client))
}
