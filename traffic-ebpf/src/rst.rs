//! A TCP RST+ACK answering a SYN, built in place over the SYN's own headers: addresses and
//! ports swapped, the SYN acknowledged, checksums recomputed. Pure on a [`Frame`], so it is
//! tested on the host; the program (`reply.rs`) shrinks the frame and sends it.

use traffic_common::proto;

use crate::{
    csum::{add_words, fold},
    frame::Frame,
    hdr::{ETH_ALEN, IPV4_MIN_HLEN, IPV6_HLEN, MAX_L3, TCP_ACK, TCP_MIN_HLEN, TCP_RST},
    parse::Ip,
};

/// Hop limit / TTL of the reply.
const REPLY_TTL: u8 = 64;

/// The SYN's sequence number and how many bytes of data it carried (TCP Fast Open), or
/// `None` when this does not rewrite the packet's headers: IPv4 options, IPv6 extension
/// headers, more VLAN tags than the parser walks.
#[inline(always)]
pub fn syn_extent(f: &Frame, ip: &Ip) -> Option<(u32, u32)> {
    let l3 = ip.l3_off;
    let l3_len = if ip.v6 { IPV6_HLEN } else { IPV4_MIN_HLEN };
    if l3 > MAX_L3 || ip.l4_off != l3 + l3_len {
        return None;
    }
    let tcp = f.bytes::<TCP_MIN_HLEN>(ip.l4_off)?;
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let doff = ((tcp[12] >> 4) as usize) * 4;
    let ip_payload = if ip.v6 {
        let h = f.bytes::<IPV6_HLEN>(l3)?;
        u16::from_be_bytes([h[4], h[5]]) as usize
    } else {
        let h = f.bytes::<IPV4_MIN_HLEN>(l3)?;
        (u16::from_be_bytes([h[2], h[3]]) as usize).saturating_sub(IPV4_MIN_HLEN)
    };
    Some((seq, ip_payload.saturating_sub(doff) as u32))
}

/// Length of the reply: the SYN's headers without options or data.
#[inline(always)]
pub fn reply_len(ip: &Ip) -> usize {
    ip.l4_off + TCP_MIN_HLEN
}

/// Rewrite the SYN's headers (already checked by [`syn_extent`]) into the RST+ACK.
/// `None` if a header is not inside the frame.
#[inline(always)]
pub fn rewrite(f: &Frame, ip: &Ip, seq: u32, syn_data: u32) -> Option<()> {
    let eth = f.bytes_mut::<{ ETH_ALEN * 2 }>(0)?;
    let mut mac = [0u8; ETH_ALEN];
    mac.copy_from_slice(&eth[..ETH_ALEN]);
    eth.copy_within(ETH_ALEN..ETH_ALEN * 2, 0);
    eth[ETH_ALEN..].copy_from_slice(&mac);

    let pseudo = if ip.v6 {
        rewrite_ipv6(f.bytes_mut::<IPV6_HLEN>(ip.l3_off)?)
    } else {
        rewrite_ipv4(f.bytes_mut::<IPV4_MIN_HLEN>(ip.l3_off)?)
    };
    let t = f.bytes_mut::<TCP_MIN_HLEN>(ip.l4_off)?;
    rewrite_tcp(t, pseudo, seq.wrapping_add(1).wrapping_add(syn_data));
    Some(())
}

/// Swap the addresses, set the lengths for a bare TCP header; the sum of the addresses for
/// the TCP pseudo-header.
#[inline(always)]
fn rewrite_ipv6(h: &mut [u8; IPV6_HLEN]) -> u32 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[8..24]);
    h.copy_within(24..40, 8);
    h[24..40].copy_from_slice(&a);
    h[4..6].copy_from_slice(&(TCP_MIN_HLEN as u16).to_be_bytes());
    h[7] = REPLY_TTL;
    let mut addrs = [0u8; 32];
    addrs.copy_from_slice(&h[8..40]);
    add_words(0, &addrs)
}

/// As [`rewrite_ipv6`], and the header checksum.
#[inline(always)]
fn rewrite_ipv4(h: &mut [u8; IPV4_MIN_HLEN]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&h[12..16]);
    h.copy_within(16..20, 12);
    h[16..20].copy_from_slice(&a);
    h[1] = 0; // TOS
    h[2..4].copy_from_slice(&((IPV4_MIN_HLEN + TCP_MIN_HLEN) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]); // id
    h[6..8].copy_from_slice(&[0x40, 0]); // DF
    h[8] = REPLY_TTL;
    h[10..12].copy_from_slice(&[0, 0]);
    let sum = fold(add_words(0, h));
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut addrs = [0u8; 8];
    addrs.copy_from_slice(&h[12..20]);
    add_words(0, &addrs)
}

