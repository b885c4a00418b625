//! Crafted Ethernet frames for program tests, fuzzing, load generation and benchmarks.
//!
//! A [`Frame`] describes a frame layer by layer — Ethernet, 0–2 (or more) VLAN tags, then
//! IPv4, IPv6 (with a chain of extension headers), ARP or any raw ethertype, then TCP, UDP
//! or raw bytes — and [`Frame::build`] serialises it with every length and checksum
//! computed from what is actually emitted. Fields that tests of a parser need to get wrong
//! on purpose (IPv4 version and IHL, IPv6 version, length fields, the IPv4 checksum) can be
//! overridden, and [`Frame::truncate`] cuts the finished frame anywhere.
//!
//! Building is deterministic: no randomness, no clock, identical input gives identical
//! bytes. Defaults are locally administered MACs `02:00:00:00:00:01` → `…:02`, TTL/hop limit
//! 64, identification 0, no padding to the 60-byte Ethernet minimum (use
//! [`Frame::pad_to`]).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use traffic_testkit::packet::{Frame, tcp_flags};
//!
//! let syn = Frame::ipv4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2))
//!     .vlan(10)
//!     .tcp(40000, 443)
//!     .tcp_flags(tcp_flags::SYN)
//!     .build();
//! assert_eq!(syn.len(), 14 + 4 + 20 + 20);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ethertypes.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag (customer tag).
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// 802.1ad service tag (outer tag of QinQ).
    pub const QINQ: u16 = 0x88A8;
    /// LLDP, a common non-IP frame.
    pub const LLDP: u16 = 0x88CC;
}

/// IP protocol numbers (IPv4 protocol / IPv6 next header).
pub mod ip_proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPTS: u8 = 0;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
    /// Reserved; used as the IPv4 protocol of [`crate::packet::Transport::None`].
    pub const RESERVED: u8 = 255;
}

/// TCP flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
}

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// VLAN tag length.
pub const VLAN_HLEN: usize = 4;
/// IPv4 header length without options.
pub const IPV4_HLEN: usize = 20;
/// IPv6 fixed header length.
pub const IPV6_HLEN: usize = 40;
/// TCP header length without options.
pub const TCP_HLEN: usize = 20;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// ARP body length for Ethernet/IPv4.
pub const ARP_LEN: usize = 28;
/// Smallest Ethernet frame on the wire without the FCS.
pub const ETH_MIN_LEN: usize = 60;

/// One VLAN tag: its TPID (the ethertype that announces it) and TCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// [`ethertype::VLAN`] or [`ethertype::QINQ`] (any value is emitted as given).
    pub tpid: u16,
    /// Priority (3 bits), DEI (1 bit) and VLAN id (12 bits).
    pub tci: u16,
}

/// A frame, outermost layer first. Build it with the constructors and chained setters of
/// this type, or fill the public fields directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// VLAN tags, outermost first.
    pub tags: Vec<VlanTag>,
    /// What follows the Ethernet header and tags.
    pub network: Network,
    /// Grow the innermost payload with zeros until the frame has at least this many bytes.
    pub pad_to: Option<usize>,
    /// Cut the finished frame to at most this many bytes.
    pub truncate_to: Option<usize>,
}

