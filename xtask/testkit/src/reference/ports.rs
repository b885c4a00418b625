//! Rule 7 of the reference: whether a frame hides its port from the port rules (see the
//! module documentation of [`crate::reference`]).

use crate::packet::{IPV6_HLEN, TCP_HLEN, UDP_HLEN, ip_proto};

/// Deepest offset (from the frame's first byte) at which the program starts a read: a
/// header that starts further in is unreadable.
pub const MAX_READ_OFFSET: usize = 512;
/// IPv6 headers (extension headers, then the L4 one) the walk looks at.
pub const MAX_V6_HEADERS: usize = 6;

/// Which protocols have port rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRules {
    /// Some TCP port has a rule.
    pub tcp: bool,
    /// Some UDP port has a rule.
    pub udp: bool,
}

/// A port the walk could not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hidden {
    /// The walk never reached the L4 header: it may be any protocol.
    Any,
    /// A cut TCP or UDP header.
    Protocol(u8),
}

impl PortRules {
    /// Whether the IP packet whose (valid) IP header starts at `l3` hides its port from
    /// these rules.
    pub fn hidden_by(&self, frame: &[u8], l3: usize, v6: bool) -> bool {
        match hidden(frame, l3, v6) {
            None => false,
            Some(Hidden::Any) => self.tcp || self.udp,
            Some(Hidden::Protocol(ip_proto::TCP)) => self.tcp,
            Some(Hidden::Protocol(_)) => self.udp,
        }
    }
}

/// `n` bytes at absolute offset `off`, as the program reads them.
fn read(frame: &[u8], off: usize, n: usize) -> Option<&[u8]> {
    if off > MAX_READ_OFFSET {
        return None;
    }
    frame.get(off..off.checked_add(n)?)
}

/// A TCP (20 bytes) or UDP (8 bytes) header at `off` that is not all there.
fn cut_l4(frame: &[u8], off: usize, protocol: u8) -> Option<Hidden> {
    let need = match protocol {
        ip_proto::TCP => TCP_HLEN,
        ip_proto::UDP => UDP_HLEN,
        _ => return None,
    };
    read(frame, off, need)
        .is_none()
        .then_some(Hidden::Protocol(protocol))
}

fn hidden(frame: &[u8], l3: usize, v6: bool) -> Option<Hidden> {
    let ip = &frame[l3..];
    if !v6 {
        // A non-first fragment carries no port to hide.
        if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
            return None;
        }
        return cut_l4(frame, l3 + usize::from(ip[0] & 0x0f) * 4, ip[9]);
    }
    let mut next = ip[6];
    let mut off = l3 + IPV6_HLEN;
    for _ in 0..MAX_V6_HEADERS {
        match next {
            ip_proto::HOPOPTS | ip_proto::ROUTING | ip_proto::DSTOPTS | ip_proto::AH => {
                let Some(h) = read(frame, off, 2) else {
                    return Some(Hidden::Any);
                };
                let len = usize::from(h[1]);
                // AH counts 4-byte units minus 2; the others 8-byte units minus 1.
                off += if next == ip_proto::AH {
                    (len + 2) * 4
                } else {
                    (len + 1) * 8
                };
                next = h[0];
            }
            ip_proto::FRAGMENT => {
                let Some(h) = read(frame, off, 4) else {
                    return Some(Hidden::Any);
                };
                if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                    return None;
                }
                next = h[0];
                off += 8;
            }
            p => return cut_l4(frame, off, p),
        }
    }
    Some(Hidden::Any)
}
