use super::*;

const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const D4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const S6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const D6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

#[test]
fn rfc1071_and_known_ipv4_header() {
    // RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
    assert_eq!(
        internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0x220d
    );
    // A textbook IPv4 header (192.168.0.1 → 192.168.0.199, UDP) with checksum b861.
    let mut hdr = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(internet_checksum(&hdr), 0xb861);
    hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
    assert_eq!(internet_checksum(&hdr), 0);
    // Odd length: the last byte is the high half of a zero-padded word.
    assert_eq!(internet_checksum(&[0xff]), !0xff00);
}

#[test]
fn builder_reproduces_the_known_ipv4_header() {
    let mut f = Frame::ipv4(
        Ipv4Addr::new(192, 168, 0, 1),
        Ipv4Addr::new(192, 168, 0, 199),
    )
    .ip_protocol(ip_proto::UDP)
    .payload(&[0; 0x73 - 20]);
    f.ipv4_mut().dont_fragment = true;
    let b = f.build();
    assert_eq!(be16(&b, 12), ethertype::IPV4);
    assert_eq!(be16(&b, 14 + 10), 0xb861);
}

#[test]
fn ipv4_udp_lengths_and_checksums() {
    let b = Frame::ipv4(S4, D4).udp(1234, 53).payload(b"hello").build();
    assert_eq!(b.len(), ETH_HLEN + IPV4_HLEN + UDP_HLEN + 5);
    assert_eq!(&b[0..6], &DST_MAC);
    assert_eq!(&b[6..12], &SRC_MAC);
    let ip = &b[ETH_HLEN..];
    assert_eq!(ip[0], 0x45);
    assert_eq!(be16(ip, 2) as usize, ip.len());
    assert_eq!(ip[9], ip_proto::UDP);
    assert_eq!(internet_checksum(&ip[..20]), 0);
    let udp = &ip[20..];
    assert_eq!(be16(udp, 0), 1234);
    assert_eq!(be16(udp, 2), 53);
    assert_eq!(be16(udp, 4) as usize, udp.len());
    assert_ne!(be16(udp, 6), 0);
    assert_eq!(l4_checksum(S4.into(), D4.into(), ip_proto::UDP, udp), 0);
    assert_eq!(&udp[8..], b"hello");
}

#[test]
fn independent_udp_checksum_vector() {
    // 198.18.0.1:1234 → 198.18.0.2:53, payload "hello", computed by hand:
    // pseudo c612+0001+c612+0002+0011+000d, header 04d2+0035+000d, data 6865+6c6c+6f00.
    let b = Frame::ipv4(S4, D4).udp(1234, 53).payload(b"hello").build();
    let words: u32 = [
        0xc612u32, 0x0001, 0xc612, 0x0002, 0x0011, 0x000d, 0x04d2, 0x0035, 0x000d, 0x6865, 0x6c6c,
        0x6f00,
    ]
    .iter()
    .sum();
    let folded = (words & 0xffff) + (words >> 16);
    let expected = !(((folded & 0xffff) + (folded >> 16)) as u16);
    assert_eq!(be16(&b, ETH_HLEN + IPV4_HLEN + 6), expected);
}

#[test]
fn ipv4_tcp_with_options() {
    let f = Frame::ipv4(S4, D4)
        .ipv4_options(&[0x94, 0x04, 0x00, 0x00, 0x01]) // router alert + NOP, padded
        .tcp(40000, 443)
        .tcp_flags(tcp_flags::SYN)
        .payload(&[1, 2, 3]);
    let b = f.build();
    let ip = &b[ETH_HLEN..];
    assert_eq!(ip[0], 0x47, "IHL 7: 20 + 8 bytes of options");
    assert_eq!(internet_checksum(&ip[..28]), 0);
    assert_eq!(be16(ip, 2) as usize, 28 + 20 + 3);
    let tcp = &ip[28..];
    assert_eq!(tcp[12] >> 4, 5);
    assert_eq!(tcp[13], tcp_flags::SYN);
    assert_eq!(l4_checksum(S4.into(), D4.into(), ip_proto::TCP, tcp), 0);
    let l = f.layout();
    assert_eq!(
        (l.l3, l.src_addr, l.l4, l.payload),
        (14, Some(26), Some(42), 62)
    );
    assert_eq!(l.len, b.len());
}

