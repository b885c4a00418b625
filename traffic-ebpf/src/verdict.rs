//! Classify and limit: from a parsed source to a (counter row, reason, monitored) verdict.
//! No pointer arithmetic on the frame here and no map statics defined here.

use core::intrinsics::{AtomicOrdering, atomic_or};

use aya_ebpf::{
    btf_maps::lpm_trie::Key,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
};
use traffic_common::{
    Action, BYTE_LIMIT_SLOT, Bucket, BucketKey, CLASS_ACTIVE, CLASS_ADMISSION, CLASS_BYTES,
    CLASS_MONITOR, Chaos, ClassConfig, GLOBAL_HAS_PORTS, GLOBAL_MONITOR, Gate, MAX_CLASSES,
    MAX_PACKET_LIMITS, PORT_BUCKET, PORT_CLASS_OVERRIDE, PORT_GATE_RESET, PORT_SHED, PortKey,
    PortRule, PortStats, Reason, UNCLASSIFIED, class_cache_index_words, proto, seen_bit,
    seen_bit_words, words_addr,
};

use crate::{
    gcra,
    maps::{
        TRF_BUCKETS, TRF_CLASS_STATE, TRF_CLASS_STATS, TRF_CLASSES, TRF_CLS_CACHE, TRF_CONFIG,
        TRF_PORT_STATS, TRF_PORTS, TRF_RULES, TRF_SEEN,
    },
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
    /// Refuse with a TCP RST (sent back with XDP_TX) instead of a silent drop.
    pub reset: bool,
}

impl Verdict {
    #[inline(always)]
    pub const fn new(row: u32, reason: Reason, monitored: bool) -> Self {
        Self {
            row,
            reason,
            monitored: monitored && reason.is_drop(),
            reset: false,
        }
    }

    #[inline(always)]
    const fn with_reset(mut self, reset: bool) -> Self {
        self.reset = reset && self.reason.is_drop();
        self
    }
}

/// A drop decided before the class limits: its reason and whether to answer with RST.
struct Refusal {
    reason: Reason,
    reset: bool,
}

/// The kernel clock, read at most once per packet.
///
/// The coarse clock (CLOCK_MONOTONIC as of the last tick) costs a few loads; the fine one
/// reads the TSC: ~10 ns on bare metal, 35–45 ns in the VMs we measured — a quarter of a
/// known source's verdict. GCRA needs no finer resolution than its shortest tolerance, and
/// the daemon keeps every tolerance ≥ [`traffic_common::CLOCK_TICK_MAX_NS`]: refill then
/// arrives a tick at a time and the long-run rate stays exact.
struct Clock(u64);

impl Clock {
    #[inline(always)]
    fn now(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: helper without arguments.
            self.0 = unsafe { bpf_ktime_get_coarse_ns() };
        }
        self.0
    }
}

/// The rule of a source: from this CPU's classification cache when it holds the source
/// under the current rule generation, else from the LPM trie (and then cached).
#[inline(always)]
fn rule_of(src: (u64, u64), default_class: u32, rules_gen: u32) -> (u32, u32) {
    let (lo, hi) = src;
    let entry = TRF_CLS_CACHE.get_ptr_mut(class_cache_index_words(lo, hi));
    if let Some(e) = entry {
        // SAFETY: per-CPU value of this CPU; XDP runs with migration disabled.
        let e = unsafe { &*e };
        if e.rules_gen == rules_gen && rules_gen != 0 && e.addr[0] == lo && e.addr[1] == hi {
            return (e.action, e.class);
        }
    }
    let found = match TRF_RULES.get(&Key::new(128, words_addr(lo, hi))) {
        Some(rule) => (rule.action, rule.class),
        None => (Action::Limit as u32, default_class),
    };
    if let Some(e) = entry {
        // SAFETY: as above; only this CPU writes its value.
        let e = unsafe { &mut *e };
        e.addr = [lo, hi];
        e.rules_gen = rules_gen;
        e.action = found.0;
        e.class = found.1;
    }
    found
}

/// Whether a bucket key — its masked address as words, and its class — may have a bucket
/// (false: it certainly has none).
#[inline(always)]
fn maybe_tracked(addr: (u64, u64), class: u32) -> bool {
    let (word, bit) = seen_bit_words(addr.0, addr.1, class);
    match TRF_SEEN.get_ptr(word) {
        // SAFETY: array value from this lookup; others change it only by atomic OR.
        Some(p) => (unsafe { core::ptr::read_volatile(p) } & bit) != 0,
        None => true,
    }
}

