//! Where a source lives in each map: its address as two words, its classification-cache
//! index, its bit in the tracked-source bitmap and its debt slot, and the entries they index.

use bytemuck::{Pod, Zeroable};

// The contract's constants and types are one vocabulary, split only by file.
use crate::*;

/// The entry of [`map_names::CLOCK`]: the coarse kernel clock (`bpf_ktime_get_coarse_ns`)
/// as one CPU read it, and `jiffies` when it did. Scratch state of the program: the daemon
/// never reads it, and an entry of another boot or run is simply replaced.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ClockCopy {
    /// `bpf_jiffies64()` at the reading.
    pub jiffies: u64,
    /// The coarse clock read then, ns; 0 = never read.
    pub ns: u64,
}

/// The entry of [`map_names::CLASS_PREFIX`]: the leaf rule a CPU matched last, as its
/// masked address and mask words, under one generation of the rule set. A source whose
/// classification-cache entry misses but that lies inside it gets its action and class
/// without the LPM lookup (a spoofed flood from one rule's range).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ClassPrefix {
    /// The rule's prefix, masked, as [`addr_words`].
    pub addr: [u64; 2],
    /// [`Rule::mask`].
    pub mask: [u64; 2],
    /// [`GlobalConfig::rules_gen`] the entry was filled under; 0 = empty.
    pub rules_gen: u32,
    /// The rule's [`Action`] discriminant.
    pub action: u32,
    /// The rule's class.
    pub class: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// The netmask of a prefix of `bits` bits (0–128) over a 128-bit address read big-endian.
pub const fn prefix_mask(bits: u32) -> u128 {
    if bits == 0 {
        0
    } else if bits >= 128 {
        u128::MAX
    } else {
        u128::MAX << (128 - bits)
    }
}

/// [`prefix_mask`] as mask words over an address as [`addr_words`].
pub const fn prefix_mask_words(bits: u32) -> [u64; 2] {
    let (lo, hi) = addr_words(&prefix_mask(bits).to_be_bytes());
    [lo, hi]
}

/// One entry of [`map_names::CLASS_CACHE`]: the rule found for a source address under one
/// generation of the rule set, and this CPU's credit for the source: tokens drawn from its
/// shared bucket in one charge, spent on its next packets within the same tick of the
/// coarse clock, or the bucket's refusal, repeated for the rest of the tick (the program's
/// `credit` module).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ClassCacheEntry {
    /// The full source address (not masked), as [`addr_words`].
    pub addr: [u64; 2],
    /// [`GlobalConfig::rules_gen`] the entry was filled under; 0 = empty.
    pub rules_gen: u32,
    /// The rule's [`Action`] discriminant ([`Action::Limit`] when no rule matched).
    pub action: u32,
    /// The rule's class (the default class when no rule matched).
    pub class: u32,
    /// Tokens of credit left: valid only while the coarse clock reads [`Self::credit_ns`].
    pub credit: u16,
    /// Packets passed on credit since the last draw, not counted in the bucket yet.
    pub pending: u16,
    /// End of the ban that applies to the source (kernel clock, ns; [`BanEntry::until_ns`]),
    /// 0 when none does: compared with the clock on every hit, so a cached ban ends on time.
    /// A ban that an `allow` rule overrides (no [`BAN_FORCE`]) is cached as 0.
    pub ban_until_ns: u64,
    /// The coarse-clock reading of the last draw (and of [`Self::tick_used`]).
    pub credit_ns: u64,
    /// The bucket state the last draw left: unspent credit is refunded only while the
    /// bucket still holds it (nothing else charged it since).
    pub drawn_tat: u64,
    /// The tag of the table slot the credit was drawn from ([`TableSlot`] class and seq).
    pub credit_tag: u64,
    /// Bytes of the [`Self::pending`] packets.
    pub pending_bytes: u64,
    /// Index of the table slot the credit was drawn from.
    pub credit_slot: u32,
    /// The class the credit was drawn for.
    pub credit_class: u32,
    /// Packets of the source passed through this entry's bucket in the tick
    /// [`Self::credit_ns`] (saturating).
    pub tick_used: u16,
    /// [`Self::tick_used`] of the tick before: sizes the next draws.
    pub prev_used: u16,
    /// Non-zero: the bucket refused the source in the tick [`Self::credit_ns`] (past its
    /// first exactly counted refusals), so the entry refuses the source's packets for the
    /// rest of that tick without a look at the bucket, counting them in this CPU's tally.
    pub refusing: u16,
    /// Explicit padding.
    pub _pad: u16,
}

