//! What `[throttle]` configures: thresholds per resource, multipliers and connection caps
//! per level, priority multipliers, hysteresis and dwell; and their validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Level, Priority};
use crate::{
    pressure::{PerResource, Resource},
    setting::SettingError,
};

/// One value per throttling level (the NONE level has none: it is "no throttle").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PerLevel<T> {
    pub low: T,
    pub medium: T,
    pub high: T,
    pub critical: T,
}

impl<T> PerLevel<T> {
    /// `None` for [`Level::None`].
    pub fn get(&self, level: Level) -> Option<&T> {
        match level {
            Level::None => None,
            Level::Low => Some(&self.low),
            Level::Medium => Some(&self.medium),
            Level::High => Some(&self.high),
            Level::Critical => Some(&self.critical),
        }
    }

    /// `(level, value)` from LOW to CRITICAL.
    pub fn iter(&self) -> impl Iterator<Item = (Level, &T)> {
        [
            (Level::Low, &self.low),
            (Level::Medium, &self.medium),
            (Level::High, &self.high),
            (Level::Critical, &self.critical),
        ]
        .into_iter()
    }
}

/// A resource's thresholds: the ratio (`0..=1`) at which each level is reached.
///
/// They apply to whichever signal the resource uses ([`Signal`](crate::pressure::Signal)).
/// A PSI ratio is stricter than utilisation (a task stalled during 60 % of the time is heavy
/// contention, 60 % busy is not), so the defaults, drawn from utilisation practice, throttle
/// later on PSI than on utilisation; lower them for earlier throttling on PSI nodes.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub low: f64,
    pub medium: f64,
    pub high: f64,
    pub critical: f64,
}

impl Thresholds {
    /// CPU default (utilisation thresholds common in capacity alerting: 60/70/80/90 %).
    pub const CPU: Thresholds = Thresholds::new(0.6, 0.7, 0.8, 0.9);
    /// Memory default: a node runs well with its memory 70 % in use; trouble starts near 95.
    pub const MEMORY: Thresholds = Thresholds::new(0.7, 0.8, 0.9, 0.95);
    /// IO default.
    pub const IO: Thresholds = Thresholds::new(0.6, 0.7, 0.8, 0.9);

    pub const fn new(low: f64, medium: f64, high: f64, critical: f64) -> Self {
        Self {
            low,
            medium,
            high,
            critical,
        }
    }

    /// The defaults of a resource.
    pub const fn default_for(r: Resource) -> Self {
        match r {
            Resource::Cpu => Self::CPU,
            Resource::Memory => Self::MEMORY,
            Resource::Io => Self::IO,
        }
    }

    /// The threshold of `level` (`None` for [`Level::None`], which needs no reading).
    pub fn get(&self, level: Level) -> Option<f64> {
        match level {
            Level::None => None,
            Level::Low => Some(self.low),
            Level::Medium => Some(self.medium),
            Level::High => Some(self.high),
            Level::Critical => Some(self.critical),
        }
    }

    /// The highest level whose threshold `ratio` reaches (thresholds are inclusive).
    pub fn level_for(&self, ratio: f64) -> Level {
        Level::ALL
            .into_iter()
            .rev()
            .find(|&l| self.get(l).is_none_or(|t| ratio >= t))
            .unwrap_or(Level::None)
    }

    fn as_array(&self) -> [f64; 4] {
        [self.low, self.medium, self.high, self.critical]
    }
}

/// Priority multipliers: how much more (or less) of its throttled limits a class keeps.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityMultipliers {
    pub critical: f64,
    pub high: f64,
    pub normal: f64,
    pub low: f64,
}

impl Default for PriorityMultipliers {
    fn default() -> Self {
        Self {
            critical: 2.0,
            high: 1.5,
            normal: 1.0,
            low: 0.5,
        }
    }
}

impl PriorityMultipliers {
    pub fn get(&self, p: Priority) -> f64 {
        match p {
            Priority::Critical => self.critical,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        }
    }
}

/// Default hysteresis margin (absolute, in ratio units).
pub const DEFAULT_HYSTERESIS: f64 = 0.05;
/// Default minimum time in a level before lowering it: five 1-s samples, long enough for the
/// delta signals and CPU/IO utilisation to show the effect of the previous change (avg10 is
/// slower still, which only delays lowering), short enough that recovering from CRITICAL
/// takes 20 s rather than minutes.
pub const DEFAULT_MIN_DWELL: Duration = Duration::from_secs(5);
/// Longest accepted dwell: beyond it a level would outlive any pressure episode.
pub const MAX_MIN_DWELL: Duration = Duration::from_secs(3600);
/// Largest accepted hysteresis margin.
pub const MAX_HYSTERESIS: f64 = 0.5;

