//! Suite c, `accuracy`: limits under a flood from ≥ 10⁶ spoofed sources (see the crate docs).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use traffic_common::{BucketKey, Reason};
use traffic_daemon::dataplane::Dataplane as _;
use traffic_ebpf_bench::{self as gen_abi, GenConfig, GenState, LegitStat};
use traffic_loadgen::{
    flood::{self, FloodNet},
    stats::{BenchReport as Report, Bound, rotation},
};

use crate::{
    BURST, FLOOD_PORT, GEN_CPU, MAX_SOURCES, RATE, XDP_PASS,
    args::Plan,
    load::{BenchObject, Traffic},
    runs::{Receiver, RxDelta, Samples, generate, span_secs, udp6},
    testrun::{SPOOF_MASK, fill_buckets},
};

/// Legitimate sources, and how much faster than their limit they send.
const LEGIT: u32 = 64;
const LEGIT_OVERSEND: u32 = 30;
/// Admission budget and overflow bucket of the guarded class.
const ADMISSION_RATE: u32 = 1000;
const OVERFLOW_RATE: u32 = 1000;
const OVERFLOW_BURST: u32 = 1000;
/// Source words: legitimate i → 2001:db8:1:i::1, spoofed k → 2001:db8:8000+(k>>16):k::1.
const LEGIT_BASE: u64 = 0x0001_0000;
const FLOOD_BASE: u64 = 0x8000_0000;

fn accuracy_config(iface: &str, admission: bool) -> String {
    let mut c = format!(
        "[daemon]\ninterfaces = [\"{iface}\"]\nmax_sources = {MAX_SOURCES}\n\
         [classes.default]\npackets = {{ rate = {RATE}, burst = {BURST} }}\n"
    );
    if admission {
        c.push_str(&format!(
            "admission = {{ rate = {ADMISSION_RATE}, burst = {ADMISSION_RATE} }}\n\
             overflow = {{ rate = {OVERFLOW_RATE}, burst = {OVERFLOW_BURST} }}\n"
        ));
    }
    c
}

/// Packets seen by each legitimate source's bucket, by masked address.
type LegitBuckets = BTreeMap<[u8; 16], u64>;

/// Packets seen so far by each legitimate source's bucket (by masked address).
fn legit_buckets(traffic: &Traffic, slot: u32) -> Result<LegitBuckets> {
    let wanted: std::collections::BTreeSet<[u8; 16]> =
        (0..LEGIT).map(|i| legit_key(i, slot).addr).collect();
    Ok(traffic
        .kernel
        .buckets()?
        .into_iter()
        .filter(|(k, _)| k.class == slot && wanted.contains(&k.addr))
        .map(|(k, b)| (k.addr, b.packets))
        .collect())
}

/// The bucket of legitimate source `i` (the class aggregates IPv6 by /64).
fn legit_key(i: u32, class: u32) -> BucketKey {
    let mut addr = legit_addr(i).octets();
    addr[8..].fill(0);
    BucketKey { addr, class }
}

fn legit_addr(i: u32) -> Ipv6Addr {
    let w = LEGIT_BASE + u64::from(i);
    Ipv6Addr::new(0x2001, 0xdb8, (w >> 16) as u16, w as u16, 0, 0, 0, 1)
}

pub(crate) fn run(bench: &mut BenchObject, plan: &Plan) -> Result<Report> {
    let mut report = Report::new(
        "accuracy",
        "c. limits under a flood from ≥ 10⁶ spoofed sources",
    );
    let net = FloodNet::create(&traffic_testkit::topo::unique_tag())
        .context("create the flood namespaces")?;
    let rx = Receiver::setup(&net, &mut report)?;
    let mut with = Traffic::load("acc-adm", &accuracy_config(&net.rcv_if, true), true)?;
    let filled = fill_like_a_long_flood(bench, &mut with, &net.rcv_if);
    report.meta("buckets_before_first_flood", filled?);
    let mut without = Traffic::load("acc-lru", &accuracy_config(&net.rcv_if, false), false)?;
    let legit_pps = f64::from(RATE * LEGIT_OVERSEND);
    let gen_cfg = GenConfig {
        family: gen_abi::FAMILY_V6,
        flood_base: FLOOD_BASE,
        flood_mask: SPOOF_MASK,
        legit_base: LEGIT_BASE,
        legit_count: u64::from(LEGIT),
        legit_interval_ns: (1e9 / (legit_pps * f64::from(LEGIT))) as u64,
        flood_interval_ns: 0,
    };
    meta(&mut report, plan, legit_pps);
    let mut s = Samples::default();
    for rep in 0..plan.reps {
        for adm in rotation(&VARIANTS, rep) {
            let traffic = if adm { &mut with } else { &mut without };
            let m = accuracy_run(bench, &net, &rx, traffic, &gen_cfg, plan)
                .with_context(|| format!("accuracy, {}", name(adm)))?;
            push_samples(&mut s, rep, adm, &m);
        }
    }
    figures(&mut report, s, plan.reps);
    targets(&mut report);
    drop(with);
    drop(without);
    drop(net);
    Ok(report)
}

