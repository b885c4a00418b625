//! Header layouts the programs read and write: lengths, type codes and flag bits, each
//! defined once. Offsets are from the start of the header they belong to.

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// Ethernet address length.
pub const ETH_ALEN: usize = 6;
/// Offset of the ethertype in the Ethernet header.
pub const ETH_TYPE_OFFSET: usize = 12;
/// Ethertype of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// Ethertype of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// Ethertype of an 802.1ad (QinQ) service tag.
pub const ETH_P_8021AD: u16 = 0x88A8;
/// VLAN tag length.
pub const VLAN_HLEN: usize = 4;
/// VLAN tags the parser walks (QinQ).
pub const MAX_VLAN_TAGS: usize = 2;
/// Deepest L3 offset: Ethernet and [`MAX_VLAN_TAGS`] tags.
pub const MAX_L3: usize = ETH_HLEN + MAX_VLAN_TAGS * VLAN_HLEN;

/// IPv4 header without options.
pub const IPV4_MIN_HLEN: usize = 20;
/// IPv6 fixed header.
pub const IPV6_HLEN: usize = 40;
/// IPv6 extension headers walked before giving up on finding the L4 header.
pub const MAX_EXT_HEADERS: usize = 6;

/// IPv6 hop-by-hop options header.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// ICMP (IPv4).
pub const IPPROTO_ICMP: u8 = 1;
/// IPv6 routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 fragment header.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// Authentication header (length in 4-byte units, unlike the other extension headers).
pub const IPPROTO_AH: u8 = 51;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 destination options header.
pub const IPPROTO_DSTOPTS: u8 = 60;

/// TCP header without options.
pub const TCP_MIN_HLEN: usize = 20;
/// UDP header.
pub const UDP_HLEN: usize = 8;
/// Offset of the flags byte in the TCP header.
pub const TCP_FLAGS_OFFSET: usize = 13;
/// TCP SYN flag.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST flag.
pub const TCP_RST: u8 = 0x04;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;

/// ICMP header length before the quoted datagram.
pub const ICMP_HLEN: usize = 8;
/// ICMPv4 "destination unreachable" and its "port unreachable" code.
pub const ICMP_DEST_UNREACH: (u8, u8) = (3, 3);
/// ICMPv6 "destination unreachable" and its "port unreachable" code.
pub const ICMPV6_DEST_UNREACH: (u8, u8) = (1, 4);
