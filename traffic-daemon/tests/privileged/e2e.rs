//! End to end: trafficd running in a node namespace, clients in other namespaces sending
//! paced UDP from both CPUs, IPv4 and IPv6. What passes must match what the limits allow,
//! and the counters trafficctl reports must match what the receivers saw.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use crate::support::{PinDir, TempDir, trafficctl, trafficd};
use traffic_daemon::api::report::CountersReport;
use traffic_testkit::{
    daemon::DaemonProcess,
    netns::online_cpus,
    topo::{HostSpec, SERVICE_V4, SERVICE_V6, Topology, unique_tag},
    udp::{FlowStats, UdpFlow, UdpSink, run_flows},
};

const PORT: u16 = 9000;
const DURATION: Duration = Duration::from_millis(3200);

/// (host, class, packets per second, burst) of the limited classes under test.
const LIMITED: [(&str, &str, f64, u64); 3] = [
    ("prem", "premium", 400.0, 100),
    ("basic", "basic", 200.0, 50),
    ("unkn", "default", 100.0, 20),
];

fn hosts() -> Vec<HostSpec> {
    let v4 = |c: u8| ([198, 18, c, 0].into(), 24);
    let v6 = |g: u16| (std::net::Ipv6Addr::new(0x2001, 0xdb8, g, 0, 0, 0, 0, 0), 64);
    vec![
        HostSpec::new("intl", v4(0), v6(0x10)),
        HostSpec::new("prem", v4(1), v6(1)),
        HostSpec::new("basic", v4(2), v6(2)),
        HostSpec::new("unkn", v4(200), v6(0x200)),
        HostSpec::new("deny", v4(66), v6(0x66)),
    ]
}

fn config(topo: &Topology, pins: &PinDir, socket: &std::path::Path) -> String {
    let ifaces: Vec<String> = topo
        .node_interfaces()
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect();
    let mut classes = String::from("[classes.internal]\npriority = \"critical\"\n");
    for (_, class, rate, burst) in LIMITED {
        classes += &format!("[classes.{class}]\npackets = {{ rate = {rate}, burst = {burst} }}\n");
    }
    format!(
        r#"
[daemon]
interfaces = [{ifaces}]
pin_dir = "{pins}"
summary_interval = "1s"
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
{classes}
[[rules]]
cidr = "198.18.0.0/24"
action = "allow"
class = "internal"
[[rules]]
cidr = "2001:db8:10::/64"
action = "allow"
class = "internal"
[[rules]]
cidr = "198.18.1.0/24"
class = "premium"
[[rules]]
cidr = "2001:db8:1::/64"
class = "premium"
[[rules]]
cidr = "198.18.2.0/24"
class = "basic"
[[rules]]
cidr = "2001:db8:2::/64"
class = "basic"
[[rules]]
cidr = "198.18.66.0/24"
action = "deny"
[[rules]]
cidr = "2001:db8:66::/64"
action = "deny"
"#,
        ifaces = ifaces.join(", "),
        pins = pins.0.display(),
        socket = socket.display(),
    )
}

fn dst(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::new(IpAddr::V6(SERVICE_V6), PORT)
    } else {
        SocketAddr::new(IpAddr::V4(SERVICE_V4), PORT)
    }
}

fn flow(src: IpAddr, rate: f64, cpu: Option<usize>) -> UdpFlow {
    UdpFlow {
        src,
        dst: dst(src.is_ipv6()),
        rate_pps: rate,
        duration: DURATION,
        max_packets: (rate * DURATION.as_secs_f64() * 1.5) as u64 + 10,
        payload_len: 64,
        cpu,
        progress: None,
    }
}

