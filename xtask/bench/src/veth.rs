//! Suite b, `veth`: receive CPU per packet under a veth flood (see the crate docs).

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use aya::programs::XdpMode;
use traffic_common::Reason;
use traffic_ebpf_bench::{self as gen_abi, GenConfig};
use traffic_loadgen::{
    flood::{self, FloodNet},
    peers::{self, Hashlimit, NftMeter, SourceLimit},
    stats::{BenchReport as Report, Bound, rotation},
};

use crate::{
    BURST, MAX_SOURCES, RATE,
    args::Plan,
    load::{BenchObject, Traffic, xdp_mut},
    runs::{Receiver, RxDelta, Samples, Sent, generate, span_secs, udp4},
};

/// Sources of the veth flood (198.18.0.0/20).
const VETH_SOURCES: u64 = 4096;

/// Offered load of the paced floods, frames per second: below what either paced variant's
/// receiver takes on average (the generator delivers ~2.1 Mpps of it here; traffic's ring
/// still overflows in bursts, 4–7 % of the frames). In the unpaced flood the traffic
/// receiver saturates (a bare XDP_DROP does not): its ring overflows, the generator's CPU
/// returns the frames it could not send into the page pool the receiver returns its own to,
/// and the receiver pays for contention on that lock.
const PACED_RATE: f64 = 2.5e6;

/// The variants also measured at [`PACED_RATE`].
const PACED: [Peer; 2] = [Peer::XdpDrop, Peer::Traffic];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    None,
    XdpDrop,
    Traffic,
    Nft,
    Iptables,
}

impl Peer {
    pub(crate) const ALL: [Peer; 5] = [
        Peer::None,
        Peer::XdpDrop,
        Peer::Traffic,
        Peer::Nft,
        Peer::Iptables,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::None => "none",
            Peer::XdpDrop => "xdp_drop",
            Peer::Traffic => "traffic",
            Peer::Nft => "nft",
            Peer::Iptables => "iptables",
        }
    }

    pub(crate) fn about(self) -> &'static str {
        match self {
            Peer::None => "no filter: up the stack to a UDP port nobody listens on",
            Peer::XdpDrop => "bare XDP_DROP attached (native veth XDP)",
            Peer::Traffic => {
                "traffic program attached by the daemon adapter, 10/s burst 10 per source"
            }
            Peer::Nft => "nftables netdev ingress per-source meter, 10/s burst 10",
            Peer::Iptables => "iptables hashlimit (raw PREROUTING), 10/s burst 10 per source",
        }
    }

    pub(crate) fn limits(self) -> bool {
        matches!(self, Peer::Traffic | Peer::Nft | Peer::Iptables)
    }
}

fn veth_config(iface: &str) -> String {
    format!(
        "[daemon]\ninterfaces = [\"{iface}\"]\nmax_sources = {MAX_SOURCES}\n\
         [classes.default]\npackets = {{ rate = {RATE}, burst = {BURST} }}\n"
    )
}

pub(crate) fn run(bench: &mut BenchObject, plan: &Plan) -> Result<Report> {
    let mut report = Report::new(
        "veth",
        "b. receive CPU per packet, veth flood from 4096 sources",
    );
    let net = FloodNet::create(&traffic_testkit::topo::unique_tag())
        .context("create the flood namespaces")?;
    let rx = Receiver::setup(&net, &mut report)?;
    let traffic = Traffic::load("veth", &veth_config(&net.rcv_if), false)?;
    let limit = SourceLimit {
        rate_per_sec: RATE,
        burst: BURST,
        max_sources: MAX_SOURCES,
    };
    let mut lab = VethLab {
        frame: udp4(Ipv4Addr::new(198, 18, 0, 0)),
        gen_cfg: GenConfig {
            family: gen_abi::FAMILY_V4,
            flood_base: u64::from(u32::from(Ipv4Addr::new(198, 18, 0, 0))),
            flood_mask: VETH_SOURCES - 1,
            ..GenConfig::default()
        },
        net,
        rx,
        traffic,
        limit,
    };
    lab.meta(&mut report, plan);
    let s = lab.measure(bench, plan)?;
    figures(&mut report, s, plan.reps);
    ratios_and_targets(&mut report);
    Ok(report)
}

