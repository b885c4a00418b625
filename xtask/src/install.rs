//! `cargo xtask install | uninstall | deb`: trafficd as a systemd service on this host, or as
//! a Debian package.
//!
//! Layout (the same for `install` and the `.deb`; a test keeps the package's assets in
//! `traffic-daemon/Cargo.toml` equal to [`FILES`]):
//!
//! | file | installed as | mode |
//! |------|--------------|------|
//! | `trafficd`, `trafficctl` (release build) | `/usr/bin/` | 0755 |
//! | `config/traffic.toml` | `/etc/traffic/traffic.toml`, only if no file is there | 0640 |
//! | `config/trafficd.service` | `/lib/systemd/system/trafficd.service` | 0644 |
//! | `config/traffic.sysusers.conf` | `/usr/lib/sysusers.d/traffic.conf` | 0644 |
//! | `README.md` | `/usr/share/doc/traffic/README.md` | 0644 |
//!
//! `--prefix` is the root of the tree the files go to (like `DESTDIR`; default `/`). The
//! binaries go to `/usr/bin`, not `/usr/local/bin`, because the shipped unit — verified by
//! `systemd-analyze` in the tests — starts `/usr/bin/trafficd`, and the `.deb` installs the
//! same paths: one layout, whichever way it was installed. So the two never fight over the
//! files, `install` and `uninstall` on `/` refuse files that belong to the Debian package.
//! Under another prefix the unit is unchanged: its paths are those of the tree once it is
//! the root file system (an image, a chroot); `install` checks that every `trafficd` the
//! unit runs, and the config it names, are in the tree.
//!
//! Only on `/`: the `traffic` group is created (systemd-sysusers, else groupadd); when
//! systemd is PID 1, `systemctl daemon-reload` (install, uninstall) and
//! `systemctl disable --now trafficd` (uninstall). The service is never enabled or started.
//! `uninstall` keeps `/etc/traffic/traffic.toml`, and removes the pinned state under
//! `/sys/fs/bpf` (`daemon.pin_dir`) unless a trafficd still runs: it is runtime state, gone
//! at the next boot anyway, and with `on_exit = "keep"` its links would keep the program
//! attached with nothing left to manage it.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{setup, toolchains::Toolchains, util};

