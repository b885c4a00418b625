//! GCRA token buckets shared by all CPUs: one u64 of state per limit, updated with
//! compare-and-swap. No division and no wide multiplication on this path: the daemon
//! precomputes intervals and tolerances.

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd},
    ptr::read_volatile,
};

use traffic_common::{BYTE_INTERVAL_SHIFT, Limit};

/// CAS attempts before charging unconditionally (contention between CPUs on one bucket).
const CAS_RETRIES: usize = 3;

/// Whether a packet of `cost` would conform to `lim` given the state `tat` at `now`.
#[inline(always)]
pub fn conforms(tat: u64, lim: &Limit, cost: u64, now: u64) -> bool {
    let base = if tat > now { tat } else { now };
    base + cost - now <= lim.tolerance
}

/// Cost of a frame of `len` bytes under a byte limit.
#[inline(always)]
pub fn byte_cost(len: u64, lim: &Limit) -> u64 {
    // len < 2^16 and interval <= MAX_BYTE_INTERVAL (2^47): the product fits in u64.
    (len * lim.interval) >> BYTE_INTERVAL_SHIFT
}

/// Read a shared word written concurrently by other CPUs.
#[inline(always)]
pub fn load(p: *const u64) -> u64 {
    // SAFETY: `p` points into a map value the caller looked up; the verifier checked it.
    unsafe { read_volatile(p) }
}

/// Atomically add `v` to a shared counter.
#[inline(always)]
pub fn add(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value the caller looked up; 8-byte aligned (repr(C)).
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v);
    }
}

/// Check `cost` against `lim` and, if it conforms, charge it. Returns whether it conformed.
#[inline(always)]
pub fn charge(p: *mut u64, lim: &Limit, cost: u64, now: u64) -> bool {
    let mut tat = load(p);
    for _ in 0..CAS_RETRIES {
        if !conforms(tat, lim, cost, now) {
            return false;
        }
        let base = if tat > now { tat } else { now };
        // SAFETY: as in `add`. The returned old value is compared instead of using the
        // success flag (that flag miscompiles for bpf on some nightlies).
        let old = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                p,
                tat,
                base + cost,
            )
            .0
        };
        if old == tat {
            return true;
        }
        tat = old;
    }
    // Still contended: charge unconditionally and judge by the state we displaced. Any
    // over-admission here is repaid: the state now carries the debt.
    // SAFETY: as in `add`.
    let old = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, cost) };
    conforms(old, lim, cost, now)
}