/// The variants: admission on, then off.
const VARIANTS: [bool; 2] = [true, false];

fn name(admission: bool) -> &'static str {
    if admission {
        "admission"
    } else {
        "no_admission"
    }
}

/// Fill the bucket map with admitted spoofed sources, as after a long flood: admitted
/// sources then evict others, and lookups of new sources miss a cold table. Returns the
/// buckets the map then holds.
fn fill_like_a_long_flood(bench: &mut BenchObject, with: &mut Traffic, iface: &str) -> Result<u64> {
    let all: Vec<usize> = (0..traffic_testkit::netns::online_cpus()).collect();
    flood::set_affinity(0, &[GEN_CPU])?;
    let filled = with.slot("default").and_then(|slot| {
        fill_buckets(
            bench,
            with,
            slot,
            &accuracy_config(iface, true).replace(
                &format!("admission = {{ rate = {ADMISSION_RATE}, burst = {ADMISSION_RATE} }}"),
                "admission = { rate = 1000000000, burst = 1000000000 }",
            ),
            &accuracy_config(iface, true),
        )
    });
    flood::set_affinity(0, &all)?;
    filled
}

/// What the run measured against.
fn meta(report: &mut Report, plan: &Plan, legit_pps: f64) {
    report.meta("spoofed_sources", SPOOF_MASK + 1);
    report.meta("legit_sources", LEGIT);
    report.meta("legit_pps_each", legit_pps);
    report.meta("limit", format!("{RATE}/s burst {BURST} per source"));
    report.meta(
        "admission",
        format!("{ADMISSION_RATE}/s burst {ADMISSION_RATE}"),
    );
    report.meta(
        "overflow",
        format!("{OVERFLOW_RATE}/s burst {OVERFLOW_BURST}"),
    );
    report.meta("flood_seconds", plan.accuracy_time.as_secs_f64());
    report.meta("max_sources", MAX_SOURCES);
}

/// One run's figures, under the variant's names.
fn push_samples(s: &mut Samples, rep: usize, adm: bool, m: &AccuracyRun) {
    let n = name(adm);
    s.push(&format!("{n}.legit_kept_min"), rep, m.kept_min);
    s.push(&format!("{n}.legit_kept_median"), rep, m.kept_median);
    s.push(&format!("{n}.legit_kept_max"), rep, m.kept_max);
    s.push(&format!("{n}.legit_excess_max"), rep, m.excess_max);
    s.push(&format!("{n}.legit_reached_min"), rep, m.reached_min);
    s.push(
        &format!("{n}.legit_kept_of_reached_min"),
        rep,
        m.kept_of_reached_min,
    );
    s.push(
        &format!("{n}.spoofed_sources_received_est"),
        rep,
        m.distinct_received_est,
    );
    s.push(&format!("{n}.spoofed_sources"), rep, m.distinct as f64);
    s.push(
        &format!("{n}.flood_mpps"),
        rep,
        m.processed as f64 / m.span / 1e6,
    );
    s.push(&format!("{n}.ns_per_packet"), rep, m.ns_per_packet);
    s.push(
        &format!("{n}.flood_passed_per_s"),
        rep,
        m.flood_passed as f64 / m.span,
    );
    if adm {
        s.push(
            "admission.overflow_passed/allowance",
            rep,
            m.overflow_passed as f64 / m.overflow_allowance,
        );
        s.push("admission.overflow_passed", rep, m.overflow_passed as f64);
        s.push("admission.receiver_lag_ms", rep, m.lag * 1e3);
        s.push(
            "admission.overflow_excess",
            rep,
            m.overflow_passed as f64 - m.overflow_allowance,
        );
    }
}

