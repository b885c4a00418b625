//! Fleet-wide budgets: a `scope = "fleet"` class holds each source to its limits over the
//! traffic of every node together. Pure: which sources are shared, their wire form, what a
//! node reads back from the others (hostile: bounded and validated here), and the debit
//! that charges a local bucket with the other nodes' use. The Redis side is
//! `crate::serve::fleet::budget`.
//!
//! Every node keeps its own buckets and charges them at line rate as before. Every
//! `budget_interval` it reads the sources the program marked busy (`TRF_FLEET_HOT`: a mark
//! every 16th packet, so a spoofed source sending a few packets never is), follows them, and
//! shares those that used at least `heavy_fraction` of a limit's refill in the interval: a
//! hash per node, field `CLASS ADDR/LEN`, value `EPOCH PACKETS BYTES` — what passed here
//! since the node began sharing the source (a new epoch each time it begins). The others
//! read the hash, take the growth since their last read, and charge it to their bucket of
//! the source (compare-and-swap in the kernel, like a rescale). So each node's bucket sees
//! the whole fleet's use, late by at most two intervals: over a time `t` the fleet passes at
//! most `rate·t + burst + (nodes − 1)·(burst + 2·rate·interval)`.

use std::collections::HashMap;
use std::net::IpAddr;

use traffic_common::{
    BYTE_INTERVAL_SHIFT, BYTE_LIMIT_SLOT, Bucket, BucketKey, ClassConfig, Limit, MAX_PACKET_LIMITS,
    RescaleRequest,
};

/// A followed source is dropped after this many intervals without passing a packet.
pub const IDLE_INTERVALS: u32 = 10;
/// Deepest debt a debit leaves a bucket in beyond its burst: a lying node (or Redis) can
/// hold a source off for at most this long per debit.
pub const MAX_DEBT_NS: u64 = 10_000_000_000;
/// A bucket with at most this many packets when first seen is new: all it passed is shared.
pub const YOUNG_PACKETS: u64 = 4 * traffic_common::FLEET_MARK_EVERY;
/// Longest field accepted from another node.
pub const MAX_FIELD: usize = 128;

/// One `scope = "fleet"` class as the sync sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetClass {
    pub slot: u32,
    pub name: String,
    /// The limits in force (scaled by the throttle level).
    pub limits: ClassConfig,
    pub aggregate_v4: u8,
    pub aggregate_v6: u8,
}

