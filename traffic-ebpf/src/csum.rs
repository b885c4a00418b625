//! Internet checksums (RFC 1071): sums of big-endian 16-bit words, folded to 16 bits and
//! complemented. Pure functions, the same for the traffic program and the bench programs.

/// Add the big-endian 16-bit words of `bytes` to `sum` (an odd last byte is ignored: every
/// header summed here has an even length).
#[inline(always)]
pub fn add_words<const N: usize>(sum: u32, bytes: &[u8; N]) -> u32 {
    let mut s = sum;
    let mut i = 0;
    while i + 1 < N {
        s += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    s
}

/// Fold a 32-bit sum into the 16-bit checksum. Two folds suffice for sums of fewer than
/// 2^16 words.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// A checksum updated for a 32-bit word of the data it covers changing from `old` to `new`
/// (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline(always)]
pub const fn replace4(csum: u16, old: u32, new: u32) -> u16 {
    let mut sum: u32 = (!csum) as u32 & 0xffff;
    sum += (!(old >> 16)) & 0xffff;
    sum += (!old) & 0xffff;
    sum += new >> 16;
    sum += new & 0xffff;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 checksum of big-endian 16-bit words, folded until it fits.
    fn full(words: &[u16]) -> u16 {
        let mut sum: u32 = words.iter().map(|w| u32::from(*w)).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn to_bytes<const N: usize>(words: &[u16]) -> [u8; N] {
        let mut b = [0u8; N];
        for (i, w) in words.iter().enumerate() {
            b[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
        }
        b
    }

    #[test]
    fn ipv4_header_checksum_of_a_known_header() {
        // A well-known IPv4 header whose checksum is 0xb861 (the example in Wikipedia's
        // IPv4 article).
        let words = [
            0x4500, 0x0073, 0x0000, 0x4000, 0x4011, 0, 0xc0a8, 0x0001, 0xc0a8, 0x00c7,
        ];
        let bytes: [u8; 20] = to_bytes(&words);
        assert_eq!(fold(add_words(0, &bytes)), 0xb861);
        assert_eq!(fold(add_words(0, &bytes)), full(&words));
    }

    #[test]
    fn fold_carries_twice() {
        // 0xffff + 0xffff + … overflows 16 bits more than once.
        let bytes = [0xffu8; 32];
        let words = [0xffffu16; 16];
        assert_eq!(fold(add_words(0, &bytes)), full(&words));
        // Checksum over data including its own checksum is 0.
        let mut hdr: [u8; 20] = to_bytes(&[
            0x4500, 0x003c, 0x1c46, 0x4000, 0x4006, 0, 0xac10, 0x0a63, 0xac10, 0x0a0c,
        ]);
        let sum = fold(add_words(0, &hdr));
        hdr[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(fold(add_words(0, &hdr)), 0);
    }

    #[test]
    fn incremental_update_equals_recomputation() {
        let mut words = [
            0x4500, 0x003c, 0x1c46, 0x4000, 0x4006, 0, 0xc612, 0x0001, 0xc613, 0xff01,
        ];
        for new in [
            0xc612_0002u32,
            0xc613_ffff,
            0,
            0xffff_ffff,
            0x2001_0db8,
            0x8000_0001,
        ] {
            let old = (u32::from(words[6]) << 16) | u32::from(words[7]);
            let before = full(&words);
            words[6] = (new >> 16) as u16;
            words[7] = new as u16;
            let want = full(&words);
            let got = replace4(before, old, new);
            // 0x0000 and 0xffff are the same value in ones' complement.
            let same = got == want || (got, want) == (0, 0xffff) || (got, want) == (0xffff, 0);
            assert!(same, "{got:#x} vs {want:#x}");
        }
    }
}
