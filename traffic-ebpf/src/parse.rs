//! Header walk: Ethernet, up to two VLAN tags, IPv4 or IPv6 (with its extension headers),
//! then the TCP or UDP ports and flags. Reads go through [`Frame`]; pure otherwise, so the
//! decisions are unit-tested on the host.

use traffic_common::{GLOBAL_HAS_PORTS, GLOBAL_HAS_TCP_PORTS, GLOBAL_HAS_UDP_PORTS, proto};

use crate::{
    frame::Frame,
    hdr::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ETH_TYPE_OFFSET,
        ICMP_DEST_UNREACH, ICMP_HLEN, ICMPV6_DEST_UNREACH, IPPROTO_AH, IPPROTO_DSTOPTS,
        IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING,
        IPV4_MIN_HLEN, IPV6_HLEN, MAX_EXT_HEADERS, MAX_VLAN_TAGS, TCP_ACK, TCP_FLAGS_OFFSET,
        TCP_MIN_HLEN, TCP_SYN, UDP_HLEN, VLAN_HLEN,
    },
};

/// What the L4 header said, when there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4 {
    /// IP protocol number (after extension headers).
    pub protocol: u8,
    /// Source port, host order; 0 when unknown.
    pub sport: u16,
    /// Destination port, host order; 0 when unknown.
    pub dport: u16,
    /// TCP flags byte; 0 for UDP or when unknown.
    pub tcp_flags: u8,
    /// Whether `dport`/`tcp_flags` were read from a complete header (false for non-first
    /// fragments, truncated L4 headers, other protocols, or over-long extension chains).
    pub known: bool,
    /// A port may be there but was not read: a TCP or UDP header cut by the end of the
    /// frame (a tiny first fragment), or an IPv6 extension-header chain the walk did not get
    /// to the end of (`protocol` then 0: anything may follow). Not set for non-first
    /// fragments: they carry no port, and the stack cannot reassemble them without the
    /// first fragment, which is judged with its port.
    pub hidden: bool,
}

impl L4 {
    const UNKNOWN: L4 = L4 {
        protocol: 0,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        known: false,
        hidden: false,
    };

    /// An IPv6 header chain not walked to its end.
    const UNREACHED: L4 = L4 {
        hidden: true,
        ..L4::UNKNOWN
    };

    /// A TCP SYN without ACK: the start of a new connection.
    #[inline(always)]
    pub fn is_new_tcp(&self) -> bool {
        self.known && self.protocol == proto::TCP && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// Whether the port was not read while port rules (`GLOBAL_HAS_*` in `flags`) exist for
    /// a protocol the packet may be: such a packet would dodge a gate, a bulkhead or a
    /// new-connection limit, so it is refused ([`traffic_common::Reason::PortUnknown`]).
    #[inline(always)]
    pub fn hides_a_ruled_port(&self, flags: u32) -> bool {
        if !self.hidden {
            return false;
        }
        let needed = match self.protocol {
            proto::TCP => GLOBAL_HAS_TCP_PORTS,
            proto::UDP => GLOBAL_HAS_UDP_PORTS,
            // The walk never reached the L4 header: any rule at all.
            _ => GLOBAL_HAS_PORTS,
        };
        flags & needed != 0
    }
}

/// An IP packet's source and L4 summary.
#[derive(Debug, PartialEq, Eq)]
pub struct Ip {
    /// The source key ([`traffic_common::Addr`]) as two native-endian words
    /// ([`traffic_common::addr_words`]): split once here, then compared, hashed and masked as
    /// words.
    pub src: (u64, u64),
    pub v6: bool,
    pub l4: L4,
    /// Offset of the L3 header (after Ethernet and VLAN tags).
    pub l3_off: usize,
    /// Offset of the L4 header, valid when `l4.known`.
    pub l4_off: usize,
}

/// Result of parsing a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not IPv4/IPv6 (ARP, LLDP, …).
    NonIp,
    /// An IPv4/IPv6 header that is truncated or invalid.
    Malformed,
    /// An IP packet with a usable source address.
    Ip(Ip),
}

