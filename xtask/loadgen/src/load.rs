//! The load generator: client hosts per class in namespaces around the node, each sending
//! from many addresses of its range (IPv4 and IPv6), driven by [`Profile`]s.
//!
//! - **Datagrams**: one thread per (run, class) sends for all of the class's sources in
//!   ticks of 5 ms — each tick, every source sends what its share of the profile's schedule
//!   (ramps included) says is due. No spinning: the node's CPU stays for the node.
//! - **TCP**: per (run, class, workload) a dispatcher hands out connections on the same
//!   schedule to at most `max_in_flight` client threads; a connection not started because
//!   every client was busy is counted as skipped, never queued without bound.
//! - **Bounded**: every run stops at the end of its profile, at its `max_packets`, at a
//!   wall-clock deadline (duration + pauses + 60 s), or when stopped.
//! - **Observed**: [`Lab::tick`] (once a second) reads the senders' counters, the node's
//!   receivers, the TCP outcomes and the daemon's admin API into a [`Second`]; the ideal
//!   buckets of [`crate::ideal`] say what the limits in force allowed of every datagram.
//!
//! Each datagram source and each TCP client has an address of its own (no bucket is shared
//! between two of them, under the shipped /32 and /64 aggregation), so "allowed" per bucket
//! is exact arithmetic.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::{
    admin,
    conn::{self, Outcome},
    ideal::{self, Board, Classifier, IdealSource, Verdict},
    profile::{ClientClass, DegradeMode, Profile, Request, WorkloadKind, v4_count},
    services::{Behaviour, Kind, Services},
};
use traffic_testkit::{
    topo::{HostSpec, SERVICE_V4, SERVICE_V6, Topology},
    udp::UdpSink,
};

/// Sending tick of the datagram threads.
const TICK: Duration = Duration::from_millis(5);
/// Most datagrams one source sends in one tick (a stalled thread catches up gradually).
const MAX_PER_TICK: u64 = 256;

/// A source address the generator uses, with its live counters.
#[derive(Debug)]
pub struct Source {
    pub addr: IpAddr,
    pub client: ClientClass,
    pub verdict: Verdict,
    pub run: usize,
    /// A TCP client address (its packets are not judged by the ideal buckets).
    pub tcp: bool,
    /// Datagrams sent.
    pub offered: AtomicU64,
    /// Of those, what the ideal buckets passed.
    pub allowed: AtomicU64,
}

/// One TCP connection's record.
#[derive(Clone, Debug, Serialize)]
pub struct ConnSample {
    /// Seconds since the lab started, at the start of the connect.
    pub t: f64,
    pub run: usize,
    pub client: ClientClass,
    pub upstream: String,
    pub outcome: Outcome,
    pub connect_ms: Option<f64>,
    pub total_ms: f64,
    pub phase: usize,
}

/// An upstream of the daemon config.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    pub port: u16,
    pub kind: Kind,
}

/// A run's clock: profile time, with the pauses (asked for, and scheduled by the profile)
/// taken out.
#[derive(Debug)]
pub struct RunClock {
    start: Instant,
    manual: Mutex<(Option<Instant>, Duration)>,
    scheduled: Vec<(Duration, Duration)>,
}

impl RunClock {
    fn new(scheduled: &[(Duration, Duration)]) -> Self {
        let mut s = scheduled.to_vec();
        s.sort();
        Self {
            start: Instant::now(),
            manual: Mutex::new((None, Duration::ZERO)),
            scheduled: s,
        }
    }

    /// (profile time, paused now).
    pub fn now(&self) -> (Duration, bool) {
        let m = self.manual.lock().unwrap_or_else(|e| e.into_inner());
        let wall = self.start.elapsed();
        let paused_for = m.1 + m.0.map_or(Duration::ZERO, |p| p.elapsed());
        let manual_paused = m.0.is_some();
        drop(m);
        let mut active = wall.saturating_sub(paused_for);
        for &(at, len) in &self.scheduled {
            if active <= at {
                break;
            }
            if active < at + len {
                return (at, true);
            }
            active -= len;
        }
        (active, manual_paused)
    }

    fn pause(&self) {
        let mut m = self.manual.lock().unwrap_or_else(|e| e.into_inner());
        if m.0.is_none() {
            m.0 = Some(Instant::now());
        }
    }

    fn resume(&self) {
        let mut m = self.manual.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = m.0.take() {
            m.1 += p.elapsed();
        }
    }
}

struct Run {
    profile: Profile,
    classes: Vec<ClientClass>,
    clock: Arc<RunClock>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<()>>>,
    sent: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    /// 0 not yet, 1 applied, 2 restored.
    degrade: u8,
    started_at: f64,
}

/// A marker on the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Mark {
    pub t: f64,
    /// "phase", "level", "breaker" or "note".
    pub kind: &'static str,
    pub label: String,
}

/// One client class in one second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassSecond {
    pub offered: u64,
    pub passed: u64,
    pub dropped: u64,
    pub allowed: u64,
}

/// One upstream in one second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UpstreamSecond {
    /// Breaker state as the daemon reports it.
    pub state: String,
    /// How the demo service behaves ("up", "down", …).
    pub service: String,
    pub ok: u64,
    pub reset: u64,
    pub timeout: u64,
    pub error: u64,
    pub connect_p50_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    /// RSTs the XDP gate sent this second.
    pub gate_resets: u64,
}

/// What the lab saw in one second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Second {
    /// Seconds since the lab started (end of the interval).
    pub t: f64,
    pub dt: f64,
    pub phase: String,
    pub level: String,
    pub cpu: Option<f64>,
    /// Per client class.
    pub classes: BTreeMap<String, ClassSecond>,
    /// Per daemon class: throttle factor and the first packet limit per source in force.
    pub factors: BTreeMap<String, f64>,
    pub rates: BTreeMap<String, f64>,
    pub upstreams: BTreeMap<String, UpstreamSecond>,
    /// Per daemon class, as trafficd counts them (datagrams and TCP): passed, dropped.
    pub daemon: BTreeMap<String, (u64, u64)>,
}

#[derive(Default)]
struct Pool {
    next_v4: u32,
    next_v6: u32,
}

/// The generator and observer of one lab.
pub struct Lab<'t> {
    topo: &'t Topology,
    _pass_links: Vec<crate::xdp_pass::PassLink>,
    socket: PathBuf,
    classifier: Classifier,
    board: Arc<Board>,
    shared: Arc<ideal::Shared>,
    sources: Arc<Mutex<Vec<Arc<Source>>>>,
    pools: BTreeMap<ClientClass, Pool>,
    sinks: BTreeMap<u16, UdpSink>,
    services: Option<Services>,
    pub upstreams: Vec<Upstream>,
    runs: Vec<Run>,
    conns: Arc<Mutex<Vec<ConnSample>>>,
    conns_seen: usize,
    phase: Arc<AtomicUsize>,
    pub phases: Vec<String>,
    epoch: Instant,
    /// Seconds from the daemon's start to the lab's epoch.
    daemon_offset: f64,
    poller: Poller,
    allowed_series: Arc<Mutex<BTreeMap<ClientClass, Vec<u64>>>>,
    pub timeline: Vec<Second>,
    pub marks: Vec<Mark>,
    last_tick: Instant,
    last_class: BTreeMap<ClientClass, (u64, u64, u64)>,
    last_daemon: BTreeMap<String, (u64, u64)>,
    last_gate: BTreeMap<String, u64>,
    last_level: Option<String>,
    last_state: BTreeMap<String, String>,
    /// (lab time, upstream, from, to, reason, daemon time)
    transitions: Vec<(f64, String, String, String, String, f64)>,
}

