//! The one contract between the `traffic` XDP program and user space.
//!
//! Every map name, `max_entries`, key and value layout, every enum discriminant that crosses
//! the kernel/user boundary, and the ABI version live here and nowhere else. All types are
//! `#[repr(C)]` with fixed-width fields and explicit padding, and their sizes and alignments
//! are asserted at compile time, so a layout change is a compile error on both sides.
//!
//! Byte order: addresses are kept in network order (they are opaque 16-byte keys); ports
//! and every other integer are in host order, converted at the parse boundary.
#![no_std]
#![deny(unsafe_code)]

/// Version of the layouts in this crate. Bumped on any change to a map or type below that
/// a pinned map of the same shape would carry with another meaning; a pinned map set
/// written by another version is refused, never reinterpreted. A map whose shape alone
/// changed (its value size, as the classification cache's in ABI 11's second layout, or
/// its entries) is replaced on its own by the next start, the rest adopted.
pub const ABI_VERSION: u32 = 11;

/// Map names, as they appear in the object file and under the pin directory.
///
/// Kernel object names are at most 15 bytes, so these are short on purpose.
pub mod map_names {
    /// [`crate::GlobalConfig`], one entry.
    pub const CONFIG: &str = "TRF_CONFIG";
    /// LPM trie of source CIDRs → [`crate::Rule`].
    pub const RULES: &str = "TRF_RULES";
    /// Effective per-class limits, [`crate::ClassConfig`] indexed by class id.
    pub const CLASSES: &str = "TRF_CLASSES";
    /// The source table: shared (not per-CPU) token buckets in [`crate::TableSlot`]s.
    pub const BUCKETS: &str = "TRF_BUCKETS";
    /// Per CPU: refusals of busy sources not yet added to their buckets, [`crate::DropTally`]
    /// indexed by table slot (see [`crate::DROP_EXACT`]).
    pub const DROP_TALLY: &str = "TRF_DROP_TALLY";
    /// Per-class shared state: admission budget and overflow bucket, [`crate::ClassState`].
    pub const CLASS_STATE: &str = "TRF_CLASS_STATE";
    /// Per-CPU admission statistics per class, [`crate::ClassStats`].
    pub const CLASS_STATS: &str = "TRF_CLASS_STATS";
    /// Per-port rules and circuit gates, [`crate::PortKey`] → [`crate::PortRule`].
    pub const PORTS: &str = "TRF_PORTS";
    /// Per-CPU verdict counters, [`crate::Counter`] indexed by [`crate::counter_index`].
    pub const COUNTERS: &str = "TRF_COUNTERS";
    /// Class name of each slot, [`crate::SlotName`]. Read by user space only: it lives with
    /// the pinned maps so a restarted daemon maps slots back to class names.
    pub const SLOT_NAMES: &str = "TRF_SLOT_NAMES";
    /// Per-CPU statistics of each port rule, [`crate::PortStats`] indexed by [`crate::PortRule::slot`].
    pub const PORT_STATS: &str = "TRF_PORT_STATS";
    /// Per-CPU replies seen leaving from each port rule's port (TC egress),
    /// [`crate::EgressStats`] indexed by [`crate::PortRule::slot`]: the passive breaker signal.
    pub const EGRESS: &str = "TRF_EGRESS";
    /// Per-CPU cache of source classifications, [`crate::ClassCacheEntry`] indexed by
    /// [`crate::class_cache_index`]: a hit saves the LPM lookup in [`RULES`].
    pub const CLASS_CACHE: &str = "TRF_CLS_CACHE";
    /// Per-CPU, one entry: the leaf rule ([`crate::Rule::mask`]) this CPU matched last,
    /// [`crate::ClassPrefix`]: a new source inside it is classified without the LPM lookup.
    pub const CLASS_PREFIX: &str = "TRF_CLS_PREFIX";
    /// Per-CPU, one entry: the coarse kernel clock as this CPU last read it, and the jiffy
    /// it read it at, [`crate::ClockCopy`]: within one jiffy a packet takes the clock from
    /// here (an inlined load of `jiffies`) instead of calling the clock helper.
    pub const CLOCK: &str = "TRF_CLOCK";
    /// Bitmap of the bucket keys inserted recently, [`crate::SeenWord`] indexed by
    /// [`crate::seen_bit`]: a bit clear in both generations proves a source untracked
    /// without a lookup in the (large, cold) bucket map. Aged by the daemon, which clears
    /// one generation at a time (memory-mapped, `BPF_F_MMAPABLE`).
    pub const SEEN: &str = "TRF_SEEN";
    /// Debt sketch: when each evicted source's bucket is full again (ns, kernel
    /// clock), `u64` indexed by [`crate::debt_slot`]. A bucket created for a source
    /// starts no fuller than this allows, so an evicted heavy hitter does not come back
    /// with a full bucket.
    pub const DEBT: &str = "TRF_DEBT";
    /// Sources of `scope = "fleet"` classes seen sending ([`crate::BucketKey`] → `u64`, the
    /// kernel time of the last mark): every [`crate::FLEET_MARK_EVERY`]th packet of such a
    /// bucket refreshes its entry. The daemon reads this small LRU instead of walking the
    /// bucket map to find the sources whose use it shares with the fleet.
    pub const FLEET_HOT: &str = "TRF_FLEET_HOT";

