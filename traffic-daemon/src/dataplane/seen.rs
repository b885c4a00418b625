//! The tracked-source bitmap ([`map_names::SEEN`]) from user space, memory-mapped: one
//! generation is cleared with atomic stores while the program keeps setting bits in both.
//! Through the map's syscalls a clear would rewrite whole entries, and could undo a bit the
//! program set in the other generation in between; word by word it cannot.
//!
//! [`map_names::SEEN`]: traffic_common::map_names::SEEN

use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::MapData;
use traffic_common::{SEEN_WORDS, SeenWord, map_names};

use super::{DataplaneError, mapping::Words};

/// Words per generation.
const WORDS: usize = SEEN_WORDS as usize;

/// The bitmap, mapped shared with the program.
pub struct SeenMap(Words);

impl SeenMap {
    /// Map the program's bitmap (created `BPF_F_MMAPABLE`).
    pub fn new(map: MapData) -> Result<Self, DataplaneError> {
        let words = WORDS * size_of::<SeenWord>() / 8;
        Words::map(map, words, map_names::SEEN).map(Self)
    }

    /// Word `generation` of entry `i`.
    fn word(&self, i: usize, generation: usize) -> &AtomicU64 {
        debug_assert!(i < WORDS && generation < 2);
        // Entry `i` is a `SeenWord` of two u64s.
        self.0.word(i * 2 + generation)
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
