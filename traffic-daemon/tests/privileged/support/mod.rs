//! Shared set-up of the privileged integration tests: guards that clean up what a test
//! creates (pin directories, temp directories) even when it panics.

use std::path::{Path, PathBuf};

pub mod bpf;

/// A pin directory under /sys/fs/bpf, removed on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(name: &str) -> Self {
        let p = PathBuf::from(format!(
            "/sys/fs/bpf/trf-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("trf-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The privileged gate, checked once by `main` before any case: fail loudly unless this run
/// can load programs (root, bpffs) and has the real eBPF object.
pub fn require_privileged() {
    traffic_testkit::require_privileged();
    assert!(
        traffic_daemon::ebpf_available(),
        "this build has no eBPF object (AYA_BUILD_SKIP=1): privileged tests need `cargo xtask test`"
    );
}

/// Run trafficctl with arguments; returns (exit code, stdout, stderr).
pub fn trafficctl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trafficctl"))
        .args(args)
        .output()
        .expect("run trafficctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Path of the trafficd binary built for these tests.
pub fn trafficd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_trafficd"))
}

/// Send `n` UDP datagrams, paced, from address `i` of `topo`'s first host to the node's
/// service address on `port`; returns how many arrived at a sink there.
pub fn udp_burst(topo: &traffic_testkit::topo::Topology, port: u16, i: u32, n: u64) -> u64 {
    use std::{
        net::{IpAddr, SocketAddr},
        sync::{Arc, atomic::AtomicBool},
        time::Duration,
    };
    use traffic_testkit::{
        topo::SERVICE_V4,
        udp::{UdpFlow, UdpSink, run_flows},
    };
    let host = &topo.hosts[0];
    let src = IpAddr::V4(host.v4(i));
    let sink = UdpSink::start(&topo.node, port, 1).expect("sink");
    let flow = UdpFlow {
        src,
        dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), port),
        rate_pps: 20_000.0,
        duration: Duration::from_secs(5),
        max_packets: n,
        payload_len: 32,
        cpu: None,
        progress: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sent = run_flows(&host.ns, &[flow], &stop).expect("flow");
    assert_eq!(sent[0].sent, n);
    let got = sink.finish(Duration::from_secs(2));
    got.get(&src).copied().unwrap_or(0)
}

/// Poll `f` every 10 ms until it returns `Some`, or panic after `timeout` naming `what`.
pub fn poll<T>(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
