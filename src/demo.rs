//! `pgsplit demo` and `pgsplit testbed`: a real local cluster (see the
//! `pgsplit-testbed` crate) for newcomers and for scripts. Built only with the
//! `demo` feature (on by default; the container image leaves it out).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use pgsplit::app::Proxy;
use pgsplit::config::{Backend, Config, Secret, User};
use pgsplit_testbed::{Cluster, ClusterOptions};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Exit after showing the routing instead of waiting for Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

#[derive(clap::Args)]
pub struct TestbedArgs {
    /// Directory to write cluster.env into (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Number of streaming replicas.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Extra postgresql.conf line for every node (repeatable).
    #[arg(long = "conf")]
    pub conf: Vec<String>,
}

/// The preferred port if it is free, else any free port.
fn port_or_free(preferred: u16) -> SocketAddr {
    let addr = SocketAddr::from(([127, 0, 0, 1], preferred));
    match TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    println!(
        "Starting a PostgreSQL primary and two streaming replicas (initdb, pg_basebackup -R)..."
    );
    let cluster =
        Cluster::start(ClusterOptions::default()).context("starting the local cluster")?;
    for (i, node) in cluster.nodes().iter().enumerate() {
        let role = if i == 0 { "primary" } else { "replica" };
        println!("  {} on 127.0.0.1:{} ({role})", node.name, node.port);
    }
    let mut config = Config::parse(
        "[[backends]]\nname = \"x\"\naddress = \"h:1\"\n[[users]]\nname = \"app\"\npassword = \"app\"\n",
    )?;
    config.listen.read_write = port_or_free(5433);
    config.listen.read_only = port_or_free(5434);
    config.listen.admin = port_or_free(9930);
    config.health.interval_ms = 250;
    config.backends = cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| Backend {
            name: n.name.clone(),
            address: n.addr().to_string(),
            weight: if i == 2 { 2 } else { 1 },
        })
        .collect();
    config.users = vec![User {
        name: "app".into(),
        password: Some(Secret::new("app")),
        password_env: None,
    }];
    config.validate()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let proxy = Proxy::start(config).await?;
        wait_until_probed(&proxy).await?;
        show_routing(&proxy, &cluster).await?;
        if !args.once {
            println!("\npgsplit is running. Try it yourself (password: app):");
            println!(
                "  psql \"host=127.0.0.1 port={} user=app dbname=app\"   # read-write",
                proxy.read_write_addr.port()
            );
            println!(
                "  psql \"host=127.0.0.1 port={} user=app dbname=app\"   # read-only",
                proxy.read_only_addr.port()
            );
            println!("  curl http://{}/status", proxy.admin_addr);
            println!("Press Ctrl-C to stop pgsplit and the cluster.");
            crate::wait_for_signal().await;
        }
        proxy.shutdown(Duration::from_secs(5)).await;
        anyhow::Ok(())
    })?;
    drop(cluster);
    println!("Stopped; the cluster's files are removed.");
    Ok(())
}

async fn wait_until_probed(proxy: &Proxy) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut changes = proxy.shared.topology.subscribe();
    loop {
        let s = proxy.shared.topology.snapshot();
        if s.complete && s.primary.is_some() && s.read_schedule.len() >= 2 {
            return Ok(());
        }
        tokio::time::timeout_at(deadline, changes.changed())
            .await
            .context("pgsplit did not see the primary and both replicas within 15 s")??;
    }
}

async fn connect(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("app")
        .password("app")
        .dbname("app")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn show_routing(proxy: &Proxy, cluster: &Cluster) -> anyhow::Result<()> {
    let name_of = |port: i32| {
        cluster
            .nodes()
            .iter()
            .find(|n| i32::from(n.port) == port)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("port {port}"))
    };
    let (rw, ro) = (proxy.read_write_addr.port(), proxy.read_only_addr.port());
    println!(
        "\npgsplit: read-write port {rw}, read-only port {ro}, admin http://{}",
        proxy.admin_addr
    );
    println!("Weights: pg2 = 1, pg3 = 2.\n");

    // The read-write port, statement by statement: writes to the primary,
    // reads to a replica, and a read right after the session's own write
    // only where that write is already visible.
    let client = connect(rw).await?;
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS demo(id int PRIMARY KEY, note text)")
        .await?;
    let row = client
        .query_one(
            "INSERT INTO demo VALUES (1, 'written through pgsplit') ON CONFLICT (id) DO UPDATE SET note = excluded.note RETURNING inet_server_port()",
            &[],
        )
        .await?;
    println!(
        "read-write  INSERT ... RETURNING inet_server_port()  -> {} (a write: the primary)",
        name_of(row.get(0))
    );
    let row = client
        .query_one(
            "SELECT inet_server_port(), pg_is_in_recovery(), note FROM demo WHERE id = 1",
            &[],
        )
        .await?;
    let (port, recovery, note): (i32, bool, String) = (row.get(0), row.get(1), row.get(2));
    println!(
        "read-write  SELECT ... FROM demo                     -> {} (in recovery: {recovery}), reads {note:?}",
        name_of(port)
    );
    let row = client
        .query_one("SELECT inet_server_port() FROM demo FOR UPDATE", &[])
        .await?;
    println!(
        "read-write  SELECT ... FOR UPDATE                    -> {} (locks rows: the primary)",
        name_of(row.get(0))
    );
    for i in 1..cluster.nodes().len() {
        cluster.wait_caught_up(0, i, Duration::from_secs(10))?;
    }
    for _ in 0..6 {
        let client = connect(ro).await?;
        let row = client
            .query_one("SELECT inet_server_port(), pg_is_in_recovery(), (SELECT note FROM demo WHERE id = 1)", &[])
            .await?;
        let (port, recovery, note): (i32, bool, String) = (row.get(0), row.get(1), row.get(2));
        println!(
            "read-only   new session, SELECT          -> {} (in recovery: {recovery}), reads {note:?}",
            name_of(port)
        );
    }
    let client = connect(ro).await?;
    match client
        .batch_execute("INSERT INTO demo VALUES (2, 'nope')")
        .await
    {
        Err(e) => {
            let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
            let msg = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string());
            println!("read-only   INSERT                       -> refused: {code} {msg}");
        }
        Ok(()) => println!("read-only   INSERT                       -> unexpectedly succeeded"),
    }
    Ok(())
}

pub fn testbed(args: TestbedArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cluster = Cluster::start(ClusterOptions {
        replicas: args.replicas,
        extra_conf: args.conf,
    })?;
    let ports: Vec<String> = cluster.nodes().iter().map(|n| n.port.to_string()).collect();
    let env = format!(
        "PRIMARY_PORT={}\nREPLICA_PORTS=\"{}\"\nNODE_PORTS=\"{}\"\nPG_BIN={}\nSOCKET_DIR={}\nCLUSTER_DIR={}\n",
        ports[0],
        ports[1..].join(" "),
        ports.join(" "),
        cluster.bin_dir().display(),
        cluster.socket_dir().display(),
        cluster.dir().display(),
    );
    let path = args.dir.join("cluster.env");
    std::fs::write(&path, env)?;
    eprintln!("pgsplit testbed: cluster up, ports in {}", path.display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::wait_for_signal());
    drop(cluster);
    let _ = std::fs::remove_file(path);
    Ok(())
}
