//! The layers of a frame below Ethernet and how each is written.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;

/// One VLAN tag: its TPID (the ethertype that announces it) and TCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// [`ethertype::VLAN`] or [`ethertype::QINQ`] (any value is emitted as given).
    pub tpid: u16,
    /// Priority (3 bits), DEI (1 bit) and VLAN id (12 bits).
    pub tci: u16,
}

/// An IPv4 header and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Version field; 4 unless testing a malformed header.
    pub version: u8,
    /// IHL field (header length in 32-bit words); `None` derives it from the options.
    pub ihl: Option<u8>,
    /// DSCP and ECN.
    pub tos: u8,
    /// Total length field; `None` computes it.
    pub total_len: Option<u16>,
    /// Identification.
    pub id: u16,
    /// Don't-fragment flag.
    pub dont_fragment: bool,
    /// More-fragments flag.
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units (13 bits).
    pub fragment_offset: u16,
    /// Time to live.
    pub ttl: u8,
    /// Protocol field; `None` takes it from [`Ipv4::transport`].
    pub protocol: Option<u8>,
    /// Header checksum; `None` computes it.
    pub checksum: Option<u16>,
    /// Option bytes, padded with zeros (end-of-options) to a multiple of 4.
    pub options: Vec<u8>,
    /// The payload.
    pub transport: Transport,
}

/// An IPv6 header, its extension headers and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address (also used in the L4 pseudo-header).
    pub dst: Ipv6Addr,
    /// Version field; 6 unless testing a malformed header.
    pub version: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Payload length field; `None` computes it.
    pub payload_len: Option<u16>,
    /// Hop limit.
    pub hop_limit: u8,
    /// Extension headers in order; each one's next-header field names the one after it.
    pub extensions: Vec<Ext>,
    /// Next-header field of the fixed header; `None` takes it from the first extension or
    /// the transport.
    pub next_header: Option<u8>,
    /// The payload after the extension headers.
    pub transport: Transport,
}

/// An IPv6 extension header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options (protocol 0): option TLVs, padded with Pad1/PadN to 8n − 2 bytes.
    HopByHop(Vec<u8>),
    /// Destination options (protocol 60): option TLVs, padded like [`Ext::HopByHop`].
    DestOpts(Vec<u8>),
    /// Routing header (protocol 43).
    Routing {
        /// Routing type.
        routing_type: u8,
        /// Segments left.
        segments_left: u8,
        /// Type-specific data after the first 4 bytes, zero-padded to 8n − 4 bytes.
        data: Vec<u8>,
    },
    /// Fragment header (protocol 44).
    Fragment {
        /// Fragment offset in 8-byte units (13 bits); non-zero for a non-first fragment.
        offset: u16,
        /// More-fragments flag.
        more: bool,
        /// Identification.
        id: u32,
    },
    /// Authentication header (protocol 51).
    Ah {
        /// Security parameters index.
        spi: u32,
        /// Sequence number.
        seq: u32,
        /// Integrity check value, zero-padded so the header is a multiple of 8 bytes.
        icv: Vec<u8>,
    },
}

impl Ext {
    /// The protocol number that announces this header.
    pub fn protocol(&self) -> u8 {
        match self {
            Ext::HopByHop(_) => ip_proto::HOPOPTS,
            Ext::DestOpts(_) => ip_proto::DSTOPTS,
            Ext::Routing { .. } => ip_proto::ROUTING,
            Ext::Fragment { .. } => ip_proto::FRAGMENT,
            Ext::Ah { .. } => ip_proto::AH,
        }
    }

    /// A routing header of type 0 with no segments left and no data (8 bytes).
    pub fn routing() -> Ext {
        Ext::Routing {
            routing_type: 0,
            segments_left: 0,
            data: Vec::new(),
        }
    }

    /// A fragment header.
    pub fn fragment(offset: u16, more: bool) -> Ext {
        Ext::Fragment {
            offset,
            more,
            id: 0,
        }
    }

    /// An authentication header with a 12-byte zero ICV (24 bytes, like HMAC-SHA1-96).
    pub fn ah() -> Ext {
        Ext::Ah {
            spi: 0x100,
            seq: 1,
            icv: vec![0; 12],
        }
    }

