//! `cargo xtask demo [--profile NAME]`: trafficd enforcing the shipped `config/traffic.toml`
//! in a throwaway topology, driven by the load generator of [`crate::load`].
//!
//! Without `--profile` it tells the story, end to end, in about two minutes:
//!
//! 1. **normal traffic** — premium, basic and guest clients under their limits, HTTP to the
//!    `web` upstream and echo to `api` (profile `normal`);
//! 2. **attack** — 2,000 attacker addresses flood UDP (the attacker of profile `burst`):
//!    each source is held to its own limit, premium and basic keep their rates;
//! 3. **web fails** — the web service stops listening; its breaker opens and the XDP gate
//!    answers new connections with a RST: clients fail fast;
//! 4. **web recovers** — it listens again; reset timeout, half-open trials, closed;
//! 5. **CPU pressure** — busy threads (niced, bounded) raise the node's real CPU pressure
//!    step by step: the throttle level rises and the limits tighten by class priority;
//! 6. **pressure eases** — the load stops; the level steps down to none.
//!
//! With `--profile NAME` it runs `config/profiles/NAME.toml` alone. Either way: a live view
//! every second, a final report per class (against what the limits allowed) and per
//! upstream, and `target/demo/NAME.svg` (passed and dropped per class over time with level
//! changes and breaker transitions marked) with the per-second data in `NAME.json`.
//! Namespaces, pins, the daemon and every thread are cleaned up, also on Ctrl-C.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use traffic_testkit::{
    daemon::DaemonProcess,
    netns::{online_cpus, pin_to_cpu},
    topo::{Topology, unique_tag},
};

