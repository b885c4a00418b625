//! Suite f, `scale`: the per-packet cost with a full rule table and many live sources, and
//! with one source hammered from every CPU at once (issue 16 item 2).
//!
//! Two labs, each the traffic program on its own pinned maps:
//! - `few`: four rules, only the measured sources hold buckets;
//! - `many`: [`RULES_ENTRIES`] CIDR rules (the table full) and [`LIVE_SOURCES`] live
//!   sources (IPv6 /64s admitted by the program itself through `spoof_tail` before measuring).
//!
//! Many rules: a known IPv4 and a known IPv6 source measured in both labs, in the same
//! repetition, work = run − `floor_drop`; the paired ratio many/few must stay ≤ 1.1. Also
//! measured (context, no target): `spread`, every packet from another of the live sources
//! (`spoof_tail` over all of them, work = run − the rewrite baseline), so the classification
//! cache misses and the bucket lines are cold, as on a busy node.
//!
//! Contention: one IPv4 source of a class limited to [`HAMMER_RATE`]/s, burst
//! [`HAMMER_BURST`], sent by test runs on one CPU (`one`), then on every CPU at once
//! (`all`, one thread pinned per CPU, started together). Per packet: the mean of the threads'
//! test-run means. Passed: the class's `pass` counter over the run against
//! rate·t + burst, t the wall time from before the first thread starts to after the last
//! ends (an upper bound on the span the packets were sent in).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use anyhow::{Context as _, Result, ensure};
use traffic_common::{RULES_ENTRIES, Reason};
use traffic_daemon::dataplane::Dataplane as _;
use traffic_ebpf_bench::{self as gen_abi, GenConfig};
use traffic_loadgen::{
    flood,
    stats::{BenchReport as Report, Bound, rotation},
};

use crate::{
    GEN_CPU, XDP_ABORTED, XDP_DROP, XDP_PASS,
    args::Plan,
    load::{BenchObject, Traffic},
    runs::{Samples, test_run, udp4, udp6},
};

/// Live sources of the `many` lab: /64s 2001:db8:c000:0::/64 … 2001:db8:c000:ffff::/64.
const LIVE_SOURCES: u64 = 1 << 16;
/// `spoof_tail` word of the first live source (bytes 4..8 of the address).
const LIVE_BASE: u64 = 0xc000_0000;
/// The contention class's limit.
const HAMMER_RATE: u64 = 1_000_000;
const HAMMER_BURST: u64 = 1_000;

/// The rules and classes both labs share; the `many` lab appends filler rules.
const SCALE_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]
max_sources = 131072

[classes.fast]
packets = { rate = 1000000000, burst = 1000000000 }

[classes.hammer]
packets = { rate = 1000000, burst = 1000 }

[classes.filler_a]
packets = { rate = 10, burst = 10 }

[classes.filler_b]
packets = { rate = 100, burst = 100 }

[classes.default]
packets = { rate = 10, burst = 10 }

[[rules]]
cidr = "198.18.1.0/24"
class = "fast"

[[rules]]
cidr = "198.18.5.0/24"
class = "hammer"

[[rules]]
cidr = "2001:db8:1::/48"
class = "fast"

[[rules]]
cidr = "2001:db8:c000::/48"
class = "fast"
"#;

/// Rules in [`SCALE_CONFIG`].
const BASE_RULES: u32 = 4;

