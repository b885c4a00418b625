//! The per-source class limits: find (or admit) the source's bucket, apply its port's
//! new-connection limit, check every stacked limit (packet and byte rates) before charging
//! any, count what passed and what did not. The word primitives are [`crate::bucket`].
//!
//! Nothing here writes the debt sketch ([`crate::debt`]): the table writes a source's debt
//! there when it evicts the source, and a bucket created for a source starts from it, so an
//! eviction never refills a source that was over its limit.

use traffic_common::{
    BYTE_LIMIT_SLOT, Bucket, CLASS_ADMISSION, CLASS_BYTES, CLASS_FLEET, ClassConfig,
    FLEET_MARK_EVERY, Limit, MAX_PACKET_LIMITS, PORT_BUCKET, PortRule, Reason,
};
use traffic_ebpf::{gcra, parse::Ip};

use crate::{
    admission,
    bucket::{add, bucket_key, charge_to, load, masked},
    clock::Clock,
    count::PortCounters,
    credit::{self, Credit},
    debt,
    maps::TRF_FLEET_HOT,
    table::{self, Found},
    tally,
};

/// A port's per-source limit on new connections, for a new TCP connection to the port.
#[derive(Clone, Copy)]
pub struct PortLimit<'a> {
    limit: &'a Limit,
    /// The port rule's slot: its statistics, and the class of its buckets' keys.
    slot: u32,
}

impl<'a> PortLimit<'a> {
    /// The limit of a port rule for this packet: only for a new TCP connection, and only
    /// when the rule sets one.
    #[inline(always)]
    pub fn of(ip: &Ip, rule: &'a PortRule) -> Option<Self> {
        (ip.l4.is_new_tcp() && rule.syn_limit.interval != 0).then_some(Self {
            limit: &rule.syn_limit,
            slot: rule.slot,
        })
    }
}

/// The class limits: find (or admit) the source's bucket, apply the port's new-connection
/// limit `syn`, and charge the bucket.
///
/// The new-connection limit is a bucket of its own per (source, port), created only for a
/// source that holds a class bucket: admission decides once per source, so a flood of
/// spoofed SYNs inserts no more keys than the budget allows, and a source the budget turned
/// away is limited by the class's overflow bucket alone.
///
/// `credit` is the source's classification cache entry, used (see [`crate::credit`]) when
/// `may_credit` (no port rule applies) and the class has one packet limit, no byte limit
/// and local scope: the entry may then pass or refuse the packet without the bucket.
#[inline(always)]
pub fn class_limits(
    ip: &Ip,
    class: u32,
    cc: &ClassConfig,
    len: u64,
    syn: Option<PortLimit>,
    (credit, may_credit): (Credit, bool),
    clock: &mut Clock,
) -> Reason {
    let npkt = cc.packet_limits as usize;
    let bytes = cc.flags & CLASS_BYTES != 0;
    // Credit: one packet limit, no byte limit, no fleet marks, no port limit.
    let may_credit =
        may_credit && npkt == 1 && !bytes && cc.flags & CLASS_FLEET == 0 && syn.is_none();
    let mask = if ip.v6 { &cc.mask_v6 } else { &cc.mask_v4 };
    if npkt == 0 && !bytes {
        // No class bucket: the port's limit alone, its bucket admitted as a class bucket is.
        return match syn {
            Some(pl) => {
                let addr = masked(ip.src, mask);
                let now = clock.now();
                new_connection(addr, pl, now, Create::Admit { class, cc })
            }
            None => Reason::Pass,
        };
    }
    let addr = masked(ip.src, mask);
    let now = clock.now();
    if may_credit {
        match credit.cached(class, now, len) {
            Some(true) => return Reason::Pass,
            Some(false) => return Reason::PacketRate,
            None => {}
        }
    }

    // Under a flood of new sources (what admission is for), looking an unknown key up
    // touches random lines of a large, cold table; the seen-bitmap answers "certainly not
    // tracked" from cache. Only admission classes consult it: their inserts are few, so it
    // stays sparse. Every insert sets its bit, so it never hides a bucket.
    let seen = (cc.flags & CLASS_ADMISSION != 0).then(|| admission::Seen::of(addr, class));
    let found = match &seen {
        Some(s) if !s.maybe_tracked() => None,
        _ => table::find(addr, class),
    };
    let bucket = match found {
        Some(b) => {
            if let Some(s) = &seen {
                s.refresh();
            }
            b
        }
        None => match admission::admit(addr, class, class, cc, now, |full_at| {
            debt::class_bucket(cc, full_at, now)
        }) {
            Ok(b) => b,
            Err(reason) => return reason,
        },
    };
    if let Some(pl) = syn {
        // The source holds a class bucket: its port bucket needs no admission of its own.
        let r = new_connection(addr, pl, now, Create::Tracked);
        if r != Reason::Pass {
            return r;
        }
    }
    if may_credit {
        // SAFETY: a slot found in this invocation.
        return if unsafe { credit::charge(&credit, &bucket, class, &cc.packets[0], len, now) } {
            Reason::Pass
        } else {
            // SAFETY: as above.
            unsafe { refuse(&bucket, Reason::PacketRate, len, now) }
        };
    }
    // SAFETY: `bucket` came from a map lookup in this invocation; array values stay valid for
    // the program's run, and their fields are accessed atomically.
    let reason = unsafe {
        charge_bucket(
            &bucket,
            cc,
            Charge {
                npkt,
                bytes,
                len,
                now,
            },
        )
    };
    if cc.flags & CLASS_FLEET != 0 {
        // SAFETY: as above.
        unsafe { fleet_mark(addr, class, bucket.bucket, now) };
    }
    reason
}