use crate::{
    admin, chart,
    ideal::Verdict,
    load::{self, ALLOWED_NOTE, ClientLinks, Generator, Report, Second},
    profile::{self, ClientClass, Profile},
    services::Behaviour,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C and SIGTERM stop the load; the guards then clean up.
fn install_interrupt_handler() {
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Scratch directory and pin directory of one run, removed on drop.
struct Scratch {
    tmp: PathBuf,
    pins: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// The shipped config with only the node-specific keys changed: interfaces, pin dir, admin
/// socket (and its group, which a demo machine lacks). Classes, rules, upstreams, breakers
/// and the throttle stay as shipped. With `pressure_off`, the node's pressure signals are
/// switched off so the machine's load cannot rescale the limits under test.
fn derived_config(
    shipped: &Path,
    topo: &Topology,
    pins: &Path,
    socket: &Path,
    pressure_off: bool,
) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(shipped).with_context(|| format!("read {}", shipped.display()))?;
    let mut cfg: toml::Table =
        toml::from_str(&text).with_context(|| format!("parse {}", shipped.display()))?;
    let table = |cfg: &mut toml::Table, k: &str| -> Result<toml::Table> {
        Ok(cfg
            .remove(k)
            .unwrap_or_else(|| toml::Table::new().into())
            .as_table()
            .with_context(|| format!("[{k}] is not a table"))?
            .clone())
    };
    let mut d = table(&mut cfg, "daemon")?;
    d.insert(
        "interfaces".into(),
        topo.node_interfaces()
            .into_iter()
            .map(toml::Value::from)
            .collect::<Vec<_>>()
            .into(),
    );
    d.insert("pin_dir".into(), pins.display().to_string().into());
    cfg.insert("daemon".into(), d.into());
    let mut a = table(&mut cfg, "admin")?;
    a.insert("socket".into(), socket.display().to_string().into());
    a.insert("socket_group".into(), "".into());
    cfg.insert("admin".into(), a.into());
    if pressure_off {
        let mut p = table(&mut cfg, "pressure")?;
        let mut s = toml::Table::new();
        for r in ["cpu", "memory", "io"] {
            s.insert(r.into(), "off".into());
        }
        p.insert("signal".into(), s.into());
        cfg.insert("pressure".into(), p.into());
    }
    Ok(cfg)
}

/// The node, the client hosts, trafficd. Built and torn down around `f`.
fn with_lab<T>(
    bin_dir: &Path,
    pressure_off: bool,
    links: ClientLinks,
    f: impl FnOnce(&mut Generator<'_>) -> Result<T>,
) -> Result<T> {
    let tag = unique_tag();
    let scratch = Scratch {
        tmp: std::env::temp_dir().join(format!("traffic-demo-{tag}")),
        pins: PathBuf::from(format!("/sys/fs/bpf/traffic-demo-{tag}")),
    };
    std::fs::create_dir_all(&scratch.tmp)?;
    println!("==> topology: node + client hosts per class (namespaces trf{tag}-*)");
    let topo = Topology::build(&tag, &load::host_specs())?;
    let socket = scratch.tmp.join("admin.sock");
    let shipped = crate::workspace_root().join("config/traffic.toml");
    let cfg = derived_config(&shipped, &topo, &scratch.pins, &socket, pressure_off)?;
    let cfg_path = scratch.tmp.join("traffic.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
    let mut lab = Generator::new(&topo, &cfg, &socket, links)?;
    lab.start_services()?;
    println!(
        "==> trafficd with {}{} (interfaces {})",
        shipped.display(),
        if pressure_off {
            ", pressure signals off"
        } else {
            ""
        },
        topo.node_interfaces().join(", ")
    );
    let started = Instant::now();
    let mut daemon = DaemonProcess::start(
        &topo.node,
        &bin_dir.join("trafficd"),
        &cfg_path,
        &socket,
        &scratch.tmp.join("trafficd.log"),
        Duration::from_secs(30),
    )?;
    lab.set_daemon_started(started);
    // Every upstream probed healthy before the load starts (polled, with a deadline).
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let c = admin::get_json(&socket, "/v1/circuits")
            .map(|v| admin::circuits(&v))
            .unwrap_or_default();
        if !c.is_empty() && c.iter().all(|u| u.state == "closed") {
            break;
        }
        if Instant::now() > end || interrupted() {
            bail!(
                "upstreams not healthy before the load: {c:?}\n{}",
                daemon.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = f(&mut lab);
    drop(lab);
    let status = daemon.terminate(Duration::from_secs(10));
    let log = daemon.log.clone();
    let keep_log = result.is_err();
    drop(topo);
    if keep_log {
        let kept = std::env::temp_dir().join(format!("trafficd-demo-{tag}.log"));
        let _ = std::fs::copy(&log, &kept);
        eprintln!("(trafficd log kept at {})", kept.display());
    }
    drop(scratch);
    match status {
        Ok(s) => println!("==> trafficd stopped ({s}); namespaces, links and pins removed"),
        Err(e) => eprintln!("==> trafficd: {e:#}; namespaces, links and pins removed"),
    }
    result
}

// ---------------------------------------------------------------------------------------
// Live view

struct Live {
    tty: bool,
    drawn: usize,
    /// Per client class: what the rules make of it (shown) and the daemon class.
    verdicts: Vec<(ClientClass, String, String)>,
    narration: String,
}

fn per_s(n: u64, dt: f64) -> String {
    format!("{:.0}", n as f64 / dt.max(1e-3))
}

impl Live {
    fn new(lab: &Generator<'_>) -> Self {
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: isatty has no preconditions.
        let tty =
            unsafe { libc::isatty(1) } == 1 && std::env::var_os("TRAFFIC_DEMO_PLAIN").is_none();
        let verdicts = ClientClass::ALL
            .iter()
            .map(|c| {
                let v = lab.verdict_of(*c);
                let shown = match &v {
                    Verdict::Limit(k) => k.clone(),
                    Verdict::Allow(_) => "allow".into(),
                    Verdict::Deny => "deny".into(),
                };
                (*c, shown, v.class().unwrap_or("-").to_owned())
            })
            .collect();
        Self {
            tty,
            drawn: 0,
            verdicts,
            narration: String::new(),
        }
    }

    /// A new chapter: printed as a heading, kept on the live view.
    fn chapter(&mut self, lab: &mut Generator<'_>, name: &str, narration: &str) {
        lab.set_phase(name);
        self.narration = narration.to_owned();
        self.drawn = 0; // the heading stays above the next frame
        println!("\n### {name} — {narration}");
    }

    fn show(&mut self, s: &Second, lab: &Generator<'_>) {
        let mut lines = Vec::new();
        let cpu = s.cpu.map_or_else(|| "-".into(), |c| format!("{c:.2}"));
        lines.push(format!(
            "t={:>5.0}s  {:<16} throttle level {:<8} cpu {cpu}",
            s.t,
            s.phase,
            s.level.to_uppercase()
        ));
        lines.push(format!(
            "  {:<9} {:<9} {:>9} {:>9} {:>9} {:>11} {:>7}",
            "CLASS", "RULE", "OFFERED/s", "PASSED/s", "DROPPED/s", "LIMIT/src/s", "FACTOR"
        ));
        for (name, c) in &s.classes {
            let (shown, daemon_class) = ClientClass::from_name(name)
                .and_then(|cc| self.verdicts.iter().find(|(k, _, _)| *k == cc))
                .map_or(("-", "-"), |(_, s, d)| (s.as_str(), d.as_str()));
            let limit = match (ClientClass::from_name(name), s.rates.get(daemon_class)) {
                (Some(ClientClass::Denied), _) => "deny".to_owned(),
                (Some(ClientClass::Internal), _) => "allow".to_owned(),
                (_, Some(r)) => format!("{r:.0}"),
                _ => "-".to_owned(),
            };
            let factor = s
                .factors
                .get(daemon_class)
                .map_or("-".into(), |f| format!("{f:.2}"));
            lines.push(format!(
                "  {:<9} {:<9} {:>9} {:>9} {:>9} {:>11} {:>7}",
                name,
                shown,
                per_s(c.offered, s.dt),
                per_s(c.passed, s.dt),
                per_s(c.dropped, s.dt),
                limit,
                factor
            ));
        }
        lines.push(format!(
            "  {:<9} {:<10} {:<8} {:>5} {:>7} {:>9} {:>7}  {:>19}",
            "UPSTREAM",
            "BREAKER",
            "SERVICE",
            "OK/s",
            "RESET/s",
            "TIMEOUT/s",
            "GATE/s",
            "CONNECT p50/p99 ms"
        ));
        for (name, u) in &s.upstreams {
            let lat = match (u.connect_p50_ms, u.connect_p99_ms) {
                (Some(a), Some(b)) => format!("{a:.2}/{b:.2}"),
                _ => "-".into(),
            };
            lines.push(format!(
                "  {:<9} {:<10} {:<8} {:>5} {:>7} {:>9} {:>7}  {:>19}",
                name,
                u.state.to_uppercase(),
                u.service,
                per_s(u.ok, s.dt),
                per_s(u.reset, s.dt),
                per_s(u.timeout, s.dt),
                per_s(u.gate_resets, s.dt),
                lat
            ));
        }
        let recent: Vec<String> = lab
            .marks
            .iter()
            .rev()
            .filter(|m| m.kind != "phase")
            .take(3)
            .map(|m| format!("{:.1}s {}", m.t, m.label))
            .collect();
        lines.push(format!(
            "  events: {}",
            if recent.is_empty() {
                "-".into()
            } else {
                recent.into_iter().rev().collect::<Vec<_>>().join(" · ")
            }
        ));
        let mut out = std::io::stdout().lock();
        if self.tty {
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}F", self.drawn);
            }
            for l in &lines {
                let _ = writeln!(out, "\x1b[2K{l}");
            }
            self.drawn = lines.len();
        } else {
            // Not a terminal: one compact line a second.
            let classes: Vec<String> = s
                .classes
                .iter()
                .map(|(k, c)| format!("{k} {}/{}", per_s(c.passed, s.dt), per_s(c.offered, s.dt)))
                .collect();
            let ups: Vec<String> = s
                .upstreams
                .iter()
                .map(|(k, u)| format!("{k} {} ok{} rst{} to{}", u.state, u.ok, u.reset, u.timeout))
                .collect();
            let _ = writeln!(
                out,
                "t={:>4.0}s {:<15} level {:<8} cpu {cpu} | passed/offered per s: {} | {}",
                s.t,
                s.phase,
                s.level,
                classes.join(", "),
                ups.join(", ")
            );
        }
        let _ = out.flush();
    }
}

/// Tick the lab once a second (showing each second) until `done` holds, `max` passes or
/// Ctrl-C; whether `done` held.
fn run_until(
    lab: &mut Generator<'_>,
    live: &mut Live,
    max: Duration,
    mut done: impl FnMut(&Generator<'_>, &Second) -> bool,
) -> bool {
    let end = Instant::now() + max;
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        while Instant::now() < next {
            if interrupted() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        next += Duration::from_secs(1);
        let s = lab.tick();
        live.show(&s, lab);
        if done(lab, &s) {
            return true;
        }
        if Instant::now() >= end || interrupted() {
            return false;
        }
    }
}

fn run_for(lab: &mut Generator<'_>, live: &mut Live, d: Duration) {
    let end = Instant::now() + d;
    run_until(lab, live, d + Duration::from_secs(1), |_, _| {
        Instant::now() + Duration::from_millis(500) >= end
    });
}

// ---------------------------------------------------------------------------------------
// CPU load

/// Busy threads raising the node's CPU pressure: two per CPU, both runnable for the same
/// first `duty` of every 100 ms period, so one of them waits for the CPU about `duty` of
/// the time — what PSI's `some` counts, and what trafficd reads for CPU by default. Niced
/// to 19: the demo's own threads and trafficd still get the CPU when they want it. Bounded
/// by `max` and stopped on drop.
struct Busy {
    stop: Arc<AtomicBool>,
    duty: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Busy {
    fn start(max: Duration) -> Self {
        const PERIOD: Duration = Duration::from_millis(100);
        let stop = Arc::new(AtomicBool::new(false));
        let duty = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let end = epoch + max;
        let mut threads = Vec::new();
        for cpu in 0..online_cpus() {
            for _ in 0..2 {
                let (stop, duty) = (stop.clone(), duty.clone());
                threads.push(std::thread::spawn(move || {
                    pin_to_cpu(cpu);
                    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
                    // SAFETY: setpriority on the calling thread (its tid) only.
                    unsafe {
                        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
                    }
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end && !interrupted() {
                        let k = epoch.elapsed().as_micros() / PERIOD.as_micros();
                        let start = epoch + PERIOD * k as u32;
                        let on =
                            start + PERIOD.mul_f64(duty.load(Ordering::Relaxed) as f64 / 1000.0);
                        while Instant::now() < on {
                            for _ in 0..1000 {
                                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                            }
                        }
                        if let Some(rest) = (start + PERIOD).checked_duration_since(Instant::now())
                        {
                            std::thread::sleep(rest);
                        }
                    }
                    std::hint::black_box(x);
                }));
            }
        }
        Self {
            stop,
            duty,
            threads,
        }
    }

    /// Share of each period the threads run, in per mille.
    fn set_duty(&self, per_mille: u64) {
        self.duty.store(per_mille.min(1000), Ordering::Relaxed);
    }

    fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Runs

fn out_dir() -> Result<PathBuf> {
    let d = crate::target_dir().join("demo");
    std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    Ok(d)
}

/// Write the chart and the per-second data; their paths.
fn write_outputs(
    name: &str,
    title: &str,
    lab: &Generator<'_>,
    report: &Report,
) -> Result<(PathBuf, PathBuf)> {
    let dir = out_dir()?;
    let classes: Vec<String> = report
        .classes
        .iter()
        .map(|c| c.client.to_string())
        .collect();
    let upstreams: Vec<String> = report.upstreams.iter().map(|u| u.name.clone()).collect();
    let subtitle = format!(
        "trafficd with config/traffic.toml; {:.0} s; levels: {}; allowed = ideal per-source token buckets at the limits in force",
        report.duration,
        report
            .levels
            .iter()
            .map(|(l, s)| format!("{l} {s:.0}s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let svg = chart::svg(
        title,
        &subtitle,
        &lab.timeline,
        &report.marks,
        &classes,
        &upstreams,
    );
    let svg_path = dir.join(format!("{name}.svg"));
    std::fs::write(&svg_path, svg).with_context(|| format!("write {}", svg_path.display()))?;
    let json = serde_json::json!({
        "name": name,
        "title": title,
        "allowed": ALLOWED_NOTE,
        "report": report,
        "timeline": lab.timeline,
    });
    let json_path = dir.join(format!("{name}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    Ok((svg_path, json_path))
}

/// The demo: the story, or one profile.
pub fn run(bin_dir: &Path, profile_name: Option<&str>, client_links: &str) -> Result<()> {
    let links = match client_links {
        "plain" => ClientLinks::Plain,
        "gro" => ClientLinks::Gro,
        _ => ClientLinks::XdpPass,
    };
    install_interrupt_handler();
    anyhow::ensure!(
        traffic_testkit::is_root(),
        "the demo creates network namespaces and loads XDP: run it as root"
    );
    let dir = crate::workspace_root().join("config/profiles");
    let started = Instant::now();
    match profile_name {
        Some(name) => {
            let p = profile::find(&dir, name)?;
            with_lab(bin_dir, false, links, |lab| run_profile(lab, &p))?;
        }
        None => {
            let normal = profile::find(&dir, "normal")?;
            let burst = profile::find(&dir, "burst")?;
            with_lab(bin_dir, false, links, |lab| story(lab, &normal, &burst))?;
        }
    }
    println!("\n==> done in {:.0} s", started.elapsed().as_secs_f64());
    if interrupted() {
        bail!(
            "interrupted: the report covers the part that ran; namespaces, pins and trafficd are cleaned up"
        );
    }
    Ok(())
}

fn run_profile(lab: &mut Generator<'_>, p: &Profile) -> Result<()> {
    let mut live = Live::new(lab);
    live.chapter(lab, &p.name, &p.description);
    let id = lab.start(p, None)?;
    run_until(
        lab,
        &mut live,
        p.duration + Duration::from_secs(90),
        |lab, _| lab.run_finished(id),
    );
    let report = lab.finish()?;
    print_report(&report);
    let (svg, json) = write_outputs(
        &p.name,
        &format!("profile {}: {}", p.name, p.description),
        lab,
        &report,
    )?;
    println!(
        "\n==> chart {}\n    data  {}",
        svg.display(),
        json.display()
    );
    if report.exact && !report.ok && !interrupted() {
        bail!(
            "a class passed more (or less) than its limits allow, with the limits constant all along"
        );
    }
    Ok(())
}

fn print_report(report: &Report) {
    println!("\n==> report\n");
    print!("{}", report.render());
    println!("\n  {ALLOWED_NOTE}");
}

/// Sum of a client class's datagrams over the seconds of a phase: (offered, passed).
fn phase_totals(lab: &Generator<'_>, phase: &str, class: &str) -> (u64, u64) {
    lab.timeline
        .iter()
        .filter(|s| s.phase == phase)
        .filter_map(|s| s.classes.get(class))
        .fold((0, 0), |a, c| (a.0 + c.offered, a.1 + c.passed))
}

fn story(lab: &mut Generator<'_>, normal: &Profile, burst: &Profile) -> Result<()> {
    let mut live = Live::new(lab);
    let mut facts: Vec<String> = Vec::new();
    // Normal traffic carries on under every chapter; it is stopped at the end.
    let normal = normal.with_duration(Duration::from_secs(600));

    live.chapter(
        lab,
        "normal traffic",
        "premium, basic and guest clients under their limits; HTTP to web, echo to api",
    );
    let base = lab.start(&normal, None)?;
    run_for(lab, &mut live, Duration::from_secs(15));

    if !interrupted() {
        let attacker = burst.class(ClientClass::Attacker).map_or(0, |c| c.sources);
        live.chapter(
            lab,
            "attack",
            &format!("{attacker} attacker addresses flood UDP on top of normal traffic"),
        );
        let b = lab.start(burst, Some(&[ClientClass::Attacker]))?;
        run_until(
            lab,
            &mut live,
            burst.duration + Duration::from_secs(10),
            |lab, _| lab.run_finished(b),
        );
        run_for(lab, &mut live, Duration::from_secs(2));
    }
    if !interrupted() {
        let (ao, ap) = phase_totals(lab, "attack", "attacker");
        let keep: Vec<String> = ["premium", "basic"]
            .iter()
            .map(|c| {
                let (o, p) = phase_totals(lab, "attack", c);
                format!(
                    "{c} passed {:.0} % of what it offered",
                    (100.0 * p as f64 / o.max(1) as f64).min(100.0)
                )
            })
            .collect();
        facts.push(format!(
            "attack: the attacker offered {ao} datagrams and got {ap} through ({:.0} %); {}",
            100.0 * ap as f64 / ao.max(1) as f64,
            keep.join(", ")
        ));
    }

    if !interrupted() {
        live.chapter(lab, "web fails", "the web service stops listening: its breaker opens, the XDP gate refuses new connections with a RST");
        lab.set_service("web", Behaviour::Down)?;
        let t0 = Instant::now();
        let opened = run_until(lab, &mut live, Duration::from_secs(20), |_, s| {
            s.upstreams.get("web").is_some_and(|u| u.state == "open")
        });
        if opened {
            facts.push(format!(
                "web: breaker open within {:.0} s of the service stopping",
                t0.elapsed().as_secs_f64().ceil()
            ));
        } else if !interrupted() {
            facts.push("web: the breaker did not open within 20 s".into());
        }
        run_for(lab, &mut live, Duration::from_secs(8));
    }

    if !interrupted() {
        live.chapter(lab, "web recovers", "web listens again: after the reset timeout the breaker goes half-open, trials succeed, it closes");
        lab.set_service("web", Behaviour::Up)?;
        let t0 = Instant::now();
        let closed = run_until(lab, &mut live, Duration::from_secs(45), |_, s| {
            s.upstreams.get("web").is_some_and(|u| u.state == "closed")
        });
        if closed {
            facts.push(format!(
                "web: closed again {:.0} s after the service came back",
                t0.elapsed().as_secs_f64()
            ));
        }
        run_for(lab, &mut live, Duration::from_secs(2));
    }

    if !interrupted() {
        live.chapter(lab, "CPU pressure", "busy threads on every CPU, stepping the CPU pressure up: the throttle level rises, limits tighten by priority");
        let mut busy = Busy::start(Duration::from_secs(24));
        let t0 = Instant::now();
        let mut first_raise: Option<(f64, String)> = None;
        let mut highest = String::from("none");
        const ORDER: [&str; 5] = ["none", "low", "medium", "high", "critical"];
        let rank = |l: &str| ORDER.iter().position(|x| *x == l).unwrap_or(0);
        for duty in [620u64, 720, 820, 920] {
            busy.set_duty(duty);
            let step_end = Instant::now() + Duration::from_secs(5);
            run_until(lab, &mut live, Duration::from_secs(6), |_, s| {
                if s.level != "none" && first_raise.is_none() {
                    first_raise = Some((t0.elapsed().as_secs_f64(), s.level.clone()));
                }
                if rank(&s.level) > rank(&highest) {
                    highest = s.level.clone();
                }
                Instant::now() + Duration::from_millis(500) >= step_end
            });
            if interrupted() {
                break;
            }
        }
        let factors = lab
            .timeline
            .iter()
            .rev()
            .find(|s| s.level == highest)
            .map(|s| {
                s.factors
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        busy.stop();
        let _ = busy.finished();
        match first_raise {
            Some((t, l)) => facts.push(format!("CPU pressure: level {l} {t:.0} s after the load started, up to {highest} (factors there: {factors})")),
            None => facts.push("CPU pressure: the level did not rise (is the machine's CPU reading below the LOW threshold even with the load?)".into()),
        }
    }

    if !interrupted() {
        live.chapter(
            lab,
            "pressure eases",
            "the busy threads stop; the level steps down one level per min_dwell, the limits relax",
        );
        let t0 = Instant::now();
        let eased = run_until(lab, &mut live, Duration::from_secs(40), |_, s| {
            s.level == "none"
        });
        if eased {
            facts.push(format!(
                "pressure eased: back to level none {:.0} s after the load stopped",
                t0.elapsed().as_secs_f64()
            ));
        } else if !interrupted() {
            let level = lab.timeline.last().map_or("?".into(), |s| s.level.clone());
            facts.push(format!("pressure eased: still at level {level} 40 s after the load stopped (the node is busy besides the demo)"));
        }
        run_for(lab, &mut live, Duration::from_secs(2));
    }

    lab.stop_run(base);
    let report = lab.finish()?;
    if let Some(a) = report
        .classes
        .iter()
        .find(|c| c.client == ClientClass::Attacker)
    {
        facts.insert(
            1.min(facts.len()),
            format!(
                "attack: {} of the {} attacker sources went over their own limit and were held to it; the other {} stayed under theirs (allowed {} of {} offered, passed {})",
                a.limited_buckets,
                a.buckets,
                a.buckets - a.limited_buckets,
                a.allowed,
                a.offered,
                a.passed
            ),
        );
    }
    print_report(&report);
    println!("\n==> the story in numbers");
    for f in &facts {
        println!("  - {f}");
    }
    if let Some(web) = report.upstreams.iter().find(|u| u.name == "web")
        && let Some((_, s)) = web.by_phase.iter().find(|(p, _)| p == "web fails")
    {
        let rst = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.2} ms"));
        println!(
            "  - while web was failing: {} connects, {} refused with a RST in p50 {} / p99 {} / max {}, {} timed out",
            s.attempts,
            s.reset,
            rst(s.reset_ms[0]),
            rst(s.reset_ms[1]),
            rst(s.reset_ms[2]),
            s.timeout
        );
    }
    let gate: u64 = lab
        .timeline
        .iter()
        .filter_map(|s| s.upstreams.get("web"))
        .map(|u| u.gate_resets)
        .sum();
    println!("  - RSTs sent by the XDP gate for web: {gate}");
    let (svg, json) = write_outputs(
        "story",
        "trafficd: normal traffic, an attack, a failing upstream, CPU pressure",
        lab,
        &report,
    )?;
    println!(
        "\n==> chart {}\n    data  {}",
        svg.display(),
        json.display()
    );
    Ok(())
}

/// A profile run as a check (`cargo xtask test` runs `smoke`; `cargo xtask demo --profile
/// NAME --check` any): trafficd with the shipped classes and rules and the pressure signals
/// off, so the limits stay those of the config; fails unless every class agrees with what
/// its limits allow.
pub fn check_profile(bin_dir: &Path, name: &str) -> Result<()> {
    install_interrupt_handler();
    anyhow::ensure!(traffic_testkit::is_root(), "the profile run needs root");
    let p = profile::find(&crate::workspace_root().join("config/profiles"), name)?;
    let report = with_lab(bin_dir, true, ClientLinks::XdpPass, |lab| {
        println!("==> profile {}: {}", p.name, p.description);
        let id = lab.start(&p, None)?;
        let end = Instant::now() + p.duration + Duration::from_secs(30);
        while !lab.run_finished(id) && Instant::now() < end && !interrupted() {
            std::thread::sleep(Duration::from_millis(250));
        }
        lab.finish()
    })?;
    print!("{}", report.render());
    anyhow::ensure!(!interrupted(), "interrupted");
    anyhow::ensure!(
        report.exact,
        "the limits changed during the run although the pressure signals were off"
    );
    for c in &report.classes {
        anyhow::ensure!(c.offered > 0, "{}: nothing was offered", c.client);
    }
    anyhow::ensure!(
        report.ok,
        "the profile run disagrees with the limits:\n{}",
        report.render()
    );
    Ok(())
}
