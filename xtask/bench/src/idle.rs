//! The `idle` suite: what trafficd costs when nothing happens (issue 12 item 10, issue 16's
//! idle and memory rows).
//!
//! The release `trafficd` next to this binary runs the shipped `config/traffic.toml` (its
//! interface, pin directory and admin socket replaced by the run's own) in a namespace of
//! its own. After a settling period (start-up, the first samples), its CPU time is read from
//! `/proc/PID/task/*/schedstat` (nanoseconds on CPU, per thread, summed) over `reps` windows
//! of 12 s each — 5 × 12 s = issue 16's 60 s on a full run; the figure is the share of one
//! core. Over the same windows a reference thread of this process does the least a pressure
//! watcher does (see [`Reference`]); the daemon's CPU over the reference's, window by window,
//! is the same-run ratio. Then the daemon's RSS (`VmRSS`) idle, and again while 3,000
//! connections to its metrics port are held open.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use traffic_loadgen::stats::{BenchReport as Report, Bound};
use traffic_testkit::{
    daemon::DaemonProcess,
    topo::{HostSpec, Topology, unique_tag},
};

use crate::args::Plan;

/// The shipped configuration, as installed.
const SHIPPED: &str = include_str!("../../../config/traffic.toml");
/// Its metrics listener (inside the run's namespace).
const METRICS: &str = "127.0.0.1:10187";
/// Connections held open to the metrics port for the memory figure.
const HELD: usize = 3_000;

/// The shipped file with this run's interface, pin directory and admin socket.
fn config(iface: &str, pins: &str, socket: &str) -> Result<String> {
    let mut text = SHIPPED.to_owned();
    for (from, to) in [
        (
            "interfaces = [\"eth0\"]",
            format!("interfaces = [\"{iface}\"]"),
        ),
        (
            "pin_dir = \"/sys/fs/bpf/traffic\"",
            format!("pin_dir = \"{pins}\""),
        ),
        (
            "socket = \"/run/traffic/admin.sock\"",
            format!("socket = \"{socket}\""),
        ),
    ] {
        if !text.contains(from) {
            bail!("config/traffic.toml no longer has `{from}`: update the idle bench");
        }
        text = text.replacen(from, &to, 1);
    }
    Ok(text)
}

/// Nanoseconds on CPU, and times put on a CPU (context switches in, voluntary or not: the
/// wake-ups), summed over every live thread of `pid`.
fn cpu_ns(pid: u32) -> Result<(u64, u64)> {
    let (mut total, mut switches) = (0, 0);
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended between the listing and the read counts nothing more.
        if let Some((on_cpu, runs)) = schedstat(&t?.path().join("schedstat"))? {
            total += on_cpu;
            switches += runs;
        }
    }
    Ok((total, switches))
}

/// One thread's `schedstat`: time on CPU (ns) and times run on a CPU; `None` if the thread
/// is gone.
fn schedstat(path: &Path) -> Result<Option<(u64, u64)>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    // schedstat: time on CPU (ns), time waiting to run (ns), times run on a CPU.
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parse {}", path.display()))?;
    let [on_cpu, _, runs] = fields[..] else {
        bail!("{}: {text:?}", path.display());
    };
    Ok(Some((on_cpu, runs)))
}

/// The files the daemon's pressure sample reads under `/proc`.
const PRESSURE_FILES: [&str; 6] = [
    "/proc/pressure/cpu",
    "/proc/pressure/memory",
    "/proc/pressure/io",
    "/proc/stat",
    "/proc/meminfo",
    "/proc/diskstats",
];

/// The idle figure's same-run reference: a thread that does the least a pressure watcher
/// does — once a second it opens, reads and closes the files the daemon samples, and
/// sleeps. On this VM what a wake-up costs moves several-fold between hours (a vCPU that
/// idled finds its caches cold), for any process; the daemon's CPU over the reference's,
/// window by window, is comparable across runs where the absolute figure is not. The target
/// stays on the absolute figure.
struct Reference {
    stop: Arc<AtomicBool>,
    schedstat: PathBuf,
    thread: JoinHandle<()>,
}

impl Reference {
    fn start() -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("idle-reference".into())
            .spawn(move || {
                // "PID/task/TID": this thread's own schedstat.
                let _ = tx.send(std::fs::read_link("/proc/thread-self"));
                let mut buf = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    for f in PRESSURE_FILES {
                        if let Ok(mut file) = std::fs::File::open(f) {
                            buf.clear();
                            let _ = file.read_to_end(&mut buf);
                        }
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })?;
        let me = rx
            .recv()
            .context("the reference thread did not start")?
            .context("read /proc/thread-self")?;
        Ok(Self {
            stop,
            schedstat: Path::new("/proc").join(me).join("schedstat"),
            thread,
        })
    }

    fn cpu_ns(&self) -> Result<u64> {
        Ok(schedstat(&self.schedstat)?
            .context("the reference thread ended")?
            .0)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// `VmRSS` of `pid`, in MB (10⁶ bytes).
fn rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024.0 / 1e6)
}

/// The release trafficd built next to this binary (`cargo xtask bench` builds it).
fn trafficd() -> Result<PathBuf> {
    let exe = std::env::current_exe()?.with_file_name("trafficd");
    if !exe.exists() {
        bail!(
            "{} is missing: `cargo build --release -p traffic-daemon --bin trafficd` (cargo xtask bench does)",
            exe.display()
        );
    }
    Ok(exe)
}