/// Mark a bucket of a `scope = "fleet"` class in the hot-source map every
/// [`FLEET_MARK_EVERY`]th packet (passed or not), for the daemon's budget sync. Out of
/// line: classes of local scope pay one flag test.
///
/// # Safety
/// As for [`charge_bucket`].
#[inline(never)]
unsafe fn fleet_mark(addr: (u64, u64), class: u32, b: *mut Bucket, now: u64) {
    // SAFETY: the caller's guarantee; a racy read is fine (a mark more or less).
    let packets = unsafe { load(&raw const (*b).packets) };
    if packets & (FLEET_MARK_EVERY - 1) == 0 {
        let _ = TRF_FLEET_HOT.insert(&bucket_key(addr, class).0, &now, 0);
    }
}

/// What one packet charges a class bucket with.
struct Charge {
    npkt: usize,
    bytes: bool,
    len: u64,
    now: u64,
}

/// How a missing (source, port) bucket is created.
enum Create<'a> {
    /// Through the class's admission (the class has no bucket of its own).
    Admit { class: u32, cc: &'a ClassConfig },
    /// At once: the source holds a class bucket, so it was admitted already.
    Tracked,
}

/// The per-source new-connection limit of a port: find the (source, port) bucket, or
/// create one, and charge it. A source that cannot be tracked is refused: a full map never
/// fails open (a source admission turns away is judged by the overflow bucket instead).
#[inline(always)]
fn new_connection(addr: (u64, u64), pl: PortLimit, now: u64, create: Create) -> Reason {
    let port_class = PORT_BUCKET | pl.slot;
    let start = |full_at| debt::port_bucket(pl.limit, full_at, now);
    let found = match table::find(addr, port_class) {
        Some(b) => Ok(b),
        None => match create {
            Create::Admit { class, cc } => {
                admission::admit(addr, port_class, class, cc, now, start)
            }
            Create::Tracked => {
                admission::insert(addr, port_class, now, start, None).ok_or(Reason::PortRate)
            }
        },
    };
    let b = match found {
        Ok(f) => f.bucket,
        Err(reason) => return reason,
    };
    // SAFETY: a bucket looked up in this invocation; its words are only changed atomically.
    let tat = unsafe { &raw mut (*b).tat }.cast::<u64>();
    // SAFETY: as above.
    match unsafe { charge_to(tat, pl.limit, pl.limit.interval, now) } {
        Some(_) => Reason::Pass,
        None => {
            PortCounters::of(pl.slot).bump(|s| s.syn_limited += 1);
            Reason::PortRate
        }
    }
}

/// Charge a source's bucket with every limit of its class.
///
/// # Safety
/// `b` must point to a bucket looked up in this invocation (its words are only changed
/// atomically).
#[inline(always)]
unsafe fn charge_bucket(at: &Found, cc: &ClassConfig, c: Charge) -> Reason {
    let b = at.bucket;
    let Charge {
        npkt,
        bytes,
        len,
        now,
    } = c;
    // SAFETY: the caller guarantees `b` is a live bucket; a place expression.
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
                return unsafe { refuse(at, Reason::PacketRate, len, now) };
            }
        }
        if bytes {
            // SAFETY: BYTE_LIMIT_SLOT is the last element of `tat`; a live bucket word.
            let state = unsafe { load(tat.add(BYTE_LIMIT_SLOT)) };
            if !gcra::conforms(state, &cc.bytes, byte_cost, now) {
                // SAFETY: the caller's guarantee.
                return unsafe { refuse(at, Reason::ByteRate, len, now) };
            }
        }
    }
    for i in 0..MAX_PACKET_LIMITS {
        if i >= npkt {
            break;
        }
        let lim = &cc.packets[i];
        // SAFETY: as in the check above.
        if unsafe { charge_to(tat.add(i), lim, lim.interval, now) }.is_none() {
            // SAFETY: the caller's guarantee.
            return unsafe { refuse(at, Reason::PacketRate, len, now) };
        }
    }
    if bytes {
        // SAFETY: as in the check above.
        if unsafe { charge_to(tat.add(BYTE_LIMIT_SLOT), &cc.bytes, byte_cost, now) }.is_none() {
            // SAFETY: the caller's guarantee.
            return unsafe { refuse(at, Reason::ByteRate, len, now) };
        }
    }
    // SAFETY: the caller's guarantee; aligned words of a live bucket.
    unsafe {
        add(&raw mut (*b).packets, 1);
        add(&raw mut (*b).bytes, len);
    }
    Reason::Pass
}

/// Count a refused packet of `len` bytes (see [`crate::tally`]). A refusal reads the bucket
/// and writes nothing else: its debt is in the bucket, and the table hands it to the sketch
/// if it evicts the source.
///
/// # Safety
/// As for [`charge_bucket`].
#[inline(always)]
unsafe fn refuse(at: &Found, reason: Reason, len: u64, now: u64) -> Reason {
    tally::refused(at, len, now);
    reason
}