    /// Recent connection attempts (TCP SYNs, UDP datagrams) to port-rule ports,
    /// [`crate::FlowKey`] → [`crate::FlowSeen`], written by the XDP program: the TC egress
    /// program counts a refusal only when it answers one of them.
    pub const FLOWS: &str = "TRF_FLOWS";
    /// Per port-rule slot, the peer of the last refusal counted, [`crate::FailSource`]:
    /// consecutive refusals of one peer count once (one source, one vote).
    pub const FAIL_SOURCE: &str = "TRF_FAIL_SRC";
    /// Per port-rule slot, the GCRA state (`u64`) of the port's RST budget
    /// ([`crate::PortRule::rst_budget`]); kernel-owned, so a rule rewrite keeps it.
    pub const RST_BUDGET: &str = "TRF_RST_BUDGET";
    /// The node's own addresses, [`crate::Addr`] → `u32` (unused), written by the daemon:
    /// port rules apply only to traffic addressed to one of them, once
    /// [`crate::LOCAL_ADDRS_READY`] is in the map.
    pub const LOCAL: &str = "TRF_LOCAL";
    /// LPM trie of banned source CIDRs (same keys as [`RULES`]) → [`crate::BanEntry`],
    /// written by the daemon, read by the program only when it (re)classifies a source.
    pub const BANS: &str = "TRF_BANS";

    /// LPM trie of IPv4 blocklist-feed prefixes (4-byte keys) → [`crate::FeedValue`],
    /// written by the daemon, read only when a source is (re)classified.
    pub const FEED_V4: &str = "TRF_FEED_V4";
    /// LPM trie of IPv6 blocklist-feed prefixes (16-byte keys) → [`crate::FeedValue`].
    pub const FEED_V6: &str = "TRF_FEED_V6";

    /// Ring buffer of sampled verdict events ([`crate::WatchEvent`]) for `trafficctl
    /// watch`; written only while [`crate::GLOBAL_WATCH`] is set.
    pub const WATCH: &str = "TRF_WATCH";
    /// Per-CPU budget of [`WATCH`] and its counters, [`crate::WatchState`].
    pub const WATCH_STATE: &str = "TRF_WATCH_ST";

    /// Every map, for contract checks and pin management.
    pub const ALL: [&str; 27] = [
        CONFIG,
        RULES,
        CLASSES,
        BUCKETS,
        DROP_TALLY,
        CLASS_STATE,
        CLASS_STATS,
        PORTS,
        COUNTERS,
        SLOT_NAMES,
        PORT_STATS,
        EGRESS,
        CLASS_CACHE,
        CLASS_PREFIX,
        CLOCK,
        SEEN,
        DEBT,
        FLEET_HOT,
        FLOWS,
        FAIL_SOURCE,
        RST_BUDGET,
        LOCAL,
        BANS,
        FEED_V4,
        FEED_V6,
        WATCH,
        WATCH_STATE,
    ];
}

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "traffic_xdp";
/// Name of the TC egress program (passive breaker signal) in the object file.
pub const EGRESS_PROGRAM_NAME: &str = "traffic_egress";
/// Name of the rescale program in the object file: an XDP program never attached, run by
/// the daemon with BPF_PROG_TEST_RUN on a [`RescaleRequest`] to rescale one bucket in the
/// kernel, with compare-and-swap (a write from user space would replace the entry and lose
/// what the program charged meanwhile).
pub const RESCALE_PROGRAM_NAME: &str = "traffic_rescale";