/// The flood namespaces, the receiver's counters and the limiters under test. Fields drop
/// in order: the traffic program's pins go before the namespaces.
struct VethLab {
    frame: Vec<u8>,
    gen_cfg: GenConfig,
    traffic: Traffic,
    rx: Receiver,
    net: FloodNet,
    limit: SourceLimit,
}

impl VethLab {
    /// What the run measured against: the flood, the limit, the peers' versions and rules.
    fn meta(&self, report: &mut Report, plan: &Plan) {
        let (net, limit, frame) = (&self.net, self.limit, &self.frame);
        report.meta("sources", VETH_SOURCES);
        report.meta("frames_per_run", plan.veth_frames);
        report.meta("seconds_per_run_max", plan.veth_time.as_secs_f64());
        report.meta("frame_bytes", frame.len());
        report.meta("limit", format!("{RATE}/s burst {BURST} per source"));
        report.meta("nft", peers::tool_version("nft", "--version"));
        report.meta("iptables", peers::tool_version("iptables", "--version"));
        report.meta("nft_ruleset", peers::nft_meter_ruleset(&net.rcv_if, limit));
        report.meta(
            "iptables_rule",
            peers::hashlimit_rule(limit, false).join(" "),
        );
    }

    /// Every variant once per repetition, in rotating order, after a short warm-up.
    fn measure(&mut self, bench: &mut BenchObject, plan: &Plan) -> Result<Samples> {
        let mut s = Samples::default();
        // A short warm-up of every variant (not recorded): page pools, maps and hash tables
        // are in their steady state before the first measurement.
        let warm = Plan {
            veth_frames: plan.veth_frames / 10,
            ..plan.clone()
        };
        for v in Peer::ALL {
            self.run(bench, v, &warm, None)?;
        }
        for rep in 0..plan.reps {
            for v in rotation(&Peer::ALL, rep) {
                let m = self
                    .run(bench, v, plan, None)
                    .with_context(|| format!("veth flood, {}", v.name()))?;
                push_samples(&mut s, rep, "", v, &m);
            }
            for v in rotation(&PACED, rep) {
                let m = self
                    .run(bench, v, plan, Some(PACED_RATE))
                    .with_context(|| format!("paced veth flood, {}", v.name()))?;
                push_samples(&mut s, rep, "paced.", v, &m);
            }
        }
        Ok(s)
    }

    /// One flood through variant `v` (paced at `rate` frames per second when given),
    /// attached for the run and detached after it.
    fn run(
        &mut self,
        bench: &mut BenchObject,
        v: Peer,
        plan: &Plan,
        rate: Option<f64>,
    ) -> Result<VethRun> {
        let (net, limit) = (&self.net, self.limit);
        let traffic = &mut self.traffic;
        bench.configure(&GenConfig {
            flood_interval_ns: rate.map_or(0, |r| (1e9 / r) as u64),
            ..self.gen_cfg
        })?;
        bench.reset()?;
        let default_slot = traffic.slot("default")?;
        // Attach the variant; its guard (or explicit detach below) removes it.
        let mut xdp_link = None;
        let mut _nft = None;
        let mut _ipt = None;
        match v {
            Peer::None => {}
            Peer::XdpDrop => {
                let _in = flood::enter(&net.receiver)?;
                let iface =
                    std::ffi::CString::new(net.rcv_if.as_str()).context("interface name")?;
                let prog = xdp_mut(&mut bench.ebpf, gen_abi::FLOOR_PROGRAM)?;
                xdp_link = Some(
                    prog.attach(iface.as_c_str(), XdpMode::Driver)
                        .context("attach floor_drop")?,
                );
            }
            Peer::Traffic => traffic.attach(net)?,
            Peer::Nft => _nft = Some(NftMeter::install(&net.receiver, &net.rcv_if, limit)?),
            Peer::Iptables => _ipt = Some(Hashlimit::install(&net.receiver, limit)?),
        }
        let measured = self.flood(bench, v, default_slot, plan);
        let (net, traffic) = (&self.net, &mut self.traffic);
        match v {
            Peer::XdpDrop => {
                if let Some(id) = xdp_link {
                    let _in = flood::enter(&net.receiver)?;
                    xdp_mut(&mut bench.ebpf, gen_abi::FLOOR_PROGRAM)?
                        .detach(id)
                        .context("detach floor_drop")?;
                }
            }
            Peer::Traffic => traffic.detach(net)?,
            _ => {}
        }
        measured
    }