#[test]
fn ipv4_fragment_and_overrides() {
    let b = Frame::ipv4(S4, D4)
        .fragment(185, true)
        .payload(&[0; 16])
        .build();
    let ip = &b[ETH_HLEN..];
    assert_eq!(be16(ip, 6), 0x2000 | 185);
    assert_eq!(ip[9], ip_proto::RESERVED);
    assert_eq!(internet_checksum(&ip[..20]), 0);
    let b = Frame::ipv4(S4, D4).ihl(4).ip_version(6).build();
    assert_eq!(b[ETH_HLEN], 0x64);
    assert_eq!(b.len(), ETH_HLEN + IPV4_HLEN);
    let mut f = Frame::ipv4(S4, D4);
    f.ipv4_mut().checksum = Some(0xdead);
    assert_eq!(be16(&f.build(), ETH_HLEN + 10), 0xdead);
}

#[test]
fn ipv6_udp_and_tcp_checksums() {
    let b = Frame::ipv6(S6, D6).udp(5353, 53).payload(b"abc").build();
    let ip = &b[ETH_HLEN..];
    assert_eq!(be16(&b, 12), ethertype::IPV6);
    assert_eq!(ip[0] >> 4, 6);
    assert_eq!(be16(ip, 4) as usize, UDP_HLEN + 3);
    assert_eq!(ip[6], ip_proto::UDP);
    assert_eq!(
        l4_checksum(S6.into(), D6.into(), ip_proto::UDP, &ip[40..]),
        0
    );
    let b = Frame::ipv6(S6, D6).tcp(1, 80).build();
    assert_eq!(b.len(), ETH_HLEN + IPV6_HLEN + TCP_HLEN);
    assert_eq!(
        l4_checksum(S6.into(), D6.into(), ip_proto::TCP, &b[54..]),
        0
    );
    // No L4 header: next header 59.
    assert_eq!(Frame::ipv6(S6, D6).build()[ETH_HLEN + 6], ip_proto::NONE);
}

#[test]
fn ipv6_extension_chain() {
    let f = Frame::ipv6(S6, D6)
        .ext(Ext::HopByHop(vec![]))
        .ext(Ext::routing())
        .ext(Ext::DestOpts(vec![0x1e, 5, 1, 2, 3, 4, 5])) // 2 + 7 bytes → PadN(5) → 16
        .ext(Ext::fragment(0, true))
        .ext(Ext::ah())
        .udp(1, 2);
    let b = f.build();
    let ip = &b[ETH_HLEN..];
    assert_eq!(ip[6], ip_proto::HOPOPTS);
    let mut off = IPV6_HLEN;
    let mut chain = Vec::new();
    let mut next = ip[6];
    while next != ip_proto::UDP {
        chain.push(next);
        let (nh, len) = (ip[off], ip[off + 1] as usize);
        let size = match next {
            ip_proto::FRAGMENT => 8,
            ip_proto::AH => (len + 2) * 4,
            _ => (len + 1) * 8,
        };
        if next == ip_proto::FRAGMENT {
            assert_eq!(be16(ip, off + 2), 1, "offset 0, M set");
        }
        if next == ip_proto::DSTOPTS {
            assert_eq!(size, 16);
            assert_eq!(
                &ip[off + 2..off + 16],
                &[0x1e, 5, 1, 2, 3, 4, 5, 1, 5, 0, 0, 0, 0, 0]
            );
        }
        off += size;
        next = nh;
    }
    assert_eq!(
        chain,
        [
            ip_proto::HOPOPTS,
            ip_proto::ROUTING,
            ip_proto::DSTOPTS,
            ip_proto::FRAGMENT,
            ip_proto::AH
        ]
    );
    assert_eq!(off, IPV6_HLEN + 8 + 8 + 16 + 8 + 24);
    assert_eq!(be16(ip, 4) as usize, ip.len() - IPV6_HLEN);
    assert_eq!(be16(ip, off + 4), 8);
    assert_eq!(
        l4_checksum(S6.into(), D6.into(), ip_proto::UDP, &ip[off..]),
        0
    );
    assert_eq!(f.layout().l4, Some(ETH_HLEN + off));
    // Non-first fragment via the family-neutral setter.
    let b = Frame::ipv6(S6, D6)
        .fragment(3, false)
        .payload(&[9; 8])
        .build();
    assert_eq!(b[ETH_HLEN + 6], ip_proto::FRAGMENT);
    assert_eq!(be16(&b, ETH_HLEN + 42), 3 << 3);
    assert_eq!(b[ETH_HLEN + 40], ip_proto::NONE);
}