/// Number of class slots. Class ids are `0..MAX_CLASSES`.
pub const MAX_CLASSES: u32 = 16;
/// Counter row for traffic that has no class: non-IP frames, malformed frames, and
/// `allow`/`deny` rules that name no class.
pub const UNCLASSIFIED: u32 = MAX_CLASSES;
/// Rows in the counter table: one per class plus [`UNCLASSIFIED`].
pub const COUNTER_ROWS: u32 = MAX_CLASSES + 1;
/// Reason slots per row. The upper half holds the monitor-mode (would-drop) twins.
pub const REASON_SLOTS: u32 = 64;
/// Offset of the monitor twin of a reason within its row (room for 32 reasons; ABI 7 went
/// past the first 16 with [`Reason::Banned`] and [`Reason::FeedDeny`]).
pub const MONITOR_OFFSET: u32 = 32;

/// Maximum number of stacked packet limits per class (e.g. per second, per minute, per hour).
pub const MAX_PACKET_LIMITS: usize = 3;
/// Index of the byte limit in [`Bucket::tat`]; packet limits use `0..MAX_PACKET_LIMITS`.
pub const BYTE_LIMIT_SLOT: usize = MAX_PACKET_LIMITS;

/// Fractional bits of [`Limit::interval`] for byte limits (nanoseconds per byte, ×2¹⁶).
pub const BYTE_INTERVAL_SHIFT: u32 = 16;
/// Largest byte-limit interval the kernel accepts: keeps `frame_len × interval` inside u64
/// for any frame up to 64 KiB (`2^16 × 2^47 < 2^64`). Equivalent to ~0.47 bytes/s.
pub const MAX_BYTE_INTERVAL: u64 = 1 << 47;

/// `max_entries` of [`map_names::CONFIG`].
pub const CONFIG_ENTRIES: u32 = 1;
/// `max_entries` of [`map_names::RULES`].
pub const RULES_ENTRIES: u32 = 16_384;
/// `max_entries` of [`map_names::CLASSES`].
pub const CLASSES_ENTRIES: u32 = MAX_CLASSES;
/// Default `max_entries` of [`map_names::BUCKETS`] (slots, see [`table_slots`]); the daemon
/// sizes it from `max_sources` at load time.
pub const BUCKETS_ENTRIES: u32 = 131_072;
/// `max_entries` of [`map_names::CLASS_STATE`] and [`map_names::CLASS_STATS`].
pub const CLASS_STATE_ENTRIES: u32 = MAX_CLASSES;
/// Port rules (and slots in the port statistics maps).
pub const MAX_PORTS: u32 = 256;
/// `max_entries` of [`map_names::PORTS`].
pub const PORTS_ENTRIES: u32 = MAX_PORTS;
/// `max_entries` of [`map_names::PORT_STATS`] and [`map_names::EGRESS`].
pub const PORT_STATS_ENTRIES: u32 = MAX_PORTS;
/// [`BucketKey::class`] bit marking a per-port new-connection bucket; the low bits hold the
/// port rule's slot.
pub const PORT_BUCKET: u32 = 1 << 31;
/// `max_entries` of [`map_names::SLOT_NAMES`].
pub const SLOT_NAMES_ENTRIES: u32 = MAX_CLASSES;
/// Longest class name, in bytes.
pub const MAX_CLASS_NAME: usize = 31;
/// `max_entries` of [`map_names::COUNTERS`].
pub const COUNTERS_ENTRIES: u32 = COUNTER_ROWS * REASON_SLOTS;
/// `max_entries` of [`map_names::CLASS_CACHE`] (per CPU; a power of two).
pub const CLASS_CACHE_ENTRIES: u32 = 4096;
/// `max_entries` of [`map_names::SEEN`]: 2²⁰ bits per generation, 256 KiB for both, small
/// enough to stay in cache.
pub const SEEN_WORDS: u32 = 1 << 14;
/// The kernel's `BPF_F_MMAPABLE` map flag: an array user space can map.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// Map flags of [`map_names::SEEN`]: `BPF_F_MMAPABLE`, so the daemon clears one generation
/// with plain atomic stores while the program keeps setting bits in the other.
pub const SEEN_MAP_FLAGS: u32 = BPF_F_MMAPABLE;
/// Bits of a [`map_names::DEBT`] slot index.
pub const DEBT_BITS: u32 = 14;
/// `max_entries` of [`map_names::DEBT`]: 2¹⁴ slots, 128 KiB.
pub const DEBT_ENTRIES: u32 = 1 << DEBT_BITS;

