//! Shared bucket words and keys: reading, adding to and charging a GCRA word, building a
//! bucket key, a fresh bucket. Every stage that charges a limit (the class limits,
//! admission, half-open trials, new-connection limits) goes through these. One u64 of state
//! per limit, shared by all CPUs and updated with compare-and-swap; the arithmetic is
//! `traffic_ebpf::gcra`.

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd},
    ptr::read_volatile,
};

use traffic_common::{Bucket, BucketKey, Limit, MAX_PACKET_LIMITS};
use traffic_ebpf::gcra;

/// CAS attempts before charging unconditionally (contention between CPUs on one bucket).
const CAS_RETRIES: usize = 3;

/// Read a shared word written concurrently by other CPUs.
///
/// # Safety
/// `p` must point to a live, 8-byte aligned u64 in a map value (looked up in this
/// invocation) that other CPUs change only atomically.
#[inline(always)]
pub unsafe fn load(p: *const u64) -> u64 {
    // SAFETY: the caller guarantees `p` is a valid, aligned map word.
    unsafe { read_volatile(p) }
}

/// Atomically add `v` to a shared counter.
///
/// # Safety
/// As for [`load`].
#[inline(always)]
pub unsafe fn add(p: *mut u64, v: u64) {
    // SAFETY: the caller guarantees `p` is a valid, aligned map word.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v);
    }
}

/// Check `cost` against `lim` and, if it conforms, charge it. Returns whether it conformed.
///
/// # Safety
/// As for [`load`].
#[inline(always)]
pub unsafe fn charge(p: *mut u64, lim: &Limit, cost: u64, now: u64) -> bool {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { charge_to(p, lim, cost, now) }.is_some()
}

/// Like [`charge`], returning the state the word was moved to when the cost conformed.
///
/// # Safety
/// As for [`load`].
#[inline(always)]
pub unsafe fn charge_to(p: *mut u64, lim: &Limit, cost: u64, now: u64) -> Option<u64> {
    // SAFETY: the caller's guarantee, passed on.
    let mut tat = unsafe { load(p) };
    for _ in 0..CAS_RETRIES {
        if !gcra::conforms(tat, lim, cost, now) {
            return None;
        }
        let new = gcra::charged(tat, cost, now);
        // SAFETY: the caller guarantees `p` is a valid, aligned map word. The returned old
        // value is compared instead of using the success flag (that flag miscompiles for
        // bpf on some nightlies).
        let old = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(p, tat, new)
                .0
        };
        if old == tat {
            return Some(new);
        }
        tat = old;
    }
    // Still contended: charge unconditionally and judge by the state we displaced. Any
    // over-admission here is repaid: the state now carries the debt.
    // SAFETY: as above.
    let old = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, cost) };
    gcra::conforms(old, lim, cost, now).then(|| gcra::charged(old, cost, now))
}

/// When every limit of a bucket is full again: its latest state (unused limits stay 0).
///
/// # Safety
/// `b` must point to a live bucket looked up in this invocation (its words are changed
/// only atomically).
#[inline(always)]
pub unsafe fn full_at(b: *const Bucket) -> u64 {
    // SAFETY: the caller guarantees `b` is a live bucket; a place expression.
    let tat = unsafe { &raw const (*b).tat }.cast::<u64>();
    let mut latest = 0;
    for i in 0..MAX_PACKET_LIMITS + 1 {
        // SAFETY: i is within the bucket's `tat` array; a live bucket word.
        let t = unsafe { load(tat.add(i)) };
        if t > latest {
            latest = t;
        }
    }
    latest
}

/// A source address masked to its class's prefix, as words.
#[inline(always)]
pub fn masked(src: (u64, u64), mask: &[u64; 2]) -> (u64, u64) {
    (src.0 & mask[0], src.1 & mask[1])
}

/// A bucket key on an 8-byte boundary, so its address is written as two words rather than
/// sixteen bytes (the contract's `BucketKey` itself is only 4-aligned).
#[repr(C, align(8))]
pub struct KeyBuf(pub BucketKey);

/// The bucket key of a masked address in a class (or a port's new-connection slot).
#[inline(always)]
pub fn bucket_key(addr: (u64, u64), class: u32) -> KeyBuf {
    let mut k = KeyBuf(BucketKey {
        addr: [0; 16],
        class,
    });
    let p = k.0.addr.as_mut_ptr().cast::<u64>();
    // SAFETY: `addr` is at offset 0 of the 8-aligned `KeyBuf` and 16 bytes long: both words
    // are aligned and in bounds.
    unsafe {
        p.write(addr.0);
        p.add(1).write(addr.1);
    }
    k
}

/// A full bucket (all states 0) with no history.
#[inline(always)]
pub const fn fresh_bucket() -> Bucket {
    Bucket {
        tat: [0; MAX_PACKET_LIMITS + 1],
        packets: 0,
        dropped: 0,
        bytes: 0,
    }
}
