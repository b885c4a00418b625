//! What the limits allow: the rules of a daemon config evaluated in user space (longest
//! prefix wins), and ideal token buckets that judge every datagram the generator sends.
//!
//! "Allowed" is what a perfect per-source token bucket, with the rate and burst the daemon
//! reports in force (`/v1/limits`, read every second, so throttle factors are included),
//! would have passed of the datagrams actually offered, at the moments they were sent:
//! tokens refill at the effective rate, a new bucket starts full, and when the limits change
//! the tokens left are kept up to the new burst (as trafficd rescales its buckets). This is
//! the per-second integral of the effective rate plus the burst, capped by what was offered.
//! Sources over a class's admission budget share its overflow bucket, as in the kernel.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, Result, bail};

use crate::admin::{Bucket, ClassLimits};

/// What the rules do with a source.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "class")]
pub enum SourceRule {
    /// Limited by this class.
    Limit(String),
    /// Passes everything; counted under this class.
    Allow(String),
    /// Dropped.
    Deny,
}

impl SourceRule {
    /// The daemon class whose limits apply (none for deny).
    pub fn class(&self) -> Option<&str> {
        match self {
            SourceRule::Limit(c) | SourceRule::Allow(c) => Some(c),
            SourceRule::Deny => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            SourceRule::Limit(c) => c.clone(),
            SourceRule::Allow(c) => format!("{c} (allow)"),
            SourceRule::Deny => "deny rule".into(),
        }
    }
}

/// The `[[rules]]` and `daemon.default_class` of a config.
#[derive(Clone, Debug)]
pub struct Classifier {
    rules: Vec<(IpAddr, u8, SourceRule)>,
    default_class: String,
}

fn to_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a)) << 96),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

impl Classifier {
    /// From a config as TOML (the file trafficd runs with).
    pub fn from_config(cfg: &toml::Table) -> Result<Self> {
        let default_class = cfg
            .get("daemon")
            .and_then(|d| d.get("default_class"))
            .and_then(toml::Value::as_str)
            .unwrap_or("default")
            .to_owned();
        let mut rules = Vec::new();
        for (i, r) in cfg
            .get("rules")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cidr = r
                .get("cidr")
                .and_then(toml::Value::as_str)
                .with_context(|| format!("rules[{i}].cidr"))?;
            let (addr, len) = cidr
                .split_once('/')
                .with_context(|| format!("rules[{i}].cidr `{cidr}`"))?;
            let addr: IpAddr = addr
                .parse()
                .with_context(|| format!("rules[{i}].cidr `{cidr}`"))?;
            let len: u8 = len
                .parse()
                .with_context(|| format!("rules[{i}].cidr `{cidr}`"))?;
            let class = r
                .get("class")
                .and_then(toml::Value::as_str)
                .map(str::to_owned);
            let verdict = match r
                .get("action")
                .and_then(toml::Value::as_str)
                .unwrap_or("limit")
            {
                "limit" => SourceRule::Limit(
                    class.with_context(|| format!("rules[{i}]: limit without class"))?,
                ),
                "allow" => SourceRule::Allow(class.unwrap_or_else(|| default_class.clone())),
                "deny" => SourceRule::Deny,
                other => bail!("rules[{i}].action `{other}`"),
            };
            rules.push((addr, len, verdict));
        }
        Ok(Self {
            rules,
            default_class,
        })
    }

    /// The verdict for a source: the longest matching prefix of its family.
    pub fn verdict(&self, src: IpAddr) -> SourceRule {
        let (v6, bits) = to_bits(src);
        let mut best: Option<(u8, &SourceRule)> = None;
        for (addr, len, verdict) in &self.rules {
            let (rv6, rbits) = to_bits(*addr);
            if rv6 != v6 {
                continue;
            }
            let plen = u32::from(*len); // both families sit in the top bits
            let mask = if plen == 0 {
                0
            } else {
                u128::MAX << (128 - plen.min(128))
            };
            if bits & mask == rbits & mask && best.is_none_or(|(l, _)| *len > l) {
                best = Some((*len, verdict));
            }
        }
        best.map_or_else(
            || SourceRule::Limit(self.default_class.clone()),
            |(_, v)| v.clone(),
        )
    }
}

