//! Hostile frames: a bounded, seeded, reproducible fuzz run of the XDP program through
//! BPF_PROG_TEST_RUN, held against the userspace reference classifier
//! (`traffic_testkit::reference`, written from the parsing rules, not from the eBPF code).
//!
//! With limits out of the way (classes without limits, enforce mode, no port rules) a
//! frame's verdict depends only on its bytes, so for every frame:
//! - the program never returns XDP_ABORTED;
//! - its action equals the reference's (drop for deny and malformed, pass otherwise);
//! - the counter slot (row, reason) it moves equals the reference's. Counters are read once
//!   per batch (a syscall per slot) and the batch's deltas compared with the reference's
//!   aggregate; a disagreeing batch is re-run one frame at a time to name the first frame.
//!
//! A second run puts everything else in the way — port rules (open and half-open gates
//! answering with RST through XDP_TX, a full bulkhead, a per-source new-connection limit,
//! class overrides), stacked packet, byte and admission limits, fault injection — and checks
//! what still holds: never XDP_ABORTED, exactly one counter per frame, no XDP_TX beyond the
//! refusals that may send a RST, and the verdicts decided from the source alone (non-IP,
//! malformed, allow, deny) still exactly the reference's. Fault injection draws from the
//! kernel's PRNG, so that run's counts vary; its frames do not.
//!
//! Frames: structured ones from the packet builder (random VLAN tags, IP versions, IHL and
//! options, extension-header chains up to 14 long and single headers up to 800 bytes,
//! fragments — tiny first fragments cutting the TCP or UDP header among them — L4 headers,
//! TCP segments with RST, ACK or FIN and no SYN before them, truncation points, frames
//! padded up to the 3,422 bytes of a 3400-MTU interface, sources inside, on the edge of and
//! outside the rule prefixes), mutations of those (byte flips, truncation at any offset ≥
//! 14, insertions, deletions), and random bytes of 14..=1514. In the run with port rules the
//! reference knows which protocols have them, so frames whose port cannot be read are held
//! to its `port_unknown` verdict exactly (issue 17).
//!
//! `TRAFFIC_FUZZ_SEED` (decimal or 0x-hex) and `TRAFFIC_FUZZ_FRAMES` override the seed and
//! the number of frames (default 400,000; the second run takes a quarter as many); a
//! failure prints both, the frame's index and its hex dump. About 45,000 frames/s in a debug
//! build on 2 cores: both runs take ~11 s.
//!
//! ```text
//! cargo test -p traffic-daemon --test privileged -- fuzz:: --nocapture
//! ```

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use crate::support::bpf::{
    Lab, NODE4, NODE6, SOURCES, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, action_name, describe,
    moved,
};
use anyhow::{Context as _, Result, bail, ensure};
use traffic_common::{
    COUNTERS_ENTRIES, Chaos, Counter, Gate, Limit, MONITOR_OFFSET, PORT_CLASS_OVERRIDE,
    PORT_GATE_RESET, PORT_SHED, PortRule, REASON_SLOTS, Reason, UNCLASSIFIED, counter_index,
};
use traffic_daemon::{
    config::{RuleAction, RuleSpec},
    dataplane::Dataplane as _,
};
use traffic_testkit::{
    packet::{Ext, Frame, Transport, ethertype, ip_proto, tcp_flags},
    reference::{self, Action, Parsed, PortRules, Rule, RuleSet, Verdict},
};

const DEFAULT_SEED: u64 = 0x7261_6666_6963_2d31; // "raffic-1"
const DEFAULT_FRAMES: u64 = 400_000;
/// Frames between two counter reads.
const BATCH: usize = 1_000;
const MAX_FRAME: usize = 1514;
/// Largest padded frame: a 3400-MTU interface's with two VLAN tags (BPF_PROG_TEST_RUN takes
/// no more without fragments).
const JUMBO_FRAME: usize = 3400 + 14 + 8;
/// Destination ports that get port rules in the run with gates; generated frames favour them.
const GATED_PORTS: [u16; 6] = [80, 443, 22, 53, 8080, 25];

/// The fuzz config, in parts: with classes without limits every verdict but the limit
/// ones can occur, and the nested rules make the longest prefix matter.
const HEAD: &str = r#"
[daemon]
interfaces = ["lo"]
"#;

/// Classes without limits.
const CLASSES: &str = r#"
[classes.default]
[classes.web]
[classes.bulk]
[classes.internal]
[classes.quarantine]
"#;

/// Rules nested several deep in both families.
const RULES: &str = r#"
# IPv4: limit /16 ⊃ limit /24 ⊃ allow /25 ⊃ deny /26 ⊃ limit /32.
[[rules]]
cidr = "198.18.0.0/16"
class = "bulk"
[[rules]]
cidr = "198.18.1.0/24"
class = "web"
[[rules]]
cidr = "198.18.1.128/25"
action = "allow"
class = "internal"
[[rules]]
cidr = "198.18.1.192/26"
action = "deny"
[[rules]]
cidr = "198.18.1.200/32"
class = "web"
[[rules]]
cidr = "198.18.66.0/24"
action = "deny"
class = "quarantine"
[[rules]]
cidr = "10.0.0.0/8"
action = "allow"
[[rules]]
cidr = "128.0.0.0/1"
action = "deny"
class = "bulk"
[[rules]]
cidr = "192.168.0.0/16"
action = "allow"
class = "internal"
# An IPv4 network written as IPv4-mapped IPv6 (172.16.0.0/12): it applies to IPv4 sources.
[[rules]]
cidr = "::ffff:172.16.0.0/108"
action = "allow"
class = "internal"

