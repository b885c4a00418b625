//! Counters, effective limits and tracked sources (the bucket map), and resetting a source.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use tracing::{info, warn};
use traffic_common::{Bucket, BucketKey, ClassConfig};

use super::OpError;
use crate::{
    api::report::{self, CountersReport},
    dataplane::walk::BucketWalker,
    engine::Core,
};

/// How long tracked-source counts are reused before the next walk.
pub const SOURCES_CACHE_AGE: Duration = Duration::from_secs(5);
/// The time one walk of the bucket map may take; past it, the answer is partial.
pub const WALK_BUDGET: Duration = Duration::from_secs(1);
/// The most rows `sources` returns (memory per walk is bounded by this, not the map).
pub const MAX_TOP: usize = 10_000;

/// A class slot as the walk needs it.
struct SlotView {
    name: String,
    aggregate_v4: u8,
    aggregate_v6: u8,
    limits: ClassConfig,
}

/// A walk of the bucket map, detached from the engine (see [`Core::sources_walk`]).
pub struct SourcesWalk {
    walker: BucketWalker,
    slots: Vec<SlotView>,
    now_ns: u64,
    /// The program's count of class buckets created (the classes' `admitted`, summed),
    /// for the baseline's hinted walk; 0 when not read.
    pub(crate) created: u64,
}

/// A key in the top-N set: by packets, then by key (a fixed order for ties).
type Ranked = (u64, [u8; 16], u32);

impl SourcesWalk {
    /// The counters of at most `max` class buckets (port buckets left out), within
    /// `budget`: the baseline's readings (`policy::baseline`). The table's order is its hash
    /// order, so a walk cut short reads about the same sources each time. A hinted walk:
    /// the table's occupied part, a new source seen within a few readings.
    pub fn baseline_sample(
        &self,
        max: u64,
        budget: Duration,
    ) -> (Vec<crate::policy::baseline::Sample>, bool) {
        let mut out = Vec::new();
        let walked = self
            .walker
            .walk_hinted(self.created, Instant::now() + budget, max, |k, b| {
                if k.class < traffic_common::MAX_CLASSES {
                    out.push(crate::policy::baseline::Sample {
                        key: *k,
                        packets: b.packets,
                        bytes: b.bytes,
                    });
                }
            });
        match walked {
            Ok(end) => (out, end.partial),
            Err(e) => {
                warn!(error = %e, "baseline: cannot walk the bucket map");
                (out, true)
            }
        }
    }

