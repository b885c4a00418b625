//! Program tests: the XDP program run with BPF_PROG_TEST_RUN on crafted frames.
//!
//! Every case is a frame, the XDP action it must get, and the one counter slot
//! (row, reason, monitored) that must move by exactly one packet and the frame's bytes —
//! every other slot must stay put. XDP_ABORTED is never acceptable.
//!
//! Privileged (root, bpffs, the real eBPF object) and stateful: each test loads its own copy
//! of the program with its maps pinned in its own directory under /sys/fs/bpf, removed by a
//! guard even when the test panics. Run one at a time through `cargo xtask test`, or:
//!
//! ```text
//! cargo test -p traffic-daemon --test privileged -- program::
//! ```
//!
//! Limits use a rate of 1/s so no token refills while a test runs: the outcomes do not
//! depend on timing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::support::bpf::{Lab, NODE4, NODE6, Slot, XDP_DROP, XDP_PASS, verdict_problems};
use anyhow::{Result, bail};
use traffic_common::{GLOBAL_MONITOR, Reason, UNCLASSIFIED, v4_mapped};
use traffic_daemon::dataplane::Dataplane as _;
use traffic_testkit::packet::{Ext, Frame, ethertype, ip_proto, tcp_flags};

mod clock;
mod credit;
mod leaf;
pub use clock::the_clock_copy_follows_the_kernel_clock_and_a_lie_lasts_a_jiffy;
pub use credit::a_heavy_source_on_credit_passes_its_burst_exactly_and_unspent_credit_is_refunded;
pub use leaf::the_last_leaf_rule_never_hides_a_nested_rule;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

impl Lab {
    /// Run a case; a description of what went wrong, if anything.
    fn check(&self, case: &Case) -> Result<Option<String>> {
        let (action, moved) = self.run(&case.frame)?;
        let wrong = verdict_problems(case.frame.len(), action, &moved, case.action, case.slot);
        Ok((!wrong.is_empty()).then(|| format!("{}: {}", case.name, wrong.join("; "))))
    }

    /// Run every case (in order, on shared state) and report all that went wrong.
    fn table(&self, cases: &[Case]) -> Result<()> {
        let mut problems = Vec::new();
        for case in cases {
            if let Some(p) = self.check(case)? {
                problems.push(p);
            }
        }
        if !problems.is_empty() {
            bail!(
                "{} of {} cases failed:\n  {}",
                problems.len(),
                cases.len(),
                problems.join("\n  ")
            );
        }
        Ok(())
    }
}

/// One row of a table: a frame, the action it must get and the one counter it must move.
struct Case {
    name: String,
    frame: Vec<u8>,
    action: u32,
    slot: Slot,
}

fn case(name: &str, frame: impl Into<Vec<u8>>, action: u32, slot: Slot) -> Case {
    Case {
        name: name.to_owned(),
        frame: frame.into(),
        action,
        slot,
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or_else(|_| panic!("bad IPv6 literal {s}"))
}

/// A UDP packet from `src` to the node.
fn udp_from(src: IpAddr) -> Frame {
    let dst = match src {
        IpAddr::V4(_) => IpAddr::V4(NODE4),
        IpAddr::V6(_) => IpAddr::V6(NODE6),
    };
    Frame::ip(src, dst).udp(40000, 53).payload(b"query")
}

/// The source key of an IPv6 address (as the program keys buckets and rules).
fn key6(s: &str) -> [u8; 16] {
    v6(s).octets()
}

// ---------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------

/// One generously limited default class: every parse case lands in it without running out.
const PARSE_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]

[classes.default]
packets = { rate = 1, burst = 1000 }
"#;

/// Allow, deny (with and without a class), limited and default classes, both families.
const VERDICT_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]

[classes.internal]

[classes.limited]
packets = { rate = 1, burst = 5 }

[classes.default]
packets = { rate = 1, burst = 1000 }

[[rules]]
cidr = "198.18.0.0/24"
action = "allow"
class = "internal"

[[rules]]
cidr = "2001:db8::/48"
action = "allow"
class = "internal"

[[rules]]
cidr = "198.18.66.0/24"
action = "deny"

[[rules]]
cidr = "2001:db8:66::/48"
action = "deny"

[[rules]]
cidr = "198.18.67.0/24"
action = "deny"
class = "default"

[[rules]]
cidr = "198.18.1.0/24"
class = "limited"