/// `ip` with every bit past `bits` cleared (the bucket a source falls into).
pub fn masked(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits.min(32)))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits.min(128)))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// The limits in force over time, as read from the daemon: every change with the moment
/// it took effect (lab seconds; for a throttle change, the daemon's own transition time),
/// and how far the record is complete. The ideal buckets judge a datagram only once the
/// record covers its send time, so a change is applied exactly when it happened, not
/// when it was noticed.
#[derive(Default)]
pub struct Board {
    history: RwLock<Vec<Entry>>,
    /// Lab seconds up to which the history is complete (f64 bits).
    known_until: AtomicU64,
}

/// Limits that took effect at `from`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub from: f64,
    /// The throttle level they belong to.
    pub level: String,
    pub limits: Arc<BTreeMap<String, ClassLimits>>,
}

impl Board {
    /// Record limits read at `now`: a new entry from `from` when they differ from the last
    /// one; either way the record is complete up to `now`.
    pub fn publish(
        &self,
        from: f64,
        level: &str,
        limits: BTreeMap<String, ClassLimits>,
        now: f64,
    ) -> bool {
        let mut h = self.history.write().unwrap_or_else(|e| e.into_inner());
        let changed = h.last().is_none_or(|e| *e.limits != limits);
        if changed {
            let floor = h.last().map_or(f64::NEG_INFINITY, |e| e.from);
            let from = if h.is_empty() {
                f64::NEG_INFINITY
            } else {
                from.clamp(floor, now)
            };
            h.push(Entry {
                from,
                level: level.to_owned(),
                limits: Arc::new(limits),
            });
        }
        drop(h);
        self.known_until.store(now.to_bits(), Ordering::Release);
        changed
    }