# IPv6: deny /3 ⊃ limit /32 ⊃ limit /48 ⊃ allow /64 ⊃ deny /128.
[[rules]]
cidr = "2000::/3"
action = "deny"
class = "quarantine"
[[rules]]
cidr = "2001:db8::/32"
class = "bulk"
[[rules]]
cidr = "2001:db8:1::/48"
class = "web"
[[rules]]
cidr = "2001:db8:1:2::/64"
action = "allow"
class = "internal"
[[rules]]
cidr = "2001:db8:1:2::66/128"
action = "deny"
[[rules]]
cidr = "2001:db8:66::/48"
action = "deny"
class = "quarantine"
[[rules]]
cidr = "fe80::/10"
action = "allow"
"#;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

impl Lab {
    fn slot(&self, class: usize) -> u32 {
        self.slots.slot_of_index(self.config(), class)
    }

    /// The reference's rule set for the loaded config, classes as counter rows.
    fn reference(&self) -> Result<RuleSet> {
        let mut set = RuleSet::new(self.slot(self.config().daemon.default_class));
        for r in &self.config().rules {
            let action = match r.action {
                RuleAction::Limit => Action::Limit,
                RuleAction::Allow => Action::Allow,
                RuleAction::Deny => Action::Deny,
            };
            set = set.with(
                Rule::new(&r.cidr(), action, r.class.map(|c| self.slot(c)))
                    .map_err(anyhow::Error::msg)?,
            );
        }
        Ok(set)
    }

    /// The action alone (no counter reads: the fast path of the bulk run).
    fn action_of(&self, frame: &[u8]) -> Result<u32> {
        let (action, _) = self
            .kernel
            .test_run(frame, 1)
            .with_context(|| format!("test run of a {}-byte frame", frame.len()))?;
        Ok(action)
    }
}

/// The counter slot and XDP action the reference's verdict stands for (see the table in
/// `traffic_testkit::reference`).
fn expected(v: Verdict) -> (usize, u32) {
    let (row, reason) = match v {
        Verdict::NonIp => (UNCLASSIFIED, Reason::NonIp),
        Verdict::Malformed => (UNCLASSIFIED, Reason::Malformed),
        Verdict::Allow(row) => (row.unwrap_or(UNCLASSIFIED), Reason::Allow),
        Verdict::Deny(row) => (row.unwrap_or(UNCLASSIFIED), Reason::Deny),
        Verdict::Pass(class) => (class, Reason::Pass),
        Verdict::PortUnknown(class) => (class, Reason::PortUnknown),
    };
    assert_eq!(
        reason.is_drop(),
        v.drops(),
        "reference and contract disagree on whether {v:?} drops"
    );
    let action = if v.drops() { XDP_DROP } else { XDP_PASS };
    (counter_index(row, reason as u32, false) as usize, action)
}

/// Bytes as a hex dump, 16 a line.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "    {:04x}:", i * 16);
        for b in line {
            let _ = write!(out, " {b:02x}");
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Frame generation
// ---------------------------------------------------------------------------------------

/// splitmix64: tiny, fast, and good enough to drive a fuzzer reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability 1/n.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// Random bytes, a [`Rng::small`] number of them.
    fn blob(&mut self, max: usize) -> Vec<u8> {
        let n = self.small(max);
        self.bytes(n)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length biased towards small values: mostly short, sometimes up to `max`.
    fn small(&mut self, max: usize) -> usize {
        match self.below(4) {
            0 | 1 => self.range(0, max.min(8)),
            2 => self.range(0, max.min(64)),
            _ => self.range(0, max),
        }
    }
}

/// How a frame was made (for the report and the statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Structured,
    Mutated,
    Random,
}

/// Where generated sources come from: the config's rule prefixes.
struct Sources {
    prefixes: Vec<(IpAddr, u8)>,
}

impl Sources {
    fn new(rules: &[RuleSpec]) -> Sources {
        Sources {
            prefixes: rules.iter().map(|r| (r.addr, r.prefix_len)).collect(),
        }
    }

