//! A reference classifier: what the traffic XDP program must decide about a frame, in plain
//! Rust, written from the parsing and classification rules stated below (the data-plane
//! rules of the design, restated here so this file stands on its own) and not from the eBPF
//! code. The fuzz test runs the same bytes through both and holds them against each other:
//! any disagreement is a bug on one side, found by reading the rules again.
//!
//! Scope: the verdict with limits out of the way — classes without packet or byte limits,
//! enforce mode — and, for port rules, only whether they exist for TCP and for UDP
//! ([`PortRules`], none by default). Then an IP packet's verdict depends on its source
//! address and, where port rules exist, on whether its port can be read at all (rule 7);
//! what a port rule then does with a readable port (gates, limits) is not modelled.
//!
//! # The rules
//! 1. Ethernet: 14 bytes (destination, source, ethertype at 12). A frame shorter than that
//!    has no ethertype; the kernel's test run refuses such frames before the program sees
//!    them, so their verdict here ([`Verdict::NonIp`]) is never compared.
//! 2. Up to two VLAN tags, each announced by ethertype 0x8100 or 0x88A8 and 4 bytes long
//!    (TCI, then the next ethertype). A tag cut by the end of the frame is malformed. A
//!    third tag is not walked: the frame is not IP.
//! 3. Ethertype 0x0800, IPv4: the 20-byte base header must be present, with version 4,
//!    IHL ≥ 5, and the whole IHL × 4 bytes of header (options) inside the frame; otherwise
//!    malformed. The source (bytes 12..16) is keyed as `::ffff:a.b.c.d`.
//! 4. Ethertype 0x86DD, IPv6: the 40-byte header must be present with version 6; otherwise
//!    malformed. An IPv4-mapped source (`::ffff:0:0/96`) never appears on the wire and would
//!    pose as an IPv4 key: malformed.
//! 5. Any other ethertype: not IP (passed and counted).
//! 6. Classify the 16-byte key by longest-prefix match over the rules, IPv4 rules as
//!    `::ffff:a.b.c.d/(96 + len)`, IPv6 rules as written: `allow` → passed in the rule's
//!    class row (or the unclassified row); `deny` → dropped likewise; `limit` → the rule's
//!    class, which has no limits here: passed. No match → the default class, passed.
//! 7. A packet rule 6 passes in a class is dropped as `port_unknown` in that class when its
//!    port cannot be read while port rules exist for a protocol it may be. The read: the
//!    program starts no read deeper than 512 bytes from the frame's first byte. IPv4: a
//!    non-first fragment (offset ≠ 0) has no port; otherwise the header after IHL × 4 bytes,
//!    if the protocol is TCP (20 bytes needed) or UDP (8), hides its port when cut. IPv6:
//!    walk at most 6 headers from the fixed header's next header: hop-by-hop (0), routing
//!    (43), destination options (60) — length (byte 1 + 1) × 8 — and AH (51) — length
//!    (byte 1 + 2) × 4 — each need their 2 first bytes readable, else the port is hidden
//!    (any protocol); a fragment header (44, 8 bytes, 4 readable) with offset ≠ 0 ends the
//!    walk with no port, offset 0 continues; any other number is the L4 header, judged as
//!    for IPv4. A walk that uses its 6 headers without reaching the L4 header hides the
//!    port (any protocol). "Any protocol" needs a TCP or a UDP rule; a cut TCP header a TCP
//!    rule; a cut UDP header a UDP rule.
//!
//! # Correspondence with the kernel contract
//! This crate builds on Rust 1.85 and so does not depend on `traffic-common`; the test that
//! has both maps the variants onto the contract:
//!
//! | [`Verdict`]          | counter row                  | `traffic_common::Reason` | action |
//! |----------------------|------------------------------|--------------------------|--------|
//! | `NonIp`              | `UNCLASSIFIED`               | `NonIp`                  | pass   |
//! | `Malformed`          | `UNCLASSIFIED`               | `Malformed`              | drop   |
//! | `Allow(Some(c))`     | class slot `c`               | `Allow`                  | pass   |
//! | `Allow(None)`        | `UNCLASSIFIED`               | `Allow`                  | pass   |
//! | `Deny(Some(c))`      | class slot `c`               | `Deny`                   | drop   |
//! | `Deny(None)`         | `UNCLASSIFIED`               | `Deny`                   | drop   |
//! | `Pass(c)`            | class slot `c`               | `Pass`                   | pass   |
//! | `PortUnknown(c)`     | class slot `c`               | `PortUnknown`            | drop   |
//!
//! Class numbers are whatever the caller uses for rows (the daemon's slots).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use traffic_testkit::{packet::Frame, reference::{Action, Rule, RuleSet, Verdict}};
//!
//! let rules = RuleSet::new(0)
//!     .with(Rule::new("198.18.1.0/24", Action::Limit, Some(1)).unwrap())
//!     .with(Rule::new("198.18.1.128/25", Action::Allow, Some(2)).unwrap());
//! let from = |d| {
//!     Frame::ipv4(Ipv4Addr::new(198, 18, 1, d), Ipv4Addr::new(198, 19, 0, 1))
//!         .udp(1, 53)
//!         .build()
//! };
//! assert_eq!(rules.classify(&from(7)), Verdict::Pass(1));
//! assert_eq!(rules.classify(&from(200)), Verdict::Allow(Some(2)));
//! assert_eq!(rules.classify(&from(200)[..33]), Verdict::Malformed);
//! ```

