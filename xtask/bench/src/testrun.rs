//! Suite a, `testrun`: program cost through BPF_PROG_TEST_RUN (see the crate docs).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result, ensure};
use traffic_daemon::dataplane::Dataplane as _;
use traffic_ebpf_bench::{self as gen_abi, GenConfig};
use traffic_loadgen::{
    flood::{self, RCV_V4},
    stats::{BenchReport as Report, Bound, rotation},
};
use traffic_testkit::packet::Frame;

use crate::{
    GEN_CPU, MAX_SOURCES, XDP_ABORTED, XDP_DROP, XDP_PASS,
    args::Plan,
    load::{BenchObject, Traffic},
    runs::{Samples, test_run, udp4, udp6},
};

pub(crate) const TESTRUN_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]
max_sources = 131072

[classes.fast]
packets = { rate = 1000000000, burst = 1000000000 }

[classes.fastbytes]
packets = { rate = 1000000000, burst = 1000000000 }
bytes = { rate = "1GB", burst = "1000GB" }

[classes.slow]
packets = { rate = 1, per = "1h", burst = 1 }

[classes.internal]

[classes.guarded]
packets = { rate = 10, burst = 10 }
admission = { rate = 1000, burst = 1000 }
overflow = { rate = 1000, burst = 1000 }

[classes.open]
packets = { rate = 10, burst = 10 }

[classes.default]
packets = { rate = 10, burst = 10 }

[[rules]]
cidr = "198.18.1.0/24"
class = "fast"

[[rules]]
cidr = "2001:db8:1::/48"
class = "fast"

[[rules]]
cidr = "198.18.4.0/24"
class = "fastbytes"

[[rules]]
cidr = "198.18.2.0/24"
class = "slow"

[[rules]]
cidr = "198.18.3.0/24"
action = "allow"
class = "internal"

[[rules]]
cidr = "2001:db8:8000::/33"
class = "guarded"

[[rules]]
cidr = "2001:db8:4000::/34"
class = "open"
"#;

/// [`TESTRUN_CONFIG`] with the guarded class's admission lifted, to fill the bucket map.
fn testrun_fill_config() -> String {
    TESTRUN_CONFIG.replace(
        "admission = { rate = 1000, burst = 1000 }",
        "admission = { rate = 1000000000, burst = 1000000000 }",
    )
}

/// Fill the bucket map the way a long flood against an admission class does — the program
/// admitting spoofed sources, on its own path — then restore the real limits: twice the
/// map's capacity of new sources through `spoof_tail` with `fill_config` (admission lifted),
/// from 2001:db8:9000::/36, a range the measured floods do not use. Returns the buckets the
/// map holds afterwards.
pub(crate) fn fill_buckets(
    bench: &mut BenchObject,
    traffic: &mut Traffic,
    class: u32,
    fill_config: &str,
    real_config: &str,
) -> Result<u64> {
    traffic.reconfigure(fill_config)?;
    let before = traffic.class_stats(class)?.admitted;
    let target = traffic.program()?.fd()?.try_clone()?;
    bench.set_jump(&target)?;
    bench.configure(&GenConfig {
        family: gen_abi::FAMILY_V6,
        flood_base: 0x9000_0000,
        flood_mask: SPOOF_MASK,
        ..GenConfig::default()
    })?;
    let frame = udp6(Ipv6Addr::new(0x2001, 0xdb8, 0x9000, 0, 0, 0, 0, 1));
    let (action, _) = test_run(
        bench.program(gen_abi::SPOOF_PROGRAM)?,
        &frame,
        2 * MAX_SOURCES,
    )?;
    ensure!(action != XDP_ABORTED, "filling the bucket map: XDP_ABORTED");
    traffic.reconfigure(real_config)?;
    let admitted = traffic.class_stats(class)?.admitted - before;
    ensure!(
        admitted >= u64::from(MAX_SOURCES),
        "filling the bucket map admitted only {admitted} sources"
    );
    Ok(traffic.kernel.buckets()?.len() as u64)
}