    /// An address inside (often at an edge of) a rule's prefix, next to one, or anywhere.
    fn pick(&self, rng: &mut Rng) -> IpAddr {
        let addr = match rng.below(20) {
            0..=11 => {
                let &(net, len) = rng.pick(&self.prefixes);
                let host = match rng.below(6) {
                    0 => 0,
                    1 => u128::MAX,
                    _ => u128::from(rng.next()) << 64 | u128::from(rng.next()),
                };
                with_host(net, len, host, 0)
            }
            12..=13 => {
                // Just outside: one below the first or one above the last address.
                let &(net, len) = rng.pick(&self.prefixes);
                if rng.one_in(2) {
                    with_host(net, len, 0, -1)
                } else {
                    with_host(net, len, u128::MAX, 1)
                }
            }
            14..=15 => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
            16..=17 => {
                let a = u128::from(rng.next()) << 64 | u128::from(rng.next());
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => *rng.pick(&[
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::BROADCAST),
                IpAddr::V6(Ipv4Addr::new(198, 18, 1, 200).to_ipv6_mapped()),
                IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
                IpAddr::V6(Ipv4Addr::new(198, 18, 1, 200).to_ipv6_compatible()),
                IpAddr::V6("::fffe:c612:1c8".parse().expect("literal")),
                IpAddr::V6("64:ff9b::c612:1c8".parse().expect("literal")),
            ]),
        };
        // A prefix written as IPv4-mapped IPv6 yields mapped addresses: send most of them
        // as the IPv4 packets the rule is for, the rest as (malformed) IPv6.
        match addr {
            IpAddr::V6(a) if !rng.one_in(4) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            _ => addr,
        }
    }
}

/// `net/len` with host bits from `host`, then moved by `step` addresses (wrapping).
fn with_host(net: IpAddr, len: u8, host: u128, step: i8) -> IpAddr {
    match net {
        IpAddr::V4(a) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            let v = (u32::from(a) & mask) | (host as u32 & !mask);
            IpAddr::V4(Ipv4Addr::from(v.wrapping_add_signed(i32::from(step))))
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            let v = (u128::from(a) & mask) | (host & !mask);
            IpAddr::V6(Ipv6Addr::from(v.wrapping_add_signed(i128::from(step))))
        }
    }
}

fn random_ext(rng: &mut Rng) -> Ext {
    match rng.below(5) {
        0 => Ext::HopByHop(rng.blob(40)),
        1 => Ext::DestOpts(rng.blob(40)),
        2 => Ext::Routing {
            routing_type: rng.byte(),
            segments_left: rng.byte(),
            data: rng.blob(40),
        },
        3 => Ext::Fragment {
            offset: if rng.one_in(2) { 0 } else { rng.u16() & 0x1fff },
            more: rng.one_in(2),
            id: rng.next() as u32,
        },
        _ => Ext::Ah {
            spi: rng.next() as u32,
            seq: rng.next() as u32,
            icv: rng.blob(24),
        },
    }
}

/// A frame from the packet builder with random structure.
fn structured(rng: &mut Rng, sources: &Sources) -> Frame {
    let mut f = match rng.below(16) {
        0 => Frame::arp_request(Ipv4Addr::from(rng.next() as u32), NODE4),
        1 => {
            let et = *rng.pick(&[ethertype::LLDP, 0x88b5, 0x0806, 0x8847, 0x0000, 0xffff]);
            Frame::raw(et, &rng.blob(80))
        }
        _ => {
            let src = sources.pick(rng);
            let dst = match src {
                IpAddr::V4(_) => IpAddr::V4(NODE4),
                IpAddr::V6(_) => IpAddr::V6(NODE6),
            };
            ip_frame(rng, Frame::ip(src, dst))
        }
    };
    // Tags: mostly none, sometimes one or two, rarely three (only two are walked); the
    // TPIDs are mostly the real ones.
    let tags = match rng.below(10) {
        0..=5 => 0,
        6 | 7 => 1,
        8 => 2,
        _ => 3,
    };
    for _ in 0..tags {
        let tpid = match rng.below(8) {
            0..=3 => ethertype::VLAN,
            4..=6 => ethertype::QINQ,
            _ => rng.u16(),
        };
        f = f.tag(tpid, rng.u16());
    }
    if rng.one_in(6) {
        f = f.pad_to(rng.range(60, MAX_FRAME));
    } else if rng.one_in(40) {
        f = f.pad_to(rng.range(MAX_FRAME, JUMBO_FRAME));
    }
    if rng.one_in(4) {
        let len = f.layout().len;
        f = f.truncate(rng.range(14, len.max(14)));
    }
    f
}

