//! Suite `variant` (only with `--variant OBJECT`): the known-source cases of suite a, run
//! through this tree's traffic program (*base*) and through another build of it (*variant*,
//! an eBPF object file of the same ABI, e.g. a worktree's
//! `target/…/bpfel-unknown-none/release/traffic`), interleaved in one run on the same
//! pinned maps.
//!
//! Back-to-back runs of two builds on a noisy VM move with the machine more than with a
//! small change; here every repetition measures the floor, the base and the variant within
//! a second of each other, in rotating order, and the variant/base ratio is paired within
//! the repetition. Both programs charge the same buckets, so the known sources are in the
//! same state for both. The spoofed flood of suite a (a new IPv6 /64 every packet, admission
//! on, the bucket map filled first) runs through each by the rewriter's tail call, against
//! the rewriter tail-calling the floor; the rewriter's sequence runs on across both, so
//! every packet of either is a new source. No targets: a tool for deciding which of two
//! programs is faster. Judge a ratio against an A/A run (this tree's own object as the
//! variant): on the 2-vCPU VM, five A/A runs put the known cases' medians at 0.79–1.18 and
//! the flood's at 0.82–1.02 (four of five favouring the second loaded copy).

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, Result, ensure};
use aya::programs::{ProgramFd, Xdp};
use traffic_ebpf_bench::{self as gen_abi, GenConfig};
use traffic_loadgen::{
    flood,
    stats::{BenchReport as Report, rotation},
};

use crate::{
    GEN_CPU, XDP_ABORTED, XDP_DROP, XDP_PASS,
    args::Plan,
    load::{BenchObject, Traffic, xdp},
    runs::{Samples, test_run},
    testrun::{SPOOF_MASK, TESTRUN_CONFIG, fill_guarded, frames},
};

/// The cases: name, frame of [`frames`], the action every run must end with.
const CASES: [(&str, &str, u32); 6] = [
    ("known_pass", "v4_fast", XDP_PASS),
    ("known_drop", "v4_slow", XDP_DROP),
    ("known_v6", "v6_fast", XDP_PASS),
    ("known_pass_bytes", "v4_fastbytes", XDP_PASS),
    ("allowed", "v4_allowed", XDP_PASS),
    ("non_ip", "arp", XDP_PASS),
];

#[derive(Clone, Copy)]
enum Run {
    Floor,
    Base(usize),
    Variant(usize),
    /// The rewriter into the floor, into the base, into the variant.
    Spoof(usize),
}

const SPOOF_SIDES: [&str; 3] = [
    "spoof_baseline",
    "base.spoof_admission",
    "variant.spoof_admission",
];

pub(crate) fn run(bench: &mut BenchObject, plan: &Plan, object: &Path) -> Result<Report> {
    let mut report = Report::new(
        "variant",
        "v. base vs variant program through BPF_PROG_TEST_RUN (ns per packet, interleaved)",
    );
    let bytes = std::fs::read(object)
        .with_context(|| format!("read the variant object {}", object.display()))?;
    let mut traffic = Traffic::load("variant", TESTRUN_CONFIG, true)?;
    // Before the fill: an object that is not a traffic program of this ABI fails at once.
    let variant = traffic
        .load_alongside(&bytes)
        .with_context(|| format!("load the variant object {}", object.display()))?;
    fill_guarded(bench, &mut traffic, &mut report)?;
    report.meta("variant_object", object.display().to_string());
    let programs = [
        traffic.program()?,
        xdp(&variant, traffic_common::PROGRAM_NAME)?,
    ];
    let lab = Lab {
        programs,
        targets: [
            bench.floor_fd()?.try_clone()?,
            programs[0].fd()?.try_clone()?,
            programs[1].fd()?.try_clone()?,
        ],
        frames: frames(),
        repeat: plan.repeat,
    };
    bench.configure(&GenConfig {
        family: gen_abi::FAMILY_V6,
        flood_base: 0x8000_0000,
        flood_mask: SPOOF_MASK,
        ..GenConfig::default()
    })?;
    let all: Vec<usize> = (0..traffic_testkit::netns::online_cpus()).collect();
    // One pinned CPU: the rewriter's sequence is per CPU.
    flood::set_affinity(0, &[GEN_CPU])?;
    let measured = measure(&lab, bench, plan.reps);
    flood::set_affinity(0, &all)?;
    figures(&mut report, measured?, plan.reps);
    Ok(report)
}

/// The two programs, the rewriter's tail-call targets (floor, base, variant), the frames.
struct Lab<'a> {
    programs: [&'a Xdp; 2],
    targets: [ProgramFd; 3],
    frames: BTreeMap<&'static str, Vec<u8>>,
    repeat: u32,
}

