//! `cargo xtask setup`: install everything the build, tests and demo need, idempotently.
//!
//! Steps, in order (each checks first and skips what is already there):
//!
//! 1. rustup's automatic self-update off;
//! 2. the pinned stable toolchain with clippy and rustfmt;
//! 3. the pinned eBPF nightly with rust-src;
//! 4. the Debian packages (LLVM for bpf-linker, bpftool, iproute2, nftables, …);
//! 5. bpf-linker, built against the system LLVM, in `$CARGO_HOME/bin`;
//! 6. bpffs mounted at `/sys/fs/bpf`;
//! 7. a rustup directory override so plain `cargo` in the checkout uses the pinned stable.
//!
//! Each step prints one line, `setup: <what> … present` or `setup: <what> … installing`
//! (an install is followed by a line with its duration), and a failing step names itself in
//! the error. Nothing here needs a terminal: it runs the same under CI=true with stdin closed.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{toolchains::Toolchains, util};

/// Components the pinned stable toolchain must have.
const STABLE_COMPONENTS: &[&str] = &["clippy", "rustfmt"];
/// Components the eBPF nightly must have (aya-build builds `core` for bpfel from source).
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src"];
/// Where bpffs must be mounted: aya pins maps and links there, bpftool reads them there.
const BPFFS: &str = "/sys/fs/bpf";

/// Run all set-up steps; see the module documentation.
pub fn run(tc: &Toolchains) -> Result<()> {
    let start = Instant::now();
    step("rustup self-update", disable_self_update)?;
    step("stable toolchain", || {
        ensure_toolchain("stable", &tc.stable, STABLE_COMPONENTS)
    })?;
    step("eBPF nightly toolchain", || {
        ensure_toolchain("eBPF nightly", &tc.ebpf_nightly, NIGHTLY_COMPONENTS)
    })?;
    step("Debian packages", || ensure_debian_packages(tc))?;
    step("bpf-linker", || ensure_bpf_linker(tc))?;
    step("bpffs", ensure_bpffs)?;
    step("rustup override", || ensure_override(&tc.stable))?;
    println!("setup: done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Run one step, naming it in the error if it fails.
fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    f().with_context(|| format!("setup step `{name}` failed"))
}

/// Print the one line of a step whose work is already done.
fn present(what: &str) {
    println!("setup: {what} … present");
}

/// Announce an install, run it and print how long it took.
fn install(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("setup: {what} … installing");
    let start = Instant::now();
    f()?;
    println!(
        "setup: {what} … installed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// rustup
// ---------------------------------------------------------------------------------------

/// A `rustup` command unaffected by a toolchain chosen for the outer `cargo`.
fn rustup() -> Command {
    let mut c = Command::new("rustup");
    c.env_remove("RUSTUP_TOOLCHAIN").stdin(Stdio::null());
    c
}

/// Step 1: stop rustup from updating itself in the middle of a build (harmless when set).
fn disable_self_update() -> Result<()> {
    util::output(rustup().args(["set", "auto-self-update", "disable"]))?;
    println!("setup: rustup auto-self-update … disabled");
    Ok(())
}

/// Steps 2 and 3: the toolchain `name` with `components`, installed with profile minimal.
///
/// rustup never installs a toolchain implicitly here (`RUSTUP_AUTO_INSTALL=0`), so both the
/// toolchain and its components are installed explicitly.
fn ensure_toolchain(label: &str, name: &str, components: &[&str]) -> Result<()> {
    let what = format!("{label} {name} ({})", components.join(", "));
    if !toolchain_installed(name)? {
        return install(&what, || {
            util::run(
                rustup()
                    .args(["toolchain", "install", name, "--profile", "minimal"])
                    .args(["--component", &components.join(",")]),
            )
            .with_context(|| format!("install toolchain {name}"))
        });
    }
    let missing = missing_components(name, components)?;
    if missing.is_empty() {
        present(&what);
        return Ok(());
    }
    install(&format!("{label} {name}: {}", missing.join(", ")), || {
        util::run(
            rustup()
                .args(["component", "add"])
                .args(&missing)
                .args(["--toolchain", name]),
        )
        .with_context(|| format!("add components to toolchain {name}"))
    })
}

/// Whether `rustup toolchain list` shows `name` (listed as `<name>-<host triple>`).
fn toolchain_installed(name: &str) -> Result<bool> {
    let list =
        util::output(rustup().args(["toolchain", "list"])).context("list installed toolchains")?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|t| is_toolchain(t, name)))
}

/// Whether the listed toolchain `listed` is `name` for this host: `1.98.0-x86_64-…` is
/// `1.98.0`, but `1.98-x86_64-…` is not, nor is `nightly-2026-07-01-x86_64-…` `nightly`.
fn is_toolchain(listed: &str, name: &str) -> bool {
    listed == name
        || listed
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|host| host.starts_with(&format!("{}-", std::env::consts::ARCH)))
}

