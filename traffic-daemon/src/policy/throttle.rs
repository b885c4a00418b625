//! Throttle level: pressure readings → NONE / LOW / MEDIUM / HIGH / CRITICAL. Pure; time and
//! readings are passed in.
//!
//! - **Raising is immediate**: the level becomes the highest that any resource's reading
//!   reaches (`ratio ≥ threshold`), whatever the dwell time. Under pressure a late throttle
//!   is the dangerous direction; raising cannot flap, since every raise is followed by at
//!   least `min_dwell` before the next lowering.
//! - **Lowering is hysteretic, slow and stepwise**: one level down, and only when every
//!   resource reads below the current level's threshold minus `hysteresis`, and the current
//!   level has been held for `min_dwell`. Going down one level per dwell restores limits as
//!   a ramp (20 % of the base rate per step with the default multipliers), so the node sees
//!   the effect of each step on its pressure before the next, instead of taking back all the
//!   shed traffic at once.
//! - Each level carries a rate multiplier and a per-upstream connection cap (for the
//!   bulkhead); a class's factor is the level's multiplier scaled by its priority's, capped
//!   at 1 ([`class_factor`]). Sources under `allow` rules bypass limits in the kernel and
//!   are never throttled.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    pressure::{PerResource, Resource},
    setting::SettingError,
};

/// Throttle level, ordered by severity.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    /// All levels, mildest first.
    pub const ALL: [Level; 5] = [
        Level::None,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Critical,
    ];

    /// Lower-case name, as in config keys, JSON and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }

    /// 0 (none) to 4 (critical), e.g. for a gauge.
    pub const fn severity(self) -> u8 {
        self as u8
    }

    /// The next milder level (`None` at [`Level::None`]).
    pub const fn below(self) -> Option<Level> {
        match self {
            Level::None => None,
            Level::Low => Some(Level::None),
            Level::Medium => Some(Level::Low),
            Level::High => Some(Level::Medium),
            Level::Critical => Some(Level::High),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Class priority: how much of its limits a class keeps under pressure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Critical,
    High,
    #[default]
    Normal,
    Low,
}

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

/// The factor applied to a class's base limits: 1 at NONE for every priority; otherwise the
/// level's multiplier times the priority's, capped at 1 (pressure never raises a limit).
pub fn class_factor(level: Level, priority: Priority, settings: &ThrottleSettings) -> f64 {
    if level == Level::None {
        return 1.0;
    }
    (settings.multiplier(level) * settings.priority.get(priority)).min(1.0)
}

/// A change of level.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
pub struct LevelChange {
    pub from: Level,
    pub to: Level,
    /// Monotonic time of the change, as passed to [`Throttle::update`].
    #[serde(rename = "at_seconds", with = "duration_secs")]
    pub at: Duration,
    /// The dominant resource: the one reaching the highest level (on a tie, the highest
    /// reading). For a raise, the resource that caused it; for a lowering, the one that was
    /// closest to holding the level.
    pub cause: Resource,
    /// `cause`'s reading.
    pub ratio: f64,
}

impl LevelChange {
    pub fn is_raise(&self) -> bool {
        self.to > self.from
    }
}

impl fmt::Display for LevelChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "throttle {} {} → {} ({} at {:.2})",
            if self.is_raise() { "raised" } else { "lowered" },
            self.from,
            self.to,
            self.cause,
            self.ratio
        )
    }
}

/// A resource's last reading against its thresholds, for `trafficctl status`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ResourceStatus {
    pub resource: Resource,
    /// Last reading; `None` before the first (or when the resource is not sampled).
    pub ratio: Option<f64>,
    /// The level this reading alone reaches.
    pub reaches: Level,
    pub thresholds: Thresholds,
    /// What the reading must drop below for the current level to be left (`None` at NONE).
    pub release_below: Option<f64>,
}

/// The throttle's state, for the admin API and `trafficctl status`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ThrottleStatus {
    pub level: Level,
    pub time_in_level_seconds: f64,
    /// Until when lowering waits for the dwell (0 once it may be lowered, or at NONE).
    pub dwell_remaining_seconds: f64,
    pub transitions: u64,
    pub multiplier: f64,
    pub max_connections: Option<u32>,
    pub last_transition: Option<LevelChange>,
    pub resources: Vec<ResourceStatus>,
}