/// Where a file comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A binary of the release build, by name.
    Bin(&'static str),
    /// A file of the checkout, relative to the workspace root.
    Repo(&'static str),
}

/// One installed file.
#[derive(Clone, Copy, Debug)]
pub struct File {
    pub source: Source,
    /// Path under the prefix, without a leading `/`.
    pub dest: &'static str,
    pub mode: u32,
}

/// The config: installed only if absent, kept by `uninstall`.
pub const CONFIG: &str = "etc/traffic/traffic.toml";
pub const UNIT: &str = "lib/systemd/system/trafficd.service";
pub const SYSUSERS: &str = "usr/lib/sysusers.d/traffic.conf";
const DOC_DIR: &str = "usr/share/doc/traffic";
/// Where `systemctl enable` puts the unit's link (`WantedBy=multi-user.target`).
const ENABLE_LINK: &str = "etc/systemd/system/multi-user.target.wants/trafficd.service";
/// `daemon.pin_dir` when the config does not set it.
const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/traffic";
/// Name of the Debian package (`[package.metadata.deb] name`).
pub const DEB_PACKAGE: &str = "traffic";
/// cargo-deb major version `cargo xtask deb` installs and accepts.
const CARGO_DEB_MAJOR: u32 = 3;

pub const FILES: &[File] = &[
    File {
        source: Source::Bin("trafficd"),
        dest: "usr/bin/trafficd",
        mode: 0o755,
    },
    File {
        source: Source::Bin("trafficctl"),
        dest: "usr/bin/trafficctl",
        mode: 0o755,
    },
    File {
        source: Source::Repo("config/traffic.toml"),
        dest: CONFIG,
        mode: 0o640,
    },
    File {
        source: Source::Repo("config/trafficd.service"),
        dest: UNIT,
        mode: 0o644,
    },
    File {
        source: Source::Repo("config/traffic.sysusers.conf"),
        dest: SYSUSERS,
        mode: 0o644,
    },
    File {
        source: Source::Repo("README.md"),
        dest: "usr/share/doc/traffic/README.md",
        mode: 0o644,
    },
];

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// `cargo xtask install [--prefix P]`.
pub fn install(tc: &Toolchains, prefix: &Path) -> Result<()> {
    let system = is_root_prefix(prefix);
    if system {
        ensure!(
            util::is_root(),
            "installing to / needs root: sudo cargo xtask install"
        );
        refuse_packaged_files("install")?;
    }
    setup::run(tc)?;
    let bin = crate::build(tc, true)?;
    println!("install: into {}", prefix.display());
    install_files(&bin, &util::root(), prefix)?;
    for (exec, file) in verify_unit(prefix)? {
        println!("install: unit runs {exec} → {} (installed)", file.display());
    }
    if !system {
        println!(
            "install: prefix is not /: no group created, systemd not told. The unit's paths are \
             those of the tree as a root file system; systemd-sysusers creates the `traffic` \
             group from {SYSUSERS} when that system boots."
        );
        return Ok(());
    }
    ensure_group()?;
    if systemd_running() {
        util::run(Command::new("systemctl").arg("daemon-reload"))?;
        println!("install: systemctl daemon-reload … done");
        if unit_active() {
            println!(
                "install: trafficd is running the previous binary: systemctl restart trafficd"
            );
        }
    } else {
        println!(
            "install: systemd is not PID 1 here (no /run/systemd/system): daemon-reload skipped; \
             systemd reads the unit when it starts"
        );
    }
    println!(
        "\nNext: set daemon.interfaces in /{CONFIG}, check it, then enable the service:\n  \
         trafficctl check-config /{CONFIG}\n  systemctl enable --now trafficd\n  \
         systemctl status trafficd"
    );
    Ok(())
}

/// `cargo xtask uninstall [--prefix P]`.
pub fn uninstall(prefix: &Path) -> Result<()> {
    let system = is_root_prefix(prefix);
    if system {
        ensure!(
            util::is_root(),
            "uninstalling from / needs root: sudo cargo xtask uninstall"
        );
        refuse_packaged_files("uninstall")?;
        disable_service();
    }
    println!("uninstall: from {}", prefix.display());
    uninstall_files(prefix)?;
    if system {
        if systemd_running() {
            util::run(Command::new("systemctl").arg("daemon-reload"))?;
            println!("uninstall: systemctl daemon-reload … done");
        } else {
            println!(
                "uninstall: systemd is not PID 1 here (no /run/systemd/system): daemon-reload \
                 skipped"
            );
        }
        remove_pins(&pin_dir(&prefix.join(CONFIG)))?;
        println!(
            "uninstall: the `traffic` group stays (system groups are not removed): groupdel traffic"
        );
    }
    Ok(())
}

/// `cargo xtask deb`: the release build packaged by cargo-deb into `<target>/debian/`;
/// returns the path of the `.deb`.
pub fn deb(tc: &Toolchains) -> Result<PathBuf> {
    setup::run(tc)?;
    crate::build(tc, true)?;
    let deb = build_deb(tc, &util::target_dir().join("debian"))?;
    println!("deb: {}", deb.display());
    println!(
        "deb: inspect with `dpkg-deb -I {0}` and `dpkg-deb -c {0}`; install with `apt install {0}`",
        deb.display()
    );
    Ok(deb)
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// What happened to one file.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Written(PathBuf),
    /// An existing config, left as it was.
    Kept(PathBuf),
    Removed(PathBuf),
    Absent(PathBuf),
}

/// Copy [`FILES`] under `prefix`: binaries from `bin_dir`, the rest from the checkout at
/// `repo`. Every file is written to a temporary name and renamed, so a running trafficd is
/// never overwritten in place. The config is written only if no file is at its path.
pub fn install_files(bin_dir: &Path, repo: &Path, prefix: &Path) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for f in FILES {
        let src = match f.source {
            Source::Bin(name) => bin_dir.join(name),
            Source::Repo(rel) => repo.join(rel),
        };
        let dest = prefix.join(f.dest);
        if f.dest == CONFIG && fs::symlink_metadata(&dest).is_ok() {
            println!(
                "install: kept    {} (a config is there; it is never overwritten — the shipped \
                 one is config/traffic.toml)",
                dest.display()
            );
            out.push(Outcome::Kept(dest));
            continue;
        }
        copy_file(&src, &dest, f.mode)?;
        println!("install: wrote   {} ({:04o})", dest.display(), f.mode);
        out.push(Outcome::Written(dest));
    }
    Ok(out)
}