[[rules]]
cidr = "198.18.1.128/25"
action = "allow"
class = "internal"

[[rules]]
cidr = "2001:db8:1::/48"
class = "limited"
"#;

/// A class with a burst of 5 packets and no refill within a test.
const LIMITED_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]

[classes.limited]
packets = { rate = 1, burst = 5 }

[classes.default]

[[rules]]
cidr = "198.18.1.0/24"
class = "limited"

[[rules]]
cidr = "2001:db8:1::/48"
class = "limited"
"#;

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

pub fn parse_cases() -> Result<()> {
    let lab = Lab::configured("parse", PARSE_CONFIG)?;
    let pass = Slot::new(lab.class("default"), Reason::Pass);
    let malformed = Slot::new(UNCLASSIFIED, Reason::Malformed);
    let non_ip = Slot::new(UNCLASSIFIED, Reason::NonIp);
    let (s4, s6) = (v4(198, 18, 9, 1), v6("2001:db8:9::1"));
    let ip4 = || Frame::ipv4(s4, NODE4);
    let ip6 = || Frame::ipv6(s6, NODE6);
    let with_trailer = {
        let mut b = ip4().udp(1, 2).build();
        b.extend_from_slice(&[0; 18]);
        b
    };
    let long_total_len = {
        let mut f = ip4().udp(1, 2);
        f.ipv4_mut().total_len = Some(1500);
        f.build()
    };
    let chain6 = ip6()
        .ext(Ext::HopByHop(vec![]))
        .ext(Ext::routing())
        .ext(Ext::DestOpts(vec![0x1e, 2, 0, 0]))
        .ext(Ext::fragment(0, true))
        .ext(Ext::ah())
        .tcp(40000, 443)
        .tcp_flags(tcp_flags::SYN);
    let too_long_chain6 = (0..7)
        .fold(ip6(), |f, _| f.ext(Ext::DestOpts(vec![])))
        .udp(1, 2);

    let cases = [
        // Ethernet only (the kernel's test run rejects anything shorter than 14 bytes).
        case(
            "14 bytes, ethertype IPv4",
            ip4().truncate(14).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "14 bytes, ethertype IPv6",
            ip6().truncate(14).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "14 bytes, unknown ethertype",
            Frame::raw(0x88b5, &[]).build(),
            XDP_PASS,
            non_ip,
        ),
        case(
            "LLDP",
            Frame::raw(ethertype::LLDP, &[0; 46]).build(),
            XDP_PASS,
            non_ip,
        ),
        case(
            "ARP request",
            Frame::arp_request(s4, NODE4).build(),
            XDP_PASS,
            non_ip,
        ),
        case(
            "ARP padded to 60 bytes",
            Frame::arp_request(s4, NODE4).pad_to(60).build(),
            XDP_PASS,
            non_ip,
        ),
        // VLAN tags.
        case(
            "802.1Q tag missing (14 bytes)",
            ip4().vlan(10).truncate(14).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "802.1Q tag cut in the TCI",
            ip4().vlan(10).truncate(16).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "802.1Q tag cut in the inner ethertype",
            ip4().vlan(10).truncate(17).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "802.1Q, IPv4 ethertype, no IP header",
            ip4().vlan(10).truncate(18).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "QinQ inner tag cut",
            ip4().qinq(100, 10).truncate(20).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "802.1Q + IPv4/UDP",
            ip4().vlan(10).udp(1, 53).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "802.1Q + ARP",
            Frame::arp_request(s4, NODE4).vlan(10).build(),
            XDP_PASS,
            non_ip,
        ),
        case(
            "QinQ 0x88A8+0x8100 + IPv4/TCP",
            ip4().qinq(100, 10).tcp(1, 80).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "QinQ 0x88A8+0x8100 + IPv6/UDP",
            ip6().qinq(100, 10).udp(1, 53).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "two 802.1Q tags + IPv4",
            ip4().vlan(10).vlan(20).udp(1, 53).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "three tags (only two are walked) + IPv4",
            ip4().qinq(100, 10).vlan(20).udp(1, 53).build(),
            XDP_PASS,
            non_ip,
        ),
        // IPv4 header.
        case(
            "IPv4 header cut (19 of 20 bytes)",
            ip4().truncate(33).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "IPv4 IHL 4",
            ip4().ihl(4).udp(1, 2).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "IPv4 IHL 0",
            ip4().ihl(0).udp(1, 2).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "IPv4 version 6 under ethertype IPv4",
            ip4().ip_version(6).udp(1, 2).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "IPv4 version 0",
            ip4().ip_version(0).udp(1, 2).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "IPv4 IHL 6 with options + TCP",
            ip4().ipv4_options(&[0x94, 0x04, 0, 0]).tcp(1, 80).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 IHL 15 (40 bytes of options) + UDP",
            ip4().ipv4_options(&[1; 40]).udp(1, 53).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 options cut (2 of 4 bytes)",
            ip4().ipv4_options(&[1; 4]).truncate(14 + 22).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "IPv4 IHL 15 longer than the frame",
            ip4().ihl(15).udp(1, 2).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "IPv4 with trailing Ethernet padding",
            with_trailer,
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 total length beyond the frame",
            long_total_len,
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 other protocol (ICMP)",
            ip4().ip_protocol(1).payload(&[8, 0, 0, 0]).build(),
            XDP_PASS,
            pass,
        ),
        // IPv4 fragments and L4.
        case(
            "IPv4 first fragment + UDP",
            ip4().fragment(0, true).udp(1, 53).payload(&[0; 16]).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 non-first fragment",
            ip4().fragment(185, true).payload(&[0; 64]).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 last fragment",
            ip4()
                .fragment(370, false)
                .ip_protocol(ip_proto::TCP)
                .payload(&[0; 8])
                .build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 TCP header cut (10 of 20)",
            ip4().tcp(1, 80).truncate(14 + 20 + 10).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 UDP header cut (4 of 8)",
            ip4().udp(1, 53).truncate(14 + 20 + 4).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 TCP, no L4 bytes at all",
            ip4().tcp(1, 80).truncate(14 + 20).build(),
            XDP_PASS,
            pass,
        ),
        // IPv6 header.
        case(
            "IPv6 header cut (39 of 40 bytes)",
            ip6().truncate(14 + 39).build(),
            XDP_DROP,
            malformed,
        ),
        case(
            "IPv6 version 4 under ethertype IPv6",
            ip6().ip_version(4).udp(1, 2).build(),
            XDP_DROP,
            malformed,
        ),
        case("IPv6/TCP", ip6().tcp(1, 80).build(), XDP_PASS, pass),
        case("IPv6/UDP", ip6().udp(1, 53).build(), XDP_PASS, pass),
        case("IPv6 no next header", ip6().build(), XDP_PASS, pass),
        case(
            "IPv6 ICMPv6",
            ip6()
                .ip_protocol(ip_proto::ICMPV6)
                .payload(&[128, 0, 0, 0])
                .build(),
            XDP_PASS,
            pass,
        ),
        // IPv6 extension headers.
        case(
            "IPv6 hop-by-hop, routing, dest-opts, first fragment, AH + TCP",
            chain6.build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6 first fragment + UDP",
            ip6().fragment(0, true).udp(1, 53).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6 non-first fragment",
            ip6().fragment(185, true).payload(&[0; 64]).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6 hop-by-hop + non-first fragment",
            ip6()
                .ext(Ext::HopByHop(vec![]))
                .fragment(3, false)
                .payload(&[0; 24])
                .build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6 7 extension headers (over the walk limit)",
            too_long_chain6.build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6 extension header cut",
            ip6()
                .ext(Ext::HopByHop(vec![0x1e; 14]))
                .udp(1, 2)
                .truncate(14 + 40 + 1)
                .build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6 extension header beyond the frame",
            ip6()
                .ext(Ext::routing())
                .udp(1, 2)
                .truncate(14 + 40 + 4)
                .build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6 TCP header cut (12 of 20)",
            ip6().tcp(1, 80).truncate(14 + 40 + 12).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6 UDP header cut (6 of 8)",
            ip6().udp(1, 53).truncate(14 + 40 + 6).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6 TCP after a fragment header, cut",
            ip6()
                .fragment(0, true)
                .tcp(1, 80)
                .truncate(14 + 40 + 8 + 4)
                .build(),
            XDP_PASS,
            pass,
        ),
    ];
    lab.table(&cases)
}

