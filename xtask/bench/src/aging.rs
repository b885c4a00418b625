//! Suite `aging` (issue 17 item 9): the spoofed-flood cost after 10⁶ and after 10⁸ distinct
//! sources, with the tracked-source bitmap aged as the daemon ages it, and after 10⁸
//! without aging (the bitmap saturates, every flood packet pays the table lookup).
//!
//! A churn compresses hours of flood: the guarded class's admission is raised to 10⁶/s, so
//! keys enter the bitmap a thousand times faster than the real 1000/s. The daemon clears a
//! generation every [`SEEN_AGE_INTERVAL`], in which the real budget admits 60,000 keys; the
//! churn clears one every [`AGE_EVERY_ADMITTED`] admissions, so the bitmap sees what it would
//! see in real time. Each state is then measured like the testrun suite's spoofed-flood row
//! (real limits, new source every repeat, minus the rewriter tail-calling `floor_drop`).
//!
//! [`SEEN_AGE_INTERVAL`]: traffic_daemon::engine::SEEN_AGE_INTERVAL

use std::net::Ipv6Addr;

use anyhow::{Result, ensure};
use traffic_daemon::dataplane::Dataplane as _;
use traffic_ebpf_bench::{self as gen_abi, GenConfig};
use traffic_loadgen::{
    flood,
    stats::{BenchReport as Report, Bound},
};

use crate::{
    GEN_CPU, XDP_ABORTED,
    args::Plan,
    load::{BenchObject, Traffic},
    runs::{test_run, udp6},
};

/// The guarded class of the testrun suite alone: admission 1000/s.
const REAL_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]
max_sources = 131072

[classes.guarded]
packets = { rate = 10, burst = 10 }
admission = { rate = 1000, burst = 1000 }
overflow = { rate = 1000, burst = 1000 }

[classes.default]
packets = { rate = 10, burst = 10 }

[[rules]]
cidr = "2001:db8:8000::/33"
class = "guarded"
"#;

/// Admissions between two clearings: [`SEEN_AGE_INTERVAL`](traffic_daemon::engine::SEEN_AGE_INTERVAL)
/// (60 s) × the real admission rate (1000/s).
const AGE_EVERY_ADMITTED: u64 = 60_000;
/// Sources per churn test-run: small enough that a clearing lands within a few thousand
/// admissions of [`AGE_EVERY_ADMITTED`].
const CHURN_CHUNK: u32 = 1 << 16;
/// Source space of this suite: 2²⁸ /64s from 2001:db8:8000::/36, wider than the 10⁸ a
/// state needs, so no source repeats (the testrun rows keep their 2²⁰).
const AGING_MASK: u64 = (1 << 28) - 1;

fn churn_config() -> String {
    REAL_CONFIG.replace(
        "admission = { rate = 1000, burst = 1000 }",
        "admission = { rate = 1000000, burst = 1000 }",
    )
}

/// One traffic instance and how far its flood has gone.
struct Lab {
    traffic: Traffic,
    guarded: u32,
    aged: bool,
    /// Distinct sources sent so far (churn and measurement).
    sources: u64,
    admitted_since_clear: u64,
    next_generation: u32,
}

impl Lab {
    fn new(what: &str, aged: bool) -> Result<Lab> {
        let mut traffic = Traffic::load(what, REAL_CONFIG, true)?;
        let guarded = traffic.slot("guarded")?;
        if aged {
            // As the daemon at start: the first generation cleared at once.
            traffic.kernel.age_seen(0)?;
        }
        Ok(Lab {
            traffic,
            guarded,
            aged,
            sources: 0,
            admitted_since_clear: 0,
            next_generation: 1,
        })
    }

    /// Point the rewriter at this lab's traffic program (or at `floor_drop`).
    fn aim(&self, bench: &mut BenchObject, floor: bool) -> Result<()> {
        let target = if floor {
            bench.floor_fd()?.try_clone()?
        } else {
            self.traffic.program()?.fd()?.try_clone()?
        };
        bench.set_jump(&target)?;
        bench.configure(&GenConfig {
            family: gen_abi::FAMILY_V6,
            flood_base: 0x8000_0000,
            flood_mask: AGING_MASK,
            ..GenConfig::default()
        })
    }

    /// Flood new sources with the raised admission until `total` have been sent, clearing a
    /// generation every [`AGE_EVERY_ADMITTED`] admissions if this lab ages.
    fn churn_to(&mut self, bench: &mut BenchObject, total: u64) -> Result<()> {
        self.traffic.reconfigure(&churn_config())?;
        self.aim(bench, false)?;
        let frame = frame();
        while self.sources < total {
            let n = CHURN_CHUNK.min(u32::try_from(total - self.sources).unwrap_or(CHURN_CHUNK));
            let before = self.traffic.class_stats(self.guarded)?.admitted;
            let (action, _) = test_run(bench.program(gen_abi::SPOOF_PROGRAM)?, &frame, n)?;
            ensure!(action != XDP_ABORTED, "aging churn: XDP_ABORTED");
            self.sources += u64::from(n);
            self.admitted_since_clear += self.traffic.class_stats(self.guarded)?.admitted - before;
            if self.aged && self.admitted_since_clear >= AGE_EVERY_ADMITTED {
                self.traffic.kernel.age_seen(self.next_generation)?;
                self.next_generation ^= 1;
                self.admitted_since_clear = 0;
            }
        }
        self.traffic.reconfigure(REAL_CONFIG)
    }

