//! `cargo xtask demo`: builds the demo (`traffic-demo` of the `traffic-loadgen` crate) with
//! the pinned toolchain and hands over to it; the demo itself lives in
//! `xtask/loadgen/src/demo/`.

use std::{os::unix::process::CommandExt as _, path::Path, process::Command};

use anyhow::{Context as _, Result};

use crate::{toolchains::Toolchains, util};

/// The demo's command line for trafficd and trafficctl in `bin_dir` (built first).
fn command(tc: &Toolchains, bin_dir: &Path) -> Result<Command> {
    let mut c = util::cargo(tc);
    c.args(["build", "-p", "traffic-loadgen", "--bin", "traffic-demo"]);
    util::run(&mut c)?;
    let mut demo = Command::new(util::target_dir().join("debug/traffic-demo"));
    demo.arg("--bin-dir").arg(bin_dir);
    Ok(demo)
}

/// Replace this process with the demo (so Ctrl-C reaches it alone, and it cleans up).
pub fn run(
    tc: &Toolchains,
    bin_dir: &Path,
    profile: Option<&str>,
    check: bool,
    fleet: bool,
    client_links: &str,
) -> Result<()> {
    let mut demo = command(tc, bin_dir)?;
    if fleet {
        demo.arg("--fleet");
    }
    if let Some(p) = profile {
        demo.args(["--profile", p]);
    }
    if check {
        demo.arg("--check");
    }
    demo.args(["--client-links", client_links]);
    let err = demo.exec();
    Err(err).context("run traffic-demo")
}

/// Run a profile alone with the pressure signals off; fail unless its report agrees with
/// the limits (the profile run of `cargo xtask test`).
pub fn check_profile(tc: &Toolchains, bin_dir: &Path, name: &str) -> Result<()> {
    let mut demo = command(tc, bin_dir)?;
    demo.args(["--profile", name, "--check"]);
    util::run(&mut demo)
}

/// The fleet demo as a check (the `cargo xtask test` run): fail unless the ban reached every
/// node within a second and the client stayed within the fleet budget's bound.
pub fn check_fleet(tc: &Toolchains, bin_dir: &Path) -> Result<()> {
    let mut demo = command(tc, bin_dir)?;
    demo.args(["--fleet", "--check"]);
    util::run(&mut demo)
}