/// The throttle state machine.
#[derive(Clone, Debug)]
pub struct Throttle {
    settings: ThrottleSettings,
    level: Level,
    since: Duration,
    transitions: u64,
    last: PerResource<Option<f64>>,
    last_transition: Option<LevelChange>,
}

impl Throttle {
    /// Start at NONE at `now`.
    pub fn new(settings: ThrottleSettings, now: Duration) -> Self {
        Self {
            settings,
            level: Level::None,
            since: now,
            transitions: 0,
            last: PerResource::default(),
            last_transition: None,
        }
    }

    /// Feed one sample's readings (`ratio` per resource, as from
    /// [`Sample::ratios`](crate::pressure::Sample::ratios)); returns the change of level, if
    /// any. Resources missing from `readings` (not sampled) and non-finite ratios take no
    /// part: they neither raise nor hold a level. With no usable reading nothing changes.
    pub fn update(&mut self, now: Duration, readings: &[(Resource, f64)]) -> Option<LevelChange> {
        let mut current: PerResource<Option<f64>> = PerResource::default();
        for &(r, v) in readings {
            if v.is_finite() {
                let v = v.max(0.0);
                let slot = current.get_mut(r);
                *slot = Some(slot.map_or(v, |old: f64| old.max(v)));
            }
        }
        for (r, v) in current.iter() {
            if v.is_some() {
                *self.last.get_mut(r) = *v;
            }
        }

        // Dominant resource: highest level reached, then highest reading; first on ties.
        let mut dominant: Option<(Resource, f64, Level)> = None;
        for (r, v) in current.iter() {
            let Some(v) = *v else { continue };
            let reaches = self.settings.thresholds.get(r).level_for(v);
            if dominant.is_none_or(|(_, dv, dl)| (reaches, v) > (dl, dv)) {
                dominant = Some((r, v, reaches));
            }
        }
        let (cause, ratio, reaches) = dominant?;

        if reaches > self.level {
            return Some(self.enter(now, reaches, cause, ratio));
        }
        let lower = self.level.below()?;
        if self.time_in_level(now) < self.settings.min_dwell {
            return None;
        }
        let released = current.iter().all(|(r, v)| match v {
            Some(v) => self
                .settings
                .release_below(r, self.level)
                .is_some_and(|below| *v < below),
            None => true,
        });
        released.then(|| self.enter(now, lower, cause, ratio))
    }

    fn enter(&mut self, now: Duration, to: Level, cause: Resource, ratio: f64) -> LevelChange {
        let t = LevelChange {
            from: self.level,
            to,
            at: now,
            cause,
            ratio,
        };
        self.level = to;
        self.since = now;
        self.transitions += 1;
        self.last_transition = Some(t);
        t
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// When the current level was entered (or the throttle created).
    pub fn since(&self) -> Duration {
        self.since
    }

    pub fn time_in_level(&self, now: Duration) -> Duration {
        now.saturating_sub(self.since)
    }

    /// Level changes so far.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    pub fn last_transition(&self) -> Option<&LevelChange> {
        self.last_transition.as_ref()
    }

    /// The last finite reading of `resource`.
    pub fn last_ratio(&self, resource: Resource) -> Option<f64> {
        *self.last.get(resource)
    }

    pub fn settings(&self) -> &ThrottleSettings {
        &self.settings
    }

    /// New settings (on reload). The level and its start time are kept; the next
    /// [`update`](Self::update) judges them against the new thresholds.
    pub fn set_settings(&mut self, settings: ThrottleSettings) {
        self.settings = settings;
    }

    /// The current level's rate multiplier.
    pub fn multiplier(&self) -> f64 {
        self.settings.multiplier(self.level)
    }

    /// The current level's per-upstream connection cap.
    pub fn max_connections(&self) -> Option<u32> {
        self.settings.max_connections(self.level)
    }

    /// [`class_factor`] at the current level.
    pub fn class_factor(&self, priority: Priority) -> f64 {
        class_factor(self.level, priority, &self.settings)
    }