/// The `components` not installed for toolchain `name`. rustup lists most components with
/// a target suffix (`clippy-x86_64-unknown-linux-gnu`), rust-src without one.
fn missing_components<'a>(name: &str, components: &[&'a str]) -> Result<Vec<&'a str>> {
    let installed =
        util::output(rustup().args(["component", "list", "--installed", "--toolchain", name]))
            .with_context(|| format!("list components of toolchain {name}"))?;
    let installed: Vec<&str> = installed.lines().map(str::trim).collect();
    Ok(components
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .iter()
                .any(|i| *i == *c || i.strip_prefix(c).is_some_and(|r| r.starts_with('-')))
        })
        .collect())
}

/// Step 7: a rustup directory override on the checkout, so plain `cargo` in it (and the
/// rust-analyzer of an editor) uses the pinned stable.
///
/// Why an override and not a `rust-toolchain.toml` at the root: rustup resolves a
/// `rust-toolchain.toml` before cargo runs, and with auto-install off
/// (`RUSTUP_AUTO_INSTALL=0`) it refuses to run anything — `cargo xtask setup` included —
/// until that toolchain is installed. A fresh machine could then never run the very command
/// that installs it. The override is set only once setup has installed the toolchain.
fn ensure_override(stable: &str) -> Result<()> {
    let root = util::root();
    let root = root.canonicalize().unwrap_or(root);
    let what = format!("rustup override {stable} on {}", root.display());
    let list = util::output(rustup().args(["override", "list"])).context("list overrides")?;
    if has_override(&list, &root, stable) {
        present(&what);
        return Ok(());
    }
    util::output(
        rustup()
            .args(["override", "set", stable, "--path"])
            .arg(&root),
    )
    .with_context(|| format!("set override on {}", root.display()))?;
    println!("setup: {what} … set");
    Ok(())
}

/// Whether `rustup override list` output has `stable` for exactly `root`. Lines look like
/// `/path/to/checkout    1.98.0-x86_64-unknown-linux-gnu` (the path may contain spaces,
/// the toolchain name does not).
fn has_override(list: &str, root: &Path, stable: &str) -> bool {
    list.lines().any(|l| {
        l.trim_end()
            .rsplit_once(char::is_whitespace)
            .is_some_and(|(p, t)| Path::new(p.trim()) == root && is_toolchain(t, stable))
    })
}

// ---------------------------------------------------------------------------------------
// Debian packages
// ---------------------------------------------------------------------------------------

/// The Debian packages the project needs: LLVM (and what linking it needs) for bpf-linker,
/// and the tools the tests, demo and benchmarks call.
fn debian_packages(tc: &Toolchains) -> Vec<String> {
    let llvm = &tc.llvm_major;
    let mut p = vec![format!("llvm-{llvm}-dev"), format!("libpolly-{llvm}-dev")];
    p.extend(
        [
            "libzstd-dev",
            "zlib1g-dev",
            "bpftool",
            "iproute2",
            "nftables",
            "iptables",
            "prometheus",
            "systemd",
            "ethtool",
            // The fleet tests start their own Redis (bookworm has no Valkey package).
            "redis-server",
        ]
        .map(String::from),
    );
    p
}

