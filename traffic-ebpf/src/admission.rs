//! Admission: whether a source without a bucket gets one. A class with admission charges
//! each new bucket to a shared budget; a source refused one (or finding the map full) is
//! charged to the class's shared overflow bucket instead. The seen-bitmap records which
//! keys have a bucket, so an admission class can skip the lookup of a certainly unknown key.

use core::intrinsics::{AtomicOrdering, atomic_or};

use traffic_common::{
    Bucket, BucketKey, CLASS_ADMISSION, ClassConfig, Reason, seen_bit, seen_bit_words,
};

use crate::{
    bucket,
    maps::{TRF_BUCKETS, TRF_CLASS_STATE, TRF_CLASS_STATS, TRF_SEEN},
};

const EEXIST: i32 = 17;

/// Whether a bucket key — its masked address as words, and its class — may have a bucket
/// (false: it certainly has none).
#[inline(always)]
pub fn maybe_tracked(addr: (u64, u64), class: u32) -> bool {
    let (word, bit) = seen_bit_words(addr.0, addr.1, class);
    match TRF_SEEN.get_ptr(word) {
        // SAFETY: array value from this lookup; others change it only by atomic OR.
        Some(p) => (unsafe { core::ptr::read_volatile(p) } & bit) != 0,
        None => true,
    }
}

/// Record that a bucket key has a bucket.
#[inline(always)]
fn mark_tracked(key: &BucketKey) {
    let (word, bit) = seen_bit(key);
    if let Some(p) = TRF_SEEN.get_ptr_mut(word) {
        // SAFETY: array value from this lookup; shared words are only changed atomically.
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(p, bit) };
    }
}

/// A source without a bucket: give it one if the class's admission budget allows, else
/// charge the class's shared overflow bucket. Never fails open.
#[inline(always)]
pub fn admit(
    key: &BucketKey,
    class: u32,
    cc: &ClassConfig,
    now: u64,
) -> Result<*mut Bucket, Reason> {
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
        let fresh = bucket::fresh_bucket();
        match TRF_BUCKETS.insert(key, &fresh, bucket::BPF_NOEXIST) {
            Ok(()) => {
                mark_tracked(key);
                if let Some(s) = stats {
                    // SAFETY: per-CPU value of this CPU; XDP runs without migration.
                    unsafe { (*s).admitted += 1 };
                }
            }
            Err(e) if e == -EEXIST => mark_tracked(key),
            Err(_) => reason = Reason::MapFull,
        }
        if reason != Reason::MapFull {
            if let Some(b) = TRF_BUCKETS.get_ptr_mut(key) {
                return Ok(b);
            }
            reason = Reason::MapFull;
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
