//! Persistent offenders: sources whose bucket dropped at least a class's `drop_ratio` of
//! its packets over its `window` (`[classes.NAME.offender]`), found from the per-bucket
//! `packets` / `dropped` counters the kernel keeps.
//!
//! Pure: the serve loop walks the bucket map (bounded in entries and time, off the engine's
//! lock, every [`WALK_INTERVAL`] and only while a class has an offender setting) and hands
//! the readings here. Memory is one baseline per bucket of an offender class seen by the
//! last walk — at most the bucket map's capacity, and forgotten when the bucket goes.

use std::{collections::HashMap, time::Duration};

use traffic_common::{Addr, Bucket, BucketKey, PORT_BUCKET};

use crate::config::bans::OffenderSettings;

/// How often the bucket map is walked for offenders (when a class has a setting).
pub const WALK_INTERVAL: Duration = Duration::from_secs(5);

/// A source found offending.
#[derive(Clone, Debug, PartialEq)]
pub struct Offence {
    /// Class slot of its bucket.
    pub slot: u32,
    /// The bucket's address (masked to the class's aggregation prefix).
    pub addr: Addr,
    /// Dropped / packets over the window.
    pub ratio: f64,
    /// Packets over the window.
    pub packets: u64,
}

#[derive(Clone, Copy, Debug)]
struct Baseline {
    packets: u64,
    dropped: u64,
    at_ms: u64,
    walk: u64,
}

/// Baselines of the buckets of offender classes.
#[derive(Debug, Default)]
pub struct Detector {
    baselines: HashMap<BucketKey, Baseline>,
    walk: u64,
}

impl Detector {
    /// One walk's readings at `now_ms`; `settings(slot)` is the class's setting (`None`:
    /// not watched). Returns the offences found; each offender's baseline restarts.
    pub fn observe<'a>(
        &mut self,
        now_ms: u64,
        readings: impl IntoIterator<Item = &'a (BucketKey, Bucket)>,
        settings: impl Fn(u32) -> Option<OffenderSettings>,
    ) -> Vec<Offence> {
        self.walk += 1;
        let mut found = Vec::new();
        for (key, b) in readings {
            if key.class & PORT_BUCKET != 0 {
                continue;
            }
            let Some(s) = settings(key.class) else {
                continue;
            };
            let now = Baseline {
                packets: b.packets,
                dropped: b.dropped,
                at_ms: now_ms,
                walk: self.walk,
            };
            let base = self.baselines.entry(*key).or_insert(now);
            base.walk = self.walk;
            // A bucket evicted and recreated starts its counters again.
            if b.packets < base.packets || b.dropped < base.dropped {
                *base = now;
                continue;
            }
            if now_ms.saturating_sub(base.at_ms) < s.window.as_millis() as u64 {
                continue;
            }
            let packets = b.packets - base.packets;
            let dropped = b.dropped - base.dropped;
            *base = now;
            if packets >= s.min_packets && dropped as f64 >= s.drop_ratio * packets as f64 {
                found.push(Offence {
                    slot: key.class,
                    addr: key.addr,
                    ratio: dropped as f64 / packets as f64,
                    packets,
                });
            }
        }
        let walk = self.walk;
        self.baselines.retain(|_, b| b.walk == walk);
        found
    }

    /// Baselines held (bounded by the buckets of offender classes).
    pub fn tracked(&self) -> usize {
        self.baselines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OffenderSettings {
        OffenderSettings {
            fleet: false,
            drop_ratio: 0.9,
            window: Duration::from_secs(30),
            min_packets: 100,
            ban_for: Duration::from_secs(600),
        }
    }

    fn reading(last: u8, packets: u64, dropped: u64) -> (BucketKey, Bucket) {
        let key = BucketKey {
            addr: traffic_common::v4_mapped([198, 18, 0, last]),
            class: 1,
        };
        (
            key,
            Bucket {
                packets,
                dropped,
                ..Bucket::default()
            },
        )
    }

    #[test]
    fn a_flooder_is_found_after_a_window_and_a_good_source_never() {
        let mut d = Detector::default();
        let s = |slot| (slot == 1).then(settings);
        assert!(
            d.observe(0, &[reading(1, 10, 0), reading(2, 10, 0)], s)
                .is_empty()
        );
        // Within the window: nothing yet.
        assert!(
            d.observe(20_000, &[reading(1, 5_000, 4_900), reading(2, 300, 0)], s)
                .is_empty()
        );
        let found = d.observe(30_000, &[reading(1, 10_010, 9_910), reading(2, 600, 10)], s);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].addr, traffic_common::v4_mapped([198, 18, 0, 1]));
        assert!((found[0].ratio - 0.991).abs() < 0.001, "{found:?}");
        // Its baseline restarted: nothing again until another window passes.
        assert!(
            d.observe(31_000, &[reading(1, 10_020, 9_920)], s)
                .is_empty()
        );
    }

    #[test]
    fn few_packets_a_reset_bucket_or_an_unwatched_class_are_not_offences() {
        let mut d = Detector::default();
        let s = |slot| (slot == 1).then(settings);
        d.observe(0, &[reading(1, 0, 0)], s);
        // 50 packets, all dropped: under min_packets.
        assert!(d.observe(40_000, &[reading(1, 50, 50)], s).is_empty());
        // Counters went back: the bucket was recreated; a new baseline.
        assert!(d.observe(80_000, &[reading(1, 10, 10)], s).is_empty());
        let none = |_| None;
        assert!(
            d.observe(200_000, &[reading(1, 9_999, 9_999)], none)
                .is_empty()
        );
        // Buckets gone from the walk are forgotten.
        assert_eq!(d.tracked(), 0);
    }
}
