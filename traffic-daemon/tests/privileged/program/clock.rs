//! The program's per-CPU copy of the kernel clock (`TRF_CLOCK`, see `clock.rs` in the
//! program): it follows the coarse clock, and a lie written into it lasts at most until the
//! next jiffy.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use aya::maps::PerCpuValues;
use aya::maps::{Map, MapData, PerCpuArray};
use traffic_common::{CLOCK_TICK_MAX_NS, ClockCopy, map_names};
use traffic_daemon::dataplane::monotonic_ns;

use super::{LIMITED_CONFIG, udp_from, v4};
use crate::support::bpf::Lab;

/// How long the lie may take to go: a jiffy is at most 10 ms (HZ ≥ 100); the rest is room
/// for a busy machine.
const LIE_DEADLINE: Duration = Duration::from_secs(2);

fn copies(lab: &Lab) -> Result<PerCpuArray<MapData, ClockCopy>> {
    let md = MapData::from_pin(lab.kernel.pin_dir().join(map_names::CLOCK))
        .context("open the clock copy's pin")?;
    Ok(PerCpuArray::try_from(Map::PerCpuArray(md))?)
}

/// Whether some CPU's copy is a reading of the coarse clock taken in `[from, to]` (the
/// coarse clock lags the fine one by up to a tick).
fn a_copy_read_between(map: &PerCpuArray<MapData, ClockCopy>, from: u64, to: u64) -> Result<bool> {
    let values = map.get(&0, 0)?;
    Ok(values
        .iter()
        .any(|c| c.ns != 0 && c.ns + CLOCK_TICK_MAX_NS >= from && c.ns <= to))
}

pub fn the_clock_copy_follows_the_kernel_clock_and_a_lie_lasts_a_jiffy() -> Result<()> {
    let lab = Lab::configured("clock-copy", LIMITED_CONFIG)?;
    let frame = udp_from(v4(198, 18, 1, 1).into()).build();
    let map = copies(&lab)?;

    let before = monotonic_ns();
    lab.run(&frame)?;
    let after = monotonic_ns();
    ensure!(
        a_copy_read_between(&map, before, after)?,
        "after a limited packet no CPU's clock copy is a reading of the coarse clock taken \
         around the packet ({before}..{after} ns): {:?}",
        map.get(&0, 0)?.iter().collect::<Vec<_>>()
    );

    // The lie: every CPU's copy an hour ahead, under the jiffy it holds (the current one, or
    // one just past: then the lie is dropped at once).
    let lie = monotonic_ns() + 3_600_000_000_000;
    let lies: Vec<ClockCopy> = map
        .get(&0, 0)?
        .iter()
        .map(|c| ClockCopy { ns: lie, ..*c })
        .collect();
    let mut map = map;
    map.set(0, PerCpuValues::try_from(lies)?, 0)?;
    let start = Instant::now();
    loop {
        let before = monotonic_ns();
        lab.run(&frame)?;
        let after = monotonic_ns();
        if a_copy_read_between(&map, before, after)? {
            break;
        }
        ensure!(
            start.elapsed() < LIE_DEADLINE,
            "a clock copy an hour ahead was still in place after {LIE_DEADLINE:?} of packets: \
             {:?}",
            map.get(&0, 0)?.iter().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
