//! Frame parsing: the only pointer arithmetic in the program.
//!
//! Every read goes through [`Cursor`], which checks the bounds against `data_end` before it
//! dereferences, so the verifier sees each access guarded and no frame content can make the
//! program fault. Offsets are kept below [`MAX_OFFSET`] so their ranges stay bounded.

use traffic_common::proto;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// IPv6 extension headers walked before giving up on finding the L4 header.
const MAX_EXT_HEADERS: usize = 6;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

/// Deepest offset the parser will look at; a header chain that goes further leaves the L4
/// header unknown (the packet is still classified by its source).
const MAX_OFFSET: usize = 512;

/// TCP flag bits (byte 13 of the TCP header).
pub const TCP_SYN: u8 = 0x02;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;

/// Bounds-checked view of the frame.
pub struct Cursor {
    start: usize,
    end: usize,
}

impl Cursor {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Frame length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Pointer to `N` bytes at `off`, if they are inside the frame.
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<*const [u8; N]> {
        if off > MAX_OFFSET {
            return None;
        }
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        Some(p as *const [u8; N])
    }

    /// `N` bytes at `off`, copied out. `N` ≥ 2: for single bytes LLVM rewrites the bounds
    /// check `p + 1 > end` into `p >= end`, which the TC verifier does not accept.
    #[inline(always)]
    pub fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        // SAFETY: `bytes` checked that [off, off+N) is inside [data, data_end).
        self.bytes::<N>(off).map(|p| unsafe { *p })
    }

    #[inline(always)]
    pub fn u16_at(&self, off: usize) -> Option<u16> {
        // SAFETY: `bytes` checked that both bytes are inside [data, data_end).
        self.bytes::<2>(off)
            .map(|p| unsafe { u16::from_be_bytes(*p) })
    }
}

/// TCP RST flag.
pub const TCP_RST: u8 = 0x04;

/// What the L4 header said, when there is one.
#[derive(Clone, Copy)]
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
}

impl L4 {
    const UNKNOWN: L4 = L4 {
        protocol: 0,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        known: false,
    };

    /// A TCP SYN without ACK: the start of a new connection.
    #[inline(always)]
    pub fn is_new_tcp(&self) -> bool {
        self.known && self.protocol == proto::TCP && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }
}

/// An IP packet's source and L4 summary.
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
pub fn parse(c: &Cursor) -> Parsed {
    let Some(mut ethertype) = c.u16_at(12) else {
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
fn parse_ipv4(c: &Cursor, l3: usize) -> Parsed {
    let Some(hdr) = c.bytes::<IPV4_MIN_HLEN>(l3) else {
        return Parsed::Malformed;
    };
    // SAFETY: `bytes` checked the 20-byte base header is inside the frame.
    let hdr = unsafe { &*hdr };
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
fn parse_ipv6(c: &Cursor, l3: usize) -> Parsed {
    let Some(hdr) = c.bytes::<IPV6_HLEN>(l3) else {
        return Parsed::Malformed;
    };
    // SAFETY: `bytes` checked the 40-byte header is inside the frame.
    let hdr = unsafe { &*hdr };
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
    let mut l4 = L4::UNKNOWN;
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
    // A chain longer than MAX_EXT_HEADERS leaves `l4` unknown.
    Parsed::Ip(Ip {
        src,
        v6: true,
        l4,
        l3_off: l3,
        l4_off: off,
    })
}

#[inline(always)]
fn parse_l4(c: &Cursor, off: usize, protocol: u8) -> L4 {
    match protocol {
        proto::TCP => {
            let Some(h) = c.read::<TCP_MIN_HLEN>(off) else {
                return L4 {
                    protocol,
                    ..L4::UNKNOWN
                };
            };
            L4 {
                protocol,
                sport: u16::from_be_bytes([h[0], h[1]]),
                dport: u16::from_be_bytes([h[2], h[3]]),
                tcp_flags: h[13],
                known: true,
            }
        }
        proto::UDP => {
            let Some(h) = c.read::<UDP_HLEN>(off) else {
                return L4 {
                    protocol,
                    ..L4::UNKNOWN
                };
            };
            L4 {
                protocol,
                sport: u16::from_be_bytes([h[0], h[1]]),
                dport: u16::from_be_bytes([h[2], h[3]]),
                tcp_flags: 0,
                known: true,
            }
        }
        _ => L4 {
            protocol,
            ..L4::UNKNOWN
        },
    }
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// For an ICMP "port unreachable" (ICMPv4 type 3 code 3, ICMPv6 type 1 code 4) about a UDP
/// datagram, the datagram's destination port: the port that refused it.
#[inline(always)]
pub fn icmp_unreachable_port(c: &Cursor, ip: &Ip) -> Option<u16> {
    let off = ip.l4_off;
    let [kind, code] = c.read::<2>(off)?;
    let inner = off + 8;
    if !ip.v6 && ip.l4.protocol == IPPROTO_ICMP && kind == 3 && code == 3 {
        let h = c.read::<IPV4_MIN_HLEN>(inner)?;
        let ihl = (h[0] & 0x0f) as usize;
        if h[9] != proto::UDP || ihl < 5 {
            return None;
        }
        return c.u16_at(inner + ihl * 4 + 2);
    }
    if ip.v6 && ip.l4.protocol == IPPROTO_ICMPV6 && kind == 1 && code == 4 {
        // The quoted datagram's own extension headers are not walked.
        let h = c.read::<IPV6_HLEN>(inner)?;
        if h[6] != proto::UDP {
            return None;
        }
        return c.u16_at(inner + IPV6_HLEN + 2);
    }
    None
}