use std::net::IpAddr;

use crate::packet::{ETH_HLEN, IPV4_HLEN, IPV6_HLEN, VLAN_HLEN, ethertype};

mod ports;
pub use ports::{MAX_READ_OFFSET, MAX_V6_HEADERS, PortRules};

/// A source key: IPv6 as is, IPv4 as `::ffff:a.b.c.d`, network byte order.
pub type Key = [u8; 16];

/// VLAN tags walked before the ethertype must name the network layer.
pub const MAX_VLAN_TAGS: usize = 2;

/// Bits of the `::ffff:0:0/96` prefix under which IPv4 keys live.
pub const V4_MAPPED_BITS: u32 = 96;

/// The key of an IPv4 source.
pub fn v4_key(octets: [u8; 4]) -> Key {
    let mut k = [0u8; 16];
    k[10] = 0xff;
    k[11] = 0xff;
    k[12..].copy_from_slice(&octets);
    k
}

/// The key of a source address as the program keys it.
pub fn key_of(addr: IpAddr) -> Key {
    match addr {
        IpAddr::V4(a) => v4_key(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Whether a 16-byte address lies in `::ffff:0:0/96`.
pub fn is_v4_mapped(k: &Key) -> bool {
    k[..10].iter().all(|b| *b == 0) && k[10] == 0xff && k[11] == 0xff
}

/// What the parse rules make of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not IPv4/IPv6 (or shorter than an Ethernet header).
    NonIp,
    /// An IPv4/IPv6 frame whose tags or IP header are cut or invalid.
    Malformed,
    /// An IP packet and its source key.
    Source(Key),
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Parse a frame by the rules 1–5 of the module documentation.
pub fn parse(frame: &[u8]) -> Parsed {
    parse_located(frame).0
}

/// [`parse`], with the offset of the IP header and whether it is IPv6.
fn parse_located(frame: &[u8]) -> (Parsed, usize, bool) {
    if frame.len() < ETH_HLEN {
        return (Parsed::NonIp, 0, false);
    }
    let mut ethertype = be16(frame, 12);
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ethertype::VLAN && ethertype != ethertype::QINQ {
            break;
        }
        let Some(tag) = frame.get(l3..l3 + VLAN_HLEN) else {
            return (Parsed::Malformed, l3, false);
        };
        ethertype = be16(tag, 2);
        l3 += VLAN_HLEN;
    }
    let ip = &frame[l3..];
    match ethertype {
        ethertype::IPV4 => (parse_ipv4(ip), l3, false),
        ethertype::IPV6 => (parse_ipv6(ip), l3, true),
        _ => (Parsed::NonIp, l3, false),
    }
}

fn parse_ipv4(ip: &[u8]) -> Parsed {
    let Some(h) = ip.get(..IPV4_HLEN) else {
        return Parsed::Malformed;
    };
    let (version, ihl) = (h[0] >> 4, usize::from(h[0] & 0x0f));
    if version != 4 || ihl < 5 || ip.len() < ihl * 4 {
        return Parsed::Malformed;
    }
    Parsed::Source(v4_key([h[12], h[13], h[14], h[15]]))
}

fn parse_ipv6(ip: &[u8]) -> Parsed {
    let Some(h) = ip.get(..IPV6_HLEN) else {
        return Parsed::Malformed;
    };
    if h[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    if is_v4_mapped(&src) {
        return Parsed::Malformed;
    }
    Parsed::Source(src)
}

/// What a source rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Limit in the rule's class.
    Limit,
    /// Pass without limits.
    Allow,
    /// Drop.
    Deny,
}

/// A source rule: a network, what to do, and the class (row) it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Network address; bits past the prefix are ignored.
    pub net: IpAddr,
    /// Prefix length within the family (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix_len: u8,
    /// The action.
    pub action: Action,
    /// Class (counter row) named by the rule; `None` = no class (`allow`/`deny` then count in
    /// the unclassified row; a `limit` rule falls back to the default class).
    pub class: Option<u32>,
}

impl Rule {
    /// A rule from CIDR text such as `198.18.1.0/24` or `2001:db8::/32`.
    pub fn new(cidr: &str, action: Action, class: Option<u32>) -> Result<Rule, String> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("`{cidr}` has no prefix length"))?;
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("`{len}` is not a prefix length"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!("`{cidr}`: prefix longer than {max} bits"));
        }
        Ok(Rule {
            net,
            prefix_len,
            action,
            class,
        })
    }

    /// The rule as a prefix of the 16-byte key space: (key, bits).
    pub fn prefix(&self) -> (Key, u32) {
        match self.net {
            IpAddr::V4(a) => (
                v4_key(a.octets()),
                V4_MAPPED_BITS + u32::from(self.prefix_len.min(32)),
            ),
            IpAddr::V6(a) => (a.octets(), u32::from(self.prefix_len.min(128))),
        }
    }

    /// Whether `key` lies inside the rule's prefix.
    pub fn matches(&self, key: &Key) -> bool {
        let (net, bits) = self.prefix();
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        u128::from_be_bytes(net) & mask == u128::from_be_bytes(*key) & mask
    }
}