/// `[throttle]` settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThrottleSettings {
    /// Per resource: the ratio at which each level is reached.
    pub thresholds: PerResource<Thresholds>,
    /// A level is left only when every reading is below its threshold minus this margin.
    pub hysteresis: f64,
    /// Minimum time in a level before it may be lowered (raising is never delayed).
    pub min_dwell: Duration,
    /// Rate multiplier per level (NONE is 1).
    pub multipliers: PerLevel<f64>,
    /// Concurrent connections per upstream per level, for the bulkhead; `None` = no cap.
    /// NONE has no cap.
    pub max_connections: PerLevel<Option<u32>>,
    /// Priority multipliers applied on top of the level's rate multiplier.
    pub priority: PriorityMultipliers,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            thresholds: PerResource::from_fn(Thresholds::default_for),
            hysteresis: DEFAULT_HYSTERESIS,
            min_dwell: DEFAULT_MIN_DWELL,
            multipliers: PerLevel {
                low: 0.8,
                medium: 0.6,
                high: 0.4,
                critical: 0.2,
            },
            // Halving per level: the small services of a home node degrade with concurrency
            // (memory per connection, queueing), faster than linearly, so caps tighten
            // faster than rates. 512 at LOW is above what such a service normally holds, so
            // LOW barely bites; 64 at CRITICAL still serves interactive use.
            max_connections: PerLevel {
                low: Some(512),
                medium: Some(256),
                high: Some(128),
                critical: Some(64),
            },
            priority: PriorityMultipliers::default(),
        }
    }
}

impl ThrottleSettings {
    /// Range and order checks; every error names its key (`throttle.…`).
    /// Long (about 125 lines) because it is a flat list of independent range and ordering
    /// checks, one per setting, in the order of the config file.
    pub fn validate(&self) -> Result<(), Vec<SettingError>> {
        let mut errors = Vec::new();
        let mut err = |key: String, message: String| errors.push(SettingError { key, message });

        for (r, t) in self.thresholds.iter() {
            let key = format!("throttle.thresholds.{r}");
            let mut in_range = true;
            for (level, v) in Level::ALL[1..].iter().zip(t.as_array()) {
                if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                    err(
                        format!("{key}.{level}"),
                        format!("{v} is not a ratio in (0, 1]"),
                    );
                    in_range = false;
                }
            }
            let a = t.as_array();
            if in_range && a.windows(2).any(|w| w[0] >= w[1]) {
                err(
                    key,
                    format!(
                        "must increase strictly from low to critical (got {}, {}, {}, {})",
                        a[0], a[1], a[2], a[3]
                    ),
                );
            }
        }

        let h = self.hysteresis;
        if !(h.is_finite() && (0.0..MAX_HYSTERESIS).contains(&h)) {
            err(
                "throttle.hysteresis".into(),
                format!("{h} is not a margin in [0, {MAX_HYSTERESIS})"),
            );
        } else if let Some((r, low)) = self
            .thresholds
            .iter()
            .map(|(r, t)| (r, t.low))
            // Out-of-range thresholds are reported above.
            .filter(|(_, low)| low.is_finite() && *low > 0.0 && *low <= 1.0)
            .find(|&(_, low)| low <= h)
        {
            err(
                "throttle.hysteresis".into(),
                format!("{h} is not below the {r} low threshold ({low}): LOW could never be left"),
            );
        }

        if self.min_dwell > MAX_MIN_DWELL {
            err(
                "throttle.min_dwell".into(),
                format!("must be at most {}s", MAX_MIN_DWELL.as_secs()),
            );
        }

        let mut in_range = true;
        for (level, &m) in self.multipliers.iter() {
            if !(m.is_finite() && m > 0.0 && m <= 1.0) {
                err(
                    format!("throttle.multipliers.{level}"),
                    format!("{m} is not a multiplier in (0, 1]"),
                );
                in_range = false;
            }
        }
        let m: Vec<f64> = self.multipliers.iter().map(|(_, &m)| m).collect();
        if in_range && m.windows(2).any(|w| w[0] < w[1]) {
            err(
                "throttle.multipliers".into(),
                "must not increase from low to critical".into(),
            );
        }

        let mut in_range = true;
        for (level, c) in self.max_connections.iter() {
            if *c == Some(0) {
                err(
                    format!("throttle.max_connections.{level}"),
                    "must be at least 1 (leave it out for no cap)".into(),
                );
                in_range = false;
            }
        }
        let caps: Vec<u64> = self
            .max_connections
            .iter()
            .map(|(_, c)| c.map_or(u64::MAX, u64::from))
            .collect();
        if in_range && caps.windows(2).any(|w| w[0] < w[1]) {
            err(
                "throttle.max_connections".into(),
                "must not increase from low to critical (a capped level cannot be followed \
                 by an uncapped one)"
                    .into(),
            );
        }

        let p = &self.priority;
        let mut in_range = true;
        for (name, v) in [
            ("critical", p.critical),
            ("high", p.high),
            ("normal", p.normal),
            ("low", p.low),
        ] {
            if !(v.is_finite() && v > 0.0) {
                err(
                    format!("throttle.priority.{name}"),
                    format!("{v} is not a positive multiplier"),
                );
                in_range = false;
            }
        }
        if in_range && !(p.critical >= p.high && p.high >= p.normal && p.normal >= p.low) {
            err(
                "throttle.priority".into(),
                "must not increase from critical to low".into(),
            );
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The rate multiplier of `level` (1 at NONE).
    pub fn multiplier(&self, level: Level) -> f64 {
        self.multipliers.get(level).copied().unwrap_or(1.0)
    }

    /// The per-upstream connection cap of `level` (`None` = no cap; always at NONE).
    pub fn max_connections(&self, level: Level) -> Option<u32> {
        self.max_connections.get(level).copied().flatten()
    }

    /// The reading `resource` must drop below before `level` may be left.
    pub fn release_below(&self, resource: Resource, level: Level) -> Option<f64> {
        let t = self.thresholds.get(resource).get(level)?;
        Some(t - self.hysteresis)
    }
}
