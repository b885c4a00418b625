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

use bytemuck::{Pod, Zeroable};

/// Version of the layouts in this crate. Bumped on any change to a map or type below; a
/// pinned map set written by another version is refused, never reinterpreted.
pub const ABI_VERSION: u32 = 6;

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
    /// Shared (not per-CPU) token buckets, [`crate::BucketKey`] → [`crate::Bucket`].
    pub const BUCKETS: &str = "TRF_BUCKETS";
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
    /// Bitmap of the bucket keys inserted recently, [`crate::SeenWord`] indexed by
    /// [`crate::seen_bit`]: a bit clear in both generations proves a source untracked
    /// without a lookup in the (large, cold) bucket map. Aged by the daemon, which clears
    /// one generation at a time (memory-mapped, `BPF_F_MMAPABLE`).
    pub const SEEN: &str = "TRF_SEEN";
    /// Debt sketch: when each recently refused source's bucket is full again (ns, kernel
    /// clock), `u64` indexed by [`crate::debt_slot`]. A bucket created for a source
    /// starts no fuller than this allows, so an evicted heavy hitter does not come back
    /// with a full bucket.
    pub const DEBT: &str = "TRF_DEBT";

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

    /// Every map, for contract checks and pin management.
    pub const ALL: [&str; 18] = [
        CONFIG,
        RULES,
        CLASSES,
        BUCKETS,
        CLASS_STATE,
        CLASS_STATS,
        PORTS,
        COUNTERS,
        SLOT_NAMES,
        PORT_STATS,
        EGRESS,
        CLASS_CACHE,
        SEEN,
        DEBT,
        FLOWS,
        FAIL_SOURCE,
        RST_BUDGET,
        LOCAL,
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
pub const REASON_SLOTS: u32 = 32;
/// Offset of the monitor twin of a reason within its row.
pub const MONITOR_OFFSET: u32 = 16;

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
/// Default `max_entries` of [`map_names::BUCKETS`]; the daemon may resize it at load time.
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
/// Map flags of [`map_names::SEEN`]: `BPF_F_MMAPABLE`, so the daemon clears one generation
/// with plain atomic stores while the program keeps setting bits in the other.
pub const SEEN_MAP_FLAGS: u32 = 1 << 10;
/// Bits of a [`map_names::DEBT`] slot index.
pub const DEBT_BITS: u32 = 14;
/// `max_entries` of [`map_names::DEBT`]: 2¹⁴ slots, 128 KiB.
pub const DEBT_ENTRIES: u32 = 1 << DEBT_BITS;

/// `max_entries` of [`map_names::FLOWS`] (an LRU: a flood of attempts evicts the oldest).
pub const FLOWS_ENTRIES: u32 = 16_384;
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

/// One entry of [`map_names::CLASS_CACHE`]: the rule found for a source address under one
/// generation of the rule set.
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
    /// Explicit padding.
    pub _pad: u32,
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

/// What a source rule does.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Rate-limit in the rule's class.
    Limit = 0,
    /// Internal-service bypass: pass without limits, gates or throttling.
    Allow = 1,
    /// Drop everything from the source.
    Deny = 2,
}

impl Action {
    /// Decode a raw discriminant.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Limit),
            1 => Some(Self::Allow),
            2 => Some(Self::Deny),
            _ => None,
        }
    }
}

/// Why a packet got its verdict. Reasons below [`Reason::FIRST_DROP`] pass the packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Within every limit of its class (or the class has no limits).
    Pass = 0,
    /// Source matched an `allow` rule.
    Allow = 1,
    /// Not IPv4 or IPv6 (ARP, LLDP, …): passed untouched.
    NonIp = 2,
    /// Source matched a `deny` rule.
    Deny = 3,
    /// Over one of the class's packet limits.
    PacketRate = 4,
    /// Over the class's byte limit.
    ByteRate = 5,
    /// A new source over the class's admission budget, and the shared overflow bucket was
    /// empty.
    Overflow = 6,
    /// The bucket map could not take the source and the overflow bucket was empty: a full
    /// map never fails open.
    MapFull = 7,
    /// IPv4/IPv6 header truncated or invalid (version, IHL, a cut header or options, an
    /// IPv4-mapped IPv6 source): frames the kernel stack would discard or that could pose
    /// as another family.
    Malformed = 8,
    /// New TCP connection dropped at an open circuit gate.
    Gate = 9,
    /// New TCP connection answered with RST at an open circuit gate.
    GateReset = 10,
    /// New connection shed by the bulkhead (concurrency cap or accept-queue backpressure).
    Bulkhead = 11,
    /// Dropped by fault injection.
    Chaos = 12,
    /// Over the per-port new-connection limit for this source.
    PortRate = 13,
    /// A TCP or UDP packet whose destination port could not be read (its header beyond the
    /// IPv6 extension-header walk, or cut, as in a tiny first fragment) while port rules
    /// exist for its protocol: passing it would let it slip past a gate, a bulkhead or a
    /// new-connection limit.
    PortUnknown = 14,
    /// A refused connection that would have been answered with a RST, dropped silently
    /// because the port's RST budget is spent (the gate is no reflector).
    RstBudget = 15,
}

