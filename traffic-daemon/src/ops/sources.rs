//! Counters, effective limits and tracked sources (the bucket map), and resetting a source.

use std::time::Instant;

use tracing::{info, warn};

use super::OpError;
use crate::{
    api::report::{self, CountersReport},
    engine::Core,
};

impl Core {
    /// Current counters.
    pub fn counters(&self) -> Result<CountersReport, OpError> {
        Ok(report::counters_report(&self.dp.counters()?, &self.slots))
    }

    /// Tracked sources per class slot (walks the bucket map; cached for 5 s because a full
    /// map holds up to `max_sources` entries).
    pub fn tracked_sources(&mut self) -> Vec<u64> {
        if let Some((at, v)) = self.sources_cache.as_ref()
            && at.elapsed() < std::time::Duration::from_secs(5)
        {
            return v.clone();
        }
        let mut per_slot = vec![0u64; traffic_common::MAX_CLASSES as usize];
        match self.dp.buckets() {
            Ok(b) => {
                for (k, _) in b {
                    if let Some(n) = per_slot.get_mut(k.class as usize) {
                        *n += 1;
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot walk the bucket map"),
        }
        self.sources_cache = Some((Instant::now(), per_slot.clone()));
        per_slot
    }

    /// Effective limits per class.
    pub fn limits(&mut self) -> Result<report::LimitsReport, OpError> {
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

    /// The `top` tracked sources by packets.
    pub fn top_sources(&self, top: usize) -> Result<report::SourcesReport, OpError> {
        let buckets = self.dp.buckets()?;
        let now = self.dp.now_ns();
        let tracked = buckets.len() as u64;
        let mut rows: Vec<_> = buckets
            .into_iter()
            .map(|(k, b)| {
                let slot = k.class;
                let name = self.slots.name_of(slot).unwrap_or("?").to_owned();
                let spec = self.config.classes.iter().find(|c| c.name == name);
                let cc = self
                    .applied
                    .classes
                    .get(slot as usize)
                    .copied()
                    .unwrap_or_default();
                let ip = std::net::Ipv6Addr::from(k.addr);
                let prefix = match ip.to_ipv4_mapped() {
                    Some(v4) => format!("{v4}/{}", spec.map_or(32, |s| s.aggregate_v4)),
                    None => format!("{ip}/{}", spec.map_or(128, |s| s.aggregate_v6)),
                };
                let tokens = (cc.packet_limits > 0 && cc.packets[0].interval > 0).then(|| {
                    let l = cc.packets[0];
                    let debt = b.tat[0].saturating_sub(now);
                    l.tolerance.saturating_sub(debt) as f64 / l.interval as f64
                });
                report::SourceEntry {
                    class: name,
                    prefix,
                    packets: b.packets,
                    dropped: b.dropped,
                    tokens,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.packets
                .cmp(&a.packets)
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
        rows.truncate(top);
        Ok(report::SourcesReport {
            tracked,
            sources: rows,
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
