//! The observed baseline behind `trafficctl suggest`: per class, the distribution of
//! per-source rates (the 1 s peak and the sustained rate over a window, packets and bytes),
//! and the distribution of the pressure readings. Pure; time is passed in.
//!
//! The daemon feeds it a sample of the bucket map about once a second (a bounded walk off
//! the control loop, `serve::walks`): each source's counters (`Bucket::packets`,
//! `Bucket::bytes`) between two walks give its rate over that second; its highest is its
//! 1 s peak. Each source's counters at the start of a window give its sustained rate at the
//! window's end; its highest is its sustained rate. A source not seen for a while leaves
//! the live table and its two figures go into its class's histograms, which never grow
//! ([`sketch`]): memory is the live table (at most `max_sources` entries of ~100 bytes)
//! plus a few kilobytes per class and resource.

pub mod sketch;
pub mod suggest;

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use serde::Serialize;
use traffic_common::BucketKey;

use self::sketch::{LogHistogram, RatioHistogram};
use crate::pressure::Resource;

/// `[baseline]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaselineSettings {
    /// Observe at all (one bounded walk of the bucket map a second).
    pub enabled: bool,
    /// The window of the sustained rate.
    pub window: Duration,
    /// Live sources followed at once; more are counted in `skipped` and not followed.
    pub max_sources: u32,
}

impl Default for BaselineSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(60),
            max_sources: 65_536,
        }
    }
}

/// One bucket's counters as a walk read them.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub key: BucketKey,
    pub packets: u64,
    pub bytes: u64,
}

/// Two readings of a source less than this apart are not a rate (a walk that met the key
/// twice), more than this apart are no 1 s peak (a walk skipped).
const PEAK_SPAN: (f64, f64) = (0.5, 3.0);

/// Rates in packets and bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub packets: f64,
    pub bytes: f64,
}

impl Rates {
    fn max(self, o: Self) -> Self {
        Self {
            packets: self.packets.max(o.packets),
            bytes: self.bytes.max(o.bytes),
        }
    }
}

/// What is followed of one live source.
#[derive(Clone, Debug)]
struct Live {
    slot: u32,
    /// Time and counters of the last reading.
    last: (Duration, u64, u64),
    /// Time and counters at the start of the current window.
    window: (Duration, u64, u64),
    peak: Option<Rates>,
    sustained: Option<Rates>,
}

/// The histograms of one class slot.
#[derive(Clone, Debug, Default)]
pub struct ClassHistograms {
    pub peak_packets: LogHistogram,
    pub peak_bytes: LogHistogram,
    pub sustained_packets: LogHistogram,
    pub sustained_bytes: LogHistogram,
    /// Sources behind the histograms (a source with no full window has no sustained rate).
    pub sources: u64,
}

impl ClassHistograms {
    fn record(&mut self, peak: Option<Rates>, sustained: Option<Rates>) {
        if peak.is_none() && sustained.is_none() {
            return;
        }
        self.sources += 1;
        if let Some(p) = peak {
            self.peak_packets.record(p.packets);
            self.peak_bytes.record(p.bytes);
        }
        if let Some(s) = sustained {
            self.sustained_packets.record(s.packets);
            self.sustained_bytes.record(s.bytes);
        }
    }
}

/// One source's two figures, for counting the sources a suggestion would have limited.
#[derive(Clone, Copy, Debug)]
pub struct SourceFigures {
    pub peak: Option<Rates>,
    pub sustained: Option<Rates>,
}

/// The observed baseline.
#[derive(Debug)]
pub struct Baseline {
    settings: BaselineSettings,
    started: Option<Duration>,
    last_walk: Option<Duration>,
    live: HashMap<BucketKey, Live>,
    /// Sources that left the live table, per slot.
    gone: BTreeMap<u32, ClassHistograms>,
    pressure: BTreeMap<Resource, RatioHistogram>,
    /// Sources not followed because the live table was full.
    pub skipped: u64,
    /// Walks that ended early (deadline or bound): their sources' peaks span longer.
    pub partial_walks: u64,
}

impl Baseline {
    pub fn new(settings: BaselineSettings) -> Self {
        Self {
            settings,
            started: None,
            last_walk: None,
            live: HashMap::new(),
            gone: BTreeMap::new(),
            pressure: BTreeMap::new(),
            skipped: 0,
            partial_walks: 0,
        }
    }

