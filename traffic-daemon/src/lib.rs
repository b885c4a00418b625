//! trafficd and trafficctl: the control plane of `traffic`.
//!
//! Pure decision code in the middle (`config`, `policy`, `plan`), thin adapters at the edge
//! (`dataplane` is the only module that touches aya; `admin` and `metrics` serve HTTP).
#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod exit;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod pressure;
pub mod report;
pub mod sockdiag;
pub mod trafficd_cli;
pub mod upstream;

/// The compiled XDP object, embedded at build time (empty when built with `AYA_BUILD_SKIP=1`).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic"));

/// Whether a real eBPF object is embedded (false for `AYA_BUILD_SKIP=1` builds).
pub fn ebpf_available() -> bool {
    !EBPF_OBJECT.is_empty()
}