    /// Lab seconds up to which every change is known.
    pub fn known_until(&self) -> f64 {
        let v = f64::from_bits(self.known_until.load(Ordering::Acquire));
        if self
            .history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            f64::NEG_INFINITY
        } else {
            v
        }
    }

    /// Index of the entry in force at `t`, if any.
    pub fn index_at(&self, t: f64) -> Option<usize> {
        let h = self.history.read().unwrap_or_else(|e| e.into_inner());
        h.iter()
            .rposition(|e| e.from <= t)
            .or(if h.is_empty() { None } else { Some(0) })
    }

    /// Entry `i`.
    pub fn entry(&self, i: usize) -> Option<Entry> {
        self.history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .cloned()
    }

    /// The latest limits.
    pub fn all(&self) -> BTreeMap<String, ClassLimits> {
        self.history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .map(|e| (*e.limits).clone())
            .unwrap_or_default()
    }

    /// The whole record.
    pub fn history(&self) -> Vec<Entry> {
        self.history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Tokens of one ideal bucket.
#[derive(Clone, Copy, Debug)]
struct Tokens {
    tokens: f64,
    rate: f64,
    burst: f64,
}

impl Tokens {
    fn full(b: &Bucket) -> Self {
        Self {
            tokens: b.burst,
            rate: b.rate_per_sec,
            burst: b.burst,
        }
    }

    fn refill(&mut self, dt: f64) {
        self.tokens = (self.tokens + self.rate * dt.max(0.0)).min(self.burst);
    }

    /// New limits: the tokens left stay, up to the new burst.
    fn rescale(&mut self, b: &Bucket) {
        self.rate = b.rate_per_sec;
        self.burst = b.burst;
        self.tokens = self.tokens.min(b.burst);
    }

    fn take(&mut self, n: f64) -> bool {
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Admission and overflow buckets of one daemon class, shared by every source of it.
#[derive(Debug, Default)]
pub struct ClassShared {
    admission: Option<Tokens>,
    overflow: Option<Tokens>,
    last: f64,
    entry: Option<usize>,
}

/// Shared state per daemon class.
#[derive(Default)]
pub struct Shared {
    classes: Mutex<BTreeMap<String, ClassShared>>,
}

fn sync_slot(slot: &mut Option<Tokens>, b: Option<&Bucket>) {
    match (slot.as_mut(), b) {
        (Some(t), Some(b)) => t.rescale(b),
        (None, Some(b)) => *slot = Some(Tokens::full(b)),
        (_, None) => *slot = None,
    }
}

/// One source's ideal buckets (owned by the thread that sends for it).
#[derive(Debug)]
pub struct IdealSource {
    verdict: SourceRule,
    packets: Vec<Tokens>,
    bytes: Option<Tokens>,
    admitted: bool,
    last: f64,
    entry: Option<usize>,
}

impl IdealSource {
    pub fn new(verdict: SourceRule) -> Self {
        Self {
            verdict,
            packets: Vec::new(),
            bytes: None,
            admitted: false,
            last: 0.0,
            entry: None,
        }
    }

    /// Bring the buckets to `until` under the limits in force, applying every change of
    /// the record at the moment it took effect.
    fn advance(&mut self, class: &str, until: f64, board: &Board) {
        let Some(target) = board.index_at(until) else {
            return;
        };
        let mut i = self.entry.unwrap_or(target);
        while self.entry != Some(target) {
            if self.entry.is_some() {
                i += 1;
            }
            let Some(e) = board.entry(i) else { break };
            let at = e.from.max(self.last);
            for t in &mut self.packets {
                t.refill(at - self.last);
            }
            if let Some(b) = self.bytes.as_mut() {
                b.refill(at - self.last);
            }
            self.last = at;
            if let Some(l) = e.limits.get(class) {
                if self.packets.len() == l.packets.len() {
                    for (t, b) in self.packets.iter_mut().zip(&l.packets) {
                        t.rescale(b);
                    }
                } else {
                    self.packets = l.packets.iter().map(Tokens::full).collect();
                }
                sync_slot(&mut self.bytes, l.bytes.as_ref());
            }
            self.entry = Some(i);
        }
        for t in &mut self.packets {
            t.refill(until - self.last);
        }
        if let Some(b) = self.bytes.as_mut() {
            b.refill(until - self.last);
        }
        self.last = self.last.max(until);
    }

    /// Judge one frame of `frame_len` bytes sent at `now` (lab seconds, in order per
    /// source): whether the ideal bucket passes it. Call only once `board` is complete up
    /// to `now`.
    pub fn judge(&mut self, now: f64, frame_len: usize, board: &Board, shared: &Shared) -> bool {
        let class = match &self.verdict {
            SourceRule::Deny => return false,
            SourceRule::Allow(_) => return true,
            SourceRule::Limit(c) => c.clone(),
        };
        let Some(index) = board.index_at(now) else {
            return true;
        };
        if !self.admitted {
            let Some(entry) = board.entry(index) else {
                return true;
            };
            let Some(l) = entry.limits.get(&class) else {
                return true;
            };
            if l.packets.is_empty() && l.bytes.is_none() {
                return true;
            }
            let mut map = shared.classes.lock().unwrap_or_else(|e| e.into_inner());
            let cs = map.entry(class.clone()).or_default();
            let dt = (now - cs.last).max(0.0);
            for t in [cs.admission.as_mut(), cs.overflow.as_mut()]
                .into_iter()
                .flatten()
            {
                t.refill(dt);
            }
            cs.last = cs.last.max(now);
            if cs.entry != Some(index) {
                sync_slot(&mut cs.admission, l.admission.as_ref());
                sync_slot(&mut cs.overflow, l.overflow.as_ref());
                cs.entry = Some(index);
            }
            let admitted = cs.admission.as_mut().is_none_or(|a| a.take(1.0));
            if !admitted {
                return cs.overflow.as_mut().is_some_and(|o| o.take(1.0));
            }
            drop(map);
            // A new bucket starts full under the limits in force.
            self.admitted = true;
            self.packets = l.packets.iter().map(Tokens::full).collect();
            self.bytes = l.bytes.as_ref().map(Tokens::full);
            self.last = now;
            self.entry = Some(index);
        } else {
            self.advance(&class, now, board);
        }
        let cost = frame_len as f64;
        let ok = self.packets.iter().all(|t| t.tokens >= 1.0)
            && self.bytes.as_ref().is_none_or(|b| b.tokens >= cost);
        if ok {
            for t in &mut self.packets {
                t.tokens -= 1.0;
            }
            if let Some(b) = self.bytes.as_mut() {
                b.tokens -= cost;
            }
        }
        ok
    }
}

/// Length of the Ethernet frame carrying a UDP datagram of `payload` bytes (what byte
/// limits count).
pub fn udp_frame_len(v6: bool, payload: usize) -> usize {
    14 + if v6 { 40 } else { 20 } + 8 + payload
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use super::*;

    fn limits(rate: f64, burst: f64) -> BTreeMap<String, ClassLimits> {
        let mut m = BTreeMap::new();
        m.insert(
            "premium".to_owned(),
            ClassLimits {
                factor: 1.0,
                packets: vec![Bucket {
                    rate_per_sec: rate,
                    burst,
                }],
                aggregate_v4: 32,
                aggregate_v6: 64,
                ..Default::default()
            },
        );
        m
    }

    #[test]
    fn classifies_like_the_shipped_rules() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/demo.toml"
        ))
        .unwrap();
        let cfg: toml::Table = toml::from_str(&text).unwrap();
        let c = Classifier::from_config(&cfg).unwrap();
        let v = |s: &str| c.verdict(s.parse().unwrap());
        assert_eq!(v("198.18.1.7"), SourceRule::Limit("premium".into()));
        assert_eq!(v("2001:db8:1:5::1"), SourceRule::Limit("premium".into()));
        assert_eq!(v("198.18.2.7"), SourceRule::Limit("basic".into()));
        assert_eq!(v("198.18.200.7"), SourceRule::Limit("default".into()));
        assert_eq!(v("198.19.130.7"), SourceRule::Limit("default".into()));
        assert_eq!(v("198.18.66.7"), SourceRule::Deny);
        assert_eq!(v("2001:db8:66::9"), SourceRule::Deny);
        assert_eq!(v("198.18.0.9"), SourceRule::Allow("internal".into()));
        assert_eq!(v("2001:db8:0:3::1"), SourceRule::Allow("internal".into()));
    }

    #[test]
    fn ideal_bucket_passes_burst_then_rate_and_applies_changes_when_they_happened() {
        let b = Board::default();
        b.publish(0.0, "none", limits(100.0, 200.0), 10.0);
        let shared = Shared::default();
        let mut s = IdealSource::new(SourceRule::Limit("premium".into()));
        // 300 packets at once: the burst passes.
        let passed = (0..300).filter(|_| s.judge(10.0, 100, &b, &shared)).count();
        assert_eq!(passed, 200);
        // One second later: 100 more.
        b.publish(11.0, "none", limits(100.0, 200.0), 11.0);
        let passed = (0..300).filter(|_| s.judge(11.0, 100, &b, &shared)).count();
        assert_eq!(passed, 100);
        // Limits halved at 12.0, noticed at 13.0: 1 s refilled at 100/s (capped at the new
        // burst of 100), then 1 s at 50/s, capped at 100.
        b.publish(12.0, "high", limits(50.0, 100.0), 13.0);
        let passed = (0..300).filter(|_| s.judge(13.0, 100, &b, &shared)).count();
        assert_eq!(passed, 100);
        // And back up at 13.5: half a second at 50/s, then 0.5 s at 100/s.
        b.publish(13.5, "none", limits(100.0, 200.0), 14.0);
        let passed = (0..300).filter(|_| s.judge(14.0, 100, &b, &shared)).count();
        assert_eq!(passed, 75);
        assert_eq!(b.history().len(), 3);
    }
}
