//! The layout shared by the benchmark's eBPF programs and the benchmark that drives them.
//!
//! The programs are this crate's binary (`src/main.rs`: `floor_drop`, `gen_flood`,
//! `spoof_tail`), which uses this library, so the layout is defined once; the benchmark
//! (`xtask/bench`, package `traffic-bench`) reads and writes the maps as arrays of `u64`
//! words through [`GenConfig::to_words`] and friends, and aya's size check on the maps
//! refuses an object built from another version of this crate.
//!
//! Only `core` here: the library is compiled for the bpf target too. Every field is a
//! `u64`, so there is no padding to get wrong.
#![no_std]

/// Map of one [`GenConfig`] (array, one entry).
pub const CONFIG_MAP: &str = "BENCH_CONFIG";
/// Map of the generator's [`GenState`] (per-CPU array, one entry).
pub const STATE_MAP: &str = "BENCH_STATE";
/// Map of [`LegitStat`] per legitimate source (array, [`MAX_LEGIT`] entries).
pub const LEGIT_MAP: &str = "BENCH_LEGIT";
/// Program array (one slot) `spoof_tail` tail-calls into.
pub const JUMP_MAP: &str = "BENCH_JUMP";

/// The bare XDP_DROP program: the floor program costs are measured against.
pub const FLOOR_PROGRAM: &str = "floor_drop";
/// The live-frames generator: rewrites the source of each frame and returns XDP_TX.
pub const GEN_PROGRAM: &str = "gen_flood";
/// The test-run rewriter: rewrites the source of each run's frame, then tail-calls slot 0 of
/// [`JUMP_MAP`].
pub const SPOOF_PROGRAM: &str = "spoof_tail";

/// [`GenConfig::family`]: Ethernet + IPv4 (IHL 5) + UDP, no VLAN tag.
pub const FAMILY_V4: u64 = 4;
/// [`GenConfig::family`]: Ethernet + IPv6 (no extension header) + UDP, no VLAN tag.
pub const FAMILY_V6: u64 = 6;

/// Offset in the frame of the 32-bit source word the generator rewrites: the IPv4 source
/// address, or bytes 4..8 of the IPv6 source (its third and fourth groups, so each value is
/// a distinct /64). Both sit 12 bytes into the IP header.
pub const SOURCE_WORD_OFFSET: usize = 14 + 12;
/// Offset of the IPv4 header checksum.
pub const V4_CSUM_OFFSET: usize = 14 + 10;
/// Offset of the UDP checksum after an IPv4 header without options.
pub const V4_UDP_CSUM_OFFSET: usize = 14 + 20 + 6;
/// Offset of the UDP checksum after an IPv6 header without extension headers.
pub const V6_UDP_CSUM_OFFSET: usize = 14 + 40 + 6;

/// Legitimate sources the generator can interleave with a flood.
pub const MAX_LEGIT: u32 = 256;

/// Most the legitimate schedule may fall behind (the generator was preempted) and still
/// catch up with back-to-back frames; beyond it, the schedule skips ahead. Catching up keeps
/// the legitimate sources' average rate at what was asked on a busy machine; the bound keeps
/// a long stall from turning into a burst.
pub const MAX_LEGIT_LAG_NS: u64 = 100_000_000;

/// What the generator sends. All frames start as the run's template frame; only the source
/// word (and the checksums covering it) changes.
///
/// Flood frame `k` (counted per CPU from the first run) gets the word
/// `flood_base + (k & flood_mask)`: `flood_mask + 1` distinct sources, each new until the
/// sequence wraps. With `legit_count > 0`, one frame every `legit_interval_ns` (kernel clock)
/// goes instead to a legitimate source `legit_base + i`, round-robin over
/// `i in 0..legit_count`, so each sends at `1e9 / (legit_interval_ns × legit_count)` per
/// second however fast the flood runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenConfig {
    /// [`FAMILY_V4`] or [`FAMILY_V6`]; any other value drops every frame.
    pub family: u64,
    /// First flood source word.
    pub flood_base: u64,
    /// Mask applied to the flood sequence (a power of two minus one).
    pub flood_mask: u64,
    /// First legitimate source word.
    pub legit_base: u64,
    /// Number of legitimate sources, at most [`MAX_LEGIT`]; 0 for a pure flood.
    pub legit_count: u64,
    /// Time between two legitimate frames (all sources together), in ns.
    pub legit_interval_ns: u64,
    /// Time between two flood frames, in ns; 0: as fast as the generator runs. A frame ahead
    /// of the schedule is not sent (the generator drops it: recycled on its own CPU).
    pub flood_interval_ns: u64,
}

/// Words in a [`GenConfig`].
pub const GEN_CONFIG_WORDS: usize = 7;

/// The longest the paced flood's schedule may fall behind before it skips ahead (a
/// preempted generator resumes at its rate, not in a burst).
pub const MAX_FLOOD_LAG_NS: u64 = 10_000;