/// [`SCALE_CONFIG`] with the rule table filled: /48s after the live one, in 2001:db8::/32.
fn many_config() -> String {
    let mut text = SCALE_CONFIG.to_owned();
    for i in 0..RULES_ENTRIES - BASE_RULES {
        let class = if i % 2 == 0 { "filler_a" } else { "filler_b" };
        text.push_str(&format!(
            "\n[[rules]]\ncidr = \"2001:db8:{:x}::/48\"\nclass = \"{class}\"\n",
            0xc001 + i
        ));
    }
    text
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sc {
    Floor,
    SpoofBase,
    FewV4,
    FewV6,
    ManyV4,
    ManyV6,
    ManySpread,
    HammerOne,
    HammerAll,
}

impl Sc {
    const ALL: [Sc; 9] = [
        Sc::Floor,
        Sc::SpoofBase,
        Sc::FewV4,
        Sc::FewV6,
        Sc::ManyV4,
        Sc::ManyV6,
        Sc::ManySpread,
        Sc::HammerOne,
        Sc::HammerAll,
    ];

    fn name(self) -> &'static str {
        match self {
            Sc::Floor => "floor_drop",
            Sc::SpoofBase => "spoof_baseline",
            Sc::FewV4 => "few_rules.known_pass",
            Sc::FewV6 => "few_rules.known_v6",
            Sc::ManyV4 => "many_rules.known_pass",
            Sc::ManyV6 => "many_rules.known_v6",
            Sc::ManySpread => "many_rules.spread",
            Sc::HammerOne => "contention.one_cpu",
            Sc::HammerAll => "contention.all_cpus",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Sc::Floor => "bare XDP_DROP (floor_drop): test-run loop + dispatch",
            Sc::SpoofBase => "spoof_tail: source rewrite + tail call into floor_drop",
            Sc::FewV4 => "4 rules: IPv4 source with a bucket, within its limit",
            Sc::FewV6 => "4 rules: IPv6 source with a bucket, within its limit",
            Sc::ManyV4 => "16,384 rules, 65,536 live sources: IPv4 source with a bucket",
            Sc::ManyV6 => "16,384 rules, 65,536 live sources: IPv6 source with a bucket",
            Sc::ManySpread => {
                "16,384 rules: every packet another of the 65,536 live sources (spoof_tail)"
            }
            Sc::HammerOne => "one source over its limit, test runs on one CPU",
            Sc::HammerAll => "the same source, test runs on every CPU at once",
        }
    }
}

struct ScaleLab {
    few: Traffic,
    many: Traffic,
    hammer: u32,
    cpus: usize,
}

pub(crate) fn run(bench: &mut BenchObject, plan: &Plan) -> Result<Report> {
    let mut report = Report::new(
        "scale",
        "f. many rules and contention (ns per packet through BPF_PROG_TEST_RUN)",
    );
    let few = Traffic::load("scale-few", SCALE_CONFIG, true)?;
    let many = Traffic::load("scale-many", &many_config(), true)?;
    let hammer = few.slot("hammer")?;
    let cpus = traffic_testkit::netns::online_cpus();
    let lab = ScaleLab {
        few,
        many,
        hammer,
        cpus,
    };
    let all: Vec<usize> = (0..cpus).collect();
    flood::set_affinity(0, &[GEN_CPU])?;
    let result = (|| {
        let live = fill_live(bench, &lab.many)?;
        report.meta("many_rules.buckets_after_fill", live);
        measure(&lab, bench, plan)
    })();
    flood::set_affinity(0, &all)?;
    let s = result?;
    report.meta("rules_many", RULES_ENTRIES);
    report.meta("rules_few", BASE_RULES);
    report.meta("live_sources", LIVE_SOURCES);
    report.meta("repeat_per_run", plan.repeat);
    report.meta("contention_cpus", cpus);
    report.meta("hammer_rate_per_s", HAMMER_RATE);
    report.meta("hammer_burst", HAMMER_BURST);
    figures(&mut report, s, plan);
    Ok(report)
}

/// Admit every live source into the `many` lab's bucket map (twice over, so none is
/// missing); returns the buckets it holds afterwards.
fn fill_live(bench: &mut BenchObject, many: &Traffic) -> Result<u64> {
    spread_config(bench, many)?;
    let frame = udp6(Ipv6Addr::new(0x2001, 0xdb8, 0xc000, 0, 0, 0, 0, 1));
    let (action, _) = test_run(
        bench.program(gen_abi::SPOOF_PROGRAM)?,
        &frame,
        2 * LIVE_SOURCES as u32,
    )?;
    ensure!(
        action == XDP_PASS,
        "filling the live sources: action {action}"
    );
    let n = many.kernel.buckets()?.len() as u64;
    ensure!(
        n >= LIVE_SOURCES,
        "the many-rules lab holds only {n} buckets"
    );
    Ok(n)
}