/// The verdict on one frame with limits out of the way (see the table in the module
/// documentation for the counter slot and action of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Not IP: passed, unclassified.
    NonIp,
    /// Cut or invalid IP header: dropped, unclassified.
    Malformed,
    /// Matched an `allow` rule: passed in the rule's row.
    Allow(Option<u32>),
    /// Matched a `deny` rule: dropped in the rule's row.
    Deny(Option<u32>),
    /// Limited (or unmatched) in this class, which has no limits: passed.
    Pass(u32),
    /// Would pass in this class, but its port cannot be read while port rules exist for its
    /// protocol (rule 7): dropped.
    PortUnknown(u32),
}

impl Verdict {
    /// Whether the program drops the frame (enforce mode).
    pub fn drops(self) -> bool {
        matches!(
            self,
            Verdict::Malformed | Verdict::Deny(_) | Verdict::PortUnknown(_)
        )
    }

    /// The counter row: a class, or `None` for the unclassified row.
    pub fn row(self) -> Option<u32> {
        match self {
            Verdict::NonIp | Verdict::Malformed => None,
            Verdict::Allow(row) | Verdict::Deny(row) => row,
            Verdict::Pass(class) | Verdict::PortUnknown(class) => Some(class),
        }
    }
}

/// Rules and the default class: everything the verdict depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// The rules; of two with the same prefix the later one wins (as a second map insert
    /// would replace the first).
    pub rules: Vec<Rule>,
    /// Class of sources no rule matches.
    pub default_class: u32,
    /// Which protocols have port rules (rule 7).
    pub ports: PortRules,
}

impl RuleSet {
    /// No rules yet.
    pub fn new(default_class: u32) -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            default_class,
            ports: PortRules::default(),
        }
    }

    /// Add a rule.
    pub fn with(mut self, rule: Rule) -> RuleSet {
        self.rules.push(rule);
        self
    }

    /// The longest-prefix match for `key`: the rule's index and the rule.
    pub fn lookup(&self, key: &Key) -> Option<(usize, &Rule)> {
        let mut best: Option<(usize, &Rule)> = None;
        for (i, r) in self.rules.iter().enumerate() {
            if r.matches(key) && best.is_none_or(|(_, b)| r.prefix().1 >= b.prefix().1) {
                best = Some((i, r));
            }
        }
        best
    }

    /// The verdict on a source key (rule 6).
    pub fn classify_source(&self, key: &Key) -> Verdict {
        match self.lookup(key) {
            None => Verdict::Pass(self.default_class),
            Some((_, r)) => match r.action {
                Action::Allow => Verdict::Allow(r.class),
                Action::Deny => Verdict::Deny(r.class),
                Action::Limit => Verdict::Pass(r.class.unwrap_or(self.default_class)),
            },
        }
    }

    /// With port rules for these protocols.
    pub fn with_port_rules(mut self, ports: PortRules) -> RuleSet {
        self.ports = ports;
        self
    }

    /// The verdict on a frame.
    pub fn classify(&self, frame: &[u8]) -> Verdict {
        let (parsed, l3, v6) = parse_located(frame);
        match parsed {
            Parsed::NonIp => Verdict::NonIp,
            Parsed::Malformed => Verdict::Malformed,
            Parsed::Source(key) => match self.classify_source(&key) {
                Verdict::Pass(class) if self.ports.hidden_by(frame, l3, v6) => {
                    Verdict::PortUnknown(class)
                }
                v => v,
            },
        }
    }
}

#[cfg(test)]
mod tests;
