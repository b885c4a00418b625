//! Builds the benchmark programs (`traffic-ebpf/bench`) with the pinned nightly (through
//! aya-build) and embeds them; trafficd never carries them. The pinned nightly is read from
//! `xtask/toolchains.toml`, as the daemon's build script does.
//!
//! With `AYA_BUILD_SKIP=1` an empty stub is written instead; the benchmark refuses to run
//! on it.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

/// The object the bench embeds: the bench crate's program binary.
const OBJECT: &str = "traffic-ebpf-bench";

fn pinned_nightly(root: &std::path::Path) -> anyhow::Result<String> {
    let path = root.join("xtask/toolchains.toml");
    println!("cargo::rerun-if-changed={}", path.display());
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "ebpf_nightly")
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .ok_or_else(|| anyhow!("{}: no ebpf_nightly", path.display()))
}

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .ancestors()
        .nth(2)
        .ok_or_else(|| anyhow!("no workspace root"))?;
    let ebpf_dir = root.join("traffic-ebpf/bench");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let nightly = pinned_nightly(root)?;
    let ebpf = aya_build::Package {
        name: "traffic-ebpf-bench",
        root_dir: ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(&nightly))?;
    let path = out_dir.join(OBJECT);
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true") {
        // A stale real object from an earlier build must not survive a skipped one.
        fs::write(&path, b"")?;
    } else if !path.exists() {
        return Err(anyhow!("aya-build produced no {}", path.display()));
    }
    Ok(())
}
