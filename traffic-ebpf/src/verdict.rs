//! Classify and limit: from a parsed source to a (counter row, reason, monitored) verdict.
//! No pointer arithmetic on the frame here and no map statics defined here.

use aya_ebpf::{btf_maps::lpm_trie::Key, helpers::bpf_ktime_get_ns};
use traffic_common::{
    Action, BYTE_LIMIT_SLOT, Bucket, BucketKey, CLASS_ACTIVE, CLASS_ADMISSION, CLASS_BYTES,
    CLASS_MONITOR, ClassConfig, GLOBAL_MONITOR, MAX_CLASSES, MAX_PACKET_LIMITS, Reason,
    UNCLASSIFIED,
};

use crate::{
    gcra,
    maps::{TRF_BUCKETS, TRF_CLASS_STATE, TRF_CLASS_STATS, TRF_CLASSES, TRF_CONFIG, TRF_RULES},
    parse::Ip,
};

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// The verdict on one packet.
pub struct Verdict {
    /// Counter row: the class id, or [`UNCLASSIFIED`].
    pub row: u32,
    pub reason: Reason,
    /// A drop reason that is not enforced because the class or program is in monitor mode.
    pub monitored: bool,
}

impl Verdict {
    #[inline(always)]
    const fn new(row: u32, reason: Reason, monitored: bool) -> Self {
        Self {
            row,
            reason,
            monitored: monitored && reason.is_drop(),
        }
    }
}

/// Whether the program-wide monitor flag is set; `None` when the daemon has not configured
/// the program yet.
#[inline(always)]
pub fn global_monitor() -> Option<bool> {
    let cfg = TRF_CONFIG.get(0)?;
    if cfg.abi_version == 0 {
        return None;
    }
    Some(cfg.flags & GLOBAL_MONITOR != 0)
}

#[inline(always)]
fn class_config(class: u32) -> Option<&'static ClassConfig> {
    if class >= MAX_CLASSES {
        return None;
    }
    let cc = TRF_CLASSES.get(class)?;
    if cc.flags & CLASS_ACTIVE == 0 {
        return None;
    }
    Some(cc)
}

/// Classify an IP packet by its source and apply its class's limits.
#[inline(always)]
pub fn decide(ip: &Ip, len: u64) -> Verdict {
    let Some(cfg) = TRF_CONFIG.get(0) else {
        return Verdict::new(UNCLASSIFIED, Reason::Pass, false);
    };
    if cfg.abi_version == 0 {
        // Loaded but not configured yet: pass everything.
        return Verdict::new(UNCLASSIFIED, Reason::Pass, false);
    }
    let global_monitor = cfg.flags & GLOBAL_MONITOR != 0;

    let (action, class) = match TRF_RULES.get(&Key::new(128, ip.src)) {
        Some(rule) => (rule.action, rule.class),
        None => (Action::Limit as u32, cfg.default_class),
    };
    let row = if class < MAX_CLASSES { class } else { UNCLASSIFIED };

    if action == Action::Allow as u32 {
        return Verdict::new(row, Reason::Allow, false);
    }
    if action == Action::Deny as u32 {
        let monitor =
            global_monitor || class_config(class).is_some_and(|c| c.flags & CLASS_MONITOR != 0);
        return Verdict::new(row, Reason::Deny, monitor);
    }

    // Limit: a rule naming a missing class falls back to the default class.
    let (class, cc) = match class_config(class) {
        Some(cc) => (class, cc),
        None => match class_config(cfg.default_class) {
            Some(cc) => (cfg.default_class, cc),
            None => return Verdict::new(UNCLASSIFIED, Reason::Pass, false),
        },
    };
    let monitor = global_monitor || cc.flags & CLASS_MONITOR != 0;
    let reason = limit(ip, class, cc, len);
    Verdict::new(class, reason, monitor)
}

#[inline(always)]
fn masked(src: &[u8; 16], mask: &[u64; 2]) -> [u8; 16] {
    let hi = u64::from_ne_bytes([
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
    ]) & mask[0];
    let lo = u64::from_ne_bytes([
        src[8], src[9], src[10], src[11], src[12], src[13], src[14], src[15],
    ]) & mask[1];
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hi.to_ne_bytes());
    out[8..].copy_from_slice(&lo.to_ne_bytes());
    out
}