/// Record that a bucket key has a bucket.
#[inline(always)]
fn mark_tracked(key: &BucketKey) {
    let (word, bit) = seen_bit(key);
    if let Some(p) = TRF_SEEN.get_ptr_mut(word) {
        // SAFETY: array value from this lookup; shared words are only changed atomically.
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(p, bit) };
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

    let (action, class) = rule_of(ip.src, cfg.default_class, cfg.rules_gen);
    let row = if class < MAX_CLASSES {
        class
    } else {
        UNCLASSIFIED
    };

    if action == Action::Allow as u32 {
        return Verdict::new(row, Reason::Allow, false);
    }
    if action == Action::Deny as u32 {
        let monitor =
            global_monitor || class_config(class).is_some_and(|c| c.flags & CLASS_MONITOR != 0);
        return Verdict::new(row, Reason::Deny, monitor);
    }

    let mut clock = Clock(0);
    // Per-port rules: a class override, then the gate, the bulkhead, fault injection and
    // the per-source new-connection limit.
    let mut class = class;
    let mut port: Option<*mut PortRule> = None;
    if cfg.flags & GLOBAL_HAS_PORTS != 0 && ip.l4.known {
        let key = PortKey {
            port: ip.l4.dport,
            protocol: ip.l4.protocol,
            _pad: 0,
        };
        if let Some(pr) = TRF_PORTS.get_ptr_mut(&key) {
            // SAFETY: a value pointer from a lookup in this invocation.
            let rule = unsafe { &*pr };
            if rule.flags & PORT_CLASS_OVERRIDE != 0 {
                class = rule.class;
            }
            port = Some(pr);
        }
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
    if let Some(pr) = port
        && let Some(r) = port_gate(ip, pr, cc, &mut clock)
    {
        return Verdict::new(class, r.reason, monitor).with_reset(r.reset);
    }
    if let Some(r) = chaos(&cc.chaos, ip, &mut clock, None) {
        return Verdict::new(class, r.reason, monitor).with_reset(r.reset);
    }
    let reason = limit(ip, class, cc, len, &mut clock);
    Verdict::new(class, reason, monitor)
}

#[inline(always)]
fn port_stats(slot: u32) -> Option<*mut PortStats> {
    TRF_PORT_STATS.get_ptr_mut(slot)
}

/// Fault injection: drop a fraction of packets, reset a fraction of new connections, until
/// the deadline.
#[inline(always)]
fn chaos(c: &Chaos, ip: &Ip, clock: &mut Clock, stats: Option<*mut PortStats>) -> Option<Refusal> {
    if c.until_ns == 0 || (c.drop_ratio == 0 && c.reset_ratio == 0) || clock.now() >= c.until_ns {
        return None;
    }
    // SAFETY: helper without arguments.
    let roll = unsafe { bpf_get_prandom_u32() };
    if ip.l4.is_new_tcp() && roll < c.reset_ratio {
        if let Some(s) = stats {
            // SAFETY: per-CPU slot of this CPU.
            unsafe { (*s).chaos_reset += 1 };
        }
        return Some(Refusal {
            reason: Reason::Chaos,
            reset: true,
        });
    }
    // An independent roll for drops, so the two fractions do not overlap.
    // SAFETY: helper without arguments.
    let roll = unsafe { bpf_get_prandom_u32() };
    if roll < c.drop_ratio {
        if let Some(s) = stats {
            // SAFETY: per-CPU slot of this CPU.
            unsafe { (*s).chaos_dropped += 1 };
        }
        return Some(Refusal {
            reason: Reason::Chaos,
            reset: false,
        });
    }
    None
}

/// The port's gate: open and half-open breakers, the bulkhead, fault injection and the
/// per-source new-connection limit. Established TCP flows always pass the gate.
#[inline(always)]
fn port_gate(ip: &Ip, pr: *mut PortRule, cc: &ClassConfig, clock: &mut Clock) -> Option<Refusal> {
    // SAFETY: a value pointer from a lookup in this invocation.
    let rule = unsafe { &*pr };
    let stats = port_stats(rule.slot);
    let new_tcp = ip.l4.is_new_tcp();
    let udp = ip.l4.protocol == proto::UDP;
    let reset = rule.flags & PORT_GATE_RESET != 0;
    if new_tcp && let Some(s) = stats {
        // SAFETY: per-CPU slot of this CPU.
        unsafe { (*s).syns += 1 };
    }
    if new_tcp || udp {
        let gate = rule.gate;
        let refused = if gate == Gate::Open as u32 {
            true
        } else if gate == Gate::HalfOpen as u32 {
            // A bounded number of trial connections per interval, shared by all sources.
            let trial = rule.half_open.interval != 0
                && gcra::charge(
                    // SAFETY: as above; the field is only accessed atomically.
                    unsafe { &raw mut (*pr).half_open_tat },
                    &rule.half_open,
                    rule.half_open.interval,
                    clock.now(),
                );
            if trial && let Some(s) = stats {
                // SAFETY: per-CPU slot of this CPU.
                unsafe { (*s).trials += 1 };
            }
            !trial
        } else {
            false
        };
        if refused {
            if let Some(s) = stats {
                // SAFETY: per-CPU slot of this CPU.
                unsafe { (*s).gated += 1 };
            }
            return Some(Refusal {
                reason: if reset && new_tcp {
                    Reason::GateReset
                } else {
                    Reason::Gate
                },
                reset: reset && new_tcp,
            });
        }
    }
    if new_tcp && rule.flags & PORT_SHED != 0 {
        if let Some(s) = stats {
            // SAFETY: per-CPU slot of this CPU.
            unsafe { (*s).shed += 1 };
        }
        return Some(Refusal {
            reason: Reason::Bulkhead,
            reset,
        });
    }
    if let Some(r) = chaos(&rule.chaos, ip, clock, stats) {
        return Some(r);
    }
    if new_tcp && rule.syn_limit.interval != 0 {
        let key = bucket_key(
            masked(ip.src, if ip.v6 { &cc.mask_v6 } else { &cc.mask_v4 }),
            PORT_BUCKET | rule.slot,
        );
        let key = &key.0;
        let now = clock.now();
        let b = match TRF_BUCKETS.get_ptr_mut(key) {
            Some(b) => Some(b),
            None => {
                let fresh = Bucket::default_const();
                let _ = TRF_BUCKETS.insert(key, &fresh, BPF_NOEXIST);
                TRF_BUCKETS.get_ptr_mut(key)
            }
        };
        // A source we cannot track is refused: a full map never fails open.
        let ok = match b {
            // SAFETY: a value pointer from a lookup in this invocation.
            Some(b) => gcra::charge(
                unsafe { &raw mut (*b).tat[0] },
                &rule.syn_limit,
                rule.syn_limit.interval,
                now,
            ),
            None => false,
        };
        if !ok {
            if let Some(s) = stats {
                // SAFETY: per-CPU slot of this CPU.
                unsafe { (*s).syn_limited += 1 };
            }
            return Some(Refusal {
                reason: Reason::PortRate,
                reset: false,
            });
        }
    }
    None
}

#[inline(always)]
fn masked(src: (u64, u64), mask: &[u64; 2]) -> (u64, u64) {
    (src.0 & mask[0], src.1 & mask[1])
}

/// A bucket key on an 8-byte boundary, so its address is written as two words rather than
/// sixteen bytes (the contract's `BucketKey` itself is only 4-aligned).
#[repr(C, align(8))]
struct KeyBuf(BucketKey);

#[inline(always)]
fn bucket_key(addr: (u64, u64), class: u32) -> KeyBuf {
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

#[inline(always)]
fn limit(ip: &Ip, class: u32, cc: &ClassConfig, len: u64, clock: &mut Clock) -> Reason {
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
    let untracked = cc.flags & CLASS_ADMISSION != 0 && !maybe_tracked(addr, class);
    let found = if untracked {
        None
    } else {
        TRF_BUCKETS.get_ptr_mut(key)
    };
    let bucket = match found {
        Some(b) => b,
        None => match admit(key, class, cc, now) {
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
        let fresh = Bucket::default_const();
        match TRF_BUCKETS.insert(key, &fresh, BPF_NOEXIST) {
            Ok(()) => {
                mark_tracked(key);
                if let Some(s) = stats {
                    // SAFETY: per-CPU value of this CPU; XDP runs without migration.
                    unsafe { (*s).admitted += 1 };
                }
            }
            Err(e) if e == -EEXIST => mark_tracked(key),
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

trait DefaultConst {
    fn default_const() -> Self;
}

impl DefaultConst for Bucket {
    /// A full bucket (all states 0) with no history.
    #[inline(always)]
    fn default_const() -> Self {
        Bucket {
            tat: [0; MAX_PACKET_LIMITS + 1],
            packets: 0,
            dropped: 0,
        }
    }
}
