//! The source table ([`map_names::BUCKETS`]) from user space, memory-mapped: read, walked
//! and edited word by word with the program's tag protocol (see [`traffic_common::table`]),
//! so a walk of the whole table costs memory reads, not two syscalls per source, and an
//! edit never tears a slot the program is charging.
//!
//! [`map_names::BUCKETS`]: traffic_common::map_names::BUCKETS

use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::MapData;
use traffic_common::{
    Bucket, BucketKey, TABLE_BUCKET_WORD, TABLE_EMPTY_CLASS, TABLE_SLOT_WORDS, TABLE_TAG_WORD,
    TABLE_WAYS, TableSlot, addr_words, bucket_full_at, map_names, table_set, table_set_mask,
    tag_claimed, tag_class, tag_live, tag_published, tag_seq, victim, words_addr,
};

use super::{DataplaneError, mapping::Words};

/// Words of a bucket.
const BUCKET_WORDS: usize = size_of::<Bucket>() / 8;
/// Ways per set, as an index bound.
const WAYS: usize = TABLE_WAYS as usize;
/// Attempts at a consistent read of a slot a writer keeps changing.
const READ_ATTEMPTS: usize = 4;
/// Slots per block of [`BucketTable::for_each_hinted`] (whole sets; 5 KiB).
pub const HINT_BLOCK: usize = 64;
/// Walks of [`BucketTable::for_each_hinted`] that visit every block at least once: the
/// baseline (a walk a second) sees a source in a block that was empty within 8 s of its
/// creation (32 made `trafficctl suggest` miss sources of a 13 s load). Only while the
/// program creates buckets: an idle walk reads no empty block.
pub const HINT_ROTATION: usize = 8;

/// Which blocks held a source at their last hinted visit, and where the rotation is.
#[derive(Default)]
struct Hints {
    live: Vec<bool>,
    cursor: usize,
    /// The program's count of created buckets at the last walk.
    created: u64,
    /// Walks left that visit a rotating part of the empty blocks (a count changed).
    rotations: usize,
}

/// The table, mapped shared with the program.
pub struct BucketTable {
    /// [`TABLE_SLOT_WORDS`] words per slot.
    words: Words,
    slots: usize,
    /// Occupied blocks, for [`BucketTable::for_each_hinted`].
    hints: std::sync::Mutex<Hints>,
}

fn map_error(detail: String) -> DataplaneError {
    DataplaneError::Other(format!("map {}: {detail}", map_names::BUCKETS))
}

impl BucketTable {
    /// Map the program's table (created `BPF_F_MMAPABLE`, a power of two of slots).
    pub fn new(map: MapData) -> Result<Self, DataplaneError> {
        let info = map.info().map_err(|e| map_error(format!("info: {e}")))?;
        let slots = info.max_entries() as usize;
        if info.value_size() as usize != size_of::<TableSlot>()
            || !slots.is_power_of_two()
            || slots < WAYS
        {
            return Err(map_error(format!(
                "not a source table: {slots} slots of {} bytes",
                info.value_size()
            )));
        }
        Ok(Self {
            words: Words::map(map, slots * TABLE_SLOT_WORDS, map_names::BUCKETS)?,
            slots,
            hints: std::sync::Mutex::default(),
        })
    }

    /// Word `i` of slot `slot`.
    fn word(&self, slot: usize, i: usize) -> &AtomicU64 {
        debug_assert!(i < TABLE_SLOT_WORDS);
        self.words.word(slot * TABLE_SLOT_WORDS + i)
    }

    fn tag(&self, slot: usize) -> &AtomicU64 {
        self.word(slot, TABLE_TAG_WORD)
    }

    /// The first slot of a key's set.
    fn first_slot(&self, key: &BucketKey) -> usize {
        let (lo, hi) = addr_words(&key.addr);
        let mask = table_set_mask(self.slots as u32);
        (table_set(lo, hi, key.class) & mask) as usize * WAYS
    }