pub fn limits_hold_per_class_for_ipv4_and_ipv6_on_both_cpus() {
    let topo = Topology::build(&unique_tag(), &hosts()).expect("topology");
    let pins = PinDir::new("e2e");
    let tmp = TempDir::new("e2e");
    let socket = tmp.path("admin.sock");
    let cfg = tmp.path("traffic.toml");
    std::fs::write(&cfg, config(&topo, &pins, &socket)).unwrap();
    let mut daemon = DaemonProcess::start(
        &topo.node,
        trafficd(),
        &cfg,
        &socket,
        &tmp.path("trafficd.log"),
        Duration::from_secs(20),
    )
    .expect("trafficd starts");
    for iface in topo.node_interfaces() {
        assert!(
            topo.xdp_attached(&iface).unwrap(),
            "XDP not attached to {iface}"
        );
    }

    let sink = UdpSink::start(&topo.node, PORT, 2).expect("sink");
    let cpus = online_cpus().min(2);
    let stop = Arc::new(AtomicBool::new(false));
    // Each limited source sends from every CPU at the class rate (2× the limit in total),
    // so both CPUs hit the one shared bucket.
    let mut jobs: Vec<(&str, Vec<UdpFlow>)> = Vec::new();
    for (host, _, rate, _) in LIMITED {
        let h = topo.host(host);
        let mut flows = Vec::new();
        for v6 in [false, true] {
            for cpu in 0..cpus {
                flows.push(flow(h.addr(v6, 9), rate * 2.0 / cpus as f64, Some(cpu)));
            }
        }
        jobs.push((host, flows));
    }
    for (host, rate) in [("intl", 300.0), ("deny", 100.0)] {
        let h = topo.host(host);
        jobs.push((
            host,
            vec![
                flow(h.addr(false, 9), rate, Some(0)),
                flow(h.addr(true, 9), rate, Some(1)),
            ],
        ));
    }
    let sent: HashMap<IpAddr, FlowStats> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(host, flows)| {
                let ns = &topo.host(host).ns;
                let stop = &stop;
                s.spawn(move || run_flows(ns, flows, stop).expect("flows"))
            })
            .collect();
        let mut by_src: HashMap<IpAddr, FlowStats> = HashMap::new();
        for ((_, flows), h) in jobs.iter().zip(handles) {
            for (f, st) in flows.iter().zip(h.join().expect("sender")) {
                let e = by_src.entry(f.src).or_default();
                *e = e.merge(&st);
            }
        }
        by_src
    });
    let received = sink.finish(Duration::from_secs(3));
    let got = |ip: IpAddr| received.get(&ip).copied().unwrap_or(0);

    let mut report = Vec::new();
    for (host, class, rate, burst) in LIMITED {
        for v6 in [false, true] {
            let src = topo.host(host).addr(v6, 9);
            let st = sent[&src];
            let allowed = rate * st.span_secs() + burst as f64;
            let passed = got(src) as f64;
            report.push(format!(
                "{class:8} {src:22} sent {:6} passed {passed:6} allowed {allowed:8.1} ({:.1}%)",
                st.sent,
                100.0 * passed / allowed
            ));
            assert!(
                st.sent as f64 > allowed * 1.5,
                "{class} {src}: offered too little: {st:?}"
            );
            assert!(
                passed <= allowed + 1.0,
                "{class} {src}: passed {passed} > allowed {allowed:.1} + 1\n{}",
                report.join("\n")
            );
            assert!(
                passed >= 0.97 * allowed,
                "{class} {src}: passed {passed} < 97% of {allowed:.1}\n{}",
                report.join("\n")
            );
        }
    }
    for v6 in [false, true] {
        let allowed_src = topo.host("intl").addr(v6, 9);
        assert_eq!(
            got(allowed_src),
            sent[&allowed_src].sent,
            "allowed source lost packets"
        );
        let denied_src = topo.host("deny").addr(v6, 9);
        assert!(sent[&denied_src].sent > 100);
        assert_eq!(got(denied_src), 0, "denied source got packets through");
    }
    println!("{}", report.join("\n"));

    // The daemon's own accounting, through the real CLI, must match the receivers.
    let (code, out, err) =
        trafficctl(&["--socket", socket.to_str().unwrap(), "counters", "--json"]);
    assert_eq!(code, 0, "trafficctl counters failed: {err}");
    let counters: CountersReport = serde_json::from_str(&out).expect("counters JSON");
    let class_received = |host: &str| -> u64 {
        [false, true]
            .iter()
            .map(|v6| got(topo.host(host).addr(*v6, 9)))
            .sum()
    };
    let class_sent = |host: &str| -> u64 {
        [false, true]
            .iter()
            .map(|v6| sent[&topo.host(host).addr(*v6, 9)].sent)
            .sum()
    };
    for (host, class, _, _) in LIMITED {
        let c = counters
            .class(class)
            .unwrap_or_else(|| panic!("no counters for {class}"));
        let recv = class_received(host);
        if class == "default" {
            // Unmatched sources also include anything else the links carry (e.g. MLD).
            assert!(
                c.passed.packets >= recv && c.passed.packets <= recv + 10,
                "{class}: counters {:?} vs received {recv}",
                c.passed
            );
        } else {
            assert_eq!(
                c.passed.packets, recv,
                "{class}: counters passed vs received"
            );
            assert_eq!(
                c.dropped.packets,
                class_sent(host) - recv,
                "{class}: counters dropped vs sent - received"
            );
        }
    }
    let internal = counters.class("internal").expect("internal counters");
    assert_eq!(internal.passed.packets, class_received("intl"));
    assert!(internal.reasons.iter().all(|r| r.reason == "allow"));
    let unclassified = counters
        .class("unclassified")
        .expect("deny rule without class is unclassified");
    let denied = unclassified
        .reasons
        .iter()
        .find(|r| r.reason == "deny")
        .expect("deny counter");
    assert_eq!(denied.packets, class_sent("deny"));

    // Both CPUs updated the shared buckets: the per-CPU pass counters of premium are
    // non-zero on each CPU that sent.
    if cpus > 1 {
        use aya::maps::{Map, MapData, PerCpuArray};
        let md = MapData::from_pin(pins.0.join(traffic_common::map_names::COUNTERS))
            .expect("pinned counters");
        let arr: PerCpuArray<_, traffic_common::Counter> =
            PerCpuArray::try_from(Map::PerCpuArray(md)).unwrap();
        let status: traffic_daemon::api::StatusReport = serde_json::from_str(
            &trafficctl(&["--socket", socket.to_str().unwrap(), "status", "--json"]).1,
        )
        .unwrap();
        let slot = status
            .classes
            .iter()
            .find(|c| c.name == "premium")
            .unwrap()
            .slot;
        let idx = traffic_common::counter_index(slot, traffic_common::Reason::Pass as u32, false);
        let per_cpu = arr.get(&idx, 0).unwrap();
        for cpu in 0..cpus {
            assert!(
                per_cpu[cpu].packets > 0,
                "CPU {cpu} passed no premium packets: {:?}",
                per_cpu.iter().map(|c| c.packets).collect::<Vec<_>>()
            );
        }
    }

    let status = daemon
        .terminate(Duration::from_secs(10))
        .expect("trafficd stops");
    assert!(
        status.success(),
        "trafficd exit status {status}\n{}",
        daemon.log_text()
    );
    for iface in topo.node_interfaces() {
        assert!(
            !topo.xdp_attached(&iface).unwrap(),
            "XDP still attached to {iface} after SIGTERM"
        );
    }
    assert!(!socket.exists(), "admin socket left behind");
}