#[test]
fn options_padding_uses_pad1_and_padn() {
    for (opts, len) in [
        (0usize, 8usize),
        (5, 8),
        (6, 8),
        (7, 16),
        (13, 16),
        (14, 16),
    ] {
        let b = Frame::ipv6(S6, D6)
            .ext(Ext::HopByHop(vec![0x1e; opts]))
            .build();
        let ext = &b[ETH_HLEN + IPV6_HLEN..];
        assert_eq!((ext[1] as usize + 1) * 8, len, "{opts} option bytes");
        assert_eq!(b.len(), ETH_HLEN + IPV6_HLEN + len);
    }
}

#[test]
fn vlan_tags() {
    let b = Frame::ipv4(S4, D4).qinq(100, 200).build();
    assert_eq!(be16(&b, 12), ethertype::QINQ);
    assert_eq!(be16(&b, 14), 100);
    assert_eq!(be16(&b, 16), ethertype::VLAN);
    assert_eq!(be16(&b, 18), 200);
    assert_eq!(be16(&b, 20), ethertype::IPV4);
    assert_eq!(b.len(), ETH_HLEN + 2 * VLAN_HLEN + IPV4_HLEN);
    assert_eq!(internet_checksum(&b[22..42]), 0);
    assert_eq!(Frame::ipv4(S4, D4).vlan(7).layout().src_addr, Some(18 + 12));
}

#[test]
fn arp_and_raw() {
    let b = Frame::arp_request(S4, D4).build();
    assert_eq!(b.len(), ETH_HLEN + ARP_LEN);
    assert_eq!(&b[0..6], &[0xff; 6]);
    assert_eq!(be16(&b, 12), ethertype::ARP);
    assert_eq!(be16(&b, 20), 1);
    assert_eq!(&b[28..32], &S4.octets());
    assert_eq!(&b[38..42], &D4.octets());
    let b = Frame::raw(ethertype::LLDP, &[1, 2, 3]).build();
    assert_eq!(b, [&DST_MAC[..], &SRC_MAC, &[0x88, 0xcc, 1, 2, 3]].concat());
}

#[test]
fn padding_and_truncation() {
    let b = Frame::ipv4(S4, D4).udp(1, 2).pad_to(1000).build();
    assert_eq!(b.len(), 1000);
    assert_eq!(be16(&b, ETH_HLEN + 2) as usize, 1000 - ETH_HLEN);
    assert_eq!(
        be16(&b, ETH_HLEN + 24) as usize,
        1000 - ETH_HLEN - IPV4_HLEN
    );
    assert_eq!(
        l4_checksum(S4.into(), D4.into(), ip_proto::UDP, &b[34..]),
        0
    );
    assert_eq!(
        Frame::arp_request(S4, D4).pad_to(ETH_MIN_LEN).build().len(),
        60
    );
    // Padding never shrinks.
    assert_eq!(Frame::ipv6(S6, D6).tcp(1, 2).pad_to(10).build().len(), 74);
    // Truncation happens after lengths and checksums.
    let full = Frame::ipv4(S4, D4).tcp(1, 2).build();
    let cut = Frame::ipv4(S4, D4).tcp(1, 2).truncate(40).build();
    assert_eq!(cut, full[..40]);
    assert_eq!(
        Frame::ipv4(S4, D4).truncate(1000).build(),
        Frame::ipv4(S4, D4).build()
    );
    let mut buf = vec![0xaa];
    let layout = Frame::ipv4(S4, D4).truncate(20).write_to(&mut buf);
    assert_eq!(buf.len(), 21);
    assert_eq!(layout.len, 34);
}

#[test]
fn deterministic() {
    let f = || {
        Frame::ip(S6.into(), D6.into())
            .vlan(5)
            .ext(Ext::ah())
            .tcp(9, 10)
            .payload(b"x")
            .build()
    };
    assert_eq!(f(), f());
}

#[test]
fn transport_switch_keeps_payload() {
    let b = Frame::ipv4(S4, D4).payload(b"data").udp(1, 2).build();
    assert_eq!(&b[b.len() - 4..], b"data");
    assert_eq!(b.len(), ETH_HLEN + IPV4_HLEN + UDP_HLEN + 4);
}
