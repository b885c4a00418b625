//! What the engine keeps about the feeds: the active generation (written to the global
//! entry by [`FeedsState::overlay`]), each feed's status (the CLI, the admin API, the
//! metrics), and refresh requests for the feed task.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use traffic_common::{GLOBAL_FEED_GEN1, GLOBAL_HAS_FEEDS, GlobalConfig};

/// One feed as reported by `trafficctl feeds` and `/v1/feeds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedStatus {
    pub name: String,
    pub source: String,
    /// `deny` or `class:NAME`.
    pub action: String,
    /// Prefixes of the list in force.
    pub prefixes: u64,
    /// Invalid lines skipped in the list in force.
    pub invalid_lines: u64,
    /// Unix time of the last successful refresh (or load of the disk copy).
    pub last_success_unix: Option<u64>,
    /// Why the last refresh failed, if it did (cleared by a success).
    pub last_error: Option<String>,
    /// Unix time of the next refresh.
    pub next_refresh_unix: Option<u64>,
    /// Whether the list in force came from the on-disk copy (no download yet this run).
    pub from_cache: bool,
    pub refreshes_ok: u64,
    pub refreshes_failed: u64,
}

/// `/v1/feeds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedsReport {
    pub feeds: Vec<FeedStatus>,
    /// Generation (0 or 1) the program reads.
    pub active_generation: u32,
    /// Entries in the IPv4 and IPv6 tries after the last swap (union of the feeds).
    pub entries_v4: u64,
    pub entries_v6: u64,
}

/// The engine's feed state.
#[derive(Debug, Default)]
pub struct FeedsState {
    /// Generation the program reads (0 or 1).
    pub active: u32,
    /// Whether the tries hold anything the program must look up.
    pub has: bool,
    /// Swaps made by this run: mixed into the rule generation so each swap re-resolves
    /// the cached classifications.
    pub epoch: u32,
    pub status: BTreeMap<String, FeedStatus>,
    pub entries: (u64, u64),
    /// Feeds to refresh now (`None` in the set: all).
    pub requested: BTreeSet<Option<String>>,
    /// Wakes the feed task (a refresh request, a reload).
    pub wake: Arc<tokio::sync::Notify>,
}

impl FeedsState {
    /// Take over the generation the program reads now (adopted pinned maps keep theirs).
    pub fn adopt(global: &GlobalConfig) -> Self {
        Self {
            active: u32::from(global.flags & GLOBAL_FEED_GEN1 != 0),
            has: global.flags & GLOBAL_HAS_FEEDS != 0,
            ..Self::default()
        }
    }

    /// Set the global entry's feed flags, and give the rule generation a new value per
    /// swap (left alone while feeds were never used, so configs without feeds keep theirs).
    pub fn overlay(&self, g: &mut GlobalConfig) {
        g.flags &= !(GLOBAL_HAS_FEEDS | GLOBAL_FEED_GEN1);
        if self.has {
            g.flags |= GLOBAL_HAS_FEEDS;
        }
        if self.active == 1 {
            g.flags |= GLOBAL_FEED_GEN1;
        }
        if self.has || self.epoch != 0 || self.active != 0 {
            let mut h = g.rules_gen;
            for w in [self.epoch, self.active, u32::from(self.has)] {
                h = (h ^ w).wrapping_mul(0x0100_0193).rotate_left(7);
            }
            g.rules_gen = h.max(1);
        }
    }

    /// After the next generation is written: make it the active one.
    pub fn flip(&mut self, has: bool) {
        self.active = 1 - self.active;
        self.has = has;
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Ask the feed task to refresh one feed (or all); `false` if there is no such feed.
    pub fn request(&mut self, name: Option<&str>) -> bool {
        if let Some(n) = name
            && !self.status.contains_key(n)
        {
            return false;
        }
        self.requested.insert(name.map(str::to_owned));
        self.wake.notify_one();
        true
    }

    pub fn report(&self) -> FeedsReport {
        FeedsReport {
            feeds: self.status.values().cloned().collect(),
            active_generation: self.active,
            entries_v4: self.entries.0,
            entries_v6: self.entries.1,
        }
    }
}

/// The feed families of `/metrics` (one call from `serve::metrics::render`).
pub fn metrics(e: &mut crate::serve::exposition::Exposition, report: &FeedsReport) {
    use crate::serve::exposition::Kind;
    let label = |f: &FeedStatus| vec![("feed", f.name.clone())];
    e.rows(
        "traffic_feed_prefixes",
        Kind::Gauge,
        "Prefixes of the blocklist feed's list in force.",
        report.feeds.iter().map(|f| (label(f), f.prefixes as f64)),
    );
    e.rows(
        "traffic_feed_refreshes_total",
        Kind::Counter,
        "Refreshes of the blocklist feed by outcome (a failed one keeps the last good list).",
        report.feeds.iter().flat_map(|f| {
            [("ok", f.refreshes_ok), ("failed", f.refreshes_failed)].map(|(o, n)| {
                let mut l = label(f);
                l.push(("outcome", o.to_owned()));
                (l, n as f64)
            })
        }),
    );
    e.rows(
        "traffic_feed_last_success_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the feed's last successful refresh (0: none yet).",
        report
            .feeds
            .iter()
            .map(|f| (label(f), f.last_success_unix.unwrap_or(0) as f64)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_leaves_feedless_configs_alone_and_changes_the_generation_per_swap() {
        let base = GlobalConfig {
            rules_gen: 1234,
            flags: 1,
            ..GlobalConfig::default()
        };
        let mut s = FeedsState::default();
        let mut g = base;
        s.overlay(&mut g);
        assert_eq!(g, base);
        s.flip(true);
        let mut g1 = base;
        s.overlay(&mut g1);
        assert_eq!(g1.flags, 1 | GLOBAL_HAS_FEEDS | GLOBAL_FEED_GEN1);
        assert_ne!(g1.rules_gen, base.rules_gen);
        s.flip(true);
        let mut g2 = base;
        s.overlay(&mut g2);
        assert_eq!(g2.flags, 1 | GLOBAL_HAS_FEEDS);
        assert_ne!(g2.rules_gen, g1.rules_gen);
        assert_ne!(g2.rules_gen, 0);
        let adopted = FeedsState::adopt(&g1);
        assert_eq!((adopted.active, adopted.has), (1, true));
    }
}