/// The address of a bucket key as text (`198.18.1.7` for an IPv4-mapped key).
fn addr_of(key: &BucketKey) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(key.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A source's field in a node's use hash: `CLASS ADDR/LEN`.
pub fn field(class: &FleetClass, key: &BucketKey) -> String {
    let addr = addr_of(key);
    let len = if addr.is_ipv4() {
        class.aggregate_v4
    } else {
        class.aggregate_v6
    };
    format!("{} {addr}/{len}", class.name)
}

/// The local bucket key of a field read from another node: a class of this node's with
/// fleet scope, and the address masked to this node's aggregation of it.
pub fn parse_field(field: &[u8], classes: &[FleetClass]) -> Option<BucketKey> {
    if field.len() > MAX_FIELD {
        return None;
    }
    let text = std::str::from_utf8(field).ok()?;
    let (name, prefix) = text.split_once(' ')?;
    let class = classes.iter().find(|c| c.name == name)?;
    let (addr, len) = prefix.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let (max, agg) = match addr {
        IpAddr::V4(_) => (32, class.aggregate_v4),
        IpAddr::V6(_) => (128, class.aggregate_v6),
    };
    if len > max {
        return None;
    }
    let mapped = match addr {
        IpAddr::V4(a) => traffic_common::v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    };
    let mask = if addr.is_ipv4() {
        class.limits.mask_v4
    } else {
        class.limits.mask_v6
    };
    // A coarser prefix than this node's aggregation names many of its buckets: not one.
    if len < agg {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, w) in mask.iter().enumerate() {
        let word = u64::from_ne_bytes(mapped[i * 8..i * 8 + 8].try_into().ok()?) & w;
        out[i * 8..i * 8 + 8].copy_from_slice(&word.to_ne_bytes());
    }
    Some(BucketKey {
        addr: out,
        class: class.slot,
    })
}

/// Whether `packets` and `bytes` passed over `elapsed_ns` use at least `fraction` of the
/// refill of one of the class's limits.
pub fn heavy(cc: &ClassConfig, packets: u64, bytes: u64, elapsed_ns: u64, fraction: f64) -> bool {
    let floor = fraction * elapsed_ns as f64;
    let by_packets = cc.packets[..(cc.packet_limits as usize).min(MAX_PACKET_LIMITS)]
        .iter()
        .any(|l| l.interval > 0 && packets as f64 * l.interval as f64 >= floor);
    let by_bytes = cc.bytes.interval > 0
        && (bytes as f64 * cc.bytes.interval as f64 / f64::from(1u32 << BYTE_INTERVAL_SHIFT))
            >= floor;
    (packets > 0 || bytes > 0) && (by_packets || by_bytes)
}

/// The packets a bucket shows as used and not yet refilled under its first packet limit.
fn recent_use(cc: &ClassConfig, b: &Bucket, now_ns: u64) -> u64 {
    let lim = &cc.packets[0];
    if cc.packet_limits == 0 || lim.interval == 0 {
        return 0;
    }
    b.tat[0].saturating_sub(now_ns) / lim.interval
}

/// A source this node follows.
#[derive(Clone, Copy, Debug, Default)]
struct Followed {
    /// The bucket's counters at the last look.
    passed: u64,
    packets: u64,
    bytes: u64,
    /// Shared since it was first heavy: epoch, packets and bytes passed here since.
    shared: Option<(u64, u64, u64)>,
    idle: u32,
}

/// What one interval changes in this node's use hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Every shared source, `(field, value)`.
    pub write: Vec<(String, String)>,
    /// Fields of sources no longer followed.
    pub delete: Vec<String>,
    /// Marks to drop in the program's map.
    pub forget: Vec<BucketKey>,
}

/// This node's side: the sources it follows and shares.
#[derive(Debug)]
pub struct Tracker {
    followed: HashMap<BucketKey, Followed>,
    next_epoch: u64,
    max: usize,
}

impl Tracker {
    /// `seed`: a random start for the epochs (so a restarted node's epochs are new).
    pub fn new(seed: u64, max: usize) -> Self {
        Self {
            followed: HashMap::new(),
            next_epoch: seed,
            max,
        }
    }

    /// Sources shared now.
    pub fn shared(&self) -> usize {
        self.followed
            .values()
            .filter(|f| f.shared.is_some())
            .count()
    }

    /// A new session with Redis: every shared source starts a new epoch from zero, so what
    /// the others read after a restart of Redis (or of theirs) is never counted twice.
    pub fn restart(&mut self) {
        for f in self.followed.values_mut() {
            if f.shared.is_some() {
                f.shared = Some((self.next_epoch, 0, 0));
                self.next_epoch = self.next_epoch.wrapping_add(1);
            }
        }
    }