fn ip_frame(rng: &mut Rng, mut f: Frame) -> Frame {
    let v6 = matches!(f.network, traffic_testkit::packet::Network::Ipv6(_));
    // L4 first: the IP setters below keep it.
    let dport = if rng.one_in(2) {
        *rng.pick(&GATED_PORTS)
    } else {
        rng.u16()
    };
    f = match rng.below(6) {
        0 | 1 => {
            // Often a bare SYN: what gates and new-connection limits act on.
            let flags = match rng.below(6) {
                0 | 1 => tcp_flags::SYN,
                // RST, ACK or FIN with no SYN before them.
                2 => *rng.pick(&[
                    tcp_flags::RST,
                    tcp_flags::ACK,
                    tcp_flags::FIN,
                    tcp_flags::RST | tcp_flags::ACK,
                    tcp_flags::FIN | tcp_flags::ACK,
                ]),
                _ => rng.byte(),
            };
            let mut f = f.tcp(rng.u16(), dport).tcp_flags(flags);
            if let Transport::Tcp(t) = f.transport_mut() {
                if rng.one_in(8) {
                    t.data_offset = Some(rng.byte() & 0x0f);
                }
                if rng.one_in(6) {
                    t.options = rng.blob(40);
                }
            }
            f
        }
        2 | 3 => f.udp(rng.u16(), dport),
        4 => f.ip_protocol(rng.byte()),
        _ => f,
    };
    if rng.one_in(12) {
        // A tiny first fragment: the first bytes of a TCP or UDP header (the ports, maybe
        // not the flags), the rest left to a later fragment.
        f = tiny_first_fragment(rng, f, dport);
    } else if rng.one_in(2) {
        f = f.payload(&rng.blob(200));
    }
    if v6 {
        let n = match rng.below(9) {
            0..=3 => 0,
            4 | 5 => rng.range(1, 3),
            6 => rng.range(3, 7),
            7 => rng.range(7, 10),
            // Long chains, as a filter-dodger would send them.
            _ => rng.range(10, 15),
        };
        for _ in 0..n {
            f = f.ext(random_ext(rng));
        }
        if rng.one_in(16) {
            // One header long enough to push the L4 header past the deepest read.
            let ext = if rng.one_in(2) {
                Ext::DestOpts(rng.blob(800))
            } else {
                Ext::HopByHop(rng.blob(800))
            };
            f = f.ext(ext);
        }
        let h = f.ipv6_mut();
        if rng.one_in(16) {
            h.version = rng.byte() & 0x0f;
        }
        if rng.one_in(12) {
            let any = rng.byte();
            h.next_header = Some(*rng.pick(&[
                ip_proto::HOPOPTS,
                ip_proto::ROUTING,
                ip_proto::FRAGMENT,
                ip_proto::AH,
                ip_proto::DSTOPTS,
                ip_proto::TCP,
                ip_proto::UDP,
                any,
            ]));
        }
        if rng.one_in(12) {
            h.payload_len = Some(rng.u16());
        }
        h.traffic_class = rng.byte();
        h.flow_label = rng.next() as u32;
    } else {
        let h = f.ipv4_mut();
        if rng.one_in(6) {
            // Up to 44 bytes: more than 40 make an IHL that wraps.
            h.options = rng.blob(44);
        }
        if rng.one_in(10) {
            h.ihl = Some(rng.byte() & 0x0f);
        }
        if rng.one_in(16) {
            h.version = rng.byte() & 0x0f;
        }
        if rng.one_in(5) {
            h.fragment_offset = if rng.one_in(2) { 0 } else { rng.u16() & 0x1fff };
            h.more_fragments = rng.one_in(2);
        }
        h.dont_fragment = rng.one_in(2);
        if rng.one_in(12) {
            h.total_len = Some(rng.u16());
        }
        if rng.one_in(12) {
            h.checksum = Some(rng.u16());
        }
        if rng.one_in(12) {
            h.protocol = Some(rng.byte());
        }
        h.id = rng.u16();
        h.tos = rng.byte();
        h.ttl = rng.byte();
    }
    f
}

/// `f` as the first fragment of a TCP SYN or a UDP datagram to `dport`, cut inside the
/// L4 header.
fn tiny_first_fragment(rng: &mut Rng, f: Frame, dport: u16) -> Frame {
    let (protocol, whole) = if rng.one_in(2) {
        let syn = f.clone().tcp(rng.u16(), dport).tcp_flags(tcp_flags::SYN);
        (ip_proto::TCP, syn)
    } else {
        (ip_proto::UDP, f.clone().udp(rng.u16(), dport))
    };
    let layout = whole.layout();
    let bytes = whole.build();
    let hlen = if protocol == ip_proto::TCP { 20 } else { 8 };
    let start = layout.l4.expect("the builder lays out a TCP or UDP header");
    let cut = rng.range(1, hlen);
    f.ip_protocol(protocol)
        .payload(&bytes[start..start + cut])
        .fragment(0, true)
}

/// Flip, cut, insert or delete bytes; the result keeps at least 14 bytes.
fn mutate(rng: &mut Rng, frame: &mut Vec<u8>) {
    // Most interesting bytes are near the start: bias positions there.
    let pos = |rng: &mut Rng, len: usize| {
        if rng.one_in(4) || len <= 80 {
            rng.below(len.max(1))
        } else {
            rng.below(80)
        }
    };
    for _ in 0..rng.range(1, 4) {
        match rng.below(8) {
            0..=3 => {
                if !frame.is_empty() {
                    let i = pos(rng, frame.len());
                    frame[i] = if rng.one_in(2) {
                        frame[i] ^ (1 << rng.below(8))
                    } else {
                        rng.byte()
                    };
                }
            }
            4 | 5 => {
                let cut = rng.range(14, frame.len().max(14));
                frame.truncate(cut);
            }
            6 => {
                let i = pos(rng, frame.len() + 1).min(frame.len());
                let n = rng.range(1, 8);
                let ins = rng.bytes(n);
                frame.splice(i..i, ins);
            }
            _ => {
                if !frame.is_empty() {
                    let i = pos(rng, frame.len());
                    let end = (i + rng.range(1, 8)).min(frame.len());
                    frame.drain(i..end);
                }
            }
        }
    }
    while frame.len() < 14 {
        frame.push(rng.byte());
    }
    frame.truncate(MAX_FRAME + 64);
}

