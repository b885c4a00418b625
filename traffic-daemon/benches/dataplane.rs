//! The data-plane benchmark: what the XDP program costs, what it saves the receiving CPU
//! against the usual alternatives, and whether its limits hold under a spoofed flood.
//!
//! ```text
//! cargo xtask bench [--quick]              # set-up, then this, as root
//! cargo bench -p traffic-daemon --bench dataplane -- [--quick] [--reps N] [--json-dir DIR]
//!                                                    [--only testrun,veth,accuracy]
//! ```
//!
//! Root, bpffs and the real eBPF objects. Everything runs in maps pinned under
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
//! same repetition: `floor_drop`, a bare XDP_DROP from the `traffic-bench` object, which
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
//! the overflow bucket) and off (every packet inserted into the LRU), each on its own maps.
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

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuValues, ProgramArray},
    programs::{ProgramFd, TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    util::nr_cpus,
};
use traffic_common::{
    BucketKey, ClassStats, Counter, PROGRAM_NAME, Reason, counter_index, map_names,
};
use traffic_daemon::{
    config::{AttachMode, Config},
    dataplane::{
        Dataplane as _,
        kernel::{Kernel, LoadOptions},
    },
    plan::{Slots, desired, diff},
};
use traffic_loadgen::{
    flood::{self, FloodNet, GEN_MAC, RCV_MAC, RCV_V4, RCV_V6},
    gen_abi::{self, GenConfig, GenState, LegitStat},
    peers::{self, Hashlimit, NftMeter, SourceLimit},
    stats::{BenchReport, Bound, rotation},
};
use traffic_testkit::packet::Frame;

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Capacity of the bucket map in every suite (the shipped default).
const MAX_SOURCES: u32 = 131_072;
/// Per-source limit of the veth flood and the accuracy run.
const RATE: u32 = 10;
const BURST: u32 = 10;
/// UDP port the flood frames go to.
const FLOOD_PORT: u16 = 9;
/// Frames per live-frames test run (one syscall); the time bound is checked between runs.
const GEN_CHUNK: u64 = 1 << 20;
/// Frames the kernel prepares per batch in live-frames mode.
const GEN_BATCH: u32 = 64;
/// CPU the generator runs on; the receiver's NAPI thread gets the other one.
const GEN_CPU: usize = 0;
const RCV_CPU: usize = 1;

// ---------------------------------------------------------------------------------------
// Arguments and the run
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Suite {
    TestRun,
    Veth,
    Accuracy,
}

impl Suite {
    const ALL: [Suite; 3] = [Suite::TestRun, Suite::Veth, Suite::Accuracy];

    fn name(self) -> &'static str {
        match self {
            Suite::TestRun => "testrun",
            Suite::Veth => "veth",
            Suite::Accuracy => "accuracy",
        }
    }
}

/// How much to measure.
#[derive(Clone, Debug)]
struct Plan {
    quick: bool,
    reps: usize,
    /// Test-run repeats per variant and repetition.
    repeat: u32,
    /// Veth flood: frames and time bound per variant and repetition.
    veth_frames: u64,
    veth_time: Duration,
    /// Accuracy: flood duration and frame bound per repetition.
    accuracy_time: Duration,
    accuracy_frames: u64,
}

impl Plan {
    fn new(quick: bool, reps: Option<usize>) -> Plan {
        if quick {
            Plan {
                quick,
                reps: reps.unwrap_or(2),
                repeat: 100_000,
                veth_frames: 2_000_000,
                veth_time: Duration::from_secs(2),
                accuracy_time: Duration::from_secs(2),
                accuracy_frames: 40_000_000,
            }
        } else {
            Plan {
                quick,
                reps: reps.unwrap_or(5),
                repeat: 1_000_000,
                veth_frames: 6_000_000,
                veth_time: Duration::from_secs(3),
                accuracy_time: Duration::from_secs(10),
                accuracy_frames: 200_000_000,
            }
        }
    }
}

struct Args {
    plan: Plan,
    json_dir: PathBuf,
    suites: Vec<Suite>,
}

fn usage() -> &'static str {
    "usage: dataplane [--quick] [--reps N] [--json-dir DIR] [--only testrun,veth,accuracy]"
}