/// Point `spoof_tail` at the `many` lab, over the live sources.
fn spread_config(bench: &mut BenchObject, many: &Traffic) -> Result<()> {
    bench.set_jump(&many.program()?.fd()?.try_clone()?)?;
    spread_config_words(bench)
}

/// One measurement of a variant: ns per packet, and for the contention variants the passes
/// over the allowance rate·t + burst.
fn one(lab: &ScaleLab, bench: &mut BenchObject, v: Sc, repeat: u32) -> Result<(f64, Option<f64>)> {
    let v4 = udp4(Ipv4Addr::new(198, 18, 1, 1));
    let v6 = udp6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));
    let (prog, frame, want) = match v {
        Sc::Floor => (bench.program(gen_abi::FLOOR_PROGRAM)?, v4, Some(XDP_DROP)),
        Sc::SpoofBase => {
            let floor = bench.floor_fd()?.try_clone()?;
            bench.set_jump(&floor)?;
            spread_config_words(bench)?;
            (bench.program(gen_abi::SPOOF_PROGRAM)?, v6, Some(XDP_DROP))
        }
        Sc::ManySpread => {
            spread_config(bench, &lab.many)?;
            (bench.program(gen_abi::SPOOF_PROGRAM)?, v6, Some(XDP_PASS))
        }
        Sc::FewV4 => (lab.few.program()?, v4, Some(XDP_PASS)),
        Sc::FewV6 => (lab.few.program()?, v6, Some(XDP_PASS)),
        Sc::ManyV4 => (lab.many.program()?, v4, Some(XDP_PASS)),
        Sc::ManyV6 => (lab.many.program()?, v6, Some(XDP_PASS)),
        Sc::HammerOne | Sc::HammerAll => {
            let threads = if v == Sc::HammerOne { 1 } else { lab.cpus };
            let (ns, over) = hammer(lab, threads, repeat)?;
            return Ok((ns, Some(over)));
        }
    };
    let (action, ns) =
        test_run(prog, &frame, repeat).with_context(|| format!("test run of {}", v.name()))?;
    ensure!(action != XDP_ABORTED, "{}: XDP_ABORTED", v.name());
    if let Some(w) = want {
        ensure!(action == w, "{}: action {action}, want {w}", v.name());
    }
    Ok((ns, None))
}

/// The rewrite configuration of the baseline (the same sources as `spread`).
fn spread_config_words(bench: &mut BenchObject) -> Result<()> {
    bench.configure(&GenConfig {
        family: gen_abi::FAMILY_V6,
        flood_base: LIVE_BASE,
        flood_mask: LIVE_SOURCES - 1,
        ..GenConfig::default()
    })
}

/// The hammered source from `threads` CPUs at once (thread i pinned to CPU i): the mean
/// ns per packet over the threads, and passed / (rate·t + burst).
fn hammer(lab: &ScaleLab, threads: usize, repeat: u32) -> Result<(f64, f64)> {
    let frame = udp4(Ipv4Addr::new(198, 18, 5, 1));
    let prog = lab.few.program()?;
    let before = lab.few.counter(lab.hammer, Reason::Pass)?.packets;
    let start = Instant::now();
    let results: Vec<Result<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|cpu| {
                let frame = &frame;
                s.spawn(move || -> Result<f64> {
                    flood::set_affinity(0, &[cpu])?;
                    let (action, ns) = test_run(prog, frame, repeat)?;
                    ensure!(action != XDP_ABORTED, "contention: XDP_ABORTED");
                    Ok(ns)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))
            })
            .collect()
    });
    let t = start.elapsed().as_secs_f64();
    let passed = lab.few.counter(lab.hammer, Reason::Pass)?.packets - before;
    let ns: Vec<f64> = results.into_iter().collect::<Result<_>>()?;
    let mean = ns.iter().sum::<f64>() / ns.len() as f64;
    let allowance = HAMMER_RATE as f64 * t + HAMMER_BURST as f64;
    Ok((mean, passed as f64 / allowance))
}

