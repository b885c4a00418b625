//! A reference classifier: what the traffic XDP program must decide about a frame, in plain
//! Rust, written from the parsing and classification rules stated below (the data-plane
//! rules of the design, restated here so this file stands on its own) and not from the eBPF
//! code. The fuzz test runs the same bytes through both and holds them against each other:
//! any disagreement is a bug on one side, found by reading the rules again.
//!
//! Scope: the verdict with limits out of the way — classes without packet or byte limits,
//! no port rules, enforce mode. Then every IP packet's verdict depends only on its source
//! address, and the L4 part (ports, TCP flags, IPv6 extension headers, fragments) cannot
//! change it, so it is not parsed here.
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
    if frame.len() < ETH_HLEN {
        return Parsed::NonIp;
    }
    let mut ethertype = be16(frame, 12);
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ethertype::VLAN && ethertype != ethertype::QINQ {
            break;
        }
        let Some(tag) = frame.get(l3..l3 + VLAN_HLEN) else {
            return Parsed::Malformed;
        };
        ethertype = be16(tag, 2);
        l3 += VLAN_HLEN;
    }
    let ip = &frame[l3..];
    match ethertype {
        ethertype::IPV4 => parse_ipv4(ip),
        ethertype::IPV6 => parse_ipv6(ip),
        _ => Parsed::NonIp,
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
}

impl Verdict {
    /// Whether the program drops the frame (enforce mode).
    pub fn drops(self) -> bool {
        matches!(self, Verdict::Malformed | Verdict::Deny(_))
    }

    /// The counter row: a class, or `None` for the unclassified row.
    pub fn row(self) -> Option<u32> {
        match self {
            Verdict::NonIp | Verdict::Malformed => None,
            Verdict::Allow(row) | Verdict::Deny(row) => row,
            Verdict::Pass(class) => Some(class),
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
}

impl RuleSet {
    /// No rules yet.
    pub fn new(default_class: u32) -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            default_class,
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

    /// The verdict on a frame.
    pub fn classify(&self, frame: &[u8]) -> Verdict {
        match parse(frame) {
            Parsed::NonIp => Verdict::NonIp,
            Parsed::Malformed => Verdict::Malformed,
            Parsed::Source(key) => self.classify_source(&key),
        }
    }
}

#[cfg(test)]
mod tests;
