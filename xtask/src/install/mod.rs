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
//! | `config/trafficd.service` | `/usr/lib/systemd/system/trafficd.service` | 0644 |
//! | `config/sysusers.d/traffic.conf` | `/usr/lib/sysusers.d/traffic.conf` | 0644 |
//! | `README.md` | `/usr/share/doc/traffic/README.md` | 0644 |
//! | `config/grafana/traffic.json` | `/usr/share/traffic/grafana/traffic.json` | 0644 |
//! | man pages (generated) | `/usr/share/man/man8/traffic{d,ctl}.8.gz`, `man5/traffic.toml.5.gz` | 0644 |
//! | completions (generated) | bash, zsh and fish completion directories | 0644 |
//!
//! The `.deb` adds cargo-deb's copyright, the changelog and lintian overrides; its unit comes
//! through `[package.metadata.deb.systemd-units]` (maintainer scripts generated with
//! deb-systemd-helper / deb-systemd-invoke), and `crate::package_check` runs lintian on it.
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
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{setup, toolchains::Toolchains, util};

mod deb;
pub use deb::build_deb;

/// Where a file comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A binary of the release build, by name.
    Bin(&'static str),
    /// A file of the checkout, relative to the workspace root.
    Repo(&'static str),
    /// A file rendered from the release build into its `generated/` directory
    /// ([`crate::generated`]).
    Generated(&'static str),
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
pub const UNIT: &str = "usr/lib/systemd/system/trafficd.service";
pub const SYSUSERS: &str = "usr/lib/sysusers.d/traffic.conf";
pub const DOC_DIR: &str = "usr/share/doc/traffic";
/// Where `systemctl enable` puts the unit's link (`WantedBy=multi-user.target`).
const ENABLE_LINK: &str = "etc/systemd/system/multi-user.target.wants/trafficd.service";
/// `daemon.pin_dir` when the config does not set it.
const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/traffic";
/// Name of the Debian package (`[package.metadata.deb] name`).
pub const DEB_PACKAGE: &str = "traffic";

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
        source: Source::Repo("config/sysusers.d/traffic.conf"),
        dest: SYSUSERS,
        mode: 0o644,
    },
    File {
        source: Source::Repo("README.md"),
        dest: "usr/share/doc/traffic/README.md",
        mode: 0o644,
    },
    File {
        source: Source::Repo("config/grafana/traffic.json"),
        dest: "usr/share/traffic/grafana/traffic.json",
        mode: 0o644,
    },
    File {
        source: Source::Generated("trafficd.8.gz"),
        dest: "usr/share/man/man8/trafficd.8.gz",
        mode: 0o644,
    },
    File {
        source: Source::Generated("trafficctl.8.gz"),
        dest: "usr/share/man/man8/trafficctl.8.gz",
        mode: 0o644,
    },
    File {
        source: Source::Generated("traffic.toml.5.gz"),
        dest: "usr/share/man/man5/traffic.toml.5.gz",
        mode: 0o644,
    },
    File {
        source: Source::Generated("trafficctl.bash"),
        dest: "usr/share/bash-completion/completions/trafficctl",
        mode: 0o644,
    },
    File {
        source: Source::Generated("_trafficctl"),
        dest: "usr/share/zsh/vendor-completions/_trafficctl",
        mode: 0o644,
    },
    File {
        source: Source::Generated("trafficctl.fish"),
        dest: "usr/share/fish/vendor_completions.d/trafficctl.fish",
        mode: 0o644,
    },
];

/// What only the `.deb` has (besides cargo-deb's copyright and changelog): the lintian
/// overrides, each with its reason (`config/debian/lintian-overrides`).
pub const DEB_ONLY: &[(&str, &str)] = &[(
    "config/debian/lintian-overrides",
    "usr/share/lintian/overrides/traffic",
)];

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
    crate::generated::write(&bin)?;
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
    let bin = crate::build(tc, true)?;
    crate::generated::write(&bin)?;
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
pub enum FileOutcome {
    Written(PathBuf),
    /// An existing config, left as it was.
    Kept(PathBuf),
    Removed(PathBuf),
    Absent(PathBuf),
}

/// Copy [`FILES`] under `prefix`: binaries from `bin_dir`, the rest from the checkout at
/// `repo`. Every file is written to a temporary name and renamed, so a running trafficd is
/// never overwritten in place. The config is written only if no file is at its path.
pub fn install_files(bin_dir: &Path, repo: &Path, prefix: &Path) -> Result<Vec<FileOutcome>> {
    let mut out = Vec::new();
    for f in FILES {
        let src = source_path(f.source, bin_dir, repo);
        let dest = prefix.join(f.dest);
        if f.dest == CONFIG && fs::symlink_metadata(&dest).is_ok() {
            println!(
                "install: kept    {} (a config is there; it is never overwritten — the shipped \
                 one is config/traffic.toml)",
                dest.display()
            );
            out.push(FileOutcome::Kept(dest));
            continue;
        }
        copy_file(&src, &dest, f.mode)?;
        println!("install: wrote   {} ({:04o})", dest.display(), f.mode);
        out.push(FileOutcome::Written(dest));
    }
    Ok(out)
}

/// Where a file of [`FILES`] is read from.
pub fn source_path(source: Source, bin_dir: &Path, repo: &Path) -> PathBuf {
    match source {
        Source::Bin(name) => bin_dir.join(name),
        Source::Repo(rel) => repo.join(rel),
        Source::Generated(name) => bin_dir.join(crate::generated::DIR).join(name),
    }
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
pub fn uninstall_files(prefix: &Path) -> Result<Vec<FileOutcome>> {
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
                out.push(FileOutcome::Removed(path));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                println!("uninstall: absent  {}", path.display());
                out.push(FileOutcome::Absent(path));
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
        out.push(FileOutcome::Kept(config));
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

/// The groups: `traffic` (may read through trafficctl) and `traffic-admin` (may also
/// change things), from the sysusers file (systemd-sysusers) or with groupadd.
fn ensure_group() -> Result<()> {
    for group in ["traffic", "traffic-admin"] {
        if group_exists(group) {
            println!("install: group {group} … present");
            continue;
        }
        if has_command("systemd-sysusers") {
            util::run(Command::new("systemd-sysusers").arg(format!("/{SYSUSERS}")))?;
        } else {
            util::run(Command::new("groupadd").args(["--system", group]))?;
        }
        ensure!(
            group_exists(group),
            "group {group} still missing after creating it"
        );
        println!("install: group {group} … created");
    }
    Ok(())
}

fn group_exists(group: &str) -> bool {
    Command::new("getent")
        .args(["group", group])
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests;
