use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::packet::{Ext, Frame};

const NODE4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

// Rows used by these tests.
const DEFAULT: u32 = 0;
const LIMITED: u32 = 1;
const INTERNAL: u32 = 2;
const QUARANTINE: u32 = 3;

fn rule(cidr: &str, action: Action, class: Option<u32>) -> Rule {
    Rule::new(cidr, action, class).unwrap_or_else(|e| panic!("{e}"))
}

fn rules() -> RuleSet {
    RuleSet::new(DEFAULT)
        .with(rule("198.18.1.0/24", Action::Limit, Some(LIMITED)))
        .with(rule("198.18.1.128/25", Action::Allow, Some(INTERNAL)))
        .with(rule("198.18.1.192/26", Action::Deny, None))
        .with(rule("198.18.1.200/32", Action::Limit, Some(LIMITED)))
        .with(rule("198.18.66.0/24", Action::Deny, Some(QUARANTINE)))
        .with(rule("10.0.0.0/8", Action::Allow, None))
        .with(rule("2001:db8:1::/48", Action::Limit, Some(LIMITED)))
        .with(rule("2001:db8:1:2::/64", Action::Allow, Some(INTERNAL)))
        .with(rule("2001:db8:1:2::66/128", Action::Deny, None))
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or_else(|_| panic!("bad IPv6 literal {s}"))
}

fn udp4(src: Ipv4Addr) -> Frame {
    Frame::ipv4(src, NODE4).udp(40000, 53)
}

fn udp6(src: &str) -> Frame {
    Frame::ipv6(v6(src), NODE6).udp(40000, 53)
}

