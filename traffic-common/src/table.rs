//! The source table, [`map_names::BUCKETS`]: a set-associative table of buckets in an array
//! map, so a known source costs a hash of its key and direct array reads — no hash-map
//! helper, no LRU lists.
//!
//! Slot `set * TABLE_WAYS + way` of a table of `2^k` slots; a key lives in one of the
//! [`TABLE_WAYS`] ways of its set ([`table_set`]). A slot's tag word ([`TableSlot::class`]
//! and [`TableSlot::seq`] read as one word, [`TABLE_TAG_WORD`]) is its lock and validity: a writer
//! claims a slot by moving the sequence to an odd value with compare-and-swap, writes the
//! key and the bucket, then publishes an even sequence. A reader matches a slot only when the
//! tag, read before and after the key, is the same even, non-zero value.
//!
//! A full set gives up the way whose bucket is full again first ([`victim`]): the quietest
//! source, give or take its debt, and a source in debt is remembered in the debt sketch
//! before it goes, so an eviction never hands an over-limit source a fresh burst.
//!
//! The daemon reads and writes the table through a memory mapping (`BPF_F_MMAPABLE`) with
//! the same protocol; the pure parts (where a key lives, what a tag means, which way to
//! evict) are here, shared by both.

use bytemuck::{Pod, Zeroable};

// The contract's constants and types are one vocabulary, split only by file.
use crate::*;

/// Ways per set: a key lives in one of this many slots.
pub const TABLE_WAYS: u32 = 4;
/// Map flags of [`map_names::BUCKETS`]: `BPF_F_MMAPABLE`, so the daemon walks and edits the
/// table through a mapping instead of two syscalls per entry.
pub const TABLE_MAP_FLAGS: u32 = BPF_F_MMAPABLE;
/// [`TableSlot::class`] of a slot the daemon emptied (no real key has it: a port bucket's
/// class is [`PORT_BUCKET`] plus a slot below [`MAX_PORTS`]).
pub const TABLE_EMPTY_CLASS: u32 = u32::MAX;
/// Name of the program's read-only global holding the table's set mask (sets − 1), written
/// by the loader from the map's size.
pub const TABLE_SET_MASK_GLOBAL: &str = "TRF_TABLE_SET_MASK";

/// One slot of [`map_names::BUCKETS`]: a key and its bucket. 80 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TableSlot {
    /// The masked source address as [`addr_words`].
    pub addr: [u64; 2],
    /// Class id (or [`PORT_BUCKET`] | port slot); [`TABLE_EMPTY_CLASS`] when emptied.
    pub class: u32,
    /// Even: the slot is stable (0: never written); odd: a writer holds it.
    pub seq: u32,
    /// The bucket.
    pub bucket: Bucket,
}

/// Index in 64-bit words of [`TableSlot::class`] and [`TableSlot::seq`] read as one word
/// (little endian: class in the low half).
pub const TABLE_TAG_WORD: usize = 2;
/// Index in 64-bit words of the bucket in a slot.
pub const TABLE_BUCKET_WORD: usize = 3;
/// 64-bit words per slot.
pub const TABLE_SLOT_WORDS: usize = size_of::<TableSlot>() / 8;

const _: () = assert!(size_of::<TableSlot>() == 80 && align_of::<TableSlot>() == 8);
const _: () = assert!(TABLE_BUCKET_WORD * 8 + size_of::<Bucket>() == size_of::<TableSlot>());

/// Refusals a source's bucket counts one by one, as they happen. Past them, each CPU tallies
/// the source's refusals in its [`DropTally`] and adds them to the bucket in batches (at
/// [`DROP_BATCH`] refusals, or at the first refusal [`DROP_FLUSH_NS`] after the batch began):
/// a source over its limit, hammered from several CPUs, then only reads its bucket's line.
/// Its counts lag by less than a batch per CPU.
pub const DROP_EXACT: u64 = 64;
/// Refusals per batch of a [`DropTally`].
pub const DROP_BATCH: u64 = 64;
/// The most tokens of credit a CPU draws for a source at once (the program's `credit`):
/// a source's passes counted in its bucket lag by less than this per CPU.
pub const CREDIT_MAX_DRAW: u16 = 16;
/// Age at which a [`DropTally`]'s batch is added at its next refusal (100 ms).
pub const DROP_FLUSH_NS: u64 = 100_000_000;
/// `max_entries` of [`map_names::DROP_TALLY`] (per CPU; a power of two): a tally is indexed
/// by its slot's index modulo this.
pub const DROP_TALLY_ENTRIES: u32 = 1024;

/// One entry of [`map_names::DROP_TALLY`]: one CPU's refusals of the source in one table
/// slot, not yet added to its bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DropTally {
    /// The slot's tag when the batch began: a slot given to another source since is not
    /// charged with this one's refusals.
    pub tag: u64,
    /// The table slot.
    pub slot: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Refused packets and their bytes in the batch.
    pub packets: u64,
    pub bytes: u64,
    /// When the batch began (kernel clock, ns).
    pub since: u64,
}

/// The slots of a table for `max_sources`: the next power of two, never below one set.
#[inline(always)]
pub const fn table_slots(max_sources: u32) -> u32 {
    let n = max_sources.next_power_of_two();
    if n < TABLE_WAYS { TABLE_WAYS } else { n }
}

/// The set mask of a table of `slots` slots (a power of two ≥ [`TABLE_WAYS`]).
#[inline(always)]
pub const fn table_set_mask(slots: u32) -> u32 {
    slots / TABLE_WAYS - 1
}

