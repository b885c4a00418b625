//! The pinned toolchains, read from `xtask/toolchains.toml` (compiled in).

use anyhow::{Context as _, Result};
use serde::Deserialize;

/// Versions pinned for this project.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toolchains {
    /// Stable toolchain for the workspace, e.g. "1.98.0".
    pub stable: String,
    /// Nightly (with rust-src) for the eBPF crate.
    pub ebpf_nightly: String,
    /// bpf-linker version.
    pub bpf_linker: String,
    /// LLVM major version bpf-linker links against.
    pub llvm_major: String,
}

impl Toolchains {
    pub fn pinned() -> Result<Self> {
        toml::from_str(include_str!("../toolchains.toml")).context("xtask/toolchains.toml")
    }
}