/// Random bytes; half the time with an ethertype (and version nibble) that leads the parser
/// somewhere, so random headers get parsed too.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let len = if rng.one_in(2) {
        rng.range(14, 128)
    } else {
        rng.range(14, MAX_FRAME)
    };
    let mut f = rng.bytes(len);
    if rng.one_in(2) {
        let et = *rng.pick(&[
            ethertype::IPV4,
            ethertype::IPV6,
            ethertype::VLAN,
            ethertype::QINQ,
        ]);
        f[12..14].copy_from_slice(&et.to_be_bytes());
        if f.len() > 14 && rng.one_in(2) {
            f[14] = match et {
                ethertype::IPV4 => 0x40 | (f[14] & 0x0f),
                ethertype::IPV6 => 0x60 | (f[14] & 0x0f),
                _ => f[14],
            };
        }
    }
    f
}

fn next_frame(rng: &mut Rng, sources: &Sources, buf: &mut Vec<u8>) -> Kind {
    buf.clear();
    match rng.below(20) {
        0..=7 => {
            structured(rng, sources).write_to(buf);
            Kind::Structured
        }
        8..=14 => {
            structured(rng, sources).write_to(buf);
            mutate(rng, buf);
            Kind::Mutated
        }
        _ => {
            buf.extend_from_slice(&random_frame(rng));
            Kind::Random
        }
    }
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.with_context(|| format!("{name}={v} is not a number"))
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

/// A frame that disagreed, with everything needed to reproduce it.
fn report(
    seed: u64,
    index: u64,
    kind: Kind,
    frame: &[u8],
    verdict: Verdict,
    what: &str,
) -> anyhow::Error {
    let parsed = match reference::parse(frame) {
        Parsed::Source(k) => format!("source {}", Ipv6Addr::from(k)),
        other => format!("{other:?}"),
    };
    anyhow::anyhow!(
        "frame #{index} ({kind:?}, {} bytes) of seed {seed:#x}: {what}\n  reference: {verdict:?} ({parsed})\n  reproduce with TRAFFIC_FUZZ_SEED={seed:#x} TRAFFIC_FUZZ_FRAMES={}\n{}",
        frame.len(),
        index + 1,
        hex_dump(frame)
    )
}

/// How closely the program is held to the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Limits out of the way, no port rules: the action and counter slot of every frame.
    Exact,
    /// Port gates, limits and fault injection in the way: never XDP_ABORTED, exactly one
    /// counter per frame, and the verdicts decided before ports and limits (non-IP,
    /// malformed, allow, deny) still exactly the reference's.
    Early,
}

/// Reasons decided before port rules and limits: from the source alone, or (port_unknown)
/// from the source and whether the port can be read.
const EARLY_REASONS: [Reason; 5] = [
    Reason::NonIp,
    Reason::Malformed,
    Reason::Allow,
    Reason::Deny,
    Reason::PortUnknown,
];
/// Reasons whose drops may be answered with a RST (XDP_TX).
const RESET_REASONS: [Reason; 3] = [Reason::GateReset, Reason::Bulkhead, Reason::Chaos];

fn reason_of_slot(slot: usize) -> Option<Reason> {
    let r = slot as u32 % REASON_SLOTS;
    if r >= MONITOR_OFFSET {
        return None;
    }
    Reason::from_u32(r)
}

fn is_early_slot(slot: usize) -> bool {
    reason_of_slot(slot).is_some_and(|r| EARLY_REASONS.contains(&r))
}

/// What a run saw.
#[derive(Default)]
struct Tally {
    frames: u64,
    verdicts: BTreeMap<Verdict, u64>,
    kinds: BTreeMap<Kind, u64>,
    actions: BTreeMap<u32, u64>,
    rule_hits: Vec<u64>,
    seconds: f64,
}

impl Tally {
    fn print(&self, name: &str, rules: &RuleSet) {
        println!(
            "{name}: {} frames in {:.2} s, {:.0} frames/s (generation, reference and test run)",
            self.frames,
            self.seconds,
            self.frames as f64 / self.seconds
        );
        println!("{name}: frames by kind {:?}", self.kinds);
        let actions: Vec<String> = self
            .actions
            .iter()
            .map(|(a, n)| format!("{} {n}", action_name(*a)))
            .collect();
        println!("{name}: actions {}", actions.join(", "));
        for (v, n) in &self.verdicts {
            println!("{name}:   reference {v:?}: {n}");
        }
        for (r, n) in rules.rules.iter().zip(&self.rule_hits) {
            println!(
                "{name}:   rule {}/{} {:?} {:?}: {n}",
                r.net, r.prefix_len, r.action, r.class
            );
        }
    }

