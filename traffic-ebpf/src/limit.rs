//! Charging GCRA buckets: the per-source class limits (packet and byte rates, stacked) and
//! the shared words other stages charge (half-open trials, new-connection limits, admission).
//! One u64 of state per limit, shared by all CPUs and updated with compare-and-swap; the
//! arithmetic is `traffic_ebpf::gcra`.

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd},
    ptr::read_volatile,
};

use traffic_common::{
    BYTE_LIMIT_SLOT, Bucket, BucketKey, CLASS_ADMISSION, CLASS_BYTES, ClassConfig, Limit,
    MAX_PACKET_LIMITS, Reason,
};
use traffic_ebpf::{gcra, parse::Ip};

use crate::{admission, clock::Clock, maps::TRF_BUCKETS};

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
    let mut tat = unsafe { load(p) };
    for _ in 0..CAS_RETRIES {
        if !gcra::conforms(tat, lim, cost, now) {
            return false;
        }
        // SAFETY: the caller guarantees `p` is a valid, aligned map word. The returned old
        // value is compared instead of using the success flag (that flag miscompiles for
        // bpf on some nightlies).
        let old = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                p,
                tat,
                gcra::charged(tat, cost, now),
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
    // SAFETY: as above.
    let old = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, cost) };
    gcra::conforms(old, lim, cost, now)
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
    }
}

/// The class limits: find (or admit) the source's bucket and charge it.
#[inline(always)]
pub fn class_limits(ip: &Ip, class: u32, cc: &ClassConfig, len: u64, clock: &mut Clock) -> Reason {
    let npkt = cc.packet_limits as usize;
    let bytes = cc.flags & CLASS_BYTES != 0;
    if npkt == 0 && !bytes {
        return Reason::Pass;
    }
    let mask = if ip.v6 { &cc.mask_v6 } else { &cc.mask_v4 };
    let addr = masked(ip.src, mask);
    let key = bucket_key(addr, class);
    let key = &key.0;
    let now = clock.now();

    // Under a flood of new sources (what admission is for), looking an unknown key up
    // touches random lines of a large, cold table; the seen-bitmap answers "certainly not
    // tracked" from cache. Only admission classes consult it: their inserts are few, so it
    // stays sparse. Every insert sets its bit, so it never hides a bucket.
    let untracked = cc.flags & CLASS_ADMISSION != 0 && !admission::maybe_tracked(addr, class);
    let found = if untracked {
        None
    } else {
        TRF_BUCKETS.get_ptr_mut(key)
    };
    let bucket = match found {
        Some(b) => b,
        None => match admission::admit(key, class, cc, now) {
            Ok(b) => b,
            Err(reason) => return reason,
        },
    };
    // SAFETY: `bucket` came from a map lookup in this invocation; LRU values stay valid for
    // the program's run, and their fields are accessed atomically.
    unsafe { charge_bucket(bucket, cc, npkt, bytes, len, now) }
}

/// Charge a source's bucket with every limit of its class.
///
/// # Safety
/// `b` must point to a bucket looked up in this invocation (its words are only changed
/// atomically).
#[inline(always)]
unsafe fn charge_bucket(
    b: *mut Bucket,
    cc: &ClassConfig,
    npkt: usize,
    bytes: bool,
    len: u64,
    now: u64,
) -> Reason {
    // SAFETY: the caller guarantees `b` is a live bucket; its words are aligned u64s.
    unsafe { add(&raw mut (*b).packets, 1) };
    // SAFETY: as above; a place expression, nothing is read.
    let tat = unsafe { &raw mut (*b).tat }.cast::<u64>();
    let byte_cost = if bytes {
        gcra::byte_cost(len, &cc.bytes)
    } else {
        0
    };

    // Stacked limits: check every limit before charging any, so a packet refused by one
    // does not consume the others.
    let stacked = npkt > 1 || (npkt == 1 && bytes);
    if stacked {
        for i in 0..MAX_PACKET_LIMITS {
            if i >= npkt {
                break;
            }
            let lim = &cc.packets[i];
            // SAFETY: i < MAX_PACKET_LIMITS < the length of `tat`; a live bucket word.
            let state = unsafe { load(tat.add(i)) };
            if !gcra::conforms(state, lim, lim.interval, now) {
                // SAFETY: the caller's guarantee.
                return unsafe { refuse(b, Reason::PacketRate) };
            }
        }
        if bytes {
            // SAFETY: BYTE_LIMIT_SLOT is the last element of `tat`; a live bucket word.
            let state = unsafe { load(tat.add(BYTE_LIMIT_SLOT)) };
            if !gcra::conforms(state, &cc.bytes, byte_cost, now) {
                // SAFETY: the caller's guarantee.
                return unsafe { refuse(b, Reason::ByteRate) };
            }
        }
    }
    for i in 0..MAX_PACKET_LIMITS {
        if i >= npkt {
            break;
        }
        let lim = &cc.packets[i];
        // SAFETY: as in the check above.
        if !unsafe { charge(tat.add(i), lim, lim.interval, now) } {
            // SAFETY: the caller's guarantee.
            return unsafe { refuse(b, Reason::PacketRate) };
        }
    }
    // SAFETY: as in the check above.
    if bytes && !unsafe { charge(tat.add(BYTE_LIMIT_SLOT), &cc.bytes, byte_cost, now) } {
        // SAFETY: the caller's guarantee.
        return unsafe { refuse(b, Reason::ByteRate) };
    }
    Reason::Pass
}

/// Count a refused packet in its bucket.
///
/// # Safety
/// As for [`charge_bucket`].
#[inline(always)]
unsafe fn refuse(b: *mut Bucket, reason: Reason) -> Reason {
    // SAFETY: the caller guarantees `b` is a live bucket.
    unsafe { add(&raw mut (*b).dropped, 1) };
    reason
}