/// Step 4: install whichever Debian packages are missing (with `apt-get`, as root).
fn ensure_debian_packages(tc: &Toolchains) -> Result<()> {
    let wanted = debian_packages(tc);
    let what = format!("Debian packages ({})", wanted.join(" "));
    let missing = missing_packages(&wanted)?;
    if missing.is_empty() {
        present(&what);
        return Ok(());
    }
    if !util::is_root() {
        bail!(
            "Debian packages missing: {}. Run `cargo xtask setup` as root, or install them \
             with:\n  sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y \
             --no-install-recommends {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    install(&format!("Debian packages ({})", missing.join(" ")), || {
        util::run(apt_get().arg("update")).context("apt-get update")?;
        if let Err(e) = util::run(apt_get().arg("install").args(&missing)) {
            eprintln!("setup: apt-get install failed ({e:#}); updating and retrying once");
            util::run(apt_get().arg("update")).context("apt-get update")?;
            util::run(apt_get().arg("install").args(&missing)).context("apt-get install")?;
        }
        Ok(())
    })
}

/// An `apt-get` that never asks: no terminal, no prompts, waits for a held dpkg lock.
pub(crate) fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .args([
            "-y",
            "--no-install-recommends",
            "-o",
            "DPkg::Lock::Timeout=300",
        ]);
    c
}

/// The packages of `wanted` that dpkg does not report as `install ok installed`.
fn missing_packages(wanted: &[String]) -> Result<Vec<String>> {
    // dpkg-query exits 1 when some package is unknown to dpkg, and still prints the rest;
    // the unknown ones are simply missing from its output.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(wanted)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("run dpkg-query (is this Debian or Ubuntu?)")?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| *status == "install ok installed")
        .map(|(pkg, _)| pkg)
        .collect();
    Ok(wanted
        .iter()
        .filter(|w| !installed.contains(&w.as_str()))
        .cloned()
        .collect())
}

// ---------------------------------------------------------------------------------------
// bpf-linker
// ---------------------------------------------------------------------------------------

/// Step 5: bpf-linker of the pinned version in `$CARGO_HOME/bin`, built against the
/// system LLVM with the pinned stable toolchain.
fn ensure_bpf_linker(tc: &Toolchains) -> Result<()> {
    let bin = util::cargo_bin_dir().join("bpf-linker");
    let what = format!("bpf-linker {}", tc.bpf_linker);
    let found = bpf_linker_version(&bin)?;
    if found.as_deref() == Some(tc.bpf_linker.as_str()) {
        present(&what);
        return Ok(());
    }
    if let Some(v) = found {
        println!(
            "setup: found bpf-linker {v} at {}, replacing it",
            bin.display()
        );
    }
    install(&what, || {
        let llvm = PathBuf::from(format!("/usr/lib/llvm-{}", tc.llvm_major));
        if !llvm.join("bin/llvm-config").exists() {
            bail!(
                "{} has no bin/llvm-config; is llvm-{}-dev installed?",
                llvm.display(),
                tc.llvm_major
            );
        }
        let cargo_home = util::cargo_bin_dir()
            .parent()
            .context("$CARGO_HOME/bin has no parent")?
            .to_owned();
        let mut cmd = util::cargo(tc);
        cmd
            // `cargo +<stable>` rather than RUSTUP_TOOLCHAIN: with the variable, cargo
            // install warns "default toolchain implicitly overridden".
            .env_remove("RUSTUP_TOOLCHAIN")
            .arg(format!("+{}", tc.stable))
            // Outside the checkout, so its .cargo/config.toml does not apply.
            .current_dir(&cargo_home)
            .stdin(Stdio::null())
            .args([
                "install",
                "bpf-linker",
                "--version",
                &tc.bpf_linker,
                "--locked",
            ])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", tc.llvm_major))
            // Replace a binary cargo did not install, or another version.
            .arg("--force")
            .arg("--root")
            .arg(&cargo_home)
            // Without LLVM_PREFIX the build script finds the default llvm-config (llvm-14
            // on Debian 12) and fails with `unable to find library -lLLVM`. llvm-sys names
            // its variable after the major and minor: LLVM_SYS_221_PREFIX for LLVM 22.1.
            .env("LLVM_PREFIX", &llvm)
            .env(format!("LLVM_SYS_{}1_PREFIX", tc.llvm_major), &llvm);
        util::run(&mut cmd).context("cargo install bpf-linker")
    })
}