/// The set of a key (its masked address as [`addr_words`], and its class), before masking;
/// independent of [`debt_slot`], [`seen_bit_words`] and [`class_cache_index_words`].
#[inline(always)]
pub const fn table_set(lo: u64, hi: u64, class: u32) -> u32 {
    let x = lo ^ hi.rotate_left(17) ^ ((class as u64) << 41);
    // Fold the high half down first: an IPv4 key differs only in its top bytes.
    let x = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 32) as u32
}

/// A tag word: class and sequence.
#[inline(always)]
pub const fn table_tag(class: u32, seq: u32) -> u64 {
    class as u64 | ((seq as u64) << 32)
}

/// The class of a tag word.
#[inline(always)]
pub const fn tag_class(tag: u64) -> u32 {
    tag as u32
}

/// The sequence of a tag word.
#[inline(always)]
pub const fn tag_seq(tag: u64) -> u32 {
    (tag >> 32) as u32
}

/// Whether a tag word holds a key: written, stable, not emptied.
#[inline(always)]
pub const fn tag_live(tag: u64) -> bool {
    let seq = tag_seq(tag);
    seq != 0 && seq & 1 == 0 && tag_class(tag) != TABLE_EMPTY_CLASS
}

/// Whether a tag word marks a free slot (never written, or emptied, and stable).
#[inline(always)]
pub const fn tag_free(tag: u64) -> bool {
    tag_seq(tag) & 1 == 0 && (tag_seq(tag) == 0 || tag_class(tag) == TABLE_EMPTY_CLASS)
}

/// The tag a writer claims a slot with (odd sequence, class kept).
#[inline(always)]
pub const fn tag_claimed(tag: u64) -> u64 {
    table_tag(tag_class(tag), tag_seq(tag).wrapping_add(1) | 1)
}

/// The tag a writer publishes after a claim `claimed`: the key's class, an even sequence
/// (never 0: 0 means "never written").
#[inline(always)]
pub const fn tag_published(claimed: u64, class: u32) -> u64 {
    let seq = tag_seq(claimed).wrapping_add(1);
    table_tag(class, if seq == 0 { 2 } else { seq })
}

/// The way to write a new key into, from each way's tag and the time its bucket is full
/// again (the latest of its words): the first free way, else the live way full first (the
/// quietest source, or the one least in debt). `None`: every way is held by a writer.
#[inline(always)]
pub fn victim(
    tags: &[u64; TABLE_WAYS as usize],
    full_at: &[u64; TABLE_WAYS as usize],
) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut i = 0;
    while i < TABLE_WAYS as usize {
        if tag_free(tags[i]) {
            return Some(i);
        }
        if tag_live(tags[i]) {
            best = match best {
                Some(b) if full_at[b] <= full_at[i] => Some(b),
                _ => Some(i),
            };
        }
        i += 1;
    }
    best
}

/// The latest word of a bucket's limits: when every limit is full again.
#[inline(always)]
pub const fn bucket_full_at(b: &Bucket) -> u64 {
    let mut latest = 0;
    let mut i = 0;
    while i < MAX_PACKET_LIMITS + 1 {
        if b.tat[i] > latest {
            latest = b.tat[i];
        }
        i += 1;
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_protocol_never_publishes_an_odd_or_zero_sequence() {
        for seq in [0u32, 1, 2, 7, u32::MAX - 1, u32::MAX] {
            let t = table_tag(5, seq);
            let claimed = tag_claimed(t);
            assert_eq!(tag_seq(claimed) & 1, 1, "claim of {seq}");
            assert!(!tag_live(claimed) && !tag_free(claimed));
            let p = tag_published(claimed, 9);
            assert_eq!(tag_class(p), 9);
            assert!(tag_live(p), "publish after {seq}: {p:#x}");
            assert_ne!(tag_seq(p), tag_seq(t), "a reader must see the change");
        }
        assert!(tag_free(0));
        assert!(tag_free(table_tag(TABLE_EMPTY_CLASS, 4)));
        assert!(!tag_live(table_tag(TABLE_EMPTY_CLASS, 4)));
    }

    #[test]
    fn a_full_set_gives_up_the_way_full_first_and_a_free_way_comes_first() {
        let live = table_tag(1, 2);
        assert_eq!(victim(&[live; 4], &[50, 10, 30, 10]), Some(1));
        assert_eq!(victim(&[live, 0, live, live], &[1, 99, 1, 1]), Some(1));
        let held = tag_claimed(live);
        assert_eq!(victim(&[held, live, held, held], &[0, 9, 0, 0]), Some(1));
        assert_eq!(victim(&[held; 4], &[0; 4]), None);
    }

    #[test]
    fn sizes_are_powers_of_two_of_whole_sets() {
        assert_eq!(table_slots(1024), 1024);
        assert_eq!(table_slots(1025), 2048);
        assert_eq!(table_slots(1), TABLE_WAYS);
        assert_eq!(table_set_mask(1024), 255);
    }

    #[test]
    fn neighbouring_sources_spread_over_the_sets() {
        // 4,096 consecutive IPv4 sources (the varying bytes are the high ones of `hi`) and
        // as many /64s fill 1,024 sets evenly: no set holds more than a few times its share.
        let mask = table_set_mask(4096);
        for v6 in [false, true] {
            let mut load = [0u32; 1024];
            for i in 0..4096u64 {
                let (lo, hi) = if v6 {
                    (0x0db8_0120 | (i << 40), 0)
                } else {
                    (
                        0,
                        0xffff_0000 | (u64::from((0x0a00_0000 + i as u32).swap_bytes()) << 32),
                    )
                };
                load[(table_set(lo, hi, 3) & mask) as usize] += 1;
            }
            let worst = load.iter().max().copied().unwrap_or(0);
            assert!(worst <= 14, "v6={v6}: a set holds {worst} of 4,096 keys");
        }
    }
}