/// The figures of each variant: name, unit, what it is.
const VARIANT_FIGURES: [(&str, &str, &str); 11] = [
    (
        "legit_kept_min",
        "share",
        "worst legitimate source: passed / (rate·t + burst)",
    ),
    (
        "legit_kept_median",
        "share",
        "median legitimate source: passed / (rate·t + burst)",
    ),
    (
        "legit_kept_max",
        "share",
        "best legitimate source (> 1: it got more than its limit)",
    ),
    (
        "legit_excess_max",
        "packets",
        "most packets a legitimate source passed beyond rate·(t + receiver lag) + burst",
    ),
    (
        "legit_reached_min",
        "share",
        "worst legitimate source: packets that reached the program / (rate·t + burst) (< 1: the veth ring dropped them first)",
    ),
    (
        "legit_kept_of_reached_min",
        "share",
        "worst legitimate source: passed / min(rate·t + burst, packets that reached the program)",
    ),
    (
        "spoofed_sources",
        "sources",
        "distinct spoofed sources the generator sent",
    ),
    (
        "spoofed_sources_received_est",
        "sources",
        "distinct spoofed sources the receiver processed, estimated: 2²⁰·(1 − (1 − processed share)^(sent / 2²⁰))",
    ),
    (
        "flood_mpps",
        "Mpps",
        "frames processed per second (context)",
    ),
    (
        "ns_per_packet",
        "ns/packet",
        "receive CPU per packet during the flood (context)",
    ),
    (
        "flood_passed_per_s",
        "packets/s",
        "spoofed packets that reached the sink per second",
    ),
];

/// Every variant's figures, and the overflow bucket's.
fn figures(report: &mut Report, mut s: Samples, reps: usize) {
    for adm in VARIANTS {
        let n = name(adm);
        let what = if adm { "admission on" } else { "admission off" };
        for (k, unit, about) in VARIANT_FIGURES {
            let fname = format!("{n}.{k}");
            report.figure(
                &fname,
                unit,
                &format!("{about}; {what}"),
                s.take(&fname, reps),
            );
        }
    }
    report.figure(
        "admission.overflow_passed",
        "packets",
        "packets the overflow bucket passed (class statistics)",
        s.take("admission.overflow_passed", reps),
    );
    report.figure(
        "admission.receiver_lag_ms",
        "ms",
        "from the generator's last frame until the receiver was idle (added to t in the bounds)",
        s.take("admission.receiver_lag_ms", reps),
    );
    report.figure(
        "admission.overflow_excess",
        "packets",
        "overflow passes beyond (overflow rate·t + burst), t the generator's span + receiver lag",
        s.take("admission.overflow_excess", reps),
    );
    report.figure(
        "admission.overflow_passed/allowance",
        "share",
        "overflow passes / (overflow rate·t + burst), t the flood's span",
        s.take("admission.overflow_passed/allowance", reps),
    );
}

/// The targets the suite is judged by.
fn targets(report: &mut Report) {
    report.target(
        "flood from ≥ 1,000,000 distinct spoofed sources",
        "admission.spoofed_sources",
        Bound::AtLeast(1e6),
        None,
    );
    report.target(
        "every tracked legitimate source keeps ≥ 95 % of its allowance",
        "admission.legit_kept_min",
        Bound::AtLeast(0.95),
        None,
    );
    report.target(
        "no legitimate source gets more than its allowance (1 packet of rounding slack)",
        "admission.legit_excess_max",
        Bound::AtMost(1.0),
        None,
    );
    report.target(
        "the overflow bucket passes no more than its own limit (1 packet of rounding slack)",
        "admission.overflow_excess",
        Bound::AtMost(1.0),
        None,
    );
}