    pub fn settings(&self) -> &BaselineSettings {
        &self.settings
    }

    /// New settings (a reload): what was observed stays.
    pub fn set_settings(&mut self, settings: BaselineSettings) {
        self.settings = settings;
    }

    /// Seconds observed (from the first walk to the last).
    pub fn observed(&self) -> Duration {
        match (self.started, self.last_walk) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => Duration::ZERO,
        }
    }

    /// Take one walk's readings at `now`.
    pub fn observe(&mut self, now: Duration, samples: &[Sample], partial: bool) {
        self.started.get_or_insert(now);
        self.last_walk = Some(now);
        if partial {
            self.partial_walks += 1;
        }
        let window = self.settings.window.as_secs_f64();
        for s in samples {
            let Some(l) = self.live.get_mut(&s.key) else {
                if self.live.len() >= self.settings.max_sources as usize {
                    self.skipped += 1;
                    continue;
                }
                let at = (now, s.packets, s.bytes);
                self.live.insert(
                    s.key,
                    Live {
                        slot: s.key.class,
                        last: at,
                        window: at,
                        peak: None,
                        sustained: None,
                    },
                );
                continue;
            };
            if s.packets < l.last.1 || s.bytes < l.last.2 {
                // A new bucket under the same key (evicted, reset): start over.
                l.last = (now, s.packets, s.bytes);
                l.window = l.last;
                continue;
            }
            let dt = now.saturating_sub(l.last.0).as_secs_f64();
            if dt >= PEAK_SPAN.0 {
                if dt <= PEAK_SPAN.1 {
                    let r = rate(l.last, (now, s.packets, s.bytes));
                    l.peak = Some(l.peak.map_or(r, |p| p.max(r)));
                }
                l.last = (now, s.packets, s.bytes);
            }
            if now.saturating_sub(l.window.0).as_secs_f64() >= window {
                let r = rate(l.window, (now, s.packets, s.bytes));
                l.sustained = Some(l.sustained.map_or(r, |p| p.max(r)));
                l.window = (now, s.packets, s.bytes);
            }
        }
        self.retire(now);
    }

    /// Move sources not read for two windows (or 10 s, the longer) out of the live table.
    fn retire(&mut self, now: Duration) {
        let quiet = (self.settings.window * 2).max(Duration::from_secs(10));
        let gone = &mut self.gone;
        self.live.retain(|_, l| {
            let keep = now.saturating_sub(l.last.0) < quiet;
            if !keep {
                gone.entry(l.slot).or_default().record(l.peak, l.sustained);
            }
            keep
        });
    }

    /// Count one pressure reading per resource.
    pub fn observe_pressure(&mut self, ratios: &[(Resource, f64)]) {
        for (res, r) in ratios {
            self.pressure.entry(*res).or_default().record(*r);
        }
    }

    /// The histograms of `slot`: sources gone and live ones together.
    pub fn class(&self, slot: u32) -> ClassHistograms {
        let mut h = self.gone.get(&slot).cloned().unwrap_or_default();
        for l in self.live.values().filter(|l| l.slot == slot) {
            h.record(l.peak, l.sustained);
        }
        h
    }

    /// The live sources of `slot` (exact figures, for counting what a limit would catch).
    pub fn live_sources(&self, slot: u32) -> impl Iterator<Item = SourceFigures> + '_ {
        self.live
            .values()
            .filter(move |l| l.slot == slot)
            .map(|l| SourceFigures {
                peak: l.peak,
                sustained: l.sustained,
            })
    }

    /// The gone sources' histograms of `slot`.
    pub fn gone(&self, slot: u32) -> Option<&ClassHistograms> {
        self.gone.get(&slot)
    }

    /// The pressure readings' histogram of `res`.
    pub fn pressure(&self, res: Resource) -> Option<&RatioHistogram> {
        self.pressure.get(&res)
    }

    /// Sources followed now.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}

fn rate(a: (Duration, u64, u64), b: (Duration, u64, u64)) -> Rates {
    let dt = b.0.saturating_sub(a.0).as_secs_f64();
    if dt <= 0.0 {
        return Rates::default();
    }
    Rates {
        packets: (b.1 - a.1) as f64 / dt,
        bytes: (b.2 - a.2) as f64 / dt,
    }
}

#[cfg(test)]
mod tests;
