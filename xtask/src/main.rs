//! `cargo xtask …`: set-up, build, test, demo, bench and install for traffic.
//!
//! Every command that needs the toolchains runs `setup` first; setup is idempotent and
//! skips what is present.

mod setup;
mod toolchains;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test and demo traffic")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the pinned toolchains, Debian packages and bpf-linker (idempotent).
    Setup,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let tc = toolchains::Toolchains::pinned()?;
    match cli.cmd {
        Cmd::Setup => setup::run(&tc),
    }
}