pub(crate) fn run(plan: &Plan) -> Result<Report> {
    let mut report = Report::new("idle", "trafficd idle: CPU and memory, shipped config");
    let topo = Topology::build(
        &unique_tag(),
        &[HostSpec::new(
            "idle",
            ([198, 18, 16, 0].into(), 24),
            (
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 16, 0, 0, 0, 0, 0),
                64,
            ),
        )],
    )?;
    let dir = std::env::temp_dir().join(format!("trfbench-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pins = format!("/sys/fs/bpf/trfbench-{}-idle", std::process::id());
    let socket = dir.join("admin.sock");
    let config_path = dir.join("traffic.toml");
    std::fs::write(
        &config_path,
        config(&topo.hosts[0].node_if, &pins, &socket.display().to_string())?,
    )?;
    let result = measure(plan, &topo, &config_path, &socket, &dir, &mut report);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&pins);
    result?;
    Ok(report)
}

fn measure(
    plan: &Plan,
    topo: &Topology,
    config: &std::path::Path,
    socket: &std::path::Path,
    dir: &std::path::Path,
    report: &mut Report,
) -> Result<()> {
    let mut d = DaemonProcess::start(
        &topo.node,
        &trafficd()?,
        config,
        socket,
        &dir.join("trafficd.log"),
        Duration::from_secs(20),
    )?;
    let pid = d.pid().context("trafficd has no PID")?;
    // Start-up (load, attach, the first pressure samples) is not idle.
    std::thread::sleep(Duration::from_secs(if plan.quick { 1 } else { 3 }));
    idle_cpu(plan, pid, report)?;
    held_rss(topo, pid, report)?;
    targets(report);
    d.terminate(Duration::from_secs(10))?;
    Ok(())
}

/// CPU time over `plan.reps` idle windows, as a share of one core. Five full windows are
/// the 60 s of issue 16's measure.
fn idle_cpu(plan: &Plan, pid: u32, report: &mut Report) -> Result<()> {
    let window = if plan.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(12)
    };
    let (mut cpu, mut wakeups, mut reference) = (Vec::new(), Vec::new(), Vec::new());
    let refs = Reference::start()?;
    let measured = (|| -> Result<()> {
        for _ in 0..plan.reps {
            let (t0, (c0, r0), f0) = (Instant::now(), cpu_ns(pid)?, refs.cpu_ns()?);
            std::thread::sleep(window);
            let (t1, (c1, r1), f1) = (Instant::now(), cpu_ns(pid)?, refs.cpu_ns()?);
            let span = (t1 - t0).as_secs_f64();
            cpu.push((c1 - c0) as f64 / span / 1e9 * 100.0);
            wakeups.push((r1 - r0) as f64 / span);
            reference.push((f1 - f0) as f64 / span / 1e9 * 100.0);
        }
        Ok(())
    })();
    refs.stop();
    measured?;
    let ratio: Vec<f64> = cpu
        .iter()
        .zip(&reference)
        .map(|(d, r)| d / r.max(1e-6))
        .collect();
    println!(
        "idle: {} windows of {window:?}: {cpu:.3?} % of a core, {wakeups:.1?} wake-ups/s; \
         reference {reference:.3?} %, ratio {ratio:.1?}",
        plan.reps
    );
    report.figure(
        "idle.cpu_percent",
        "%",
        "CPU time of trafficd over an idle window, shipped config, share of one core",
        cpu,
    );
    report.figure(
        "idle.wakeups_per_second",
        "/s",
        "times a thread of trafficd was put on a CPU, per second of an idle window \
         (what the timers cost, whatever this machine charges per wake-up)",
        wakeups,
    );
    report.figure(
        "reference.cpu_percent",
        "%",
        "CPU time of the reference thread over the same window (once a second: open, read \
         and close the six /proc files the daemon samples), share of one core",
        reference,
    );
    report.figure(
        "idle.cpu/reference",
        "ratio",
        "the daemon's idle CPU over the reference's, window by window (context, no target)",
        ratio,
    );
    report.meta("idle_window_seconds", window.as_secs_f64());
    Ok(())
}

/// RSS idle, then with `HELD` metrics connections open (and a scrape on top).
fn held_rss(topo: &Topology, pid: u32, report: &mut Report) -> Result<()> {
    let idle_rss = rss_mb(pid)?;
    let addr: SocketAddr = METRICS.parse()?;
    let held = topo.node.run(move || {
        (0..HELD)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
            .collect::<Vec<_>>()
    })?;
    let connected = held.len();
    // A scrape on top of the held connections: the daemon must still answer.
    let scrape = topo.node.run(move || -> std::io::Result<usize> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut body)?;
        Ok(body.len())
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let held_rss = rss_mb(pid)?;
    drop(held);
    println!(
        "idle: RSS {idle_rss:.1} MB idle, {held_rss:.1} MB with {connected} metrics connections held (a scrape then: {:?} bytes)",
        scrape.as_ref().ok()
    );
    report.figure(
        "idle.rss_mb",
        "MB",
        "VmRSS of idle trafficd",
        vec![idle_rss],
    );
    report.figure(
        "held.rss_mb",
        "MB",
        "VmRSS of trafficd with 3,000 connections to its metrics port held open",
        vec![held_rss],
    );
    report.meta("held_connections", connected);
    Ok(())
}

fn targets(report: &mut Report) {
    report.target(
        "idle daemon, shipped config: ≤ 0.5 % of a core",
        "idle.cpu_percent",
        Bound::AtMost(0.5),
        None,
    );
    report.target(
        "idle daemon RSS ≤ 30 MB",
        "idle.rss_mb",
        Bound::AtMost(30.0),
        None,
    );
    report.target(
        "RSS with 3,000 held metrics connections ≤ 30 MB",
        "held.rss_mb",
        Bound::AtMost(30.0),
        None,
    );
}