// ---------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------

pub fn verdicts_by_source() -> Result<()> {
    let lab = Lab::configured("verdicts", VERDICT_CONFIG)?;
    let (internal, limited, default) = (
        lab.class("internal"),
        lab.class("limited"),
        lab.class("default"),
    );
    let cases = [
        case(
            "allowed IPv4",
            udp_from(v4(198, 18, 0, 1).into()).build(),
            XDP_PASS,
            Slot::new(internal, Reason::Allow),
        ),
        case(
            "allowed IPv6",
            udp_from(v6("2001:db8::1").into()).build(),
            XDP_PASS,
            Slot::new(internal, Reason::Allow),
        ),
        case(
            "IPv6 posing as an allowed IPv4 source (v4-mapped)",
            udp_from(v6("::ffff:198.18.0.1").into()).build(),
            XDP_DROP,
            Slot::new(UNCLASSIFIED, Reason::Malformed),
        ),
        case(
            "denied IPv4",
            udp_from(v4(198, 18, 66, 1).into()).build(),
            XDP_DROP,
            Slot::new(UNCLASSIFIED, Reason::Deny),
        ),
        case(
            "denied IPv6",
            udp_from(v6("2001:db8:66::1").into()).build(),
            XDP_DROP,
            Slot::new(UNCLASSIFIED, Reason::Deny),
        ),
        case(
            "denied IPv4 counted under a class",
            udp_from(v4(198, 18, 67, 1).into()).build(),
            XDP_DROP,
            Slot::new(default, Reason::Deny),
        ),
        case(
            "limited IPv4",
            udp_from(v4(198, 18, 1, 1).into()).build(),
            XDP_PASS,
            Slot::new(limited, Reason::Pass),
        ),
        case(
            "limited IPv6",
            udp_from(v6("2001:db8:1::1").into()).build(),
            XDP_PASS,
            Slot::new(limited, Reason::Pass),
        ),
        case(
            "longest prefix wins: allow /25 inside a limited /24",
            udp_from(v4(198, 18, 1, 200).into()).build(),
            XDP_PASS,
            Slot::new(internal, Reason::Allow),
        ),
        case(
            "unmatched IPv4 → default",
            udp_from(v4(198, 18, 9, 1).into()).build(),
            XDP_PASS,
            Slot::new(default, Reason::Pass),
        ),
        case(
            "unmatched IPv6 → default",
            udp_from(v6("2001:db8:9::1").into()).build(),
            XDP_PASS,
            Slot::new(default, Reason::Pass),
        ),
        case(
            "denied IPv4 behind QinQ",
            udp_from(v4(198, 18, 66, 2).into()).qinq(1, 2).build(),
            XDP_DROP,
            Slot::new(UNCLASSIFIED, Reason::Deny),
        ),
        case(
            "denied IPv6 non-first fragment",
            Frame::ipv6(v6("2001:db8:66::2"), NODE6)
                .fragment(9, false)
                .payload(&[0; 16])
                .build(),
            XDP_DROP,
            Slot::new(UNCLASSIFIED, Reason::Deny),
        ),
        case(
            "allowed IPv4 with a cut TCP header",
            Frame::ipv4(v4(198, 18, 0, 2), NODE4)
                .tcp(1, 22)
                .truncate(14 + 20 + 6)
                .build(),
            XDP_PASS,
            Slot::new(internal, Reason::Allow),
        ),
    ];
    lab.table(&cases)?;
    // Allowed sources bypass every limit, and deny never stops denying.
    for i in 0..20 {
        lab.expect(
            &format!("allowed #{i}"),
            &udp_from(v4(198, 18, 0, 1).into()).build(),
            XDP_PASS,
            Slot::new(internal, Reason::Allow),
        )?;
        lab.expect(
            &format!("denied #{i}"),
            &udp_from(v6("2001:db8:66::1").into()).build(),
            XDP_DROP,
            Slot::new(UNCLASSIFIED, Reason::Deny),
        )?;
    }
    // Neither allow nor deny tracks the source.
    assert!(
        lab.buckets_of(internal)?.is_empty(),
        "allowed sources must not get buckets"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

pub fn burst_then_packet_rate_drops() -> Result<()> {
    let lab = Lab::configured("burst", LIMITED_CONFIG)?;
    let limited = lab.class("limited");
    for src in [
        IpAddr::from(v4(198, 18, 1, 1)),
        IpAddr::from(v6("2001:db8:1::1")),
    ] {
        let frame = udp_from(src).build();
        let (pass, over) = (
            Slot::new(limited, Reason::Pass),
            Slot::new(limited, Reason::PacketRate),
        );
        let cases: Vec<Case> = (1..=8)
            .map(|i| match i {
                1..=5 => case(
                    &format!("{src} #{i} (within the burst)"),
                    frame.as_slice(),
                    XDP_PASS,
                    pass,
                ),
                _ => case(
                    &format!("{src} #{i} (over the burst)"),
                    frame.as_slice(),
                    XDP_DROP,
                    over,
                ),
            })
            .collect();
        lab.table(&cases)?;
    }
    let buckets = lab.buckets_of(limited)?;
    let keys: Vec<[u8; 16]> = buckets.iter().map(|(k, _)| k.addr).collect();
    assert_eq!(
        keys,
        [v4_mapped([198, 18, 1, 1]), key6("2001:db8:1::")],
        "one bucket per source (IPv6 at its /64)"
    );
    for (k, b) in &buckets {
        assert_eq!((b.packets, b.dropped), (8, 3), "bucket {:?}", k.addr);
    }
    Ok(())
}

pub fn second_source_gets_its_own_bucket() -> Result<()> {
    let lab = Lab::configured("second-source", LIMITED_CONFIG)?;
    let limited = lab.class("limited");
    let first = udp_from(v4(198, 18, 1, 1).into()).build();
    let second = udp_from(v4(198, 18, 1, 2).into()).build();
    let (pass, over) = (
        Slot::new(limited, Reason::Pass),
        Slot::new(limited, Reason::PacketRate),
    );
    let mut cases: Vec<Case> = (1..=5)
        .map(|i| {
            case(
                &format!("first source #{i}"),
                first.as_slice(),
                XDP_PASS,
                pass,
            )
        })
        .collect();
    cases.extend([
        case("first source exhausted", first.as_slice(), XDP_DROP, over),
        case("second source, own bucket", second, XDP_PASS, pass),
        case("first source still exhausted", first, XDP_DROP, over),
    ]);
    lab.table(&cases)?;
    let buckets = lab.buckets_of(limited)?;
    let summary: Vec<([u8; 16], u64, u64)> = buckets
        .iter()
        .map(|(k, b)| (k.addr, b.packets, b.dropped))
        .collect();
    assert_eq!(
        summary,
        [
            (v4_mapped([198, 18, 1, 1]), 7, 2),
            (v4_mapped([198, 18, 1, 2]), 1, 0)
        ],
        "two buckets: (address, packets, dropped)"
    );
    Ok(())
}

pub fn non_first_fragments_and_cut_l4_are_limited_by_source() -> Result<()> {
    let lab = Lab::configured("fragments", LIMITED_CONFIG)?;
    let limited = lab.class("limited");
    let (s4, s6) = (v4(198, 18, 1, 7), v6("2001:db8:1::7"));
    // Frames without a usable L4 header all charge their source's bucket.
    let v4_frames = [
        (
            "IPv4 non-first fragment",
            Frame::ipv4(s4, NODE4)
                .fragment(185, true)
                .payload(&[0; 64])
                .build(),
        ),
        (
            "IPv4 last fragment",
            Frame::ipv4(s4, NODE4)
                .fragment(370, false)
                .payload(&[0; 32])
                .build(),
        ),
        (
            "IPv4 cut TCP",
            Frame::ipv4(s4, NODE4)
                .tcp(1, 80)
                .truncate(14 + 20 + 10)
                .build(),
        ),
        (
            "IPv4 cut UDP",
            Frame::ipv4(s4, NODE4)
                .udp(1, 53)
                .truncate(14 + 20 + 4)
                .build(),
        ),
        (
            "IPv4 non-first fragment",
            Frame::ipv4(s4, NODE4)
                .fragment(185, true)
                .payload(&[0; 64])
                .build(),
        ),
    ];
    let v6_frames = [
        (
            "IPv6 non-first fragment",
            Frame::ipv6(s6, NODE6)
                .fragment(185, true)
                .payload(&[0; 64])
                .build(),
        ),
        (
            "IPv6 non-first fragment after hop-by-hop",
            Frame::ipv6(s6, NODE6)
                .ext(Ext::HopByHop(vec![]))
                .fragment(3, false)
                .payload(&[0; 8])
                .build(),
        ),
        (
            "IPv6 cut TCP",
            Frame::ipv6(s6, NODE6)
                .tcp(1, 80)
                .truncate(14 + 40 + 12)
                .build(),
        ),
        (
            "IPv6 cut UDP",
            Frame::ipv6(s6, NODE6)
                .udp(1, 53)
                .truncate(14 + 40 + 6)
                .build(),
        ),
        (
            "IPv6 non-first fragment",
            Frame::ipv6(s6, NODE6)
                .fragment(185, true)
                .payload(&[0; 64])
                .build(),
        ),
    ];
    let (pass, over) = (
        Slot::new(limited, Reason::Pass),
        Slot::new(limited, Reason::PacketRate),
    );
    for frames in [&v4_frames, &v6_frames] {
        // The five fill the source's burst of 5; the same five again are over it.
        let within = frames
            .iter()
            .map(|(name, frame)| case(name, frame.as_slice(), XDP_PASS, pass));
        let beyond = frames.iter().map(|(name, frame)| {
            case(
                &format!("{name}, over the burst"),
                frame.as_slice(),
                XDP_DROP,
                over,
            )
        });
        lab.table(&within.chain(beyond).collect::<Vec<_>>())?;
    }
    assert_eq!(lab.buckets_of(limited)?.len(), 2, "one bucket per source");
    Ok(())
}

/// One aggregation case: a class whose buckets are keyed by a prefix, two addresses of one
/// prefix that must share a bucket of 5, an address of the next prefix with its own, and
/// the bucket keys that must result.
struct Aggregate {
    lab: &'static str,
    /// The class's aggregation key, e.g. `aggregate_v6 = 64`.
    setting: &'static str,
    cidr: &'static str,
    /// The prefix as named in case descriptions, e.g. `/64`.
    prefix: &'static str,
    shared: [IpAddr; 2],
    other: IpAddr,
    keys: [[u8; 16]; 2],
}

fn aggregate_prefix_shares_a_bucket(spec: &Aggregate) -> Result<()> {
    let config = format!(
        "[daemon]\ninterfaces = [\"lo\"]\n[classes.agg]\npackets = {{ rate = 1, burst = 5 }}\n{}\n\
         [classes.default]\n[[rules]]\ncidr = \"{}\"\nclass = \"agg\"\n",
        spec.setting, spec.cidr
    );
    let lab = Lab::configured(spec.lab, &config)?;
    let agg = lab.class("agg");
    let p = spec.prefix;
    let [a1, a2] = spec.shared.map(|a| udp_from(a).build());
    let b = udp_from(spec.other).build();
    let pass = Slot::new(agg, Reason::Pass);
    let over = Slot::new(agg, Reason::PacketRate);
    // Both addresses of one prefix draw on one bucket of 5.
    let mut cases: Vec<Case> = [&a1, &a2, &a1, &a2, &a1]
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            case(
                &format!("shared {p} #{}", i + 1),
                f.as_slice(),
                XDP_PASS,
                pass,
            )
        })
        .collect();
    cases.extend([
        case(
            &format!("second address of the exhausted {p}"),
            a2,
            XDP_DROP,
            over,
        ),
        case(
            &format!("first address of the exhausted {p}"),
            a1,
            XDP_DROP,
            over,
        ),
        case(&format!("another {p}"), b, XDP_PASS, pass),
    ]);
    lab.table(&cases)?;
    let keys: Vec<[u8; 16]> = lab.buckets_of(agg)?.iter().map(|(k, _)| k.addr).collect();
    assert_eq!(keys, spec.keys, "one bucket per {p}");
    Ok(())
}

