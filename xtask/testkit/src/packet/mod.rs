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

mod checksum;
mod header;
#[cfg(test)]
mod tests;

use checksum::{checksum_with, sum_words};
pub use checksum::{internet_checksum, l4_checksum};
pub use header::{Arp, Ext, Ipv4, Ipv6, Layout, Tcp, Transport, Udp, VlanTag};
use header::{take_payload, write_ipv4, write_ipv6};

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