    /// The run reached every verdict and every rule, or it proves little.
    fn assert_coverage(&self, rules: &RuleSet) {
        if self.frames < 50_000 {
            return;
        }
        let default_row = rules.default_class;
        let category = |v: &Verdict| match v {
            Verdict::NonIp => "non-IP",
            Verdict::Malformed => "malformed",
            Verdict::Allow(Some(_)) => "allow with a class",
            Verdict::Allow(None) => "allow without a class",
            Verdict::Deny(Some(_)) => "deny with a class",
            Verdict::Deny(None) => "deny without a class",
            Verdict::Pass(c) if *c == default_row => "default class",
            Verdict::Pass(_) => "limit rule",
            Verdict::PortUnknown(_) => "port unknown",
        };
        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        for (v, n) in &self.verdicts {
            *seen.entry(category(v)).or_default() += n;
        }
        for name in [
            "non-IP",
            "malformed",
            "allow with a class",
            "allow without a class",
            "deny with a class",
            "deny without a class",
            "default class",
            "limit rule",
        ] {
            let n = seen.get(name).copied().unwrap_or(0);
            assert!(n >= 100, "only {n} frames reached verdict `{name}`");
        }
        for (r, n) in rules.rules.iter().zip(&self.rule_hits) {
            assert!(
                *n >= 10,
                "rule {}/{} matched only {n} frames",
                r.net,
                r.prefix_len
            );
        }
    }
}

/// Run `frames` generated frames from `seed` through the program and the reference.
fn fuzz(lab: &Lab, rules: &RuleSet, seed: u64, frames: u64, check: Check) -> Result<Tally> {
    let sources = Sources::new(&lab.config().rules);
    let mut rng = Rng(seed);
    let mut tally = Tally {
        rule_hits: vec![0; rules.rules.len()],
        ..Tally::default()
    };
    let mut batch: Vec<(Vec<u8>, Kind, Verdict)> = Vec::with_capacity(BATCH);
    let mut buf = Vec::with_capacity(2048);
    let mut want = vec![Counter::default(); COUNTERS_ENTRIES as usize];
    let started = Instant::now();
    while tally.frames < frames {
        let first = tally.frames;
        let n = (frames - first).min(BATCH as u64) as usize;
        batch.clear();
        want.iter_mut().for_each(|c| *c = Counter::default());
        let mut tx = 0u64;
        let before = lab.kernel.counters()?;
        for i in 0..n as u64 {
            let kind = next_frame(&mut rng, &sources, &mut buf);
            let verdict = rules.classify(&buf);
            let action = lab.action_of(&buf)?;
            let exact = check == Check::Exact || !matches!(verdict, Verdict::Pass(_));
            let (slot, want_action) = expected(verdict);
            let wrong = if action == XDP_ABORTED {
                Some("the program returned XDP_ABORTED".to_owned())
            } else if exact && action != want_action {
                Some(format!(
                    "the program returned {}, the reference wants {}",
                    action_name(action),
                    action_name(want_action)
                ))
            } else if ![XDP_PASS, XDP_DROP, XDP_TX].contains(&action) {
                Some(format!("the program returned {}", action_name(action)))
            } else {
                None
            };
            if let Some(what) = wrong {
                return Err(report(seed, first + i, kind, &buf, verdict, &what));
            }
            if exact {
                want[slot].packets += 1;
                want[slot].bytes += buf.len() as u64;
            }
            tx += u64::from(action == XDP_TX);
            *tally.actions.entry(action).or_default() += 1;
            *tally.verdicts.entry(verdict).or_default() += 1;
            *tally.kinds.entry(kind).or_default() += 1;
            if let Parsed::Source(k) = reference::parse(&buf)
                && let Some((r, _)) = rules.lookup(&k)
            {
                tally.rule_hits[r] += 1;
            }
            batch.push((buf.clone(), kind, verdict));
        }
        let after = lab.kernel.counters()?;
        let got = moved(&before, &after)?;
        let counted: u64 = got.iter().map(|(_, c)| c.packets).sum();
        let compared: Vec<(usize, Counter)> = got
            .iter()
            .filter(|(i, _)| check == Check::Exact || is_early_slot(*i))
            .copied()
            .collect();
        let wanted: Vec<(usize, Counter)> = want
            .iter()
            .enumerate()
            .filter(|(_, c)| c.packets != 0)
            .map(|(i, c)| (i, *c))
            .collect();
        let resets: u64 = got
            .iter()
            .filter(|(i, _)| reason_of_slot(*i).is_some_and(|r| RESET_REASONS.contains(&r)))
            .map(|(_, c)| c.packets)
            .sum();
        ensure!(
            tx <= resets,
            "batch at frame #{first} (seed {seed:#x}): {tx} frames answered with XDP_TX but only {resets} counted as refusals that may send a RST"
        );
        if compared != wanted || counted != n as u64 {
            // Find the first frame of the batch that moves the wrong counter.
            for (i, (frame, kind, verdict)) in batch.iter().enumerate() {
                let (_, moved) = lab.run(frame)?;
                let (slot, _) = expected(*verdict);
                let one = Counter {
                    packets: 1,
                    bytes: frame.len() as u64,
                };
                let right = match (check, verdict) {
                    (Check::Early, Verdict::Pass(_)) => {
                        moved.len() == 1 && moved[0].1 == one && !is_early_slot(moved[0].0)
                    }
                    _ => moved == [(slot, one)],
                };
                if !right {
                    let moved: Vec<String> = moved
                        .iter()
                        .map(|(s, c)| format!("{} +{}p/+{}B", describe(*s), c.packets, c.bytes))
                        .collect();
                    return Err(report(
                        seed,
                        first + i as u64,
                        *kind,
                        frame,
                        *verdict,
                        &format!(
                            "counters moved [{}], the reference wants {}",
                            moved.join(", "),
                            describe(slot)
                        ),
                    ));
                }
            }
            bail!(
                "batch at frame #{first} (seed {seed:#x}) moved the counters differently from the reference ({counted} packets counted for {n} frames), but no single frame does when re-run"
            );
        }
        tally.frames += n as u64;
    }
    tally.seconds = started.elapsed().as_secs_f64();
    Ok(tally)
}

