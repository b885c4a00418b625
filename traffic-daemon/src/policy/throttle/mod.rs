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

//!
//! Files: the levels and priorities here, `settings` (what `[throttle]` configures) and
//! `machine` (the [`Throttle`] state machine and what it reports).

mod machine;
mod settings;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use machine::{LevelChange, ResourceStatus, Throttle, ThrottleStatus, class_factor};
pub use settings::{
    DEFAULT_HYSTERESIS, DEFAULT_MIN_DWELL, MAX_HYSTERESIS, MAX_MIN_DWELL, PerLevel,
    PriorityMultipliers, Thresholds, ThrottleSettings,
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

#[cfg(test)]
mod tests;