/// Value of [`map_names::BANS`]: one banned prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BanEntry {
    /// When the ban ends, in the program's clock (`bpf_ktime_get_ns`, CLOCK_MONOTONIC):
    /// the program stops enforcing it then, whether or not the daemon runs.
    pub until_ns: u64,
    /// Digest of the ban's reason text (the daemon keeps the text; the program ignores it).
    pub reason_id: u32,
    /// `BAN_*` flags.
    pub flags: u32,
}

/// An address as two native-endian words (how the program compares and masks it).
#[inline(always)]
pub const fn addr_words(a: &Addr) -> (u64, u64) {
    (
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// Slot of `addr` in [`map_names::CLASS_CACHE`] (multiplicative hash of both halves).
#[inline(always)]
pub const fn class_cache_index(addr: &Addr) -> u32 {
    let (lo, hi) = addr_words(addr);
    class_cache_index_words(lo, hi)
}

/// One entry of [`map_names::SEEN`]: the same 64 bits in two generations. The program sets
/// a key's bit in both and reads their union; the daemon clears them in turn (every
/// `SEEN_AGE_INTERVAL`), so a key is forgotten one to two intervals after it was last seen
/// and a source seen at least once per interval never is (a hit re-marks it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SeenWord {
    /// The word of each generation.
    pub generation: [u64; 2],
}

/// Slot of a bucket key (its masked address as [`addr_words`], and its class) in
/// [`map_names::DEBT`]; independent of [`seen_bit_words`] and [`class_cache_index_words`].
#[inline(always)]
pub const fn debt_slot(lo: u64, hi: u64, class: u32) -> u32 {
    let x = hi ^ lo.rotate_left(23) ^ ((class as u64) << 3);
    // Fold the high half down first: an IPv4 key differs only in its top bytes.
    let x = (x ^ (x >> 31)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x >> (64 - DEBT_BITS)) as u32
}

/// [`class_cache_index`] of an address already split by [`addr_words`].
#[inline(always)]
pub const fn class_cache_index_words(lo: u64, hi: u64) -> u32 {
    ((lo ^ hi.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as u32
        & (CLASS_CACHE_ENTRIES - 1)
}

/// Word index in [`map_names::SEEN`] and the bit within it of a bucket key.
#[inline(always)]
pub const fn seen_bit(key: &BucketKey) -> (u32, u64) {
    let (lo, hi) = addr_words(&key.addr);
    seen_bit_words(lo, hi, key.class)
}

/// [`seen_bit`] of a key whose address is already split by [`addr_words`].
#[inline(always)]
pub const fn seen_bit_words(lo: u64, hi: u64, class: u32) -> (u32, u64) {
    let h = (lo ^ hi.rotate_left(29) ^ class as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44;
    (((h >> 6) as u32) & (SEEN_WORDS - 1), 1u64 << (h & 63))
}

/// The bytes of an address split by [`addr_words`] (its inverse).
#[inline(always)]
pub const fn words_addr(lo: u64, hi: u64) -> Addr {
    let (a, b) = (lo.to_ne_bytes(), hi.to_ne_bytes());
    [
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
        b[7],
    ]
}

/// A source address key: IPv6 as is, IPv4 as `::ffff:a.b.c.d`, network byte order.
pub type Addr = [u8; 16];

/// The IPv4-mapped IPv6 form of an IPv4 address.
#[inline(always)]
pub const fn v4_mapped(v4: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// Bits of an IPv4 prefix inside the 128-bit key: the `::ffff:0:0/96` part plus the prefix.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;
