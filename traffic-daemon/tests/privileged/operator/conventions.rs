//! Issue 13: conventions — a rule with a list of CIDRs and a port range enforced by real
//! traffic; a `conf.d` file picked up by a reload, a bad one refused while the old config
//! keeps enforcing; `-o json` output of several commands; `circuit open NAME`.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use crate::support::{PinDir, TempDir, poll, trafficctl, trafficd};
use traffic_daemon::api::{StatusReport, circuits::CircuitsReport, report::LimitsReport};
use traffic_testkit::{
    daemon::DaemonProcess,
    topo::{HostSpec, SERVICE_V4, SERVICE_V6, Topology, unique_tag},
    udp::{UdpFlow, UdpSink, run_flows},
};

/// A port outside the range, and one inside it.
const OPEN_PORT: u16 = 9100;
const RANGE_PORT: u16 = 9005;

struct Rig {
    topo: Topology,
    _pins: PinDir,
    tmp: TempDir,
}

impl Rig {
    fn socket(&self) -> String {
        self.tmp.path("admin.sock").display().to_string()
    }

    fn conf_d(&self) -> PathBuf {
        self.tmp.path("conf.d")
    }

    /// trafficctl with the rig's socket and `args`; (exit code, stdout, stderr).
    fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let socket = self.socket();
        let mut full = vec!["--socket", socket.as_str()];
        full.extend_from_slice(args);
        trafficctl(&full)
    }

    /// `-o json ARGS`, parsed.
    fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let (code, out, err) = self.ctl(&full);
        assert_eq!(code, 0, "trafficctl -o json {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} JSON: {e}\n{out}"))
    }

    /// Send `n` paced datagrams from the host's address `i` (IPv4 or IPv6) to `port` on the
    /// node; how many arrived.
    fn burst(&self, v6: bool, i: u32, port: u16, n: u64) -> u64 {
        let host = &self.topo.hosts[0];
        let src = host.addr(v6, i);
        let dst = if v6 {
            IpAddr::V6(SERVICE_V6)
        } else {
            IpAddr::V4(SERVICE_V4)
        };
        let sink = UdpSink::start(&self.topo.node, port, 1).expect("sink");
        let flow = UdpFlow {
            src,
            dst: SocketAddr::new(dst, port),
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

    fn reloads(&self) -> (u64, u64) {
        let s: StatusReport = self.json(&["status"]);
        (s.reload.succeeded, s.reload.failed)
    }
}

fn main_config(iface: &str, pins: &Path, socket: &str) -> String {
    format!(
        r#"
[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"
[admin]
socket = "{socket}"
socket_group = ""
[metrics]
enabled = false
# The node's own pressure must not rescale the limits under test.
[pressure.signal]
cpu = "off"
memory = "off"
io = "off"
[classes.default]
packets = {{ rate = 10000, burst = 10000 }}
# A slow refill: what passes is the burst.
[classes.listed]
packets = {{ rate = 10, per = "1h", burst = 10 }}
[classes.tight]
packets = {{ rate = 5, per = "1h", burst = 5 }}
# One rule, two CIDRs of both families.
[[rules]]
cidr = ["198.18.41.2/32", "2001:db8:41::2/128"]
class = "listed"
# One table, a range of ten ports.
[[ports]]
port = [9000, "9001-9009"]
protocol = "udp"
class = "tight"
"#,
        pins = pins.display(),
    )
}

pub fn lists_ranges_conf_d_json_and_circuit_names_through_the_real_daemon() {
    let topo = Topology::build(
        &unique_tag(),
        &[HostSpec::new(
            "conv",
            ([198, 18, 41, 0].into(), 24),
            (
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x41, 0, 0, 0, 0, 0),
                64,
            ),
        )],
    )
    .expect("topology");
    let rig = Rig {
        _pins: PinDir::new("conv"),
        tmp: TempDir::new("conv"),
        topo,
    };
    let main = rig.tmp.path("traffic.toml");
    std::fs::write(
        &main,
        main_config(&rig.topo.hosts[0].node_if, &rig._pins.0, &rig.socket()),
    )
    .unwrap();
    std::fs::create_dir(rig.conf_d()).unwrap();
    let d = DaemonProcess::start(
        &rig.topo.node,
        trafficd(),
        &main,
        Path::new(&rig.socket()),
        &rig.tmp.path("trafficd.log"),
        Duration::from_secs(20),
    )
    .expect("trafficd starts");

    // The rule's list: both of its addresses (index 1 = ::2 / .2) get the listed class's
    // burst of 10; a neighbour outside the list gets the default class.
    assert_eq!(
        rig.burst(false, 1, OPEN_PORT, 40),
        10,
        "IPv4 element of the list"
    );
    assert_eq!(
        rig.burst(true, 1, OPEN_PORT, 40),
        10,
        "IPv6 element of the list"
    );
    assert_eq!(
        rig.burst(false, 2, OPEN_PORT, 40),
        40,
        "an address outside the list"
    );
    // The port range: traffic to a port inside it is in the tight class (burst 5), to a
    // port outside it not.
    assert_eq!(
        rig.burst(false, 3, RANGE_PORT, 30),
        5,
        "a port inside the range"
    );
    assert_eq!(rig.burst(false, 10, 9009, 30), 5, "the range's last port");
    assert_eq!(
        rig.burst(false, 4, 9010, 30),
        30,
        "the port after the range"
    );

    // A conf.d file, then `trafficctl reload`: its deny rule and its upstream take effect.
    assert_eq!(
        rig.burst(false, 7, OPEN_PORT, 20),
        20,
        "before the included rule"
    );
    std::fs::write(
        rig.conf_d().join("50-more.toml"),
        "[[rules]]\ncidr = [\"198.18.41.8/32\", \"198.18.41.9/32\"]\naction = \"deny\"\n\
         [[upstreams]]\nname = \"svc\"\nport = 9200\nprobe = \"none\"\n",
    )
    .unwrap();
    let (code, out, err) = rig.ctl(&["reload"]);
    assert_eq!(code, 0, "reload: {out} {err}");
    assert_eq!(
        rig.burst(false, 7, OPEN_PORT, 20),
        0,
        "denied by the included rule"
    );
    let status: StatusReport = rig.json(&["status"]);
    assert_eq!(
        status.config_included,
        [rig.conf_d().join("50-more.toml")],
        "status names the included file"
    );

    // `circuit open NAME` on the included upstream; reset by the same name.
    let (code, out, err) = rig.ctl(&["-o", "json", "circuit", "open", "svc"]);
    assert_eq!(code, 0, "circuit open svc: {err}");
    let msg: serde_json::Value = serde_json::from_str(&out).expect("JSON message");
    assert!(
        msg["message"]
            .as_str()
            .unwrap_or("")
            .contains("forced open"),
        "{msg}"
    );
    let circuits: CircuitsReport = rig.json(&["circuits"]);
    let svc = circuits.upstreams.iter().find(|u| u.name == "svc").unwrap();
    assert!(svc.breaker.forced, "{:?}", svc.breaker);
    let (code, _, err) = rig.ctl(&["circuit", "open", "nosuch"]);
    assert_eq!(code, 2, "an unknown upstream is a usage error");
    assert!(
        err.contains("no upstream named `nosuch`") && err.contains("svc"),
        "{err}"
    );
    let (code, _, err) = rig.ctl(&["circuit", "reset", "svc"]);
    assert_eq!(code, 0, "{err}");

    // A bad conf.d file: refused by `trafficctl reload` (exit 2, naming the file, line and
    // key) and by SIGHUP; the running config keeps enforcing.
    let bad = rig.conf_d().join("60-bad.toml");
    std::fs::write(&bad, "\n[[ports]]\nport = \"9300-9200\"\n").unwrap();
    let (code, _, err) = rig.ctl(&["reload"]);
    assert_eq!(code, 2, "bad include: {err}");
    assert!(
        err.contains(&format!("{}:3:8: ports[0].port", bad.display())),
        "{err}"
    );
    let (ok_before, failed_before) = rig.reloads();
    d.signal(libc::SIGHUP);
    poll("the SIGHUP reload to fail", Duration::from_secs(10), || {
        (rig.reloads() == (ok_before, failed_before + 1)).then_some(())
    });
    let status: StatusReport = rig.json(&["status"]);
    assert!(
        status
            .reload
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("60-bad.toml"),
        "{:?}",
        status.reload
    );
    assert_eq!(rig.burst(false, 8, OPEN_PORT, 20), 0, "still denied");
    assert_eq!(
        rig.burst(false, 3, RANGE_PORT, 10),
        0,
        "the tight bucket stays empty"
    );
    assert_eq!(
        rig.burst(false, 5, RANGE_PORT, 10),
        5,
        "a new source gets the tight burst"
    );

    // -o json parses for the reading commands (and --json is the same).
    let limits: LimitsReport = rig.json(&["limits"]);
    assert!(limits.classes.iter().any(|c| c.class == "tight"));
    for cmd in [
        &["counters"][..],
        &["sources", "--top", "5"],
        &["throttle"],
        &["status"],
    ] {
        let _: serde_json::Value = rig.json(cmd);
        let mut legacy = vec!["--json"];
        legacy.extend_from_slice(cmd);
        let (code, out, err) = rig.ctl(&legacy);
        assert_eq!(code, 0, "{legacy:?}: {err}");
        let _: serde_json::Value = serde_json::from_str(&out).expect("--json output");
    }
    drop(d);
}