/// Fill the bucket map of `traffic` (loaded with [`TESTRUN_CONFIG`]) through its guarded
/// class, on [`GEN_CPU`] (see [`fill_buckets`]); the buckets it then holds go into the
/// report. Returns the guarded class's slot.
pub(crate) fn fill_guarded(
    bench: &mut BenchObject,
    traffic: &mut Traffic,
    report: &mut Report,
) -> Result<u32> {
    let guarded = traffic.slot("guarded")?;
    let all: Vec<usize> = (0..traffic_testkit::netns::online_cpus()).collect();
    flood::set_affinity(0, &[GEN_CPU])?;
    let filled = fill_buckets(
        bench,
        traffic,
        guarded,
        &testrun_fill_config(),
        TESTRUN_CONFIG,
    );
    flood::set_affinity(0, &all)?;
    report.meta("buckets_before_spoof_admission", filled?);
    Ok(guarded)
}

/// Spoofed sources per flood: 2²⁰ /64s (8× the bucket map).
pub(crate) const SPOOF_MASK: u64 = (1 << 20) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tr {
    Floor,
    KnownPass,
    KnownDrop,
    Allowed,
    NonIp,
    KnownV6,
    KnownBytes,
    SpoofBase,
    SpoofAdmission,
    SpoofLru,
    /// `KnownPass` with `trafficctl watch` on (issue 13): the flag set, no ring reader.
    KnownPassWatch,
    /// `KnownPass` with a drops-only watch on: the pass is filtered in the kernel.
    KnownPassWatchDrops,
}

impl Tr {
    pub(crate) const ALL: [Tr; 12] = [
        Tr::Floor,
        Tr::KnownPass,
        Tr::KnownDrop,
        Tr::Allowed,
        Tr::NonIp,
        Tr::KnownV6,
        Tr::KnownBytes,
        Tr::SpoofBase,
        Tr::SpoofAdmission,
        Tr::SpoofLru,
        Tr::KnownPassWatch,
        Tr::KnownPassWatchDrops,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Tr::Floor => "floor_drop",
            Tr::KnownPass => "known_pass",
            Tr::KnownDrop => "known_drop",
            Tr::Allowed => "allowed",
            Tr::NonIp => "non_ip",
            Tr::KnownV6 => "known_v6",
            Tr::KnownBytes => "known_pass_bytes",
            Tr::SpoofBase => "spoof_baseline",
            Tr::SpoofAdmission => "spoof_admission",
            Tr::SpoofLru => "spoof_no_admission",
            Tr::KnownPassWatch => "known_pass_watch",
            Tr::KnownPassWatchDrops => "known_pass_watch_drops",
        }
    }

    pub(crate) fn about(self) -> &'static str {
        match self {
            Tr::Floor => "bare XDP_DROP (floor_drop): test-run loop + dispatch",
            Tr::KnownPass => "IPv4 source with a bucket, within its packet limit: XDP_PASS",
            Tr::KnownDrop => "IPv4 source with a bucket, over its packet limit: XDP_DROP",
            Tr::Allowed => "IPv4 source on an allow rule: XDP_PASS without limits",
            Tr::NonIp => "ARP frame: XDP_PASS, counted",
            Tr::KnownV6 => "IPv6 source with a bucket, within its packet limit: XDP_PASS",
            Tr::KnownBytes => "IPv4 known source, packet + byte limits (stacked): XDP_PASS",
            Tr::SpoofBase => "spoof_tail: source rewrite + tail call into floor_drop",
            Tr::SpoofAdmission => {
                "spoof_tail into traffic, new IPv6 /64 every packet, admission on"
            }
            Tr::SpoofLru => {
                "spoof_tail into traffic, new IPv6 /64 every packet, admission off (table insert)"
            }
            Tr::KnownPassWatch => {
                "known_pass with the watch flag on (budget spent: all but 1000/s refused)"
            }
            Tr::KnownPassWatchDrops => {
                "known_pass with a drops-only watch on (the pass filtered in the kernel)"
            }
        }
    }

    /// The action every run must end with (`None`: any but XDP_ABORTED).
    fn expected(self) -> Option<u32> {
        match self {
            Tr::Floor | Tr::KnownDrop | Tr::SpoofBase => Some(XDP_DROP),
            Tr::KnownPass
            | Tr::Allowed
            | Tr::NonIp
            | Tr::KnownV6
            | Tr::KnownBytes
            | Tr::KnownPassWatch
            | Tr::KnownPassWatchDrops => Some(XDP_PASS),
            // Mostly dropped (overflow), an admitted source passes now and then.
            Tr::SpoofAdmission => None,
            // Inserted, then mostly dropped: the flood keeps every slot of the debt sketch in
            // debt, so each new source starts with an empty bucket.
            Tr::SpoofLru => None,
        }
    }

    fn is_spoof(self) -> bool {
        matches!(self, Tr::SpoofBase | Tr::SpoofAdmission | Tr::SpoofLru)
    }
}

