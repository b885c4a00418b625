//! The pinned toolchains, compiled in: the workspace's stable channel from
//! `traffic-daemon/rust-toolchain.toml`, the rest from `xtask/toolchains.toml`.

use anyhow::{Context as _, Result};
use serde::Deserialize;

/// Versions pinned for this project.
#[derive(Clone, Debug)]
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

/// `xtask/toolchains.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Others {
    /// Nightly (with rust-src) for the eBPF crate.
    ebpf_nightly: String,
    /// bpf-linker version.
    bpf_linker: String,
    /// LLVM major version bpf-linker links against.
    llvm_major: String,
}

/// `rust-toolchain.toml`, the part read here.
#[derive(Deserialize)]
struct ToolchainFile {
    toolchain: ToolchainSection,
}

#[derive(Deserialize)]
struct ToolchainSection {
    channel: String,
}

impl Toolchains {
    pub fn pinned() -> Result<Self> {
        Self::parse(
            include_str!("../../traffic-daemon/rust-toolchain.toml"),
            include_str!("../toolchains.toml"),
        )
    }

    fn parse(toolchain_file: &str, others: &str) -> Result<Self> {
        let file: ToolchainFile =
            toml::from_str(toolchain_file).context("traffic-daemon/rust-toolchain.toml")?;
        let o: Others = toml::from_str(others).context("xtask/toolchains.toml")?;
        Ok(Self {
            stable: file.toolchain.channel,
            ebpf_nightly: o.ebpf_nightly,
            bpf_linker: o.bpf_linker,
            llvm_major: o.llvm_major,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_stable_is_new_enough_for_aya() {
        let t = Toolchains::pinned().expect("pins parse");
        let mut parts = t
            .stable
            .split('.')
            .map(|p| p.parse::<u32>().expect("numeric channel"));
        let (major, minor) = (parts.next(), parts.next());
        assert_eq!(major, Some(1), "{}", t.stable);
        assert!(minor >= Some(98), "aya 0.16 needs Rust 1.98: {}", t.stable);
        assert!(t.ebpf_nightly.starts_with("nightly-"), "{}", t.ebpf_nightly);
    }
}