struct AccuracyRun {
    kept_min: f64,
    kept_median: f64,
    kept_max: f64,
    /// Worst legitimate source: packets that reached the program / allowance (ring drops
    /// before the filter show here).
    reached_min: f64,
    /// Worst legitimate source: passed / min(allowance, packets that reached the program).
    kept_of_reached_min: f64,
    excess_max: f64,
    distinct: u64,
    distinct_received_est: f64,
    pub(crate) processed: u64,
    pub(crate) span: f64,
    pub(crate) ns_per_packet: f64,
    flood_passed: u64,
    overflow_passed: u64,
    overflow_allowance: f64,
    /// Seconds from the generator's end until the receiver was idle.
    lag: f64,
}

/// The legitimate sources as the sink and the program saw them.
#[derive(Default)]
struct LegitSeen {
    /// Per source: passed / allowance.
    kept: Vec<f64>,
    /// Per source: packets that reached the program / allowance.
    reached: Vec<f64>,
    /// Per source: passed / min(allowance, packets that reached the program).
    kept_of_reached: Vec<f64>,
    /// Most packets a source passed beyond rate·(t + lag) + burst.
    excess_max: f64,
    /// Packets of all legitimate sources that reached the sink.
    passed: u64,
}

/// What each legitimate source sent, what reached the program and what passed.
fn legit_seen(
    legit: &[LegitStat],
    counts: &traffic_testkit::udp::Counts,
    (before, after): (&LegitBuckets, &LegitBuckets),
    slot: u32,
    lag: f64,
) -> Result<LegitSeen> {
    let debug = std::env::var_os("TRAFFIC_BENCH_DEBUG").is_some();
    let mut seen_all = LegitSeen {
        excess_max: f64::NEG_INFINITY,
        ..LegitSeen::default()
    };
    for (i, l) in legit.iter().enumerate() {
        ensure!(l.sent > 0, "legitimate source {i} sent nothing");
        let t = (l.last_ns - l.first_ns) as f64 / 1e9;
        let allowance = f64::from(RATE) * t + f64::from(BURST);
        let passed = counts
            .get(&IpAddr::V6(legit_addr(i as u32)))
            .copied()
            .unwrap_or(0);
        seen_all.passed += passed;
        seen_all.kept.push(passed as f64 / allowance);
        let bound = allowance + f64::from(RATE) * lag;
        seen_all.excess_max = seen_all.excess_max.max(passed as f64 - bound);
        // What reached the program (its bucket's count; gone if the table evicted it).
        let key = legit_key(i as u32, slot).addr;
        let seen = match (before.get(&key), after.get(&key)) {
            (Some(b), Some(a)) if a >= b => Some(a - b),
            _ => None,
        };
        seen_all
            .reached
            .push(seen.map_or(f64::NAN, |n| n as f64 / allowance));
        seen_all
            .kept_of_reached
            .push(seen.map_or(f64::NAN, |n| passed as f64 / allowance.min(n as f64)));
        if debug {
            eprintln!(
                "legit {i}: sent {} over {t:.3} s, reached the program {seen:?}, passed (sink) {passed}, allowance {allowance:.1}",
                l.sent
            );
        }
    }
    Ok(seen_all)
}

/// One flood through `traffic`: its legitimate sources tracked first, then the flood with
/// them interleaved; what each kept and what the overflow bucket passed.
fn accuracy_run(
    bench: &mut BenchObject,
    net: &FloodNet,
    rx: &Receiver,
    traffic: &mut Traffic,
    gen_cfg: &GenConfig,
    plan: &Plan,
) -> Result<AccuracyRun> {
    let slot = traffic.slot("default")?;
    traffic.attach(net)?;
    let measured = (|| -> Result<AccuracyRun> {
        let before = track_legit(traffic, slot)?;
        bench.configure(gen_cfg)?;
        bench.reset()?;
        let f = flood_once(bench, net, rx, traffic, slot, plan)?;
        let legit = bench.legit_stats(LEGIT)?;
        let after = legit_buckets(traffic, slot)?;
        let seen = legit_seen(&legit, &f.counts, (&before, &after), slot, f.lag)?;
        summarise(&f, &seen)
    })();
    traffic.detach(net)?;
    measured
}