/// `max_entries` of [`map_names::FLEET_HOT`] (an LRU: a flood of busy sources evicts the
/// oldest marks; the daemon reads at most this many buckets per budget sync).
pub const FLEET_HOT_ENTRIES: u32 = 4096;
/// A bucket of a `scope = "fleet"` class is marked in [`map_names::FLEET_HOT`] once every
/// this many packets (a power of two): a spoofed source sending a few packets never is.
pub const FLEET_MARK_EVERY: u64 = 16;

/// `max_entries` of [`map_names::FLOWS`] (an LRU: a flood of attempts evicts the oldest).
pub const FLOWS_ENTRIES: u32 = 16_384;
/// `max_entries` of [`map_names::BANS`]: 65,536 banned prefixes (trie nodes allocated as
/// bans are added, at most about 12 MiB); a ban beyond it is refused, never an existing
/// one dropped.
pub const BANS_ENTRIES: u32 = 65_536;
/// [`BanEntry::flags`]: the ban wins over an `allow` rule.
pub const BAN_FORCE: u32 = 1 << 0;
/// `max_entries` of [`map_names::FEED_V4`]: room for two generations of
/// [`MAX_FEED_PREFIXES`] while one is swapped for the other. LPM tries are never
/// preallocated, so unused room costs nothing.
pub const FEED_V4_ENTRIES: u32 = 2 * MAX_FEED_PREFIXES;
/// `max_entries` of [`map_names::FEED_V6`].
pub const FEED_V6_ENTRIES: u32 = 2 * MAX_FEED_PREFIXES;
/// Most distinct prefixes of one family across all feeds in one generation.
pub const MAX_FEED_PREFIXES: u32 = 2_000_000;
/// `max_entries` of [`map_names::LOCAL`].
pub const LOCAL_ENTRIES: u32 = 1024;
/// Key in [`map_names::LOCAL`] that says the set is filled (`::`, never a destination):
/// without it the program gates every destination, as before the set existed.
pub const LOCAL_ADDRS_READY: Addr = [0; 16];
/// How long after a SYN (or datagram) a RST (or ICMP port unreachable) may answer it and
/// count as a refusal: the stack answers at once, so this only absorbs scheduling delays.
pub const FLOW_ANSWER_NS: u64 = 3_000_000_000;
/// How long an attempt the server accepted (a SYN-ACK went out) keeps its entry from being
/// replaced by a later SYN of the same 4-tuple: longer than a SYN_RECV request lives with
/// the kernel's default SYN-ACK retries (~63 s), so an in-window second SYN (which the
/// stack answers with a RST) cannot pose as a refused attempt.
pub const FLOW_ANSWERED_NS: u64 = 64_000_000_000;
/// [`FlowSeen::state`]: no reply seen yet.
pub const FLOW_PENDING: u32 = 0;
/// [`FlowSeen::state`]: the server accepted it (SYN-ACK seen at egress).
pub const FLOW_ANSWERED: u32 = 1;

/// The program's clock (`bpf_ktime_get_coarse_ns`) advances once per kernel tick: at most
/// this (HZ = 100). Every GCRA tolerance the daemon writes is at least this long, so a
/// tick's worth of refill always fits in the bucket and the clock never caps a rate.
pub const CLOCK_TICK_MAX_NS: u64 = 10_000_000;

mod keys;
mod layout;
mod table;
mod verdict;
mod watch;

pub use keys::*;
pub use layout::*;
pub use table::*;
pub use verdict::*;
pub use watch::*;

macro_rules! assert_layout {
    ($($t:ident => $size:expr, $align:expr;)*) => {
        $(
            const _: () = assert!(core::mem::size_of::<$t>() == $size);
            const _: () = assert!(core::mem::align_of::<$t>() == $align);
        )*
        /// `aya::Pod` for every shared type (user space only).
        #[cfg(feature = "user")]
        #[allow(unsafe_code, reason = "aya::Pod is an unsafe trait: the impls below vouch for the layouts")]
        mod user_pod {
            $(
                // SAFETY: #[repr(C)], fixed-width fields, explicit padding, bytemuck::Pod
                // derived above (which rejects implicit padding).
                unsafe impl aya::Pod for super::$t {}
            )*
        }
    };
}

