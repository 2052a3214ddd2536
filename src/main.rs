//! The `pgsplit` binary: command line, logging, runtime, signals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use pgsplit::app::Proxy;
use pgsplit::config::Config;
use pgsplit::workers::Workers;
use std::sync::Arc;

#[derive(Parser)]
#[command(version, about = "A PostgreSQL proxy that splits reads from writes")]
struct Cli {
    /// Configuration file (TOML). See config/pgsplit.toml.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration, print it (secrets redacted) and exit.
    #[arg(long)]
    check: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Subcommands that start a local cluster through the test bed exist only with
// the `demo` feature (on by default), so the container's binary has none.
#[derive(clap::Subcommand)]
enum Command {
    /// Print where a statement would go in a fresh read-write session, and why.
    ///
    /// Offline: no cluster, a stand-in primary and replica, the built-in
    /// function lists (plus the [routing] lists of --config when given). A
    /// function those lists do not settle would be looked up in pg_proc by a
    /// session; here it counts as a write.
    Explain {
        /// The SQL text, as a client would send it in one Query.
        sql: String,
    },
    /// Start a local primary and two replicas with pgsplit in front, show where
    /// statements go, and keep running until Ctrl-C.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Start a local primary and replicas for scripts (benchmarks); writes
    /// their ports to DIR/cluster.env and runs until SIGTERM or Ctrl-C.
    #[cfg(feature = "demo")]
    Testbed(demo::TestbedArgs),
}

#[cfg(feature = "demo")]
mod demo;

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSPLIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        // Subcommands talk to a person on stdout; keep the proxy's log to
        // warnings.
        init_logging(cli.log_format, "warn");
        return exit_code(match command {
            Command::Explain { sql } => explain(&sql, cli.config),
            #[cfg(feature = "demo")]
            Command::Demo(args) => demo::demo(args),
            #[cfg(feature = "demo")]
            Command::Testbed(args) => demo::testbed(args),
        });
    }
    init_logging(cli.log_format, "info");
    exit_code(run(cli.config, cli.check))
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgsplit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pgsplit explain "<sql>"`: see [`pgsplit::explain`].
fn explain(sql: &str, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    if sql.trim().is_empty() {
        anyhow::bail!("give a statement: pgsplit explain \"SELECT ...\"");
    }
    let (consistency, routing) = match config_path {
        Some(path) => {
            let config = Config::load(&path)?;
            (config.consistency, config.routing)
        }
        None => Default::default(),
    };
    print!(
        "{}",
        pgsplit::explain::offline(sql, &consistency, &routing).to_text()
    );
    Ok(())
}

fn run(config_path: Option<PathBuf>, check: bool) -> anyhow::Result<()> {
    let path = config_path.context("--config FILE is required (see config/pgsplit.toml)")?;
    let config = Config::load(&path)?;
    if check {
        print!("{}", config.to_redacted_toml());
        eprintln!("pgsplit: {} is valid", path.display());
        return Ok(());
    }
    // Sessions run on worker threads (one current-thread runtime each); the
    // listeners, probes and admin server on this thread's runtime.
    let threads = config
        .runtime
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let workers = Arc::new(Workers::start(threads)?);
    let grace = Duration::from_millis(config.limits.shutdown_timeout_ms);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on({
        let workers = workers.clone();
        async move {
            let proxy = Proxy::start_with(config, Some(workers)).await?;
            proxy.shared.set_config_path(path.clone());
            // SIGHUP: reload the file; a bad one is refused and logged.
            let shared = proxy.shared.clone();
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = shared.reload_file();
                }
            });
            wait_for_signal().await;
            tracing::info!("shutting down");
            proxy.shutdown(grace).await;
            anyhow::Ok(())
        }
    });
    workers.stop();
    result
}

/// SIGTERM or SIGINT.
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