/// (name, frame, verdict) rows checked together, so a failure lists every wrong case.
fn check(cases: &[(&str, Vec<u8>, Verdict)]) {
    let r = rules();
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(name, frame, want)| {
            let got = r.classify(frame);
            (got != *want).then(|| format!("{name}: got {got:?}, want {want:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn ethernet_and_vlan_tags() {
    let s = v4(198, 18, 9, 1);
    let pass = Verdict::Pass(DEFAULT);
    check(&[
        ("13 bytes", udp4(s).truncate(13).build(), Verdict::NonIp),
        (
            "14 bytes, IPv4 ethertype",
            udp4(s).truncate(14).build(),
            Verdict::Malformed,
        ),
        (
            "14 bytes, IPv6 ethertype",
            udp6("2001:db8:9::1").truncate(14).build(),
            Verdict::Malformed,
        ),
        ("ARP", Frame::arp_request(s, NODE4).build(), Verdict::NonIp),
        (
            "LLDP",
            Frame::raw(ethertype::LLDP, &[0; 46]).build(),
            Verdict::NonIp,
        ),
        (
            "802.1Q tag absent (14 bytes)",
            udp4(s).vlan(1).truncate(14).build(),
            Verdict::Malformed,
        ),
        (
            "802.1Q tag cut in the inner ethertype",
            udp4(s).vlan(1).truncate(17).build(),
            Verdict::Malformed,
        ),
        (
            "802.1Q tag whole, no IP header",
            udp4(s).vlan(1).truncate(18).build(),
            Verdict::Malformed,
        ),
        ("802.1Q + IPv4", udp4(s).vlan(1).build(), pass),
        (
            "802.1ad + IPv4",
            udp4(s).tag(ethertype::QINQ, 1).build(),
            pass,
        ),
        ("QinQ + IPv4", udp4(s).qinq(1, 2).build(), pass),
        (
            "QinQ + IPv6",
            udp6("2001:db8:9::1").qinq(1, 2).build(),
            pass,
        ),
        (
            "QinQ, inner tag cut",
            udp4(s).qinq(1, 2).truncate(20).build(),
            Verdict::Malformed,
        ),
        (
            "three tags: the third is not walked",
            udp4(s).qinq(1, 2).vlan(3).build(),
            Verdict::NonIp,
        ),
        (
            "802.1Q + ARP",
            Frame::arp_request(s, NODE4).vlan(1).build(),
            Verdict::NonIp,
        ),
    ]);
}

#[test]
fn ipv4_header_rules() {
    let s = v4(198, 18, 9, 1);
    let pass = Verdict::Pass(DEFAULT);
    let bad = Verdict::Malformed;
    check(&[
        ("19 of 20 bytes", udp4(s).truncate(14 + 19).build(), bad),
        (
            "20 bytes, nothing after",
            udp4(s).truncate(14 + 20).build(),
            pass,
        ),
        ("version 6", udp4(s).ip_version(6).build(), bad),
        ("version 0", udp4(s).ip_version(0).build(), bad),
        ("IHL 4", udp4(s).ihl(4).build(), bad),
        ("IHL 0", udp4(s).ihl(0).build(), bad),
        (
            "IHL 15 beyond a 20+8-byte packet",
            udp4(s).ihl(15).build(),
            bad,
        ),
        (
            "IHL 15 with 40 bytes of options",
            udp4(s).ipv4_options(&[1; 40]).build(),
            pass,
        ),
        (
            "IHL 6, options cut",
            udp4(s).ipv4_options(&[1; 4]).truncate(14 + 23).build(),
            bad,
        ),
        (
            "IHL 6, options whole, nothing after",
            udp4(s).ipv4_options(&[1; 4]).truncate(14 + 24).build(),
            pass,
        ),
        (
            "IHL 7 counted as 28 bytes even when the frame ends within the L4 header",
            udp4(s).ihl(7).truncate(14 + 28).build(),
            pass,
        ),
        (
            "non-first fragment",
            Frame::ipv4(s, NODE4).fragment(100, true).build(),
            pass,
        ),
        (
            "L4 header cut",
            Frame::ipv4(s, NODE4).tcp(1, 2).truncate(14 + 25).build(),
            pass,
        ),
        (
            "total length larger than the frame",
            {
                let mut f = udp4(s);
                f.ipv4_mut().total_len = Some(9000);
                f.build()
            },
            pass,
        ),
    ]);
}

#[test]
fn ipv6_header_rules() {
    let pass = Verdict::Pass(DEFAULT);
    let bad = Verdict::Malformed;
    let s = "2001:db8:9::1";
    check(&[
        ("39 of 40 bytes", udp6(s).truncate(14 + 39).build(), bad),
        ("40 bytes", udp6(s).truncate(14 + 40).build(), pass),
        ("version 4", udp6(s).ip_version(4).build(), bad),
        ("version 7", udp6(s).ip_version(7).build(), bad),
        (
            "IPv4-mapped source",
            udp6("::ffff:198.18.1.200").build(),
            bad,
        ),
        (
            "IPv4-mapped source of no rule",
            udp6("::ffff:0.0.0.0").build(),
            bad,
        ),
        // Not mapped: these are ordinary IPv6 keys that no IPv4 rule can match.
        (
            "IPv4-compatible (deprecated) source",
            udp6("::198.18.1.200").build(),
            pass,
        ),
        ("::fffe:… source", udp6("::fffe:c612:1c8").build(), pass),
        ("unspecified source", udp6("::").build(), pass),
        (
            "extension chain and a non-first fragment",
            Frame::ipv6(v6(s), NODE6)
                .ext(Ext::HopByHop(vec![]))
                .ext(Ext::routing())
                .fragment(9, true)
                .build(),
            pass,
        ),
        (
            "extension header cut",
            Frame::ipv6(v6(s), NODE6)
                .ext(Ext::DestOpts(vec![1; 20]))
                .udp(1, 2)
                .truncate(14 + 41)
                .build(),
            pass,
        ),
    ]);
}

#[test]
fn longest_prefix_wins() {
    check(&[
        (
            "limit /24",
            udp4(v4(198, 18, 1, 1)).build(),
            Verdict::Pass(LIMITED),
        ),
        (
            "last address of the limit /24 outside the allow /25",
            udp4(v4(198, 18, 1, 127)).build(),
            Verdict::Pass(LIMITED),
        ),
        (
            "allow /25 inside the /24",
            udp4(v4(198, 18, 1, 128)).build(),
            Verdict::Allow(Some(INTERNAL)),
        ),
        (
            "deny /26 inside the allow /25",
            udp4(v4(198, 18, 1, 192)).build(),
            Verdict::Deny(None),
        ),
        (
            "limit /32 inside the deny /26",
            udp4(v4(198, 18, 1, 200)).build(),
            Verdict::Pass(LIMITED),
        ),
        (
            "neighbour of the /32",
            udp4(v4(198, 18, 1, 201)).build(),
            Verdict::Deny(None),
        ),
        (
            "deny counted under a class",
            udp4(v4(198, 18, 66, 9)).build(),
            Verdict::Deny(Some(QUARANTINE)),
        ),
        (
            "allow without a class",
            udp4(v4(10, 1, 2, 3)).build(),
            Verdict::Allow(None),
        ),
        (
            "just below the /24",
            udp4(v4(198, 18, 0, 255)).build(),
            Verdict::Pass(DEFAULT),
        ),
        (
            "just above the /24",
            udp4(v4(198, 18, 2, 0)).build(),
            Verdict::Pass(DEFAULT),
        ),
        (
            "IPv6 limit /48",
            udp6("2001:db8:1:1::1").build(),
            Verdict::Pass(LIMITED),
        ),
        (
            "IPv6 allow /64 inside",
            udp6("2001:db8:1:2::1").build(),
            Verdict::Allow(Some(INTERNAL)),
        ),
        (
            "IPv6 deny /128 inside",
            udp6("2001:db8:1:2::66").build(),
            Verdict::Deny(None),
        ),
        (
            "IPv6 unmatched",
            udp6("2001:db8:2::1").build(),
            Verdict::Pass(DEFAULT),
        ),
        (
            "IPv6 source whose low 32 bits equal an IPv4 rule",
            udp6("2001:db8:9::c612:101").build(),
            Verdict::Pass(DEFAULT),
        ),
    ]);
}

#[test]
fn rule_prefixes_in_the_key_space() {
    let r = rule("198.18.1.5/24", Action::Limit, Some(1));
    assert_eq!(r.prefix(), (v4_key([198, 18, 1, 5]), 120));
    assert!(r.matches(&v4_key([198, 18, 1, 250])), "host bits ignored");
    assert!(!r.matches(&v4_key([198, 18, 2, 5])));
    let any4 = rule("0.0.0.0/0", Action::Deny, None);
    assert_eq!(any4.prefix().1, 96);
    assert!(any4.matches(&v4_key([1, 2, 3, 4])));
    assert!(
        !any4.matches(&v6("2001:db8::1").octets()),
        "an IPv4 /0 covers IPv4 only"
    );
    // The key space is shared: an IPv6 prefix that covers ::ffff:0:0/96 also covers
    // every IPv4 source (only /0…/80 of `::` and /81…/96 of `::ffff:0:0` do).
    let any6 = rule("::/0", Action::Deny, None);
    assert!(any6.matches(&v4_key([1, 2, 3, 4])));
    assert!(rule("::ffff:0:0/96", Action::Deny, None).matches(&v4_key([9, 9, 9, 9])));
    assert!(!rule("2000::/3", Action::Deny, None).matches(&v4_key([9, 9, 9, 9])));
    let set = RuleSet::new(0)
        .with(any6)
        .with(rule("198.18.0.0/15", Action::Allow, None));
    assert_eq!(
        set.classify_source(&v4_key([1, 2, 3, 4])),
        Verdict::Deny(None)
    );
    assert_eq!(
        set.classify_source(&v4_key([198, 19, 3, 4])),
        Verdict::Allow(None)
    );
    assert_eq!(
        set.lookup(&v4_key([198, 19, 3, 4])).map(|(i, _)| i),
        Some(1)
    );
    // A later rule with the same prefix replaces the earlier one.
    let twice = RuleSet::new(0)
        .with(rule("198.18.0.0/16", Action::Deny, None))
        .with(rule("198.18.0.0/16", Action::Allow, None));
    assert_eq!(
        twice.classify_source(&v4_key([198, 18, 0, 1])),
        Verdict::Allow(None)
    );
    // A limit rule without a class falls into the default class.
    let classless = RuleSet::new(7).with(rule("198.18.0.0/16", Action::Limit, None));
    assert_eq!(
        classless.classify_source(&v4_key([198, 18, 0, 1])),
        Verdict::Pass(7)
    );
}

#[test]
fn bad_rules_are_refused() {
    assert!(Rule::new("198.18.0.0", Action::Allow, None).is_err());
    assert!(Rule::new("198.18.0.0/33", Action::Allow, None).is_err());
    assert!(Rule::new("2001:db8::/129", Action::Allow, None).is_err());
    assert!(Rule::new("nonsense/8", Action::Allow, None).is_err());
}

#[test]
fn verdict_rows_and_actions() {
    assert!(Verdict::Malformed.drops() && Verdict::Deny(Some(1)).drops());
    assert!(!Verdict::NonIp.drops() && !Verdict::Allow(None).drops());
    assert!(!Verdict::Pass(3).drops());
    assert_eq!(Verdict::Pass(3).row(), Some(3));
    assert_eq!(Verdict::Deny(None).row(), None);
    assert_eq!(Verdict::Allow(Some(2)).row(), Some(2));
    assert_eq!(Verdict::Malformed.row(), None);
}

/// Rule 7 on the frames of issue 17 item 4.
#[test]
fn unreadable_ports_are_refused_only_where_port_rules_exist() {
    use crate::packet::{ip_proto, tcp_flags};
    let (s6, d6) = (Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 1), NODE6);
    let (s4, d4) = (Ipv4Addr::new(198, 18, 7, 1), NODE4);
    let syn6 = || Frame::ipv6(s6, d6).tcp(1, 8080).tcp_flags(tcp_flags::SYN);
    let eight = (0..8)
        .fold(syn6(), |f, _| f.ext(Ext::DestOpts(Vec::new())))
        .build();
    let five = (0..5)
        .fold(syn6(), |f, _| f.ext(Ext::DestOpts(Vec::new())))
        .build();
    let long = syn6().ext(Ext::DestOpts(vec![0; 700])).build();
    let tcp = Frame::ipv4(s4, d4).tcp(1, 8080).build()[34..].to_vec();
    let tiny = Frame::ipv4(s4, d4)
        .ip_protocol(ip_proto::TCP)
        .payload(&tcp[..8])
        .fragment(0, true)
        .build();
    let later = Frame::ipv4(s4, d4)
        .ip_protocol(ip_proto::TCP)
        .payload(&tcp[8..])
        .fragment(1, false)
        .build();
    let tcp_rules = RuleSet::new(0).with_port_rules(PortRules {
        tcp: true,
        udp: false,
    });
    let udp_rules = RuleSet::new(0).with_port_rules(PortRules {
        tcp: false,
        udp: true,
    });
    let none = RuleSet::new(0);
    for f in [&eight, &long, &tiny] {
        assert_eq!(tcp_rules.classify(f), Verdict::PortUnknown(0));
        assert_eq!(none.classify(f), Verdict::Pass(0));
    }
    // Five headers leave the sixth look for TCP; a later fragment has no port.
    assert_eq!(tcp_rules.classify(&five), Verdict::Pass(0));
    assert_eq!(tcp_rules.classify(&later), Verdict::Pass(0));
    // Eight headers: any protocol, so UDP rules refuse it; the cut TCP header does not.
    assert_eq!(udp_rules.classify(&eight), Verdict::PortUnknown(0));
    assert_eq!(udp_rules.classify(&tiny), Verdict::Pass(0));
    assert!(Verdict::PortUnknown(0).drops());
}
