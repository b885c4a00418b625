//! Credit: tokens this CPU draws from a source's shared bucket in one charge and spends on
//! the source's next packets in the same tick of the coarse clock, from the source's
//! classification cache entry ([`ClassCacheEntry`]). A known source's packet on credit
//! touches no shared line: no table probe, no compare-and-swap, no counter add.
//!
//! Why the limit stays exact: the clock the limits run on moves a tick at a time, so GCRA
//! already treats every packet of a tick as arriving at the same instant. Drawing `n`
//! tokens at once conforms exactly when `n` packets one after the other would, and credit
//! is spent only in the tick it was drawn: the packets passed are those individual charges
//! would have passed, and never more. Credit left unspent when the tick ends was charged
//! for packets that did not come; the next draw of this entry refunds it while the bucket
//! still holds the state the draw left (nothing charged it since, the usual case of a
//! source whose packets land on one CPU). Otherwise it stays charged: stricter, never
//! looser, and bounded by the draw sizes below.
//!
//! Draw sizes follow the source's packets through this entry in the tick before (or this
//! one, if more): a sixteenth of them, 1 to [`MAX_DRAW`]. So unspent credit is at most
//! 15 tokens per CPU and tick, under a sixteenth (about 6 %) of a source's packets in a
//! tick as heavy as the one before, and a source that sends a few packets a tick draws one
//! token at a time, as before. An entry taken over by another source starts
//! again at one token; so does a source whose entry an attacker keeps evicting.
//!
//! The other way round, a refusal: once the bucket has refused the source in a tick, the
//! entry refuses the source's further packets of that tick without a look at the bucket
//! (exact, see [`Credit::cached`]), counting them in this CPU's tally of refusals as the
//! bucket's refusal would (`tally`). The packets passed on credit are added to the bucket's
//! counts at the entry's next draw, or when another source takes the entry over.
//!
//! Only for a class with one packet limit and no byte limit, not fleet-scoped, and a packet
//! with no port rule (no per-port new-connection limit to check): everything else is
//! charged one packet at a time.
//!
//! The packets of a tick that are charged one at a time (a light source, or the first of
//! a heavy one) take the inline path; a draw, a refund or a count of packets passed on
//! credit goes through [`credit_draw`], a global function: the verifier checks it once on
//! its own instead of along every path that reaches it (the program was at its limit of a
//! million instructions with it inline).

use traffic_common::{CREDIT_MAX_DRAW, ClassCacheEntry, DROP_EXACT, Limit};
use traffic_ebpf::gcra;

use crate::{
    bucket::{add, charge_to, load},
    classify,
    maps::{TRF_BUCKETS, TRF_CLS_CACHE},
    table::{self, Found},
    tally,
};

/// The largest draw, in tokens (packets).
const MAX_DRAW: u16 = CREDIT_MAX_DRAW;

/// A draw is this fraction (a shift) of the entry's packets in a tick.
const DRAW_SHIFT: u32 = 4;

/// Packets in a tick below which an entry draws one token at a time (a draw of 1).
const DRAW_FROM: u16 = 2 << DRAW_SHIFT;

/// This CPU's classification cache entry of the packet's source, looked up in this
/// invocation (see `classify::rule_of`), and its index.
#[derive(Clone, Copy)]
pub struct Credit {
    entry: *mut ClassCacheEntry,
    index: u32,
}

/// What [`credit_draw`] did.
const REFUSED: u32 = 0;
const PASSED: u32 = 1;
const NOT_HANDLED: u32 = 2;

impl Credit {
    /// The credit of entry `entry` (index `index`), a per-CPU value looked up in this
    /// invocation.
    #[inline(always)]
    pub fn of(entry: *mut ClassCacheEntry, index: u32) -> Self {
        Self { entry, index }
    }

    #[inline(always)]
    fn entry(&self) -> &mut ClassCacheEntry {
        // SAFETY: this CPU's value of a per-CPU array, looked up in this invocation; XDP
        // runs with migration disabled, so nothing else touches it meanwhile.
        unsafe { &mut *self.entry }
    }