    /// One interval: `hot` are the marked buckets at `now_ns` (the program's clock),
    /// `elapsed_ns` the time since the last call.
    ///
    /// A source seen for the first time is shared at once with its recent use: all it passed
    /// if its bucket is young ([`YOUNG_PACKETS`]), else the tokens missing from its first
    /// packet limit — a new source's first packets are charged to the others too, an old
    /// one's history is not.
    pub fn observe(
        &mut self,
        hot: &[(BucketKey, Bucket)],
        classes: &[FleetClass],
        elapsed_ns: u64,
        now_ns: u64,
        fraction: f64,
    ) -> Update {
        let mut seen = std::collections::HashSet::new();
        for (key, b) in hot {
            let Some(class) = classes.iter().find(|c| c.slot == key.class) else {
                continue;
            };
            let passed = b.packets.saturating_sub(b.dropped);
            let Some(f) = self.followed.get_mut(key) else {
                if self.followed.len() < self.max {
                    // First look: the counters are a baseline; the recent use its bucket
                    // shows is shared at once.
                    // A young bucket's whole history is recent; an old one's is not.
                    let recent = if b.packets <= YOUNG_PACKETS {
                        passed
                    } else {
                        recent_use(&class.limits, b, now_ns).min(passed)
                    };
                    let shared = (recent > 0).then(|| {
                        let bytes = b.bytes.checked_div(b.packets).unwrap_or(0) * recent;
                        let epoch = self.next_epoch;
                        self.next_epoch = self.next_epoch.wrapping_add(1);
                        (epoch, recent, bytes)
                    });
                    self.followed.insert(
                        *key,
                        Followed {
                            passed,
                            packets: b.packets,
                            bytes: b.bytes,
                            shared,
                            idle: 0,
                        },
                    );
                    seen.insert(*key);
                }
                continue;
            };
            seen.insert(*key);
            // A bucket evicted and made again counts from zero.
            let grew = |now: u64, before: u64| if now >= before { now - before } else { now };
            let dp = grew(passed, f.passed);
            let dpk = grew(b.packets, f.packets);
            let dball = grew(b.bytes, f.bytes);
            // Bytes are counted for every packet; the passed ones' share, pro rata.
            let db = if dpk == 0 {
                0
            } else {
                (u128::from(dball) * u128::from(dp.min(dpk)) / u128::from(dpk)) as u64
            };
            (f.passed, f.packets, f.bytes) = (passed, b.packets, b.bytes);
            f.idle = if dp == 0 { f.idle + 1 } else { 0 };
            if f.shared.is_none() && heavy(&class.limits, dp, db, elapsed_ns, fraction) {
                f.shared = Some((self.next_epoch, 0, 0));
                self.next_epoch = self.next_epoch.wrapping_add(1);
            }
            if let Some((_, p, by)) = &mut f.shared {
                *p = p.saturating_add(dp);
                *by = by.saturating_add(db);
            }
        }
        let mut update = Update::default();
        self.followed.retain(|key, f| {
            if !seen.contains(key) {
                f.idle += 1;
            }
            if f.idle < IDLE_INTERVALS {
                return true;
            }
            update.forget.push(*key);
            if f.shared.is_some()
                && let Some(c) = classes.iter().find(|c| c.slot == key.class)
            {
                update.delete.push(field(c, key));
            }
            false
        });
        for (key, f) in &self.followed {
            let (Some((epoch, p, b)), Some(c)) =
                (f.shared, classes.iter().find(|c| c.slot == key.class))
            else {
                continue;
            };
            update
                .write
                .push((field(c, key), format!("{epoch} {p} {b}")));
        }
        update.write.sort();
        update
    }
}

/// Another node's use of one source since this node's last read: charged to the local
/// bucket `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Debit {
    pub key: BucketKey,
    pub packets: u64,
    pub bytes: u64,
}

/// What a read of the other nodes gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    pub debits: Vec<Debit>,
    /// Entries skipped: unparsable, of no fleet class here, or past the bound.
    pub refused: usize,
}

/// The reading side: per other node, the last value read of each of its fields.
#[derive(Debug, Default)]
pub struct Ledger {
    nodes: HashMap<String, NodeLedger>,
}

/// What was last read of one node: per field `(epoch, packets, bytes, read number)`.
#[derive(Debug, Default)]
struct NodeLedger {
    reads: u64,
    fields: HashMap<Vec<u8>, (u64, u64, u64, u64)>,
}

/// A field not read for this many reads of its node is forgotten (its epoch is over, or
/// the node shares too many sources for one read to see them all).
pub const LEDGER_KEEP_READS: u64 = 50;

/// `EPOCH PACKETS BYTES`.
fn parse_value(v: &[u8]) -> Option<(u64, u64, u64)> {
    if v.len() > 64 {
        return None;
    }
    let mut it = std::str::from_utf8(v).ok()?.split(' ');
    let mut n = || it.next()?.parse::<u64>().ok();
    let r = (n()?, n()?, n()?);
    Some(r)
}