    /// Tracked sources per class slot, within [`WALK_BUDGET`].
    pub fn per_slot(&self) -> Vec<u64> {
        let mut per_slot = vec![0u64; traffic_common::MAX_CLASSES as usize];
        let walked = self.walker.walk(Instant::now() + WALK_BUDGET, |k, _| {
            if let Some(n) = per_slot.get_mut(k.class as usize) {
                *n += 1;
            }
        });
        match walked {
            Ok(end) if end.partial => warn!(
                visited = end.visited,
                "tracked sources: the bucket-map walk stopped at its budget; counts are partial"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot walk the bucket map"),
        }
        per_slot
    }

    /// The `top` (at most [`MAX_TOP`]) sources by packets, within [`WALK_BUDGET`]. Memory is
    /// bounded by `top`; a key the walk meets twice (moved meanwhile) is counted once in the rows.
    pub fn top(&self, top: usize) -> Result<report::SourcesReport, OpError> {
        let top = top.min(MAX_TOP);
        let mut ranked: BTreeSet<Ranked> = BTreeSet::new();
        let mut rows: HashMap<([u8; 16], u32), Bucket> = HashMap::new();
        let end = self.walker.walk(Instant::now() + WALK_BUDGET, |k, b| {
            keep_top(&mut ranked, &mut rows, top, k, b);
        })?;
        if end.partial {
            warn!(
                visited = end.visited,
                "sources: the bucket-map walk stopped at its budget; the answer is partial"
            );
        }
        let mut sources: Vec<_> = ranked
            .iter()
            .filter_map(|(_, addr, class)| {
                let b = rows.get(&(*addr, *class))?;
                Some(self.entry(
                    &BucketKey {
                        addr: *addr,
                        class: *class,
                    },
                    b,
                ))
            })
            .collect();
        sources.sort_by(|a, b| {
            b.packets
                .cmp(&a.packets)
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
        Ok(report::SourcesReport {
            tracked: end.visited,
            sources,
            partial: end.partial,
        })
    }

    /// One row of the report (the only place a String is made per source).
    fn entry(&self, k: &BucketKey, b: &Bucket) -> report::SourceEntry {
        let slot = self.slots.get(k.class as usize);
        let ip = std::net::Ipv6Addr::from(k.addr);
        let prefix = match ip.to_ipv4_mapped() {
            Some(v4) => format!("{v4}/{}", slot.map_or(32, |s| s.aggregate_v4)),
            None => format!("{ip}/{}", slot.map_or(128, |s| s.aggregate_v6)),
        };
        let cc = slot.map(|s| s.limits).unwrap_or_default();
        let tokens = (cc.packet_limits > 0 && cc.packets[0].interval > 0).then(|| {
            let l = cc.packets[0];
            let debt = b.tat[0].saturating_sub(self.now_ns);
            l.tolerance.saturating_sub(debt) as f64 / l.interval as f64
        });
        report::SourceEntry {
            class: slot.map_or_else(|| "?".to_owned(), |s| s.name.clone()),
            prefix,
            packets: b.packets,
            dropped: b.dropped,
            tokens,
        }
    }
}

/// Keep `(k, b)` if it is among the `top` by packets seen so far.
fn keep_top(
    ranked: &mut BTreeSet<Ranked>,
    rows: &mut HashMap<([u8; 16], u32), Bucket>,
    top: usize,
    k: &BucketKey,
    b: &Bucket,
) {
    let id = (k.addr, k.class);
    let new = (b.packets, k.addr, k.class);
    if let Some(old) = rows.get(&id) {
        // Met again (the walk restarted after an eviction): the later value wins.
        ranked.remove(&(old.packets, k.addr, k.class));
    } else if ranked.len() >= top {
        match ranked.first() {
            Some(min) if *min < new => {
                let min = *min;
                ranked.remove(&min);
                rows.remove(&(min.1, min.2));
            }
            _ => return,
        }
    }
    ranked.insert(new);
    rows.insert(id, *b);
}

impl Core {
    /// Current counters.
    pub fn counters(&self) -> Result<CountersReport, OpError> {
        Ok(report::counters_report(&self.dp.counters()?, &self.slots))
    }

    /// Tracked sources per class slot, as of the last walk of the bucket map (zeros before
    /// the first). Never walks: a full map holds up to `max_sources` entries, so the walk
    /// runs off the lock ([`SourcesWalk::per_slot`], `serve::walks`).
    pub fn tracked_sources(&self) -> Vec<u64> {
        self.sources_cache.as_ref().map_or_else(
            || vec![0u64; traffic_common::MAX_CLASSES as usize],
            |(_, v)| v.clone(),
        )
    }

    /// Whether the tracked-source counts are older than [`SOURCES_CACHE_AGE`].
    pub fn tracked_sources_stale(&self) -> bool {
        self.sources_cache
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= SOURCES_CACHE_AGE)
    }

    /// Keep the counts a walk found.
    pub fn store_tracked_sources(&mut self, per_slot: Vec<u64>) {
        self.sources_cache = Some((Instant::now(), per_slot));
    }

    /// What a walk of the bucket map needs, copied under the lock (cheap: a duplicated
    /// map descriptor and one row per class slot).
    pub fn sources_walk(&self) -> Result<SourcesWalk, OpError> {
        let slots = (0..traffic_common::MAX_CLASSES)
            .map(|slot| {
                let name = self.slots.name_of(slot).unwrap_or("?").to_owned();
                let spec = self.config.classes.iter().find(|c| c.name == name);
                SlotView {
                    aggregate_v4: spec.map_or(32, |s| s.aggregate_v4),
                    aggregate_v6: spec.map_or(128, |s| s.aggregate_v6),
                    limits: self
                        .applied
                        .classes
                        .get(slot as usize)
                        .copied()
                        .unwrap_or_default(),
                    name,
                }
            })
            .collect();
        Ok(SourcesWalk {
            walker: self.dp.bucket_walker()?,
            slots,
            now_ns: self.dp.now_ns(),
            created: 0,
        })
    }

    /// The `top` tracked sources by packets (walks on the caller's thread: the daemon
    /// calls [`SourcesWalk::top`] off the lock instead).
    pub fn top_sources(&self, top: usize) -> Result<report::SourcesReport, OpError> {
        self.sources_walk()?.top(top)
    }

    /// Effective limits per class.
    pub fn limits(&self) -> Result<report::LimitsReport, OpError> {
        let stats = self.dp.class_stats()?;
        let sources = self.tracked_sources();
        let eff = |l: &crate::config::RateLimit, f: f64, min: u64| {
            let s = crate::policy::limits::scaled(l, f, min);
            report::EffectiveLimit {
                rate_per_sec: s.rate_per_sec,
                burst: s.burst,
            }
        };
        let classes = self
            .config
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let slot = self.slots.slot_of_index(&self.config, i) as usize;
                let f = self.factor(i);
                let st = stats.get(slot).copied().unwrap_or_default();
                report::ClassLimits {
                    class: c.name.clone(),
                    priority: c.priority,
                    mode: self.config.class_mode(i),
                    factor: f,
                    packets: c.packets.iter().map(|l| eff(l, f, 1)).collect(),
                    bytes: c
                        .bytes
                        .as_ref()
                        .map(|l| eff(l, f, crate::policy::limits::MIN_BYTE_BURST)),
                    aggregate_v4: c.aggregate_v4,
                    aggregate_v6: c.aggregate_v6,
                    admission: c.admission.as_ref().map(|l| eff(l, 1.0, 1)),
                    overflow: c.overflow.as_ref().map(|l| eff(l, f, 1)),
                    tracked_sources: sources.get(slot).copied().unwrap_or(0),
                    admitted: st.admitted,
                    overflowed: st.overflowed,
                    map_full: st.map_full,
                    indebted: st.indebted,
                }
            })
            .collect();
        Ok(report::LimitsReport {
            level: self.throttle.level().as_str().into(),
            classes,
        })
    }