fn copy_file(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    let dir = dest.parent().context("destination has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let name = dest.file_name().context("destination has no file name")?;
    let tmp = dir.join(format!(".{}.xtask-new", name.to_string_lossy()));
    fs::copy(src, &tmp).with_context(|| format!("copy {} to {}", src.display(), tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    fs::rename(&tmp, dest)
        .with_context(|| format!("rename {} to {}", tmp.display(), dest.display()))
}

/// Remove what [`install_files`] wrote, except the config; the doc directory goes too if
/// empty, and the unit's enablement link if there is one.
pub fn uninstall_files(prefix: &Path) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    let link = prefix.join(ENABLE_LINK);
    if fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&link).with_context(|| format!("remove {}", link.display()))?;
        println!("uninstall: removed {}", link.display());
    }
    for f in FILES.iter().filter(|f| f.dest != CONFIG) {
        let path = prefix.join(f.dest);
        match fs::remove_file(&path) {
            Ok(()) => {
                println!("uninstall: removed {}", path.display());
                out.push(Outcome::Removed(path));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                println!("uninstall: absent  {}", path.display());
                out.push(Outcome::Absent(path));
            }
            Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
        }
    }
    // Our own directory; fails harmlessly if someone put something else there.
    let _ = fs::remove_dir(prefix.join(DOC_DIR));
    let config = prefix.join(CONFIG);
    if config.exists() {
        println!(
            "uninstall: kept    {} (your configuration); remove it with: rm -r {}",
            config.display(),
            config
                .parent()
                .map_or(config.clone(), Path::to_owned)
                .display()
        );
        out.push(Outcome::Kept(config));
    }
    Ok(out)
}

/// Check the installed unit against the tree: every `Exec…=` line that runs trafficd or
/// trafficctl names an installed executable, `ExecStart` is one of them, and every
/// `--config` file is there. Returns `(path in the unit, file under the prefix)`.
pub fn verify_unit(prefix: &Path) -> Result<Vec<(String, PathBuf)>> {
    let unit = prefix.join(UNIT);
    let text = fs::read_to_string(&unit).with_context(|| format!("read {}", unit.display()))?;
    let mut found = Vec::new();
    let mut start = false;
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !key.starts_with("Exec") {
            continue;
        }
        // Strip systemd's executable prefixes (`-`, `@`, `:`, `+`, `!`, `|`).
        let value = value.trim_start_matches(['-', '@', ':', '+', '!', '|']);
        let mut words = value.split_whitespace();
        let Some(exec) = words.next() else { continue };
        let name = Path::new(exec)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if !matches!(name, "trafficd" | "trafficctl") {
            ensure!(
                key != "ExecStart",
                "{}: ExecStart runs {exec}, not trafficd",
                unit.display()
            );
            continue;
        }
        let file = under(prefix, exec);
        let executable =
            fs::metadata(&file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        ensure!(
            executable,
            "{}: {key} runs {exec}, but {} is not an installed executable",
            unit.display(),
            file.display()
        );
        let args: Vec<&str> = words.collect();
        for pair in args
            .windows(2)
            .filter(|w| w[0] == "--config" || w[0] == "-c")
        {
            let config = under(prefix, pair[1]);
            ensure!(
                config.is_file(),
                "{}: {key} reads {}, but {} is not there",
                unit.display(),
                pair[1],
                config.display()
            );
        }
        start |= key == "ExecStart";
        if !found.iter().any(|(e, _): &(String, PathBuf)| e == exec) {
            found.push((exec.to_owned(), file));
        }
    }
    ensure!(start, "{}: no ExecStart running trafficd", unit.display());
    Ok(found)
}

/// `abs` (absolute, as the unit names it) inside the tree at `prefix`.
fn under(prefix: &Path, abs: &str) -> PathBuf {
    prefix.join(abs.trim_start_matches('/'))
}

fn is_root_prefix(prefix: &Path) -> bool {
    prefix == Path::new("/") || prefix.canonicalize().is_ok_and(|p| p == Path::new("/"))
}

// ---------------------------------------------------------------------------------------
// The host (prefix /)
// ---------------------------------------------------------------------------------------

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn unit_active() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", "trafficd.service"])
        .status()
        .is_ok_and(|s| s.success())
}

fn has_command(name: &str) -> bool {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(name).is_file())
}

