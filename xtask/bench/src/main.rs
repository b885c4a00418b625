//! The data-plane benchmark: what the XDP program costs, what it saves the receiving CPU
//! against the usual alternatives, and whether its limits hold under a spoofed flood.
//!
//! ```text
//! cargo xtask bench [--quick]              # set-up, then this, as root
//! cargo run --release -p traffic-bench -- [--quick] [--reps N] [--json-dir DIR]
//!                                         [--only testrun,veth,accuracy]
//! ```
//!
//! Root, bpffs and the real eBPF objects: the traffic program from trafficd
//! (`traffic_daemon::EBPF_OBJECT`, loaded through the daemon's own adapter) and the
//! benchmark programs (`traffic-ebpf/bench`), which this crate's build script builds and
//! embeds. Modules: `args` (flags and how much to measure), `load` (the two objects and
//! their pins), `runs` (frames, test runs, the generator, the receiver's counters), one
//! module per suite. Everything runs in maps pinned under
//! `/sys/fs/bpf/trfbench-<pid>-*` and namespaces `trfb<tag>-*` that the run creates and
//! removes. `TRAFFIC_BENCH_DEBUG=1` prints every legitimate source of the accuracy suite.
//!
//! Every figure is measured once per repetition (≥ 5, `--quick`: 2) and reported as
//! min / median / max; the order of the variants rotates from one repetition to the next;
//! ratios are paired — computed inside each repetition from two figures measured moments
//! apart, then summarised. Each suite prints a table and writes the same figures as JSON to
//! `<target>/bench/<suite>.json`.
//!
//! # a. `testrun`: program cost through BPF_PROG_TEST_RUN
//!
//! Each variant is one test run of 10⁶ repeats (`--quick`: 10⁵) of one frame; the kernel
//! reports the mean time per repeat. Program *work* is that minus the floor measured in the
//! same repetition: `floor_drop`, a bare XDP_DROP from the `traffic-ebpf-bench` object, which
//! carries the test-run loop and program dispatch. Variants: a known source passing, a known
//! source over its limit (dropped), an `allow`-listed source, a non-IP (ARP) frame, a known
//! IPv6 source, a known source with a packet and a byte limit, and the spoofed flood.
//!
//! Spoofed flood, a new source on every packet: test-run repeats one frame, so the
//! `spoof_tail` program of the bench object rewrites the source from a per-CPU counter
//! (2²⁰ distinct IPv6 /64s, 8× the bucket map, so a source has always been evicted before
//! it comes back) and tail-calls slot 0 of a program array. With `floor_drop` in the slot
//! it is the baseline (rewrite + tail call); with the traffic program (loaded a second time
//! from the same object onto the same pinned maps, so the daemon adapter still configures
//! it) it is baseline + the program's work on a new source. Work = the difference, like the
//! known-source work, and it is compared with the known IPv6 source (same family, same
//! parse). Measured with admission on (new sources charged to the admission budget, then
//! the overflow bucket) and off (every packet inserted into the source table), each on its own maps.
//! With admission on, the bucket map is first filled the way a long flood fills it — twice
//! its capacity of spoofed sources admitted by the program itself under a lifted budget —
//! because an unknown source's lookup costs what the table's size and coldness make it
//! cost: on an almost empty map it is nearly free, which no node under attack enjoys. The
//! share of runs that really met an unknown source is checked from the class statistics.
//!
//! # b. `veth`: receive CPU per packet under a veth flood
//!
//! See `traffic_loadgen::flood`. A generator namespace runs `gen_flood` with test-run in
//! live-frames mode on its veth end, pinned to CPU 0: every frame gets one of 4096 IPv4
//! sources and is sent with XDP_TX to the receiver namespace, whose veth has threaded NAPI
//! pinned to CPU 1. The receive cost is the NAPI thread's CPU time (`/proc/PID/schedstat`)
//! over the frames it processed (`ip -s link` rx packets: every frame the poll consumed).
//! Variants, each with the same per-source limit (10/s, burst 10):
//! - `none`: nothing attached; frames go up the stack to UDP port 9 on the receiver's own
//!   address, where nobody listens (dropped as NoPorts, ICMP errors rate-limited): what an
//!   unprotected node spends on junk;
//! - `xdp_drop`: `floor_drop` attached (native veth XDP): the floor of the receive path;
//! - `traffic`: the traffic program attached through the daemon's own adapter (`Kernel`)
//!   with a config of that limit — what trafficd enforces, without trafficd's user-space
//!   loop on the measured CPU;
//! - `nft`: an nftables netdev-ingress per-source meter (`traffic_loadgen::peers`);
//! - `iptables`: iptables hashlimit in raw PREROUTING (`traffic_loadgen::peers`).
//!
//! Also measured per limiter: packets that reached the UDP layer (`/proc/net/snmp` of the
//! receiver) against 4096 × (rate·t + burst), t the generator's span.
//!
//! # c. `accuracy`: limits under a flood from ≥ 10⁶ spoofed sources
//!
//! The same veth lab, the traffic program attached, one class: 10/s, burst 10 per source,
//! admission 1000/s (burst 1000), overflow 1000/s (burst 1000), its bucket map filled
//! beforehand as in suite a (admitted sources then evict others, as in a long flood; the
//! legitimate sources must survive that). 64 legitimate IPv6 sources are tracked first (one
//! test-run packet each through the program, then 200 ms for their buckets to refill), then
//! the generator floods from 2²⁰ spoofed /64s for 10 s (`--quick`: 2 s) and interleaves the
//! legitimate sources on a schedule of the kernel clock: each sends 300/s (30× its limit)
//! whatever the flood rate, because the veth ring in front of the filter drops a large,
//! bursty share of everything when the generator outruns the receiver — the filter can only
//! keep what reaches it. A UDP sink in the receiver counts what passed per source. Per
//! legitimate source, kept = passed / (rate·t + burst) with t its first-to-last send; also
//! what reached the program (its bucket's count) and passed / min(allowance, reached). The
//! overflow bucket's passes (class statistics: overflowed minus overflow and map-full
//! drops) are held against its own rate·t + burst, t the flood's span. In both "no more
//! than allowed" checks t also counts the receiver's lag (from the generator's last frame
//! until the receiver's frame count stops moving: it handles frames after they were sent,
//! later still when its thread is preempted), which makes them upper bounds on what the
//! program could have let through; one packet of slack covers rounding. Contrast variant:
//! the same class without admission.
#![forbid(unsafe_code)]