/// How the clients' ends of their veth links are prepared to receive frames the node's XDP
/// program sends back with XDP_TX (the breaker gate's RSTs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientLinks {
    /// As created: a native XDP_TX frame may never arrive.
    Plain,
    /// `ethtool -K <link> gro on` (runs the veth's NAPI).
    Gro,
    /// An XDP_PASS program on the link (see [`crate::xdp_pass`]); what the demo uses.
    XdpPass,
}

/// Host specs of the client classes, for [`Topology::build`].
pub fn host_specs() -> Vec<HostSpec> {
    ClientClass::ALL
        .iter()
        .map(|c| HostSpec::new(c.host(), c.v4_range(), c.v6_range()))
        .collect()
}

/// Raise the open-file limit to its hard maximum (thousands of source sockets).
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl<'t> Lab<'t> {
    /// A lab on a topology built from [`host_specs`], for the daemon running (or about to
    /// run: see [`Lab::set_daemon_started`]) with `config` and answering on `socket`;
    /// `links` says how the clients' ends of their links are prepared for the RSTs the XDP
    /// gate sends back ([`ClientLinks`]).
    pub fn new(
        topo: &'t Topology,
        config: &toml::Table,
        socket: &Path,
        links: ClientLinks,
    ) -> Result<Self> {
        raise_nofile();
        let mut pass_links = Vec::new();
        for c in ClientClass::ALL {
            let h = topo
                .hosts
                .iter()
                .find(|h| h.spec.name == c.host())
                .with_context(|| format!("the topology has no host {} for {c}", c.host()))?;
            match links {
                ClientLinks::Plain => {}
                ClientLinks::Gro => {
                    let out =
                        h.ns.command("ethtool")?
                            .args(["-K", &h.host_if, "gro", "on"])
                            .output()
                            .context("run ethtool")?;
                    if !out.status.success() {
                        bail!(
                            "ethtool -K {} gro on: {}",
                            h.host_if,
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                }
                ClientLinks::XdpPass => {
                    pass_links.push(crate::xdp_pass::attach(&h.ns, &h.host_if)?)
                }
            }
            // Many short connections from few addresses: reuse TIME_WAIT ports.
            let _ = h.ns.sysctl("net.ipv4.tcp_tw_reuse", "1");
        }
        let upstreams = config
            .get("upstreams")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter(|u| {
                u.get("protocol")
                    .and_then(toml::Value::as_str)
                    .unwrap_or("tcp")
                    == "tcp"
            })
            .filter_map(|u| {
                Some(Upstream {
                    name: u.get("name")?.as_str()?.to_owned(),
                    port: u16::try_from(u.get("port")?.as_integer()?).ok()?,
                    kind: if u.get("probe").and_then(toml::Value::as_str) == Some("http") {
                        Kind::Http
                    } else {
                        Kind::Echo
                    },
                })
            })
            .collect();
        let epoch = Instant::now();
        let board = Arc::new(Board::default());
        Ok(Self {
            topo,
            _pass_links: pass_links,
            socket: socket.to_owned(),
            classifier: Classifier::from_config(config)?,
            board: board.clone(),
            shared: Arc::new(ideal::Shared::default()),
            sources: Arc::new(Mutex::new(Vec::new())),
            pools: BTreeMap::new(),
            sinks: BTreeMap::new(),
            services: None,
            upstreams,
            runs: Vec::new(),
            conns: Arc::new(Mutex::new(Vec::new())),
            conns_seen: 0,
            phase: Arc::new(AtomicUsize::new(0)),
            phases: vec!["start".into()],
            epoch,
            daemon_offset: 0.0,
            poller: Poller::start(socket, epoch, board.clone()),
            allowed_series: Arc::new(Mutex::new(BTreeMap::new())),
            timeline: Vec::new(),
            marks: Vec::new(),
            last_tick: epoch,
            last_class: BTreeMap::new(),
            last_daemon: BTreeMap::new(),
            last_gate: BTreeMap::new(),
            last_level: None,
            last_state: BTreeMap::new(),
            transitions: Vec::new(),
        })
    }

    /// When the daemon was started (transitions it reports are relative to that).
    pub fn set_daemon_started(&mut self, at: Instant) {
        self.daemon_offset = self.epoch.saturating_duration_since(at).as_secs_f64()
            - at.saturating_duration_since(self.epoch).as_secs_f64();
    }

    /// What the config's rules make of a client class's range.
    pub fn verdict_of(&self, c: ClientClass) -> Verdict {
        self.classifier
            .verdict(IpAddr::V4(Ipv4Addr::from(u32::from(c.v4_range().0) + 10)))
    }

    /// The admin socket of the daemon under load.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Seconds since the lab started.
    pub fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Start the node's upstream services (HTTP for `probe = "http"`, echo otherwise).
    pub fn start_services(&mut self) -> Result<()> {
        let list: Vec<(String, u16, Kind)> = self
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.port, u.kind))
            .collect();
        self.services = Some(Services::start(&self.topo.node, &list)?);
        Ok(())
    }

    /// Change how a service behaves (marked on the timeline).
    pub fn set_service(&mut self, name: &str, b: Behaviour) -> Result<()> {
        self.services
            .as_ref()
            .context("no services running")?
            .set(name, b)?;
        let what = match b {
            Behaviour::Up => "up".to_owned(),
            Behaviour::Down => "stops listening".to_owned(),
            Behaviour::Error => "answers 500".to_owned(),
            Behaviour::Slow(d) => format!("answers after {} ms", d.as_millis()),
        };
        self.mark("note", format!("{name} {what}"));
        Ok(())
    }

    /// Name the part of the run that starts now (marked on the timeline, kept with every TCP
    /// record).
    pub fn set_phase(&mut self, name: &str) {
        self.phases.push(name.to_owned());
        self.phase.store(self.phases.len() - 1, Ordering::Relaxed);
        self.mark("phase", name.to_owned());
    }

    pub fn mark(&mut self, kind: &'static str, label: String) {
        let t = self.now();
        self.marks.push(Mark { t, kind, label });
    }

    fn allocate(&mut self, class: ClientClass, v6: bool) -> Result<IpAddr> {
        let pool = self.pools.entry(class).or_default();
        if v6 {
            pool.next_v6 += 1;
            if pool.next_v6 > 0xffff {
                bail!("{class}: out of IPv6 /64s");
            }
            let (base, _) = class.v6_range();
            Ok(IpAddr::V6(Ipv6Addr::from(
                u128::from(base) | (u128::from(pool.next_v6) << 64) | 1,
            )))
        } else {
            if pool.next_v4 >= class.v4_capacity() {
                bail!(
                    "{class}: out of IPv4 addresses in {}/{}",
                    class.v4_range().0,
                    class.v4_range().1
                );
            }
            let (base, _) = class.v4_range();
            let a = Ipv4Addr::from(u32::from(base) + 10 + pool.next_v4);
            pool.next_v4 += 1;
            Ok(IpAddr::V4(a))
        }
    }

    fn register(
        &mut self,
        addr: IpAddr,
        client: ClientClass,
        run: usize,
        tcp: bool,
    ) -> Arc<Source> {
        let s = Arc::new(Source {
            addr,
            client,
            verdict: self.classifier.verdict(addr),
            run,
            tcp,
            offered: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
        });
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        s
    }

    /// Start a profile (only its `only` classes when given); returns the run's id.
    pub fn start(&mut self, profile: &Profile, only: Option<&[ClientClass]>) -> Result<usize> {
        let id = self.runs.len();
        let classes: Vec<ClientClass> = profile
            .classes
            .iter()
            .map(|m| m.class)
            .filter(|c| only.is_none_or(|o| o.contains(c)))
            .collect();
        let clock = Arc::new(RunClock::new(&profile.pauses));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let skipped = Arc::new(AtomicU64::new(0));
        let pauses: Duration = profile.pauses.iter().map(|p| p.1).sum();
        let deadline = Instant::now() + profile.duration + pauses + Duration::from_secs(60);
        let mut threads = Vec::new();
        for m in profile
            .classes
            .iter()
            .filter(|m| classes.contains(&m.class))
        {
            let host = self.topo.host(m.class.host());
            let works = profile.workloads_of(m.class);
            // Datagram sources.
            let udp: Vec<(u16, Vec<usize>, f64)> = works
                .iter()
                .filter_map(|(w, s)| match &w.kind {
                    WorkloadKind::Udp { port, sizes } => Some((*port, sizes.clone(), *s)),
                    WorkloadKind::Tcp { .. } => None,
                })
                .collect();
            if !udp.is_empty() && m.share > 0.0 {
                for (port, _, _) in &udp {
                    if !self.sinks.contains_key(port) {
                        self.sinks
                            .insert(*port, UdpSink::start(&self.topo.node, *port, 2)?);
                    }
                }
                let n = m.sources;
                let v4 = v4_count(n, profile.ipv6);
                let mut srcs = Vec::new();
                for i in 0..n {
                    let addr = self.allocate(m.class, i >= v4)?;
                    let weight = match m.heavy {
                        // Heavy hitters first: spread them over both families.
                        Some((h, share)) => {
                            let heavy =
                                (i % (n / h.max(1)).max(1) == 0) && (i / (n / h.max(1)).max(1)) < h;
                            if heavy {
                                share / f64::from(h)
                            } else {
                                (1.0 - share) / f64::from(n - h)
                            }
                        }
                        None => 1.0 / f64::from(n),
                    };
                    srcs.push((self.register(addr, m.class, id, false), weight));
                }
                let job = UdpJob {
                    client: m.class,
                    series: self.allowed_series.clone(),
                    sources: srcs,
                    works: udp,
                    class_share: m.share,
                    profile: profile.clone(),
                    clock: clock.clone(),
                    stop: stop.clone(),
                    sent: sent.clone(),
                    board: self.board.clone(),
                    shared: self.shared.clone(),
                    epoch: self.epoch,
                    deadline,
                };
                threads.push(host.ns.spawn(move || job.run())?);
            }
            // TCP clients.
            let tcp_works: Vec<(String, Request, Duration, u32, f64)> = works
                .iter()
                .filter_map(|(w, s)| match &w.kind {
                    WorkloadKind::Tcp {
                        upstream,
                        request,
                        timeout,
                        max_in_flight,
                    } => Some((
                        upstream.clone(),
                        request.clone(),
                        *timeout,
                        *max_in_flight,
                        *s,
                    )),
                    WorkloadKind::Udp { .. } => None,
                })
                .collect();
            if tcp_works.is_empty() || m.share <= 0.0 {
                continue;
            }
            let n = m.tcp_clients.max(1);
            let v4 = v4_count(n, profile.ipv6);
            let mut clients = Vec::new();
            for i in 0..n {
                let addr = self.allocate(m.class, i >= v4)?;
                clients.push(self.register(addr, m.class, id, true).addr);
            }
            for (upstream, request, timeout, max_in_flight, share) in tcp_works {
                let port = self
                    .upstreams
                    .iter()
                    .find(|u| u.name == upstream)
                    .map(|u| u.port)
                    .with_context(|| format!("profile {}: no upstream named `{upstream}` in the daemon config (TCP ones: {})", profile.name, self.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ")))?;
                let (tx, rx) = mpsc::sync_channel::<()>(max_in_flight as usize);
                let rx = Arc::new(Mutex::new(rx));
                let queued = Arc::new(AtomicU64::new(0));
                for k in 0..max_in_flight as usize {
                    let src = clients[k % clients.len()];
                    let dst = if src.is_ipv6() {
                        SocketAddr::new(IpAddr::V6(SERVICE_V6), port)
                    } else {
                        SocketAddr::new(IpAddr::V4(SERVICE_V4), port)
                    };
                    let w = TcpWorker {
                        rx: rx.clone(),
                        queued: queued.clone(),
                        src,
                        dst,
                        request: request.clone(),
                        timeout,
                        think: profile.think_time,
                        conns: self.conns.clone(),
                        phase: self.phase.clone(),
                        epoch: self.epoch,
                        run: id,
                        client: m.class,
                        upstream: upstream.clone(),
                        stop: stop.clone(),
                        deadline,
                    };
                    threads.push(host.ns.spawn(move || {
                        w.run();
                        Ok(())
                    })?);
                }
                let d = TcpDispatch {
                    tx,
                    queued,
                    max_in_flight: u64::from(max_in_flight),
                    share: m.share * share,
                    profile: profile.clone(),
                    clock: clock.clone(),
                    stop: stop.clone(),
                    skipped: skipped.clone(),
                    deadline,
                };
                threads.push(std::thread::spawn(move || {
                    d.run();
                    Ok(())
                }));
            }
        }
        let started_at = self.now();
        self.runs.push(Run {
            profile: profile.clone(),
            classes,
            clock,
            stop,
            threads,
            sent,
            skipped,
            degrade: 0,
            started_at,
        });
        Ok(id)
    }

    /// Pause a run: its senders stop until [`Lab::resume`]; its profile time stands still.
    pub fn pause(&mut self, run: usize) {
        if let Some(r) = self.runs.get(run) {
            r.clock.pause();
            let name = r.profile.name.clone();
            self.mark("note", format!("{name} paused"));
        }
    }

    pub fn resume(&mut self, run: usize) {
        if let Some(r) = self.runs.get(run) {
            r.clock.resume();
            let name = r.profile.name.clone();
            self.mark("note", format!("{name} resumed"));
        }
    }

    /// Profile time of a run.
    pub fn run_time(&self, run: usize) -> Duration {
        self.runs
            .get(run)
            .map_or(Duration::ZERO, |r| r.clock.now().0)
    }

    /// Datagrams a run has sent so far.
    pub fn run_sent(&self, run: usize) -> u64 {
        self.runs
            .get(run)
            .map_or(0, |r| r.sent.load(Ordering::Relaxed))
    }

    /// Whether every thread of the run has ended.
    pub fn run_finished(&self, run: usize) -> bool {
        self.runs
            .get(run)
            .is_none_or(|r| r.threads.iter().all(JoinHandle::is_finished))
    }

    /// Whether every run has ended.
    pub fn all_finished(&self) -> bool {
        (0..self.runs.len()).all(|r| self.run_finished(r))
    }

    /// Stop a run's senders (they end within a tick or a connection timeout).
    pub fn stop_run(&self, run: usize) {
        if let Some(r) = self.runs.get(run) {
            r.stop.store(true, Ordering::Relaxed);
            r.clock.resume();
        }
    }

    pub fn stop_all(&self) {
        for r in 0..self.runs.len() {
            self.stop_run(r);
        }
    }

    fn degrade(&mut self) {
        for i in 0..self.runs.len() {
            let Some(d) = self.runs[i].profile.degrade.clone() else {
                continue;
            };
            let (t, _) = self.runs[i].clock.now();
            let state = self.runs[i].degrade;
            if state == 0 && t >= d.at {
                self.runs[i].degrade = 1;
                let r = match &d.mode {
                    DegradeMode::Down => self.set_service(&d.upstream, Behaviour::Down),
                    DegradeMode::Error => self.set_service(&d.upstream, Behaviour::Error),
                    DegradeMode::Slow(delay) => {
                        self.set_service(&d.upstream, Behaviour::Slow(*delay))
                    }
                    DegradeMode::Chaos { drop, reset } => {
                        admin::chaos(&self.socket, &d.upstream, *drop, *reset, d.length).map(|m| {
                            self.mark("note", m);
                        })
                    }
                };
                if let Err(e) = r {
                    self.mark("note", format!("degrade {} failed: {e:#}", d.upstream));
                }
            } else if state == 1 && t >= d.at + d.length {
                self.runs[i].degrade = 2;
                let r = match &d.mode {
                    DegradeMode::Chaos { .. } => admin::chaos_stop(&self.socket)
                        .map(|()| self.mark("note", format!("{} chaos stopped", d.upstream))),
                    _ => self.set_service(&d.upstream, Behaviour::Up),
                };
                if let Err(e) = r {
                    self.mark("note", format!("restore {} failed: {e:#}", d.upstream));
                }
            }
        }
    }

    /// Put every degraded service back (the end of a run, or an interrupted one).
    pub fn restore_services(&mut self) {
        let mut chaos = false;
        for r in &mut self.runs {
            if r.degrade == 1 {
                r.degrade = 2;
                chaos |= matches!(
                    r.profile.degrade.as_ref().map(|d| &d.mode),
                    Some(DegradeMode::Chaos { .. })
                );
            }
        }
        if chaos {
            let _ = admin::chaos_stop(&self.socket);
        }
        if let Some(s) = &self.services {
            for u in &self.upstreams {
                if s.behaviour(&u.name).is_some_and(|b| b != Behaviour::Up) {
                    let _ = s.set(&u.name, Behaviour::Up);
                }
            }
        }
    }

    /// Received datagrams per source so far.
    fn received(&self) -> HashMap<IpAddr, u64> {
        let mut out: HashMap<IpAddr, u64> = HashMap::new();
        for s in self.sinks.values() {
            for (k, v) in s.snapshot() {
                *out.entry(canonical(k)).or_default() += v;
            }
        }
        out
    }

    /// Sample the last interval: counters, receivers, TCP outcomes, the daemon's level,
    /// limits and breakers. Also applies the runs' scheduled degradations. Call about once
    /// a second.
    pub fn tick(&mut self) -> Second {
        self.degrade();
        let now = self.now();
        let dt = self.last_tick.elapsed().as_secs_f64();
        self.last_tick = Instant::now();
        let mut sec = Second {
            t: now,
            dt,
            phase: self.phases.last().cloned().unwrap_or_default(),
            ..Default::default()
        };

        // Daemon: level and limits (from the poller), circuits, counters.
        let status = self
            .poller
            .status()
            .or_else(|| admin::get_json(&self.socket, "/v1/status").ok());
        if let Some(v) = status {
            let (level, cpu) = admin::throttle(&v);
            if self.last_level.as_ref() != Some(&level) {
                if self.last_level.is_some() {
                    self.mark("level", format!("level {level}"));
                }
                self.last_level = Some(level.clone());
            }
            sec.level = level;
            sec.cpu = cpu;
        } else {
            sec.level = self.last_level.clone().unwrap_or_default();
        }
        for (c, l) in &self.board.all() {
            sec.factors.insert(c.clone(), l.factor);
            if let Some(p) = l.packets.first() {
                sec.rates.insert(c.clone(), p.rate_per_sec);
            }
        }
        let circuits = admin::get_json(&self.socket, "/v1/circuits")
            .map(|v| admin::circuits(&v))
            .unwrap_or_default();
        for c in &circuits {
            for (at, from, to, reason) in &c.transitions {
                let t = at - self.poller.offset().unwrap_or(self.daemon_offset);
                // Keyed by the daemon's own time of the transition, which never changes.
                if !self
                    .transitions
                    .iter()
                    .any(|x| x.5 == *at && x.1 == c.name && x.3 == *to)
                {
                    self.transitions.push((
                        t,
                        c.name.clone(),
                        from.clone(),
                        to.clone(),
                        reason.clone(),
                        *at,
                    ));
                    if t >= 0.0 {
                        self.marks.push(Mark {
                            t,
                            kind: "breaker",
                            label: format!("{} {to}", c.name),
                        });
                    }
                }
            }
            self.last_state.insert(c.name.clone(), c.state.clone());
        }
        if let Ok(v) = admin::get_json(&self.socket, "/v1/counters") {
            let totals = admin::counters(&v);
            for (c, (p, d)) in &totals {
                let (lp, ld) = self.last_daemon.get(c).copied().unwrap_or_default();
                sec.daemon
                    .insert(c.clone(), (p.saturating_sub(lp), d.saturating_sub(ld)));
            }
            self.last_daemon = totals;
        }

        // Datagrams per client class.
        let received = self.received();
        let mut sums: BTreeMap<ClientClass, (u64, u64, u64)> = BTreeMap::new();
        for s in self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| !s.tcp)
        {
            let e = sums.entry(s.client).or_default();
            e.0 += s.offered.load(Ordering::Relaxed);
            e.1 += received.get(&s.addr).copied().unwrap_or(0);
            e.2 += s.allowed.load(Ordering::Relaxed);
        }
        for (c, (o, p, a)) in &sums {
            let (lo, lp, la) = self.last_class.get(c).copied().unwrap_or_default();
            let offered = o.saturating_sub(lo);
            let passed = p.saturating_sub(lp);
            sec.classes.insert(
                c.to_string(),
                ClassSecond {
                    offered,
                    passed,
                    dropped: offered.saturating_sub(passed),
                    allowed: a.saturating_sub(la),
                },
            );
        }
        self.last_class = sums;

        // TCP per upstream.
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let new = &conns[self.conns_seen.min(conns.len())..];
        for u in &self.upstreams {
            let mut us = UpstreamSecond {
                state: self.last_state.get(&u.name).cloned().unwrap_or_default(),
                service: self
                    .services
                    .as_ref()
                    .and_then(|s| s.behaviour(&u.name))
                    .map_or("-".into(), |b| match b {
                        Behaviour::Up => "up".into(),
                        Behaviour::Down => "down".into(),
                        Behaviour::Error => "500".into(),
                        Behaviour::Slow(d) => format!("slow {}ms", d.as_millis()),
                    }),
                ..Default::default()
            };
            let mut lat = Vec::new();
            for c in new.iter().filter(|c| c.upstream == u.name) {
                match c.outcome {
                    Outcome::Ok => us.ok += 1,
                    Outcome::Reset => us.reset += 1,
                    Outcome::Timeout => us.timeout += 1,
                    Outcome::Error => us.error += 1,
                }
                lat.extend(c.connect_ms);
            }
            let lat = sorted(lat);
            us.connect_p50_ms = percentile(&lat, 50.0);
            us.connect_p99_ms = percentile(&lat, 99.0);
            if let Some(c) = circuits.iter().find(|c| c.name == u.name) {
                let last = self
                    .last_gate
                    .insert(u.name.clone(), c.resets)
                    .unwrap_or(c.resets);
                us.gate_resets = c.resets.saturating_sub(last);
            }
            sec.upstreams.insert(u.name.clone(), us);
        }
        self.conns_seen = conns.len();
        drop(conns);
        self.timeline.push(sec.clone());
        sec
    }

    /// Stop everything, wait for the threads and for the receivers to drain, take a last
    /// sample, and build the report.
    pub fn finish(&mut self) -> Result<Report> {
        self.stop_all();
        let mut errors = Vec::new();
        for r in &mut self.runs {
            for t in r.threads.drain(..) {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errors.push(format!("{}: {e:#}", r.profile.name)),
                    Err(_) => errors.push(format!("{}: a sender thread panicked", r.profile.name)),
                }
            }
        }
        self.restore_services();
        // Drain: until the receivers' counts stop moving (polled, with a deadline).
        let end = Instant::now() + Duration::from_secs(3);
        let mut last = self.received();
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(150));
            let now = self.received();
            if now == last {
                break;
            }
            last = now;
        }
        self.tick();
        // "Allowed" per second by send time (the ideal buckets judge a little late).
        let series = self
            .allowed_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in &mut self.timeline {
            let (t0, t1) = (s.t - s.dt, s.t);
            for (c, cs) in &mut s.classes {
                let Some(v) = ClientClass::from_name(c).and_then(|cc| series.get(&cc)) else {
                    continue;
                };
                let sum: f64 = (t0.max(0.0).floor() as usize..(t1.ceil() as usize).min(v.len()))
                    .map(|k| v[k] as f64 * ((k as f64 + 1.0).min(t1) - (k as f64).max(t0)).max(0.0))
                    .sum();
                cs.allowed = sum.round() as u64;
            }
        }
        let received = self.received();
        for (_, s) in std::mem::take(&mut self.sinks) {
            let _ = s.finish(Duration::from_millis(200));
        }
        if let Some(mut s) = self.services.take() {
            s.stop();
        }
        if !errors.is_empty() {
            bail!("the generator failed: {}", errors.join("; "));
        }
        Ok(self.report(&received))
    }

    fn report(&self, received: &HashMap<IpAddr, u64>) -> Report {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let limits = self.board.all();
        let limits_changes = self.board.history().len().saturating_sub(1);
        let exact = limits_changes == 0;
        let _ = exact;
        let mut classes = Vec::new();
        for c in ClientClass::ALL {
            let list: Vec<&Arc<Source>> = sources.iter().filter(|s| s.client == c).collect();
            if list.is_empty() {
                continue;
            }
            let udp: Vec<&&Arc<Source>> = list.iter().filter(|s| !s.tcp).collect();
            let verdict = udp
                .first()
                .map(|s| s.verdict.clone())
                .or_else(|| list.first().map(|s| s.verdict.clone()))
                .unwrap_or(Verdict::Deny);
            let mut r = ClassReport {
                client: c,
                verdict: verdict.describe(),
                sources_v4: udp.iter().filter(|s| s.addr.is_ipv4()).count(),
                sources_v6: udp.iter().filter(|s| s.addr.is_ipv6()).count(),
                tcp_clients: list.len() - udp.len(),
                offered: 0,
                passed: 0,
                dropped: 0,
                allowed: 0,
                buckets: 0,
                shared_buckets: false,
                buckets_over: 0,
                limited_buckets: 0,
                worst_excess: 0,
                ok: false,
                check: String::new(),
            };
            // Buckets: sources masked to the class's aggregation prefixes.
            let (p4, p6) = verdict
                .class()
                .and_then(|k| limits.get(k))
                .map_or((32, 64), |l| (l.aggregate_v4, l.aggregate_v6));
            let mut buckets: BTreeMap<IpAddr, (u64, u64, u64)> = BTreeMap::new();
            for s in &udp {
                let key = ideal::masked(s.addr, if s.addr.is_ipv6() { p6 } else { p4 });
                let e = buckets.entry(key).or_default();
                e.0 += s.offered.load(Ordering::Relaxed);
                e.1 += received.get(&s.addr).copied().unwrap_or(0);
                e.2 += s.allowed.load(Ordering::Relaxed);
            }
            r.buckets = buckets.len();
            r.shared_buckets = buckets.len() < udp.len();
            // trafficd rewrites the buckets a few ms after a level change; the ideal buckets
            // switch at the change itself: allow 2 packets per change for that gap.
            let slack = 1 + 2 * limits_changes as u64;
            for (o, p, a) in buckets.values() {
                r.offered += o;
                r.passed += p;
                r.allowed += a;
                if p < o {
                    r.limited_buckets += 1;
                }
                if *p > a + slack {
                    r.buckets_over += 1;
                    r.worst_excess = r.worst_excess.max(p - a);
                }
            }
            r.dropped = r.offered.saturating_sub(r.passed);
            let (ok, why) = match &verdict {
                Verdict::Deny => (
                    r.passed == 0,
                    if r.passed == 0 {
                        "deny rule: nothing passed".to_owned()
                    } else {
                        format!("deny rule, yet {} passed", r.passed)
                    },
                ),
                Verdict::Allow(_) => (
                    r.passed == r.offered,
                    if r.passed == r.offered {
                        "allow rule: nothing lost".to_owned()
                    } else {
                        format!("allow rule, yet {} lost", r.offered - r.passed)
                    },
                ),
                Verdict::Limit(_) => {
                    let low = r.passed as f64 >= 0.95 * r.allowed as f64;
                    let high = r.buckets_over == 0;
                    let why = match (high, low) {
                        (true, true) => format!(
                            "within limits ({:.1} % of allowed)",
                            100.0 * r.passed as f64 / (r.allowed.max(1)) as f64
                        ),
                        (false, _) => format!(
                            "{} bucket(s) passed more than allowed + {slack} (worst by {})",
                            r.buckets_over, r.worst_excess
                        ),
                        (true, false) => format!(
                            "passed only {:.1} % of allowed (want ≥ 95 %)",
                            100.0 * r.passed as f64 / r.allowed.max(1) as f64
                        ),
                    };
                    (high && low, why)
                }
            };
            r.ok = ok;
            r.check = why;
            classes.push(r);
        }
        drop(sources);

        // Upstreams.
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut upstreams = Vec::new();
        for u in &self.upstreams {
            let all: Vec<&ConnSample> = conns.iter().filter(|c| c.upstream == u.name).collect();
            if all.is_empty() {
                continue;
            }
            let stats = |set: &[&ConnSample]| -> ConnStats {
                let mut s = ConnStats {
                    attempts: set.len() as u64,
                    ..Default::default()
                };
                for c in set {
                    match c.outcome {
                        Outcome::Ok => s.ok += 1,
                        Outcome::Reset => s.reset += 1,
                        Outcome::Timeout => s.timeout += 1,
                        Outcome::Error => s.error += 1,
                    }
                }
                let lat = sorted(set.iter().filter_map(|c| c.connect_ms).collect());
                s.connect_ms = [
                    percentile(&lat, 50.0),
                    percentile(&lat, 95.0),
                    percentile(&lat, 99.0),
                ];
                let resets = sorted(
                    set.iter()
                        .filter(|c| c.outcome == Outcome::Reset)
                        .filter_map(|c| c.connect_ms)
                        .collect(),
                );
                s.reset_ms = [
                    percentile(&resets, 50.0),
                    percentile(&resets, 99.0),
                    resets.last().copied(),
                ];
                let total = sorted(set.iter().map(|c| c.total_ms).collect());
                s.total_ms = [
                    percentile(&total, 50.0),
                    percentile(&total, 95.0),
                    percentile(&total, 99.0),
                ];
                s
            };
            let mut by_phase = Vec::new();
            for (i, p) in self.phases.iter().enumerate() {
                let set: Vec<&ConnSample> = all.iter().copied().filter(|c| c.phase == i).collect();
                if !set.is_empty() {
                    by_phase.push((p.clone(), stats(&set)));
                }
            }
            let mut by_class = Vec::new();
            for c in ClientClass::ALL {
                let set: Vec<&ConnSample> = all.iter().copied().filter(|s| s.client == c).collect();
                if !set.is_empty() {
                    by_class.push((c.to_string(), stats(&set)));
                }
            }
            upstreams.push(UpstreamReport {
                name: u.name.clone(),
                port: u.port,
                total: stats(&all),
                by_phase,
                by_class,
            });
        }
        drop(conns);

        // Time per level, from the timeline.
        let mut levels: Vec<(String, f64)> = Vec::new();
        for s in &self.timeline {
            match levels.iter_mut().find(|(l, _)| *l == s.level) {
                Some(e) => e.1 += s.dt,
                None => levels.push((s.level.clone(), s.dt)),
            }
        }
        let skipped = self
            .runs
            .iter()
            .map(|r| r.skipped.load(Ordering::Relaxed))
            .sum();
        let mut marks = self.marks.clone();
        marks.sort_by(|a, b| a.t.partial_cmp(&b.t).unwrap_or(std::cmp::Ordering::Equal));
        let mut transitions: Vec<BreakerTransition> = self
            .transitions
            .iter()
            .map(|(t, name, from, to, reason, _)| BreakerTransition {
                t: *t,
                upstream: name.clone(),
                from: from.clone(),
                to: to.clone(),
                reason: reason.clone(),
            })
            .collect();
        transitions.sort_by(|a, b| a.t.partial_cmp(&b.t).unwrap_or(std::cmp::Ordering::Equal));
        Report {
            duration: self.now(),
            runs: self
                .runs
                .iter()
                .map(|r| {
                    (
                        r.profile.name.clone(),
                        r.started_at,
                        r.classes.iter().map(|c| c.to_string()).collect(),
                    )
                })
                .collect(),
            ok: classes.iter().all(|c| c.ok),
            classes,
            upstreams,
            marks,
            levels,
            breaker_transitions: transitions,
            limits_changes,
            exact,
            skipped_connections: skipped,
        }
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        self.stop_all();
        for r in &mut self.runs {
            for t in r.threads.drain(..) {
                let _ = t.join();
            }
        }
        self.restore_services();
    }
}

