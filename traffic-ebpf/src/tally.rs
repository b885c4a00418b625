//! Refusal counts of busy sources: after a source's first [`DROP_EXACT`] refusals (counted
//! in its bucket at once), each CPU tallies its refusals in its own [`TRF_DROP_TALLY`] entry
//! and adds them to the bucket in batches, so a source over its limit hammered from several
//! CPUs only reads its bucket's cache line instead of bouncing it between them. A tally's
//! batch goes to the slot only while the slot still holds the source it began with.
//!
//! An entry belongs to the first source that begins a batch in it until the batch is added
//! (full, or [`DROP_FLUSH_NS`] old): other sources of that entry count their refusals at
//! once meanwhile. A flood spread over many sources then costs no more than counting at
//! once, while a hammered source keeps its batch.

use traffic_common::{DROP_BATCH, DROP_EXACT, DROP_FLUSH_NS, DROP_TALLY_ENTRIES, DropTally};

use crate::{
    bucket::{add, load},
    maps::TRF_DROP_TALLY,
    table::{self, Found},
};

/// Count one refused packet of `len` bytes of the source at `f`.
#[inline(always)]
pub fn refused(f: &Found, len: u64, now: u64) {
    let b = f.bucket;
    // SAFETY: a bucket looked up in this invocation; aligned words, changed atomically.
    let exact = unsafe { load(&raw const (*b).dropped) } < DROP_EXACT;
    let tally = if exact {
        None
    } else {
        TRF_DROP_TALLY.get_ptr_mut(f.index & (DROP_TALLY_ENTRIES - 1))
    };
    let Some(t) = tally else {
        // SAFETY: as above.
        unsafe { count(b, 1, len) };
        return;
    };
    // SAFETY: this CPU's value; XDP runs with migration disabled, nothing else writes it.
    let t = unsafe { &mut *t };
    if t.packets != 0 && (t.slot != f.index || t.tag != f.tag) {
        if now.wrapping_sub(t.since) < DROP_FLUSH_NS {
            // The entry is another source's young batch: this refusal is counted at once,
            // on the line the verdict just read. Flushing instead would write a third line
            // per packet when many refused sources share the entries (a spread flood).
            // SAFETY: as above.
            unsafe { count(b, 1, len) };
            return;
        }
        flush(t);
    }
    batch(t, f.index, f.tag, len, now);
}

/// Count one refused packet of `len` bytes of the source at slot `index` (found with tag
/// `tag`) in this CPU's tally, without the bucket: for a source past its first
/// [`DROP_EXACT`] refusals whose refusal a cache entry repeats (`credit`). Whether it was
/// counted: not when the tally's entry holds another source's batch.
#[inline(always)]
pub fn tallied(index: u32, tag: u64, len: u64, now: u64) -> bool {
    let Some(t) = TRF_DROP_TALLY.get_ptr_mut(index & (DROP_TALLY_ENTRIES - 1)) else {
        return false;
    };
    // SAFETY: this CPU's value; XDP runs with migration disabled, nothing else writes it.
    let t = unsafe { &mut *t };
    if t.packets != 0 && (t.slot != index || t.tag != tag) {
        return false;
    }
    batch(t, index, tag, len, now);
    true
}

/// Add a refusal of the source at slot `index` (tag `tag`) to tally `t`, empty or holding
/// that source's batch (beginning one if empty), and add the batch to the bucket once it is
/// full or old.
#[inline(always)]
fn batch(t: &mut DropTally, index: u32, tag: u64, len: u64, now: u64) {
    if t.packets == 0 {
        t.slot = index;
        t.tag = tag;
        t.since = now;
    }
    t.packets += 1;
    t.bytes += len;
    if t.packets >= DROP_BATCH || now.wrapping_sub(t.since) >= DROP_FLUSH_NS {
        flush(t);
    }
}

/// Add a tally's batch to its slot's bucket, if the slot still holds its source, and empty it.
#[inline(always)]
fn flush(t: &mut DropTally) {
    if let Some(b) = table::slot_if(t.slot, t.tag) {
        // SAFETY: a bucket of this invocation's lookup.
        unsafe { count(b, t.packets, t.bytes) };
    }
    t.packets = 0;
    t.bytes = 0;
}

/// Add `packets` refused packets of `bytes` bytes to a bucket.
///
/// # Safety
/// `b` must be a bucket looked up in this invocation.
#[inline(always)]
unsafe fn count(b: *mut traffic_common::Bucket, packets: u64, bytes: u64) {
    // SAFETY: the caller's guarantee; aligned words, changed only atomically.
    unsafe {
        add(&raw mut (*b).packets, packets);
        add(&raw mut (*b).bytes, bytes);
        add(&raw mut (*b).dropped, packets);
    }
}
