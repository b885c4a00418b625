//! `traffic-demo`: the demo and the profile runs, started by `cargo xtask demo` (and by
//! `cargo xtask test` for the smoke profile) with trafficd already built.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use traffic_loadgen::demo;

#[derive(Parser)]
#[command(
    name = "traffic-demo",
    about = "The traffic demo: trafficd under load in namespaces"
)]
struct Args {
    /// Directory holding the built trafficd and trafficctl.
    #[arg(long, value_name = "DIR")]
    bin_dir: PathBuf,
    /// Run config/profiles/NAME.toml alone instead of the story.
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,
    /// With --profile: pressure signals off; fail unless the report agrees with the limits.
    /// With --fleet: fail unless the ban and the fleet budget held.
    #[arg(long)]
    check: bool,
    /// Three nodes sharing bans and budgets through a redis-server.
    #[arg(long, conflicts_with = "profile")]
    fleet: bool,
    /// How the clients' veth ends take the XDP gate's RSTs: xdp-pass, gro or plain.
    #[arg(long, default_value = "xdp-pass", value_parser = ["xdp-pass", "gro", "plain"])]
    client_links: String,
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.fleet {
        return demo::fleet::run(&a.bin_dir, a.check);
    }
    anyhow::ensure!(
        !a.check || a.profile.is_some(),
        "--check goes with --profile or --fleet"
    );
    match a.profile {
        Some(name) if a.check => demo::check_profile(&a.bin_dir, &name),
        profile => demo::run(&a.bin_dir, profile.as_deref(), &a.client_links),
    }
}
