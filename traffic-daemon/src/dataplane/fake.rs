//! An in-memory dataplane for tests of the daemon, the admin API and the CLI.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use traffic_common::{
    Bucket, BucketKey, COUNTERS_ENTRIES, ClassConfig, ClassStats, Counter, EgressStats,
    GlobalConfig, MAX_CLASSES, MAX_PORTS, PortStats, RescaleRequest, SlotName,
};

use super::{AttachedMode, Dataplane, DataplaneError, Rescaled};
use crate::config::AttachMode;
use crate::plan::{Desired, Write};

/// Maps held in memory; tests set counters and buckets directly.
#[derive(Clone, Debug)]
pub struct Fake {
    pub state: Desired,
    pub counters: Vec<Counter>,
    pub class_stats: Vec<ClassStats>,
    pub port_stats: Vec<PortStats>,
    pub egress_stats: Vec<EgressStats>,
    pub buckets: HashMap<BucketKey, Bucket>,
    /// Every write applied, in order.
    pub log: Vec<Write>,
    /// Value returned by `now_ns`.
    pub now_ns: u64,
    /// Interfaces attached.
    pub attached: Vec<String>,
    /// Whether `keep_attached` was called.
    pub kept: bool,
    /// Generations of the tracked-source bitmap cleared, in order.
    pub aged: Vec<u32>,
    /// Interface MTUs returned by `mtu` (none known: `None`).
    pub mtus: BTreeMap<String, u32>,
    /// Interface indexes by name, shared with clones so a test can hot-plug under a
    /// running core: a name not listed is present with index 1, one mapped to `None` is
    /// missing.
    pub ifindexes: Arc<Mutex<BTreeMap<String, Option<u32>>>>,
    /// Capacity of the rules map, as the kernel's `max_entries` (shared with clones, so a
    /// test can shrink it under a running core to make an apply fail midway); 0: no limit.
    pub rule_capacity: Arc<std::sync::atomic::AtomicUsize>,
    /// The ban map (shared with clones, so a test can look at what a running core wrote).
    pub bans: Arc<Mutex<BTreeMap<crate::plan::RuleKey, traffic_common::BanEntry>>>,
    /// The blocklist-feed tries (shared with clones and with `feed_tries` handles).
    pub feeds: super::feeds::MemoryTries,
}

impl Default for Fake {
    fn default() -> Self {
        Self {
            state: Desired {
                global: GlobalConfig::default(),
                classes: vec![ClassConfig::default(); MAX_CLASSES as usize],
                names: vec![SlotName::default(); MAX_CLASSES as usize],
                rules: BTreeMap::new(),
                ports: BTreeMap::new(),
            },
            counters: vec![Counter::default(); COUNTERS_ENTRIES as usize],
            class_stats: vec![ClassStats::default(); MAX_CLASSES as usize],
            port_stats: vec![PortStats::default(); MAX_PORTS as usize],
            egress_stats: vec![EgressStats::default(); MAX_PORTS as usize],
            buckets: HashMap::new(),
            log: Vec::new(),
            now_ns: 1_000_000_000,
            attached: Vec::new(),
            kept: false,
            aged: Vec::new(),
            mtus: BTreeMap::new(),
            ifindexes: Arc::default(),
            feeds: super::feeds::MemoryTries::default(),
            rule_capacity: Arc::default(),
            bans: Arc::default(),
        }
    }
}

impl Dataplane for Fake {
    fn attach(
        &mut self,
        iface: &str,
        _mode: AttachMode,
        _pin: bool,
    ) -> Result<AttachedMode, DataplaneError> {
        if self.ifindex(iface).is_none() {
            return Err(DataplaneError::Attach {
                iface: iface.to_owned(),
                detail: "no such interface".into(),
            });
        }
        self.attached.push(iface.to_owned());
        Ok(AttachedMode::Generic)
    }

    fn detach_all(&mut self) {
        self.attached.clear();
    }

    fn detach(&mut self, iface: &str) {
        self.attached.retain(|a| a != iface);
    }

    fn ifindex(&self, iface: &str) -> Option<u32> {
        let map = self.ifindexes.lock().unwrap_or_else(|e| e.into_inner());
        map.get(iface).copied().unwrap_or(Some(1))
    }

    fn keep_attached(&mut self) -> Result<(), DataplaneError> {
        self.kept = true;
        Ok(())
    }

    fn adopted(&self) -> bool {
        false
    }

