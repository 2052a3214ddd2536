//! `pgsplit demo` and `pgsplit testbed`: a real local cluster for newcomers and scripts.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Exit after showing the routing instead of waiting for Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

#[derive(clap::Args)]
pub struct TestbedArgs {
    /// Directory for cluster.env.
    #[arg(long)]
    pub dir: PathBuf,
    /// Number of streaming replicas.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
}

pub fn demo(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}

pub fn testbed(_args: TestbedArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
