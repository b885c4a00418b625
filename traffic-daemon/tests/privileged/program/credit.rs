//! Credit (`credit.rs` in the program): a heavy source's packets passed on tokens drawn in
//! batches pass exactly as many as charging them one at a time would, credit left unspent
//! at the end of a tick is refunded, a refusal is repeated from the cache entry, and the
//! bucket counts every packet (the refusals within a tally's batch).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use aya::maps::{Map, MapData, PerCpuArray};
use traffic_common::{
    ClassCacheEntry, DROP_BATCH, Reason, addr_words, class_cache_index, map_names, v4_mapped,
};

use super::{udp_from, v4};
use traffic_daemon::dataplane::Dataplane as _;

use crate::support::bpf::{Lab, Slot, moved};

/// One class, no refill to speak of: what passes is the burst, whatever the timing.
const CREDIT_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]

[classes.heavy]
packets = { rate = 1, per = "1h", burst = 20000 }

[classes.default]

[[rules]]
cidr = "198.18.1.0/24"
class = "heavy"
"#;

const BURST: u64 = 20_000;

/// Run `frame` `repeat` times in one test run: (passed, refused) as counted by the program.
fn run_many(lab: &Lab, frame: &[u8], repeat: u32, class: u32) -> Result<(u64, u64)> {
    let before = lab.kernel.counters()?;
    lab.kernel.test_run(frame, repeat)?;
    let after = lab.kernel.counters()?;
    let moved = moved(&before, &after)?;
    let count = |slot: Slot| {
        moved
            .iter()
            .find(|(i, _)| *i == slot.index())
            .map_or(0, |(_, c)| c.packets)
    };
    let (pass, over) = (
        count(Slot::new(class, Reason::Pass)),
        count(Slot::new(class, Reason::PacketRate)),
    );
    ensure!(
        pass + over == u64::from(repeat),
        "{repeat} packets, {pass} passed and {over} refused: {moved:?}"
    );
    Ok((pass, over))
}

/// CLOCK_MONOTONIC_COARSE, the clock the program's limits run on, in ns.
fn coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: clock_gettime writes the timespec it is given, which lives for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The source's cache entry on every CPU that holds it.
fn entries_of(lab: &Lab, addr: [u8; 16]) -> Result<Vec<ClassCacheEntry>> {
    let md = MapData::from_pin(lab.kernel.pin_dir().join(map_names::CLASS_CACHE))
        .context("open the classification cache's pin")?;
    let map: PerCpuArray<MapData, ClassCacheEntry> = PerCpuArray::try_from(Map::PerCpuArray(md))?;
    let (lo, hi) = addr_words(&addr);
    Ok(map
        .get(&class_cache_index(&addr), 0)?
        .iter()
        .filter(|e| e.rules_gen != 0 && e.addr == [lo, hi])
        .copied()
        .collect())
}

pub fn a_heavy_source_on_credit_passes_its_burst_exactly_and_unspent_credit_is_refunded()
-> Result<()> {
    let lab = Lab::configured("credit", CREDIT_CONFIG)?;
    let heavy = lab.class("heavy");
    let addr = v4_mapped([198, 18, 1, 1]);
    let frame = udp_from(v4(198, 18, 1, 1).into()).build();

    // Heavy traffic, until a CPU holds credit it has not spent (a draw bigger than the
    // packets left in the run). Each try is a few hundred packets, well inside one tick.
    let (mut sent, mut passed) = (0u64, 0u64);
    let mut stranded = 0;
    for _ in 0..20 {
        let (pass, over) = run_many(&lab, &frame, 203, heavy)?;
        ensure!(over == 0, "refused {over} packets within the burst");
        (sent, passed) = (sent + 203, passed + pass);
        stranded = entries_of(&lab, addr)?
            .iter()
            .map(|e| u64::from(e.credit))
            .sum::<u64>();
        if stranded > 0 {
            break;
        }
    }
    ensure!(
        stranded > 0,
        "after {sent} packets in runs of 203 no CPU held credit: {:?}",
        entries_of(&lab, addr)?
    );

    // The credit's tick ends (polled: the coarse clock, the program's, moves past the
    // tick of the last draw); the next draw refunds it.
    let drawn = entries_of(&lab, addr)?
        .iter()
        .map(|e| e.credit_ns)
        .max()
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(2);
    while coarse_ns() <= drawn {
        ensure!(
            Instant::now() < deadline,
            "the coarse clock stayed at {drawn} ns for 2 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let rest = u32::try_from(BURST - passed + 5_000)?;
    let (pass, over) = run_many(&lab, &frame, rest, heavy)?;
    ensure!(
        passed + pass == BURST,
        "the source passed {} packets of a burst of {BURST} ({stranded} tokens of credit were \
         left unspent before the last run: the refund did not come back)",
        passed + pass
    );
    ensure!(over == 5_000, "refused {over}, not the 5000 past the burst");
    // Past its first refusals, the bucket's refusal was repeated from the cache entry for
    // the rest of the tick (and counted in the tally, as the bucket's would be).
    ensure!(
        entries_of(&lab, addr)?.iter().any(|e| e.refusing != 0),
        "no CPU's entry repeats the bucket's refusal: {:?}",
        entries_of(&lab, addr)?
    );

    // Every packet passed is in the bucket's count: those passed on credit are counted at
    // the next draw (the first refusal went through one). Refusals may still be in a
    // CPU's tally (see `tally.rs`), which adds them to `packets` and `dropped` alike.
    let buckets = lab.buckets_of(heavy)?;
    let (_, b) = buckets
        .iter()
        .find(|(k, _)| k.addr == addr)
        .context("no bucket for the source")?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    ensure!(
        b.dropped <= 5_000 && 5_000 - b.dropped < DROP_BATCH * cpus,
        "the bucket counts {} of the 5000 refusals: not within a tally's batch per CPU",
        b.dropped
    );
    ensure!(
        b.packets - b.dropped == BURST,
        "the bucket counts {} packets passed ({} packets, {} dropped), not the {BURST} that \
         passed",
        b.packets - b.dropped,
        b.packets,
        b.dropped
    );
    Ok(())
}
