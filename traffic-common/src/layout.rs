//! The values the maps hold: program settings, rules, classes, buckets, port rules and
//! their statistics. Sizes and alignments are asserted in the crate root.

use bytemuck::{Pod, Zeroable};

// The contract's constants and types are one vocabulary, split only by file.
use crate::*;

/// [`GlobalConfig::flags`]: every class is in monitor mode.
pub const GLOBAL_MONITOR: u32 = 1 << 0;
/// [`GlobalConfig::flags`]: the port table has entries (skip its lookup otherwise).
pub const GLOBAL_HAS_PORTS: u32 = 1 << 1;
/// [`GlobalConfig::flags`]: the port table has a TCP rule (a TCP packet whose port cannot be
/// read is then dropped as [`Reason::PortUnknown`]).
pub const GLOBAL_HAS_TCP_PORTS: u32 = 1 << 2;
/// [`GlobalConfig::flags`]: the port table has a UDP rule (as [`GLOBAL_HAS_TCP_PORTS`]).
pub const GLOBAL_HAS_UDP_PORTS: u32 = 1 << 3;
/// [`GlobalConfig::flags`]: the feed tries have entries (skip their lookup otherwise).
pub const GLOBAL_HAS_FEEDS: u32 = 1 << 4;
/// [`GlobalConfig::flags`]: the active feed generation is 1 (else 0): the program reads
/// `FeedValue::verdict[1]`. Flipped by the daemon after the other generation is written.
pub const GLOBAL_FEED_GEN1: u32 = 1 << 5;
/// [`GlobalConfig::flags`]: the daemon has bans in force (skip the ban lookup of a
/// classification miss otherwise). Written with the rule generation the bans change, after
/// the ban map, so no source is cached unbanned under a generation that has a ban for it.
pub const GLOBAL_HAS_BANS: u32 = 1 << 6;

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
    /// Verdict events each CPU may send per second while [`GLOBAL_WATCH`] is set
    /// ([`WatchState::take`]).
    pub watch_budget: u32,
    /// Explicit padding.
    pub _pad: u32,
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
    /// The rule's prefix as a mask over the address words ([`addr_words`] of the prefix's
    /// netmask) when no other rule lies inside it — every address it covers gets this
    /// rule — else zero. See [`crate::ClassPrefix`].
    pub mask: [u64; 2],
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
/// [`ClassConfig::flags`]: the per-source limits are fleet-wide (`scope = "fleet"`): the
/// program marks busy sources in [`crate::map_names::FLEET_HOT`] for the daemon to share.
pub const CLASS_FLEET: u32 = 1 << 4;

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
    /// Packets dropped (or that would have been, in monitor mode).
    pub dropped: u64,
    /// Packets seen from this source (passed or dropped).
    pub packets: u64,
    /// Bytes of every packet counted in `packets` (whole frames): the byte rates of the
    /// daemon's baseline (`trafficctl suggest`).
    pub bytes: u64,
    /// Theoretical arrival time (ns, `bpf_ktime_get_ns` clock) per limit: packet limits at
    /// `0..MAX_PACKET_LIMITS`, the byte limit at [`BYTE_LIMIT_SLOT`]. 0 = full bucket.
    ///
    /// After the counters: in a slot that starts a cache line (a set's first), the tag, the
    /// key, the three counts and the first two packet limits are one line, so a verdict of
    /// a class with one or two packet limits, passed or refused, reads and writes that line
    /// alone (a byte limit's word is in the next).
    pub tat: [u64; MAX_PACKET_LIMITS + 1],
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

/// [`FeedValue::verdict`]: not listed in that generation.
pub const FEED_NONE: u16 = 0;
/// [`FeedValue::verdict`]: listed by a `deny` feed.
pub const FEED_DENY: u16 = 1;
/// [`FeedValue::verdict`]: listed by a class feed; the class slot is `verdict - FEED_CLASS_BASE`.
pub const FEED_CLASS_BASE: u16 = 2;

/// Value of [`map_names::FEED_V4`] and [`map_names::FEED_V6`]: the verdict of the prefix in
/// each of two generations, so the daemon writes the next generation while the program
/// reads the active one ([`GLOBAL_FEED_GEN1`]). Each slot holds the verdict *resolved* over
/// every prefix of that generation covering this one (not just this prefix's own listing):
/// the LPM lookup finds the longest prefix of either generation, and its slot must answer
/// for the generation in force.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FeedValue {
    /// `FEED_NONE`, `FEED_DENY`, or `FEED_CLASS_BASE + class`, per generation.
    pub verdict: [u16; 2],
}