pub fn aggregate_v6_prefix_shares_a_bucket() -> Result<()> {
    aggregate_prefix_shares_a_bucket(&Aggregate {
        lab: "aggregate-v6",
        setting: "aggregate_v6 = 64",
        cidr: "2001:db8:64::/48",
        prefix: "/64",
        shared: [
            v6("2001:db8:64:1::1").into(),
            v6("2001:db8:64:1:ffff:ffff:ffff:ffff").into(),
        ],
        other: v6("2001:db8:64:2::1").into(),
        keys: [key6("2001:db8:64:1::"), key6("2001:db8:64:2::")],
    })
}

pub fn aggregate_v4_prefix_shares_a_bucket() -> Result<()> {
    aggregate_prefix_shares_a_bucket(&Aggregate {
        lab: "aggregate-v4",
        setting: "aggregate_v4 = 24",
        cidr: "198.18.24.0/23",
        prefix: "/24",
        shared: [v4(198, 18, 24, 1).into(), v4(198, 18, 24, 254).into()],
        other: v4(198, 18, 25, 1).into(),
        keys: [v4_mapped([198, 18, 24, 0]), v4_mapped([198, 18, 25, 0])],
    })
}

pub fn byte_limit_drops_with_byte_rate() -> Result<()> {
    let lab = Lab::configured(
        "bytes",
        r#"
[daemon]
interfaces = ["lo"]
[classes.bytes]
bytes = { rate = "1KB", burst = "2KB" }
[classes.default]
[[rules]]
cidr = "198.18.2.0/24"
class = "bytes"
[[rules]]
cidr = "2001:db8:2::/48"
class = "bytes"
"#,
    )?;
    let bytes = lab.class("bytes");
    for src in [
        IpAddr::from(v4(198, 18, 2, 1)),
        IpAddr::from(v6("2001:db8:2::1")),
    ] {
        let frame = udp_from(src).pad_to(1000).build();
        assert_eq!(frame.len(), 1000);
        // Two frames fill the 2 KB burst; the next two are over the byte rate.
        let cases: Vec<Case> = [
            (1, XDP_PASS, Reason::Pass),
            (2, XDP_PASS, Reason::Pass),
            (3, XDP_DROP, Reason::ByteRate),
            (4, XDP_DROP, Reason::ByteRate),
        ]
        .into_iter()
        .map(|(i, action, reason)| {
            let name = format!("{src} 1000-byte frame #{i}");
            case(&name, frame.as_slice(), action, Slot::new(bytes, reason))
        })
        .collect();
        lab.table(&cases)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------

pub fn global_monitor_mode_counts_would_drops_and_passes() -> Result<()> {
    let lab = Lab::configured(
        "monitor-global",
        r#"
[daemon]
interfaces = ["lo"]
mode = "monitor"
[classes.internal]
[classes.limited]
packets = { rate = 1, burst = 5 }
[classes.default]
[[rules]]
cidr = "198.18.0.0/24"
action = "allow"
class = "internal"
[[rules]]
cidr = "198.18.1.0/24"
class = "limited"
[[rules]]
cidr = "2001:db8:66::/48"
action = "deny"
"#,
    )?;
    assert_ne!(
        lab.kernel.global()?.flags & GLOBAL_MONITOR,
        0,
        "global monitor flag written"
    );
    let limited = lab.class("limited");
    let frame = udp_from(v4(198, 18, 1, 1).into()).build();
    for i in 1..=5 {
        lab.expect(
            &format!("within the burst #{i}"),
            &frame,
            XDP_PASS,
            Slot::new(limited, Reason::Pass),
        )?;
    }
    for i in 6..=8 {
        lab.expect(
            &format!("over the burst #{i}"),
            &frame,
            XDP_PASS,
            Slot::monitored(limited, Reason::PacketRate),
        )?;
    }
    let cases = [
        case(
            "denied source",
            udp_from(v6("2001:db8:66::1").into()).build(),
            XDP_PASS,
            Slot::monitored(UNCLASSIFIED, Reason::Deny),
        ),
        case(
            "malformed IPv4",
            Frame::ipv4(v4(198, 18, 9, 1), NODE4).ihl(4).build(),
            XDP_PASS,
            Slot::monitored(UNCLASSIFIED, Reason::Malformed),
        ),
        case(
            "ARP",
            Frame::arp_request(v4(198, 18, 9, 1), NODE4).build(),
            XDP_PASS,
            Slot::new(UNCLASSIFIED, Reason::NonIp),
        ),
        case(
            "allowed source",
            udp_from(v4(198, 18, 0, 1).into()).build(),
            XDP_PASS,
            Slot::new(lab.class("internal"), Reason::Allow),
        ),
        case(
            "default class",
            udp_from(v4(198, 18, 9, 1).into()).build(),
            XDP_PASS,
            Slot::new(lab.class("default"), Reason::Pass),
        ),
    ];
    lab.table(&cases)?;
    let buckets = lab.buckets_of(limited)?;
    assert_eq!(buckets.len(), 1);
    assert_eq!(
        (buckets[0].1.packets, buckets[0].1.dropped),
        (8, 3),
        "would-drops count as dropped"
    );
    Ok(())
}

pub fn class_monitor_mode_counts_would_drops_and_passes() -> Result<()> {
    let lab = Lab::configured(
        "monitor-class",
        r#"
[daemon]
interfaces = ["lo"]
[classes.watched]
packets = { rate = 1, burst = 5 }
mode = "monitor"
[classes.limited]
packets = { rate = 1, burst = 5 }
[classes.default]
[[rules]]
cidr = "198.18.3.0/24"
class = "watched"
[[rules]]
cidr = "198.18.1.0/24"
class = "limited"
[[rules]]
cidr = "198.18.66.0/24"
action = "deny"
class = "watched"
[[rules]]
cidr = "198.18.67.0/24"
action = "deny"
"#,
    )?;
    assert_eq!(
        lab.kernel.global()?.flags & GLOBAL_MONITOR,
        0,
        "enforcing globally"
    );
    let (watched, limited) = (lab.class("watched"), lab.class("limited"));
    let watched_frame = udp_from(v4(198, 18, 3, 1).into()).build();
    let limited_frame = udp_from(v4(198, 18, 1, 1).into()).build();
    for i in 1..=5 {
        lab.expect(
            &format!("watched #{i}"),
            &watched_frame,
            XDP_PASS,
            Slot::new(watched, Reason::Pass),
        )?;
        lab.expect(
            &format!("limited #{i}"),
            &limited_frame,
            XDP_PASS,
            Slot::new(limited, Reason::Pass),
        )?;
    }
    for i in 6..=8 {
        lab.expect(
            &format!("watched #{i}"),
            &watched_frame,
            XDP_PASS,
            Slot::monitored(watched, Reason::PacketRate),
        )?;
        lab.expect(
            &format!("limited #{i}"),
            &limited_frame,
            XDP_DROP,
            Slot::new(limited, Reason::PacketRate),
        )?;
    }
    let cases = [
        case(
            "deny counted under a monitored class",
            udp_from(v4(198, 18, 66, 1).into()).build(),
            XDP_PASS,
            Slot::monitored(watched, Reason::Deny),
        ),
        case(
            "deny without a class",
            udp_from(v4(198, 18, 67, 1).into()).build(),
            XDP_DROP,
            Slot::new(UNCLASSIFIED, Reason::Deny),
        ),
        case(
            "malformed frames belong to no class",
            Frame::ipv4(v4(198, 18, 3, 1), NODE4).truncate(30).build(),
            XDP_DROP,
            Slot::new(UNCLASSIFIED, Reason::Malformed),
        ),
    ];
    lab.table(&cases)
}

pub fn unconfigured_program_passes_everything() -> Result<()> {
    let lab = Lab::unconfigured("unconfigured")?;
    assert_eq!(
        lab.kernel.global()?.abi_version,
        0,
        "fresh maps are unconfigured"
    );
    let pass = Slot::new(UNCLASSIFIED, Reason::Pass);
    let mut cases = vec![
        case(
            "IPv4/UDP",
            udp_from(v4(198, 18, 66, 1).into()).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv6/TCP",
            Frame::ipv6(v6("2001:db8:66::1"), NODE6).tcp(1, 80).build(),
            XDP_PASS,
            pass,
        ),
        case(
            "IPv4 non-first fragment",
            Frame::ipv4(v4(198, 18, 1, 1), NODE4)
                .fragment(8, false)
                .build(),
            XDP_PASS,
            pass,
        ),
        case(
            "ARP",
            Frame::arp_request(v4(198, 18, 1, 1), NODE4).build(),
            XDP_PASS,
            Slot::new(UNCLASSIFIED, Reason::NonIp),
        ),
        // Until configured, malformed frames are only counted (as would-drops).
        case(
            "malformed IPv4",
            Frame::ipv4(v4(198, 18, 1, 1), NODE4).truncate(20).build(),
            XDP_PASS,
            Slot::monitored(UNCLASSIFIED, Reason::Malformed),
        ),
        case(
            "malformed IPv6",
            Frame::ipv6(v6("2001:db8:1::1"), NODE6)
                .ip_version(5)
                .build(),
            XDP_PASS,
            Slot::monitored(UNCLASSIFIED, Reason::Malformed),
        ),
    ];
    for i in 0..20 {
        cases.push(case(
            &format!("one source, packet #{i}"),
            udp_from(v4(198, 18, 1, 1).into()).build(),
            XDP_PASS,
            pass,
        ));
    }
    lab.table(&cases)?;
    assert!(
        lab.kernel.buckets()?.is_empty(),
        "nothing is tracked before configuration"
    );
    Ok(())
}