/// Refuse to touch files the Debian package owns: the two ways of installing must not fight.
fn refuse_packaged_files(verb: &str) -> Result<()> {
    if !has_command("dpkg-query") {
        return Ok(());
    }
    for f in FILES.iter().filter(|f| f.dest != CONFIG) {
        let path = format!("/{}", f.dest);
        let out = Command::new("dpkg-query")
            .args(["-S", &path])
            .stderr(Stdio::null())
            .output()
            .context("run dpkg-query -S")?;
        if out.status.success() {
            let owner = String::from_utf8_lossy(&out.stdout);
            let owner = owner.split(':').next().unwrap_or("?").trim().to_owned();
            bail!(
                "{path} belongs to the Debian package `{owner}`: refusing to {verb} over it. \
                 Use the package (apt install ./traffic_….deb, apt remove {owner}) instead."
            );
        }
    }
    Ok(())
}

/// The `traffic` group, from the sysusers file (systemd-sysusers) or with groupadd.
fn ensure_group() -> Result<()> {
    if group_exists() {
        println!("install: group traffic … present");
        return Ok(());
    }
    if has_command("systemd-sysusers") {
        util::run(Command::new("systemd-sysusers").arg(format!("/{SYSUSERS}")))?;
    } else {
        util::run(Command::new("groupadd").args(["--system", "traffic"]))?;
    }
    ensure!(
        group_exists(),
        "group traffic still missing after creating it"
    );
    println!("install: group traffic … created");
    Ok(())
}

fn group_exists() -> bool {
    Command::new("getent")
        .args(["group", "traffic"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `systemctl disable --now trafficd` (only `disable` when systemd is not running, which
/// still removes the enablement link). Not installed or not enabled is fine.
fn disable_service() {
    if !has_command("systemctl") {
        return;
    }
    let mut c = Command::new("systemctl");
    c.arg("disable");
    if systemd_running() {
        c.arg("--now");
    }
    c.arg("trafficd.service").stdin(Stdio::null());
    match c.output() {
        Ok(o) if o.status.success() => println!("uninstall: {c:?} … done"),
        Ok(o) => println!(
            "uninstall: {c:?} … {} (ignored: not installed or not enabled)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => println!("uninstall: {c:?} … {e} (ignored)"),
    }
}

/// `daemon.pin_dir` of the config at `config` (default if absent or unreadable).
pub fn pin_dir(config: &Path) -> PathBuf {
    fs::read_to_string(config)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("daemon")?.get("pin_dir")?.as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR))
}

/// Whether `dir` is a directory strictly below `/sys/fs/bpf` with no `..`: the only kind of
/// path `uninstall` removes.
pub fn is_removable_pin_dir(dir: &Path) -> bool {
    use std::path::Component;
    dir.starts_with("/sys/fs/bpf")
        && dir.components().count() > 4
        && dir
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Pids of running processes called trafficd.
fn trafficd_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "trafficd")
        })
        .collect()
}

