//! Node pressure → throttle level → kernel limits → traffic, end to end.
//!
//! 1. Pressure fed through a source directory (the same parser reads files this test
//!    writes): the limit in the kernel map falls within one sampling interval of the level
//!    rising, the traffic from a client namespace follows, and both recover when it falls.
//! 2. Real CPU load (busy threads, bounded in time) raises the real CPU reading over a
//!    threshold the test sets, and the level rises.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::support::{PinDir, TempDir, poll, trafficctl, trafficd};
use aya::maps::{Array, Map, MapData};
use traffic_common::{ClassConfig, map_names};
use traffic_daemon::{api::StatusReport, policy::throttle::ThrottleStatus};
use traffic_testkit::{
    daemon::DaemonProcess,
    topo::{HostSpec, SERVICE_V4, Topology, unique_tag},
    udp::{UdpFlow, UdpSink, send_flow},
};

const PORT: u16 = 9000;
const RATE: f64 = 200.0;
const OFFERED: f64 = 320.0;
const INTERVAL_MS: u64 = 200;

fn psi(avg10_percent: f64) -> String {
    format!(
        "some avg10={avg10_percent:.2} avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
}

fn write_cpu(dir: &Path, percent: f64) {
    // Write then rename: the daemon never reads a half-written file.
    let tmp = dir.join("pressure/cpu.tmp");
    std::fs::write(&tmp, psi(percent)).unwrap();
    std::fs::rename(&tmp, dir.join("pressure/cpu")).unwrap();
}

fn premium_interval(pins: &Path, slot: u32) -> u64 {
    let md = MapData::from_pin(pins.join(map_names::CLASSES)).unwrap();
    let classes: Array<_, ClassConfig> = Array::try_from(Map::Array(md)).unwrap();
    classes.get(&slot, 0).unwrap().packets[0].interval
}

fn ctl<T: serde::de::DeserializeOwned>(socket: &Path, args: &[&str]) -> T {
    let mut a = vec!["--socket", socket.to_str().unwrap(), "--json"];
    a.extend_from_slice(args);
    let (code, out, err) = trafficctl(&a);
    assert_eq!(code, 0, "trafficctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

fn config(topo: &Topology, pins: &PinDir, socket: &Path, pressure: &str) -> String {
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
{pressure}
[classes.default]
packets = {{ rate = 1000 }}
[classes.premium]
priority = "normal"
packets = {{ rate = {RATE}, burst = 20 }}
[[rules]]
cidr = "198.18.1.0/24"
class = "premium"
"#,
        iface = topo.hosts[0].node_if,
        pins = pins.0.display(),
        socket = socket.display(),
    )
}

fn topology() -> Topology {
    Topology::build(
        &unique_tag(),
        &[HostSpec::new(
            "prem",
            ([198, 18, 1, 0].into(), 24),
            (std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 64),
        )],
    )
    .expect("topology")
}

/// Datagrams received from `src` during `window`.
fn rate_over(sink: &UdpSink, src: IpAddr, window: Duration) -> f64 {
    let before = sink.snapshot().get(&src).copied().unwrap_or(0);
    let t = Instant::now();
    std::thread::sleep(window);
    let after = sink.snapshot().get(&src).copied().unwrap_or(0);
    (after - before) as f64 / t.elapsed().as_secs_f64()
}

pub fn pressure_from_a_source_directory_rescales_kernel_limits_and_traffic() {
    let topo = topology();
    let pins = PinDir::new("throttle");
    let tmp = TempDir::new("throttle");
    let source = tmp.path("proc");
    std::fs::create_dir_all(source.join("pressure")).unwrap();
    write_cpu(&source, 0.0);
    for r in ["memory", "io"] {
        std::fs::write(source.join("pressure").join(r), psi(0.0)).unwrap();
    }
    let socket = tmp.path("admin.sock");
    let pressure = format!(
        "[pressure]\nroot = \"{}\"\ninterval = \"{INTERVAL_MS}ms\"\n[pressure.signal]\ncpu = \"psi_some_avg10\"\nmemory = \"off\"\nio = \"off\"\n[throttle]\nmin_dwell = \"1s\"\n",
        source.display()
    );
    let cfg = tmp.path("traffic.toml");
    std::fs::write(&cfg, config(&topo, &pins, &socket, &pressure)).unwrap();
    let mut d = DaemonProcess::start(
        &topo.node,
        trafficd(),
        &cfg,
        &socket,
        &tmp.path("d.log"),
        Duration::from_secs(20),
    )
    .unwrap();
    let status: StatusReport = ctl(&socket, &["status"]);
    let slot = status
        .classes
        .iter()
        .find(|c| c.name == "premium")
        .unwrap()
        .slot;
    let base_interval = premium_interval(&pins.0, slot);
    assert_eq!(base_interval, (1e9 / RATE) as u64);

    // A steady client over the limit for the whole test (bounded in time and packets).
    let sink = UdpSink::start(&topo.node, PORT, 1).unwrap();
    let src = IpAddr::V4(topo.hosts[0].v4(5));
    let stop = Arc::new(AtomicBool::new(false));
    let flow = UdpFlow {
        src,
        dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), PORT),
        rate_pps: OFFERED,
        duration: Duration::from_secs(30),
        max_packets: (OFFERED * 30.0) as u64,
        payload_len: 32,
        cpu: None,
        progress: None,
    };
    let sender = {
        let stop = stop.clone();
        topo.hosts[0]
            .ns
            .spawn(move || send_flow(&flow, &stop))
            .unwrap()
    };
    let guard = StopOnDrop(stop.clone());

    std::thread::sleep(Duration::from_millis(300)); // let the burst pass
    let before = rate_over(&sink, src, Duration::from_secs(1));

    // CPU pressure 85 %: level HIGH (0.8 ≤ 0.85 < 0.9), multiplier 0.4 for priority normal.
    let t0 = Instant::now();
    write_cpu(&source, 85.0);
    let high_interval = (1e9 / (RATE * 0.4)) as u64;
    poll(
        "the HIGH limit in the kernel map",
        Duration::from_secs(5),
        || (premium_interval(&pins.0, slot) == high_interval).then_some(()),
    );
    let to_map = t0.elapsed();
    let t1 = Instant::now();
    let throttle: ThrottleStatus = ctl(&socket, &["throttle"]);
    assert_eq!(throttle.level.as_str(), "high");
    // Traffic follows: the first 100 ms window whose rate is within 25 % of the new limit.
    let mut last = sink.snapshot().get(&src).copied().unwrap_or(0);
    let to_traffic = poll("traffic at the HIGH limit", Duration::from_secs(3), || {
        std::thread::sleep(Duration::from_millis(100));
        let now = sink.snapshot().get(&src).copied().unwrap_or(0);
        let r = (now - last) as f64 / 0.1;
        last = now;
        (r < RATE * 0.4 * 1.25).then(|| t1.elapsed())
    });
    let during = rate_over(&sink, src, Duration::from_secs(1));

    // Pressure gone: down one level per min_dwell (1 s) to NONE, limits back.
    let t2 = Instant::now();
    write_cpu(&source, 0.0);
    poll(
        "the base limit in the kernel map",
        Duration::from_secs(8),
        || (premium_interval(&pins.0, slot) == base_interval).then_some(()),
    );
    let recovery = t2.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let after = rate_over(&sink, src, Duration::from_secs(1));

    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    drop(guard);
    let status: StatusReport = ctl(&socket, &["status"]);
    let t = status.throttle.expect("throttle in status");
    println!(
        "pressure→kernel map {:.0} ms (sampling interval {INTERVAL_MS} ms); map→traffic {:.0} ms; recovery to NONE {:.1} s; rates before {before:.0}, HIGH {during:.0}, after {after:.0} pkt/s; {} transitions; {} buckets rescaled last",
        to_map.as_secs_f64() * 1e3,
        to_traffic.as_secs_f64() * 1e3,
        recovery.as_secs_f64(),
        t.transitions,
        status.last_rescale_buckets,
    );
    assert!(
        to_map <= Duration::from_millis(INTERVAL_MS + 150),
        "limit reached the map {to_map:?} after the pressure changed"
    );
    assert!((before - RATE).abs() < RATE * 0.15, "rate before: {before}");
    assert!(
        (during - RATE * 0.4).abs() < RATE * 0.4 * 0.2,
        "rate at HIGH: {during}"
    );
    assert!((after - RATE).abs() < RATE * 0.15, "rate after: {after}");
    // none → high, then high → medium → low → none.
    assert_eq!(t.transitions, 4, "{t:?}");
    assert_eq!(t.level.as_str(), "none");
    // One level per min_dwell: HIGH was held long enough to step down at once, then two
    // more dwells to NONE.
    assert!(
        recovery >= Duration::from_secs(2),
        "stepped down faster than min_dwell allows: {recovery:?}"
    );
    assert!(
        d.log_text().contains("throttle raised"),
        "no log line for the level change"
    );
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// CPU utilisation over `d`, from /proc/stat.
fn cpu_utilisation(d: Duration) -> f64 {
    let read = || -> (u64, u64) {
        let s = std::fs::read_to_string("/proc/stat").unwrap();
        let v: Vec<u64> = s
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = v[3] + v.get(4).copied().unwrap_or(0);
        (v.iter().take(8).sum(), idle)
    };
    let (t0, i0) = read();
    std::thread::sleep(d);
    let (t1, i1) = read();
    1.0 - (i1 - i0) as f64 / (t1 - t0).max(1) as f64
}

pub fn real_cpu_load_raises_the_level() {
    let idle = cpu_utilisation(Duration::from_millis(500));
    assert!(
        idle < 0.8,
        "the machine is too busy ({idle:.2}) to tell our load from the rest"
    );
    let topo = topology();
    let pins = PinDir::new("cpuload");
    let tmp = TempDir::new("cpuload");
    let socket = tmp.path("admin.sock");
    // LOW well above what the idle machine reads (busy threads on every CPU read ~1.0), so
    // the daemon's own start-up (namespaces, program load) cannot reach it.
    let low = (idle + 0.25).min(0.8);
    let pressure = format!(
        "[pressure]\ninterval = \"250ms\"\n[pressure.signal]\ncpu = \"utilisation\"\nmemory = \"off\"\nio = \"off\"\n[throttle.thresholds]\ncpu = {{ low = {low:.2}, medium = {:.2}, high = {:.2}, critical = {:.2} }}\n",
        low + 0.05,
        low + 0.1,
        low + 0.15
    );
    let cfg = tmp.path("traffic.toml");
    std::fs::write(&cfg, config(&topo, &pins, &socket, &pressure)).unwrap();
    let mut d = DaemonProcess::start(
        &topo.node,
        trafficd(),
        &cfg,
        &socket,
        &tmp.path("d.log"),
        Duration::from_secs(20),
    )
    .unwrap();
    // At rest the level must be (or, after the start-up's own CPU and the minimum dwell,
    // return to) NONE before any load is added: the rise below is then ours.
    poll(
        "the level to be none before any load",
        Duration::from_secs(20),
        || {
            let t: ThrottleStatus = ctl(&socket, &["throttle"]);
            (t.level.as_str() == "none").then_some(())
        },
    );

    // Busy threads on every CPU, bounded to 10 s.
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..std::thread::available_parallelism().map_or(2, |n| n.get()))
        .map(|cpu| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                traffic_testkit::netns::pin_to_cpu(cpu);
                let end = Instant::now() + Duration::from_secs(10);
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        })
        .collect();
    let guard = StopOnDrop(stop.clone());
    let t0 = Instant::now();
    let raised: ThrottleStatus = poll(
        "the level to rise under CPU load",
        Duration::from_secs(8),
        || {
            let t: ThrottleStatus = ctl(&socket, &["throttle"]);
            (t.level.as_str() != "none").then_some(t)
        },
    );
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        let _ = b.join();
    }
    drop(guard);
    let cpu = raised
        .resources
        .iter()
        .find(|r| r.resource.as_str() == "cpu")
        .unwrap();
    println!(
        "idle {idle:.2}; LOW at {low:.2}; level {} after {:.2} s at cpu {:?}",
        raised.level,
        took.as_secs_f64(),
        cpu.ratio
    );
    assert!(cpu.ratio.unwrap_or(0.0) >= low);
    let limits: traffic_daemon::api::report::LimitsReport = ctl(&socket, &["limits"]);
    let premium = limits
        .classes
        .iter()
        .find(|c| c.class == "premium")
        .unwrap();
    assert!(
        premium.factor < 1.0,
        "limits not tightened: factor {}",
        premium.factor
    );
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
}