/// The version `bin --version` reports (`bpf-linker 0.13.0`), or `None` if `bin` is absent.
fn bpf_linker_version(bin: &Path) -> Result<Option<String>> {
    let out = match Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("run {} --version", bin.display())),
    };
    if !out.status.success() {
        // Present but broken (e.g. its LLVM was removed): reinstall.
        return Ok(Some("(broken)".into()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().nth(1).map(String::from))
}

// ---------------------------------------------------------------------------------------
// bpffs
// ---------------------------------------------------------------------------------------

/// Step 6: bpffs at `/sys/fs/bpf` (mounted if root; otherwise only a warning, since only
/// the privileged tests and the daemon need it).
fn ensure_bpffs() -> Result<()> {
    let what = format!("bpffs at {BPFFS}");
    let mounts = std::fs::read_to_string("/proc/mounts").context("read /proc/mounts")?;
    if is_bpffs_mounted(&mounts) {
        present(&what);
        return Ok(());
    }
    if !util::is_root() {
        println!(
            "setup: {what} … not mounted; warning: not root, so not mounting it (run as root \
             or: sudo mount -t bpf bpf {BPFFS})"
        );
        return Ok(());
    }
    util::output(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
        .with_context(|| format!("mount bpffs at {BPFFS}"))?;
    println!("setup: {what} … mounted");
    Ok(())
}

/// Whether `/proc/mounts` content has a `bpf` file system at `/sys/fs/bpf`.
fn is_bpffs_mounted(mounts: &str) -> bool {
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&BPFFS) && f.get(2) == Some(&"bpf")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_names_match_exactly() {
        let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        assert!(is_toolchain(&format!("1.98.0-{host}"), "1.98.0"));
        assert!(!is_toolchain(&format!("1.98-{host}"), "1.98.0"));
        assert!(is_toolchain(
            &format!("nightly-2026-07-01-{host}"),
            "nightly-2026-07-01"
        ));
        assert!(!is_toolchain(
            &format!("nightly-2026-07-01-{host}"),
            "nightly"
        ));
        assert!(is_toolchain("1.98.0", "1.98.0"));
    }

    #[test]
    fn override_listing() {
        let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let list = format!("/work/main    \t1.98.0-{host}\n/a b  nightly-{host}\n");
        assert!(has_override(&list, Path::new("/work/main"), "1.98.0"));
        assert!(!has_override(&list, Path::new("/work/main/sub"), "1.98.0"));
        assert!(has_override(&list, Path::new("/a b"), "nightly"));
        assert!(!has_override(
            "no overrides\n",
            Path::new("/work/main"),
            "1.98.0"
        ));
    }

    #[test]
    fn unknown_package_is_missing() {
        if !Path::new("/usr/bin/dpkg-query").exists() {
            return;
        }
        let wanted = ["surely-no-such-package-xyz".to_owned()];
        assert_eq!(missing_packages(&wanted).expect("dpkg-query runs"), wanted);
    }

    #[test]
    fn bpffs_in_mounts() {
        assert!(is_bpffs_mounted("bpf /sys/fs/bpf bpf rw,relatime 0 0\n"));
        assert!(!is_bpffs_mounted("none /sys/fs/bpf tmpfs rw 0 0\n"));
    }
}
