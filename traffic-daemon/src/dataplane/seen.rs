//! The tracked-source bitmap ([`map_names::SEEN`]) from user space, memory-mapped: one
//! generation is cleared with atomic stores while the program keeps setting bits in both.
//! Through the map's syscalls a clear would rewrite whole entries, and could undo a bit the
//! program set in the other generation in between; word by word it cannot.
//!
//! [`map_names::SEEN`]: traffic_common::map_names::SEEN

use std::{
    os::fd::AsFd as _,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use traffic_common::{SEEN_WORDS, SeenWord, map_names};

use super::DataplaneError;

/// Words per generation.
const WORDS: usize = SEEN_WORDS as usize;
/// Bytes mapped: the whole array (both generations).
const BYTES: usize = WORDS * size_of::<SeenWord>();

/// The bitmap, mapped shared with the program.
pub struct SeenMap {
    base: NonNull<AtomicU64>,
    /// Keeps the map (and so the mapping's object) alive as long as the mapping.
    _map: MapData,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics; nothing in it
// is tied to the thread that created it.
#[allow(unsafe_code, reason = "Send for a pointer to atomics in shared memory")]
unsafe impl Send for SeenMap {}

impl SeenMap {
    /// Map the program's bitmap (created `BPF_F_MMAPABLE`).
    pub fn new(map: MapData) -> Result<Self, DataplaneError> {
        let fd = map.fd().as_fd();
        #[allow(unsafe_code, reason = "mmap of a BPF array map; SAFETY below")]
        // SAFETY: a fresh shared mapping of the map's `BYTES` bytes (its whole value area, as
        // the kernel lays out an mmapable array); the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DataplaneError::Other(format!(
                "map {}: mmap failed: {}",
                map_names::SEEN,
                std::io::Error::last_os_error()
            )));
        }
        let base = NonNull::new(p.cast::<AtomicU64>()).ok_or_else(|| {
            DataplaneError::Other(format!("map {}: mmap gave null", map_names::SEEN))
        })?;
        Ok(Self { base, _map: map })
    }

    /// Word `generation` of entry `i`.
    fn word(&self, i: usize, generation: usize) -> &AtomicU64 {
        debug_assert!(i < WORDS && generation < 2);
        #[allow(unsafe_code, reason = "a word of the mapping; SAFETY below")]
        // SAFETY: entry `i` (< WORDS) is a `SeenWord` of two u64s at `i * 16` within the
        // `BYTES` mapped, 8-aligned (page-aligned base); the program and this process only
        // access it atomically, and the mapping lives as long as `self`.
        unsafe {
            self.base.add(i * 2 + generation).as_ref()
        }
    }

    /// Clear one generation (0 or 1): a key whose bit is set only there is forgotten.
    pub fn clear(&self, generation: u32) {
        let g = (generation & 1) as usize;
        for i in 0..WORDS {
            self.word(i, g).store(0, Ordering::Relaxed);
        }
    }

    /// Bits set in the union of the two generations, and the bits a generation holds.
    pub fn bits_set(&self) -> (u64, u64) {
        let mut set = 0;
        for i in 0..WORDS {
            let w =
                self.word(i, 0).load(Ordering::Relaxed) | self.word(i, 1).load(Ordering::Relaxed);
            set += u64::from(w.count_ones());
        }
        (set, WORDS as u64 * 64)
    }
}

impl Drop for SeenMap {
    fn drop(&mut self) {
        #[allow(unsafe_code, reason = "munmap of our own mapping; SAFETY below")]
        // SAFETY: the mapping made in `new`, of `BYTES` bytes; no reference into it outlives
        // `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), BYTES);
        }
    }
}