    /// The verdict on a packet of `len` bytes of `class` at `now` that this entry holds
    /// without a look at the bucket: `Some(true)`, passed on a token of credit;
    /// `Some(false)`, refused, the bucket having refused the source earlier in this tick;
    /// `None`, ask the bucket.
    ///
    /// A refusal repeated is exact: in a tick, a bucket's state only moves later as others
    /// charge it, so a packet it refused stays refused (only a refund, a rescale or a reset
    /// by the daemon could move it back, and then this is stricter, for the tick).
    #[inline(always)]
    pub fn cached(&self, class: u32, now: u64, len: u64) -> Option<bool> {
        let e = self.entry();
        if e.credit_ns != now || e.credit_class != class {
            return None;
        }
        if e.credit != 0 {
            e.credit -= 1;
            // At most MAX_DRAW − 1 between two draws, which clear it.
            e.pending += 1;
            e.pending_bytes += len;
            e.tick_used = e.tick_used.saturating_add(1);
            return Some(true);
        }
        // Counted in this CPU's tally, as the bucket's refusal would be; when the tally's
        // entry holds another source's batch, the bucket counts it (the table path).
        if e.refusing != 0 && tally::tallied(e.credit_slot, e.credit_tag, len, now) {
            return Some(false);
        }
        None
    }

    /// The entry is about to be taken over (another source, or a new rule generation):
    /// count its packets passed on credit in their bucket if the slot still holds it, and
    /// start its credit afresh.
    #[inline(always)]
    pub fn forget(&self) {
        let e = self.entry();
        if e.pending != 0
            && let Some(b) = table::slot_if(e.credit_slot, e.credit_tag)
        {
            // SAFETY: a bucket of this invocation's lookup; aligned words changed by others
            // only atomically.
            unsafe { count_pending(e, b) };
        }
        e.credit = 0;
        e.pending = 0;
        e.pending_bytes = 0;
        e.refusing = 0;
        e.tick_used = 0;
        e.prev_used = 0;
    }
}

/// Add the packets an entry passed on credit to the bucket's counts.
///
/// # Safety
/// `b` must be a live bucket looked up in this invocation (its words change only
/// atomically).
#[inline(always)]
unsafe fn count_pending(e: &ClassCacheEntry, b: *mut traffic_common::Bucket) {
    // SAFETY: the caller's guarantee.
    unsafe {
        add(&raw mut (*b).packets, u64::from(e.pending));
        add(&raw mut (*b).bytes, e.pending_bytes);
    }
}

/// Charge a packet of `len` bytes of a source's one packet limit `lim` at the bucket `at`
/// of its key (class `class`), drawing credit for the source's next packets when its
/// traffic is heavy enough (see the module docs). Whether the packet passed (the bucket's
/// counters then include it).
///
/// # Safety
/// `at` must be a slot found in this invocation.
#[inline(always)]
pub unsafe fn charge(
    credit: &Credit,
    at: &Found,
    class: u32,
    lim: &Limit,
    len: u64,
    now: u64,
) -> bool {
    let e = credit.entry();
    if e.credit_ns != now {
        e.prev_used = e.tick_used;
        e.tick_used = 0;
        e.credit_ns = now;
        e.refusing = 0;
    }
    let b = at.bucket;
    // SAFETY: the caller's guarantee; a place expression.
    let tat = unsafe { &raw mut (*b).tat }.cast::<u64>();
    let settle = e.credit != 0 || e.pending != 0;
    let heavy = e.prev_used >= DRAW_FROM || e.tick_used >= DRAW_FROM;
    // A heavy source held at its limit is refused here, without the call: a draw needs
    // two tokens at least.
    // SAFETY: the first word of a live bucket, changed by others only atomically.
    if settle || (heavy && gcra::conforms(unsafe { load(tat) }, lim, 2 * lim.interval, now)) {
        let entry_slot = (u64::from(credit.index) << 32) | u64::from(at.index);
        let class_len = (u64::from(class) << 32) | (len & 0xffff_ffff);
        match credit_draw(entry_slot, at.tag, class_len, now) {
            PASSED => return true,
            REFUSED => {
                refusing(e, at, class);
                return false;
            }
            _ => {}
        }
    }
    // SAFETY: the caller's guarantee: the first word of a live bucket and its counters,
    // changed by others only atomically.
    unsafe {
        if charge_to(tat, lim, lim.interval, now).is_none() {
            refusing(e, at, class);
            return false;
        }
        add(&raw mut (*b).packets, 1);
        add(&raw mut (*b).bytes, len);
    }
    e.tick_used = e.tick_used.saturating_add(1);
    true
}

/// The bucket at `at` refused a packet of the entry's source in this tick: so will it the
/// source's next packets of the tick ([`Credit::cached`]), once the bucket has counted the
/// source's first refusals exactly ([`DROP_EXACT`], as `tally` does).
#[inline(always)]
fn refusing(e: &mut ClassCacheEntry, at: &Found, class: u32) {
    // SAFETY: a bucket found in this invocation; an aligned word changed only atomically.
    if unsafe { load(&raw const (*at.bucket).dropped) } < DROP_EXACT {
        return;
    }
    e.refusing = 1;
    e.credit_class = class;
    e.credit_slot = at.index;
    e.credit_tag = at.tag;
}