impl Ledger {
    /// Take what was read of node `node`'s hash (at most `max` entries are looked at; a
    /// read may see part of the hash). The first read of a node only records where its
    /// counts stand. A field missing from a read is kept for [`LEDGER_KEEP_READS`] reads,
    /// so a partial read, or Redis losing the hash, never makes a later read count a
    /// source's use twice.
    pub fn read(
        &mut self,
        node: &str,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        classes: &[FleetClass],
        max: usize,
    ) -> Reading {
        let mut r = Reading::default();
        let first = !self.nodes.contains_key(node);
        let led = self.nodes.entry(node.to_owned()).or_default();
        led.reads += 1;
        let read_no = led.reads;
        let mut debits: HashMap<BucketKey, Debit> = HashMap::new();
        for (i, (f, v)) in entries.into_iter().enumerate() {
            let parsed = (i < max)
                .then(|| Some((parse_field(&f, classes)?, parse_value(&v)?)))
                .flatten();
            let Some((key, (epoch, p, b))) = parsed else {
                r.refused += 1;
                continue;
            };
            let (dp, db) = match led.fields.get(&f) {
                _ if first => (0, 0),
                Some(&(e, p0, b0, _)) if e == epoch => (p.saturating_sub(p0), b.saturating_sub(b0)),
                // Shared since the last read (or a new epoch): all of it is new.
                _ => (p, b),
            };
            // A count that went back within an epoch is a lie: keep the higher mark.
            let (p, b) = match led.fields.get(&f) {
                Some(&(e, p0, b0, _)) if e == epoch => (p.max(p0), b.max(b0)),
                _ => (p, b),
            };
            led.fields.insert(f, (epoch, p, b, read_no));
            if dp > 0 || db > 0 {
                let d = debits.entry(key).or_insert(Debit {
                    key,
                    packets: 0,
                    bytes: 0,
                });
                d.packets = d.packets.saturating_add(dp);
                d.bytes = d.bytes.saturating_add(db);
            }
        }
        led.fields
            .retain(|_, &mut (.., seen)| read_no - seen < LEDGER_KEEP_READS);
        if led.fields.len() > 2 * max {
            // Bounded whatever a node writes: the least recently read go first.
            let mut by_age: Vec<_> = led.fields.iter().map(|(f, v)| (v.3, f.clone())).collect();
            by_age.sort();
            for (_, f) in by_age.iter().take(led.fields.len() - 2 * max) {
                led.fields.remove(f);
            }
        }
        r.debits = debits.into_values().collect();
        r
    }

    /// Forget nodes that are no longer in the fleet.
    pub fn retain(&mut self, alive: &[String]) {
        self.nodes.retain(|n, _| alive.contains(n));
    }
}

/// The request that charges `d` to its bucket under the class's limits `cc`: each limit in
/// use moves to `max(tat, now) + cost` (capped at its burst plus [`MAX_DEBT_NS`]) through
/// the rescale program's arithmetic — the same interval before and after, the tolerance
/// lowered by the cost — so the kernel applies it with compare-and-swap where packets
/// charge the bucket. `None` when there is nothing to charge.
pub fn debit_request(d: &Debit, cc: &ClassConfig) -> Option<RescaleRequest> {
    let mut req = RescaleRequest {
        key: d.key,
        ..RescaleRequest::default()
    };
    let mut any = false;
    let mut word = |i: usize, lim: &Limit, cost: u64| {
        if lim.interval == 0 || cost == 0 {
            return;
        }
        let cap = lim.tolerance.saturating_add(MAX_DEBT_NS);
        req.new[i] = Limit {
            interval: lim.interval,
            tolerance: cap,
        };
        req.old[i] = Limit {
            interval: lim.interval,
            tolerance: cap - cost.min(cap),
        };
        any = true;
    };
    for i in 0..(cc.packet_limits as usize).min(MAX_PACKET_LIMITS) {
        let lim = cc.packets[i];
        let cost = u128::from(d.packets) * u128::from(lim.interval);
        word(i, &lim, u64::try_from(cost).unwrap_or(u64::MAX));
    }
    if cc.flags & traffic_common::CLASS_BYTES != 0 {
        let cost = (u128::from(d.bytes) * u128::from(cc.bytes.interval)) >> BYTE_INTERVAL_SHIFT;
        word(
            BYTE_LIMIT_SLOT,
            &cc.bytes,
            u64::try_from(cost).unwrap_or(u64::MAX),
        );
    }
    any.then_some(req)
}

#[cfg(test)]
mod tests;