    pub(super) fn write(&self, next: u8, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Ext::HopByHop(opts) | Ext::DestOpts(opts) => {
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(opts);
                pad_options(out, start);
                out[start + 1] = ((out.len() - start) / 8 - 1) as u8;
            }
            Ext::Routing {
                routing_type,
                segments_left,
                data,
            } => {
                out.extend_from_slice(&[next, 0, *routing_type, *segments_left]);
                out.extend_from_slice(data);
                while !(out.len() - start).is_multiple_of(8) {
                    out.push(0);
                }
                out[start + 1] = ((out.len() - start) / 8 - 1) as u8;
            }
            Ext::Fragment { offset, more, id } => {
                let field = ((offset & 0x1fff) << 3) | u16::from(*more);
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&field.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
            Ext::Ah { spi, seq, icv } => {
                out.extend_from_slice(&[next, 0, 0, 0]);
                out.extend_from_slice(&spi.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(icv);
                while !(out.len() - start).is_multiple_of(8) {
                    out.push(0);
                }
                // AH counts 32-bit words minus 2.
                out[start + 1] = ((out.len() - start) / 4 - 2) as u8;
            }
        }
    }
}

/// Pad an options header (started at `start`) to a multiple of 8 with Pad1 or PadN.
pub(super) fn pad_options(out: &mut Vec<u8>, start: usize) {
    let missing = (8 - (out.len() - start) % 8) % 8;
    match missing {
        0 => {}
        1 => out.push(0), // Pad1
        n => {
            out.extend_from_slice(&[1, (n - 2) as u8]); // PadN
            out.extend(std::iter::repeat_n(0, n - 2));
        }
    }
}

/// What an IP header carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment.
    Tcp(Tcp),
    /// A UDP datagram.
    Udp(Udp),
    /// Any protocol number followed by raw bytes (e.g. the body of a non-first fragment).
    Raw {
        /// IPv4 protocol / IPv6 next header.
        protocol: u8,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// No L4 header: IPv4 protocol [`ip_proto::RESERVED`], IPv6 [`ip_proto::NONE`], and no
    /// bytes unless padded.
    None,
}

impl Transport {
    pub(super) fn protocol(&self, v6: bool) -> u8 {
        match self {
            Transport::Tcp(_) => ip_proto::TCP,
            Transport::Udp(_) => ip_proto::UDP,
            Transport::Raw { protocol, .. } => *protocol,
            Transport::None if v6 => ip_proto::NONE,
            Transport::None => ip_proto::RESERVED,
        }
    }

    /// Serialise with `extra` zero bytes of payload; `pseudo` is the checksum pseudo-header
    /// sum without the length (which depends on what is emitted here).
    pub(super) fn write(&self, extra: usize, pseudo: u32, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Transport::Tcp(t) => {
                let hlen = TCP_HLEN + t.options.len().div_ceil(4) * 4;
                out.extend_from_slice(&t.src_port.to_be_bytes());
                out.extend_from_slice(&t.dst_port.to_be_bytes());
                out.extend_from_slice(&t.seq.to_be_bytes());
                out.extend_from_slice(&t.ack.to_be_bytes());
                let offset = t.data_offset.unwrap_or((hlen / 4) as u8);
                out.push(offset << 4);
                out.push(t.flags);
                out.extend_from_slice(&t.window.to_be_bytes());
                out.extend_from_slice(&[0, 0]); // checksum
                out.extend_from_slice(&t.urgent.to_be_bytes());
                out.extend_from_slice(&t.options);
                while out.len() - start < hlen {
                    out.push(0);
                }
                out.extend_from_slice(&t.payload);
                out.extend(std::iter::repeat_n(0, extra));
                let len = out.len() - start;
                let sum = pseudo + len as u32 + u32::from(ip_proto::TCP);
                let ck = checksum_with(sum, &out[start..]);
                out[start + 16..start + 18].copy_from_slice(&ck.to_be_bytes());
            }
            Transport::Udp(u) => {
                let len = UDP_HLEN + u.payload.len() + extra;
                out.extend_from_slice(&u.src_port.to_be_bytes());
                out.extend_from_slice(&u.dst_port.to_be_bytes());
                let len_field = u.length.unwrap_or(len as u16);
                out.extend_from_slice(&len_field.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&u.payload);
                out.extend(std::iter::repeat_n(0, extra));
                let sum = pseudo + len as u32 + u32::from(ip_proto::UDP);
                let ck = match checksum_with(sum, &out[start..]) {
                    // 0 means "no checksum" in UDP; a computed 0 is sent as all ones.
                    0 => 0xffff,
                    c => c,
                };
                out[start + 6..start + 8].copy_from_slice(&ck.to_be_bytes());
            }
            Transport::Raw { payload, .. } => {
                out.extend_from_slice(payload);
                out.extend(std::iter::repeat_n(0, extra));
            }
            Transport::None => out.extend(std::iter::repeat_n(0, extra)),
        }
    }

    pub(super) fn header_len(&self) -> Option<usize> {
        match self {
            Transport::Tcp(t) => Some(TCP_HLEN + t.options.len().div_ceil(4) * 4),
            Transport::Udp(_) => Some(UDP_HLEN),
            Transport::Raw { .. } | Transport::None => None,
        }
    }
}