    /// Program work on a new source under the real limits: mean of a run through the
    /// traffic program minus a run through `floor_drop`, `reps` times.
    fn measure(&mut self, bench: &mut BenchObject, repeat: u32, reps: usize) -> Result<Vec<f64>> {
        let frame = frame();
        let mut work = Vec::with_capacity(reps);
        for _ in 0..reps {
            self.aim(bench, true)?;
            let (_, floor) = test_run(bench.program(gen_abi::SPOOF_PROGRAM)?, &frame, repeat)?;
            self.aim(bench, false)?;
            let (action, ns) = test_run(bench.program(gen_abi::SPOOF_PROGRAM)?, &frame, repeat)?;
            ensure!(action != XDP_ABORTED, "aging measure: XDP_ABORTED");
            // Both runs advance the rewriter's sequence: every repeat is a new source.
            self.sources += 2 * u64::from(repeat);
            work.push(ns - floor);
        }
        Ok(work)
    }

    /// What the measured packets met: the bitmap's share of bits set, and buckets held.
    fn state(&self, report: &mut Report, name: &str) -> Result<()> {
        let (set, bits) = self.traffic.kernel.seen_bits();
        report.meta(&format!("{name}.seen_fill"), set as f64 / bits as f64);
        let buckets = self.traffic.kernel.buckets()?.len() as u64;
        report.meta(&format!("{name}.buckets"), buckets);
        report.meta(&format!("{name}.sources"), self.sources);
        Ok(())
    }
}

fn frame() -> Vec<u8> {
    udp6(Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0, 0, 0, 0, 1))
}

pub(crate) fn run(bench: &mut BenchObject, plan: &Plan) -> Result<Report> {
    let all: Vec<usize> = (0..traffic_testkit::netns::online_cpus()).collect();
    // One pinned CPU: the rewriter's sequence is per CPU.
    flood::set_affinity(0, &[GEN_CPU])?;
    let result = measure_all(bench, plan);
    flood::set_affinity(0, &all)?;
    result
}

fn measure_all(bench: &mut BenchObject, plan: &Plan) -> Result<Report> {
    let mut report = Report::new(
        "aging",
        "a'. spoofed flood vs tracked-bitmap age (ns per packet, issue 17 item 9)",
    );
    let (small, large) = if plan.quick {
        (100_000, 10_000_000)
    } else {
        (1_000_000, 100_000_000)
    };
    let reps = plan.reps.min(3);
    bench.reset()?;
    let mut aged = Lab::new("aging", true)?;
    aged.churn_to(bench, small)?;
    aged.state(&mut report, "aged_small")?;
    let a = aged.measure(bench, plan.repeat, reps)?;
    aged.churn_to(bench, large)?;
    aged.state(&mut report, "aged_large")?;
    let b = aged.measure(bench, plan.repeat, reps)?;
    drop(aged);
    bench.reset()?;
    let mut unaged = Lab::new("aging-off", false)?;
    unaged.churn_to(bench, large)?;
    unaged.state(&mut report, "unaged_large")?;
    let c = unaged.measure(bench, plan.repeat, reps)?;
    drop(unaged);
    bench.reset()?;
    report.meta("sources_small", small);
    report.meta("sources_large", large);
    report.meta("age_every_admitted", AGE_EVERY_ADMITTED);
    report.meta("churn_admission_per_s", 1_000_000);
    report.meta("measure_reps", reps as u64);
    report.figure(
        "aged_small.work_ns",
        "ns",
        "new source, admission on, after the small churn, bitmap aged: run − rewriter floor",
        a,
    );
    report.figure(
        "aged_large.work_ns",
        "ns",
        "the same after the large churn, bitmap aged",
        b,
    );
    report.figure(
        "unaged_large.work_ns",
        "ns",
        "the same after the large churn, bitmap never aged (saturated)",
        c,
    );
    report.ratio(
        "aged_large/aged_small.work",
        "aged_large.work_ns",
        "aged_small.work_ns",
        "flood cost after 10⁸ sources over after 10⁶, aged",
    );
    report.ratio(
        "unaged_large/aged_small.work",
        "unaged_large.work_ns",
        "aged_small.work_ns",
        "flood cost after 10⁸ sources without aging over after 10⁶ aged",
    );
    report.target(
        "aged bitmap: cost after 10⁸ sources ≤ 1.15× after 10⁶",
        "aged_large/aged_small.work",
        Bound::AtMost(1.15),
        None,
    );
    Ok(report)
}