/// Track the legitimate sources: one packet each through the program itself (so it knows
/// them however it tracks sources), then let their buckets refill. Returns their buckets'
/// packet counts.
fn track_legit(traffic: &Traffic, slot: u32) -> Result<LegitBuckets> {
    for i in 0..LEGIT {
        let (action, _) = traffic.kernel.test_run(&udp6(legit_addr(i)), 1)?;
        ensure!(
            action == XDP_PASS,
            "tracking legitimate source {i}: action {action}"
        );
    }
    let before = legit_buckets(traffic, slot)?;
    ensure!(
        before.len() == LEGIT as usize,
        "only {} of {LEGIT} legitimate sources got a bucket",
        before.len()
    );
    std::thread::sleep(Duration::from_secs_f64(2.0 / f64::from(RATE)));
    Ok(before)
}

/// What one flood left behind: the sink's counts, the receiver's and the class's counters.
struct Flood {
    counts: traffic_testkit::udp::Counts,
    rx: RxDelta,
    state: GenState,
    /// Seconds from the generator's end until the receiver was idle.
    lag: f64,
    /// Packets the class sent to the overflow bucket.
    overflowed: u64,
    /// Of those, refused by the overflow bucket or for a full map.
    refused: u64,
}

/// Run the generator (flood and legitimate sources) into the receiver with a UDP sink.
fn flood_once(
    bench: &mut BenchObject,
    net: &FloodNet,
    rx: &Receiver,
    traffic: &Traffic,
    slot: u32,
    plan: &Plan,
) -> Result<Flood> {
    let sink = traffic_testkit::udp::UdpSink::start(&net.receiver, FLOOD_PORT, 1)?;
    let stats_before = traffic.class_stats(slot)?;
    let over_before = traffic.counter(slot, Reason::Overflow)?.packets;
    let full_before = traffic.counter(slot, Reason::MapFull)?.packets;
    let a = rx.snapshot(net)?;
    let template = udp6(Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0, 0, 0, 0, 1));
    generate(
        bench,
        net,
        &template,
        plan.accuracy_frames,
        plan.accuracy_time,
    )?;
    let sent_end = Instant::now();
    let idle = net.idle_since(Duration::from_secs(2))?;
    let b = rx.snapshot(net)?;
    // The receiver handles frames after the generator sent them — by a ring's worth, or
    // more when its thread is preempted. No frame is handled after its frame count
    // stopped moving (`idle_since` finds when): the limits' upper bounds use the
    // generator's span plus this lag, so they are bounds on what the program could see.
    let lag = idle.saturating_duration_since(sent_end).as_secs_f64();
    let counts = sink.finish(Duration::from_secs(1));
    let stats_after = traffic.class_stats(slot)?;
    let over_after = traffic.counter(slot, Reason::Overflow)?.packets;
    let full_after = traffic.counter(slot, Reason::MapFull)?.packets;
    Ok(Flood {
        counts,
        rx: RxDelta::between(&a, &b),
        state: bench.state()?,
        lag,
        overflowed: stats_after.overflowed - stats_before.overflowed,
        refused: (over_after - over_before) + (full_after - full_before),
    })
}

/// The run's figures from the flood and the legitimate sources.
fn summarise(f: &Flood, seen: &LegitSeen) -> Result<AccuracyRun> {
    let min_of = |v: &[f64]| traffic_loadgen::stats::summarize(v).map_or(f64::NAN, |s| s.min);
    let kept = traffic_loadgen::stats::summarize(&seen.kept).context("no legitimate sources")?;
    let total: u64 = f.counts.values().sum();
    let st = &f.state;
    let span = span_secs(st);
    let space = (SPOOF_MASK + 1) as f64;
    let share = (f.rx.processed as f64 / (st.seq + st.legit_sent).max(1) as f64).min(1.0);
    let cycles = st.seq as f64 / space;
    Ok(AccuracyRun {
        kept_min: kept.min,
        kept_median: kept.median,
        kept_max: kept.max,
        reached_min: min_of(&seen.reached),
        kept_of_reached_min: min_of(&seen.kept_of_reached),
        excess_max: seen.excess_max,
        distinct: st.seq.min(SPOOF_MASK + 1),
        distinct_received_est: space * (1.0 - (1.0 - share).powf(cycles)),
        processed: f.rx.processed,
        span,
        ns_per_packet: f.rx.ns_per_packet(),
        flood_passed: total - seen.passed,
        overflow_passed: f.overflowed.saturating_sub(f.refused),
        overflow_allowance: f64::from(OVERFLOW_RATE) * (span + f.lag) + f64::from(OVERFLOW_BURST),
        lag: f.lag,
    })
}
