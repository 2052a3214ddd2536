//! Reloading the configuration while sessions run: weights, backends added and
//! removed, a bad file refused.

mod common;
use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use pgsplit::config::AuthMethod;

fn config_text(backends: &[(&str, u16, u32)], extra: &str) -> String {
    let mut t = String::from(
        "[listen]\nread_write = \"127.0.0.1:0\"\nread_only = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [auth]\nmethod = \"trust\"\n[health]\ninterval_ms = 200\nfall = 2\n",
    );
    t.push_str(extra);
    for (name, port, weight) in backends {
        t.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nweight = {weight}\n"
        ));
    }
    for user in ["app", "app_md5", "app_trust"] {
        t.push_str(&format!(
            "[[users]]\nname = \"{user}\"\npassword = \"{user}\"\n"
        ));
    }
    t
}

async fn ro_ports(env: &Env, n: usize) -> BTreeSet<u16> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let c = env.connect(env.ro).await;
        seen.insert(served_by(&c).await);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_weights_adds_and_removes_backends_and_refuses_bad_files() {
    let env = Env::start(Setup::default().no_wait().tweak(|c| {
        c.backends.truncate(2);
        c.auth.method = AuthMethod::Trust;
    }))
    .await;
    env.wait_for(Duration::from_secs(15), |s| {
        s.complete && s.primary.is_some() && !s.read_schedule.is_empty()
    })
    .await;
    let (p1, p2, p3) = (
        env.cluster.node(0).port,
        env.cluster.node(1).port,
        env.cluster.node(2).port,
    );
    let dir = Scratch::new("reload");
    let file = dir.join("pgsplit.toml");
    env.proxy().shared.set_config_path(file.clone());
    let keep = env.connect(env.rw).await;
    assert_eq!(ro_ports(&env, 4).await, BTreeSet::from([p2]));

    // Add pg3.
    std::fs::write(
        &file,
        config_text(&[("pg1", p1, 1), ("pg2", p2, 1), ("pg3", p3, 2)], ""),
    )
    .unwrap();
    let (status, body) = env.http_post("/reload").await;
    assert_eq!(status, 200, "{body}");
    env.wait_for(Duration::from_secs(5), |s| {
        s.backends.len() == 3 && s.backends[2].in_rotation
    })
    .await;
    assert_eq!(ro_ports(&env, 6).await, BTreeSet::from([p2, p3]));

    // Weight 0 for pg3: no more reads there. A session already there moves.
    let on_pg3 = loop {
        let c = env.connect(env.ro).await;
        if served_by(&c).await == p3 {
            break c;
        }
    };
    std::fs::write(
        &file,
        config_text(&[("pg1", p1, 1), ("pg2", p2, 1), ("pg3", p3, 0)], ""),
    )
    .unwrap();
    assert_eq!(env.http_post("/reload").await.0, 200);
    env.wait_for(Duration::from_secs(5), |s| !s.backends[2].in_rotation)
        .await;
    assert_eq!(ro_ports(&env, 6).await, BTreeSet::from([p2]));
    // on_pg3 prepared a statement there; it moves on unnoticed (its
    // statements are prepared again where it lands).
    assert_eq!(served_by(&on_pg3).await, p2);

    // A bad file changes nothing and says why.
    std::fs::write(
        &file,
        config_text(&[("pg1", p1, 1)], "[limits]\nmax_clientz = 1\n"),
    )
    .unwrap();
    let (status, body) = env.http_post("/reload").await;
    assert_eq!(status, 400);
    assert!(body.contains("max_clientz"), "{body}");
    assert_eq!(env.proxy().shared.topology.snapshot().backends.len(), 3);
    let (_, metrics) = env.http_get("/metrics").await;
    assert!(
        metrics.contains("pgsplit_config_reloads_total{result=\"success\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgsplit_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    let (_, status) = env.http_get("/status").await;
    assert!(status.contains("\"config_generation\": 2"), "{status}");

    // Remove pg2: reads go to the primary (no replica left), read-only there.
    std::fs::write(&file, config_text(&[("pg1", p1, 1), ("pg3", p3, 0)], "")).unwrap();
    assert_eq!(env.http_post("/reload").await.0, 200);
    env.wait_for(Duration::from_secs(5), |s| {
        s.backends.len() == 2 && s.complete
    })
    .await;
    assert_eq!(ro_ports(&env, 3).await, BTreeSet::from([p1]));
    // The session opened before all this never noticed.
    assert_eq!(
        keep.query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}