struct TestRunLab {
    /// Known sources and the flood with admission: its bucket map is full (see
    /// [`fill_buckets`]), as after a long flood or on a busy node.
    pub(crate) traffic: Traffic,
    /// The flood without admission, on its own maps: its churn must not touch the other.
    unprotected: Traffic,
    pub(crate) frames: BTreeMap<&'static str, Vec<u8>>,
    guarded: u32,
    pub(crate) open: u32,
}

impl TestRunLab {
    pub(crate) fn frame(&self, v: Tr) -> &[u8] {
        let key = match v {
            Tr::Floor | Tr::KnownPass | Tr::KnownPassWatch | Tr::KnownPassWatchDrops => "v4_fast",
            Tr::KnownDrop => "v4_slow",
            Tr::Allowed => "v4_allowed",
            Tr::NonIp => "arp",
            Tr::KnownV6 => "v6_fast",
            Tr::KnownBytes => "v4_fastbytes",
            Tr::SpoofBase | Tr::SpoofAdmission | Tr::SpoofLru => "v6_spoof",
        };
        &self.frames[key]
    }

    /// Set the program's watch flags for variant `v` (off for every other variant).
    fn watch(&mut self, v: Tr) -> Result<()> {
        use traffic_common::{GLOBAL_WATCH, GLOBAL_WATCH_DROPS};
        let want = match v {
            Tr::KnownPassWatch => GLOBAL_WATCH,
            Tr::KnownPassWatchDrops => GLOBAL_WATCH | GLOBAL_WATCH_DROPS,
            _ => 0,
        };
        let kernel = &mut self.traffic.kernel;
        let mut g = kernel.global()?;
        let mask = GLOBAL_WATCH | GLOBAL_WATCH_DROPS;
        if g.flags & mask != want {
            g.flags = (g.flags & !mask) | want;
            kernel.apply(&[traffic_daemon::plan::Write::Global(g)])?;
        }
        Ok(())
    }

