//! The test kit: what traffic's tests need to build frames, judge them independently and
//! run trafficd in a throwaway network. Hosts live in network namespaces this process
//! creates, with addresses in 198.18.0.0/15 and 2001:db8::/32 and no route out; every
//! traffic loop is bounded in packets and time.
#![deny(unsafe_code)]

pub mod daemon;
pub mod dashboard;
pub mod netns;
pub mod packet;
pub mod raw;
pub mod reference;
pub mod tcplab;
pub mod topo;
pub mod udp;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    #[allow(unsafe_code, reason = "geteuid is a libc call")]
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

/// Panic with a clear message unless this process can run privileged tests (root, bpffs).
/// Privileged tests call this first, so they never pass by skipping.
pub fn require_privileged() {
    assert!(
        is_root(),
        "privileged test run without root: run `cargo xtask test` as root (these tests load XDP programs and create network namespaces)"
    );
    assert!(
        std::path::Path::new("/sys/fs/bpf").is_dir(),
        "/sys/fs/bpf is missing: mount bpffs (`mount -t bpf bpf /sys/fs/bpf`); `cargo xtask setup` does this"
    );
}