impl Lab<'_> {
    /// One test run: the figure's name and the mean ns per packet.
    fn one(&self, bench: &mut BenchObject, r: Run) -> Result<(String, f64)> {
        if let Run::Spoof(side) = r {
            bench.set_jump(&self.targets[side])?;
            let name = format!("{}.ns", SPOOF_SIDES[side]);
            let (action, ns) = test_run(
                bench.program(gen_abi::SPOOF_PROGRAM)?,
                &self.frames["v6_spoof"],
                self.repeat,
            )
            .with_context(|| name.clone())?;
            ensure!(action != XDP_ABORTED, "{name}: XDP_ABORTED");
            return Ok((name, ns));
        }
        let (name, prog, case) = match r {
            Run::Floor => (
                "floor_drop.ns".to_owned(),
                bench.program(gen_abi::FLOOR_PROGRAM)?,
                None,
            ),
            Run::Base(i) => (format!("base.{}.ns", CASES[i].0), self.programs[0], Some(i)),
            Run::Variant(i) => (
                format!("variant.{}.ns", CASES[i].0),
                self.programs[1],
                Some(i),
            ),
            Run::Spoof(_) => unreachable!("handled above"),
        };
        let frame = &self.frames[case.map_or("v4_fast", |i| CASES[i].1)];
        let (action, ns) = test_run(prog, frame, self.repeat).with_context(|| name.clone())?;
        let want = case.map_or(XDP_DROP, |i| CASES[i].2);
        ensure!(action == want, "{name}: action {action}, want {want}");
        Ok((name, ns))
    }
}

/// The runs of one repetition, rotated. Each case's base and variant run next to each
/// other, the variant second in even repetitions and first in odd ones, so neither side
/// always finds what the other warmed (the flood's A/A spread is in the module docs).
fn runs_of(rep: usize) -> Vec<Run> {
    let swap = rep % 2 == 1;
    let pair = |a: Run, b: Run| if swap { [b, a] } else { [a, b] };
    let mut runs = vec![Run::Floor];
    for i in 0..CASES.len() {
        runs.extend(pair(Run::Base(i), Run::Variant(i)));
    }
    runs.push(Run::Spoof(0));
    runs.extend(pair(Run::Spoof(1), Run::Spoof(2)));
    rotation(&runs, rep)
}

/// Every run once per repetition, after an unrecorded warm-up (the known sources' buckets
/// exist; the slow one is over its limit from the second packet).
fn measure(lab: &Lab, bench: &mut BenchObject, reps: usize) -> Result<Samples> {
    for r in runs_of(0) {
        lab.one(bench, r)?;
    }
    let mut s = Samples::default();
    for rep in 0..reps {
        for r in runs_of(rep) {
            let (name, ns) = lab.one(bench, r)?;
            s.push(&name, rep, ns);
        }
    }
    Ok(s)
}

/// Raw means, work over the same repetition's floor, and the paired ratios.
fn figures(report: &mut Report, mut s: Samples, reps: usize) {
    let floor = s.take("floor_drop.ns", reps);
    report.figure(
        "floor_drop.ns",
        "ns",
        "bare XDP_DROP: test-run loop + dispatch",
        floor.clone(),
    );
    for (case, _, _) in CASES {
        for side in ["base", "variant"] {
            let raw = s.take(&format!("{side}.{case}.ns"), reps);
            raw_and_work(
                report,
                &format!("{side}.{case}"),
                ("test-run mean per packet", raw),
                ("program work: run − floor_drop (same repetition)", &floor),
            );
        }
    }
    let spoof_floor = s.take("spoof_baseline.ns", reps);
    report.figure(
        "spoof_baseline.ns",
        "ns",
        "rewriter + tail call into floor_drop",
        spoof_floor.clone(),
    );
    for side in ["base", "variant"] {
        let raw = s.take(&format!("{side}.spoof_admission.ns"), reps);
        raw_and_work(
            report,
            &format!("{side}.spoof_admission"),
            (
                "rewriter + tail call: a new IPv6 /64 every packet, admission on",
                raw,
            ),
            (
                "program work on a new source: run − spoof_baseline (same repetition)",
                &spoof_floor,
            ),
        );
        report.ratio(
            &format!("{side}.spoof_admission/known_v6.work"),
            &format!("{side}.spoof_admission.work_ns"),
            &format!("{side}.known_v6.work_ns"),
            "paired within each repetition (suite a's target: ≤ 1.5)",
        );
    }
    report.ratio(
        "variant/base.spoof_admission.work",
        "variant.spoof_admission.work_ns",
        "base.spoof_admission.work_ns",
        "paired within each repetition",
    );
    for (case, _, _) in CASES {
        report.ratio(
            &format!("variant/base.{case}.work"),
            &format!("variant.{case}.work_ns"),
            &format!("base.{case}.work_ns"),
            "paired within each repetition",
        );
    }
}

/// Figures `{name}.ns` (the raw samples) and `{name}.work_ns` (raw − floor, repetition by
/// repetition), each with what it is.
fn raw_and_work(
    report: &mut Report,
    name: &str,
    (raw_about, raw): (&str, Vec<f64>),
    (work_about, floor): (&str, &[f64]),
) {
    let work = raw.iter().zip(floor).map(|(r, f)| r - f).collect();
    report.figure(&format!("{name}.ns"), "ns", raw_about, raw);
    report.figure(&format!("{name}.work_ns"), "ns", work_about, work);
}