    /// The flood itself, with the receiver's and the program's counters around it.
    fn flood(
        &self,
        bench: &mut BenchObject,
        v: Peer,
        default_slot: u32,
        plan: &Plan,
    ) -> Result<VethRun> {
        let (net, rx, traffic, frame) = (&self.net, &self.rx, &self.traffic, &self.frame);
        let passed_before = traffic.counter(default_slot, Reason::Pass)?.packets;
        let a = rx.snapshot(net)?;
        let sent = generate(bench, net, frame, plan.veth_frames, plan.veth_time)?;
        let b = rx.snapshot(net)?;
        let passed_after = traffic.counter(default_slot, Reason::Pass)?.packets;
        let st = bench.state()?;
        Ok(VethRun {
            held: st.held,
            sent,
            rx: RxDelta::between(&a, &b),
            span: span_secs(&st),
            program_passed: (v == Peer::Traffic).then_some(passed_after - passed_before),
        })
    }
}

/// One run's figures, under the variant's names (after `prefix`).
fn push_samples(s: &mut Samples, rep: usize, prefix: &str, v: Peer, m: &VethRun) {
    let n = format!("{prefix}{}", v.name());
    let sent = m.sent.frames.saturating_sub(m.held);
    s.push(&format!("{n}.ns_per_packet"), rep, m.rx.ns_per_packet());
    s.push(
        &format!("{n}.mpps"),
        rep,
        m.rx.processed as f64 / m.span / 1e6,
    );
    s.push(
        &format!("{n}.processed_share"),
        rep,
        m.rx.processed as f64 / sent as f64,
    );
    s.push(
        &format!("{n}.generator_mpps"),
        rep,
        sent as f64 / m.sent.wall.as_secs_f64() / 1e6,
    );
    if v.limits() {
        let allowance = VETH_SOURCES as f64 * (f64::from(RATE) * m.span + f64::from(BURST));
        s.push(
            &format!("{n}.passed/allowance"),
            rep,
            m.rx.reached_udp as f64 / allowance,
        );
    }
    if let Some(p) = m.program_passed {
        s.push(
            &format!("{prefix}traffic.program_passed/udp"),
            rep,
            p as f64 / m.rx.reached_udp.max(1) as f64,
        );
    }
}