fn parse_args() -> Result<Args> {
    let mut quick = false;
    let mut reps = None;
    let mut json_dir = None;
    let mut suites = Suite::ALL.to_vec();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            // Passed by `cargo bench` to every bench target.
            "--bench" => {}
            "--quick" => quick = true,
            "--reps" => {
                let n: usize = it.next().context(usage())?.parse().context("--reps N")?;
                ensure!(n >= 1, "--reps must be at least 1");
                reps = Some(n);
            }
            "--json-dir" => json_dir = Some(PathBuf::from(it.next().context(usage())?)),
            "--only" => {
                let list = it.next().context(usage())?;
                suites = list
                    .split(',')
                    .map(|s| {
                        Suite::ALL
                            .into_iter()
                            .find(|x| x.name() == s.trim())
                            .with_context(|| format!("unknown suite `{s}`; {}", usage()))
                    })
                    .collect::<Result<_>>()?;
            }
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`; {}", usage()),
        }
    }
    let json_dir = match json_dir {
        Some(d) => d,
        None => target_dir()?.join("bench"),
    };
    Ok(Args {
        plan: Plan::new(quick, reps),
        json_dir,
        suites,
    })
}

/// `CARGO_TARGET_DIR`, or the target directory this binary was built in
/// (`<target>/<profile>/deps/dataplane-…`).
fn target_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("locate the bench binary")?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_owned)
        .context("bench binary is not inside a cargo target directory")
}

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
        traffic_daemon::ebpf_available() && !traffic_daemon::EBPF_BENCH_OBJECT.is_empty(),
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
            Suite::TestRun => testrun(&mut bench, &args.plan)?,
            Suite::Veth => veth(&mut bench, &args.plan)?,
            Suite::Accuracy => accuracy(&mut bench, &args.plan)?,
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

fn common_meta(r: &mut BenchReport, plan: &Plan, cpus: usize) {
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

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Remove pin directories of earlier runs that died without cleaning up (killed by a
/// signal): `/sys/fs/bpf/trfbench-<pid>-*` whose process is gone.
fn remove_stale_pins() {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("trfbench-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Kernel::remove_pins(&entry.path());
        }
    }
}

/// A pin directory of this run, removed on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new(what: &str) -> Result<PinDir> {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/trfbench-{}-{what}",
            std::process::id()
        ));
        Kernel::remove_pins(&path).with_context(|| format!("remove stale {}", path.display()))?;
        Ok(PinDir(path))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = Kernel::remove_pins(&self.0) {
            eprintln!("warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// The traffic program configured from config text, with its own pinned maps. Fields drop
/// in order: program handles close before the pins go.
struct Traffic {
    kernel: Kernel,
    /// The same object loaded again onto the same pinned maps, for its program fd (the
    /// tail-call target); `None` unless asked for.
    second: Option<Ebpf>,
    slots: Slots,
    _pins: PinDir,
}

impl Traffic {
    fn load(what: &str, config: &str, second: bool) -> Result<Traffic> {
        let pins = PinDir::new(what)?;
        let mut kernel = Kernel::open_object(
            traffic_daemon::EBPF_OBJECT,
            &LoadOptions {
                pin_dir: pins.0.clone(),
                max_sources: MAX_SOURCES,
            },
        )
        .with_context(|| format!("load the traffic program ({what})"))?;
        let config = Config::parse(Path::new("bench.toml"), config).context("bench config")?;
        let slots = Slots::default().assign(&config);
        kernel
            .apply(&diff(None, &desired(&config, &slots, |_| 1.0)))
            .context("apply the bench config")?;
        let second = if second {
            let mut ebpf = EbpfLoader::new()
                .default_map_pin_directory(&pins.0)
                .map_max_entries(map_names::BUCKETS, MAX_SOURCES)
                .load(traffic_daemon::EBPF_OBJECT)
                .context("load the traffic object a second time (on the pinned maps)")?;
            xdp_mut(&mut ebpf, PROGRAM_NAME)?
                .load()
                .context("load the second traffic program")?;
            Some(ebpf)
        } else {
            None
        };
        Ok(Traffic {
            kernel,
            second,
            slots,
            _pins: pins,
        })
    }

    /// Apply another config (same classes and rules, other limits): every entry rewritten,
    /// buckets and class state kept.
    fn reconfigure(&mut self, config: &str) -> Result<()> {
        let config = Config::parse(Path::new("bench.toml"), config).context("bench config")?;
        let want = desired(&config, &self.slots, |_| 1.0);
        self.kernel
            .apply(&diff(None, &want))
            .context("apply the bench config")?;
        Ok(())
    }

    fn slot(&self, class: &str) -> Result<u32> {
        self.slots
            .slot_of(class)
            .with_context(|| format!("bench config has no class {class}"))
    }

    fn program(&self) -> Result<&Xdp> {
        xdp(
            self.second
                .as_ref()
                .context("traffic loaded without a second instance")?,
            PROGRAM_NAME,
        )
    }

    fn class_stats(&self, slot: u32) -> Result<ClassStats> {
        Ok(self.kernel.class_stats()?[slot as usize])
    }

    fn counter(&self, slot: u32, reason: Reason) -> Result<Counter> {
        Ok(self.kernel.counters()?[counter_index(slot, reason as u32, false) as usize])
    }

    /// Attach to the receiver's interface the way trafficd does (native XDP).
    fn attach(&mut self, net: &FloodNet) -> Result<()> {
        let _in = flood::enter(&net.receiver)?;
        self.kernel
            .attach(&net.rcv_if, AttachMode::Native, false)
            .context("attach the traffic program")?;
        Ok(())
    }

    fn detach(&mut self, net: &FloodNet) -> Result<()> {
        let _in = flood::enter(&net.receiver)?;
        self.kernel.detach_all();
        Ok(())
    }
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    ebpf.program(name)
        .with_context(|| format!("object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .with_context(|| format!("object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

/// The `traffic-bench` object: the floor, the generator and the rewriter, with their maps.
struct BenchObject {
    ebpf: Ebpf,
    config: Array<MapData, [u64; gen_abi::GEN_CONFIG_WORDS]>,
    state: PerCpuArray<MapData, [u64; gen_abi::GEN_STATE_WORDS]>,
    legit: Array<MapData, [u64; gen_abi::LEGIT_STAT_WORDS]>,
    /// Kept open: the kernel empties a program array when its last user reference closes.
    jump: ProgramArray<MapData>,
    ncpus: usize,
}

impl BenchObject {
    fn load() -> Result<BenchObject> {
        let mut ebpf = EbpfLoader::new()
            .load(traffic_daemon::EBPF_BENCH_OBJECT)
            .context("load the traffic-bench object")?;
        for name in [
            gen_abi::FLOOR_PROGRAM,
            gen_abi::GEN_PROGRAM,
            gen_abi::SPOOF_PROGRAM,
        ] {
            xdp_mut(&mut ebpf, name)?
                .load()
                .with_context(|| format!("load {name}"))?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("traffic-bench has no map {name}"))
        };
        let config = Array::try_from(take(gen_abi::CONFIG_MAP)?).context("open BENCH_CONFIG")?;
        let state = PerCpuArray::try_from(take(gen_abi::STATE_MAP)?).context("open BENCH_STATE")?;
        let legit = Array::try_from(take(gen_abi::LEGIT_MAP)?).context("open BENCH_LEGIT")?;
        let jump = ProgramArray::try_from(take(gen_abi::JUMP_MAP)?).context("open BENCH_JUMP")?;
        let ncpus = nr_cpus()
            .map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?
            .get() as usize;
        Ok(BenchObject {
            ebpf,
            config,
            state,
            legit,
            jump,
            ncpus,
        })
    }

    fn program(&self, name: &str) -> Result<&Xdp> {
        xdp(&self.ebpf, name)
    }

    fn floor_fd(&self) -> Result<&ProgramFd> {
        self.program(gen_abi::FLOOR_PROGRAM)?
            .fd()
            .context("floor_drop fd")
    }

    fn configure(&mut self, cfg: &GenConfig) -> Result<()> {
        self.config
            .set(0, &cfg.to_words(), 0)
            .context("write BENCH_CONFIG")
    }

    /// Zero the generator's state and the legitimate sources' statistics.
    fn reset(&mut self) -> Result<()> {
        let zero = PerCpuValues::try_from(vec![[0u64; gen_abi::GEN_STATE_WORDS]; self.ncpus])
            .context("per-CPU zero")?;
        self.state.set(0, zero, 0).context("reset BENCH_STATE")?;
        for i in 0..gen_abi::MAX_LEGIT {
            self.legit
                .set(i, &[0u64; gen_abi::LEGIT_STAT_WORDS], 0)
                .context("reset BENCH_LEGIT")?;
        }
        Ok(())
    }

    /// Generator state summed over CPUs (counts added, first/last taken at the extremes).
    fn state(&self) -> Result<GenState> {
        let per_cpu = self.state.get(&0, 0).context("read BENCH_STATE")?;
        let mut acc = GenState::default();
        for w in per_cpu.iter() {
            let s = GenState::from_words(w);
            acc.seq += s.seq;
            acc.legit_sent += s.legit_sent;
            if s.first_ns != 0 && (acc.first_ns == 0 || s.first_ns < acc.first_ns) {
                acc.first_ns = s.first_ns;
            }
            acc.last_ns = acc.last_ns.max(s.last_ns);
        }
        Ok(acc)
    }

    fn legit_stats(&self, n: u32) -> Result<Vec<LegitStat>> {
        (0..n)
            .map(|i| {
                self.legit
                    .get(&i, 0)
                    .map(|w| LegitStat::from_words(&w))
                    .context("read BENCH_LEGIT")
            })
            .collect()
    }

    fn set_jump(&mut self, target: &ProgramFd) -> Result<()> {
        self.jump.set(0, target, 0).context("write BENCH_JUMP")
    }
}

// ---------------------------------------------------------------------------------------
// Frames and runs
// ---------------------------------------------------------------------------------------

/// An IPv4 UDP frame from `src` to the flood receiver, 60 bytes (minimum Ethernet frame).
fn udp4(src: Ipv4Addr) -> Vec<u8> {
    Frame::ipv4(src, RCV_V4)
        .macs(GEN_MAC, RCV_MAC)
        .udp(40_000, FLOOD_PORT)
        .pad_to(60)
        .build()
}

/// An IPv6 UDP frame from `src` to the flood receiver (62 bytes).
fn udp6(src: Ipv6Addr) -> Vec<u8> {
    Frame::ipv6(src, RCV_V6)
        .macs(GEN_MAC, RCV_MAC)
        .udp(40_000, FLOOD_PORT)
        .build()
}

/// One test run of `repeat` repeats; the action and the mean ns per repeat.
fn test_run(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

/// The `struct xdp_md` a live-frames test run needs: frames "arrive" on `ifindex`, queue 0.
fn xdp_md(ifindex: u32, len: usize) -> Vec<u8> {
    let fields: [u32; 6] = [0, len as u32, 0, ifindex, 0, 0];
    fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
}

/// What one generator run sent.
#[derive(Clone, Copy, Debug)]
struct Sent {
    frames: u64,
    wall: Duration,
}

/// Run the generator in the sender namespace on [`GEN_CPU`] until `max_frames` are sent or
/// `max_time` has passed (checked every [`GEN_CHUNK`] frames).
fn generate(
    bench: &BenchObject,
    net: &FloodNet,
    frame: &[u8],
    max_frames: u64,
    max_time: Duration,
) -> Result<Sent> {
    let all: Vec<usize> = (0..traffic_testkit::netns::online_cpus()).collect();
    flood::set_affinity(0, &[GEN_CPU])?;
    let result = (|| {
        let _in = flood::enter(&net.sender)?;
        let ctx = xdp_md(flood::ifindex(&net.gen_if)?, frame.len());
        let prog = bench.program(gen_abi::GEN_PROGRAM)?;
        let start = Instant::now();
        let mut frames = 0u64;
        while frames < max_frames && start.elapsed() < max_time {
            let n = (max_frames - frames).min(GEN_CHUNK) as u32;
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: n,
                attrs: TestRunAttrs::new().xdp_live_frames(GEN_BATCH),
                ..TestRunOptions::new()
            })
            .context("live-frames test run of the generator")?;
            frames += u64::from(n);
        }
        Ok(Sent {
            frames,
            wall: start.elapsed(),
        })
    })();
    flood::set_affinity(0, &all)?;
    result
}

/// The receiver's NAPI thread pinned to its CPU; its CPU time and processed frames.
struct Receiver {
    napi_pid: u32,
}

#[derive(Clone, Copy, Debug)]
struct RxSnapshot {
    cpu_ns: u64,
    rx_packets: u64,
    udp: flood::UdpCounters,
}

impl Receiver {
    fn setup(net: &FloodNet, report: &mut BenchReport) -> Result<Receiver> {
        let napi_pid = net
            .threaded_napi()
            .context("threaded NAPI on the receiver")?;
        if traffic_testkit::netns::online_cpus() > RCV_CPU {
            flood::set_affinity(napi_pid, &[RCV_CPU]).context("pin the NAPI thread")?;
            report.meta("napi_cpu", RCV_CPU);
        } else {
            report.note("one CPU only: generator and receiver share it; the CPU-time figures still hold, rates do not");
        }
        report.meta("generator_cpu", GEN_CPU);
        Ok(Receiver { napi_pid })
    }

    fn snapshot(&self, net: &FloodNet) -> Result<RxSnapshot> {
        let link = net.settle(Duration::from_millis(500))?;
        Ok(RxSnapshot {
            cpu_ns: flood::cpu_time_ns(self.napi_pid)?,
            rx_packets: link.rx_packets,
            udp: net.rcv_udp()?,
        })
    }
}

/// What the receiver did during one flood.
#[derive(Clone, Copy, Debug)]
struct RxDelta {
    cpu_ns: u64,
    processed: u64,
    reached_udp: u64,
}

impl RxDelta {
    fn between(a: &RxSnapshot, b: &RxSnapshot) -> RxDelta {
        RxDelta {
            cpu_ns: b.cpu_ns - a.cpu_ns,
            processed: b.rx_packets - a.rx_packets,
            reached_udp: b.udp.since(&a.udp).reached(),
        }
    }

    fn ns_per_packet(&self) -> f64 {
        if self.processed == 0 {
            f64::NAN
        } else {
            self.cpu_ns as f64 / self.processed as f64
        }
    }
}

fn span_secs(s: &GenState) -> f64 {
    if s.first_ns == 0 || s.last_ns < s.first_ns {
        f64::NAN
    } else {
        (s.last_ns - s.first_ns) as f64 / 1e9
    }
}

/// Samples per figure name, in insertion order of first appearance.
#[derive(Default)]
struct Samples {
    order: Vec<String>,
    map: BTreeMap<String, Vec<f64>>,
}

impl Samples {
    fn push(&mut self, name: &str, rep: usize, value: f64) {
        if !self.map.contains_key(name) {
            self.order.push(name.to_owned());
        }
        let v = self.map.entry(name.to_owned()).or_default();
        if v.len() <= rep {
            v.resize(rep + 1, f64::NAN);
        }
        v[rep] = value;
    }

    fn take(&mut self, name: &str, reps: usize) -> Vec<f64> {
        let mut v = self.map.remove(name).unwrap_or_default();
        v.resize(reps, f64::NAN);
        v
    }
}

// ---------------------------------------------------------------------------------------
// a. Program cost through test-run
// ---------------------------------------------------------------------------------------

const TESTRUN_CONFIG: &str = r#"
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
fn fill_buckets(
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

/// Spoofed sources per flood: 2²⁰ /64s (8× the bucket map).
const SPOOF_MASK: u64 = (1 << 20) - 1;

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
}

impl Tr {
    const ALL: [Tr; 10] = [
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
    ];

    fn name(self) -> &'static str {
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
        }
    }

    fn about(self) -> &'static str {
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
                "spoof_tail into traffic, new IPv6 /64 every packet, admission off (LRU insert)"
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
            | Tr::SpoofLru => Some(XDP_PASS),
            // Mostly dropped (overflow), an admitted source passes now and then.
            Tr::SpoofAdmission => None,
        }
    }

    fn is_spoof(self) -> bool {
        matches!(self, Tr::SpoofBase | Tr::SpoofAdmission | Tr::SpoofLru)
    }
}

struct TestRunLab {
    /// Known sources and the flood with admission: its bucket map is full (see
    /// [`fill_buckets`]), as after a long flood or on a busy node.
    traffic: Traffic,
    /// The flood without admission, on its own maps: its churn must not touch the other.
    unprotected: Traffic,
    frames: BTreeMap<&'static str, Vec<u8>>,
    guarded: u32,
    open: u32,
}

impl TestRunLab {
    fn frame(&self, v: Tr) -> &[u8] {
        let key = match v {
            Tr::Floor | Tr::KnownPass => "v4_fast",
            Tr::KnownDrop => "v4_slow",
            Tr::Allowed => "v4_allowed",
            Tr::NonIp => "arp",
            Tr::KnownV6 => "v6_fast",
            Tr::KnownBytes => "v4_fastbytes",
            Tr::SpoofBase | Tr::SpoofAdmission | Tr::SpoofLru => "v6_spoof",
        };
        &self.frames[key]
    }

    /// One run of a variant: mean ns per repeat, and for the spoof variants the share of
    /// repeats that met a source without a bucket.
    fn run(&self, bench: &mut BenchObject, v: Tr, repeat: u32) -> Result<(f64, Option<f64>)> {
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

fn testrun(bench: &mut BenchObject, plan: &Plan) -> Result<BenchReport> {
    let mut report = BenchReport::new(
        "testrun",
        "a. program cost through BPF_PROG_TEST_RUN (ns per packet)",
    );
    let mut traffic = Traffic::load("testrun", TESTRUN_CONFIG, true)?;
    let unprotected = Traffic::load("testrun-lru", TESTRUN_CONFIG, true)?;
    let guarded = traffic.slot("guarded")?;
    let open = traffic.slot("open")?;
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
    let all: Vec<usize> = (0..traffic_testkit::netns::online_cpus()).collect();
    flood::set_affinity(0, &[GEN_CPU])?;
    let filled = fill_buckets(
        bench,
        &mut traffic,
        guarded,
        &testrun_fill_config(),
        TESTRUN_CONFIG,
    );
    flood::set_affinity(0, &all)?;
    report.meta("buckets_before_spoof_admission", filled?);
    let lab = TestRunLab {
        traffic,
        unprotected,
        frames,
        guarded,
        open,
    };
    // One pinned CPU: the rewriter's sequence is per CPU, and a second CPU's sequence
    // could revisit sources the first one left in the map.
    flood::set_affinity(0, &[GEN_CPU])?;
    let result = (|| -> Result<Samples> {
        // Warm-up, not recorded: buckets of the known sources exist (the "dropped" one is
        // over its limit from the second packet), and the LRU is full, as in a long flood.
        for v in Tr::ALL {
            lab.run(bench, v, plan.repeat)?;
        }
        let mut s = Samples::default();
        for rep in 0..plan.reps {
            for v in rotation(&Tr::ALL, rep) {
                let (ns, share) = lab.run(bench, v, plan.repeat)?;
                s.push(&format!("{}.ns", v.name()), rep, ns);
                if let Some(share) = share {
                    s.push(&format!("{}.new_source_share", v.name()), rep, share);
                }
            }
        }
        Ok(s)
    })();
    flood::set_affinity(0, &all)?;
    let mut s = result?;
    let reps = plan.reps;
    report.meta("repeat_per_run", plan.repeat);
    report.meta("max_sources", MAX_SOURCES);
    report.meta("spoofed_sources", SPOOF_MASK + 1);
    // Raw means, then work = raw − the floor of the same repetition.
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
        "new-source work without admission (LRU insert + eviction) over known IPv6 work",
    );
    report.ratio(
        "known_pass/floor.ns",
        "known_pass.ns",
        "floor_drop.ns",
        "whole test-run cost of a known source over the bare XDP_DROP",
    );
    report.target(
        "known-source verdict (pass): program work ≤ 60 ns",
        "known_pass.work_ns",
        Bound::AtMost(60.0),
        Some(Bound::AtMost(35.0)),
    );
    report.target(
        "known-source verdict (drop): program work ≤ 60 ns",
        "known_drop.work_ns",
        Bound::AtMost(60.0),
        Some(Bound::AtMost(35.0)),
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
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// b. Receive CPU per packet under a veth flood
// ---------------------------------------------------------------------------------------

/// Sources of the veth flood (198.18.0.0/20).
const VETH_SOURCES: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    None,
    XdpDrop,
    Traffic,
    Nft,
    Iptables,
}

impl Peer {
    const ALL: [Peer; 5] = [
        Peer::None,
        Peer::XdpDrop,
        Peer::Traffic,
        Peer::Nft,
        Peer::Iptables,
    ];

    fn name(self) -> &'static str {
        match self {
            Peer::None => "none",
            Peer::XdpDrop => "xdp_drop",
            Peer::Traffic => "traffic",
            Peer::Nft => "nft",
            Peer::Iptables => "iptables",
        }
    }

    fn about(self) -> &'static str {
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

    fn limits(self) -> bool {
        matches!(self, Peer::Traffic | Peer::Nft | Peer::Iptables)
    }
}

fn veth_config(iface: &str) -> String {
    format!(
        "[daemon]\ninterfaces = [\"{iface}\"]\nmax_sources = {MAX_SOURCES}\n\
         [classes.default]\npackets = {{ rate = {RATE}, burst = {BURST} }}\n"
    )
}

fn veth(bench: &mut BenchObject, plan: &Plan) -> Result<BenchReport> {
    let mut report = BenchReport::new(
        "veth",
        "b. receive CPU per packet, veth flood from 4096 sources",
    );
    let net = FloodNet::create(&traffic_testkit::topo::unique_tag())
        .context("create the flood namespaces")?;
    let rx = Receiver::setup(&net, &mut report)?;
    let mut traffic = Traffic::load("veth", &veth_config(&net.rcv_if), false)?;
    let limit = SourceLimit {
        rate_per_sec: RATE,
        burst: BURST,
        max_sources: MAX_SOURCES,
    };
    let frame = udp4(Ipv4Addr::new(198, 18, 0, 0));
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
    let gen_cfg = GenConfig {
        family: gen_abi::FAMILY_V4,
        flood_base: u64::from(u32::from(Ipv4Addr::new(198, 18, 0, 0))),
        flood_mask: VETH_SOURCES - 1,
        ..GenConfig::default()
    };
    let mut s = Samples::default();
    // A short warm-up of every variant (not recorded): page pools, maps and hash tables
    // are in their steady state before the first measurement.
    let warm = Plan {
        veth_frames: plan.veth_frames / 10,
        ..plan.clone()
    };
    for v in Peer::ALL {
        veth_run(
            bench,
            &net,
            &rx,
            &mut traffic,
            limit,
            v,
            &frame,
            &gen_cfg,
            &warm,
        )?;
    }
    for rep in 0..plan.reps {
        for v in rotation(&Peer::ALL, rep) {
            let m = veth_run(
                bench,
                &net,
                &rx,
                &mut traffic,
                limit,
                v,
                &frame,
                &gen_cfg,
                plan,
            )
            .with_context(|| format!("veth flood, {}", v.name()))?;
            let n = v.name();
            s.push(&format!("{n}.ns_per_packet"), rep, m.rx.ns_per_packet());
            s.push(
                &format!("{n}.mpps"),
                rep,
                m.rx.processed as f64 / m.span / 1e6,
            );
            s.push(
                &format!("{n}.processed_share"),
                rep,
                m.rx.processed as f64 / m.sent.frames as f64,
            );
            s.push(
                &format!("{n}.generator_mpps"),
                rep,
                m.sent.frames as f64 / m.sent.wall.as_secs_f64() / 1e6,
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
                    "traffic.program_passed/udp",
                    rep,
                    p as f64 / m.rx.reached_udp.max(1) as f64,
                );
            }
        }
    }
    let reps = plan.reps;
    for v in Peer::ALL {
        let n = v.name();
        report.figure(
            &format!("{n}.ns_per_packet"),
            "ns/packet",
            v.about(),
            s.take(&format!("{n}.ns_per_packet"), reps),
        );
    }
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
    for v in Peer::ALL {
        let n = v.name();
        report.figure(
            &format!("{n}.mpps"),
            "Mpps",
            "frames processed per second of generator time (context only: swings ±40%)",
            s.take(&format!("{n}.mpps"), reps),
        );
    }
    for v in Peer::ALL {
        let n = v.name();
        report.figure(
            &format!("{n}.processed_share"),
            "share",
            "frames the receiver processed / frames generated (the rest: receiver ring full)",
            s.take(&format!("{n}.processed_share"), reps),
        );
    }
    for v in Peer::ALL {
        let n = v.name();
        report.figure(
            &format!("{n}.generator_mpps"),
            "Mpps",
            "frames the generator sent per second (context)",
            s.take(&format!("{n}.generator_mpps"), reps),
        );
    }
    for v in Peer::ALL.into_iter().filter(|v| v.limits()) {
        let n = v.name();
        report.figure(
            &format!("{n}.passed/allowance"),
            "share",
            "datagrams that reached UDP / (4096 × (rate·t + burst)); ≤ 1 holds the limit",
            s.take(&format!("{n}.passed/allowance"), reps),
        );
    }
    report.figure(
        "traffic.program_passed/udp",
        "share",
        "traffic's own pass counter over what reached UDP (cross-check, ≈ 1)",
        s.take("traffic.program_passed/udp", reps),
    );
    report.target(
        "veth flood: CPU per packet ≤ 0.3× the nftables meter's",
        "traffic/nft",
        Bound::AtMost(0.3),
        None,
    );
    report.target(
        "veth flood: CPU per packet ≤ 2.5× bare XDP_DROP's",
        "traffic/xdp_drop",
        Bound::AtMost(2.5),
        None,
    );
    report.target(
        "veth flood: traffic passes no more than the limit allows",
        "traffic.passed/allowance",
        Bound::AtMost(1.0),
        None,
    );
    drop(traffic);
    drop(net);
    Ok(report)
}

struct VethRun {
    sent: Sent,
    rx: RxDelta,
    /// Generator span (kernel clock), s.
    span: f64,
    program_passed: Option<u64>,
}

#[allow(clippy::too_many_arguments)]
fn veth_run(
    bench: &mut BenchObject,
    net: &FloodNet,
    rx: &Receiver,
    traffic: &mut Traffic,
    limit: SourceLimit,
    v: Peer,
    frame: &[u8],
    gen_cfg: &GenConfig,
    plan: &Plan,
) -> Result<VethRun> {
    bench.configure(gen_cfg)?;
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
            let iface = std::ffi::CString::new(net.rcv_if.as_str()).context("interface name")?;
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
    let measured = (|| -> Result<VethRun> {
        let passed_before = traffic.counter(default_slot, Reason::Pass)?.packets;
        let a = rx.snapshot(net)?;
        let sent = generate(bench, net, frame, plan.veth_frames, plan.veth_time)?;
        let b = rx.snapshot(net)?;
        let passed_after = traffic.counter(default_slot, Reason::Pass)?.packets;
        let st = bench.state()?;
        Ok(VethRun {
            sent,
            rx: RxDelta::between(&a, &b),
            span: span_secs(&st),
            program_passed: (v == Peer::Traffic).then_some(passed_after - passed_before),
        })
    })();
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

// ---------------------------------------------------------------------------------------
// c. Accuracy under a flood from ≥ 10⁶ spoofed sources
// ---------------------------------------------------------------------------------------

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

/// Packets seen so far by each legitimate source's bucket (by masked address).
fn legit_buckets(traffic: &Traffic, slot: u32) -> Result<BTreeMap<[u8; 16], u64>> {
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

fn accuracy(bench: &mut BenchObject, plan: &Plan) -> Result<BenchReport> {
    let mut report = BenchReport::new(
        "accuracy",
        "c. limits under a flood from ≥ 10⁶ spoofed sources",
    );
    let net = FloodNet::create(&traffic_testkit::topo::unique_tag())
        .context("create the flood namespaces")?;
    let rx = Receiver::setup(&net, &mut report)?;
    let mut with = Traffic::load("acc-adm", &accuracy_config(&net.rcv_if, true), true)?;
    // The bucket map full of admitted spoofed sources, as after a long flood: admitted
    // sources then evict others, and lookups of new sources miss a cold table.
    let all: Vec<usize> = (0..traffic_testkit::netns::online_cpus()).collect();
    flood::set_affinity(0, &[GEN_CPU])?;
    let slot = with.slot("default")?;
    let filled = fill_buckets(
        bench,
        &mut with,
        slot,
        &accuracy_config(&net.rcv_if, true).replace(
            &format!("admission = {{ rate = {ADMISSION_RATE}, burst = {ADMISSION_RATE} }}"),
            "admission = { rate = 1000000000, burst = 1000000000 }",
        ),
        &accuracy_config(&net.rcv_if, true),
    );
    flood::set_affinity(0, &all)?;
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
    };
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
    let variants = [true, false];
    let name = |adm: bool| if adm { "admission" } else { "no_admission" };
    let mut s = Samples::default();
    for rep in 0..plan.reps {
        for adm in rotation(&variants, rep) {
            let traffic = if adm { &mut with } else { &mut without };
            let m = accuracy_run(bench, &net, &rx, traffic, &gen_cfg, plan)
                .with_context(|| format!("accuracy, {}", name(adm)))?;
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
    }
    let reps = plan.reps;
    for adm in variants {
        let n = name(adm);
        let what = if adm { "admission on" } else { "admission off" };
        for (k, unit, about) in [
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
        ] {
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
    drop(with);
    drop(without);
    drop(net);
    Ok(report)
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
    processed: u64,
    span: f64,
    ns_per_packet: f64,
    flood_passed: u64,
    overflow_passed: u64,
    overflow_allowance: f64,
    /// Seconds from the generator's end until the receiver was idle.
    lag: f64,
}

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
        // The legitimate sources are tracked: one packet each through the program itself
        // (so it knows them however it tracks sources), then their buckets refill.
        for i in 0..LEGIT {
            let (action, _) = traffic.kernel.test_run(&udp6(legit_addr(i)), 1)?;
            ensure!(
                action == XDP_PASS,
                "tracking legitimate source {i}: action {action}"
            );
        }
        let before: BTreeMap<[u8; 16], u64> = legit_buckets(traffic, slot)?;
        ensure!(
            before.len() == LEGIT as usize,
            "only {} of {LEGIT} legitimate sources got a bucket",
            before.len()
        );
        std::thread::sleep(Duration::from_secs_f64(2.0 / f64::from(RATE)));
        bench.configure(gen_cfg)?;
        bench.reset()?;
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
        let st = bench.state()?;
        let legit = bench.legit_stats(LEGIT)?;
        let after = legit_buckets(traffic, slot)?;
        let span = span_secs(&st);
        let debug = std::env::var_os("TRAFFIC_BENCH_DEBUG").is_some();
        let mut kept = Vec::new();
        let mut reached = Vec::new();
        let mut kept_of_reached = Vec::new();
        let mut excess_max = f64::NEG_INFINITY;
        let mut legit_passed = 0u64;
        for (i, l) in legit.iter().enumerate() {
            ensure!(l.sent > 0, "legitimate source {i} sent nothing");
            let t = (l.last_ns - l.first_ns) as f64 / 1e9;
            let allowance = f64::from(RATE) * t + f64::from(BURST);
            let passed = counts
                .get(&IpAddr::V6(legit_addr(i as u32)))
                .copied()
                .unwrap_or(0);
            legit_passed += passed;
            kept.push(passed as f64 / allowance);
            let bound = allowance + f64::from(RATE) * lag;
            excess_max = excess_max.max(passed as f64 - bound);
            // What reached the program (its bucket's count; gone if the LRU evicted it).
            let key = legit_key(i as u32, slot).addr;
            let seen = match (before.get(&key), after.get(&key)) {
                (Some(b), Some(a)) if a >= b => Some(a - b),
                _ => None,
            };
            reached.push(seen.map_or(f64::NAN, |n| n as f64 / allowance));
            kept_of_reached
                .push(seen.map_or(f64::NAN, |n| passed as f64 / allowance.min(n as f64)));
            if debug {
                eprintln!(
                    "legit {i}: sent {} over {t:.3} s, reached the program {seen:?}, passed (sink) {passed}, allowance {allowance:.1}",
                    l.sent
                );
            }
        }
        let sum = traffic_loadgen::stats::summarize(&kept).context("no legitimate sources")?;
        let min_of = |v: &[f64]| traffic_loadgen::stats::summarize(v).map_or(f64::NAN, |s| s.min);
        let total: u64 = counts.values().sum();
        let overflowed = stats_after.overflowed - stats_before.overflowed;
        let refused = (over_after - over_before) + (full_after - full_before);
        let rx = RxDelta::between(&a, &b);
        let space = (SPOOF_MASK + 1) as f64;
        let share = (rx.processed as f64 / (st.seq + st.legit_sent).max(1) as f64).min(1.0);
        let cycles = st.seq as f64 / space;
        Ok(AccuracyRun {
            kept_min: sum.min,
            kept_median: sum.median,
            kept_max: sum.max,
            reached_min: min_of(&reached),
            kept_of_reached_min: min_of(&kept_of_reached),
            excess_max,
            distinct: st.seq.min(SPOOF_MASK + 1),
            distinct_received_est: space * (1.0 - (1.0 - share).powf(cycles)),
            processed: rx.processed,
            span,
            ns_per_packet: rx.ns_per_packet(),
            flood_passed: total - legit_passed,
            overflow_passed: overflowed.saturating_sub(refused),
            overflow_allowance: f64::from(OVERFLOW_RATE) * (span + lag) + f64::from(OVERFLOW_BURST),
            lag,
        })
    })();
    traffic.detach(net)?;
    measured
}