/// The paced flood's schedule at `now`, with the next frame due at `next_ns`: `None` when
/// the frame is ahead of it (held back), else when the frame after it is due. A schedule
/// more than [`MAX_FLOOD_LAG_NS`] behind restarts from `now`, so a stalled generator resumes
/// at its rate rather than in a burst.
#[inline(always)]
pub const fn flood_pace(next_ns: u64, now: u64, interval_ns: u64) -> Option<u64> {
    if now < next_ns {
        return None;
    }
    let due = if next_ns + MAX_FLOOD_LAG_NS < now {
        now
    } else {
        next_ns
    };
    Some(due + interval_ns)
}

/// The generator's per-CPU state and counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenState {
    /// Flood frames sent so far (the flood sequence).
    pub seq: u64,
    /// Legitimate frames sent so far.
    pub legit_sent: u64,
    /// When the next legitimate frame is due (kernel clock, ns).
    pub next_legit_ns: u64,
    /// Index of the next legitimate source.
    pub legit_next: u64,
    /// Kernel clock at the first frame of `gen_flood` (0 before any).
    pub first_ns: u64,
    /// Kernel clock at the latest frame of `gen_flood`.
    pub last_ns: u64,
    /// When the next paced flood frame is due (kernel clock, ns).
    pub next_flood_ns: u64,
    /// Frames the pacing held back (dropped by the generator, never sent).
    pub held: u64,
}

/// Words in a [`GenState`].
pub const GEN_STATE_WORDS: usize = 8;

/// What the generator sent from one legitimate source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegitStat {
    /// Frames sent.
    pub sent: u64,
    /// Kernel clock at the first frame (0 before any).
    pub first_ns: u64,
    /// Kernel clock at the latest frame.
    pub last_ns: u64,
    /// Reserved.
    pub _reserved: u64,
}

/// Words in a [`LegitStat`].
pub const LEGIT_STAT_WORDS: usize = 4;

const _: () = assert!(core::mem::size_of::<GenConfig>() == 8 * GEN_CONFIG_WORDS);
const _: () = assert!(core::mem::size_of::<GenState>() == 8 * GEN_STATE_WORDS);
const _: () = assert!(core::mem::size_of::<LegitStat>() == 8 * LEGIT_STAT_WORDS);

impl GenConfig {
    /// The map value as words.
    pub const fn to_words(self) -> [u64; GEN_CONFIG_WORDS] {
        [
            self.family,
            self.flood_base,
            self.flood_mask,
            self.legit_base,
            self.legit_count,
            self.legit_interval_ns,
            self.flood_interval_ns,
        ]
    }
}

impl GenState {
    /// Decode a map value.
    pub const fn from_words(w: &[u64; GEN_STATE_WORDS]) -> Self {
        Self {
            seq: w[0],
            legit_sent: w[1],
            next_legit_ns: w[2],
            legit_next: w[3],
            first_ns: w[4],
            last_ns: w[5],
            next_flood_ns: w[6],
            held: w[7],
        }
    }
}

impl LegitStat {
    /// Decode a map value.
    pub const fn from_words(w: &[u64; LEGIT_STAT_WORDS]) -> Self {
        Self {
            sent: w[0],
            first_ns: w[1],
            last_ns: w[2],
            _reserved: w[3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let c = GenConfig {
            family: FAMILY_V6,
            flood_base: 1,
            flood_mask: 2,
            legit_base: 3,
            legit_count: 4,
            legit_interval_ns: 5,
            flood_interval_ns: 7,
        };
        assert_eq!(c.to_words(), [6, 1, 2, 3, 4, 5, 7]);
        let st = GenState::from_words(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!((st.last_ns, st.held), (6, 8));
        assert_eq!(LegitStat::from_words(&[7, 8, 9, 0]).sent, 7);
    }

    #[test]
    fn the_paced_flood_holds_early_frames_and_never_bursts_after_a_stall() {
        let interval = 400;
        // Early: held.
        assert_eq!(flood_pace(1_000, 999, interval), None);
        // On time or a little late: the schedule advances from where it was, not from now.
        assert_eq!(flood_pace(1_000, 1_000, interval), Some(1_400));
        assert_eq!(flood_pace(1_000, 1_300, interval), Some(1_400));
        // Stalled beyond the lag: it restarts from now, so no backlog goes out at once.
        let late = 1_000 + MAX_FLOOD_LAG_NS + 1;
        assert_eq!(flood_pace(1_000, late, interval), Some(late + interval));
        // Frames sent at full speed (every 100 ns) over 1 ms of a 400 ns schedule: a quarter.
        let (mut next, mut sent) = (0, 0);
        for now in (0..1_000_000).step_by(100) {
            if let Some(n) = flood_pace(next, now, interval) {
                next = n;
                sent += 1;
            }
        }
        assert_eq!(sent, 2_500);
    }
}