/// Every variant once per repetition, in rotating order, after an unrecorded warm-up.
fn measure(lab: &ScaleLab, bench: &mut BenchObject, plan: &Plan) -> Result<Samples> {
    for v in Sc::ALL {
        one(lab, bench, v, plan.repeat)?;
    }
    let mut s = Samples::default();
    for rep in 0..plan.reps {
        for v in rotation(&Sc::ALL, rep) {
            let (ns, over) = one(lab, bench, v, plan.repeat)?;
            s.push(&format!("{}.ns", v.name()), rep, ns);
            if let Some(over) = over {
                s.push(&format!("{}.passed_over_allowance", v.name()), rep, over);
            }
        }
    }
    Ok(s)
}

fn figures(report: &mut Report, mut s: Samples, plan: &Plan) {
    let reps = plan.reps;
    let mut raw = std::collections::BTreeMap::new();
    for v in Sc::ALL {
        let samples = s.take(&format!("{}.ns", v.name()), reps);
        raw.insert(v.name(), samples.clone());
        report.figure(&format!("{}.ns", v.name()), "ns", v.about(), samples);
    }
    let minus =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    for v in Sc::ALL {
        let base = match v {
            Sc::Floor | Sc::SpoofBase => continue,
            Sc::ManySpread => Sc::SpoofBase,
            _ => Sc::Floor,
        };
        let work = minus(&raw[v.name()], &raw[base.name()]);
        report.figure(
            &format!("{}.work_ns", v.name()),
            "ns",
            &format!("run − {} (same repetition)", base.name()),
            work,
        );
    }
    for v in [Sc::HammerOne, Sc::HammerAll] {
        let name = format!("{}.passed_over_allowance", v.name());
        let samples = s.take(&name, reps);
        report.figure(
            &name,
            "share",
            "passed / (rate·t + burst), t the wall time of the run",
            samples,
        );
    }
    ratios_and_targets(report);
}

fn ratios_and_targets(report: &mut Report) {
    for (name, num, den) in [
        (
            "many/few.known_pass.work",
            "many_rules.known_pass.work_ns",
            "few_rules.known_pass.work_ns",
        ),
        (
            "many/few.known_v6.work",
            "many_rules.known_v6.work_ns",
            "few_rules.known_v6.work_ns",
        ),
        (
            "spread/known_v6.work",
            "many_rules.spread.work_ns",
            "many_rules.known_v6.work_ns",
        ),
        (
            "contention/one.work",
            "contention.all_cpus.work_ns",
            "contention.one_cpu.work_ns",
        ),
        (
            "contention/one.ns",
            "contention.all_cpus.ns",
            "contention.one_cpu.ns",
        ),
    ] {
        report.ratio(name, num, den, &format!("{num} / {den}, paired"));
    }
    report.target(
        "many rules: known IPv4 work within 10 % of few rules",
        "many/few.known_pass.work",
        Bound::AtMost(1.1),
        None,
    );
    report.target(
        "many rules: known IPv6 work within 10 % of few rules",
        "many/few.known_v6.work",
        Bound::AtMost(1.1),
        None,
    );
    report.target(
        "contention: work per packet ≤ 1.5× one CPU's",
        "contention/one.work",
        Bound::AtMost(1.5),
        None,
    );
    report.target(
        "contention: passed ≤ rate·t + burst",
        "contention.all_cpus.passed_over_allowance",
        Bound::AtMost(1.0),
        None,
    );
}