    /// The key and bucket of a slot, read consistently (the same live tag before and
    /// after); `None` when it holds none, or a writer kept changing it.
    pub fn read(&self, slot: usize) -> Option<(BucketKey, Bucket)> {
        for _ in 0..READ_ATTEMPTS {
            let t = self.tag(slot).load(Ordering::Acquire);
            if !tag_live(t) {
                return None;
            }
            let (lo, hi) = (
                self.word(slot, 0).load(Ordering::Relaxed),
                self.word(slot, 1).load(Ordering::Relaxed),
            );
            let mut words = [0u64; BUCKET_WORDS];
            for (i, w) in words.iter_mut().enumerate() {
                *w = self
                    .word(slot, TABLE_BUCKET_WORD + i)
                    .load(Ordering::Relaxed);
            }
            if self.tag(slot).load(Ordering::Acquire) == t {
                let key = BucketKey {
                    addr: words_addr(lo, hi),
                    class: tag_class(t),
                };
                return Some((key, bytemuck::cast(words)));
            }
        }
        None
    }

    /// The slot holding `key`.
    pub fn find(&self, key: &BucketKey) -> Option<usize> {
        let first = self.first_slot(key);
        (first..first + WAYS).find(|&s| self.read(s).is_some_and(|(k, _)| k == *key))
    }

    /// The bucket of `key`, if the table holds it.
    pub fn get(&self, key: &BucketKey) -> Option<Bucket> {
        let (k, b) = self.read(self.find(key)?)?;
        (k == *key).then_some(b)
    }

    /// Visit every source in slot order until `visit` returns false. A key that two CPUs
    /// inserted at once (two ways of one set) is visited once.
    pub fn for_each(&self, mut visit: impl FnMut(&BucketKey, &Bucket) -> bool) {
        self.for_each_in(0..self.slots, &mut visit);
    }

    /// [`BucketTable::for_each`] over the sets of the slots `range` (whole sets). Returns
    /// whether the range held a source, or `None` when `visit` stopped the walk.
    fn for_each_in(
        &self,
        range: std::ops::Range<usize>,
        visit: &mut impl FnMut(&BucketKey, &Bucket) -> bool,
    ) -> Option<bool> {
        let mut any = false;
        for first in range.step_by(WAYS) {
            let mut set: [Option<BucketKey>; WAYS] = [None; WAYS];
            for way in 0..WAYS {
                let Some((k, b)) = self.read(first + way) else {
                    continue;
                };
                any = true;
                if set[..way].contains(&Some(k)) {
                    continue;
                }
                set[way] = Some(k);
                if !visit(&k, &b) {
                    return None;
                }
            }
        }
        Some(any)
    }

    /// Visit the sources of the blocks (of [`HINT_BLOCK`] slots) that held one at their last
    /// visit, and of a rotating [`HINT_ROTATION`]th of all blocks: a frequent walk (the
    /// baseline's, every second) then reads the occupied part of a large, mostly empty
    /// table, and finds a source in a block that was empty within [`HINT_ROTATION`] walks.
    /// `created` is the program's count of buckets created so far (the classes'
    /// `admitted`): only a change of it starts the rotation, for the next
    /// [`HINT_ROTATION`] walks, so a walk of an idle node reads nothing but occupied
    /// blocks. Stops when `visit` returns false.
    pub fn for_each_hinted(
        &self,
        created: u64,
        mut visit: impl FnMut(&BucketKey, &Bucket) -> bool,
    ) {
        let blocks = self.slots.div_ceil(HINT_BLOCK);
        let mut hints = self
            .hints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if hints.live.len() != blocks {
            // First walk: every block is visited (and hinted by what it holds).
            hints.live = vec![true; blocks];
        }
        if created != hints.created {
            hints.created = created;
            hints.rotations = HINT_ROTATION;
        }
        let slice = if hints.rotations > 0 {
            hints.rotations -= 1;
            blocks.div_ceil(HINT_ROTATION)
        } else {
            0
        };
        let start = hints.cursor % blocks;
        hints.cursor = (start + slice) % blocks;
        for block in 0..blocks {
            let rotating = (block + blocks - start) % blocks < slice;
            if !rotating && !hints.live[block] {
                continue;
            }
            let range = block * HINT_BLOCK..((block + 1) * HINT_BLOCK).min(self.slots);
            match self.for_each_in(range, &mut visit) {
                Some(any) => hints.live[block] = any,
                None => return,
            }
        }
    }