impl Reason {
    /// First reason that drops (or would drop, in monitor mode).
    pub const FIRST_DROP: u32 = 3;
    /// Number of defined reasons.
    pub const COUNT: u32 = 16;
    /// Every reason, in discriminant order.
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Self::Pass,
        Self::Allow,
        Self::NonIp,
        Self::Deny,
        Self::PacketRate,
        Self::ByteRate,
        Self::Overflow,
        Self::MapFull,
        Self::Malformed,
        Self::Gate,
        Self::GateReset,
        Self::Bulkhead,
        Self::Chaos,
        Self::PortRate,
        Self::PortUnknown,
        Self::RstBudget,
    ];

    /// Whether this reason drops the packet when enforced.
    #[inline(always)]
    pub const fn is_drop(self) -> bool {
        self as u32 >= Self::FIRST_DROP
    }

    /// Decode a raw discriminant.
    pub const fn from_u32(v: u32) -> Option<Self> {
        if v < Self::COUNT {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// Stable snake_case name, used in the CLI, JSON and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Allow => "allow",
            Self::NonIp => "non_ip",
            Self::Deny => "deny",
            Self::PacketRate => "packet_rate",
            Self::ByteRate => "byte_rate",
            Self::Overflow => "overflow",
            Self::MapFull => "map_full",
            Self::Malformed => "malformed",
            Self::Gate => "gate",
            Self::GateReset => "gate_reset",
            Self::Bulkhead => "bulkhead",
            Self::Chaos => "chaos",
            Self::PortRate => "port_rate",
            Self::PortUnknown => "port_unknown",
            Self::RstBudget => "gate_rst_budget",
        }
    }
}

const _: () = assert!(Reason::COUNT <= MONITOR_OFFSET);
const _: () = assert!(MONITOR_OFFSET * 2 == REASON_SLOTS);

/// Index into [`map_names::COUNTERS`] for a (row, reason) pair. `monitored` selects the
/// would-drop twin counted when a drop was not enforced because of monitor mode.
#[inline(always)]
pub const fn counter_index(row: u32, reason: u32, monitored: bool) -> u32 {
    row * REASON_SLOTS + reason + if monitored { MONITOR_OFFSET } else { 0 }
}

/// [`GlobalConfig::flags`]: every class is in monitor mode.
pub const GLOBAL_MONITOR: u32 = 1 << 0;
/// [`GlobalConfig::flags`]: the port table has entries (skip its lookup otherwise).
pub const GLOBAL_HAS_PORTS: u32 = 1 << 1;
/// [`GlobalConfig::flags`]: the port table has a TCP rule (a TCP packet whose port cannot be
/// read is then dropped as [`Reason::PortUnknown`]).
pub const GLOBAL_HAS_TCP_PORTS: u32 = 1 << 2;
/// [`GlobalConfig::flags`]: the port table has a UDP rule (as [`GLOBAL_HAS_TCP_PORTS`]).
pub const GLOBAL_HAS_UDP_PORTS: u32 = 1 << 3;

/// Program-wide settings, the single entry of [`map_names::CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GlobalConfig {
    /// [`ABI_VERSION`] of the daemon that wrote the maps; 0 until configured (the program
    /// then passes everything as [`Reason::Pass`] in [`UNCLASSIFIED`]).
    pub abi_version: u32,
    /// `GLOBAL_*` flags.
    pub flags: u32,
    /// Class of sources that match no rule.
    pub default_class: u32,
    /// Generation of the rule set, never 0 once configured: a digest of the rules, written
    /// after them. Classifications cached under another generation are ignored.
    pub rules_gen: u32,
    /// Lease on the gates' state (kernel clock, ns): open and half-open gates and
    /// bulkhead shedding are honoured only before it; after it every gate is closed. The
    /// running daemon renews it, so a gate never outlives a stopped or crashed daemon
    /// (`on_exit = "keep"`) by more than [`GATE_LEASE_NS`]. Limits are not leased.
    pub gate_lease_until_ns: u64,
}

