//! `cargo xtask demo`: a throwaway topology, trafficd enforcing `config/traffic.toml`, mixed
//! traffic from premium, basic, unknown, denied and internal clients, a live per-class
//! table every second, a final report against what the limits allow, and clean-up (also on
//! Ctrl-C).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use traffic_lab::{
    daemon::{DaemonProcess, admin_get},
    netns::online_cpus,
    topo::{HostSpec, SERVICE_V4, SERVICE_V6, Topology, unique_tag},
    udp::{FlowStats, UdpFlow, UdpSink, run_flows},
};

use crate::util;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C and SIGTERM stop the load; the guards then clean up.
pub fn install_interrupt_handler() {
    #[allow(unsafe_code)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

const PORT: u16 = 9000;

/// A demo client group: host, the class the shipped rules put it in, sources and rate.
struct Group {
    host: &'static str,
    class: &'static str,
    v4_sources: u32,
    v6_sources: u32,
    /// Offered packets per second per source.
    rate: f64,
}

const GROUPS: [Group; 5] = [
    Group { host: "prem", class: "premium", v4_sources: 1, v6_sources: 1, rate: 2600.0 },
    Group { host: "basic", class: "basic", v4_sources: 1, v6_sources: 1, rate: 800.0 },
    // The three IPv6 sources share a /64, so they share one bucket (aggregate_v6 = 64).
    Group { host: "unkn", class: "default", v4_sources: 3, v6_sources: 3, rate: 150.0 },
    Group { host: "deny", class: "denied", v4_sources: 1, v6_sources: 1, rate: 100.0 },
    Group { host: "intl", class: "internal", v4_sources: 1, v6_sources: 1, rate: 300.0 },
];

fn hosts() -> Vec<HostSpec> {
    let v6 = |a: u16, b: u16| (Ipv6Addr::new(0x2001, 0xdb8, a, b, 0, 0, 0, 0), 64);
    vec![
        HostSpec::new("prem", ([198, 18, 1, 0].into(), 24), v6(1, 0)),
        HostSpec::new("basic", ([198, 18, 2, 0].into(), 24), v6(2, 0)),
        HostSpec::new("unkn", ([198, 18, 200, 0].into(), 24), v6(0x200, 0)),
        HostSpec::new("deny", ([198, 18, 66, 0].into(), 24), v6(0x66, 0)),
        HostSpec::new("intl", ([198, 18, 0, 0].into(), 24), v6(0, 1)),
    ]
}

/// Per-source packet limit (rate, burst) of a class in the config, if it has one.
fn class_limit(cfg: &toml::Table, class: &str) -> Option<(f64, f64)> {
    let p = cfg.get("classes")?.get(class)?.get("packets")?;
    let p = p.as_array().and_then(|a| a.first()).unwrap_or(p);
    let rate = p.get("rate")?.as_float().or_else(|| p.get("rate")?.as_integer().map(|i| i as f64))?;
    let burst = p
        .get("burst")
        .and_then(|b| b.as_float().or_else(|| b.as_integer().map(|i| i as f64)))
        .unwrap_or(rate);
    Some((rate, burst))
}

/// Aggregation prefixes (v4, v6) of a class: sources in one prefix share a bucket.
fn class_aggregate(cfg: &toml::Table, class: &str) -> (u8, u8) {
    let c = cfg.get("classes").and_then(|c| c.get(class));
    let get = |k: &str, d: u8| c.and_then(|c| c.get(k)).and_then(toml::Value::as_integer).map_or(d, |v| v as u8);
    (get("aggregate_v4", 32), get("aggregate_v6", 64))
}

/// `ip` with every bit past `bits` cleared.
fn masked(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits.min(32))) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits.min(128))) };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// The shipped config with only the node-specific keys changed: interfaces, pin dir,
/// admin socket. Classes and rules are used as shipped.
fn demo_config(shipped: &Path, topo: &Topology, pins: &Path, socket: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(shipped).with_context(|| format!("read {}", shipped.display()))?;
    let mut cfg: toml::Table = toml::from_str(&text).context("parse config/traffic.toml")?;
    let daemon = cfg.entry("daemon").or_insert_with(|| toml::Table::new().into());
    let d = daemon.as_table_mut().context("[daemon] is not a table")?;
    d.insert("interfaces".into(), topo.node_interfaces().into_iter().map(toml::Value::from).collect::<Vec<_>>().into());
    d.insert("pin_dir".into(), pins.display().to_string().into());
    d.insert("summary_interval".into(), "5s".into());
    let admin = cfg.entry("admin").or_insert_with(|| toml::Table::new().into());
    let a = admin.as_table_mut().context("[admin] is not a table")?;
    a.insert("socket".into(), socket.display().to_string().into());
    a.insert("socket_group".into(), "".into());
    Ok(cfg)
}

