//! Internet checksums (RFC 1071) of built frames.

use std::net::IpAddr;

/// Add `data` as big-endian 16-bit words (odd length: zero-padded) to `sum`, unfolded.
pub(super) fn sum_words(mut sum: u32, data: &[u8]) -> u32 {
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
pub(super) fn checksum_with(initial: u32, data: &[u8]) -> u16 {
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
