//! Cases: see the table in main.rs.
//!
//! Issue 17 item 6: a change of limits (a level change or a reload: both go through the
//! engine's `apply_desired`) rescales the buckets of the classes it touches. On main the
//! engine dumped the whole bucket map and wrote each bucket back from that dump: tokens a
//! source spent during the walk were refunded, its counters rewound, evicted keys
//! re-inserted. Now each bucket is rescaled in the kernel (the `traffic_rescale` program,
//! compare-and-swap per word).
//!
//! The engine (`Core`) runs on the real maps, and a second handle on the same pins drives
//! a saturated source with BPF_PROG_TEST_RUN from another thread, while thirty thousand idle
//! but half-drained buckets make each walk take long enough to matter.

use std::{
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use traffic_common::{BucketKey, Reason, RescaleRequest, counter_index, v4_mapped};
use traffic_daemon::{
    config::Config,
    dataplane::{Dataplane as _, Rescaled},
    engine::Core,
};
use traffic_testkit::packet::Frame;

use crate::support::{
    PinDir,
    bpf::{NODE4, load},
};

const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);
/// Idle buckets in the class: each walk reads them all.
const IDLE: u32 = 30_000;
const CHANGES: usize = 20;
/// Packets per second of the two configs the reloads alternate between (burst 200 each).
const RATES: [f64; 2] = [4_000.0, 2_000.0];
const BURST: f64 = 200.0;

fn config(rate: f64) -> Config {
    let text = format!(
        "[daemon]\ninterfaces = [\"lo\"]\nmax_sources = 65536\n\
         [pressure.signal]\ncpu = \"off\"\nmemory = \"off\"\nio = \"off\"\n\
         [classes.default]\npackets = {{ rate = {rate}, burst = {BURST} }}\n"
    );
    Config::parse(Path::new("t.toml"), &text).expect("test config")
}

/// Twenty changes of a class's limits while a saturated source sends: it passes no more
/// than ∫rate·dt + burst (plus 2 % and a coarse-clock tick of the faster rate per change),
/// and its bucket's packet counter ends equal to the packets the program judged (on main
/// the stale write-backs refunded tokens and rewound it). A rescale of a bucket that is
/// gone inserts nothing.
pub fn a_saturated_source_gains_nothing_from_twenty_limit_changes() -> Result<()> {
    let pins = PinDir::new("hostile-rescale");
    let engine_side = load(&pins, 65_536)?;
    let mut core = Core::new(config(RATES[0]), Box::new(engine_side)).context("engine")?;
    let mut traffic = load(&pins, 65_536)?;
    let class = 0u32;
    // Half-drained idle buckets: every one of them is rescaled on every change.
    let now = traffic.now_ns();
    let half = traffic_common::Bucket {
        tat: [now + 25_000_000, 0, 0, 0],
        ..Default::default()
    };
    for i in 0..IDLE {
        let key = BucketKey {
            addr: v4_mapped((0x0a00_0000 + i).to_be_bytes()),
            class,
        };
        traffic.set_bucket(&key, &half)?;
    }
    let frame = Frame::ipv4(SRC, NODE4).udp(40000, 53).build();
    let pass_slot = counter_index(class, Reason::Pass as u32, false) as usize;
    let drop_slot = counter_index(class, Reason::PacketRate as u32, false) as usize;
    let before = traffic.counters()?;

    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(
            move || -> Result<traffic_daemon::dataplane::kernel::Kernel> {
                // Bounded: at most 5 minutes' worth of batches, whatever happens to `stop`.
                let end = Instant::now() + Duration::from_secs(300);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    traffic.test_run(&frame, 1024)?;
                }
                Ok(traffic)
            },
        )
    };
    // Integral of the rate in force, from each change to the next.
    let started = Instant::now();
    let mut allowance = BURST;
    let mut last = (started, RATES[0]);
    for i in 1..=CHANGES {
        std::thread::sleep(Duration::from_millis(20));
        let rate = RATES[i % 2];
        core.apply_config(config(rate))
            .context("change the limits")?;
        let t = Instant::now();
        allowance += last.1 * (t - last.0).as_secs_f64();
        last = (t, rate);
    }
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let t = Instant::now();
    allowance += last.1 * (t - last.0).as_secs_f64();
    let traffic = sender.join().expect("sender thread")?;

    let after = traffic.counters()?;
    let passed = after[pass_slot].packets - before[pass_slot].packets;
    let judged = passed + after[drop_slot].packets - before[drop_slot].packets;
    let tick = RATES[0] * traffic_common::CLOCK_TICK_MAX_NS as f64 / 1e9;
    let bound = allowance * 1.02 + tick * CHANGES as f64;
    println!(
        "rescale: {passed} of {judged} packets passed in {:.2} s, {CHANGES} changes, bound {bound:.0} (∫rate + burst {allowance:.0})",
        (t - started).as_secs_f64()
    );
    ensure!(
        judged > 10 * passed / 9,
        "the source was not saturated: {passed} of {judged} passed"
    );
    ensure!(
        (passed as f64) <= bound,
        "{passed} packets passed, more than the {bound:.0} the limits allow"
    );
    let key = BucketKey {
        addr: v4_mapped(SRC.octets()),
        class,
    };
    let bucket = traffic
        .buckets()?
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, b)| b)
        .context("the source's bucket")?;
    // Passes are counted at once, or those passed on credit at the next draw (less than a
    // draw per CPU behind); refusals past the first 64 in per-CPU batches (less than one
    // batch per CPU behind); never ahead.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let draw = u64::from(traffic_common::CREDIT_MAX_DRAW);
    let counted = bucket.packets - bucket.dropped;
    ensure!(
        counted <= passed && passed - counted < draw * cpus,
        "the bucket counted {counted} passes of the {passed} passed: not within a draw per \
         CPU (ahead: its counter went backwards)"
    );
    ensure!(
        bucket.packets <= judged
            && judged - bucket.packets < (traffic_common::DROP_BATCH + draw) * cpus,
        "the bucket counted {} packets of the {judged} judged: not within a batch and a draw \
         per CPU",
        bucket.packets
    );

    // A bucket that is gone stays gone.
    let gone = BucketKey {
        addr: v4_mapped([10, 255, 255, 255]),
        class,
    };
    let req = RescaleRequest {
        key: gone,
        ..RescaleRequest::default()
    };
    let mut traffic = traffic;
    ensure!(traffic.rescale_bucket(&req)? == Rescaled::Missing);
    ensure!(
        !traffic.buckets()?.iter().any(|(k, _)| *k == gone),
        "a rescale inserted a missing key"
    );
    Ok(())
}
