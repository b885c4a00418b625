//! trafficd and trafficctl: the control plane of `traffic`.
//!
//! Pure decision code in the middle (`config`, `policy`, `plan`), thin adapters at the edge
//! (`dataplane` is the only module that touches aya; `admin` and `metrics` serve HTTP).
#![deny(unsafe_code)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, reason = "a panic is how a test fails")
)]

pub mod api;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod engine;
pub mod exit;
pub mod ops;
pub mod plan;
pub mod policy;
pub mod pressure;
pub mod serve;
pub mod setting;
pub mod sockdiag;

/// The compiled XDP object, embedded at build time (empty when built with `AYA_BUILD_SKIP=1`).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic"));

/// Benchmark companions (bare XDP_DROP floor, generators), embedded the same way.
pub static EBPF_BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic-bench"));

/// Whether a real eBPF object is embedded (false for `AYA_BUILD_SKIP=1` builds).
pub fn ebpf_available() -> bool {
    !EBPF_OBJECT.is_empty()
}