/// Swap the ports, acknowledge `ack`, flags RST+ACK, no options; checksum over the
/// pseudo-header sum `addrs`.
#[inline(always)]
fn rewrite_tcp(t: &mut [u8; TCP_MIN_HLEN], addrs: u32, ack: u32) {
    let pseudo = addrs + u32::from(proto::TCP) + TCP_MIN_HLEN as u32;
    let (sport, dport) = ([t[0], t[1]], [t[2], t[3]]);
    t[0..2].copy_from_slice(&dport);
    t[2..4].copy_from_slice(&sport);
    t[4..8].copy_from_slice(&[0, 0, 0, 0]);
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((TCP_MIN_HLEN / 4) as u8) << 4;
    t[13] = TCP_RST | TCP_ACK;
    t[14..20].copy_from_slice(&[0, 0, 0, 0, 0, 0]); // window, checksum, urgent
    let sum = fold(add_words(pseudo, t));
    t[16..18].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::{
        hdr::{ETH_HLEN, TCP_SYN},
        parse::{Parsed, parse},
    };

    fn view(buf: &mut [u8]) -> Frame {
        let start = buf.as_mut_ptr() as usize;
        // SAFETY: each test keeps `buf` alive and unborrowed while the view is used.
        unsafe { Frame::new(start, start + buf.len()) }
    }

    /// An IPv4 SYN with `data` bytes of payload, checksums left 0.
    fn syn4(data: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let total = (IPV4_MIN_HLEN + TCP_MIN_HLEN + data) as u16;
        f.extend_from_slice(&[0x45, 0x10]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[
            0,
            7,
            0,
            0,
            63,
            proto::TCP,
            0,
            0,
            198,
            18,
            0,
            9,
            198,
            19,
            0,
            1,
        ]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0x10, 0, 0, 0, 0, 0, 0x50, TCP_SYN]);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        f.resize(f.len() + data, 0xaa);
        f
    }

    fn ip_of(f: &Frame) -> Ip {
        match parse(f) {
            Parsed::Ip(ip) => ip,
            _ => panic!("not IP"),
        }
    }

    #[test]
    fn ipv4_syn_becomes_a_valid_rst_ack() {
        let mut buf = syn4(5);
        let f = view(&mut buf);
        let ip = ip_of(&f);
        let (seq, data) = syn_extent(&f, &ip).expect("rewritable");
        assert_eq!((seq, data), (0x1000, 5));
        assert_eq!(reply_len(&ip), ETH_HLEN + IPV4_MIN_HLEN + TCP_MIN_HLEN);
        rewrite(&f, &ip, seq, data).expect("in bounds");
        buf.truncate(ETH_HLEN + IPV4_MIN_HLEN + TCP_MIN_HLEN);

        assert_eq!(&buf[0..6], &[2, 0, 0, 0, 0, 2], "MACs swapped");
        let ip4: &[u8; 20] = buf[14..34].try_into().expect("20 bytes");
        assert_eq!(
            &ip4[12..20],
            &[198, 19, 0, 1, 198, 18, 0, 9],
            "addresses swapped"
        );
        assert_eq!(fold(add_words(0, ip4)), 0, "IPv4 checksum verifies");
        let t: &[u8; 20] = buf[34..54].try_into().expect("20 bytes");
        assert_eq!(&t[0..4], &[0, 80, 0x9c, 0x40], "ports swapped");
        assert_eq!(
            u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
            0x1000 + 1 + 5
        );
        assert_eq!(t[13], TCP_RST | TCP_ACK);
        let mut addrs = [0u8; 8];
        addrs.copy_from_slice(&ip4[12..20]);
        let pseudo = add_words(0, &addrs) + u32::from(proto::TCP) + TCP_MIN_HLEN as u32;
        assert_eq!(fold(add_words(pseudo, t)), 0, "TCP checksum verifies");
    }

    #[test]
    fn ipv4_options_are_not_rewritten() {
        let mut buf = syn4(0);
        buf[ETH_HLEN] = 0x46;
        buf.splice(ETH_HLEN + 20..ETH_HLEN + 20, [1, 1, 1, 0]);
        let f = view(&mut buf);
        let ip = ip_of(&f);
        assert_eq!(syn_extent(&f, &ip), None);
    }
}
