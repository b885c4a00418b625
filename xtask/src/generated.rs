//! Files the package and `cargo xtask install` ship that are rendered from the built
//! binaries rather than kept in the checkout: the man pages trafficd(8) and trafficctl(8)
//! (clap_mangen, through the hidden `trafficctl manpages DIR`), traffic.toml(5) (written by
//! hand in `config/traffic.toml.5`, gzipped here like the others) and trafficctl's
//! completions for bash, zsh and fish (`trafficctl completions SHELL`).
//!
//! They go to `<release dir>/generated/`, where `[package.metadata.deb] assets` and
//! [`crate::install::FILES`] take them from.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, ensure};

use crate::util;

/// Directory under the release dir the generated files go to.
pub const DIR: &str = "generated";

/// `(file under DIR, shell)` for the completions.
pub const COMPLETIONS: &[(&str, &str)] = &[
    ("trafficctl.bash", "bash"),
    ("_trafficctl", "zsh"),
    ("trafficctl.fish", "fish"),
];

/// Man pages rendered by `trafficctl manpages`, and the hand-written one from the checkout.
const RENDERED_MAN: &[&str] = &["trafficd.8", "trafficctl.8"];
const CONFIG_MAN: &str = "config/traffic.toml.5";

/// Write every generated file from the binaries in `bin_dir`; returns the directory.
pub fn write(bin_dir: &Path) -> Result<PathBuf> {
    let out = bin_dir.join(DIR);
    fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let ctl = bin_dir.join("trafficctl");
    let raw = out.join("roff");
    util::output(Command::new(&ctl).arg("manpages").arg(&raw)).context("trafficctl manpages")?;
    for page in RENDERED_MAN {
        gzip(&raw.join(page), &out.join(format!("{page}.gz")))?;
    }
    let config_page = util::root().join(CONFIG_MAN);
    gzip(&config_page, &out.join("traffic.toml.5.gz"))?;
    fs::remove_dir_all(&raw).with_context(|| format!("remove {}", raw.display()))?;
    for (file, shell) in COMPLETIONS {
        let text = util::output(Command::new(&ctl).args(["completions", shell]))
            .with_context(|| format!("trafficctl completions {shell}"))?;
        ensure!(
            !text.is_empty(),
            "trafficctl completions {shell} printed nothing"
        );
        fs::write(out.join(file), text).with_context(|| format!("write {file}"))?;
    }
    println!("generated: man pages and completions in {}", out.display());
    Ok(out)
}

/// `gzip -9n` (no name or timestamp in the header: reproducible, as lintian wants).
fn gzip(src: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::create(dest).with_context(|| format!("create {}", dest.display()))?;
    let status = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(src)
        .stdout(Stdio::from(file))
        .status()
        .context("run gzip")?;
    ensure!(status.success(), "gzip {} failed: {status}", src.display());
    Ok(())
}

/// lintian on the `.deb`: no error and no warning, except the tags overridden (each with
/// its reason) in `config/debian/lintian-overrides`. Installs lintian when missing (root).
pub fn lintian(deb: &Path) -> Result<()> {
    if Command::new("lintian")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        ensure!(
            util::is_root(),
            "lintian is missing: apt-get install lintian (as root), or run this as root"
        );
        println!("package: lintian … installing");
        util::run(crate::setup::apt_get().args(["install", "lintian"]))?;
    }
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("run lintian")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "lintian found errors or warnings in {}:\n{text}",
        deb.display()
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        println!("package: lintian: {line}");
    }
    Ok(())
}
