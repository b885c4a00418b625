//! The source table from the program's side: find a key's bucket, insert one (evicting the
//! set's quietest source, its debt remembered). The layout, the tag protocol and the choice
//! of victim are `traffic_common::table`; every slot access here is a direct array read.

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg},
    ptr::write_volatile,
};

use aya_ebpf::Global;
use traffic_common::{
    BUCKETS_ENTRIES, Bucket, TABLE_WAYS, TableSlot, table_set, table_set_mask, tag_claimed,
    tag_class, tag_free, tag_live, tag_published, victim,
};

use crate::{
    bucket::{full_at, load},
    debt::DebtSlot,
    maps::TRF_BUCKETS,
};

/// The table's set mask (sets − 1). The loader writes it from the map's size; this default
/// is that of the default size.
#[unsafe(no_mangle)]
static TRF_TABLE_SET_MASK: Global<u32> = Global::new(table_set_mask(BUCKETS_ENTRIES));

/// Ways per set, as a loop bound.
const WAYS: usize = TABLE_WAYS as usize;

/// The first slot of a key's set.
#[inline(always)]
fn first_slot(addr: (u64, u64), class: u32) -> u32 {
    let mask = TRF_TABLE_SET_MASK.load();
    (table_set(addr.0, addr.1, class) & mask) * TABLE_WAYS
}

/// The tag word of a slot: class and sequence, one aligned u64.
///
/// # Safety
/// `s` must be a slot looked up in this invocation.
#[inline(always)]
unsafe fn tag(s: *mut TableSlot) -> *mut u64 {
    // SAFETY: the caller's guarantee; `class` is at offset 16 of an 8-aligned slot, and
    // `seq` follows it: one aligned word (see `TABLE_TAG_WORD`).
    unsafe { (&raw mut (*s).class).cast::<u64>() }
}

/// The tag of slot `s` if it holds the key, read consistently: the same live tag before and
/// after its address.
///
/// # Safety
/// As for [`tag`].
#[inline(always)]
unsafe fn holds(s: *mut TableSlot, addr: (u64, u64), class: u32) -> Option<u64> {
    // SAFETY: the caller's guarantee; whole aligned words of a live array value.
    unsafe {
        let a = (&raw const (*s).addr).cast::<u64>();
        // A quick look first: a way that holds another source costs two loads and a
        // compare, not the whole protocol. The XOR of the address words tells sources
        // apart whichever word they differ in (an IPv4 source in the second, bytes 8–15;
        // an IPv6 source masked to its /64 in the first). Only a match is then read under
        // the tag protocol, so a torn read here can only send the probe on.
        if load(a) ^ load(a.add(1)) != addr.0 ^ addr.1 {
            return None;
        }
        let t = load(tag(s));
        if !tag_live(t) || tag_class(t) != class {
            return None;
        }
        (load(a) == addr.0 && load(a.add(1)) == addr.1 && load(tag(s)) == t).then_some(t)
    }
}

/// A key's place in the table: its bucket, the slot's index and the tag it was found with.
#[derive(Clone, Copy)]
pub struct Found {
    pub bucket: *mut Bucket,
    pub index: u32,
    pub tag: u64,
}

/// The slot `s` (index `index`) that holds a key with tag `tag`.
///
/// # Safety
/// As for [`tag`].
#[inline(always)]
unsafe fn found(s: *mut TableSlot, index: u32, tag: u64) -> Found {
    Found {
        // SAFETY: the caller's guarantee; a place expression.
        bucket: unsafe { &raw mut (*s).bucket },
        index,
        tag,
    }
}

/// Where a key (its masked address as words, and its class) is, if the table holds it.
#[inline(always)]
pub fn find(addr: (u64, u64), class: u32) -> Option<Found> {
    let first = first_slot(addr, class);
    for w in 0..TABLE_WAYS {
        let Some(s) = TRF_BUCKETS.get_ptr_mut(first + w) else {
            continue;
        };
        // SAFETY: a slot of this lookup.
        if let Some(t) = unsafe { holds(s, addr, class) } {
            // SAFETY: as above.
            return Some(unsafe { found(s, first + w, t) });
        }
    }
    None
}

/// The slot of `index`, if it still has tag `tag` (a tally's bucket, see `tally`).
#[inline(always)]
pub fn slot_if(index: u32, tag: u64) -> Option<*mut Bucket> {
    let s = TRF_BUCKETS.get_ptr_mut(index)?;
    // SAFETY: a slot of this lookup; whole aligned words.
    unsafe { (load(self::tag(s)) == tag).then(|| &raw mut (*s).bucket) }
}

/// Where [`insert`] left a key.
pub enum Placed {
    /// Written now, from the bucket given.
    New(Found),
    /// Already there (another CPU inserted it meanwhile).
    Existing(Found),
}

/// Insert `fresh` as the bucket of a key unless the table holds one, giving up the set's
/// [`victim`] when it is full: a victim not yet full again is remembered in the debt sketch
/// first. `None`: every way was held by another writer, or one claimed it first.
#[inline(always)]
pub fn insert(addr: (u64, u64), class: u32, fresh: &Bucket, now: u64) -> Option<Placed> {
    let first = first_slot(addr, class);
    let mut tags = [0u64; WAYS];
    let mut full = [0u64; WAYS];
    for w in 0..WAYS {
        let index = first + w as u32;
        let s = TRF_BUCKETS.get_ptr_mut(index)?;
        // SAFETY: a slot of this lookup.
        unsafe {
            if let Some(t) = holds(s, addr, class) {
                return Some(Placed::Existing(found(s, index, t)));
            }
            tags[w] = load(tag(s));
            full[w] = full_at(&raw const (*s).bucket);
        }
    }
    let index = first + (victim(&tags, &full)? as u32 & (TABLE_WAYS - 1));
    let s = TRF_BUCKETS.get_ptr_mut(index)?;
    // SAFETY: a slot of this lookup; the claim below makes this CPU its only writer, and
    // every word is written whole (readers check the tag around the key).
    unsafe {
        // Read again: the claim succeeds only if nothing changed since this read, so the
        // victim's key and debt below are the ones the claim displaces.
        let old = load(tag(s));
        if !(tag_free(old) || tag_live(old)) {
            return None;
        }
        let a = (&raw mut (*s).addr).cast::<u64>();
        let (vlo, vhi) = (load(a), load(a.add(1)));
        let owed = full_at(&raw const (*s).bucket);
        let claimed = tag_claimed(old);
        // The returned old value is compared (see `bucket::charge_to`).
        let seen = atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            tag(s),
            old,
            claimed,
        )
        .0;
        if seen != old {
            return None;
        }
        if tag_live(old) && owed > now {
            DebtSlot::of((vlo, vhi), tag_class(old)).remember(owed);
        }
        write_volatile(a, addr.0);
        write_volatile(a.add(1), addr.1);
        let b = &raw mut (*s).bucket;
        let (dst, src) = (b.cast::<u64>(), core::ptr::from_ref(fresh).cast::<u64>());
        for i in 0..size_of::<Bucket>() / 8 {
            write_volatile(dst.add(i), src.add(i).read());
        }
        let published = tag_published(claimed, class);
        write_volatile(tag(s), published);
        Some(Placed::New(found(s, index, published)))
    }
}