/// A run's datagram sender for one class.
struct UdpJob {
    client: ClientClass,
    series: Arc<Mutex<BTreeMap<ClientClass, Vec<u64>>>>,
    sources: Vec<(Arc<Source>, f64)>,
    works: Vec<(u16, Vec<usize>, f64)>,
    class_share: f64,
    profile: Profile,
    clock: Arc<RunClock>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    board: Arc<Board>,
    shared: Arc<ideal::Shared>,
    epoch: Instant,
    deadline: Instant,
}

impl UdpJob {
    fn run(self) -> Result<()> {
        let mut srcs = Vec::with_capacity(self.sources.len());
        for (s, weight) in &self.sources {
            let sock = UdpSocket::bind(SocketAddr::new(s.addr, 0))
                .with_context(|| format!("bind {}", s.addr))?;
            sock.set_nonblocking(true)?;
            srcs.push(Src {
                sock,
                src: s.clone(),
                weight: *weight,
                ideal: IdealSource::new(s.verdict.clone()),
                sent: vec![0; self.works.len()],
            });
        }
        let payload = vec![0x5au8; 1500];
        // Datagrams wait here to be judged until the record of the limits covers their
        // send time (a few hundred ms), so every limit change applies when it happened.
        let mut pending: std::collections::VecDeque<(f64, usize, usize)> =
            std::collections::VecDeque::new();
        let mut next = Instant::now();
        let mut seq: usize = 0;
        'outer: loop {
            if self.stop.load(Ordering::Relaxed) || Instant::now() > self.deadline {
                break;
            }
            let (t, paused) = self.clock.now();
            if t >= self.profile.duration {
                break;
            }
            if !paused {
                let ops = self.profile.ops_until(t) * self.class_share;
                for (i, s) in srcs.iter_mut().enumerate() {
                    let v6 = s.src.addr.is_ipv6();
                    for (w, (port, sizes, share)) in self.works.iter().enumerate() {
                        let target = (ops * share * s.weight).floor() as u64;
                        let due = target.saturating_sub(s.sent[w]).min(MAX_PER_TICK);
                        let dst = if v6 {
                            SocketAddr::new(IpAddr::V6(SERVICE_V6), *port)
                        } else {
                            SocketAddr::new(IpAddr::V4(SERVICE_V4), *port)
                        };
                        for _ in 0..due {
                            if self.sent.fetch_add(1, Ordering::Relaxed) >= self.profile.max_packets
                            {
                                break 'outer;
                            }
                            let size = sizes[seq % sizes.len()];
                            seq = seq.wrapping_add(1);
                            if s.sock.send_to(&payload[..size], dst).is_ok() {
                                s.src.offered.fetch_add(1, Ordering::Relaxed);
                                pending.push_back((
                                    self.epoch.elapsed().as_secs_f64(),
                                    ideal::udp_frame_len(v6, size),
                                    i,
                                ));
                            }
                        }
                        s.sent[w] += due;
                    }
                }
            }
            self.judge(&mut srcs, &mut pending, self.board.known_until());
            next += TICK;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        // The rest, once the record covers them (bounded: the daemon may be gone).
        let last = pending.back().map_or(0.0, |p| p.0);
        let end = Instant::now() + Duration::from_secs(3);
        while self.board.known_until() < last && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.judge(&mut srcs, &mut pending, f64::INFINITY);
        Ok(())
    }

