//! What the program decides ([`Action`] of a rule, [`Reason`] of a verdict) and where it
//! counts it.

// The contract's constants and types are one vocabulary, split only by file.
use crate::*;

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
    /// Listed by a `deny` blocklist feed. Never in the rules map: the program's
    /// classification (cache) only.
    FeedDeny = 3,
}

impl Action {
    /// Decode a raw discriminant.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Limit),
            1 => Some(Self::Allow),
            2 => Some(Self::Deny),
            3 => Some(Self::FeedDeny),
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
    /// Source inside a ban that has not expired (see [`crate::BanEntry`]).
    Banned = 16,
    /// Source listed by a `deny` blocklist feed (`[[feeds]]`).
    FeedDeny = 17,
}

impl Reason {
    /// First reason that drops (or would drop, in monitor mode).
    pub const FIRST_DROP: u32 = 3;
    /// Number of defined reasons.
    pub const COUNT: u32 = 18;
    /// Every reason, in discriminant order.
    pub const ALL: [Reason; 18] = [
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
        Self::Banned,
        Self::FeedDeny,
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
            Self::Banned => "banned",
            Self::FeedDeny => "feed_deny",
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