pub fn hostile_frames_match_the_reference_classifier() -> Result<()> {
    let seed = env_u64("TRAFFIC_FUZZ_SEED", DEFAULT_SEED)?;
    let frames = env_u64("TRAFFIC_FUZZ_FRAMES", DEFAULT_FRAMES)?;
    let lab = Lab::configured("fuzz", &format!("{HEAD}{CLASSES}{RULES}"))?;
    for (i, c) in lab.config().classes.iter().enumerate() {
        assert!(
            !c.is_limited(),
            "class {} has limits: the fuzz run needs them out of the way",
            c.name
        );
        println!("class {} = row {}", c.name, lab.slot(i));
    }
    let rules = lab.reference()?;
    println!("fuzz: seed {seed:#x}, {frames} frames, batches of {BATCH}");
    let tally = fuzz(&lab, &rules, seed, frames, Check::Exact)?;
    tally.print("fuzz", &rules);
    assert!(
        lab.kernel.buckets()?.is_empty(),
        "no source may be tracked when no class has limits"
    );
    tally.assert_coverage(&rules);
    Ok(())
}

/// Classes with limits of every kind, for the run with everything in the way.
const LIMITED_CLASSES: &str = r#"
[classes.default]
packets = { rate = 1, burst = 50 }
[classes.web]
packets = [{ rate = 1, burst = 20 }, { rate = 10, per = "1h", burst = 100 }]
bytes = { rate = "1KB", burst = 1514 }
admission = { rate = 5, per = "1m", burst = 20 }
overflow = { rate = 1, burst = 10 }
[classes.bulk]
packets = { rate = 1, burst = 3 }
aggregate_v4 = 24
aggregate_v6 = 48
admission = { rate = 1, per = "1m", burst = 5 }
[classes.internal]
[classes.quarantine]
"#;

pub fn hostile_frames_through_gates_limits_and_resets_never_abort() -> Result<()> {
    let seed = env_u64("TRAFFIC_FUZZ_SEED", DEFAULT_SEED)?;
    let frames = env_u64("TRAFFIC_FUZZ_FRAMES", DEFAULT_FRAMES)? / 4;
    let now = traffic_daemon::dataplane::monotonic_ns();
    // Fault injection on for the whole run: a quarter of new connections reset, an eighth
    // of packets dropped.
    let chaos = Chaos {
        drop_ratio: u32::MAX / 8,
        reset_ratio: u32::MAX / 4,
        until_ns: now + 3_600_000_000_000,
    };
    let lab = Lab::build(
        "fuzz-gates",
        SOURCES,
        &format!("{HEAD}{LIMITED_CLASSES}{RULES}"),
        |d, slots| {
            let web = slots.slot_of("web").expect("class web");
            // 5 per second (half-open trials), 1 per second (new connections per source).
            let trials = Limit {
                interval: 1_000_000_000,
                tolerance: 5_000_000_000,
            };
            let one_per_second = Limit {
                interval: 1_000_000_000,
                tolerance: 1_000_000_000,
            };
            let tcp = ip_proto::TCP;
            let ports = BTreeMap::from([
                // Open, answering new connections with RST (XDP_TX).
                (
                    (GATED_PORTS[0], tcp),
                    PortRule {
                        flags: PORT_GATE_RESET,
                        gate: Gate::Open as u32,
                        slot: 0,
                        ..PortRule::default()
                    },
                ),
                // Half-open with a trial budget, class override.
                (
                    (GATED_PORTS[1], tcp),
                    PortRule {
                        flags: PORT_GATE_RESET | PORT_CLASS_OVERRIDE,
                        class: web,
                        gate: Gate::HalfOpen as u32,
                        slot: 1,
                        half_open: trials,
                        ..PortRule::default()
                    },
                ),
                // Bulkhead full, shedding with RST.
                (
                    (GATED_PORTS[2], tcp),
                    PortRule {
                        flags: PORT_SHED | PORT_GATE_RESET,
                        gate: Gate::Closed as u32,
                        slot: 2,
                        ..PortRule::default()
                    },
                ),
                // Open UDP port: silent drops.
                (
                    (GATED_PORTS[3], ip_proto::UDP),
                    PortRule {
                        gate: Gate::Open as u32,
                        slot: 3,
                        ..PortRule::default()
                    },
                ),
                // Per-source new-connection limit and fault injection.
                (
                    (GATED_PORTS[4], tcp),
                    PortRule {
                        gate: Gate::Closed as u32,
                        slot: 4,
                        syn_limit: one_per_second,
                        chaos,
                        ..PortRule::default()
                    },
                ),
                // A class override naming an inactive slot (falls back to the default).
                (
                    (GATED_PORTS[5], tcp),
                    PortRule {
                        flags: PORT_CLASS_OVERRIDE,
                        class: 15,
                        gate: Gate::Closed as u32,
                        slot: 5,
                        ..PortRule::default()
                    },
                ),
            ]);
            let mut d = d.with_ports(ports);
            d.classes[web as usize].chaos = chaos;
            d
        },
    )?;
    // Port rules for both protocols: frames whose port cannot be read are port_unknown.
    let rules = lab.reference()?.with_port_rules(PortRules {
        tcp: true,
        udp: true,
    });
    println!("fuzz-gates: seed {seed:#x}, {frames} frames, batches of {BATCH}");
    let tally = fuzz(&lab, &rules, seed, frames, Check::Early)?;
    tally.print("fuzz-gates", &rules);
    let counters = lab.kernel.counters()?;
    let mut unreached = Vec::new();
    for r in [
        Reason::Gate,
        Reason::GateReset,
        Reason::Bulkhead,
        Reason::Chaos,
        Reason::PortRate,
        Reason::PortUnknown,
        Reason::PacketRate,
        Reason::ByteRate,
        Reason::Overflow,
    ] {
        let n: u64 = (0..=UNCLASSIFIED)
            .map(|row| counters[counter_index(row, r as u32, false) as usize].packets)
            .sum();
        println!("fuzz-gates:   kernel {}: {n}", r.name());
        if n == 0 {
            unreached.push(r.name());
        }
    }
    // The run must reach every refusal and the RST path, or it proves little.
    if frames >= 50_000 {
        assert!(unreached.is_empty(), "no frame reached {unreached:?}");
        assert!(
            tally.actions.get(&XDP_TX).copied().unwrap_or(0) >= 10,
            "the run must reach the RST path (XDP_TX)"
        );
    }
    replies_without_attempts(&lab, seed, frames / 8)
}

