//! `cargo xtask …`: set-up, build, test, demo, bench and install for traffic.
//!
//! Every command that needs the toolchains runs `setup` first; setup is idempotent and
//! skips what is present.

mod bench;
mod demo;
mod generated;
mod install;
mod package_check;
mod service;
mod setup;
mod test;
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
    /// Build the daemon and CLI (debug, or --release).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run every test layer (unit without root; privileged as root, one at a time).
    Test {
        /// Which layers.
        #[arg(long, value_enum, default_value = "all")]
        layer: test::Layer,
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Run the demo: namespaces, trafficd with config/demo.toml, the load generator, a
    /// live view, a report and a chart (target/demo/), clean-up. Without --profile: the
    /// story (normal traffic, an attack, a failing upstream, CPU pressure, recovery).
    Demo {
        /// Run config/profiles/NAME.toml alone instead of the story (normal, peak, burst,
        /// degraded, smoke).
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
        /// With --profile: switch the node's pressure signals off and fail unless the report
        /// agrees with the limits (what `cargo xtask test` does with the smoke profile).
        /// With --fleet: fail unless the ban reached every node within a second and the
        /// client stayed within the fleet budget's bound.
        #[arg(long)]
        check: bool,
        /// Three nodes and a redis-server: an attacker banned on one node is banned on all,
        /// a client spreading over the three is held to one fleet-wide limit.
        #[arg(long, conflicts_with = "profile")]
        fleet: bool,
        /// How the clients' veth ends are made to take the XDP gate's RSTs (XDP_TX frames):
        /// an XDP_PASS program (default), GRO on, or nothing — for checking.
        #[arg(long, hide = true, default_value = "xdp-pass", value_parser = ["xdp-pass", "gro", "plain"])]
        client_links: String,
    },
    /// Install trafficd, trafficctl, the config (unless one is there), the systemd unit, the
    /// sysusers file and the README; on / also the `traffic` group and daemon-reload.
    Install {
        /// Root of the tree to install into (files go to <prefix>/usr/bin, <prefix>/etc/traffic, …).
        #[arg(long, default_value = "/")]
        prefix: std::path::PathBuf,
    },
    /// Remove what `install` put there, except /etc/traffic/traffic.toml.
    Uninstall {
        /// Root of the tree to remove from.
        #[arg(long, default_value = "/")]
        prefix: std::path::PathBuf,
    },
    /// Build the Debian package with cargo-deb (installed if missing) and print its path.
    Deb,
    /// Run the data-plane benchmark (root): program cost through test-run, receive CPU per
    /// packet under a veth flood against nftables and iptables, limits under a spoofed
    /// flood. Prints tables and writes target/bench/*.json.
    Bench {
        /// A short smoke run (fewer repetitions and repeats, shorter floods).
        #[arg(long)]
        quick: bool,
        /// Only these suites, comma-separated: testrun, veth, accuracy, idle, aging, scale.
        #[arg(long, value_name = "SUITES")]
        only: Option<String>,
        /// Repetitions of every figure (default 5, with --quick 2).
        #[arg(long)]
        reps: Option<usize>,
        /// Run only suite `variant`: the known-source cases and the spoofed flood through
        /// this tree's program and through OBJECT (another build of it, e.g. a worktree's
        /// target/…/bpfel-unknown-none/release/traffic), interleaved in one run.
        #[arg(long, value_name = "OBJECT")]
        variant: Option<std::path::PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let tc = toolchains::Toolchains::pinned()?;
    match cli.cmd {
        Cmd::Setup => setup::run(&tc),
        Cmd::Build { release } => {
            setup::run(&tc)?;
            build(&tc, release).map(|_| ())
        }
        Cmd::Test { layer, filter } => {
            setup::run(&tc)?;
            test::run(&tc, layer, filter.as_deref())
        }
        Cmd::Demo {
            profile,
            check,
            fleet,
            client_links,
        } => {
            anyhow::ensure!(
                !check || profile.is_some() || fleet,
                "--check goes with --profile or --fleet"
            );
            setup::run(&tc)?;
            let bin = build(&tc, false)?;
            demo::run(&tc, &bin, profile.as_deref(), check, fleet, &client_links)
        }
        Cmd::Install { prefix } => install::install(&tc, &prefix),
        Cmd::Uninstall { prefix } => install::uninstall(&prefix),
        Cmd::Deb => install::deb(&tc).map(|_| ()),
        Cmd::Bench {
            quick,
            only,
            reps,
            variant,
        } => {
            setup::run(&tc)?;
            bench::run(
                &tc,
                &bench::Options {
                    quick,
                    only,
                    reps,
                    variant,
                },
            )
        }
    }
}

/// Build trafficd and trafficctl; returns the directory holding them.
fn build(tc: &toolchains::Toolchains, release: bool) -> Result<std::path::PathBuf> {
    let mut c = util::cargo(tc);
    c.args(["build", "-p", "traffic-daemon", "--bins"]);
    if release {
        c.arg("--release");
    }
    util::run(&mut c)?;
    Ok(util::target_dir().join(if release { "release" } else { "debug" }))
}