/// Parse Ethernet, up to two VLAN tags, and the IP header.
#[inline(always)]
pub fn parse(c: &Frame) -> Parsed {
    let Some(mut ethertype) = c.u16_at(ETH_TYPE_OFFSET) else {
        // Shorter than an Ethernet header: nothing to classify.
        return Parsed::NonIp;
    };
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // The tag's own ethertype is at +2; a cut tag leaves the frame unclassifiable.
        let Some(inner) = c.u16_at(off + 2) else {
            return Parsed::Malformed;
        };
        ethertype = inner;
        off += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(c, off),
        ETH_P_IPV6 => parse_ipv6(c, off),
        _ => Parsed::NonIp,
    }
}

#[inline(always)]
fn parse_ipv4(c: &Frame, l3: usize) -> Parsed {
    let Some(hdr) = c.bytes::<IPV4_MIN_HLEN>(l3) else {
        return Parsed::Malformed;
    };
    let version = hdr[0] >> 4;
    let ihl = (hdr[0] & 0x0f) as usize;
    if version != 4 || ihl < 5 {
        return Parsed::Malformed;
    }
    let hlen = ihl * 4;
    // Options must be present in full, as the kernel stack requires.
    if c.bytes::<2>(l3 + hlen - 2).is_none() {
        return Parsed::Malformed;
    }
    let src = traffic_common::addr_words(&traffic_common::v4_mapped([
        hdr[12], hdr[13], hdr[14], hdr[15],
    ]));
    let protocol = hdr[9];
    let frag_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
    let l4_off = l3 + hlen;
    let l4 = if frag_offset != 0 {
        // Non-first fragment: no L4 header, classified by source only.
        L4::UNKNOWN
    } else {
        parse_l4(c, l4_off, protocol)
    };
    Parsed::Ip(Ip {
        src,
        v6: false,
        l4,
        l3_off: l3,
        l4_off,
    })
}