assert_layout! {
    GlobalConfig => 32, 8;
    Rule => 24, 8;
    Limit => 16, 8;
    Chaos => 16, 8;
    ClassConfig => 152, 8;
    BucketKey => 20, 4;
    Bucket => 56, 8;
    RescaleRequest => 152, 8;
    ClassState => 16, 8;
    ClassStats => 32, 8;
    PortKey => 4, 2;
    PortRule => 88, 8;
    PortStats => 64, 8;
    EgressStats => 48, 8;
    FlowKey => 24, 2;
    FlowSeen => 16, 8;
    FailSource => 16, 8;
    Counter => 16, 8;
    SlotName => 32, 1;
    ClassCacheEntry => 88, 8;
    ClassPrefix => 48, 8;
    ClockCopy => 16, 8;
    BanEntry => 16, 8;
    SeenWord => 16, 8;
    FeedValue => 4, 2;
    WatchEvent => 40, 8;
    WatchState => 40, 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_split_at_first_drop() {
        for r in Reason::ALL {
            let i = r as u32;
            assert_eq!(Reason::from_u32(i), Some(r));
            assert_eq!(r.is_drop(), i >= Reason::FIRST_DROP);
        }
        assert_eq!(Reason::from_u32(Reason::COUNT), None);
    }

    #[test]
    fn counter_indices_are_unique_and_in_range() {
        let mut seen = [false; COUNTERS_ENTRIES as usize];
        for row in 0..COUNTER_ROWS {
            for r in 0..Reason::COUNT {
                for m in [false, true] {
                    let i = counter_index(row, r, m) as usize;
                    assert!(i < seen.len());
                    assert!(!seen[i], "duplicate counter index {i}");
                    seen[i] = true;
                }
            }
        }
    }

    #[test]
    fn map_names_fit_kernel_object_names() {
        for name in map_names::ALL {
            assert!(name.len() <= 15, "{name} is longer than 15 bytes");
        }
        assert!(PROGRAM_NAME.len() <= 15);
    }

    #[test]
    fn v4_mapped_layout() {
        assert_eq!(
            v4_mapped([198, 18, 0, 1]),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1]
        );
    }

    #[test]
    fn slot_names_round_trip() {
        assert_eq!(SlotName::new("premium").as_str(), Some("premium"));
        assert_eq!(SlotName::default().as_str(), None);
        let long = "x".repeat(40);
        assert_eq!(
            SlotName::new(&long).as_str().map(str::len),
            Some(MAX_CLASS_NAME)
        );
    }

    #[test]
    fn cache_and_seen_indices_stay_in_range() {
        let mut key = BucketKey::default();
        for i in 0..10_000u32 {
            key.addr[12..].copy_from_slice(&i.to_be_bytes());
            key.class = i % MAX_CLASSES;
            assert!(class_cache_index(&key.addr) < CLASS_CACHE_ENTRIES);
            assert!(seen_bit(&key).0 < SEEN_WORDS);
            let (lo, hi) = addr_words(&key.addr);
            assert!(debt_slot(lo, hi, key.class) < DEBT_ENTRIES);
            let (lo, hi) = addr_words(&key.addr);
            assert_eq!(words_addr(lo, hi), key.addr);
            assert_eq!(
                class_cache_index_words(lo, hi),
                class_cache_index(&key.addr)
            );
        }
    }

    #[test]
    fn neighbouring_sources_get_different_debt_slots() {
        // IPv4 keys differ only in their last bytes (the top of the high word).
        let mut slots = [false; DEBT_ENTRIES as usize];
        let mut distinct = 0;
        for i in 0..1024u32 {
            let addr = v4_mapped([198, 18, (i >> 8) as u8, i as u8]);
            let (lo, hi) = addr_words(&addr);
            let s = debt_slot(lo, hi, 0) as usize;
            distinct += usize::from(!slots[s]);
            slots[s] = true;
        }
        // 1024 keys in 16384 slots: about 32 collide by chance.
        assert!(
            distinct > 950,
            "{distinct} distinct slots for 1024 neighbours"
        );
    }

    #[test]
    fn byte_interval_cap_cannot_overflow() {
        assert!(
            (u64::from(u16::MAX))
                .checked_mul(MAX_BYTE_INTERVAL)
                .is_some()
        );
    }
}