    fn judge(
        &self,
        srcs: &mut [Src],
        pending: &mut std::collections::VecDeque<(f64, usize, usize)>,
        horizon: f64,
    ) {
        let mut per_second: BTreeMap<usize, u64> = BTreeMap::new();
        while pending.front().is_some_and(|p| p.0 < horizon) {
            let Some((t, len, i)) = pending.pop_front() else {
                break;
            };
            let s = &mut srcs[i];
            if s.ideal.judge(t, len, &self.board, &self.shared) {
                s.src.allowed.fetch_add(1, Ordering::Relaxed);
                *per_second.entry(t.max(0.0) as usize).or_default() += 1;
            }
        }
        if per_second.is_empty() {
            return;
        }
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let v = series.entry(self.client).or_default();
        for (sec, n) in per_second {
            if v.len() <= sec {
                v.resize(sec + 1, 0);
            }
            v[sec] += n;
        }
    }
}

struct Src {
    sock: UdpSocket,
    src: Arc<Source>,
    weight: f64,
    ideal: IdealSource,
    sent: Vec<u64>,
}

/// Reads the daemon's limits and throttle status every 200 ms: the record of limits in
/// force for the ideal buckets (with the daemon's own time of each throttle change), the
/// latest status for the live view, and the offset between the daemon's clock and the lab's.
struct Poller {
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<Option<serde_json::Value>>>,
    offset: Arc<Mutex<Option<f64>>>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    fn start(socket: &Path, epoch: Instant, board: Arc<Board>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(None));
        let offset = Arc::new(Mutex::new(None));
        let thread = {
            let (socket, stop, status, offset) = (
                socket.to_owned(),
                stop.clone(),
                status.clone(),
                offset.clone(),
            );
            std::thread::spawn(move || {
                let mut prev = 0.0;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = epoch.elapsed().as_secs_f64();
                    // Limits first, then status: a level change between the two shows in
                    // the status, and the next round dates the new limits by it.
                    if let (Ok(lv), Ok(sv)) = (
                        admin::get_json(&socket, "/v1/limits"),
                        admin::get_json(&socket, "/v1/status"),
                    ) {
                        let t1 = epoch.elapsed().as_secs_f64();
                        let thr = &sv["throttle"];
                        let off = thr["time_in_level_seconds"].as_f64().map(|in_level| {
                            let at = thr["last_transition"]["at_seconds"].as_f64().unwrap_or(0.0);
                            at + in_level - (t0 + t1) / 2.0
                        });
                        if let Some(o) = off {
                            *offset.lock().unwrap_or_else(|e| e.into_inner()) = Some(o);
                        }
                        let (level, limits) = admin::limits(&lv);
                        let last_level = board.history().last().map(|e| e.level.clone());
                        let transition_to = thr["last_transition"]["to"].as_str();
                        let from = match (
                            last_level,
                            thr["last_transition"]["at_seconds"].as_f64(),
                            off,
                        ) {
                            (Some(l), Some(at), Some(o))
                                if l != level && transition_to == Some(level.as_str()) =>
                            {
                                at - o
                            }
                            _ => (prev + t0) / 2.0,
                        };
                        board.publish(from, &level, limits, t0);
                        *status.lock().unwrap_or_else(|e| e.into_inner()) = Some(sv);
                        prev = t0;
                    }
                    let end = Instant::now() + Duration::from_millis(200);
                    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        };
        Self {
            stop,
            status,
            offset,
            thread: Some(thread),
        }
    }

    fn status(&self) -> Option<serde_json::Value> {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn offset(&self) -> Option<f64> {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct TcpDispatch {
    tx: mpsc::SyncSender<()>,
    queued: Arc<AtomicU64>,
    max_in_flight: u64,
    share: f64,
    profile: Profile,
    clock: Arc<RunClock>,
    stop: Arc<AtomicBool>,
    skipped: Arc<AtomicU64>,
    deadline: Instant,
}

impl TcpDispatch {
    fn run(self) {
        let mut issued: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline {
            let (t, paused) = self.clock.now();
            if t >= self.profile.duration {
                break;
            }
            if !paused {
                let target = (self.profile.ops_until(t) * self.share).floor() as u64;
                while issued < target {
                    issued += 1;
                    if self.queued.load(Ordering::Relaxed) < self.max_in_flight
                        && self.tx.try_send(()).is_ok()
                    {
                        self.queued.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            std::thread::sleep(TICK);
        }
    }
}

struct TcpWorker {
    rx: Arc<Mutex<mpsc::Receiver<()>>>,
    queued: Arc<AtomicU64>,
    src: IpAddr,
    dst: SocketAddr,
    request: Request,
    timeout: Duration,
    think: Duration,
    conns: Arc<Mutex<Vec<ConnSample>>>,
    phase: Arc<AtomicUsize>,
    epoch: Instant,
    run: usize,
    client: ClientClass,
    upstream: String,
    stop: Arc<AtomicBool>,
    deadline: Instant,
}

impl TcpWorker {
    fn run(self) {
        loop {
            if self.stop.load(Ordering::Relaxed) || Instant::now() > self.deadline {
                return;
            }
            let got = self
                .rx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recv_timeout(Duration::from_millis(50));
            match got {
                Ok(()) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    let t = self.epoch.elapsed().as_secs_f64();
                    let phase = self.phase.load(Ordering::Relaxed);
                    let a = conn::attempt(self.src, self.dst, &self.request, self.timeout);
                    self.conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(ConnSample {
                            t,
                            run: self.run,
                            client: self.client,
                            upstream: self.upstream.clone(),
                            outcome: a.outcome,
                            connect_ms: a.connect.map(|d| d.as_secs_f64() * 1e3),
                            total_ms: a.total.as_secs_f64() * 1e3,
                            phase,
                        });
                    let end = Instant::now() + self.think;
                    while Instant::now() < end && !self.stop.load(Ordering::Relaxed) {
                        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Report

/// Outcomes and latencies of a set of connections.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConnStats {
    pub attempts: u64,
    pub ok: u64,
    pub reset: u64,
    pub timeout: u64,
    pub error: u64,
    /// Connect latency p50 / p95 / p99 (ms) of connects that were answered (SYN-ACK or RST).
    pub connect_ms: [Option<f64>; 3],
    /// Latency of the refusals: p50 / p99 / max (ms).
    pub reset_ms: [Option<f64>; 3],
    /// Time to the end of the exchange, p50 / p95 / p99 (ms).
    pub total_ms: [Option<f64>; 3],
}

#[derive(Clone, Debug, Serialize)]
pub struct UpstreamReport {
    pub name: String,
    pub port: u16,
    pub total: ConnStats,
    /// Per phase of the run, in order.
    pub by_phase: Vec<(String, ConnStats)>,
    /// Per client class.
    pub by_class: Vec<(String, ConnStats)>,
}

/// One client class over the whole run.
#[derive(Clone, Debug, Serialize)]
pub struct ClassReport {
    pub client: ClientClass,
    /// What the rules made of it: a daemon class, "… (allow)" or "deny rule".
    pub verdict: String,
    pub sources_v4: usize,
    pub sources_v6: usize,
    pub tcp_clients: usize,
    pub offered: u64,
    pub passed: u64,
    pub dropped: u64,
    /// What the ideal buckets with the limits in force passed of what was offered.
    pub allowed: u64,
    pub buckets: usize,
    /// Whether sources share buckets (aggregation coarser than the generator's addresses).
    pub shared_buckets: bool,
    /// Buckets that passed more than allowed + 1 (+2 per limit change), and the worst excess.
    pub buckets_over: usize,
    /// Buckets that lost datagrams (were held to their limit).
    pub limited_buckets: usize,
    pub worst_excess: u64,
    pub ok: bool,
    pub check: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct BreakerTransition {
    /// Seconds since the lab started (negative: before it).
    pub t: f64,
    pub upstream: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The final report of a lab.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub duration: f64,
    /// (profile, started at, classes).
    pub runs: Vec<(String, f64, Vec<String>)>,
    pub classes: Vec<ClassReport>,
    pub upstreams: Vec<UpstreamReport>,
    pub marks: Vec<Mark>,
    /// Seconds spent at each throttle level, in order of first appearance.
    pub levels: Vec<(String, f64)>,
    pub breaker_transitions: Vec<BreakerTransition>,
    /// How often the limits in force changed during the run (throttle).
    pub limits_changes: usize,
    /// Whether "allowed" is exact (the limits never changed) or follows the changes with up
    /// to a second's delay.
    pub exact: bool,
    pub skipped_connections: u64,
    /// Every client class within its check.
    pub ok: bool,
}

/// How "allowed" is computed, for reports.
pub const ALLOWED_NOTE: &str = "allowed = what a perfect token bucket per source would pass of the datagrams offered, judged \
packet by packet at their send times with the rate and burst in force (/v1/limits read every 200 ms, throttle factor \
included; each change applied at the moment the daemon's throttle changed level): the integral of the effective rate \
plus the burst, capped by what was offered. A new bucket starts full; on a change the tokens left are kept up to the \
new burst; sources over a class's admission budget share its overflow bucket. Checks: a limited class passes at most \
allowed + 1 in every bucket (+2 per limit change: trafficd rewrites buckets a few ms after the level changes) and at \
least 95 % of allowed in total; an allowed class loses nothing; a denied one gets nothing.";

fn ms(v: Option<f64>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |x| {
            if x < 10.0 {
                format!("{x:.2}")
            } else {
                format!("{x:.0}")
            }
        },
    )
}

impl Report {
    /// The report as text: per class, per upstream (and per phase), transitions, levels.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "per client class (datagrams; {})",
            if self.exact {
                "limits constant all run".to_owned()
            } else {
                format!("the limits in force changed {} times", self.limits_changes)
            }
        );
        let _ = writeln!(
            o,
            "  {:<9} {:<17} {:>9} {:>9} {:>9} {:>9} {:>9}  CHECK",
            "CLASS", "RULE → CLASS", "SOURCES", "OFFERED", "PASSED", "DROPPED", "ALLOWED"
        );
        for c in &self.classes {
            let _ = writeln!(
                o,
                "  {:<9} {:<17} {:>9} {:>9} {:>9} {:>9} {:>9}  {} {}",
                c.client.as_str(),
                c.verdict,
                format!("{}+{}", c.sources_v4, c.sources_v6),
                c.offered,
                c.passed,
                c.dropped,
                c.allowed,
                if c.ok { "ok:" } else { "FAIL:" },
                c.check
            );
        }
        let _ = writeln!(
            o,
            "  (SOURCES = IPv4+IPv6 datagram sources, one bucket each; TCP clients use addresses of their own)"
        );
        if !self.upstreams.is_empty() {
            let _ = writeln!(o, "\nper upstream (TCP connections; latency in ms)");
            let _ = writeln!(
                o,
                "  {:<22} {:>7} {:>6} {:>6} {:>7} {:>6}  {:>21}  {:>16}",
                "UPSTREAM / PHASE",
                "CONNS",
                "OK",
                "RESET",
                "TIMEOUT",
                "ERROR",
                "CONNECT p50/p95/p99",
                "RESET p50/p99"
            );
            for u in &self.upstreams {
                let row = |o: &mut String, name: &str, s: &ConnStats| {
                    let _ = writeln!(
                        o,
                        "  {:<22} {:>7} {:>6} {:>6} {:>7} {:>6}  {:>21}  {:>16}",
                        name,
                        s.attempts,
                        s.ok,
                        s.reset,
                        s.timeout,
                        s.error,
                        format!(
                            "{}/{}/{}",
                            ms(s.connect_ms[0]),
                            ms(s.connect_ms[1]),
                            ms(s.connect_ms[2])
                        ),
                        format!("{}/{}", ms(s.reset_ms[0]), ms(s.reset_ms[1])),
                    );
                };
                row(&mut o, &format!("{}:{}", u.name, u.port), &u.total);
                if u.by_phase.len() > 1 {
                    for (p, s) in &u.by_phase {
                        row(
                            &mut o,
                            &format!("  {}", p.chars().take(20).collect::<String>()),
                            s,
                        );
                    }
                }
                for (c, s) in &u.by_class {
                    row(&mut o, &format!("  from {c}"), s);
                }
            }
            if self.skipped_connections > 0 {
                let _ = writeln!(
                    o,
                    "  ({} connections not started: every client of the class was busy — in-flight is bounded)",
                    self.skipped_connections
                );
            }
        }
        let _ = writeln!(o, "\nbreaker transitions");
        if self.breaker_transitions.is_empty() {
            let _ = writeln!(o, "  none");
        }
        for t in &self.breaker_transitions {
            let _ = writeln!(
                o,
                "  {:>6.1}s  {:<5} {} → {}: {}",
                t.t, t.upstream, t.from, t.to, t.reason
            );
        }
        let _ = writeln!(o, "\nthrottle levels seen");
        let _ = writeln!(
            o,
            "  {}",
            self.levels
                .iter()
                .map(|(l, s)| format!("{l} {s:.0}s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let changes: Vec<String> = self
            .marks
            .iter()
            .filter(|m| m.kind == "level")
            .map(|m| format!("{:.0}s {}", m.t, m.label.trim_start_matches("level ")))
            .collect();
        if !changes.is_empty() {
            let _ = writeln!(o, "  changes: {}", changes.join(" → "));
        }
        o
    }
}
