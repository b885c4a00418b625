//! The lab: everything tests, the demo and the benchmarks need to build a throwaway network
//! and drive traffic through it. Hosts live in network namespaces this process creates, with
//! addresses in 198.18.0.0/15 and 2001:db8::/32 and no route out; every load loop is bounded
//! in packets and time.
#![deny(unsafe_code)]

pub mod packet;
pub mod profile;
pub mod reference;
/// Durations, byte sizes and error locations, shared with trafficd's config (the same file:
/// this crate builds before the daemon's toolchain exists, so it cannot depend on it yet).
#[path = "../../../traffic-daemon/src/config/syntax.rs"]
pub mod syntax;

/// Panic with a clear message unless this process can run privileged tests (root, bpffs).
/// Privileged tests call this first, so they never pass by skipping.
pub fn require_privileged() {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "privileged test run without root: run `cargo xtask test` as root (these tests load XDP programs and create network namespaces)"
    );
    assert!(
        std::path::Path::new("/sys/fs/bpf").is_dir(),
        "/sys/fs/bpf is missing: mount bpffs (`mount -t bpf bpf /sys/fs/bpf`); `cargo xtask setup` does this"
    );
}

pub mod admin;
pub mod benchstat;
pub mod chart;
pub mod conn;
pub mod daemon;
pub mod flood;
pub mod gen_abi;
pub mod ideal;
pub mod load;
pub mod netns;
pub mod peers;
pub mod services;
pub mod tcplab;
pub mod topo;
pub mod udp;
pub mod xdp_pass;