    /// One run of a variant: mean ns per repeat, and for the spoof variants the share of
    /// repeats that met a source without a bucket.
    pub(crate) fn run(
        &self,
        bench: &mut BenchObject,
        v: Tr,
        repeat: u32,
    ) -> Result<(f64, Option<f64>)> {
        let traffic = self.traffic.program()?;
        let unprotected = self.unprotected.program()?;
        let (prog, class) = match v {
            Tr::Floor => (bench.program(gen_abi::FLOOR_PROGRAM)?, None),
            Tr::SpoofBase | Tr::SpoofAdmission | Tr::SpoofLru => {
                let (target, base, class) = match v {
                    Tr::SpoofBase => (bench.floor_fd()?.try_clone()?, 0x8000_0000, None),
                    Tr::SpoofAdmission => {
                        (traffic.fd()?.try_clone()?, 0x8000_0000, Some(self.guarded))
                    }
                    _ => (unprotected.fd()?.try_clone()?, 0x4000_0000, Some(self.open)),
                };
                bench.set_jump(&target)?;
                bench.configure(&GenConfig {
                    family: gen_abi::FAMILY_V6,
                    flood_base: base,
                    flood_mask: SPOOF_MASK,
                    ..GenConfig::default()
                })?;
                (bench.program(gen_abi::SPOOF_PROGRAM)?, class)
            }
            _ => (traffic, None),
        };
        let owner = if v == Tr::SpoofLru {
            &self.unprotected
        } else {
            &self.traffic
        };
        let before = class.map(|c| owner.class_stats(c)).transpose()?;
        let (action, ns) = test_run(prog, self.frame(v), repeat)
            .with_context(|| format!("test run of {}", v.name()))?;
        ensure!(
            action != XDP_ABORTED,
            "{}: XDP_ABORTED (a tail call failed?)",
            v.name()
        );
        if let Some(want) = v.expected() {
            ensure!(action == want, "{}: action {action}, want {want}", v.name());
        }
        let new_share = match (class, before) {
            (Some(c), Some(b)) => {
                let a = owner.class_stats(c)?;
                let unknown = (a.admitted - b.admitted)
                    + (a.overflowed - b.overflowed)
                    + (a.map_full - b.map_full);
                Some(unknown as f64 / f64::from(repeat))
            }
            _ => None,
        };
        Ok((ns, new_share))
    }
}

pub(crate) fn run(bench: &mut BenchObject, plan: &Plan) -> Result<Report> {
    let mut report = Report::new(
        "testrun",
        "a. program cost through BPF_PROG_TEST_RUN (ns per packet)",
    );
    let mut traffic = Traffic::load("testrun", TESTRUN_CONFIG, true)?;
    // The verifier's budget is 10⁶ instructions: what the program leaves of it.
    report.meta(
        "verified_insns",
        traffic
            .kernel
            .verified_insns()
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
    );
    let unprotected = Traffic::load("testrun-lru", TESTRUN_CONFIG, true)?;
    let open = traffic.slot("open")?;
    let guarded = fill_guarded(bench, &mut traffic, &mut report)?;
    let all: Vec<usize> = (0..traffic_testkit::netns::online_cpus()).collect();
    let mut lab = TestRunLab {
        traffic,
        unprotected,
        frames: frames(),
        guarded,
        open,
    };
    // One pinned CPU: the rewriter's sequence is per CPU, and a second CPU's sequence
    // could revisit sources the first one left in the map.
    flood::set_affinity(0, &[GEN_CPU])?;
    let result = measure(&mut lab, bench, plan);
    flood::set_affinity(0, &all)?;
    let s = result?;
    report.meta("repeat_per_run", plan.repeat);
    report.meta("max_sources", MAX_SOURCES);
    report.meta("spoofed_sources", SPOOF_MASK + 1);
    figures(&mut report, s, plan);
    ratios_and_targets(&mut report);
    Ok(report)
}

/// The frames of the known-source variants.
pub(crate) fn frames() -> BTreeMap<&'static str, Vec<u8>> {
    let mut frames = BTreeMap::new();
    frames.insert("v4_fast", udp4(Ipv4Addr::new(198, 18, 1, 1)));
    frames.insert("v4_fastbytes", udp4(Ipv4Addr::new(198, 18, 4, 1)));
    frames.insert("v4_slow", udp4(Ipv4Addr::new(198, 18, 2, 1)));
    frames.insert("v4_allowed", udp4(Ipv4Addr::new(198, 18, 3, 1)));
    frames.insert(
        "arp",
        Frame::arp_request(Ipv4Addr::new(198, 18, 1, 1), RCV_V4)
            .pad_to(60)
            .build(),
    );
    frames.insert(
        "v6_fast",
        udp6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
    );
    frames.insert(
        "v6_spoof",
        udp6(Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0, 0, 0, 0, 1)),
    );
    frames
}