/// A TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Data offset field; `None` derives it from the options.
    pub data_offset: Option<u8>,
    /// Flags ([`tcp_flags`]).
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Option bytes, zero-padded to a multiple of 4.
    pub options: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Tcp {
    /// A segment between two ports with the ACK flag (an established flow), window 65535.
    pub fn new(src_port: u16, dst_port: u16) -> Tcp {
        Tcp {
            src_port,
            dst_port,
            seq: 1,
            ack: 1,
            data_offset: None,
            flags: tcp_flags::ACK,
            window: 65535,
            urgent: 0,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }
}

/// A UDP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Udp {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Length field; `None` computes it.
    pub length: Option<u16>,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Udp {
    /// An empty datagram between two ports.
    pub fn new(src_port: u16, dst_port: u16) -> Udp {
        Udp {
            src_port,
            dst_port,
            length: None,
            payload: Vec::new(),
        }
    }
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arp {
    /// Operation: 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: [u8; 6],
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
    /// Bytes after the ARP body (Ethernet padding).
    pub trailer: Vec<u8>,
}

/// Offsets of the layers in a built frame (before truncation), for code that rewrites
/// fields in place (e.g. a generator that changes the source address per frame).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the layer after the Ethernet header and tags.
    pub l3: usize,
    /// Offset of the source address in the IP header.
    pub src_addr: Option<usize>,
    /// Offset of the TCP/UDP header.
    pub l4: Option<usize>,
    /// Offset of the innermost payload.
    pub payload: usize,
    /// Frame length before truncation.
    pub len: usize,
}

/// The payload bytes of a transport, leaving it empty.
pub(super) fn take_payload(t: &mut Transport) -> Vec<u8> {
    match t {
        Transport::Tcp(x) => std::mem::take(&mut x.payload),
        Transport::Udp(x) => std::mem::take(&mut x.payload),
        Transport::Raw { payload, .. } => std::mem::take(payload),
        Transport::None => Vec::new(),
    }
}

pub(super) fn write_ipv4(
    h: &Ipv4,
    extra: usize,
    out: &mut Vec<u8>,
    frame_start: usize,
    layout: &mut Layout,
) {
    let start = out.len();
    let opt_len = h.options.len().div_ceil(4) * 4;
    let hlen = IPV4_HLEN + opt_len;
    let ihl = h.ihl.unwrap_or((hlen / 4) as u8);
    out.push((h.version << 4) | (ihl & 0x0f));
    out.push(h.tos);
    out.extend_from_slice(&[0, 0]); // total length, below
    out.extend_from_slice(&h.id.to_be_bytes());
    let frag = (u16::from(h.dont_fragment) << 14)
        | (u16::from(h.more_fragments) << 13)
        | (h.fragment_offset & 0x1fff);
    out.extend_from_slice(&frag.to_be_bytes());
    out.push(h.ttl);
    out.push(h.protocol.unwrap_or(h.transport.protocol(false)));
    out.extend_from_slice(&[0, 0]); // checksum, below
    out.extend_from_slice(&h.src.octets());
    out.extend_from_slice(&h.dst.octets());
    out.extend_from_slice(&h.options);
    while out.len() - start < hlen {
        out.push(0);
    }
    layout.src_addr = Some(start + 12 - frame_start);
    layout.l4 = h.transport.header_len().map(|_| out.len() - frame_start);
    layout.payload = out.len() - frame_start + h.transport.header_len().unwrap_or(0);
    let pseudo = sum_words(0, &h.src.octets()) + sum_words(0, &h.dst.octets());
    h.transport.write(extra, pseudo, out);
    let total = h.total_len.unwrap_or((out.len() - start) as u16);
    out[start + 2..start + 4].copy_from_slice(&total.to_be_bytes());
    let ck = h
        .checksum
        .unwrap_or_else(|| internet_checksum(&out[start..start + hlen]));
    out[start + 10..start + 12].copy_from_slice(&ck.to_be_bytes());
}

pub(super) fn write_ipv6(
    h: &Ipv6,
    extra: usize,
    out: &mut Vec<u8>,
    frame_start: usize,
    layout: &mut Layout,
) {
    let start = out.len();
    let first = h
        .extensions
        .first()
        .map_or_else(|| h.transport.protocol(true), Ext::protocol);
    let word = (u32::from(h.version) << 28)
        | (u32::from(h.traffic_class) << 20)
        | (h.flow_label & 0x000f_ffff);
    out.extend_from_slice(&word.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // payload length, below
    out.push(h.next_header.unwrap_or(first));
    out.push(h.hop_limit);
    out.extend_from_slice(&h.src.octets());
    out.extend_from_slice(&h.dst.octets());
    layout.src_addr = Some(start + 8 - frame_start);
    for (i, ext) in h.extensions.iter().enumerate() {
        let next = h
            .extensions
            .get(i + 1)
            .map_or_else(|| h.transport.protocol(true), Ext::protocol);
        ext.write(next, out);
    }
    layout.l4 = h.transport.header_len().map(|_| out.len() - frame_start);
    layout.payload = out.len() - frame_start + h.transport.header_len().unwrap_or(0);
    let pseudo = sum_words(0, &h.src.octets()) + sum_words(0, &h.dst.octets());
    h.transport.write(extra, pseudo, out);
    let len = h
        .payload_len
        .unwrap_or((out.len() - start - IPV6_HLEN) as u16);
    out[start + 4..start + 6].copy_from_slice(&len.to_be_bytes());
}