/// The layer after Ethernet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// IPv4 and what it carries.
    Ipv4(Ipv4),
    /// IPv6 and what it carries.
    Ipv6(Ipv6),
    /// ARP for IPv4 over Ethernet.
    Arp(Arp),
    /// Any ethertype followed by raw bytes.
    Raw {
        /// Ethertype.
        ethertype: u16,
        /// Bytes after the ethertype.
        payload: Vec<u8>,
    },
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

    fn write(&self, next: u8, out: &mut Vec<u8>) {
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
fn pad_options(out: &mut Vec<u8>, start: usize) {
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
    fn protocol(&self, v6: bool) -> u8 {
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
    fn write(&self, extra: usize, pseudo: u32, out: &mut Vec<u8>) {
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

    fn header_len(&self) -> Option<usize> {
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

/// Default source MAC.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Default destination MAC.
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

impl Frame {
    fn with(network: Network) -> Frame {
        Frame {
            dst_mac: DST_MAC,
            src_mac: SRC_MAC,
            tags: Vec::new(),
            network,
            pad_to: None,
            truncate_to: None,
        }
    }

    /// An IPv4 packet with no L4 header (see [`Transport::None`]); add one with
    /// [`Frame::tcp`] or [`Frame::udp`].
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Frame {
        Frame::with(Network::Ipv4(Ipv4 {
            src,
            dst,
            version: 4,
            ihl: None,
            tos: 0,
            total_len: None,
            id: 0,
            dont_fragment: false,
            more_fragments: false,
            fragment_offset: 0,
            ttl: 64,
            protocol: None,
            checksum: None,
            options: Vec::new(),
            transport: Transport::None,
        }))
    }

    /// An IPv6 packet with no L4 header (see [`Transport::None`]).
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Frame {
        Frame::with(Network::Ipv6(Ipv6 {
            src,
            dst,
            version: 6,
            traffic_class: 0,
            flow_label: 0,
            payload_len: None,
            hop_limit: 64,
            extensions: Vec::new(),
            next_header: None,
            transport: Transport::None,
        }))
    }

    /// An IPv4 or IPv6 packet, by the family of `src`.
    ///
    /// # Panics
    /// If `src` and `dst` are of different families.
    pub fn ip(src: IpAddr, dst: IpAddr) -> Frame {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Frame::ipv4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => Frame::ipv6(s, d),
            _ => panic!("Frame::ip: {src} and {dst} are of different families"),
        }
    }

    /// An ARP request: who has `target_ip`? Tell `sender_ip`.
    pub fn arp_request(sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Frame {
        let mut f = Frame::with(Network::Arp(Arp {
            op: 1,
            sender_mac: SRC_MAC,
            sender_ip,
            target_mac: [0; 6],
            target_ip,
            trailer: Vec::new(),
        }));
        f.dst_mac = [0xff; 6];
        f
    }

    /// Any ethertype followed by `payload`.
    pub fn raw(ethertype: u16, payload: &[u8]) -> Frame {
        Frame::with(Network::Raw {
            ethertype,
            payload: payload.to_vec(),
        })
    }

    /// Set the source and destination MACs.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Frame {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Add a tag (inside the tags already added).
    pub fn tag(mut self, tpid: u16, tci: u16) -> Frame {
        self.tags.push(VlanTag { tpid, tci });
        self
    }

    /// Add an 802.1Q tag with VLAN id `vid` (inside the tags already added).
    pub fn vlan(self, vid: u16) -> Frame {
        self.tag(ethertype::VLAN, vid & 0x0fff)
    }

    /// Add QinQ tags: an 802.1ad service tag `outer` then an 802.1Q tag `inner`.
    pub fn qinq(self, outer: u16, inner: u16) -> Frame {
        self.tag(ethertype::QINQ, outer & 0x0fff).vlan(inner)
    }

    /// Carry a TCP segment with the ACK flag (see [`Tcp::new`]); set flags with
    /// [`Frame::tcp_flags`]. Keeps an existing payload.
    ///
    /// # Panics
    /// If the frame is not IPv4 or IPv6 (as every L3/L4 setter does).
    pub fn tcp(mut self, src_port: u16, dst_port: u16) -> Frame {
        let t = self.transport_mut();
        let payload = take_payload(t);
        let mut tcp = Tcp::new(src_port, dst_port);
        tcp.payload = payload;
        *t = Transport::Tcp(tcp);
        self
    }

    /// Carry a UDP datagram. Keeps an existing payload.
    pub fn udp(mut self, src_port: u16, dst_port: u16) -> Frame {
        let t = self.transport_mut();
        let payload = take_payload(t);
        let mut udp = Udp::new(src_port, dst_port);
        udp.payload = payload;
        *t = Transport::Udp(udp);
        self
    }

    /// Carry raw bytes under an IP protocol number. Keeps an existing payload.
    pub fn ip_protocol(mut self, protocol: u8) -> Frame {
        let t = self.transport_mut();
        let payload = take_payload(t);
        *t = Transport::Raw { protocol, payload };
        self
    }

    /// Replace the transport.
    pub fn transport(mut self, transport: Transport) -> Frame {
        *self.transport_mut() = transport;
        self
    }

    /// Set the TCP flags.
    ///
    /// # Panics
    /// If the frame carries no TCP segment.
    pub fn tcp_flags(mut self, flags: u8) -> Frame {
        match self.transport_mut() {
            Transport::Tcp(t) => t.flags = flags,
            other => panic!("tcp_flags on a frame without TCP: {other:?}"),
        }
        self
    }

    /// Set the innermost payload: after the TCP/UDP header, after the IP header when there
    /// is none (under protocol [`ip_proto::RESERVED`] / [`ip_proto::NONE`] unless one was
    /// set), the ARP trailer, or the bytes after a raw ethertype.
    pub fn payload(mut self, bytes: &[u8]) -> Frame {
        match &mut self.network {
            Network::Arp(a) => a.trailer = bytes.to_vec(),
            Network::Raw { payload, .. } => *payload = bytes.to_vec(),
            Network::Ipv4(_) | Network::Ipv6(_) => {
                let v6 = matches!(self.network, Network::Ipv6(_));
                let t = self.transport_mut();
                match t {
                    Transport::Tcp(x) => x.payload = bytes.to_vec(),
                    Transport::Udp(x) => x.payload = bytes.to_vec(),
                    Transport::Raw { payload, .. } => *payload = bytes.to_vec(),
                    Transport::None => {
                        *t = Transport::Raw {
                            protocol: Transport::None.protocol(v6),
                            payload: bytes.to_vec(),
                        }
                    }
                }
            }
        }
        self
    }

    /// Set IPv4 options (zero-padded to a multiple of 4 bytes; at most 40 make a valid
    /// header, more are emitted as given with an IHL that wraps — use [`Frame::ihl`]).
    pub fn ipv4_options(mut self, options: &[u8]) -> Frame {
        self.ipv4_mut().options = options.to_vec();
        self
    }

    /// Override the IPv4 IHL field (header length in 32-bit words).
    pub fn ihl(mut self, ihl: u8) -> Frame {
        self.ipv4_mut().ihl = Some(ihl);
        self
    }

    /// Override the IP version field (IPv4 or IPv6 header).
    pub fn ip_version(mut self, version: u8) -> Frame {
        match &mut self.network {
            Network::Ipv4(h) => h.version = version,
            Network::Ipv6(h) => h.version = version,
            other => panic!("ip_version on a non-IP frame: {other:?}"),
        }
        self
    }

    /// Mark the packet as a fragment: `offset` in 8-byte units, `more` fragments follow.
    /// IPv4 sets the header's fields; IPv6 appends a fragment extension header.
    pub fn fragment(mut self, offset: u16, more: bool) -> Frame {
        match &mut self.network {
            Network::Ipv4(h) => {
                h.fragment_offset = offset;
                h.more_fragments = more;
            }
            Network::Ipv6(h) => h.extensions.push(Ext::fragment(offset, more)),
            other => panic!("fragment on a non-IP frame: {other:?}"),
        }
        self
    }

    /// Append an IPv6 extension header.
    ///
    /// # Panics
    /// If the frame is not IPv6.
    pub fn ext(mut self, ext: Ext) -> Frame {
        match &mut self.network {
            Network::Ipv6(h) => h.extensions.push(ext),
            other => panic!("ext on a non-IPv6 frame: {other:?}"),
        }
        self
    }

    /// Set the IPv4 TTL or the IPv6 hop limit.
    pub fn ttl(mut self, ttl: u8) -> Frame {
        match &mut self.network {
            Network::Ipv4(h) => h.ttl = ttl,
            Network::Ipv6(h) => h.hop_limit = ttl,
            other => panic!("ttl on a non-IP frame: {other:?}"),
        }
        self
    }

    /// Grow the innermost payload with zeros until the frame is at least `len` bytes long
    /// (lengths and checksums include the padding). No effect on a longer frame.
    pub fn pad_to(mut self, len: usize) -> Frame {
        self.pad_to = Some(len);
        self
    }

    /// Cut the finished frame (lengths and checksums computed first) to at most `len` bytes.
    pub fn truncate(mut self, len: usize) -> Frame {
        self.truncate_to = Some(len);
        self
    }

    /// The IPv4 header, to set fields without a setter.
    ///
    /// # Panics
    /// If the frame is not IPv4.
    pub fn ipv4_mut(&mut self) -> &mut Ipv4 {
        match &mut self.network {
            Network::Ipv4(h) => h,
            other => panic!("not an IPv4 frame: {other:?}"),
        }
    }

    /// The IPv6 header, to set fields without a setter.
    ///
    /// # Panics
    /// If the frame is not IPv6.
    pub fn ipv6_mut(&mut self) -> &mut Ipv6 {
        match &mut self.network {
            Network::Ipv6(h) => h,
            other => panic!("not an IPv6 frame: {other:?}"),
        }
    }

    /// The IP payload.
    ///
    /// # Panics
    /// If the frame is not IPv4 or IPv6.
    pub fn transport_mut(&mut self) -> &mut Transport {
        match &mut self.network {
            Network::Ipv4(h) => &mut h.transport,
            Network::Ipv6(h) => &mut h.transport,
            other => panic!("not an IP frame: {other:?}"),
        }
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// Append the frame's bytes to `out` (reuses its allocation in loops).
    pub fn write_to(&self, out: &mut Vec<u8>) -> Layout {
        let start = out.len();
        let mut layout = self.assemble(0, out);
        if let Some(min) = self.pad_to
            && layout.len < min
        {
            out.truncate(start);
            layout = self.assemble(min - layout.len, out);
        }
        if let Some(max) = self.truncate_to {
            out.truncate(start + max.min(layout.len));
        }
        layout
    }

    /// Offsets of the layers (see [`Layout`]).
    pub fn layout(&self) -> Layout {
        let mut out = Vec::new();
        self.write_to(&mut out)
    }

    fn assemble(&self, extra: usize, out: &mut Vec<u8>) -> Layout {
        let start = out.len();
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        // Each tag's TPID sits where the ethertype would be, followed by its TCI; the
        // ethertype of the network layer comes after the last tag.
        for tag in &self.tags {
            out.extend_from_slice(&tag.tpid.to_be_bytes());
            out.extend_from_slice(&tag.tci.to_be_bytes());
        }
        let ethertype = match &self.network {
            Network::Ipv4(_) => ethertype::IPV4,
            Network::Ipv6(_) => ethertype::IPV6,
            Network::Arp(_) => ethertype::ARP,
            Network::Raw { ethertype, .. } => *ethertype,
        };
        out.extend_from_slice(&ethertype.to_be_bytes());
        let l3 = out.len() - start;
        let mut layout = Layout {
            l3,
            ..Layout::default()
        };
        match &self.network {
            Network::Ipv4(h) => write_ipv4(h, extra, out, start, &mut layout),
            Network::Ipv6(h) => write_ipv6(h, extra, out, start, &mut layout),
            Network::Arp(a) => {
                out.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
                out.extend_from_slice(&ethertype::IPV4.to_be_bytes());
                out.extend_from_slice(&[6, 4]);
                out.extend_from_slice(&a.op.to_be_bytes());
                out.extend_from_slice(&a.sender_mac);
                out.extend_from_slice(&a.sender_ip.octets());
                out.extend_from_slice(&a.target_mac);
                out.extend_from_slice(&a.target_ip.octets());
                layout.payload = out.len() - start;
                out.extend_from_slice(&a.trailer);
                out.extend(std::iter::repeat_n(0, extra));
            }
            Network::Raw { payload, .. } => {
                layout.payload = l3;
                out.extend_from_slice(payload);
                out.extend(std::iter::repeat_n(0, extra));
            }
        }
        layout.len = out.len() - start;
        layout
    }
}

/// The payload bytes of a transport, leaving it empty.
fn take_payload(t: &mut Transport) -> Vec<u8> {
    match t {
        Transport::Tcp(x) => std::mem::take(&mut x.payload),
        Transport::Udp(x) => std::mem::take(&mut x.payload),
        Transport::Raw { payload, .. } => std::mem::take(payload),
        Transport::None => Vec::new(),
    }
}

fn write_ipv4(h: &Ipv4, extra: usize, out: &mut Vec<u8>, frame_start: usize, layout: &mut Layout) {
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

fn write_ipv6(h: &Ipv6, extra: usize, out: &mut Vec<u8>, frame_start: usize, layout: &mut Layout) {
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

/// Add `data` as big-endian 16-bit words (odd length: zero-padded) to `sum`, unfolded.
fn sum_words(mut sum: u32, data: &[u8]) -> u32 {
    let (words, rest) = data.as_chunks::<2>();
    for w in words {
        sum += u32::from(u16::from_be_bytes(*w));
    }
    if let [last] = rest {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// The Internet checksum (RFC 1071) of `data` starting from a partial sum `initial`.
fn checksum_with(initial: u32, data: &[u8]) -> u16 {
    let mut sum = u64::from(initial);
    // Fold wide: sums of long frames may exceed u32 only in theory, but stay exact.
    let (words, rest) = data.as_chunks::<2>();
    for w in words {
        sum += u64::from(u16::from_be_bytes(*w));
    }
    if let [last] = rest {
        sum += u64::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum (RFC 1071) of `data`: the ones' complement of the ones' complement
/// sum of its 16-bit big-endian words. Over a header that contains its correct checksum the
/// result is 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    checksum_with(0, data)
}

/// The TCP/UDP checksum of `segment` (checksum field included as it is) under the IPv4 or
/// IPv6 pseudo-header; 0 for a segment that carries its correct checksum.
///
/// # Panics
/// If `src` and `dst` are of different families.
pub fn l4_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum_words(sum_words(0, &s.octets()), &d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum_words(sum_words(0, &s.octets()), &d.octets()),
        _ => panic!("l4_checksum: {src} and {dst} are of different families"),
    };
    checksum_with(pseudo + segment.len() as u32 + u32::from(protocol), segment)
}

#[cfg(test)]
mod tests {
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
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
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
            0xc612u32, 0x0001, 0xc612, 0x0002, 0x0011, 0x000d, 0x04d2, 0x0035, 0x000d, 0x6865,
            0x6c6c, 0x6f00,
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
}
