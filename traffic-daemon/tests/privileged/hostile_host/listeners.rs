//! Issue 12, items 1, 9 and 10: the admin socket and the metrics port under hostile local
//! users (thousands of idle and slow connections; a reader who tries to control; a file that
//! is not ours at the socket path). The rig is shared with `instance.rs`.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use crate::support::{PinDir, TempDir, trafficd};
use traffic_testkit::{
    daemon::DaemonProcess,
    topo::{HostSpec, SERVICE_V4, Topology, unique_tag},
    udp::{UdpFlow, UdpSink, run_flows},
};

/// UDP port of the bursts.
const PORT: u16 = 9000;

/// The node with one client host (198.18.12.0/24, class premium) and, once started,
/// trafficd. Fields drop in order: the daemon stops before the namespaces go.
pub(super) struct Rig {
    pub daemon: Option<DaemonProcess>,
    pub topo: Topology,
    pub pins: PinDir,
    pub tmp: TempDir,
}

impl Rig {
    pub fn new(name: &str) -> Self {
        let topo = Topology::build(
            &unique_tag(),
            &[HostSpec::new(
                "cli",
                ([198, 18, 12, 0].into(), 24),
                (
                    std::net::Ipv6Addr::new(0x2001, 0xdb8, 12, 0, 0, 0, 0, 0),
                    64,
                ),
            )],
        )
        .expect("topology");
        Self {
            daemon: None,
            topo,
            pins: PinDir::new(name),
            tmp: TempDir::new(name),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.tmp.path("admin.sock")
    }

    /// A config file named `file` with the premium class's `packets` and `extra` TOML
    /// appended (e.g. `[metrics]`), its admin socket `socket`.
    pub fn write_config(&self, file: &str, socket: &Path, packets: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"
[admin]
socket = "{socket}"
socket_group = ""
# The node's own pressure must not rescale the limits under test.
[pressure.signal]
cpu = "off"
memory = "off"
io = "off"
{extra}
[classes.default]
packets = {{ rate = 1000 }}
[classes.premium]
packets = {packets}
[[rules]]
cidr = "198.18.12.0/24"
class = "premium"
"#,
            iface = self.topo.hosts[0].node_if,
            pins = self.pins.0.display(),
            socket = socket.display(),
        );
        let path = self.tmp.path(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Start trafficd on `config` (its socket the rig's).
    pub fn start(&mut self, config: &Path) -> &DaemonProcess {
        let d = DaemonProcess::start(
            &self.topo.node,
            trafficd(),
            config,
            &self.socket(),
            &self.tmp.path("trafficd.log"),
            Duration::from_secs(20),
        )
        .expect("trafficd starts");
        self.daemon.insert(d)
    }

    /// Send `n` datagrams from the client's address `i`; returns how many arrived.
    pub fn burst(&self, i: u32, n: u64) -> u64 {
        let host = &self.topo.hosts[0];
        let src = IpAddr::V4(host.v4(i));
        let sink = UdpSink::start(&self.topo.node, PORT, 1).expect("sink");
        let flow = UdpFlow {
            src,
            dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), PORT),
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
}
