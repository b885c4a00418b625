//! [`Throttle`]: readings in, level changes out; and the status it reports.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use super::{Level, Priority, Thresholds, ThrottleSettings};
use crate::pressure::{PerResource, Resource};

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