/// How far ahead the daemon sets [`GlobalConfig::gate_lease_until_ns`]: the longest a gate
/// outlives the daemon that opened it.
pub const GATE_LEASE_NS: u64 = 5_000_000_000;
/// How often the daemon renews the gate lease (a fifth of it: a control loop stalled for
/// up to four renewals does not drop the gates).
pub const GATE_LEASE_RENEW_NS: u64 = 1_000_000_000;

/// Value of [`map_names::RULES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Rule {
    /// An [`Action`] discriminant.
    pub action: u32,
    /// Class id for `limit`; counter row for `allow`/`deny` ([`UNCLASSIFIED`] if none).
    pub class: u32,
}

/// Key data of [`map_names::RULES`] (the LPM key adds a leading `u32` prefix length).
pub type RuleAddr = Addr;

/// One token bucket expressed as GCRA (generic cell rate algorithm): a single u64 of state
/// per bucket (the theoretical arrival time), so CPUs share it with one compare-and-swap.
///
/// A packet of cost `c` passes iff `max(tat, now) + c - now <= tolerance`, then
/// `tat = max(tat, now) + c`. With `interval = 1/rate` and `tolerance = burst × interval`
/// this is exactly a token bucket of `burst` tokens refilled at `rate`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Limit {
    /// Cost of one unit: nanoseconds per packet, or nanoseconds per byte × 2^16 for the
    /// byte limit. 0 disables the limit.
    pub interval: u64,
    /// Burst tolerance in nanoseconds (`burst × ns per unit`).
    pub tolerance: u64,
}

/// Fault injection, time-boxed in the kernel itself: it stops at `until_ns` even if the
/// daemon is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Chaos {
    /// Fraction of packets dropped, as a threshold on a random u32 (ratio × 2³²).
    pub drop_ratio: u32,
    /// Fraction of new TCP connections answered with RST, same encoding.
    pub reset_ratio: u32,
    /// `bpf_ktime_get_ns` deadline; 0 or past = off.
    pub until_ns: u64,
}

/// [`ClassConfig::flags`]: slot holds a configured class.
pub const CLASS_ACTIVE: u32 = 1 << 0;
/// [`ClassConfig::flags`]: class is in monitor mode (counts would-drops, passes them).
pub const CLASS_MONITOR: u32 = 1 << 1;
/// [`ClassConfig::flags`]: the byte limit is set.
pub const CLASS_BYTES: u32 = 1 << 2;
/// [`ClassConfig::flags`]: new sources are subject to the admission budget.
pub const CLASS_ADMISSION: u32 = 1 << 3;

/// Effective limits of one class (base × priority × throttle multiplier), value of
/// [`map_names::CLASSES`]. Written by the daemon only when it changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ClassConfig {
    /// `CLASS_*` flags.
    pub flags: u32,
    /// Number of packet limits in use, `0..=MAX_PACKET_LIMITS`, packed from index 0.
    pub packet_limits: u32,
    /// Mask applied to an IPv4-mapped source before bucketing (aggregation prefix).
    pub mask_v4: [u64; 2],
    /// Mask applied to an IPv6 source before bucketing (aggregation prefix).
    pub mask_v6: [u64; 2],
    /// Stacked packet limits; a packet passes only if all in use allow it.
    pub packets: [Limit; MAX_PACKET_LIMITS],
    /// Byte limit on the frame length (see [`BYTE_INTERVAL_SHIFT`]).
    pub bytes: Limit,
    /// Budget of new buckets (tracked sources) per unit of time; a packet limit in units of
    /// "new sources".
    pub admission: Limit,
    /// The packet limit of the class's shared overflow bucket, charged by sources that
    /// were not admitted (or could not be inserted).
    pub overflow: Limit,
    /// Fault injection on the class.
    pub chaos: Chaos,
}

/// Key of [`map_names::BUCKETS`]: a class and a source masked to the class's aggregation
/// prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct BucketKey {
    /// Masked source address.
    pub addr: Addr,
    /// Class id.
    pub class: u32,
}

