//! `cargo xtask test`: every test layer.
//!
//! 1. unit — `cargo test --workspace` built with `AYA_BUILD_SKIP=1`: no root, no eBPF
//!    toolchain. The privileged tests are not part of it: they are one binary,
//!    `traffic-daemon/tests/privileged/`, declared `test = false` so that only a run that
//!    names it builds and runs it. The eBPF crates' libraries (header
//!    walk, checksums, GCRA arithmetic, the bench ABI) are tested here on the host; their
//!    programs (bins, bpf only) are never built by `cargo test`.
//! 2. privileged — the privileged binary (`cargo test -p traffic-daemon --test privileged`:
//!    contract, program, gate, fuzz, end-to-end, …) with the real eBPF object, as root; it
//!    checks root, bpffs and the object once and runs its cases one at a time (they share
//!    kernel state). A filter is a substring of `module::case` names.
//!    Then a short profile run (`config/profiles/smoke.toml`, the load generator against
//!    trafficd with the pressure signals off) whose report must agree with the limits, and
//!    the fleet demo with `--check` (three nodes and a redis-server, about 45 s).
//! 3. package — as root: `cargo xtask install --prefix <tmp>` and `uninstall` end to end
//!    (release build), then the `.deb` of the same binaries inspected with dpkg-deb and run
//!    from its extracted tree (never installed on the host), and lintian on it. Skipped when
//!    a filter is given.
//! 4. service — as root: the `.deb` installed and operated under a private systemd (its own
//!    PID, mount and network namespaces; the host's files untouched): see
//!    `crate::service`. Skipped when a filter is given.
//!
//! A privileged layer that cannot run says so loudly and fails under `CI=true`.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::{toolchains::Toolchains, util};

/// Which layers to run.
#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Layer {
    /// Unit tests only (no root, no eBPF toolchain needed).
    Unit,
    /// Privileged tests only.
    Privileged,
    /// Packaging checks only (install/uninstall into a temp prefix, the .deb; root).
    Package,
    /// The .deb under a private systemd: install, start, reload, restart, upgrade, remove (root).
    Service,
    /// Everything.
    All,
}

pub fn run(tc: &Toolchains, layer: Layer, filter: Option<&str>) -> Result<()> {
    let mut summary = Vec::new();
    if matches!(layer, Layer::Unit | Layer::All) {
        summary.push(unit(tc, filter)?);
    }
    if matches!(layer, Layer::Privileged | Layer::All) {
        summary.extend(privileged(tc, filter)?);
    }
    let package = layer == Layer::Package || (layer == Layer::All && filter.is_none());
    if package && util::is_root() {
        let t = Instant::now();
        println!("==> package layer (install/uninstall --prefix <tmp>, .deb via cargo-deb; root)");
        crate::package_check::check_packaging(tc)?;
        summary.push(format!(
            "package     ok  {:>6.1}s",
            t.elapsed().as_secs_f64()
        ));
    } else if layer == Layer::Package {
        bail!(
            "the package layer needs root (it builds the .deb and runs dpkg-deb): sudo cargo xtask test --layer package"
        );
    }
    let service = layer == Layer::Service || (layer == Layer::All && filter.is_none());
    if service && util::is_root() {
        let t = Instant::now();
        println!("==> service layer (the .deb under a private systemd; root)");
        crate::service::run(tc)?;
        summary.push(format!(
            "service     ok  {:>6.1}s",
            t.elapsed().as_secs_f64()
        ));
    } else if layer == Layer::Service {
        bail!(
            "the service layer needs root (it boots a private systemd in namespaces): sudo cargo xtask test --layer service"
        );
    }
    println!("\n==> test summary");
    for s in summary {
        println!("    {s}");
    }
    Ok(())
}

/// The unit layer; its summary line.
fn unit(tc: &Toolchains, filter: Option<&str>) -> Result<String> {
    let t = Instant::now();
    println!("==> unit layer (AYA_BUILD_SKIP=1, no root needed)");
    println!(
        "    (the privileged tests are not built here: they need root and the eBPF object; \
         `--layer privileged` runs them, and fails if it cannot)"
    );
    let mut c = util::cargo(tc);
    c.args(["test", "--workspace"]).env("AYA_BUILD_SKIP", "1");
    if let Some(f) = filter {
        c.arg(f);
    }
    util::run(&mut c)?;
    Ok(format!(
        "unit        ok  {:>6.1}s",
        t.elapsed().as_secs_f64()
    ))
}

/// The privileged layer and the profile run (root; loud, and a failure under `CI=true`,
/// without it); their summary lines.
fn privileged(tc: &Toolchains, filter: Option<&str>) -> Result<Vec<String>> {
    if !util::is_root() {
        let msg = "PRIVILEGED LAYERS DID NOT RUN: contract, program (BPF_PROG_TEST_RUN), end-to-end tests, the packaging checks and the service layer need root. Run `sudo cargo xtask test`.";
        eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!! {msg}");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            bail!("{msg} (CI=true: a skipped layer is a failure)");
        }
        return Ok(Vec::new());
    }
    let mut summary = Vec::new();
    let t = Instant::now();
    println!("==> privileged layer (real eBPF object, root, one test at a time)");
    // The one binary of privileged cases; it forces one test thread itself.
    let mut c = util::cargo(tc);
    c.args(["test", "-p", "traffic-daemon", "--test", "privileged", "--"]);
    if let Some(f) = filter {
        c.arg(f);
    }
    util::run(&mut c)?;
    summary.push(format!(
        "privileged  ok  {:>6.1}s",
        t.elapsed().as_secs_f64()
    ));
    // A short load profile through trafficd (pressure signals off), its report checked
    // against what the limits allow. Skipped when a filter names other tests.
    if filter.is_none_or(|f| "profile_run".contains(f)) {
        let t = Instant::now();
        println!("==> profile run (config/profiles/smoke.toml through trafficd; root)");
        let bin = crate::build(tc, false)?;
        crate::demo::check_profile(tc, &bin, "smoke")?;
        summary.push(format!(
            "profile run ok  {:>6.1}s",
            t.elapsed().as_secs_f64()
        ));
    }
    // The fleet demo as a check: the ban on every node within a second, the client within
    // the fleet budget's bound.
    if filter.is_none_or(|f| "fleet_demo".contains(f)) {
        let t = Instant::now();
        println!("==> fleet demo (cargo xtask demo --fleet --check; root, redis-server)");
        let bin = crate::build(tc, false)?;
        crate::demo::check_fleet(tc, &bin)?;
        summary.push(format!(
            "fleet demo ok   {:>6.1}s",
            t.elapsed().as_secs_f64()
        ));
    }
    Ok(summary)
}
