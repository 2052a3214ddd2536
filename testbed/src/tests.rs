//! Unit tests of the testbed internals (kill fallback, port retry, failed start
//! cleanup, keep, stale-dir sweep); they start real PostgreSQL clusters.

use super::cleanup::{kill_data_dir_processes, stop_server_hard, sweep_stale_dirs_in};
use super::env::{pg_env, pick_port};
use super::files::create_unique_dir;
use super::node::start_new_node_with;
use super::*;
use std::net::{Ipv4Addr, SocketAddr};

fn refuses(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(2),
    )
    .is_err()
}

#[test]
fn kill_fallback_stops_a_server_and_drop_copes_with_stale_pid_file() {
    let c = Cluster::start(ClusterOptions {
        replicas: 0,
        extra_conf: vec![],
    })
    .unwrap();
    let node = c.node(0).clone();
    let dir = c.dir().to_path_buf();
    assert!(!refuses(node.port));
    kill_data_dir_processes(&node.data_dir).unwrap();
    assert!(refuses(node.port));
    // SIGKILL leaves postmaster.pid behind: pg_ctl stop then fails and
    // shutdown must still finish and remove the directory.
    assert!(node.data_dir.join("postmaster.pid").exists());
    drop(c);
    assert!(!dir.exists());
}

#[test]
fn start_retries_on_a_new_port_when_the_port_is_taken() {
    let c = Cluster::start(ClusterOptions {
        replicas: 0,
        extra_conf: vec![],
    })
    .unwrap();
    c.stop_node(0, false).unwrap();
    let blocker = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let taken = blocker.local_addr().unwrap().port();
    let mut ports = vec![pick_port().unwrap(), taken];
    let mut node = c.node(0).clone();
    start_new_node_with(c.env, &c.root, &mut node, &mut || Ok(ports.pop().unwrap())).unwrap();
    assert!(ports.is_empty(), "second port not used");
    assert_ne!(node.port, taken);
    assert!(
        node.log_tail(100).contains("Address already in use"),
        "{}",
        node.log_tail(100)
    );
    assert!(!refuses(node.port));
    let dir = c.dir().to_path_buf();
    drop(c); // the node list still has the old port; shutdown finds the server by its data dir
    assert!(refuses(node.port));
    assert!(!dir.exists());
}

#[test]
fn bad_config_fails_with_log_tail_and_cleans_up() {
    let err = Cluster::start(ClusterOptions {
        replicas: 1,
        extra_conf: vec!["no_such_setting = 1".into()],
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("no_such_setting"), "{msg}");
    // The message names the log file, inside the (now removed) cluster dir.
    let log = msg
        .split_whitespace()
        .find(|w| w.ends_with("/pg1.log"))
        .unwrap_or_else(|| panic!("no log path in {msg}"));
    let dir = Path::new(log).parent().unwrap();
    assert!(dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(DIR_PREFIX));
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn keep_leaves_servers_running_after_drop() {
    let mut c = Cluster::start(ClusterOptions {
        replicas: 1,
        extra_conf: vec![],
    })
    .unwrap();
    c.keep();
    let env = c.env;
    let dir = c.dir().to_path_buf();
    let nodes = c.nodes().to_vec();
    drop(c);
    assert!(dir.join(KEEP_MARKER).exists());
    for n in &nodes {
        assert!(!refuses(n.port), "{} stopped despite keep()", n.name);
    }
    // The sweep leaves kept directories alone even once their creator is gone;
    // here the creator is alive, so just clean up by hand.
    for n in &nodes {
        stop_server_hard(env, &dir, &n.data_dir).unwrap();
        assert!(refuses(n.port));
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sweep_removes_dirs_of_dead_processes_only() {
    let env = pg_env().unwrap();
    let tmp = create_unique_dir(env, "pgsplit-sweeptest-").unwrap();
    // u32::MAX is above any pid_max, so that "process" is surely gone.
    let dead = tmp.join(format!("{DIR_PREFIX}{}-0-abc", u32::MAX));
    let dead_template = tmp.join(format!("{DIR_PREFIX}{TEMPLATE_TAG}{}-0-abc", u32::MAX));
    let kept = tmp.join(format!("{DIR_PREFIX}{}-1-abc", u32::MAX));
    let alive = tmp.join(format!("{DIR_PREFIX}{}-0-abc", std::process::id()));
    let unrelated = tmp.join("something-else-4294967295");
    for d in [&dead, &dead_template, &kept, &alive, &unrelated] {
        fs::create_dir_all(d.join("pg1")).unwrap();
    }
    // A stale pid file (no such process) must not block removal.
    fs::write(dead.join("pg1/postmaster.pid"), format!("{}\n", u32::MAX)).unwrap();
    fs::write(kept.join(KEEP_MARKER), "").unwrap();
    sweep_stale_dirs_in(env, &tmp);
    assert!(!dead.exists());
    assert!(!dead_template.exists());
    assert!(kept.exists());
    assert!(alive.exists());
    assert!(unrelated.exists());
    fs::remove_dir_all(&tmp).unwrap();
}
