//! trafficd and trafficctl: the control plane of `traffic`.
//!
//! Read top-down; every module depends only on the ones listed after it:
//! - [`cli`] (trafficctl) and [`serve`] (trafficd: the event loop, the admin API server,
//!   the Prometheus listener, probes, systemd notifications);
//! - [`ops`]: what the admin API and the control loop ask of the engine;
//! - [`engine`]: [`engine::Core`] holds config, kernel slots, what was applied and the
//!   dataplane, and applies changes;
//! - [`plan`]: the only builder of the maps' desired state, and the diff to get there;
//! - [`api`]: the `/v1` wire types, the one client, the text renderers;
//! - [`config`] (syntax, raw file, validation by section), [`policy`] (limits, throttle,
//!   breakers, upstreams; pure), [`pressure`] (sampling /proc), [`sockdiag`] (socket
//!   statistics), [`rtnl`] (link and address events), [`setting`] (the one settings error);
//! - [`dataplane`]: the only module that touches aya (and its fake for tests).
#![deny(unsafe_code)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, reason = "a panic is how a test fails")
)]

pub mod api;
pub mod bans;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod engine;
pub mod exit;
pub mod feeds;
pub mod fleet;
pub mod logging;
pub mod manual;
pub mod ops;
pub mod plan;
pub mod policy;
pub mod pressure;
pub mod rtnl;
pub mod serve;
pub mod setting;
pub mod sockdiag;
pub mod trafficd_cli;
pub mod watch;

/// The compiled XDP object, embedded at build time (empty when built with `AYA_BUILD_SKIP=1`).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic"));

/// Whether a real eBPF object is embedded (false for `AYA_BUILD_SKIP=1` builds).
pub fn ebpf_available() -> bool {
    !EBPF_OBJECT.is_empty()
}