    fn apply(&mut self, writes: &[Write]) -> Result<(), DataplaneError> {
        for w in writes {
            match w {
                Write::SlotName(slot, n) => self.state.names[*slot as usize] = *n,
                Write::Class(slot, c) => self.state.classes[*slot as usize] = *c,
                Write::Rule(k, r) => {
                    let cap = self
                        .rule_capacity
                        .load(std::sync::atomic::Ordering::Relaxed);
                    let full = cap > 0 && self.state.rules.len() >= cap;
                    if full && !self.state.rules.contains_key(k) {
                        return Err(DataplaneError::Other("rules map full (ENOSPC)".into()));
                    }
                    self.state.rules.insert(*k, *r);
                }
                Write::RemoveRule(k) => {
                    self.state.rules.remove(k);
                }
                Write::Global(g) => self.state.global = *g,
                Write::Port(k, p) => {
                    self.state.ports.insert(*k, *p);
                }
                Write::RemovePort(k) => {
                    self.state.ports.remove(k);
                }
            }
            self.log.push(w.clone());
        }
        Ok(())
    }

    fn read_state(&self) -> Result<Desired, DataplaneError> {
        Ok(self.state.clone())
    }

    fn global(&self) -> Result<GlobalConfig, DataplaneError> {
        Ok(self.state.global)
    }

    fn counters(&self) -> Result<Vec<Counter>, DataplaneError> {
        Ok(self.counters.clone())
    }

    fn port_stats(&self) -> Result<Vec<PortStats>, DataplaneError> {
        Ok(self.port_stats.clone())
    }

    fn egress_stats(&self) -> Result<Vec<EgressStats>, DataplaneError> {
        Ok(self.egress_stats.clone())
    }

    fn class_stats(&self) -> Result<Vec<ClassStats>, DataplaneError> {
        Ok(self.class_stats.clone())
    }

    fn class_admitted(&self, slots: &[u32]) -> Result<u64, DataplaneError> {
        Ok(slots
            .iter()
            .filter_map(|&s| self.class_stats.get(s as usize))
            .fold(0, |a, s| a.wrapping_add(s.admitted)))
    }

    fn buckets(&self) -> Result<Vec<(BucketKey, Bucket)>, DataplaneError> {
        Ok(self.buckets.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn set_bucket(&mut self, key: &BucketKey, bucket: &Bucket) -> Result<(), DataplaneError> {
        self.buckets.insert(*key, *bucket);
        Ok(())
    }

    fn rescale_bucket(&mut self, req: &RescaleRequest) -> Result<Rescaled, DataplaneError> {
        let Some(b) = self.buckets.get_mut(&req.key) else {
            return Ok(Rescaled::Missing);
        };
        for (i, tat) in b.tat.iter_mut().enumerate() {
            let shift = if i == traffic_common::BYTE_LIMIT_SLOT {
                traffic_common::BYTE_INTERVAL_SHIFT
            } else {
                0
            };
            *tat = crate::policy::limits::rescale_tat(
                *tat,
                &req.old[i],
                &req.new[i],
                self.now_ns,
                shift,
            );
        }
        Ok(Rescaled::Done)
    }

    fn remove_bucket(&mut self, key: &BucketKey) -> Result<bool, DataplaneError> {
        Ok(self.buckets.remove(key).is_some())
    }

    fn now_ns(&self) -> u64 {
        self.now_ns
    }

    fn age_seen(&mut self, generation: u32) -> Result<(), DataplaneError> {
        self.aged.push(generation);
        Ok(())
    }

    fn mtu(&self, iface: &str) -> Option<u32> {
        self.mtus.get(iface).copied()
    }

    fn set_ban(
        &mut self,
        key: &crate::plan::RuleKey,
        ban: &traffic_common::BanEntry,
    ) -> Result<(), DataplaneError> {
        let mut bans = self.bans.lock().expect("fake ban map");
        if bans.len() >= traffic_common::BANS_ENTRIES as usize && !bans.contains_key(key) {
            return Err(DataplaneError::Other("ban map full".into()));
        }
        bans.insert(*key, *ban);
        Ok(())
    }

    fn remove_ban(&mut self, key: &crate::plan::RuleKey) -> Result<bool, DataplaneError> {
        Ok(self
            .bans
            .lock()
            .expect("fake ban map")
            .remove(key)
            .is_some())
    }

    fn bans(
        &self,
    ) -> Result<Vec<(crate::plan::RuleKey, traffic_common::BanEntry)>, DataplaneError> {
        Ok(self
            .bans
            .lock()
            .expect("fake ban map")
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect())
    }

    fn feed_tries(&self) -> Result<Box<dyn super::feeds::FeedTries>, DataplaneError> {
        Ok(Box::new(self.feeds.clone()))
    }
}
