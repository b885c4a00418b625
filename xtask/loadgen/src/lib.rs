//! The load generator: load profiles (`config/profiles/*.toml`), the load run against
//! trafficd in a throwaway topology and what the limits allowed of it, charts, the
//! benchmark's statistics, flood namespaces and peers' rule sets, and the demo
//! (`cargo xtask demo` runs the `traffic-demo` binary). Hosts come from
//! [`traffic_testkit`]: namespaces with addresses in 198.18.0.0/15 and 2001:db8::/32 and
//! no route out; every load loop is bounded in packets and time.
#![deny(unsafe_code)]

pub mod admin;
pub mod chart;
pub mod conn;
pub mod demo;
pub mod flood;
pub mod ideal;
pub mod load;
pub mod peers;
pub mod profile;
pub mod services;
pub mod stats;
pub mod xdp_pass;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("xtask/loadgen lives two levels below the workspace root")
        .to_owned()
}

/// The cargo target directory of the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}
