//! Issue 13: suggested limits. Two classes of sources at designed rates (20 and 80
//! datagrams a second each) through the real daemon; `trafficctl suggest` lands within
//! ±20 % of rate × headroom, prints a TOML snippet that parses, and says which classes it
//! could not observe.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use crate::support::{PinDir, TempDir, trafficctl, trafficd};
use traffic_daemon::policy::baseline::suggest::SuggestReport;
use traffic_testkit::{
    daemon::DaemonProcess,
    topo::{HostSpec, SERVICE_V4, Topology, unique_tag},
    udp::{UdpFlow, UdpSink, run_flows},
};

const PORT: u16 = 9200;
/// Sources per class, and their designed rates (datagrams a second).
const SOURCES: u32 = 24;
const SLOW_PPS: f64 = 20.0;
const FAST_PPS: f64 = 80.0;
/// How long the load runs: two sustained windows (5 s) and some.
const LOAD: Duration = Duration::from_secs(13);
const HEADROOM: f64 = 2.0;

fn config(iface: &str, pins: &Path, socket: &str) -> String {
    format!(
        r#"
[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"
mode = "monitor"
[admin]
socket = "{socket}"
socket_group = ""
[metrics]
enabled = false
[pressure.signal]
cpu = "off"
memory = "off"
io = "off"
[baseline]
window = "5s"
[classes.default]
[classes.slow]
packets = {{ rate = 5, burst = 5 }}
[classes.fast]
packets = {{ rate = 5, burst = 5 }}
[[rules]]
cidr = "198.18.43.0/26"
class = "slow"
[[rules]]
cidr = "198.18.43.64/26"
class = "fast"
"#,
        pins = pins.display(),
    )
}

fn within(got: u64, want: f64, what: &str) {
    let ratio = got as f64 / want;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "{what}: {got} is not within ±20 % of {want}"
    );
}

pub fn suggestions_land_within_twenty_percent_of_the_designed_rates() {
    let topo = Topology::build(
        &unique_tag(),
        &[HostSpec::new(
            "sugg",
            ([198, 18, 43, 0].into(), 24),
            (
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x43, 0, 0, 0, 0, 0),
                64,
            ),
        )],
    )
    .expect("topology");
    let pins = PinDir::new("sugg");
    let tmp = TempDir::new("sugg");
    let socket = tmp.path("admin.sock").display().to_string();
    let main = tmp.path("traffic.toml");
    std::fs::write(&main, config(&topo.hosts[0].node_if, &pins.0, &socket)).unwrap();
    let _d = DaemonProcess::start(
        &topo.node,
        trafficd(),
        &main,
        Path::new(&socket),
        &tmp.path("trafficd.log"),
        Duration::from_secs(20),
    )
    .expect("trafficd starts");

    // Monitor mode: nothing is dropped, every source keeps its designed rate.
    let host = &topo.hosts[0];
    let flow = |i: u32, pps: f64| UdpFlow {
        src: host.addr(false, i),
        dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), PORT),
        rate_pps: pps,
        duration: LOAD,
        max_packets: (pps * LOAD.as_secs_f64()) as u64,
        payload_len: 100,
        cpu: None,
        progress: None,
    };
    let flows: Vec<_> = (1..=SOURCES)
        .map(|i| flow(i, SLOW_PPS))
        .chain((65..65 + SOURCES).map(|i| flow(i, FAST_PPS)))
        .collect();
    let sink = UdpSink::start(&topo.node, PORT, 1).expect("sink");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = run_flows(&host.ns, &flows, &stop).expect("flows");
    let _ = sink.finish(Duration::from_secs(1));
    assert!(sent.iter().all(|s| s.send_errors == 0), "{sent:?}");

    let args = [
        "--socket",
        socket.as_str(),
        "-o",
        "json",
        "suggest",
        "--quantile",
        "0.5",
    ];
    let (code, out, err) = trafficctl(&args);
    assert_eq!(code, 0, "suggest: {err}");
    let r: SuggestReport = serde_json::from_str(&out).unwrap();
    assert!(r.observed_seconds >= 10.0, "{r:?}");
    for (class, pps) in [("slow", SLOW_PPS), ("fast", FAST_PPS)] {
        let c = r.classes.iter().find(|c| c.class == class).unwrap();
        assert_eq!(c.sources, u64::from(SOURCES), "{class}: {c:?}");
        let p = c
            .packets
            .unwrap_or_else(|| panic!("{class}: no suggestion: {c:?}"));
        within(p.rate, pps * HEADROOM, &format!("{class} rate"));
        within(p.burst, pps * HEADROOM, &format!("{class} burst"));
        // Frames of 100 bytes of payload + 8 + 20 + 14 headers.
        let b = c.bytes.unwrap();
        within(
            b.rate,
            pps * 142.0 * HEADROOM,
            &format!("{class} byte rate"),
        );
        assert_eq!(c.would_limit, 0, "{class}: headroom 2 limits nobody: {c:?}");
    }
    let default = r.classes.iter().find(|c| c.class == "default").unwrap();
    assert!(default.packets.is_none());
    assert!(
        default
            .note
            .as_deref()
            .unwrap()
            .contains("no per-source limits")
    );

    // Without headroom, at the median, the slower half of nobody but the jitter is over:
    // at headroom 1 the fast class's suggestion limits no slow source, and the table form
    // is TOML that parses, one class asked for.
    let args = [
        "--socket",
        socket.as_str(),
        "suggest",
        "--class",
        "fast",
        "--headroom",
        "1",
    ];
    let (code, out, err) = trafficctl(&args);
    assert_eq!(code, 0, "suggest --class fast: {err}");
    let v: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let rate = v["classes"]["fast"]["packets"]["rate"]
        .as_integer()
        .unwrap() as u64;
    within(rate, FAST_PPS, "fast rate at headroom 1");
    assert!(v["classes"].get("slow").is_none(), "{out}");

    // Hostile requests: an unknown class, an absurd quantile.
    let (code, _, err) = trafficctl(&["--socket", socket.as_str(), "suggest", "--class", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("nope"), "{err}");
    let (code, _, err) = trafficctl(&["--socket", socket.as_str(), "suggest", "--quantile", "7"]);
    assert_ne!(code, 0);
    assert!(err.contains("quantile"), "{err}");
}
