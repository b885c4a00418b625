//! The one bounds-checked view of a frame: every read and write of packet bytes in the
//! programs goes through [`Frame`], which checks the range against the frame's end before it
//! forms a pointer, so the verifier sees each access guarded and no frame content can make
//! a program fault. Offsets are kept below [`MAX_OFFSET`] so their ranges stay bounded.

/// Deepest offset a program looks at; a header chain that goes further leaves the L4 header
/// unknown (the packet is still classified by its source).
pub const MAX_OFFSET: usize = 512;

/// The bytes `[start, end)` of one frame.
pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    /// A view of the frame at `[start, end)`.
    ///
    /// # Safety
    /// `[start, end)` must be one frame's bytes (an XDP or TC context's `data..data_end`),
    /// readable for as long as the view is used (and writable, if it is written through),
    /// with no Rust reference into it held elsewhere.
    #[inline(always)]
    pub unsafe fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Frame length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the frame has no bytes.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Address of `N` bytes at `off`, if they are inside the frame.
    #[inline(always)]
    fn at<const N: usize>(&self, off: usize) -> Option<usize> {
        if off > MAX_OFFSET {
            return None;
        }
        let p = self.start + off;
        if p + N > self.end {
            return None;
        }
        Some(p)
    }

    /// The bytes `[off, off + N)`, borrowed.
    #[inline(always)]
    pub fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        let p = self.at::<N>(off)?;
        // SAFETY: `at` checked that [p, p + N) is inside the frame, which `new`'s caller
        // vouched is readable; `[u8; N]` has alignment 1.
        Some(unsafe { &*(p as *const [u8; N]) })
    }

    /// `N` bytes at `off`, copied out. `N` ≥ 2: for single bytes LLVM rewrites the bounds
    /// check `p + 1 > end` into `p >= end`, which the TC verifier does not accept.
    #[inline(always)]
    pub fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.bytes::<N>(off).copied()
    }

    /// The big-endian `u16` at `off`.
    #[inline(always)]
    pub fn u16_at(&self, off: usize) -> Option<u16> {
        self.read::<2>(off).map(u16::from_be_bytes)
    }

    /// The bytes `[off, off + N)`, mutable. The frame is not owned by `Frame` (it is the
    /// kernel's packet buffer), so callers hold several of these at once; each caller asks
    /// only for disjoint ranges (Ethernet, L3 header, L4 header).
    #[expect(
        clippy::mut_from_ref,
        reason = "the view does not own the packet buffer; callers take disjoint ranges"
    )]
    #[inline(always)]
    pub fn bytes_mut<const N: usize>(&self, off: usize) -> Option<&mut [u8; N]> {
        let p = self.at::<N>(off)?;
        // SAFETY: `at` checked that [p, p + N) is inside the frame, which `new`'s caller
        // vouched is writable with no other reference into it; callers take disjoint ranges.
        Some(unsafe { &mut *(p as *mut [u8; N]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(buf: &mut [u8]) -> Frame {
        let start = buf.as_mut_ptr() as usize;
        // SAFETY: `buf` outlives the view in every test and is not otherwise borrowed while
        // the view is used.
        unsafe { Frame::new(start, start + buf.len()) }
    }

    #[test]
    fn reads_inside_and_refuses_past_the_end() {
        let mut buf = [1u8, 2, 3, 4];
        let f = view(&mut buf);
        assert_eq!(f.len(), 4);
        assert_eq!(f.read::<2>(2), Some([3, 4]));
        assert_eq!(f.u16_at(0), Some(0x0102));
        assert_eq!(f.read::<2>(3), None);
        assert_eq!(f.read::<4>(1), None);
    }

    #[test]
    fn refuses_offsets_past_the_bound() {
        let mut buf = [0u8; MAX_OFFSET + 8];
        let f = view(&mut buf);
        assert!(f.read::<2>(MAX_OFFSET).is_some());
        assert!(f.read::<2>(MAX_OFFSET + 1).is_none());
    }

    #[test]
    fn writes_land_in_the_frame() {
        let mut buf = [0u8; 6];
        {
            let f = view(&mut buf);
            let w = f.bytes_mut::<2>(4).expect("in bounds");
            *w = [0xab, 0xcd];
            assert!(f.bytes_mut::<2>(5).is_none());
        }
        assert_eq!(buf, [0, 0, 0, 0, 0xab, 0xcd]);
    }
}