    /// Whether [`BucketTable::for_each_hinted`] with `created` would read no slot: a walk
    /// found every block empty, no bucket was created since, and no rotation is left.
    pub fn is_quiet(&self, created: u64) -> bool {
        let hints = self
            .hints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hints.live.len() == self.slots.div_ceil(HINT_BLOCK)
            && created == hints.created
            && hints.rotations == 0
            && !hints.live.contains(&true)
    }

    /// Every source.
    pub fn entries(&self) -> Vec<(BucketKey, Bucket)> {
        let mut out = Vec::new();
        self.for_each(|k, b| {
            out.push((*k, *b));
            true
        });
        out
    }

    /// Claim slot `slot` if its tag is still `seen`: the claimed tag, or `None`.
    fn claim(&self, slot: usize, seen: u64) -> Option<u64> {
        let claimed = tag_claimed(seen);
        self.tag(slot)
            .compare_exchange(seen, claimed, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| claimed)
    }

    /// Write `bucket` as the bucket of `key`: in place when the table holds the key, else
    /// in the set's victim (as the program inserts). `false`: the slot was contended.
    pub fn put(&self, key: &BucketKey, bucket: &Bucket) -> bool {
        let first = self.first_slot(key);
        let slot = match self.find(key) {
            Some(s) => s,
            None => {
                let mut tags = [0u64; WAYS];
                let mut full = [0u64; WAYS];
                for way in 0..WAYS {
                    tags[way] = self.tag(first + way).load(Ordering::Acquire);
                    full[way] = self
                        .read(first + way)
                        .map_or(0, |(_, b)| bucket_full_at(&b));
                }
                match victim(&tags, &full) {
                    Some(way) => first + way,
                    None => return false,
                }
            }
        };
        let seen = self.tag(slot).load(Ordering::Acquire);
        if tag_seq(seen) & 1 != 0 {
            return false;
        }
        let Some(claimed) = self.claim(slot, seen) else {
            return false;
        };
        let (lo, hi) = addr_words(&key.addr);
        self.word(slot, 0).store(lo, Ordering::Relaxed);
        self.word(slot, 1).store(hi, Ordering::Relaxed);
        let words: [u64; BUCKET_WORDS] = bytemuck::cast(*bucket);
        for (i, w) in words.iter().enumerate() {
            self.word(slot, TABLE_BUCKET_WORD + i)
                .store(*w, Ordering::Relaxed);
        }
        self.tag(slot)
            .store(tag_published(claimed, key.class), Ordering::Release);
        true
    }

    /// Empty the slot of `key` (both, in the rare case two CPUs inserted it at once);
    /// `false` when the table does not hold it.
    pub fn remove(&self, key: &BucketKey) -> bool {
        let mut removed = false;
        for _ in 0..WAYS + READ_ATTEMPTS {
            let Some(slot) = self.find(key) else {
                break;
            };
            let seen = self.tag(slot).load(Ordering::Acquire);
            if !tag_live(seen) || tag_class(seen) != key.class {
                continue;
            }
            if let Some(claimed) = self.claim(slot, seen) {
                for i in TABLE_BUCKET_WORD..TABLE_SLOT_WORDS {
                    self.word(slot, i).store(0, Ordering::Relaxed);
                }
                self.tag(slot)
                    .store(tag_published(claimed, TABLE_EMPTY_CLASS), Ordering::Release);
                removed = true;
            }
        }
        removed
    }
}
