//! Small helpers for running commands.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::toolchains::Toolchains;

/// The workspace root (parent of `xtask/`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

/// The cargo target directory of the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// `$CARGO_HOME/bin`, where rustup proxies and bpf-linker live.
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// PATH with `$CARGO_HOME/bin` first, so children find bpf-linker and the rustup proxies.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut parts = vec![cargo_bin_dir()];
    if let Some(p) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(parts).unwrap_or_default()
}

/// A `cargo` command for the workspace on the pinned stable toolchain.
pub fn cargo(tc: &Toolchains) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root())
        .env("RUSTUP_TOOLCHAIN", &tc.stable)
        .env("PATH", path_with_cargo_bin())
        // Set by the outer `cargo run` for the 1.95 toolchain xtask was built with.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    c
}

/// Run a command, failing with its rendering if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("spawn {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Run a command with its output captured and return its stdout; if it fails, the error
/// carries its rendering and its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("spawn {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{shown}: stdout is not UTF-8"))
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: geteuid has no preconditions.
    unsafe {
        libc::geteuid() == 0
    }
}
