//! The per-source class limits: find (or admit) the source's bucket, check every stacked
//! limit (packet and byte rates) before charging any, count what passed and what did not.
//! The word primitives are [`crate::bucket`].

use traffic_common::{
    BYTE_LIMIT_SLOT, Bucket, CLASS_ADMISSION, CLASS_BYTES, ClassConfig, MAX_PACKET_LIMITS, Reason,
};
use traffic_ebpf::{gcra, parse::Ip};

use crate::{
    admission,
    bucket::{add, bucket_key, charge, load, masked},
    clock::Clock,
    maps::TRF_BUCKETS,
};

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