    /// Forget the buckets of `addr` in every class (its next packet starts a full bucket).
    /// Returns how many buckets were removed.
    pub fn reset_source(&mut self, addr: std::net::IpAddr) -> Result<usize, OpError> {
        let key_addr = match addr {
            std::net::IpAddr::V4(a) => traffic_common::v4_mapped(a.octets()),
            std::net::IpAddr::V6(a) => a.octets(),
        };
        let mut removed = 0;
        for (slot, cc) in self.applied.classes.iter().enumerate() {
            if cc.flags == 0 {
                continue;
            }
            let mask = if addr.is_ipv4() {
                cc.mask_v4
            } else {
                cc.mask_v6
            };
            let mut masked = [0u8; 16];
            for (i, w) in mask.iter().enumerate() {
                let word =
                    u64::from_ne_bytes(key_addr[i * 8..i * 8 + 8].try_into().unwrap_or_default())
                        & w;
                masked[i * 8..i * 8 + 8].copy_from_slice(&word.to_ne_bytes());
            }
            let key = traffic_common::BucketKey {
                addr: masked,
                class: slot as u32,
            };
            if self.dp.remove_bucket(&key)? {
                removed += 1;
            }
        }
        info!(%addr, removed, "source reset");
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> BucketKey {
        BucketKey {
            addr: traffic_common::v4_mapped([198, 18, 0, i]),
            class: 1,
        }
    }

    fn bucket(packets: u64) -> Bucket {
        Bucket {
            packets,
            ..Bucket::default()
        }
    }

    #[test]
    fn top_keeps_the_largest_and_counts_a_revisited_key_once() {
        let (mut ranked, mut rows) = (BTreeSet::new(), HashMap::new());
        // A walk that restarted after an eviction meets 1..=3 again (with newer values).
        let walk = [(1, 10), (2, 50), (3, 30), (4, 5), (1, 11), (2, 60), (3, 31)];
        for (i, p) in walk {
            keep_top(&mut ranked, &mut rows, 2, &key(i), &bucket(p));
        }
        let got: Vec<_> = ranked.iter().rev().map(|r| (r.1[15], r.0)).collect();
        assert_eq!(got, vec![(2, 60), (3, 31)]);
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn a_walk_past_its_deadline_is_partial() {
        let entries: Vec<_> = (0..10).map(|i| (key(i), bucket(u64::from(i)))).collect();
        let walker = BucketWalker::Snapshot(entries);
        let end = walker.walk(Instant::now(), |_, _| {}).unwrap();
        assert!(end.partial);
        assert_eq!(end.visited, 0);
        let end = walker
            .walk(Instant::now() + Duration::from_secs(5), |_, _| {})
            .unwrap();
        assert_eq!(end.visited, 10);
        assert!(!end.partial);
    }
}