/// Value of [`map_names::BUCKETS`]: GCRA state for each limit and per-source statistics.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Bucket {
    /// Theoretical arrival time (ns, `bpf_ktime_get_ns` clock) per limit: packet limits at
    /// `0..MAX_PACKET_LIMITS`, the byte limit at [`BYTE_LIMIT_SLOT`]. 0 = full bucket.
    pub tat: [u64; MAX_PACKET_LIMITS + 1],
    /// Packets seen from this source (passed or dropped).
    pub packets: u64,
    /// Packets dropped (or that would have been, in monitor mode).
    pub dropped: u64,
}

/// The input of [`RESCALE_PROGRAM_NAME`]: one bucket and its class's limits before and after
/// a change, per GCRA word of [`Bucket::tat`] (packet limits, then the byte limit). The
/// program keeps the bucket's tokens (capped at the new burst) with compare-and-swap on
/// each word, never inserts a missing key and never touches the counters; it returns
/// `XDP_PASS` when the bucket was there, `XDP_DROP` when it was not.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RescaleRequest {
    /// The bucket.
    pub key: BucketKey,
    /// Explicit padding.
    pub _pad: u32,
    /// Limits the words were charged under.
    pub old: [Limit; MAX_PACKET_LIMITS + 1],
    /// Limits now in force.
    pub new: [Limit; MAX_PACKET_LIMITS + 1],
}

/// Value of [`map_names::CLASS_STATE`]: state shared by all sources of a class.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ClassState {
    /// GCRA state of the admission budget.
    pub admit_tat: u64,
    /// GCRA state of the overflow bucket.
    pub overflow_tat: u64,
}

/// Value of [`map_names::CLASS_STATS`] (per CPU): what happened to sources without a bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ClassStats {
    /// New sources that got their own bucket.
    pub admitted: u64,
    /// Packets of unadmitted sources charged to the overflow bucket.
    pub overflowed: u64,
    /// Bucket inserts the map refused (charged to the overflow bucket instead).
    pub map_full: u64,
    /// New buckets that started with a debt remembered in [`map_names::DEBT`] (a refused
    /// source coming back after its bucket was evicted, or a source sharing its slot).
    pub indebted: u64,
}

/// IP protocol numbers used in [`PortKey::protocol`].
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// Key of [`map_names::PORTS`]: (protocol, destination port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct PortKey {
    /// Destination port, host order.
    pub port: u16,
    /// IP protocol ([`proto`]).
    pub protocol: u8,
    /// Explicit padding.
    pub _pad: u8,
}

/// State of a circuit gate in [`PortRule::gate`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Everything passes.
    Closed = 0,
    /// New connections are refused.
    Open = 1,
    /// A bounded number of new connections per interval pass.
    HalfOpen = 2,
}

/// [`PortRule::flags`]: the class override is set.
pub const PORT_CLASS_OVERRIDE: u32 = 1 << 0;
/// [`PortRule::flags`]: refuse gated or shed connections with a TCP RST instead of dropping
/// them.
pub const PORT_GATE_RESET: u32 = 1 << 1;
/// [`PortRule::flags`]: the bulkhead is full: shed new connections.
pub const PORT_SHED: u32 = 1 << 2;

/// Value of [`map_names::PORTS`]: per-port class override, new-connection limit, circuit
/// gate, bulkhead and fault injection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortRule {
    /// `PORT_*` flags.
    pub flags: u32,
    /// Class id used instead of the source's class when [`PORT_CLASS_OVERRIDE`] is set.
    pub class: u32,
    /// A [`Gate`] discriminant.
    pub gate: u32,
    /// Index of this rule in [`map_names::PORT_STATS`] and [`map_names::EGRESS`].
    pub slot: u32,
    /// Per-source limit on new connections (TCP SYN without ACK); interval 0 disables it.
    pub syn_limit: Limit,
    /// Half-open trial budget: new connections admitted per interval while half-open.
    pub half_open: Limit,
    /// GCRA state of the half-open budget (kernel-owned; reset when the daemon rewrites
    /// the rule, i.e. on every gate change).
    pub half_open_tat: u64,
    /// Fault injection on the port.
    pub chaos: Chaos,
    /// Budget of RSTs the port's refusals (gate, bulkhead, chaos) may send; over it they
    /// are dropped silently as [`Reason::RstBudget`]. Interval 0: unlimited.
    pub rst_budget: Limit,
}

