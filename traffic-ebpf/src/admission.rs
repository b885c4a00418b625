//! Admission: whether a source without a bucket gets one. A class with admission charges
//! each new bucket to a shared budget; a source refused one (or finding the map full) is
//! charged to the class's shared overflow bucket instead. The seen-bitmap records which
//! keys have a bucket, so an admission class can skip the lookup of a certainly unknown key.
//!
//! The bitmap has two generations that the daemon clears in turn; the program sets a key's
//! bit in both and re-marks a tracked key a clearing took from one, so a key seen at least
//! once between two clearings keeps its bit and the bitmap holds only recent keys.

use core::intrinsics::{AtomicOrdering, atomic_or};

use traffic_common::{Bucket, CLASS_ADMISSION, ClassConfig, Reason, SeenWord, seen_bit_words};

use crate::{
    bucket,
    debt::DebtSlot,
    maps::{TRF_CLASS_STATE, TRF_CLASS_STATS, TRF_SEEN},
    table::{self, Found, Placed},
};

/// A bucket key's bit in the seen-bitmap, read once (both generations share one entry).
pub struct Seen {
    word: Option<*mut SeenWord>,
    bit: u64,
    /// The union and the intersection of the two generations' words, at the read.
    any: u64,
    both: u64,
}

impl Seen {
    /// The bit of a bucket key: its masked address as words, and its class.
    #[inline(always)]
    pub fn of(addr: (u64, u64), class: u32) -> Self {
        let (word, bit) = seen_bit_words(addr.0, addr.1, class);
        let p = TRF_SEEN.get_ptr_mut(word);
        let (any, both) = match p {
            // SAFETY: an array value from this lookup; the program changes it only by atomic
            // OR, the daemon only by atomic stores of zero through its mapping.
            Some(p) => unsafe {
                let g = &raw const (*p).generation;
                let (a, b) = (
                    bucket::load(g.cast::<u64>()),
                    bucket::load(g.cast::<u64>().add(1)),
                );
                (a | b, a & b)
            },
            None => (u64::MAX, u64::MAX),
        };
        Self {
            word: p,
            bit,
            any,
            both,
        }
    }

    /// Whether the key may have a bucket (false: it certainly has none).
    #[inline(always)]
    pub fn maybe_tracked(&self) -> bool {
        self.any & self.bit != 0
    }

    /// The key has a bucket: set its bit in a generation that lacks it (one the daemon
    /// cleared since the key was last seen). Nothing to write in the common case.
    #[inline(always)]
    pub fn refresh(&self) {
        if self.both & self.bit == 0 {
            self.mark();
        }
    }

    /// Record that the key has a bucket, in both generations.
    #[inline(always)]
    fn mark(&self) {
        if let Some(p) = self.word {
            // SAFETY: as in `of`; both words are aligned u64s of the looked-up value.
            unsafe {
                let g = (&raw mut (*p).generation).cast::<u64>();
                atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(g, self.bit);
                atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(g.add(1), self.bit);
            }
        }
    }
}

/// Record that a bucket key (its masked address as words, and its class) has a bucket.
#[inline(always)]
fn mark_tracked(addr: (u64, u64), class: u32) {
    let (word, bit) = seen_bit_words(addr.0, addr.1, class);
    Seen {
        word: TRF_SEEN.get_ptr_mut(word),
        bit,
        any: 0,
        both: 0,
    }
    .mark();
}

/// Insert a bucket for a key (its masked address as words `addr`, and its class), starting
/// from the debt the sketch remembers for it (`start` builds it from that debt), and return
/// it. `None`: the table refused the insert (every way of its set held by other writers).
/// An existing bucket (another CPU won the race) is kept.
#[inline(always)]
pub fn insert(
    addr: (u64, u64),
    class: u32,
    now: u64,
    start: impl FnOnce(u64) -> Bucket,
    stats: Option<*mut traffic_common::ClassStats>,
) -> Option<Found> {
    let (fresh, indebted) = match DebtSlot::of(addr, class).recall(now) {
        Some(full_at) => (start(full_at), true),
        None => (bucket::fresh_bucket(), false),
    };
    let b = match table::insert(addr, class, &fresh, now)? {
        Placed::New(b) => {
            if let Some(s) = stats {
                // SAFETY: per-CPU value of this CPU; XDP runs without migration.
                unsafe {
                    (*s).admitted += 1;
                    if indebted {
                        (*s).indebted += 1;
                    }
                }
            }
            b
        }
        Placed::Existing(b) => b,
    };
    mark_tracked(addr, class);
    Some(b)
}

/// A source without a bucket of key class `key_class` (the class itself, or a port's
/// new-connection slot): give it one if the admission budget of `class` allows, else charge
/// the class's shared overflow bucket. Never fails open. `start` builds the bucket of a
/// source the debt sketch remembers (see [`insert`]).
#[inline(always)]
pub fn admit(
    addr: (u64, u64),
    key_class: u32,
    class: u32,
    cc: &ClassConfig,
    now: u64,
    start: impl FnOnce(u64) -> Bucket,
) -> Result<Found, Reason> {
    let Some(state) = TRF_CLASS_STATE.get_ptr_mut(class) else {
        return Err(Reason::MapFull);
    };
    let stats = TRF_CLASS_STATS.get_ptr_mut(class);
    let admitted = cc.flags & CLASS_ADMISSION == 0
        // SAFETY: `state` is a value of an array map, looked up above; its words are only
        // changed atomically.
        || unsafe {
            bucket::charge(
                &raw mut (*state).admit_tat,
                &cc.admission,
                cc.admission.interval,
                now,
            )
        };
    let mut reason = Reason::Overflow;
    if admitted {
        match insert(addr, key_class, now, start, stats) {
            Some(b) => return Ok(b),
            None => reason = Reason::MapFull,
        }
    }
    if let Some(s) = stats {
        // SAFETY: per-CPU value of this CPU; XDP runs without migration.
        unsafe {
            if reason == Reason::MapFull {
                (*s).map_full += 1;
            } else {
                (*s).overflowed += 1;
            }
        }
    }
    // The overflow bucket: an interval of 0 means "no overflow allowance" → drop.
    if cc.overflow.interval != 0
        // SAFETY: as for the admission budget above.
        && unsafe {
            bucket::charge(
                &raw mut (*state).overflow_tat,
                &cc.overflow,
                cc.overflow.interval,
                now,
            )
        }
    {
        return Err(Reason::Pass);
    }
    Err(reason)
}