#[inline(always)]
fn limit(ip: &Ip, class: u32, cc: &ClassConfig, len: u64) -> Reason {
    let npkt = cc.packet_limits as usize;
    let bytes = cc.flags & CLASS_BYTES != 0;
    if npkt == 0 && !bytes {
        return Reason::Pass;
    }
    let key = BucketKey {
        addr: masked(&ip.src, if ip.v6 { &cc.mask_v6 } else { &cc.mask_v4 }),
        class,
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };

    let bucket = match TRF_BUCKETS.get_ptr_mut(&key) {
        Some(b) => b,
        None => match admit(&key, class, cc, now) {
            Ok(b) => b,
            Err(reason) => return reason,
        },
    };
    charge_bucket(bucket, cc, npkt, bytes, len, now)
}

/// A source without a bucket: give it one if the class's admission budget allows, else
/// charge the class's shared overflow bucket. Never fails open.
#[inline(always)]
fn admit(key: &BucketKey, class: u32, cc: &ClassConfig, now: u64) -> Result<*mut Bucket, Reason> {
    let Some(state) = TRF_CLASS_STATE.get_ptr_mut(class) else {
        return Err(Reason::MapFull);
    };
    let stats = TRF_CLASS_STATS.get_ptr_mut(class);
    // SAFETY: `state` is a valid pointer into an array map value.
    let admitted = cc.flags & CLASS_ADMISSION == 0
        || gcra::charge(
            unsafe { &raw mut (*state).admit_tat },
            &cc.admission,
            cc.admission.interval,
            now,
        );
    let mut reason = Reason::Overflow;
    if admitted {
        let fresh = Bucket {
            tat: [0; MAX_PACKET_LIMITS + 1],
            packets: 0,
            dropped: 0,
        };
        match TRF_BUCKETS.insert(key, &fresh, BPF_NOEXIST) {
            Ok(()) => {
                if let Some(s) = stats {
                    // SAFETY: per-CPU value of this CPU; XDP runs without migration.
                    unsafe { (*s).admitted += 1 };
                }
            }
            Err(e) if e == -EEXIST => {}
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
        // SAFETY: as above.
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
        && gcra::charge(
            // SAFETY: as above.
            unsafe { &raw mut (*state).overflow_tat },
            &cc.overflow,
            cc.overflow.interval,
            now,
        )
    {
        return Err(Reason::Pass);
    }
    Err(reason)
}

#[inline(always)]
fn charge_bucket(
    b: *mut Bucket,
    cc: &ClassConfig,
    npkt: usize,
    bytes: bool,
    len: u64,
    now: u64,
) -> Reason {
    // SAFETY (all derefs of `b` below): `b` came from a map lookup in this invocation; LRU
    // values stay valid for the program's run, and fields are accessed atomically.
    let tat = unsafe { &raw mut (*b).tat };
    gcra::add(unsafe { &raw mut (*b).packets }, 1);
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
            let p = unsafe { (tat as *mut u64).add(i) };
            if !gcra::conforms(gcra::load(p), lim, lim.interval, now) {
                return refuse(b, Reason::PacketRate);
            }
        }
        if bytes {
            let p = unsafe { (tat as *mut u64).add(BYTE_LIMIT_SLOT) };
            if !gcra::conforms(gcra::load(p), &cc.bytes, byte_cost, now) {
                return refuse(b, Reason::ByteRate);
            }
        }
    }
    for i in 0..MAX_PACKET_LIMITS {
        if i >= npkt {
            break;
        }
        let lim = &cc.packets[i];
        let p = unsafe { (tat as *mut u64).add(i) };
        if !gcra::charge(p, lim, lim.interval, now) {
            return refuse(b, Reason::PacketRate);
        }
    }
    if bytes {
        let p = unsafe { (tat as *mut u64).add(BYTE_LIMIT_SLOT) };
        if !gcra::charge(p, &cc.bytes, byte_cost, now) {
            return refuse(b, Reason::ByteRate);
        }
    }
    Reason::Pass
}

#[inline(always)]
fn refuse(b: *mut Bucket, reason: Reason) -> Reason {
    // SAFETY: as in `charge_bucket`.
    gcra::add(unsafe { &raw mut (*b).dropped }, 1);
    reason
}