/// Packets passed/dropped per class as the daemon counts them.
fn daemon_counters(socket: &Path) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok((200, body)) = admin_get(socket, "/v1/counters") else { return out };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else { return out };
    for c in v["classes"].as_array().into_iter().flatten() {
        let name = c["class"].as_str().unwrap_or("?").to_owned();
        let passed = c["passed"]["packets"].as_u64().unwrap_or(0);
        let mut dropped = c["dropped"]["packets"].as_u64().unwrap_or(0);
        // A deny rule without a class counts as unclassified; the demo calls it "denied".
        if name == "unclassified" {
            for r in c["reasons"].as_array().into_iter().flatten() {
                if r["reason"] == "deny" {
                    let n = r["packets"].as_u64().unwrap_or(0);
                    let e: &mut (u64, u64) = out.entry("denied".to_owned()).or_default();
                    e.1 += n;
                    dropped -= n.min(dropped);
                }
            }
        }
        let e = out.entry(name).or_default();
        e.0 += passed;
        e.1 += dropped;
    }
    out
}

pub fn run(bin_dir: &Path, duration: Duration) -> Result<()> {
    install_interrupt_handler();
    anyhow::ensure!(util::is_root(), "the demo creates network namespaces and loads XDP: run it as root");
    let tag = unique_tag();
    let tmp = std::env::temp_dir().join(format!("traffic-demo-{tag}"));
    std::fs::create_dir_all(&tmp)?;
    let pins = PathBuf::from(format!("/sys/fs/bpf/traffic-demo-{tag}"));
    let result = run_in(bin_dir, duration, &tag, &tmp, &pins);
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(bin_dir: &Path, duration: Duration, tag: &str, tmp: &Path, pins: &Path) -> Result<()> {
    println!("==> building the topology (namespaces trf{tag}-*)");
    let topo = Topology::build(tag, &hosts())?;
    let socket = tmp.join("admin.sock");
    let shipped = util::root().join("config/traffic.toml");
    let cfg = demo_config(&shipped, &topo, pins, &socket)?;
    let cfg_path = tmp.join("traffic.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
    println!("==> starting trafficd with {} (interfaces: {})", shipped.display(), topo.node_interfaces().join(", "));
    let mut daemon = DaemonProcess::start(&topo.node, &bin_dir.join("trafficd"), &cfg_path, &socket, &tmp.join("trafficd.log"), Duration::from_secs(30))?;
    let sink = UdpSink::start(&topo.node, PORT, 2)?;

    let cpus = online_cpus();
    let stop = Arc::new(AtomicBool::new(false));
    let mut jobs = Vec::new();
    for (gi, g) in GROUPS.iter().enumerate() {
        let host = topo.host(g.host);
        let progress = Arc::new(AtomicU64::new(0));
        let mut flows = Vec::new();
        for (v6, n) in [(false, g.v4_sources), (true, g.v6_sources)] {
            for i in 0..n {
                let src = host.addr(v6, 10 + i);
                let dst = if v6 { SocketAddr::new(IpAddr::V6(SERVICE_V6), PORT) } else { SocketAddr::new(IpAddr::V4(SERVICE_V4), PORT) };
                flows.push(UdpFlow {
                    src,
                    dst,
                    rate_pps: g.rate,
                    duration,
                    max_packets: (g.rate * duration.as_secs_f64()) as u64 + 1,
                    payload_len: 64,
                    cpu: Some((gi + flows.len()) % cpus),
                    progress: Some(progress.clone()),
                });
            }
        }
        jobs.push((g, flows, progress));
    }
    let limits: BTreeMap<&str, (f64, f64)> = GROUPS.iter().filter_map(|g| class_limit(&cfg, g.class).map(|l| (g.class, l))).collect();

    println!("==> {}s of load: premium and basic over their limits, six unknown sources, a denied and an internal client\n", duration.as_secs());
    let started = Instant::now();
    let sent: Vec<Vec<FlowStats>> = std::thread::scope(|s| -> Result<Vec<Vec<FlowStats>>> {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(g, flows, _)| {
                let ns = &topo.host(g.host).ns;
                let stop = &stop;
                s.spawn(move || run_flows(ns, flows, stop))
            })
            .collect();
        let mut last_offered: BTreeMap<&str, u64> = BTreeMap::new();
        let mut last_counts = daemon_counters(&socket);
        let mut tick = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            if interrupted() {
                stop.store(true, Ordering::Relaxed);
                println!("\n==> interrupted: stopping the load and cleaning up");
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            if tick.elapsed() < Duration::from_secs(1) {
                continue;
            }
            let dt = tick.elapsed().as_secs_f64();
            tick = Instant::now();
            let counts = daemon_counters(&socket);
            println!("t={:>4.0}s  {:<9} {:>10} {:>10} {:>10} {:>16}", started.elapsed().as_secs_f64(), "CLASS", "OFFERED/s", "PASSED/s", "DROPPED/s", "LIMIT/s/source");
            for (g, _, progress) in &jobs {
                let offered = progress.load(Ordering::Relaxed);
                let prev = last_offered.insert(g.class, offered).unwrap_or(0);
                let (p, d) = counts.get(g.class).copied().unwrap_or_default();
                let (lp, ld) = last_counts.get(g.class).copied().unwrap_or_default();
                let limit = match (g.class, limits.get(g.class)) {
                    ("denied", _) => "deny".to_owned(),
                    ("internal", _) => "allow".to_owned(),
                    (_, Some((r, _))) => format!("{r:.0}"),
                    _ => "-".to_owned(),
                };
                println!("         {:<9} {:>10.0} {:>10.0} {:>10.0} {:>16}", g.class, (offered - prev) as f64 / dt, (p - lp) as f64 / dt, (d - ld) as f64 / dt, limit);
            }
            last_counts = counts;
        }
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("sender panicked"))?).collect()
    })?;
    let received = sink.finish(Duration::from_secs(3));
    let counts = daemon_counters(&socket);

    println!("\n==> final report (per class; allowed = Σ over buckets of min(offered, rate·t + burst))");
    println!("{:<9} {:>8} {:>9} {:>9} {:>9} {:>9}  {}", "CLASS", "SOURCES", "OFFERED", "PASSED", "DROPPED", "ALLOWED", "VERDICT");
    let mut all_ok = true;
    for ((g, flows, _), stats) in jobs.iter().zip(&sent) {
        let offered: u64 = stats.iter().map(|s| s.sent).sum();
        let passed: u64 = flows.iter().map(|f| received.get(&f.src).copied().unwrap_or(0)).sum();
        let (_, dropped) = counts.get(g.class).copied().unwrap_or_default();
        let (allowed, ok) = match g.class {
            "denied" => (0.0, passed == 0),
            "internal" => (offered as f64, passed == offered),
            class => {
                let (rate, burst) = limits.get(class).copied().unwrap_or((f64::INFINITY, 0.0));
                // Sources in one aggregation prefix share a bucket (the unknown IPv6
                // sources sit in one /64 on purpose).
                let (p4, p6) = class_aggregate(&cfg, class);
                let mut buckets: BTreeMap<IpAddr, (FlowStats, u64)> = BTreeMap::new();
                for (f, s) in flows.iter().zip(stats) {
                    let key = masked(f.src, if f.src.is_ipv6() { p6 } else { p4 });
                    let e = buckets.entry(key).or_default();
                    e.0 = e.0.merge(s);
                    e.1 += received.get(&f.src).copied().unwrap_or(0);
                }
                let mut ok = true;
                let mut total = 0.0;
                for (s, got) in buckets.values() {
                    let allowed = (rate * s.span_secs() + burst).min(s.sent as f64);
                    total += allowed;
                    ok &= *got as f64 <= allowed + 1.0 && *got as f64 >= 0.97 * allowed;
                }
                (total, ok)
            }
        };
        all_ok &= ok;
        println!(
            "{:<9} {:>8} {:>9} {:>9} {:>9} {:>9.0}  {}",
            g.class,
            flows.len(),
            offered,
            passed,
            dropped,
            allowed,
            if ok { "ok: within the limit" } else { "OUT OF BOUNDS" }
        );
    }
    let status = daemon.terminate(Duration::from_secs(10))?;
    println!("\n==> trafficd stopped ({status}); namespaces, links and pins removed");
    if interrupted() {
        println!("(interrupted run: the report covers the part that ran)");
    } else {
        anyhow::ensure!(all_ok, "some class passed more (or less) than its limits allow; trafficd log: {}", daemon.log.display());
    }
    Ok(())
}
