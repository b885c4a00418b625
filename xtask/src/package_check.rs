//! The packaging check of `cargo xtask test` (layer `package`, root): `cargo xtask install
//! --prefix` and `uninstall --prefix` end to end, then the `.deb` of the same binaries
//! inspected with dpkg-deb (control fields, conffiles, contents and modes, maintainer
//! scripts generated through deb-systemd-helper / deb-systemd-invoke), run from its
//! extracted tree, and checked by lintian. Never installs anything on the host; the
//! service layer (`crate::service`) installs it under a private systemd.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, ensure};

use crate::{
    install::{CONFIG, DEB_ONLY, DEB_PACKAGE, DOC_DIR, FILES, Source, build_deb, verify_unit},
    toolchains::Toolchains,
    util,
};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Result<Self> {
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
    let t = Instant::now();
    crate::generated::lintian(&deb)?;
    println!(
        "package: lintian … clean ({:.1} s)",
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
pub fn regular_files(root: &Path) -> Result<Vec<PathBuf>> {
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

/// The maintainer scripts extracted into `control`: present, executable, valid sh; no
/// enable or start, `systemctl` only for daemon-reload; the generated sysusers and
/// deb-systemd-helper / deb-systemd-invoke fragments in place.
fn check_scripts(control: &Path) -> Result<()> {
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
        // systemctl only for daemon-reload; the rest through deb-systemd-helper/-invoke.
        ensure!(
            code.iter()
                .filter(|l| l.contains("systemctl"))
                .all(|l| l.contains("daemon-reload")),
            "{script} calls systemctl for more than daemon-reload:\n{text}"
        );
    }
    let postinst = fs::read_to_string(control.join("postinst"))?;
    for needle in [
        "systemd-sysusers",
        "deb-systemd-helper update-state trafficd.service",
        "deb-systemd-invoke try-restart trafficd.service",
    ] {
        ensure!(
            postinst.contains(needle),
            "postinst lacks `{needle}`:\n{postinst}"
        );
    }
    let postrm = fs::read_to_string(control.join("postrm"))?;
    ensure!(
        postrm.contains("deb-systemd-helper purge trafficd.service"),
        "postrm does not drop the enablement on purge:\n{postrm}"
    );
    Ok(())
}

/// The `.deb` as dpkg sees it: fields, conffiles, contents and modes, maintainer scripts,
/// its binaries run from the extracted tree.
///
/// About 100 lines: a flat list of independent checks on one extracted package, in the
/// order a reviewer reads a package; each is a few lines and names what it found.
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
        names.iter().all(|n| [
            "libc6",
            "systemd",
            "systemd-standalone-sysusers",
            "systemd-sysusers"
        ]
        .contains(&n.as_str())),
        "Depends has more than libc6 and systemd (or a sysusers): {depends:?}"
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

    // Contents: exactly FILES plus cargo-deb's copyright and changelog and the lintian
    // overrides, with their modes, owned by root.
    let listing = parse_listing(&dpkg_deb(&["-c"], deb)?);
    let mut expected: Vec<(String, String)> = FILES
        .iter()
        .map(|f| (f.dest.to_owned(), perms_string(f.mode)))
        .chain([
            (format!("{DOC_DIR}/copyright"), perms_string(0o644)),
            (
                format!("{DOC_DIR}/changelog.Debian.gz"),
                perms_string(0o644),
            ),
        ])
        .chain(
            DEB_ONLY
                .iter()
                .map(|(_, dest)| ((*dest).to_owned(), perms_string(0o644))),
        )
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

    // Maintainer scripts.
    let control = tmp.join("control");
    util::output(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control))?;
    check_scripts(&control)?;

    // Extracted tree: same checks as an install, binaries run.
    let root = tmp.join("extracted");
    util::output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    check_tree(&root, ".deb extracted")
}
