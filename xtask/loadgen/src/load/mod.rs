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
//! - **Observed**: [`Generator::tick`] (once a second) reads the senders' counters, the node's
//!   receivers, the TCP outcomes and the daemon's admin API into a [`Second`]; the ideal
//!   buckets of [`crate::ideal`] say what the limits in force allowed of every datagram.
//!
//! Each datagram source and each TCP client has an address of its own (no bucket is shared
//! between two of them, under the shipped /32 and /64 aggregation), so "allowed" per bucket
//! is exact arithmetic.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    conn::ConnOutcome,
    ideal::{self, Board, Classifier, SourceRule},
    profile::{ClientClass, Profile},
    services::{Kind, Services},
};
use traffic_testkit::{
    topo::{HostSpec, Topology},
    udp::UdpSink,
};

mod clock;
mod poller;
mod report;
mod runs;
mod sample;
mod tcp;
mod udp;
mod upstreams;

pub use clock::RunClock;
pub use report::{
    ALLOWED_NOTE, BreakerTransition, ClassReport, ConnStats, LoadReport, UpstreamReport,
};
pub use sample::{ClassSecond, Mark, Second, UpstreamSecond};

use poller::Poller;

/// Sending tick of the datagram threads.
const TICK: Duration = Duration::from_millis(5);
/// Most datagrams one source sends in one tick (a stalled thread catches up gradually).
const MAX_PER_TICK: u64 = 256;

/// A source address the generator uses, with its live counters.
#[derive(Debug)]
pub struct Source {
    pub addr: IpAddr,
    pub client: ClientClass,
    pub verdict: SourceRule,
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
    pub outcome: ConnOutcome,
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

#[derive(Default)]
struct Pool {
    next_v4: u32,
    next_v6: u32,
}

/// The generator and observer of one lab.
pub struct Generator<'t> {
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

/// Prepare the clients' ends of their links for the gate's XDP_TX frames ([`ClientLinks`]);
/// also lets the clients reuse TIME_WAIT ports. The XDP_PASS links, to keep.
fn prepare_client_links(
    topo: &Topology,
    links: ClientLinks,
) -> Result<Vec<crate::xdp_pass::PassLink>> {
    let mut pass_links = Vec::new();
    for c in ClientClass::ALL {
        let h = topo
            .hosts
            .iter()
            .find(|h| h.spec.name == c.host())
            .with_context(|| format!("the topology has no host {} for {c}", c.host()))?;
        match links {
            ClientLinks::Plain => {}
            ClientLinks::Gro => h.ns.gro_on(&h.host_if)?,
            ClientLinks::XdpPass => pass_links.push(crate::xdp_pass::attach(&h.ns, &h.host_if)?),
        }
        // Many short connections from few addresses: reuse TIME_WAIT ports.
        let _ = h.ns.sysctl("net.ipv4.tcp_tw_reuse", "1");
    }
    Ok(pass_links)
}

/// The TCP upstreams of the daemon config (those the generator can load).
fn tcp_upstreams(config: &toml::Table) -> Vec<Upstream> {
    config
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
        .collect()
}

/// Raise the open-file limit to its hard maximum (thousands of source sockets).
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
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

impl<'t> Generator<'t> {
    /// A lab on a topology built from [`host_specs`], for the daemon running (or about to
    /// run: see [`Generator::set_daemon_started`]) with `config` and answering on `socket`;
    /// `links` says how the clients' ends of their links are prepared for the RSTs the XDP
    /// gate sends back ([`ClientLinks`]).
    pub fn new(
        topo: &'t Topology,
        config: &toml::Table,
        socket: &Path,
        links: ClientLinks,
    ) -> Result<Self> {
        raise_nofile();
        let pass_links = prepare_client_links(topo, links)?;
        let upstreams = tcp_upstreams(config);
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
    pub fn verdict_of(&self, c: ClientClass) -> SourceRule {
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
}

impl Drop for Generator<'_> {
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