/// Value of [`map_names::PORT_STATS`] (per CPU): what the gate did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PortStats {
    /// New TCP connections (SYN without ACK) seen.
    pub syns: u64,
    /// New connections (and UDP packets) refused by an open or half-open gate.
    pub gated: u64,
    /// RSTs sent by the gate (gate, bulkhead or chaos).
    pub resets: u64,
    /// New connections shed by the bulkhead.
    pub shed: u64,
    /// Packets dropped by fault injection.
    pub chaos_dropped: u64,
    /// New connections reset by fault injection.
    pub chaos_reset: u64,
    /// New connections over the per-source limit.
    pub syn_limited: u64,
    /// Trial connections admitted while half-open.
    pub trials: u64,
}

/// Value of [`map_names::EGRESS`] (per CPU): replies leaving from a rule's port.
///
/// Only a reply to an attempt the XDP program saw arrive ([`map_names::FLOWS`]) is a
/// refusal, and consecutive refusals of one peer (/32, or /64 for IPv6) count once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EgressStats {
    /// SYN-ACKs sent (accepted handshakes).
    pub syn_acks: u64,
    /// RST+ACKs answering a SYN that arrived (refused connections), one per peer in a row.
    pub resets: u64,
    /// ICMP/ICMPv6 port unreachables for a datagram that arrived, one per peer in a row.
    pub unreachables: u64,
    /// Refusals of the same peer as the refusal before: not counted above.
    pub repeated: u64,
    /// RSTs and port unreachables that answer no attempt seen (bare ACKs, RSTs, FINs,
    /// aborted connections): not a refusal.
    pub unverified: u64,
    /// Reserved.
    pub _reserved: u64,
}

/// Key of [`map_names::FLOWS`]: an attempt as its sender saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    /// The peer's address ([`Addr`]).
    pub addr: Addr,
    /// The peer's port, host order.
    pub peer_port: u16,
    /// The node's (port rule's) port, host order.
    pub port: u16,
    /// IP protocol ([`proto`]).
    pub protocol: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
}

/// Value of [`map_names::FLOWS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowSeen {
    /// When the attempt arrived (or was answered, once [`FLOW_ANSWERED`]), kernel clock ns.
    pub at_ns: u64,
    /// The SYN's sequence number, host order (0 for UDP).
    pub seq: u32,
    /// [`FLOW_PENDING`] or [`FLOW_ANSWERED`].
    pub state: u32,
}

/// Value of [`map_names::FAIL_SOURCE`]: the peer of the port's last counted refusal, as
/// [`addr_words`] of its /32 (IPv4) or /64 (IPv6).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FailSource {
    /// The peer's prefix as two words; all zero before the first refusal.
    pub prefix: [u64; 2],
}

/// Value of [`map_names::COUNTERS`] (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes (whole frame, from the Ethernet header).
    pub bytes: u64,
}

/// Value of [`map_names::SLOT_NAMES`]: a NUL-padded class name; all zero = free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SlotName {
    /// UTF-8 name, NUL-padded, at most [`MAX_CLASS_NAME`] bytes.
    pub name: [u8; MAX_CLASS_NAME + 1],
}

impl Default for SlotName {
    fn default() -> Self {
        Self {
            name: [0; MAX_CLASS_NAME + 1],
        }
    }
}

impl SlotName {
    /// Encode a name (truncated to [`MAX_CLASS_NAME`] bytes).
    pub fn new(name: &str) -> Self {
        let mut out = Self::default();
        let n = name.len().min(MAX_CLASS_NAME);
        out.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        out
    }

    /// The name, or `None` for a free slot.
    pub fn as_str(&self) -> Option<&str> {
        let end = self
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.name.len());
        if end == 0 {
            return None;
        }
        core::str::from_utf8(&self.name[..end]).ok()
    }
}

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
    GlobalConfig => 24, 8;
    Rule => 8, 4;
    Limit => 16, 8;
    Chaos => 16, 8;
    ClassConfig => 152, 8;
    BucketKey => 20, 4;
    Bucket => 48, 8;
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
    ClassCacheEntry => 32, 8;
    SeenWord => 16, 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_split_at_first_drop() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert_eq!(Reason::from_u32(i as u32), Some(*r));
            assert_eq!(r.is_drop(), i as u32 >= Reason::FIRST_DROP);
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
