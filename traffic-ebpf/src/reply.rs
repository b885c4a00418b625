//! Answering a refused connection with a TCP RST+ACK built in place and sent back with
//! XDP_TX. Besides `parse.rs`, the only pointer arithmetic on the frame: every write goes
//! through [`Frame::bytes_mut`], which checks bounds against `data_end` first.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};

use crate::parse::{Ip, TCP_ACK, TCP_RST};

const ETH_ALEN: usize = 6;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
/// Deepest L3 offset (Ethernet + two VLAN tags).
const MAX_L3: usize = 22;

struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    fn of(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// The frame's bytes `[off, off + N)`, mutable. The frame is not owned by `Frame`
    /// (it is the kernel's packet buffer), so callers hold several of these at once; each
    /// function here asks only for disjoint ranges (Ethernet, L3 header, L4 header).
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    fn bytes_mut<const N: usize>(&self, off: usize) -> Option<&mut [u8; N]> {
        if off > MAX_L3 + IPV6_HLEN + TCP_HLEN {
            return None;
        }
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        // SAFETY: [p, p+N) is inside [data, data_end), checked above; XDP frames are
        // writable and nothing else holds a reference into them.
        Some(unsafe { &mut *(p as *mut [u8; N]) })
    }
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[inline(always)]
fn add_words<const N: usize>(sum: u32, bytes: &[u8; N]) -> u32 {
    let mut s = sum;
    let mut i = 0;
    while i + 1 < N {
        s += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    s
}

/// Turn a TCP SYN into a RST+ACK back to its sender. Returns false (and leaves the decision
/// to drop) for headers this does not rewrite: IPv4 options or IPv6 extension headers.
#[inline(always)]
pub fn tcp_reset(ctx: &XdpContext, ip: &Ip) -> bool {
    let l3 = ip.l3_off;
    let l3_len = if ip.v6 { IPV6_HLEN } else { IPV4_HLEN };
    if l3 > MAX_L3 || ip.l4_off != l3 + l3_len {
        return false;
    }
    let l4 = ip.l4_off;
    // What the SYN occupied in sequence space: 1 for SYN, plus any data (TCP Fast Open).
    let (seq, syn_data) = {
        let f = Frame::of(ctx);
        let Some(tcp) = f.bytes_mut::<TCP_HLEN>(l4) else {
            return false;
        };
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let doff = ((tcp[12] >> 4) as usize) * 4;
        let ip_payload = if ip.v6 {
            let Some(h) = f.bytes_mut::<IPV6_HLEN>(l3) else {
                return false;
            };
            u16::from_be_bytes([h[4], h[5]]) as usize
        } else {
            let Some(h) = f.bytes_mut::<IPV4_HLEN>(l3) else {
                return false;
            };
            (u16::from_be_bytes([h[2], h[3]]) as usize).saturating_sub(IPV4_HLEN)
        };
        (seq, ip_payload.saturating_sub(doff) as u32)
    };

    // Shrink the frame to the headers of the reply.
    let want = l4 + TCP_HLEN;
    let have = ctx.data_end() - ctx.data();
    if have > want {
        let delta = (have - want) as i32;
        // SAFETY: helper call on our own context; a negative delta shrinks the tail.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -delta) } != 0 {
            return false;
        }
    }
    let f = Frame::of(ctx);

    let Some(eth) = f.bytes_mut::<{ ETH_ALEN * 2 }>(0) else {
        return false;
    };
    let mut mac = [0u8; ETH_ALEN];
    mac.copy_from_slice(&eth[..ETH_ALEN]);
    eth.copy_within(ETH_ALEN..ETH_ALEN * 2, 0);
    eth[ETH_ALEN..].copy_from_slice(&mac);

    let mut pseudo: u32;
    if ip.v6 {
        let Some(h) = f.bytes_mut::<IPV6_HLEN>(l3) else {
            return false;
        };
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[8..24]);
        h.copy_within(24..40, 8);
        h[24..40].copy_from_slice(&a);
        h[4..6].copy_from_slice(&(TCP_HLEN as u16).to_be_bytes());
        h[7] = 64;
        let mut addrs = [0u8; 32];
        addrs.copy_from_slice(&h[8..40]);
        pseudo = add_words(0, &addrs);
    } else {
        let Some(h) = f.bytes_mut::<IPV4_HLEN>(l3) else {
            return false;
        };
        let mut a = [0u8; 4];
        a.copy_from_slice(&h[12..16]);
        h.copy_within(16..20, 12);
        h[16..20].copy_from_slice(&a);
        h[1] = 0; // TOS
        h[2..4].copy_from_slice(&((IPV4_HLEN + TCP_HLEN) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&[0, 0]); // id
        h[6..8].copy_from_slice(&[0x40, 0]); // DF
        h[8] = 64;
        h[10..12].copy_from_slice(&[0, 0]);
        let sum = fold(add_words(0, h));
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut addrs = [0u8; 8];
        addrs.copy_from_slice(&h[12..20]);
        pseudo = add_words(0, &addrs);
    }
    pseudo += u32::from(traffic_common::proto::TCP) + TCP_HLEN as u32;

    let Some(t) = f.bytes_mut::<TCP_HLEN>(l4) else {
        return false;
    };
    let (sport, dport) = ([t[0], t[1]], [t[2], t[3]]);
    t[0..2].copy_from_slice(&dport);
    t[2..4].copy_from_slice(&sport);
    t[4..8].copy_from_slice(&[0, 0, 0, 0]);
    let ack = seq.wrapping_add(1).wrapping_add(syn_data);
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((TCP_HLEN / 4) as u8) << 4;
    t[13] = TCP_RST | TCP_ACK;
    t[14..20].copy_from_slice(&[0, 0, 0, 0, 0, 0]); // window, checksum, urgent
    let sum = fold(add_words(pseudo, t));
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    true
}