fn remove_pins(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if !is_removable_pin_dir(dir) {
        println!(
            "uninstall: kept    {} (pinned state; not below /sys/fs/bpf, so not removed here)",
            dir.display()
        );
        return Ok(());
    }
    let pids = trafficd_pids();
    if !pids.is_empty() {
        println!(
            "uninstall: kept    {} (pinned state): trafficd still runs (pid {pids:?}); once it \
             is stopped: rm -r {}",
            dir.display(),
            dir.display()
        );
        return Ok(());
    }
    fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    println!(
        "uninstall: removed {} (pinned maps, and kept links: nothing stays attached)",
        dir.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The Debian package
// ---------------------------------------------------------------------------------------

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
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .args([
                "-y",
                "--no-install-recommends",
                "-o",
                "DPkg::Lock::Timeout=300",
            ])
            .args(["install", "dpkg-dev"]),
    )
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

// ---------------------------------------------------------------------------------------
// The packaging check of `cargo xtask test` (root)
// ---------------------------------------------------------------------------------------

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("traffic-{what}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `cargo xtask install --prefix` / `uninstall --prefix` end to end (this very xtask, real
/// release build), then the `.deb` of the same binaries, inspected with dpkg-deb and run
/// from its extracted tree. Never installs anything on the host.
pub fn check_packaging(tc: &Toolchains) -> Result<()> {
    let tmp = TempDir::new("package")?;
    let xtask = std::env::current_exe().context("path of the running xtask")?;

    let t = Instant::now();
    let prefix = tmp.0.join("prefix");
    println!("package: cargo xtask install --prefix {}", prefix.display());
    util::run(
        Command::new(&xtask)
            .arg("install")
            .arg("--prefix")
            .arg(&prefix),
    )?;
    check_tree(&prefix, "install --prefix")?;
    util::run(
        Command::new(&xtask)
            .arg("uninstall")
            .arg("--prefix")
            .arg(&prefix),
    )?;
    let left = regular_files(&prefix)?;
    ensure!(
        left == [PathBuf::from(CONFIG)],
        "uninstall --prefix left {left:?}, expected only {CONFIG}"
    );
    println!(
        "package: install/uninstall --prefix … ok ({:.1} s, release build included)",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let deb = build_deb(tc, &tmp.0.join("deb"))?;
    println!(
        "package: built {} in {:.1} s",
        deb.display(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    check_deb(&deb, &tmp.0)?;
    println!(
        "package: .deb checks … ok ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A tree with every file of [`FILES`] (same bytes as the checkout's for those from it),
/// a consistent unit, and binaries that run: `trafficctl --version` and
/// `trafficd --check --config <the tree's config>`.
fn check_tree(root: &Path, what: &str) -> Result<()> {
    for f in FILES {
        let path = root.join(f.dest);
        let meta =
            fs::metadata(&path).with_context(|| format!("{what}: {} missing", path.display()))?;
        ensure!(
            meta.permissions().mode() & 0o7777 == f.mode,
            "{what}: {} has mode {:04o}, expected {:04o}",
            path.display(),
            meta.permissions().mode() & 0o7777,
            f.mode
        );
        if let Source::Repo(rel) = f.source {
            ensure!(
                fs::read(&path)? == fs::read(util::root().join(rel))?,
                "{what}: {} differs from {rel}",
                path.display()
            );
        }
    }
    verify_unit(root).with_context(|| format!("{what}: unit"))?;
    let version = util::output(Command::new(root.join("usr/bin/trafficctl")).arg("--version"))?;
    ensure!(
        version.trim() == format!("trafficctl {}", env!("CARGO_PKG_VERSION")),
        "{what}: trafficctl --version printed {version:?}"
    );
    util::output(
        Command::new(root.join("usr/bin/trafficd"))
            .arg("--check")
            .arg("--config")
            .arg(root.join(CONFIG)),
    )
    .with_context(|| format!("{what}: trafficd --check on the installed config"))?;
    println!("package: {what}: files, modes, unit, trafficctl --version, trafficd --check … ok");
    Ok(())
}

/// Regular files under `root`, relative to it, sorted.
fn regular_files(root: &Path) -> Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let e = e?;
            let ty = e.file_type()?;
            if ty.is_dir() {
                walk(root, &e.path(), out)?;
            } else {
                out.push(e.path().strip_prefix(root)?.to_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// One line of `dpkg-deb -c`: `-rwxr-xr-x root/root 1234 2026-01-01 00:00 ./usr/bin/x`.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub perms: String,
    pub owner: String,
    pub path: String,
}

pub fn parse_listing(listing: &str) -> Vec<Entry> {
    listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(5)?.trim_start_matches("./").trim_end_matches('/');
            Some(Entry {
                perms: (*f.first()?).to_owned(),
                owner: (*f.get(1)?).to_owned(),
                path: path.to_owned(),
            })
        })
        .filter(|e| !e.path.is_empty())
        .collect()
}

/// `0o755` → `-rwxr-xr-x`.
pub fn perms_string(mode: u32) -> String {
    let mut s = String::from("-");
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Package names of a `Depends` field (`libc6 (>= 2.34), passwd | systemd`).
pub fn depends_names(field: &str) -> Vec<String> {
    field
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .map(|n| n.split(':').next().unwrap_or(n).to_owned())
        .collect()
}

fn dpkg_deb(args: &[&str], deb: &Path) -> Result<String> {
    let mut c = Command::new("dpkg-deb");
    let (opt, rest) = args.split_first().context("no dpkg-deb option")?;
    c.arg(opt).arg(deb).args(rest);
    util::output(&mut c)
}

fn check_deb(deb: &Path, tmp: &Path) -> Result<()> {
    // Control fields.
    let field = |name: &str| dpkg_deb(&["-f", name], deb).map(|s| s.trim().to_owned());
    ensure!(
        field("Package")? == DEB_PACKAGE,
        "Package is not {DEB_PACKAGE}"
    );
    let arch = util::output(Command::new("dpkg").arg("--print-architecture"))?;
    ensure!(
        field("Architecture")? == arch.trim(),
        "Architecture is not {}",
        arch.trim()
    );
    let depends = field("Depends")?;
    let names = depends_names(&depends);
    ensure!(
        depends
            .split(',')
            .any(|d| d.trim().starts_with("libc6 (>= ")),
        "Depends has no versioned libc6 (is dpkg-shlibdeps there?): {depends:?}"
    );
    ensure!(
        names
            .iter()
            .all(|n| ["libc6", "passwd", "systemd"].contains(&n.as_str())),
        "Depends has more than libc6 and the group tools: {depends:?}"
    );
    println!("package: .deb Depends: {depends}");

    // Conffiles.
    let conffiles = dpkg_deb(&["-I", "conffiles"], deb)?;
    let conffiles: Vec<&str> = conffiles
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    ensure!(
        conffiles == [format!("/{CONFIG}")],
        "conffiles are {conffiles:?}, expected /{CONFIG}"
    );

    // Contents: exactly FILES plus cargo-deb's copyright, with their modes, owned by root.
    let listing = parse_listing(&dpkg_deb(&["-c"], deb)?);
    let mut expected: Vec<(String, String)> = FILES
        .iter()
        .map(|f| (f.dest.to_owned(), perms_string(f.mode)))
        .chain([(format!("{DOC_DIR}/copyright"), perms_string(0o644))])
        .collect();
    expected.sort();
    let mut files: Vec<(String, String)> = Vec::new();
    for e in &listing {
        // cargo-deb writes numeric ids (0/0), dpkg-deb -b names (root/root).
        ensure!(
            matches!(e.owner.as_str(), "0/0" | "root/root"),
            "{} is owned by {}",
            e.path,
            e.owner
        );
        if e.perms.starts_with('d') {
            ensure!(
                e.perms == "drwxr-xr-x",
                "directory {} has {}",
                e.path,
                e.perms
            );
        } else {
            files.push((e.path.clone(), e.perms.clone()));
        }
    }
    files.sort();
    ensure!(
        files == expected,
        "package contents {files:?}\n  expected {expected:?}"
    );

    // Maintainer scripts: present, executable, valid sh; no enable or start.
    let control = tmp.join("control");
    util::output(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control))?;
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let mode = fs::metadata(&path)
            .with_context(|| format!("maintainer script {script} missing"))?
            .permissions()
            .mode();
        ensure!(
            mode & 0o777 == 0o755,
            "{script} has mode {:o}",
            mode & 0o777
        );
        util::output(Command::new("sh").arg("-n").arg(&path))
            .with_context(|| format!("{script} is not valid sh"))?;
        // Commands only: the comments tell the operator to enable it.
        let text = fs::read_to_string(&path)?;
        let code: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .collect();
        ensure!(
            !code
                .iter()
                .any(|l| l.contains("systemctl enable") || l.contains("systemctl start")),
            "{script} enables or starts the service"
        );
    }

    // Extracted tree: same checks as an install, binaries run.
    let root = tmp.join("extracted");
    util::output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    check_tree(&root, ".deb extracted")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use super::*;

    /// A fake release directory: two shell scripts named like the binaries.
    fn fake_bins(dir: &Path) -> PathBuf {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for name in ["trafficd", "trafficctl"] {
            fs::write(bin.join(name), format!("#!/bin/sh\necho {name}\n")).unwrap();
            fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o700)).unwrap();
        }
        bin
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn install_layout_into_a_prefix() {
        let tmp = TempDir::new("t-layout").unwrap();
        let bin = fake_bins(&tmp.0);
        let prefix = tmp.0.join("root");
        let out = install_files(&bin, &util::root(), &prefix).unwrap();
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Written(_))),
            "{out:?}"
        );
        for f in FILES {
            let p = prefix.join(f.dest);
            assert_eq!(mode(&p), f.mode, "{}", p.display());
            let src = match f.source {
                Source::Bin(n) => bin.join(n),
                Source::Repo(r) => util::root().join(r),
            };
            assert_eq!(
                fs::read(&p).unwrap(),
                fs::read(&src).unwrap(),
                "{}",
                p.display()
            );
        }
        assert!(prefix.join("usr/bin/trafficd").is_file());
        assert!(prefix.join("etc/traffic/traffic.toml").is_file());
        assert!(prefix.join("lib/systemd/system/trafficd.service").is_file());
        assert!(prefix.join("usr/lib/sysusers.d/traffic.conf").is_file());
        assert!(prefix.join("usr/share/doc/traffic/README.md").is_file());
        // Nothing else (no temporary files left behind).
        let mut want: Vec<PathBuf> = FILES.iter().map(|f| PathBuf::from(f.dest)).collect();
        want.sort();
        assert_eq!(regular_files(&prefix).unwrap(), want);
    }

    #[test]
    fn existing_config_is_not_overwritten() {
        let tmp = TempDir::new("t-config").unwrap();
        let bin = fake_bins(&tmp.0);
        let prefix = tmp.0.join("root");
        let config = prefix.join(CONFIG);
        fs::create_dir_all(config.parent().unwrap()).unwrap();
        fs::write(&config, "# the operator's config\n").unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
        let out = install_files(&bin, &util::root(), &prefix).unwrap();
        assert!(out.contains(&Outcome::Kept(config.clone())), "{out:?}");
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            "# the operator's config\n"
        );
        assert_eq!(mode(&config), 0o600);
        // A second install (an upgrade) replaces the binaries and still keeps the config.
        fs::write(bin.join("trafficd"), "#!/bin/sh\necho new\n").unwrap();
        install_files(&bin, &util::root(), &prefix).unwrap();
        assert_eq!(
            fs::read_to_string(prefix.join("usr/bin/trafficd")).unwrap(),
            "#!/bin/sh\necho new\n"
        );
        assert_eq!(mode(&prefix.join("usr/bin/trafficd")), 0o755);
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            "# the operator's config\n"
        );
    }

    #[test]
    fn uninstall_removes_everything_but_the_config() {
        let tmp = TempDir::new("t-uninstall").unwrap();
        let bin = fake_bins(&tmp.0);
        let prefix = tmp.0.join("root");
        install_files(&bin, &util::root(), &prefix).unwrap();
        let link = prefix.join(ENABLE_LINK);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(format!("/{UNIT}"), &link).unwrap();
        let out = uninstall_files(&prefix).unwrap();
        assert_eq!(
            out.iter()
                .filter(|o| matches!(o, Outcome::Removed(_)))
                .count(),
            FILES.len() - 1
        );
        assert!(out.contains(&Outcome::Kept(prefix.join(CONFIG))), "{out:?}");
        assert_eq!(regular_files(&prefix).unwrap(), [PathBuf::from(CONFIG)]);
        assert!(!prefix.join(DOC_DIR).exists(), "doc directory left");
        // Idempotent: a second uninstall finds nothing and still keeps the config.
        let out = uninstall_files(&prefix).unwrap();
        assert!(
            out.iter()
                .all(|o| matches!(o, Outcome::Absent(_) | Outcome::Kept(_))),
            "{out:?}"
        );
        assert!(prefix.join(CONFIG).is_file());
    }

    #[test]
    fn installed_unit_runs_the_installed_binary() {
        let tmp = TempDir::new("t-unit").unwrap();
        let bin = fake_bins(&tmp.0);
        let prefix = tmp.0.join("root");
        install_files(&bin, &util::root(), &prefix).unwrap();
        let found = verify_unit(&prefix).unwrap();
        assert_eq!(
            found,
            [(
                "/usr/bin/trafficd".to_owned(),
                prefix.join("usr/bin/trafficd")
            )]
        );
        let unit = fs::read_to_string(prefix.join(UNIT)).unwrap();
        assert!(unit.contains("ExecStart=/usr/bin/trafficd --config /etc/traffic/traffic.toml"));

        // The check fails when the binary is not where the unit says…
        fs::remove_file(prefix.join("usr/bin/trafficd")).unwrap();
        let e = verify_unit(&prefix).unwrap_err().to_string();
        assert!(e.contains("not an installed executable"), "{e}");
        install_files(&bin, &util::root(), &prefix).unwrap();
        // …when the unit runs a trafficd elsewhere…
        let moved = unit.replace("/usr/bin/trafficd", "/usr/local/bin/trafficd");
        fs::write(prefix.join(UNIT), &moved).unwrap();
        assert!(verify_unit(&prefix).is_err());
        // …when it reads a config that is not installed…
        let other = unit.replace("/etc/traffic/traffic.toml", "/etc/traffic/other.toml");
        fs::write(prefix.join(UNIT), &other).unwrap();
        let e = verify_unit(&prefix).unwrap_err().to_string();
        assert!(e.contains("other.toml"), "{e}");
        // …and when ExecStart runs something else.
        let none = unit.replace("ExecStart=/usr/bin/trafficd", "ExecStart=/bin/true");
        fs::write(prefix.join(UNIT), &none).unwrap();
        assert!(verify_unit(&prefix).is_err());
    }

    /// The `.deb` and `cargo xtask install` install the same files, from the same sources,
    /// with the same modes.
    #[test]
    fn deb_assets_equal_the_install_layout() {
        let manifest = util::root().join("traffic-daemon/Cargo.toml");
        let t: toml::Table = fs::read_to_string(&manifest).unwrap().parse().unwrap();
        let deb = &t["package"]["metadata"]["deb"];
        assert_eq!(deb["name"].as_str(), Some(DEB_PACKAGE));
        let mut assets: Vec<(String, String, u32)> = deb["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let a = a.as_array().expect("assets as [source, dest, mode]");
                let s = |i: usize| a[i].as_str().unwrap().to_owned();
                (s(0), s(1), u32::from_str_radix(&s(2), 8).unwrap())
            })
            .collect();
        let mut files: Vec<(String, String, u32)> = FILES
            .iter()
            .map(|f| {
                let src = match f.source {
                    Source::Bin(n) => format!("target/release/{n}"),
                    Source::Repo(r) => format!("../{r}"),
                };
                (src, f.dest.to_owned(), f.mode)
            })
            .collect();
        assets.sort();
        files.sort();
        assert_eq!(assets, files);
        // The maintainer scripts cargo-deb packages are there, executable and valid sh.
        let scripts = util::root()
            .join("traffic-daemon")
            .join(deb["maintainer-scripts"].as_str().unwrap());
        for s in ["postinst", "prerm", "postrm"] {
            let p = scripts.join(s);
            assert_eq!(mode(&p) & 0o111, 0o111, "{} not executable", p.display());
            let st = Command::new("sh").arg("-n").arg(&p).status().unwrap();
            assert!(st.success(), "{} is not valid sh", p.display());
        }
    }

    #[test]
    fn pin_dir_comes_from_the_config() {
        let tmp = TempDir::new("t-pins").unwrap();
        let config = tmp.0.join("traffic.toml");
        assert_eq!(pin_dir(&config), Path::new(DEFAULT_PIN_DIR));
        fs::write(&config, "[daemon]\ninterfaces = [\"eth0\"]\n").unwrap();
        assert_eq!(pin_dir(&config), Path::new(DEFAULT_PIN_DIR));
        fs::write(&config, "[daemon]\npin_dir = \"/sys/fs/bpf/edge\"\n").unwrap();
        assert_eq!(pin_dir(&config), Path::new("/sys/fs/bpf/edge"));
        assert_eq!(
            pin_dir(&util::root().join("config/traffic.toml")),
            Path::new(DEFAULT_PIN_DIR)
        );
        assert!(is_removable_pin_dir(Path::new("/sys/fs/bpf/traffic")));
        assert!(!is_removable_pin_dir(Path::new("/sys/fs/bpf")));
        assert!(!is_removable_pin_dir(Path::new("/sys/fs/bpf/")));
        assert!(!is_removable_pin_dir(Path::new("/sys/fs/bpf/../../../etc")));
        assert!(!is_removable_pin_dir(Path::new("/etc/traffic")));
    }

    #[test]
    fn dpkg_deb_listing_and_depends() {
        let l = "drwxr-xr-x root/root         0 2026-01-01 00:00 ./\n\
                 drwxr-xr-x root/root         0 2026-01-01 00:00 ./usr/bin/\n\
                 -rwxr-xr-x root/root   1234567 2026-01-01 00:00 ./usr/bin/trafficd\n\
                 -rw-r----- root/root      5000 2026-01-01 00:00 ./etc/traffic/traffic.toml\n";
        let e = parse_listing(l);
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[1],
            Entry {
                perms: "-rwxr-xr-x".into(),
                owner: "root/root".into(),
                path: "usr/bin/trafficd".into()
            }
        );
        assert_eq!(e[2].perms, perms_string(0o640));
        assert_eq!(perms_string(0o755), "-rwxr-xr-x");
        assert_eq!(perms_string(0o644), "-rw-r--r--");
        assert_eq!(
            depends_names("libc6 (>= 2.34), passwd | systemd"),
            ["libc6", "passwd", "systemd"]
        );
    }
}
