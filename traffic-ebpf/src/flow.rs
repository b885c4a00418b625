//! What the passive breaker signal and the local-destination check read besides the parse
//! summary: the destination address, the TCP sequence and acknowledgment numbers, and the
//! datagram an ICMP port unreachable quotes. Pure on a [`Frame`], so tested on the host.

use traffic_common::{Addr, FlowKey, addr_words, proto, v4_mapped};

use crate::{
    frame::Frame,
    hdr::{
        ICMP_DEST_UNREACH, ICMP_HLEN, ICMPV6_DEST_UNREACH, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPV4_MIN_HLEN, IPV6_HLEN,
    },
    parse::Ip,
};

/// The packet's destination address as [`addr_words`] of its [`Addr`] (IPv4 mapped).
/// Words, not bytes: an `Option` of a 16-byte array leaves registers the verifier sees
/// spilled uninitialised.
#[inline(always)]
pub fn dst(f: &Frame, ip: &Ip) -> Option<(u64, u64)> {
    if ip.v6 {
        let h = f.bytes::<IPV6_HLEN>(ip.l3_off)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[24..40]);
        Some(addr_words(&a))
    } else {
        let h = f.bytes::<IPV4_MIN_HLEN>(ip.l3_off)?;
        Some(addr_words(&v4_mapped([h[16], h[17], h[18], h[19]])))
    }
}

/// The TCP header's sequence and acknowledgment numbers (host order); the L4 header must
/// be known.
#[inline(always)]
pub fn tcp_seq_ack(f: &Frame, ip: &Ip) -> Option<(u32, u32)> {
    let [s0, s1, s2, s3, a0, a1, a2, a3] = f.read::<8>(ip.l4_off + 4)?;
    Some((
        u32::from_be_bytes([s0, s1, s2, s3]),
        u32::from_be_bytes([a0, a1, a2, a3]),
    ))
}

/// The key of an attempt: `peer` sent it from `peer_port` to the node's `port`.
#[inline(always)]
pub fn key(peer: Addr, peer_port: u16, port: u16, protocol: u8) -> FlowKey {
    FlowKey {
        addr: peer,
        peer_port,
        port,
        protocol,
        _pad: [0; 3],
    }
}

/// The key of the UDP datagram an ICMP/ICMPv6 port unreachable quotes: the datagram's
/// sender (the peer), its source port and the port that refused it.
#[inline(always)]
pub fn quoted_udp(f: &Frame, ip: &Ip) -> Option<FlowKey> {
    let off = ip.l4_off;
    let [kind, code] = f.read::<2>(off)?;
    let inner = off + ICMP_HLEN;
    if !ip.v6 && ip.l4.protocol == IPPROTO_ICMP && (kind, code) == ICMP_DEST_UNREACH {
        let h = f.bytes::<IPV4_MIN_HLEN>(inner)?;
        let ihl = (h[0] & 0x0f) as usize;
        if h[9] != proto::UDP || ihl < 5 {
            return None;
        }
        let peer = v4_mapped([h[12], h[13], h[14], h[15]]);
        let [s0, s1, d0, d1] = f.read::<4>(inner + ihl * 4)?;
        return Some(key(
            peer,
            u16::from_be_bytes([s0, s1]),
            u16::from_be_bytes([d0, d1]),
            proto::UDP,
        ));
    }
    if ip.v6 && ip.l4.protocol == IPPROTO_ICMPV6 && (kind, code) == ICMPV6_DEST_UNREACH {
        // The quoted datagram's own extension headers are not walked.
        let h = f.bytes::<IPV6_HLEN>(inner)?;
        if h[6] != proto::UDP {
            return None;
        }
        let mut peer = [0u8; 16];
        peer.copy_from_slice(&h[8..24]);
        let [s0, s1, d0, d1] = f.read::<4>(inner + IPV6_HLEN)?;
        return Some(key(
            peer,
            u16::from_be_bytes([s0, s1]),
            u16::from_be_bytes([d0, d1]),
            proto::UDP,
        ));
    }
    None
}

/// The voting prefix of a peer: the whole address for IPv4, its /64 for IPv6 (one host
/// usually holds a whole /64), as two words.
#[inline(always)]
pub fn voter(peer: &Addr) -> [u64; 2] {
    let (lo, hi) = addr_words(peer);
    let v4 = lo == 0 && peer[10] == 0xff && peer[11] == 0xff;
    if v4 { [lo, hi] } else { [lo, 0] }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn view(buf: &mut [u8]) -> Frame {
        let start = buf.as_mut_ptr() as usize;
        // SAFETY: each test keeps `buf` alive and unborrowed while the view is used.
        unsafe { Frame::new(start, start + buf.len()) }
    }

    /// Ethernet + IPv4 (198.18.0.9 → 198.18.0.1) + the given L4 bytes.
    fn v4_frame(protocol: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = std::vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0]);
        f.extend_from_slice(&[198, 18, 0, 9, 198, 18, 0, 1]);
        f.extend_from_slice(l4);
        f
    }

    fn ip_of(f: &Frame) -> Ip {
        match crate::parse::parse(f) {
            crate::parse::Parsed::Ip(ip) => ip,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_destination_and_sequence_numbers() {
        let mut tcp = std::vec![0u8; 20];
        tcp[0..4].copy_from_slice(&[0x1f, 0x90, 0x30, 0x39]);
        tcp[4..8].copy_from_slice(&7u32.to_be_bytes());
        tcp[8..12].copy_from_slice(&8u32.to_be_bytes());
        tcp[12] = 0x50;
        let mut buf = v4_frame(proto::TCP, &tcp);
        let f = view(&mut buf);
        let ip = ip_of(&f);
        assert_eq!(dst(&f, &ip), Some(addr_words(&v4_mapped([198, 18, 0, 1]))));
        assert_eq!(tcp_seq_ack(&f, &ip), Some((7, 8)));
    }

    #[test]
    fn quoted_datagram_of_a_port_unreachable() {
        let mut icmp = std::vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        // The quoted datagram: 198.18.0.1 (the peer) → 198.18.0.9, 4000 → 53.
        icmp.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto::UDP, 0, 0]);
        icmp.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 9]);
        icmp.extend_from_slice(&[0x0f, 0xa0, 0, 53, 0, 8, 0, 0]);
        let mut buf = v4_frame(IPPROTO_ICMP, &icmp);
        let f = view(&mut buf);
        let ip = ip_of(&f);
        assert_eq!(
            quoted_udp(&f, &ip),
            Some(key(v4_mapped([198, 18, 0, 1]), 4000, 53, proto::UDP))
        );
        // Another ICMP type quotes nothing we count.
        let mut other = icmp.clone();
        other[1] = 1;
        let mut buf = v4_frame(IPPROTO_ICMP, &other);
        let f = view(&mut buf);
        assert_eq!(quoted_udp(&f, &ip_of(&f)), None);
    }

    #[test]
    fn a_voter_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let a = v4_mapped([198, 18, 0, 1]);
        let b = v4_mapped([198, 18, 0, 2]);
        assert_ne!(voter(&a), voter(&b));
        let mut x = [0u8; 16];
        x[..8].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 7, 0, 0]);
        let mut y = x;
        x[15] = 1;
        y[15] = 2;
        assert_eq!(voter(&x), voter(&y), "one /64, one vote");
        y[7] = 1;
        assert_ne!(voter(&x), voter(&y));
    }
}