mod accuracy;
mod aging;
mod args;
mod idle;
mod load;
mod runs;
mod scale;
mod testrun;
mod variant;
mod veth;

use std::{process::ExitCode, time::Instant};

use anyhow::{Context as _, Result, ensure};
use traffic_loadgen::stats::BenchReport as Report;

use crate::{
    args::{Plan, Suite, parse_args},
    load::{BenchObject, remove_stale_pins},
};

/// The benchmark programs (`traffic-ebpf/bench`), built by this crate's build script
/// (empty when built with `AYA_BUILD_SKIP=1`).
static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic-ebpf-bench"));

pub(crate) const XDP_ABORTED: u32 = 0;
pub(crate) const XDP_DROP: u32 = 1;
pub(crate) const XDP_PASS: u32 = 2;

/// Capacity of the bucket map in every suite (the shipped default).
pub(crate) const MAX_SOURCES: u32 = 131_072;
/// Per-source limit of the veth flood and the accuracy run.
pub(crate) const RATE: u32 = 10;
pub(crate) const BURST: u32 = 10;
/// UDP port the flood frames go to.
pub(crate) const FLOOD_PORT: u16 = 9;
/// Frames per live-frames test run (one syscall); the time bound is checked between runs.
pub(crate) const GEN_CHUNK: u64 = 1 << 20;
/// Frames the kernel prepares per batch in live-frames mode.
pub(crate) const GEN_BATCH: u32 = 64;
/// CPU the generator runs on; the receiver's NAPI thread gets the other one.
pub(crate) const GEN_CPU: usize = 0;
pub(crate) const RCV_CPU: usize = 1;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    traffic_testkit::require_privileged();
    ensure!(
        traffic_daemon::ebpf_available() && !BENCH_OBJECT.is_empty(),
        "this build has no eBPF objects (AYA_BUILD_SKIP=1): build the bench with the eBPF toolchain (`cargo xtask bench`)"
    );
    remove_stale_pins();
    let cpus = traffic_testkit::netns::online_cpus();
    let started = Instant::now();
    println!(
        "dataplane bench: {} repetitions{}, {cpus} CPUs, JSON to {}",
        args.plan.reps,
        if args.plan.quick { " (quick)" } else { "" },
        args.json_dir.display()
    );
    let mut bench = BenchObject::load()?;
    let mut written = Vec::new();
    for suite in &args.suites {
        let t = Instant::now();
        let mut report = match suite {
            Suite::TestRun => testrun::run(&mut bench, &args.plan)?,
            Suite::Veth => veth::run(&mut bench, &args.plan)?,
            Suite::Accuracy => accuracy::run(&mut bench, &args.plan)?,
            Suite::Idle => idle::run(&args.plan)?,
            Suite::Aging => aging::run(&mut bench, &args.plan)?,
            Suite::Scale => scale::run(&mut bench, &args.plan)?,
            Suite::Variant => {
                let object = args.variant.as_deref().context("--variant OBJECT")?;
                variant::run(&mut bench, &args.plan, object)?
            }
        };
        common_meta(&mut report, &args.plan, cpus);
        report.meta("suite_seconds", t.elapsed().as_secs_f64());
        print!("\n{}", report.table());
        written.push(report.write_json(&args.json_dir)?);
    }
    println!(
        "\ndone in {:.0} s; wrote {}",
        started.elapsed().as_secs_f64(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn common_meta(r: &mut Report, plan: &Plan, cpus: usize) {
    r.meta("quick", plan.quick);
    r.meta("repetitions", plan.reps);
    r.meta("cpus", cpus);
    r.meta(
        "kernel",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    );
    r.meta(
        "loadavg_at_end",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    );
    r.meta(
        "unix_time",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
}