    pub fn status(&self, now: Duration) -> ThrottleStatus {
        let in_level = self.time_in_level(now);
        let dwell_remaining = if self.level == Level::None {
            Duration::ZERO
        } else {
            self.settings.min_dwell.saturating_sub(in_level)
        };
        ThrottleStatus {
            level: self.level,
            time_in_level_seconds: in_level.as_secs_f64(),
            dwell_remaining_seconds: dwell_remaining.as_secs_f64(),
            transitions: self.transitions,
            multiplier: self.multiplier(),
            max_connections: self.max_connections(),
            last_transition: self.last_transition,
            resources: Resource::ALL
                .into_iter()
                .map(|r| {
                    let thresholds = *self.settings.thresholds.get(r);
                    let ratio = *self.last.get(r);
                    ResourceStatus {
                        resource: r,
                        ratio,
                        reaches: ratio.map_or(Level::None, |v| thresholds.level_for(v)),
                        thresholds,
                        release_below: self.settings.release_below(r, self.level),
                    }
                })
                .collect(),
        }
    }
}

/// A `Duration` as fractional seconds in JSON.
mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use super::*;

    const CPU: Resource = Resource::Cpu;
    const MEM: Resource = Resource::Memory;
    const IO: Resource = Resource::Io;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn throttle() -> Throttle {
        Throttle::new(ThrottleSettings::default(), Duration::ZERO)
    }

    /// A throttle already at `level` (raised by cpu at t = 0).
    fn at(level: Level) -> Throttle {
        let mut t = throttle();
        if let Some(v) = Thresholds::CPU.get(level) {
            t.update(Duration::ZERO, &[(CPU, v)]);
        }
        assert_eq!(t.level(), level);
        t
    }

    #[test]
    fn levels() {
        assert!(Level::None < Level::Low && Level::High < Level::Critical);
        let names: Vec<&str> = Level::ALL.iter().map(|l| l.as_str()).collect();
        assert_eq!(names, ["none", "low", "medium", "high", "critical"]);
        assert_eq!(Level::Critical.severity(), 4);
        assert_eq!(Level::Low.below(), Some(Level::None));
        assert_eq!(serde_json::to_string(&Level::Medium).unwrap(), "\"medium\"");
        let l: Level = serde_json::from_str("\"critical\"").unwrap();
        assert_eq!(l, Level::Critical);
    }

    #[test]
    fn threshold_crossings_per_resource_and_level() {
        #[rustfmt::skip]
        let cases: &[(Resource, f64, Level)] = &[
            (CPU, 0.0, Level::None), (CPU, 0.599, Level::None), (CPU, 0.6, Level::Low),
            (CPU, 0.699, Level::Low), (CPU, 0.7, Level::Medium), (CPU, 0.799, Level::Medium),
            (CPU, 0.8, Level::High), (CPU, 0.899, Level::High), (CPU, 0.9, Level::Critical),
            (CPU, 1.0, Level::Critical),
            (MEM, 0.699, Level::None), (MEM, 0.7, Level::Low), (MEM, 0.8, Level::Medium),
            (MEM, 0.899, Level::Medium), (MEM, 0.9, Level::High), (MEM, 0.949, Level::High),
            (MEM, 0.95, Level::Critical),
            (IO, 0.599, Level::None), (IO, 0.6, Level::Low), (IO, 0.7, Level::Medium),
            (IO, 0.8, Level::High), (IO, 0.9, Level::Critical),
        ];
        for &(r, v, want) in cases {
            let thresholds = ThrottleSettings::default().thresholds;
            assert_eq!(thresholds.get(r).level_for(v), want, "{r} {v}");
            let mut t = throttle();
            let tr = t.update(s(1.0), &[(r, v)]);
            assert_eq!(t.level(), want, "{r} {v}");
            match tr {
                None => assert_eq!(want, Level::None),
                Some(tr) => assert_eq!(
                    tr,
                    LevelChange {
                        from: Level::None,
                        to: want,
                        at: s(1.0),
                        cause: r,
                        ratio: v
                    }
                ),
            }
        }
    }

    #[test]
    fn level_is_the_highest_any_resource_reaches() {
        #[rustfmt::skip]
        let cases: &[([f64; 3], Level, Resource)] = &[
            // cpu, memory, io → level, cause
            ([0.1, 0.1, 0.1], Level::None, CPU),
            ([0.65, 0.1, 0.1], Level::Low, CPU),
            ([0.65, 0.85, 0.1], Level::Medium, MEM),
            ([0.65, 0.85, 0.95], Level::Critical, IO),
            ([0.91, 0.96, 0.1], Level::Critical, MEM), // tie on level: higher reading
            ([0.7, 0.1, 0.7], Level::Medium, CPU),     // full tie: first resource
            // memory 0.75 is only LOW although higher than cpu's MEDIUM 0.72
            ([0.72, 0.75, 0.0], Level::Medium, CPU),
        ];
        for &([c, m, i], want, cause) in cases {
            let mut t = throttle();
            let tr = t.update(s(1.0), &[(CPU, c), (MEM, m), (IO, i)]);
            assert_eq!(t.level(), want, "{c} {m} {i}");
            if let Some(tr) = tr {
                assert_eq!(tr.cause, cause, "{c} {m} {i}");
            }
            let status = t.status(s(1.0));
            assert_eq!(status.resources[2].ratio, Some(i));
        }
    }

    #[test]
    fn hysteresis_prevents_flapping() {
        // cpu oscillates around MEDIUM's 0.7 but never below 0.65 (= 0.7 − 0.05).
        let mut t = throttle();
        let mut changes = Vec::new();
        for i in 0..120 {
            let v = [0.71, 0.69, 0.66, 0.7, 0.651][i % 5];
            changes.extend(t.update(s(i as f64), &[(CPU, v)]));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].from, changes[0].to),
            (Level::None, Level::Medium)
        );
        assert_eq!(t.transitions(), 1);

        // Dipping below the margin lowers (after the dwell); coming back raises again: at
        // most one round trip per dwell.
        let mut t = throttle();
        let mut changes = 0;
        for i in 0..60 {
            let v = if i % 2 == 0 { 0.71 } else { 0.64 };
            changes += t.update(s(i as f64), &[(CPU, v)]).is_some() as u32;
        }
        assert!(changes <= 2 * 60 / 5 + 1, "{changes}");
        assert!(changes >= 2, "{changes}");
    }

    #[test]
    fn release_needs_every_resource_below_threshold_minus_margin() {
        // HIGH: cpu releases below 0.75, memory below 0.85, io below 0.75.
        #[rustfmt::skip]
        let cases: &[([f64; 3], bool)] = &[
            ([0.0, 0.0, 0.0], true),
            ([0.7499, 0.8499, 0.7499], true),
            ([0.75, 0.0, 0.0], false),       // not strictly below
            ([0.79, 0.0, 0.0], false),       // below HIGH but inside the margin
            ([0.0, 0.86, 0.0], false),       // memory holds it
            ([0.0, 0.0, 0.76], false),       // io holds it
        ];
        for &([c, m, i], lowers) in cases {
            let mut t = at(Level::High);
            let tr = t.update(s(10.0), &[(CPU, c), (MEM, m), (IO, i)]);
            assert_eq!(tr.is_some(), lowers, "{c} {m} {i}");
            assert_eq!(t.level(), if lowers { Level::Medium } else { Level::High });
        }
        let t = at(Level::High);
        assert_eq!(
            t.settings()
                .release_below(MEM, Level::High)
                .map(|v| (v * 100.0).round()),
            Some(85.0)
        );
        assert_eq!(t.settings().release_below(MEM, Level::None), None);
    }

    #[test]
    fn dwell_delays_lowering_but_not_raising() {
        let mut t = throttle();
        assert!(t.update(s(0.0), &[(CPU, 0.85)]).is_some());
        assert_eq!(t.level(), Level::High);
        // Quiet at once, but HIGH is held for min_dwell (5 s).
        for i in 1..50 {
            assert_eq!(t.update(s(f64::from(i) * 0.1), &[(CPU, 0.0)]), None, "{i}");
        }
        assert_eq!(t.status(s(4.0)).dwell_remaining_seconds, 1.0);
        let tr = t.update(s(5.0), &[(CPU, 0.0)]).unwrap();
        assert_eq!(
            (tr.from, tr.to, tr.at),
            (Level::High, Level::Medium, s(5.0))
        );
        assert!(!tr.is_raise());
        assert_eq!(t.since(), s(5.0));
        assert_eq!(t.time_in_level(s(6.5)), s(1.5));

        // Within MEDIUM's dwell, pressure returns: raised at once.
        let tr = t.update(s(6.0), &[(CPU, 0.95)]).unwrap();
        assert_eq!((tr.from, tr.to), (Level::Medium, Level::Critical));
        assert!(tr.is_raise());
        // And a further raise right after a raise is not delayed either.
        let mut t = throttle();
        t.update(s(0.0), &[(CPU, 0.6)]);
        t.update(s(0.1), &[(CPU, 0.7)]);
        t.update(s(0.2), &[(CPU, 0.8)]);
        assert_eq!(t.level(), Level::High);
        assert_eq!(t.transitions(), 3);
    }

    #[test]
    fn lowering_goes_one_level_per_dwell() {
        let mut t = at(Level::Critical);
        let mut steps = Vec::new();
        for i in 1..=30 {
            if let Some(tr) = t.update(s(f64::from(i)), &[(CPU, 0.0), (MEM, 0.0), (IO, 0.0)]) {
                steps.push((tr.at, tr.to));
            }
        }
        assert_eq!(
            steps,
            [
                (s(5.0), Level::High),
                (s(10.0), Level::Medium),
                (s(15.0), Level::Low),
                (s(20.0), Level::None)
            ]
        );
        assert_eq!(t.transitions(), 5);

        // A reading that justifies MEDIUM stops the descent there.
        let mut t = at(Level::Critical);
        for i in 1..=30 {
            t.update(s(f64::from(i)), &[(CPU, 0.72)]);
        }
        assert_eq!(t.level(), Level::Medium);

        // Zero dwell: one level per update.
        let mut t = Throttle::new(
            ThrottleSettings {
                min_dwell: Duration::ZERO,
                ..ThrottleSettings::default()
            },
            Duration::ZERO,
        );
        t.update(s(0.0), &[(CPU, 1.0)]);
        t.update(s(0.0), &[(CPU, 0.0)]);
        assert_eq!(t.level(), Level::High);
    }

    #[test]
    fn missing_and_invalid_readings() {
        let mut t = at(Level::Medium);
        // Nothing usable: nothing changes, even after the dwell.
        assert_eq!(t.update(s(60.0), &[]), None);
        assert_eq!(
            t.update(s(60.0), &[(CPU, f64::NAN), (IO, f64::INFINITY)]),
            None
        );
        assert_eq!(t.level(), Level::Medium);
        assert_eq!(t.last_ratio(CPU), Some(0.7));
        // A resource not sampled does not hold the level; the ones sampled decide.
        assert!(t.update(s(61.0), &[(MEM, 0.1)]).is_some());
        assert_eq!(t.level(), Level::Low);
        assert_eq!(t.last_ratio(MEM), Some(0.1));
        // A resource given twice counts with its higher reading; negatives read as 0.
        let mut t = throttle();
        t.update(s(0.0), &[(IO, 0.1), (IO, 0.95), (CPU, -3.0)]);
        assert_eq!(t.level(), Level::Critical);
        assert_eq!(t.last_ratio(CPU), Some(0.0));
        // Time going backwards never satisfies the dwell.
        let mut t = throttle();
        t.update(s(100.0), &[(CPU, 0.9)]);
        assert_eq!(t.update(s(50.0), &[(CPU, 0.0)]), None);
        assert_eq!(t.time_in_level(s(50.0)), Duration::ZERO);
    }

    #[test]
    fn multipliers_and_priorities() {
        let st = ThrottleSettings::default();
        use Priority::*;
        #[rustfmt::skip]
        let cases: &[(Level, Priority, f64)] = &[
            (Level::None, Critical, 1.0), (Level::None, High, 1.0),
            (Level::None, Normal, 1.0), (Level::None, Low, 1.0),
            (Level::Low, Critical, 1.0), (Level::Low, High, 1.0),
            (Level::Low, Normal, 0.8), (Level::Low, Low, 0.4),
            (Level::Medium, Critical, 1.0), (Level::Medium, High, 0.9),
            (Level::Medium, Normal, 0.6), (Level::Medium, Low, 0.3),
            (Level::High, Critical, 0.8), (Level::High, High, 0.6),
            (Level::High, Normal, 0.4), (Level::High, Low, 0.2),
            (Level::Critical, Critical, 0.4), (Level::Critical, High, 0.3),
            (Level::Critical, Normal, 0.2), (Level::Critical, Low, 0.1),
        ];
        for &(level, p, want) in cases {
            let got = class_factor(level, p, &st);
            assert!(close(got, want), "{level} {p:?}: {got} != {want}");
        }
        // A low priority never gets more than its level at NONE either.
        let generous = ThrottleSettings {
            priority: PriorityMultipliers {
                critical: 10.0,
                high: 10.0,
                normal: 10.0,
                low: 10.0,
            },
            ..ThrottleSettings::default()
        };
        assert_eq!(class_factor(Level::Critical, Low, &generous), 1.0);

        let caps: Vec<Option<u32>> = Level::ALL.iter().map(|&l| st.max_connections(l)).collect();
        assert_eq!(caps, [None, Some(512), Some(256), Some(128), Some(64)]);
        let mults: Vec<f64> = Level::ALL.iter().map(|&l| st.multiplier(l)).collect();
        assert_eq!(mults, [1.0, 0.8, 0.6, 0.4, 0.2]);

        let t = at(Level::High);
        assert_eq!(t.multiplier(), 0.4);
        assert_eq!(t.max_connections(), Some(128));
        assert!(close(t.class_factor(High), 0.6));
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(ThrottleSettings::default().validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_key() {
        type Edit = fn(&mut ThrottleSettings);
        #[rustfmt::skip]
        let cases: &[(Edit, &[&str])] = &[
            (|s| s.thresholds.cpu.medium = 0.55,
             &["throttle.thresholds.cpu: must increase strictly from low to critical (got 0.6, 0.55, 0.8, 0.9)"]),
            (|s| s.thresholds.io.critical = 0.8,
             &["throttle.thresholds.io: must increase strictly"]),
            (|s| s.thresholds.memory.critical = 1.2,
             &["throttle.thresholds.memory.critical: 1.2 is not a ratio in (0, 1]"]),
            (|s| s.thresholds.cpu.low = f64::NAN,
             &["throttle.thresholds.cpu.low: NaN is not a ratio"]),
            (|s| s.thresholds.io.low = 0.0,
             &["throttle.thresholds.io.low: 0 is not a ratio"]),
            (|s| s.hysteresis = -0.01, &["throttle.hysteresis: -0.01 is not a margin in [0, 0.5)"]),
            (|s| s.hysteresis = 0.5, &["throttle.hysteresis: 0.5 is not a margin"]),
            (|s| s.thresholds.memory.low = 0.04,
             &["throttle.hysteresis: 0.05 is not below the memory low threshold (0.04): LOW could never be left"]),
            (|s| s.hysteresis = 0.0, &[]),
            (|s| s.min_dwell = Duration::from_secs(3601), &["throttle.min_dwell: must be at most 3600s"]),
            (|s| s.min_dwell = Duration::ZERO, &[]),
            (|s| s.multipliers.low = 1.5, &["throttle.multipliers.low: 1.5 is not a multiplier in (0, 1]"]),
            (|s| s.multipliers.critical = 0.0, &["throttle.multipliers.critical: 0 is not a multiplier"]),
            (|s| s.multipliers.high = 0.7, &["throttle.multipliers: must not increase from low to critical"]),
            (|s| s.multipliers.high = 0.6, &[]),
            (|s| s.max_connections.medium = Some(0), &["throttle.max_connections.medium: must be at least 1"]),
            (|s| s.max_connections.high = Some(300), &["throttle.max_connections: must not increase"]),
            (|s| s.max_connections.critical = None, &["throttle.max_connections: must not increase"]),
            (|s| s.max_connections.low = None, &[]),
            (|s| s.priority.low = 0.0, &["throttle.priority.low: 0 is not a positive multiplier"]),
            (|s| s.priority.high = 2.5, &["throttle.priority: must not increase from critical to low"]),
            (|s| { s.thresholds.cpu.low = 2.0; s.multipliers.low = 0.0; s.priority.normal = -1.0; },
             &["throttle.thresholds.cpu.low", "throttle.multipliers.low", "throttle.priority.normal"]),
        ];
        for (i, (edit, want)) in cases.iter().enumerate() {
            let mut st = ThrottleSettings::default();
            edit(&mut st);
            let got: Vec<String> = st
                .validate()
                .err()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got.len(), want.len(), "case {i}: {got:?}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(
                    g.starts_with(w),
                    "case {i}: `{g}` does not start with `{w}`"
                );
            }
        }
    }

    #[test]
    fn status_reports_readings_against_thresholds() {
        let mut t = throttle();
        t.update(s(2.0), &[(CPU, 0.81), (MEM, 0.5)]);
        let st = t.status(s(3.5));
        assert_eq!(st.level, Level::High);
        assert_eq!(st.time_in_level_seconds, 1.5);
        assert_eq!(st.dwell_remaining_seconds, 3.5);
        assert_eq!(st.transitions, 1);
        assert_eq!(st.multiplier, 0.4);
        assert_eq!(st.max_connections, Some(128));
        assert_eq!(st.last_transition.map(|tr| tr.to), Some(Level::High));
        let cpu = &st.resources[0];
        assert_eq!(
            (cpu.resource, cpu.ratio, cpu.reaches),
            (CPU, Some(0.81), Level::High)
        );
        assert_eq!(cpu.thresholds, Thresholds::CPU);
        assert!(close(cpu.release_below.unwrap(), 0.75));
        assert_eq!(st.resources[1].reaches, Level::None);
        assert_eq!(
            (st.resources[2].resource, st.resources[2].ratio),
            (IO, None)
        );

        // JSON for the admin API, and back.
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["level"], "high");
        assert_eq!(json["last_transition"]["at_seconds"], 2.0);
        assert_eq!(json["last_transition"]["cause"], "cpu");
        assert_eq!(json["resources"][0]["thresholds"]["medium"], 0.7);
        let back: ThrottleStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, st);

        let idle = throttle().status(s(9.0));
        assert_eq!(idle.dwell_remaining_seconds, 0.0);
        assert_eq!(idle.max_connections, None);
        assert_eq!(idle.resources[0].release_below, None);
    }

    #[test]
    fn transition_text() {
        let mut t = throttle();
        let up = t.update(s(1.0), &[(MEM, 0.912)]).unwrap();
        assert_eq!(
            up.to_string(),
            "throttle raised none → high (memory at 0.91)"
        );
        let down = t.update(s(7.0), &[(MEM, 0.2)]).unwrap();
        assert_eq!(
            down.to_string(),
            "throttle lowered high → medium (memory at 0.20)"
        );
    }

    #[test]
    fn reload_keeps_the_level() {
        let mut t = at(Level::Medium);
        let looser = ThrottleSettings {
            thresholds: PerResource::from_fn(|_| Thresholds::new(0.9, 0.95, 0.97, 0.99)),
            ..ThrottleSettings::default()
        };
        t.set_settings(looser);
        assert_eq!(t.level(), Level::Medium);
        // Still within the dwell: held even though 0.7 is now below everything.
        assert_eq!(t.update(s(1.0), &[(CPU, 0.7)]), None);
        assert!(t.update(s(5.0), &[(CPU, 0.7)]).is_some());
        assert_eq!(t.level(), Level::Low);
    }

    #[test]
    fn per_level_and_thresholds_from_toml() {
        let th: PerResource<Thresholds> = toml::from_str(
            "cpu = { low = 0.5, medium = 0.6, high = 0.7, critical = 0.8 }\n\
             memory = { low = 0.7, medium = 0.8, high = 0.9, critical = 0.95 }\n\
             io = { low = 0.6, medium = 0.7, high = 0.8, critical = 0.9 }\n",
        )
        .unwrap();
        assert_eq!(th.cpu, Thresholds::new(0.5, 0.6, 0.7, 0.8));
        assert_eq!(*th.get(MEM), Thresholds::MEMORY);
        let m: PerLevel<f64> =
            toml::from_str("low = 0.9\nmedium = 0.7\nhigh = 0.5\ncritical = 0.3\n").unwrap();
        assert_eq!(m.get(Level::High), Some(&0.5));
        assert_eq!(m.get(Level::None), None);
        assert!(
            toml::from_str::<PerLevel<f64>>("low = 1\nmedium = 1\nhigh = 1\nextreme = 1\n")
                .is_err()
        );
    }
}