/// Replies leaving the gated ports (RSTs, FINs, ACKs, SYN-ACKs with any flags and numbers,
/// ICMP port unreachables), none answering an attempt the XDP program saw: the TC egress
/// program passes every one and counts none as a refusal (issue 17).
fn replies_without_attempts(lab: &Lab, seed: u64, frames: u64) -> Result<()> {
    let sources = Sources::new(&lab.config().rules);
    let mut rng = Rng(seed ^ 0x6567_7265_7373);
    let before = lab.kernel.egress_stats()?;
    for i in 0..frames {
        let client = sources.pick(&mut rng);
        let node = match client {
            IpAddr::V4(_) => IpAddr::V4(NODE4),
            IpAddr::V6(_) => IpAddr::V6(NODE6),
        };
        let port = *rng.pick(&GATED_PORTS);
        let frame = if rng.one_in(4) {
            // An unreachable quoting a datagram that never arrived.
            let quoted = Frame::ip(client, node).udp(rng.u16(), port).build()[14..].to_vec();
            let (protocol, kind, code) = if client.is_ipv4() {
                (1, 3, 3)
            } else {
                (ip_proto::ICMPV6, 1, 4)
            };
            let mut icmp = vec![kind, code, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(&quoted);
            Frame::ip(node, client)
                .ip_protocol(protocol)
                .payload(&icmp)
                .build()
        } else {
            let any = rng.byte();
            let flags = *rng.pick(&[
                tcp_flags::RST,
                tcp_flags::RST | tcp_flags::ACK,
                tcp_flags::FIN | tcp_flags::ACK,
                tcp_flags::ACK,
                tcp_flags::SYN | tcp_flags::ACK,
                any,
            ]);
            let mut f = Frame::ip(node, client)
                .tcp(port, rng.u16())
                .tcp_flags(flags);
            if let Transport::Tcp(t) = f.transport_mut() {
                t.seq = rng.next() as u32;
                t.ack = rng.next() as u32;
            }
            f.build()
        };
        let code = lab.kernel.test_run_egress(&frame)?;
        ensure!(
            code == 0,
            "egress frame {i} got {code}, want TC_ACT_OK:\n{}",
            hex_dump(&frame)
        );
    }
    let after = lab.kernel.egress_stats()?;
    let sum = |v: &[traffic_common::EgressStats], f: fn(&traffic_common::EgressStats) -> u64| {
        v.iter().map(f).sum::<u64>()
    };
    let refusals = sum(&after, |e| e.resets + e.unreachables + e.repeated)
        - sum(&before, |e| e.resets + e.unreachables + e.repeated);
    let unverified = sum(&after, |e| e.unverified) - sum(&before, |e| e.unverified);
    println!(
        "fuzz-gates: {frames} replies at TC egress: {unverified} unverified, {refusals} refusals"
    );
    ensure!(
        refusals == 0,
        "{refusals} replies to no attempt counted as refusals"
    );
    ensure!(
        frames < 100 || unverified > 0,
        "no reply reached the refusal check"
    );
    Ok(())
}
