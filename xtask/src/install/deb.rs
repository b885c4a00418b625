//! The Debian package: cargo-deb (installed at the pinned major when missing) and
//! dpkg-shlibdeps, then `cargo deb --no-build` on the release binaries already built.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Instant,
};

use anyhow::{Context as _, Result, ensure};

use super::has_command;
use crate::{setup::apt_get, toolchains::Toolchains, util};

/// cargo-deb major version `cargo xtask deb` installs and accepts.
const CARGO_DEB_MAJOR: u32 = 3;

/// `cargo deb --version` → the major version, or `None` if cargo-deb is missing.
fn cargo_deb_major(tc: &Toolchains) -> Option<u32> {
    let out = util::cargo(tc)
        .args(["deb", "--version"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    println!("deb: {} … present", text.trim());
    text.split_whitespace()
        .last()?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// cargo-deb in `$CARGO_HOME/bin` (installed with the pinned stable if missing).
pub fn ensure_cargo_deb(tc: &Toolchains) -> Result<()> {
    let found = cargo_deb_major(tc);
    if found == Some(CARGO_DEB_MAJOR) {
        return Ok(());
    }
    println!("deb: cargo-deb {CARGO_DEB_MAJOR}.x … installing");
    let start = Instant::now();
    let cargo_home = util::cargo_bin_dir()
        .parent()
        .context("$CARGO_HOME/bin has no parent")?
        .to_owned();
    let mut c = util::cargo(tc);
    c.env_remove("RUSTUP_TOOLCHAIN")
        .arg(format!("+{}", tc.stable))
        // Outside the checkout, and in cargo's own temporary target directory.
        .current_dir(&cargo_home)
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .args(["install", "cargo-deb", "--locked", "--version"])
        .arg(format!("^{CARGO_DEB_MAJOR}"));
    if found.is_some() {
        c.arg("--force");
    }
    util::run(&mut c).context("cargo install cargo-deb")?;
    println!(
        "deb: cargo-deb … installed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// dpkg-shlibdeps (dpkg-dev), which cargo-deb's `$auto` dependencies need: without it the
/// package would silently have no `Depends: libc6`.
fn ensure_dpkg_shlibdeps() -> Result<()> {
    if has_command("dpkg-shlibdeps") {
        return Ok(());
    }
    ensure!(
        util::is_root(),
        "dpkg-shlibdeps is missing: apt-get install dpkg-dev (as root), or run this as root"
    );
    println!("deb: dpkg-dev … installing");
    util::run(apt_get().args(["install", "dpkg-dev"]))
}

/// Package the release binaries already built (`cargo deb --no-build`) into `out_dir`;
/// returns the path of the `.deb`.
pub fn build_deb(tc: &Toolchains, out_dir: &Path) -> Result<PathBuf> {
    ensure_cargo_deb(tc)?;
    ensure_dpkg_shlibdeps()?;
    fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let mut c = util::cargo(tc);
    c.args(["deb", "-p", "traffic-daemon", "--no-build", "--output"])
        .arg(out_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let shown = format!("{c:?}");
    let out = c.output().with_context(|| format!("spawn {shown}"))?;
    ensure!(out.status.success(), "{shown} failed: {}", out.status);
    // cargo-deb prints the path of what it wrote on stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("{shown}: no .deb path in its output: {stdout}"))?;
    let deb = if deb.is_relative() {
        util::root().join(deb)
    } else {
        deb
    };
    ensure!(deb.is_file(), "{} was not written", deb.display());
    Ok(deb)
}