#[inline(always)]
fn parse_ipv6(c: &Frame, l3: usize) -> Parsed {
    let Some(hdr) = c.bytes::<IPV6_HLEN>(l3) else {
        return Parsed::Malformed;
    };
    if hdr[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hdr[8..24]);
    let src = traffic_common::addr_words(&bytes);
    // IPv4-mapped sources never appear on the wire (RFC 4291 §2.5.5.2), and our keys put
    // IPv4 in that range: accepting one would let an IPv6 packet pose as an IPv4 source.
    const MAPPED_MASK: u64 = u64::from_ne_bytes([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    const MAPPED: u64 = u64::from_ne_bytes([0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    if src.0 == 0 && src.1 & MAPPED_MASK == MAPPED {
        return Parsed::Malformed;
    }
    let mut next = hdr[6];
    let mut off = l3 + IPV6_HLEN;
    // Until the walk reaches the L4 header (or a non-first fragment), the port is hidden.
    let mut l4 = L4::UNREACHED;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Some([nh, len]) = c.read::<2>(off) else {
                    break;
                };
                next = nh;
                off += (len as usize + 1) * 8;
            }
            IPPROTO_AH => {
                let Some([nh, len]) = c.read::<2>(off) else {
                    break;
                };
                next = nh;
                off += (len as usize + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let Some([nh, _, f0, f1]) = c.read::<4>(off) else {
                    break;
                };
                let frag = u16::from_be_bytes([f0, f1]);
                if frag >> 3 != 0 {
                    // Non-first fragment: classified by source only.
                    l4 = L4::UNKNOWN;
                    break;
                }
                next = nh;
                off += 8;
            }
            _ => {
                l4 = parse_l4(c, off, next);
                break;
            }
        }
    }
    // A chain longer than MAX_EXT_HEADERS, or cut, or past MAX_OFFSET, leaves `l4` unknown
    // and its port hidden.
    Parsed::Ip(Ip {
        src,
        v6: true,
        l4,
        l3_off: l3,
        l4_off: off,
    })
}

#[inline(always)]
fn parse_l4(c: &Frame, off: usize, protocol: u8) -> L4 {
    match protocol {
        proto::TCP => {
            let Some(h) = c.read::<TCP_MIN_HLEN>(off) else {
                return L4 {
                    protocol,
                    ..L4::UNREACHED
                };
            };
            L4 {
                protocol,
                sport: u16::from_be_bytes([h[0], h[1]]),
                dport: u16::from_be_bytes([h[2], h[3]]),
                tcp_flags: h[TCP_FLAGS_OFFSET],
                known: true,
                hidden: false,
            }
        }
        proto::UDP => {
            let Some(h) = c.read::<UDP_HLEN>(off) else {
                return L4 {
                    protocol,
                    ..L4::UNREACHED
                };
            };
            L4 {
                protocol,
                sport: u16::from_be_bytes([h[0], h[1]]),
                dport: u16::from_be_bytes([h[2], h[3]]),
                tcp_flags: 0,
                known: true,
                hidden: false,
            }
        }
        _ => L4 {
            protocol,
            ..L4::UNKNOWN
        },
    }
}

/// For an ICMP "port unreachable" (ICMPv4 type 3 code 3, ICMPv6 type 1 code 4) about a UDP
/// datagram, the datagram's destination port: the port that refused it.
#[inline(always)]
pub fn icmp_unreachable_port(c: &Frame, ip: &Ip) -> Option<u16> {
    let off = ip.l4_off;
    let [kind, code] = c.read::<2>(off)?;
    let inner = off + ICMP_HLEN;
    if !ip.v6 && ip.l4.protocol == IPPROTO_ICMP && (kind, code) == ICMP_DEST_UNREACH {
        let h = c.read::<IPV4_MIN_HLEN>(inner)?;
        let ihl = (h[0] & 0x0f) as usize;
        if h[9] != proto::UDP || ihl < 5 {
            return None;
        }
        return c.u16_at(inner + ihl * 4 + 2);
    }
    if ip.v6 && ip.l4.protocol == IPPROTO_ICMPV6 && (kind, code) == ICMPV6_DEST_UNREACH {
        // The quoted datagram's own extension headers are not walked.
        let h = c.read::<IPV6_HLEN>(inner)?;
        if h[6] != proto::UDP {
            return None;
        }
        return c.u16_at(inner + IPV6_HLEN + 2);
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{vec, vec::Vec};

    use traffic_common::{addr_words, v4_mapped};

    use super::*;
    use crate::hdr::{MAX_L3, TCP_RST};

    fn view(buf: &mut [u8]) -> Frame {
        let start = buf.as_mut_ptr() as usize;
        // SAFETY: each test keeps `buf` alive and unborrowed while the view is used.
        unsafe { Frame::new(start, start + buf.len()) }
    }

    fn parse_bytes(mut buf: Vec<u8>) -> Parsed {
        parse(&view(&mut buf))
    }

    fn eth(ethertype: u16, vlans: &[u16]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        for tpid in vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0, 7]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4(src: [u8; 4], protocol: u8, frag: u16, options: usize) -> Vec<u8> {
        let ihl = 5 + options / 4;
        let mut h = vec![0x40 | ihl as u8, 0, 0, 0, 0, 0];
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, protocol, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&[198, 18, 0, 1]);
        h.resize(ihl * 4, 1);
        h
    }

    fn ipv6(src: [u8; 16], next: u8) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        h.extend_from_slice(&src);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        h
    }

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut h = vec![0u8; TCP_MIN_HLEN];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[12] = 5 << 4;
        h[TCP_FLAGS_OFFSET] = flags;
        h
    }

    fn udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut h = vec![0u8; UDP_HLEN];
        h[0..2].copy_from_slice(&sport.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h
    }

    const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9];

    fn ip(p: Parsed) -> Ip {
        match p {
            Parsed::Ip(ip) => ip,
            other => panic!("not an IP packet: {other:?}"),
        }
    }

    #[test]
    fn ipv4_udp_gives_source_and_ports() {
        let f = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 7], proto::UDP, 0, 0),
            udp(1234, 53),
        ]
        .concat();
        let ip = ip(parse_bytes(f));
        assert_eq!(ip.src, addr_words(&v4_mapped([198, 18, 0, 7])));
        assert!(!ip.v6);
        assert_eq!((ip.l3_off, ip.l4_off), (ETH_HLEN, ETH_HLEN + IPV4_MIN_HLEN));
        assert_eq!(
            ip.l4,
            L4 {
                protocol: proto::UDP,
                sport: 1234,
                dport: 53,
                tcp_flags: 0,
                known: true,
                hidden: false,
            }
        );
    }

    #[test]
    fn two_vlan_tags_are_walked_and_a_third_is_not() {
        let body = [ipv4([198, 18, 0, 7], proto::TCP, 0, 0), tcp(1, 80, TCP_SYN)].concat();
        let f = [eth(ETH_P_IP, &[ETH_P_8021AD, ETH_P_8021Q]), body.clone()].concat();
        let ip = ip(parse_bytes(f));
        assert_eq!(ip.l3_off, MAX_L3);
        assert!(ip.l4.is_new_tcp());
        let three = [
            eth(ETH_P_IP, &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q]),
            body,
        ]
        .concat();
        assert_eq!(parse_bytes(three), Parsed::NonIp);
    }

    #[test]
    fn short_and_cut_frames() {
        assert_eq!(parse_bytes(vec![0; 13]), Parsed::NonIp);
        assert_eq!(parse_bytes(eth(0x0806, &[])), Parsed::NonIp);
        let mut cut_tag = eth(ETH_P_IP, &[ETH_P_8021Q]);
        cut_tag.truncate(15);
        assert_eq!(parse_bytes(cut_tag), Parsed::Malformed);
        let mut v4 = [eth(ETH_P_IP, &[]), ipv4([198, 18, 0, 7], proto::UDP, 0, 0)].concat();
        v4.pop();
        assert_eq!(parse_bytes(v4), Parsed::Malformed);
    }

    #[test]
    fn ipv4_options_must_be_present_in_full() {
        let whole = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 7], proto::UDP, 0, 8),
            udp(1, 9),
        ];
        let ip = ip(parse_bytes(whole.concat()));
        assert_eq!(ip.l4_off, ETH_HLEN + IPV4_MIN_HLEN + 8);
        assert_eq!(ip.l4.dport, 9);
        let mut cut = [eth(ETH_P_IP, &[]), ipv4([198, 18, 0, 7], proto::UDP, 0, 8)].concat();
        cut.truncate(ETH_HLEN + IPV4_MIN_HLEN + 6);
        assert_eq!(parse_bytes(cut), Parsed::Malformed);
        let mut bad_ihl = [eth(ETH_P_IP, &[]), ipv4([198, 18, 0, 7], proto::UDP, 0, 0)].concat();
        bad_ihl[ETH_HLEN] = 0x44;
        assert_eq!(parse_bytes(bad_ihl), Parsed::Malformed);
    }

    #[test]
    fn non_first_fragments_and_truncated_l4_are_unknown() {
        let frag = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 7], proto::UDP, 0x20, 0),
            udp(1, 9),
        ];
        let l4 = ip(parse_bytes(frag.concat())).l4;
        assert!(!l4.known);
        let mut short = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 7], proto::TCP, 0, 0),
            tcp(1, 2, 0),
        ]
        .concat();
        short.truncate(short.len() - 1);
        let l4 = ip(parse_bytes(short)).l4;
        assert_eq!((l4.known, l4.protocol), (false, proto::TCP));
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        // Hop-by-hop (8 bytes), then a first fragment (8 bytes), then TCP.
        let hop = vec![IPPROTO_FRAGMENT, 0, 0, 0, 0, 0, 0, 0];
        let first_frag = vec![proto::TCP, 0, 0, 1, 0, 0, 0, 1];
        let f = [
            eth(ETH_P_IPV6, &[]),
            ipv6(V6_SRC, IPPROTO_HOPOPTS),
            hop.clone(),
            first_frag,
            tcp(40000, 443, TCP_RST),
        ]
        .concat();
        let ip = ip(parse_bytes(f));
        assert!(ip.v6);
        assert_eq!(ip.src, addr_words(&V6_SRC));
        assert_eq!(ip.l4_off, ETH_HLEN + IPV6_HLEN + 16);
        assert_eq!(
            (ip.l4.dport, ip.l4.tcp_flags, ip.l4.known),
            (443, TCP_RST, true)
        );
        assert!(!ip.l4.is_new_tcp());

        // A later fragment: classified by source only.
        let later = vec![proto::TCP, 0, 0, 8 << 3, 0, 0, 0, 1];
        let f = [
            eth(ETH_P_IPV6, &[]),
            ipv6(V6_SRC, IPPROTO_FRAGMENT),
            later,
            tcp(1, 2, 0),
        ];
        assert!(!ip_of(f.concat()).l4.known);

        // A chain longer than the walk leaves L4 unknown.
        let mut f = [eth(ETH_P_IPV6, &[]), ipv6(V6_SRC, IPPROTO_DSTOPTS)].concat();
        for _ in 0..MAX_EXT_HEADERS {
            f.extend_from_slice(&[IPPROTO_DSTOPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        f.extend_from_slice(&udp(1, 2));
        assert!(!ip_of(f).l4.known);
    }

    /// The frames of issue 17 item 4: a SYN whose port the walk cannot read.
    #[test]
    fn unreadable_ports_are_hidden_and_refused_where_rules_exist() {
        let syn = tcp(40000, 8080, TCP_SYN);
        let tcp_rules = GLOBAL_HAS_PORTS | GLOBAL_HAS_TCP_PORTS;
        let udp_rules = GLOBAL_HAS_PORTS | GLOBAL_HAS_UDP_PORTS;

        // Eight destination-options headers: past the walk.
        let eight_again = || {
            let mut f = [eth(ETH_P_IPV6, &[]), ipv6(V6_SRC, IPPROTO_DSTOPTS)].concat();
            for i in 0..8 {
                let next = if i == 7 { proto::TCP } else { IPPROTO_DSTOPTS };
                f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
            }
            f.extend_from_slice(&tcp(40000, 8080, TCP_SYN));
            f
        };
        let eight = eight_again();
        // One 760-byte destination-options header: past MAX_OFFSET.
        let mut long = [eth(ETH_P_IPV6, &[]), ipv6(V6_SRC, IPPROTO_DSTOPTS)].concat();
        let mut opts = vec![0u8; 760];
        (opts[0], opts[1]) = (proto::TCP, (760 / 8 - 1) as u8);
        long.extend_from_slice(&opts);
        long.extend_from_slice(&syn);
        for (name, f) in [("eight headers", eight), ("760-byte header", long)] {
            let l4 = ip_of(f).l4;
            assert!(!l4.known && l4.hidden, "{name}: {l4:?}");
            assert!(l4.hides_a_ruled_port(tcp_rules), "{name}");
            assert!(
                !l4.hides_a_ruled_port(0),
                "{name}: no rules, nothing to dodge"
            );
        }
        // The eight headers' walk never learnt the protocol: UDP rules are enough. The
        // 760-byte header did name TCP before the offset ran out.
        assert!(ip_of(eight_again()).l4.hides_a_ruled_port(udp_rules));

        // An IPv4 first fragment with 8 bytes of TCP (ports, no flags).
        let tiny = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 7], proto::TCP, 0x2000, 0),
            syn[..8].to_vec(),
        ];
        let l4 = ip_of(tiny.concat()).l4;
        assert!(!l4.known && l4.hidden);
        assert!(l4.hides_a_ruled_port(tcp_rules));
        assert!(
            !l4.hides_a_ruled_port(udp_rules),
            "a TCP packet, UDP rules only"
        );

        // Non-first fragments: no port to hide, their first fragment carried it.
        let later = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 7], proto::TCP, 0x2000 | 1, 0),
            syn[8..].to_vec(),
        ];
        let later6 = [
            eth(ETH_P_IPV6, &[]),
            ipv6(V6_SRC, IPPROTO_FRAGMENT),
            vec![proto::TCP, 0, 0, 1 << 3, 0, 0, 0, 1],
            syn[8..].to_vec(),
        ];
        for f in [later.concat(), later6.concat()] {
            let l4 = ip_of(f).l4;
            assert!(!l4.known && !l4.hidden, "{l4:?}");
            assert!(!l4.hides_a_ruled_port(tcp_rules | udp_rules));
        }

        // A whole header, and other protocols, hide nothing.
        let whole = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 7], proto::TCP, 0, 0),
            syn,
        ];
        assert!(!ip_of(whole.concat()).l4.hides_a_ruled_port(tcp_rules));
        let icmp = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 7], IPPROTO_ICMP, 0, 0),
            vec![8, 0],
        ];
        assert!(
            !ip_of(icmp.concat())
                .l4
                .hides_a_ruled_port(tcp_rules | udp_rules)
        );
    }

    fn ip_of(f: Vec<u8>) -> Ip {
        ip(parse_bytes(f))
    }

    #[test]
    fn ipv6_sources_in_the_v4_mapped_range_are_malformed() {
        let mapped = v4_mapped([198, 18, 0, 7]);
        let f = [eth(ETH_P_IPV6, &[]), ipv6(mapped, proto::UDP), udp(1, 2)].concat();
        assert_eq!(parse_bytes(f), Parsed::Malformed);
        let mut bad_version = [eth(ETH_P_IPV6, &[]), ipv6(V6_SRC, proto::UDP)].concat();
        bad_version[ETH_HLEN] = 0x40;
        assert_eq!(parse_bytes(bad_version), Parsed::Malformed);
    }

    #[test]
    fn port_unreachable_names_the_refused_port() {
        let quoted = [ipv4([198, 18, 0, 1], proto::UDP, 0, 0), udp(5353, 9999)].concat();
        let icmp = [vec![3, 3, 0, 0, 0, 0, 0, 0], quoted].concat();
        let mut f = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 1], IPPROTO_ICMP, 0, 0),
            icmp,
        ]
        .concat();
        let c = view(&mut f);
        let Parsed::Ip(ip) = parse(&c) else {
            panic!("not IP")
        };
        assert_eq!(icmp_unreachable_port(&c, &ip), Some(9999));

        let quoted6 = [ipv6(V6_SRC, proto::UDP), udp(5353, 8888)].concat();
        let icmp6 = [vec![1, 4, 0, 0, 0, 0, 0, 0], quoted6].concat();
        let mut f = [eth(ETH_P_IPV6, &[]), ipv6(V6_SRC, IPPROTO_ICMPV6), icmp6].concat();
        let c = view(&mut f);
        let Parsed::Ip(ip) = parse(&c) else {
            panic!("not IP")
        };
        assert_eq!(icmp_unreachable_port(&c, &ip), Some(8888));

        // Host unreachable (code 1) is not a refused port.
        let quoted = [ipv4([198, 18, 0, 1], proto::UDP, 0, 0), udp(5353, 9999)].concat();
        let icmp = [vec![3, 1, 0, 0, 0, 0, 0, 0], quoted].concat();
        let mut f = [
            eth(ETH_P_IP, &[]),
            ipv4([198, 18, 0, 1], IPPROTO_ICMP, 0, 0),
            icmp,
        ]
        .concat();
        let c = view(&mut f);
        let Parsed::Ip(ip) = parse(&c) else {
            panic!("not IP")
        };
        assert_eq!(icmp_unreachable_port(&c, &ip), None);
    }
}