/// Receive CPU per packet and the context figures of every variant.
fn figures(report: &mut Report, mut s: Samples, reps: usize) {
    // A figure under the name its samples were pushed under.
    let mut put = |name: String, unit: &str, about: &str| {
        let samples = s.take(&name, reps);
        report.figure(&name, unit, about, samples);
    };
    for v in Peer::ALL {
        put(
            format!("{}.ns_per_packet", v.name()),
            "ns/packet",
            v.about(),
        );
    }
    for v in Peer::ALL {
        put(
            format!("{}.mpps", v.name()),
            "Mpps",
            "frames processed per second of generator time (context only: swings ±40%)",
        );
    }
    for v in Peer::ALL {
        put(
            format!("{}.processed_share", v.name()),
            "share",
            "frames the receiver processed / frames generated (the rest: receiver ring full)",
        );
    }
    for v in Peer::ALL {
        put(
            format!("{}.generator_mpps", v.name()),
            "Mpps",
            "frames the generator sent per second (context)",
        );
    }
    for v in Peer::ALL.into_iter().filter(|v| v.limits()) {
        put(
            format!("{}.passed/allowance", v.name()),
            "share",
            "datagrams that reached UDP / (4096 × (rate·t + burst)); ≤ 1 holds the limit",
        );
    }
    put(
        "traffic.program_passed/udp".to_owned(),
        "share",
        "traffic's own pass counter over what reached UDP (cross-check, ≈ 1)",
    );
    for v in PACED {
        let n = format!("paced.{}", v.name());
        for (what, unit, about) in [
            (
                "ns_per_packet",
                "ns/packet",
                "receive CPU per packet, flood paced at 2.5 Mpps (below the receiver's capacity)",
            ),
            (
                "processed_share",
                "share",
                "frames processed / frames sent, paced (the rest: ring full in a burst)",
            ),
            ("mpps", "Mpps", "frames processed per second, paced"),
            (
                "generator_mpps",
                "Mpps",
                "frames the paced generator sent per second (2.5 asked)",
            ),
        ] {
            put(format!("{n}.{what}"), unit, about);
        }
        if v.limits() {
            put(
                format!("{n}.passed/allowance"),
                "share",
                "datagrams that reached UDP / (4096 × (rate·t + burst)), paced",
            );
        }
    }
    put(
        "paced.traffic.program_passed/udp".to_owned(),
        "share",
        "traffic's own pass counter over what reached UDP, paced (≈ 1)",
    );
}

/// The paired ratios and the targets they are judged by.
fn ratios_and_targets(report: &mut Report) {
    report.ratio(
        "traffic/nft",
        "traffic.ns_per_packet",
        "nft.ns_per_packet",
        "traffic's receive CPU over the nftables meter's",
    );
    report.ratio(
        "traffic/xdp_drop",
        "traffic.ns_per_packet",
        "xdp_drop.ns_per_packet",
        "traffic's receive CPU over bare XDP_DROP's",
    );
    report.ratio(
        "traffic/iptables",
        "traffic.ns_per_packet",
        "iptables.ns_per_packet",
        "traffic's receive CPU over iptables hashlimit's",
    );
    report.ratio(
        "traffic/none",
        "traffic.ns_per_packet",
        "none.ns_per_packet",
        "traffic's receive CPU over no filter at all",
    );
    report.ratio(
        "nft/none",
        "nft.ns_per_packet",
        "none.ns_per_packet",
        "nftables meter over no filter",
    );
    report.ratio(
        "paced.traffic/xdp_drop",
        "paced.traffic.ns_per_packet",
        "paced.xdp_drop.ns_per_packet",
        "traffic's receive CPU over bare XDP_DROP's, both at 2.5 Mpps offered (neither saturated)",
    );
    report.target(
        "veth flood: CPU per packet ≤ 0.2× the nftables meter's (issue 16)",
        "traffic/nft",
        Bound::AtMost(0.2),
        None,
    );
    report.target(
        "veth flood: CPU per packet ≤ 1.8× bare XDP_DROP's (issue 16)",
        "traffic/xdp_drop",
        Bound::AtMost(1.8),
        None,
    );
    report.target(
        "veth flood: traffic passes no more than the limit allows",
        "traffic.passed/allowance",
        Bound::AtMost(1.0),
        None,
    );
}

struct VethRun {
    sent: Sent,
    /// Frames a paced generator held back (never sent).
    held: u64,
    rx: RxDelta,
    /// Generator span (kernel clock), s.
    span: f64,
    program_passed: Option<u64>,
}
