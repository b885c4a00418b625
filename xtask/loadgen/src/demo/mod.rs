//! `cargo xtask demo [--profile NAME]`: trafficd enforcing `config/demo.toml`
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
//!
//! With `--fleet` it runs [`fleet`]: three nodes sharing bans and budgets through Redis.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use traffic_testkit::{
    daemon::DaemonProcess,
    topo::{Topology, unique_tag},
};

use crate::{
    admin, chart,
    load::{self, ALLOWED_NOTE, ClientLinks, Generator, LoadReport},
    profile::{self, Profile},
};

mod busy;
pub mod fleet;
mod live;
mod story;

use live::{Live, run_until};
use story::story;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C and SIGTERM stop the load; the guards then clean up.
pub(crate) fn install_interrupt_handler() {
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub(crate) fn interrupted() -> bool {
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
    let shipped = crate::workspace_root().join("config/demo.toml");
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
    report: &LoadReport,
) -> Result<(PathBuf, PathBuf)> {
    let dir = out_dir()?;
    let classes: Vec<String> = report
        .classes
        .iter()
        .map(|c| c.client.to_string())
        .collect();
    let upstreams: Vec<String> = report.upstreams.iter().map(|u| u.name.clone()).collect();
    let subtitle = format!(
        "trafficd with config/demo.toml; {:.0} s; levels: {}; allowed = ideal per-source token buckets at the limits in force",
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

fn print_report(report: &LoadReport) {
    println!("\n==> report\n");
    print!("{}", report.render());
    println!("\n  {ALLOWED_NOTE}");
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