/// Every variant once per repetition, in rotating order, after an unrecorded warm-up.
fn measure(lab: &mut TestRunLab, bench: &mut BenchObject, plan: &Plan) -> Result<Samples> {
    // Warm-up, not recorded: buckets of the known sources exist (the "dropped" one is
    // over its limit from the second packet), and the source table is full, as in a long flood.
    for v in Tr::ALL {
        lab.watch(v)?;
        lab.run(bench, v, plan.repeat)?;
    }
    let mut s = Samples::default();
    for rep in 0..plan.reps {
        for v in rotation(&Tr::ALL, rep) {
            lab.watch(v)?;
            let (ns, share) = lab.run(bench, v, plan.repeat)?;
            s.push(&format!("{}.ns", v.name()), rep, ns);
            if let Some(share) = share {
                s.push(&format!("{}.new_source_share", v.name()), rep, share);
            }
        }
    }
    lab.watch(Tr::KnownPass)?;
    Ok(s)
}

/// Raw means, and work = raw − the floor of the same repetition.
fn figures(report: &mut Report, mut s: Samples, plan: &Plan) {
    let reps = plan.reps;
    let mut raw = BTreeMap::new();
    for v in Tr::ALL {
        let samples = s.take(&format!("{}.ns", v.name()), reps);
        raw.insert(v.name(), samples.clone());
        report.figure(&format!("{}.ns", v.name()), "ns", v.about(), samples);
    }
    let minus =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    for v in Tr::ALL {
        let (base, about) = match v {
            Tr::Floor | Tr::SpoofBase => continue,
            v if v.is_spoof() => (
                Tr::SpoofBase,
                "program work on a new source: run − spoof_baseline (same repetition)",
            ),
            _ => (
                Tr::Floor,
                "program work: run − floor_drop (same repetition)",
            ),
        };
        let work = minus(&raw[v.name()], &raw[base.name()]);
        report.figure(&format!("{}.work_ns", v.name()), "ns", about, work);
    }
    for v in [Tr::SpoofAdmission, Tr::SpoofLru] {
        let name = format!("{}.new_source_share", v.name());
        let share = s.take(&name, reps);
        report.figure(
            &name,
            "share",
            "runs that met a source without a bucket (class statistics): 1 = every packet new",
            share,
        );
    }
}

/// The paired ratios and the targets they are judged by.
fn ratios_and_targets(report: &mut Report) {
    report.ratio(
        "spoof_admission/known_v6.work",
        "spoof_admission.work_ns",
        "known_v6.work_ns",
        "new-source work with admission over known IPv6 source work (same family)",
    );
    report.ratio(
        "spoof_admission/known_pass.work",
        "spoof_admission.work_ns",
        "known_pass.work_ns",
        "new-source work with admission over known IPv4 source work",
    );
    report.ratio(
        "spoof_no_admission/known_v6.work",
        "spoof_no_admission.work_ns",
        "known_v6.work_ns",
        "new-source work without admission (table insert + eviction) over known IPv6 work",
    );
    report.ratio(
        "known_pass_watch/known_pass.work",
        "known_pass_watch.work_ns",
        "known_pass.work_ns",
        "known-source work with the watch on over the same with it off (issue 13)",
    );
    report.ratio(
        "known_pass_watch_drops/known_pass.work",
        "known_pass_watch_drops.work_ns",
        "known_pass.work_ns",
        "known-source pass with a drops-only watch on over watch off",
    );
    report.ratio(
        "known_pass/floor.ns",
        "known_pass.ns",
        "floor_drop.ns",
        "whole test-run cost of a known source over the bare XDP_DROP",
    );
    report.target(
        "known-source verdict (pass): program work ≤ 40 ns",
        "known_pass.work_ns",
        Bound::AtMost(40.0),
        Some(Bound::AtMost(30.0)),
    );
    report.target(
        "known-source verdict (drop): program work ≤ 40 ns",
        "known_drop.work_ns",
        Bound::AtMost(40.0),
        Some(Bound::AtMost(30.0)),
    );
    report.target(
        "spoofed flood: ≤ 1.5× the known-source work",
        "spoof_admission/known_v6.work",
        Bound::AtMost(1.5),
        None,
    );
    report.target(
        "spoofed flood really new on every packet",
        "spoof_admission.new_source_share",
        Bound::AtLeast(0.99),
        None,
    );
}
