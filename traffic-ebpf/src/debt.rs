//! The debt sketch: when the bucket of each evicted source is full again, so that a source
//! the table evicted does not come back full.
//!
//! Written when a bucket leaves the table in debt — by the insert that evicts it
//! (`table::insert`), and by the daemon for the sources a smaller table cannot take when it
//! migrates — and read only when a bucket is created. A tracked source's debt is in its
//! bucket, so a packet, passed or refused, never writes here. One `u64` per slot, a time on
//! the kernel clock, raised and never lowered: a time in the past is no debt, so the sketch
//! needs no aging. Keys sharing a slot share the larger debt — a collision can only make a
//! fresh bucket emptier, never fuller.

use traffic_common::{Bucket, ClassConfig, Limit, MAX_PACKET_LIMITS, debt_slot};

use crate::{bucket, maps::TRF_DEBT};

/// A bucket key's slot in the sketch.
#[derive(Clone, Copy)]
pub struct DebtSlot(u32);

impl DebtSlot {
    /// The slot of a bucket key: its masked address as words, and its class.
    #[inline(always)]
    pub fn of(addr: (u64, u64), class: u32) -> Self {
        Self(debt_slot(addr.0, addr.1, class))
    }

    /// Remember that the key's bucket is not full before `full_at` (raise the slot to it).
    ///
    /// A plain load and store, no compare-and-swap: two CPUs raising one slot at once (two
    /// evictions of colliding keys) can lose the larger value, which only makes that
    /// source's next bucket fuller by the difference.
    #[inline(always)]
    pub fn remember(self, full_at: u64) {
        let Some(p) = TRF_DEBT.get_ptr_mut(self.0) else {
            return;
        };
        // SAFETY: an array value from this lookup; an aligned u64.
        if unsafe { bucket::load(p) } < full_at {
            // SAFETY: as above; a whole aligned word, written at once.
            unsafe { core::ptr::write_volatile(p, full_at) };
        }
    }

    /// When the key's bucket may be full again, if that is still ahead of `now`.
    #[inline(always)]
    pub fn recall(self, now: u64) -> Option<u64> {
        let p = TRF_DEBT.get_ptr(self.0)?;
        // SAFETY: an array value from this lookup; its word is only changed by CAS.
        let full_at = unsafe { bucket::load(p) };
        (full_at > now).then_some(full_at)
    }
}

/// The state a limit starts from when its source's bucket is full only at `full_at`: the
/// debt, but never more than an empty bucket (the limit's own tolerance from `now`), so a
/// debt recorded under another limit (a stacked one, or a colliding key's) cannot lock a
/// source out for longer than its own burst takes to refill.
#[inline(always)]
fn owed(full_at: u64, lim: &Limit, now: u64) -> u64 {
    let empty = now + lim.tolerance;
    if full_at < empty { full_at } else { empty }
}

/// A class bucket that starts from a remembered debt.
#[inline(always)]
pub fn class_bucket(cc: &ClassConfig, full_at: u64, now: u64) -> Bucket {
    let mut b = bucket::fresh_bucket();
    for i in 0..MAX_PACKET_LIMITS {
        if i >= cc.packet_limits as usize {
            break;
        }
        b.tat[i] = owed(full_at, &cc.packets[i], now);
    }
    if cc.flags & traffic_common::CLASS_BYTES != 0 {
        b.tat[traffic_common::BYTE_LIMIT_SLOT] = owed(full_at, &cc.bytes, now);
    }
    b
}

/// A per-port new-connection bucket that starts from a remembered debt.
#[inline(always)]
pub fn port_bucket(lim: &Limit, full_at: u64, now: u64) -> Bucket {
    let mut b = bucket::fresh_bucket();
    b.tat[0] = owed(full_at, lim, now);
    b
}