/// The draw: settle the entry's last draw (count the packets passed on credit in the
/// bucket, refund the unspent credit while the bucket still holds the state that draw
/// left), then charge a sixteenth of the entry's packets in a tick (1 to [`MAX_DRAW`]) if
/// that many tokens are left, else one. The entry (index `entry_slot >> 32` of the cache),
/// the slot (its low half, found with tag `tag`) and the class (`class_len >> 32`; the
/// packet's length in the low half) are looked up again by index: a global function takes
/// only scalars, five at most. Returns [`PASSED`], [`REFUSED`], or [`NOT_HANDLED`] when a
/// lookup fails (the caller charges as usual).
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn credit_draw(entry_slot: u64, tag: u64, class_len: u64, now: u64) -> u32 {
    let (entry, slot) = ((entry_slot >> 32) as u32, entry_slot as u32);
    let (class, len) = ((class_len >> 32) as u32, class_len & 0xffff_ffff);
    let (Some(e), Some(s), Some(cc)) = (
        TRF_CLS_CACHE.get_ptr_mut(entry),
        TRF_BUCKETS.get_ptr_mut(slot),
        classify::class_config(class),
    ) else {
        return NOT_HANDLED;
    };
    // SAFETY: this CPU's value, as in `Credit::entry`.
    let e = unsafe { &mut *e };
    let lim = &cc.packets[0];
    // SAFETY: a slot of this lookup; a place expression.
    let b = unsafe { &raw mut (*s).bucket };
    // SAFETY: as above.
    let tat = unsafe { &raw mut (*b).tat }.cast::<u64>();
    if e.credit_class == class && e.credit_slot == slot && e.credit_tag == tag {
        // SAFETY: the bucket of a slot of this lookup.
        unsafe { settle(e, b, lim) };
    }
    e.credit = 0;
    e.pending = 0;
    e.pending_bytes = 0;
    let used = if e.prev_used > e.tick_used {
        e.prev_used
    } else {
        e.tick_used
    };
    let mut draw = u64::from((used >> DRAW_SHIFT).clamp(1, MAX_DRAW));
    // SAFETY: the first word of a live bucket, changed by others only atomically.
    let mut state = if draw > 1 {
        unsafe { charge_to(tat, lim, draw * lim.interval, now) }
    } else {
        None
    };
    if state.is_none() {
        // Not that many tokens left: one packet's worth.
        draw = 1;
        // SAFETY: as above.
        state = unsafe { charge_to(tat, lim, lim.interval, now) };
    }
    let Some(state) = state else {
        return REFUSED;
    };
    e.refusing = 0;
    e.tick_used = e.tick_used.saturating_add(1);
    if draw > 1 {
        e.credit = (draw - 1) as u16;
        e.drawn_tat = state;
        e.credit_tag = tag;
        e.credit_slot = slot;
        e.credit_class = class;
    }
    // SAFETY: aligned words of a live bucket.
    unsafe {
        add(&raw mut (*b).packets, 1);
        add(&raw mut (*b).bytes, len);
    }
    PASSED
}

/// Settle the entry's last draw from bucket `b` (limit `lim`): count the packets passed on
/// credit in the bucket, and refund the unspent credit while the bucket still holds the
/// state that draw left (if anything charged it since, the credit stays charged).
///
/// # Safety
/// `b` must be the live bucket the draw was made from, looked up in this invocation (its
/// words change only atomically).
#[inline(always)]
unsafe fn settle(e: &ClassCacheEntry, b: *mut traffic_common::Bucket, lim: &Limit) {
    // SAFETY: the caller's guarantee; aligned words of a live bucket.
    unsafe {
        if e.pending != 0 {
            count_pending(e, b);
        }
        let tat = (&raw mut (*b).tat).cast::<u64>();
        if e.credit != 0 && load(tat) == e.drawn_tat {
            let refunded = e
                .drawn_tat
                .saturating_sub(u64::from(e.credit) * lim.interval);
            let _ = core::intrinsics::atomic_cxchg::<
                u64,
                { core::intrinsics::AtomicOrdering::SeqCst },
                { core::intrinsics::AtomicOrdering::SeqCst },
            >(tat, e.drawn_tat, refunded);
        }
    }
}
