//! Pause and resume: a planned switchover under pause costs clients latency,
//! not errors.

mod common;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pgsplit::config::AuthMethod;
use tokio_postgres::SimpleQueryMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_pause_has_zero_client_errors() {
    let env = Env::start(Setup::default().tweak(|c| {
        c.health.interval_ms = 200;
        c.health.fall = 2;
        c.auth.method = AuthMethod::Trust;
        c.limits.pause_timeout_ms = 20_000;
    }))
    .await;
    let setup = env.connect(env.rw).await;
    setup
        .batch_execute("CREATE TABLE sw(id serial, port int)")
        .await
        .unwrap();
    drop(setup);

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for (port, sql) in [
        (
            env.rw,
            "INSERT INTO sw(port) VALUES (inet_server_port()) RETURNING port",
        ),
        (
            env.rw,
            "INSERT INTO sw(port) VALUES (inet_server_port()) RETURNING port",
        ),
        (env.ro, "SELECT inet_server_port()"),
        (env.ro, "SELECT inet_server_port()"),
    ] {
        let client = env.connect(port).await;
        let (stop, errors, done) = (stop.clone(), errors.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut last_port = 0;
            while !stop.load(Ordering::Relaxed) {
                match client.simple_query(sql).await {
                    Ok(rows) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        if let Some(port) = rows.iter().find_map(|m| match m {
                            SimpleQueryMessage::Row(r) => r.get(0).and_then(|p| p.parse().ok()),
                            _ => None,
                        }) {
                            last_port = port;
                        }
                    }
                    Err(e) => {
                        eprintln!("client error: {e:?}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last_port
        }));
    }
    eventually(Duration::from_secs(5), "traffic flows", || async {
        done.load(Ordering::Relaxed) > 40
    })
    .await;

    // The switchover, as Patroni or repmgr would do it, under pause.
    assert_eq!(env.http_post("/pause").await.0, 200);
    let (_, status) = env.http_get("/status").await;
    assert!(status.contains("\"paused\": true"), "{status}");
    env.cluster.stop_node(0, false).unwrap();
    env.cluster.promote(1).unwrap();
    env.cluster.repoint_replica(2, 1).unwrap();
    env.wait_for(Duration::from_secs(10), |s| {
        s.primary == Some(1) && s.backends[2].in_rotation
    })
    .await;
    let before_resume = done.load(Ordering::Relaxed);
    assert_eq!(env.http_post("/resume").await.0, 200);
    eventually(Duration::from_secs(10), "traffic resumes", || async {
        done.load(Ordering::Relaxed) > before_resume + 40
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut last_ports = Vec::new();
    for c in clients {
        last_ports.push(c.await.unwrap());
    }
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "clients saw errors across the switchover"
    );
    let new_primary = i32::from(env.cluster.node(1).port);
    assert_eq!(
        &last_ports[..2],
        &[new_primary, new_primary],
        "writes follow the new primary"
    );
    assert!(last_ports[2..]
        .iter()
        .all(|&p| p == i32::from(env.cluster.node(2).port) || p == new_primary));
}
