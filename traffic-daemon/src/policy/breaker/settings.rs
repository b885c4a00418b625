//! What `[breaker]` configures: the window, thresholds, reset timeout and its backoff, the
//! half-open budget; the built-in group presets; and their validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    MAX_COUNT_WINDOW, MAX_HALF_OPEN_INTERVAL, MAX_RESET_TIMEOUT, MAX_TIME_WINDOW, MIN_TIME_WINDOW,
};
use crate::setting::SettingError;

/// Which outcomes the error rate is computed over.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// The last `n` outcomes.
    Count(u32),
    /// Outcomes of the last `d` (an outcome exactly `d` old is out).
    Time(Duration),
}

/// How the reset timeout grows over consecutive opens.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Backoff {
    /// Always the base reset timeout.
    Immediate,
    /// Base × n for the n-th consecutive open (not capped).
    Linear,
    /// Base × factor^(n−1) for the n-th consecutive open, at most `cap`.
    Exponential { factor: f64, cap: Duration },
}

impl Backoff {
    /// Reset timeout of the `opens`-th consecutive open (`opens` 0 is treated as 1).
    /// Never panics, whatever the settings: overflow saturates (linear) or gives the cap.
    pub fn timeout(&self, base: Duration, opens: u32) -> Duration {
        let n = opens.max(1);
        match *self {
            Backoff::Immediate => base,
            Backoff::Linear => base.checked_mul(n).unwrap_or(Duration::MAX),
            Backoff::Exponential { factor, cap } => {
                if base >= cap {
                    return cap;
                }
                let exponent = i32::try_from(n - 1).unwrap_or(i32::MAX);
                let secs = base.as_secs_f64() * factor.powi(exponent);
                // NaN, negative or past the cap: the cap (or the base for a factor < 1).
                match Duration::try_from_secs_f64(secs) {
                    Ok(d) => d.clamp(base, cap),
                    Err(_) => cap,
                }
            }
        }
    }

    /// Lower-case name of the kind (`immediate`, `linear`, `exponential`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Backoff::Immediate => "immediate",
            Backoff::Linear => "linear",
            Backoff::Exponential { .. } => "exponential",
        }
    }
}

/// Settings of one breaker. `Default` is the global default of `[breaker]`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Outcomes the error rate is computed over.
    pub window: Window,
    /// Error rate (failures / requests in the window) at or over which the breaker opens.
    pub error_threshold: f64,
    /// Outcomes the window must hold before the error rate counts.
    pub min_requests: u32,
    /// Consecutive failures that open the breaker whatever the window holds; 0 = off.
    pub consecutive_failures: u32,
    /// Base time from open to half-open.
    pub reset_timeout: Duration,
    /// Growth of the reset timeout over consecutive opens.
    pub backoff: Backoff,
    /// New connections the kernel admits per `half_open_interval` while half-open.
    pub half_open_trials: u32,
    /// Interval of the half-open admission budget.
    pub half_open_interval: Duration,
    /// Successful trials that close a half-open breaker.
    pub success_threshold: u32,
}

impl Default for BreakerSettings {
    /// The window is time-based: outcomes arrive at the pace of traffic (passive signals)
    /// or of the prober, so a count window would span milliseconds on a busy port and
    /// minutes on a quiet one. 30 s reacts in the same time whatever the load, and
    /// `min_requests` keeps a quiet port from opening on two unlucky outcomes — there,
    /// `consecutive_failures` catches a dead upstream instead.
    fn default() -> Self {
        Self {
            window: Window::Time(Duration::from_secs(30)),
            error_threshold: 0.5,
            min_requests: 10,
            consecutive_failures: 5,
            reset_timeout: Duration::from_secs(30),
            backoff: Backoff::Exponential {
                factor: 2.0,
                cap: Duration::from_secs(300),
            },
            half_open_trials: 3,
            half_open_interval: Duration::from_secs(1),
            success_threshold: 2,
        }
    }
}

impl BreakerSettings {
    /// The defaults with the built-in preset `name` on top; `None` if there is no such
    /// preset.
    pub fn for_group(name: &str) -> Option<Self> {
        BreakerOverrides::preset(name).map(|o| o.apply(&Self::default()))
    }

    /// The settings of a port in `group`: `self` (the `[breaker]` defaults), then the
    /// built-in preset of that name if there is one, then `overrides`
    /// (`[breaker.groups.NAME]`). A name that is neither a preset nor has overrides gives
    /// `self`; the config should reject such a group before it gets here.
    pub fn resolve(&self, group: &str, overrides: Option<&BreakerOverrides>) -> Self {
        let mut s = match BreakerOverrides::preset(group) {
            Some(preset) => preset.apply(self),
            None => *self,
        };
        if let Some(o) = overrides {
            s = o.apply(&s);
        }
        s
    }

    /// Every problem with these settings (ranges and cross-field checks).
    /// Long (about 100 lines) because it is a flat list of independent range checks, one
    /// per setting, in the order of the config file.
    pub fn validate(&self) -> Result<(), Vec<SettingError>> {
        let mut errors = Vec::new();
        let mut err = |key: &'static str, message: String| {
            errors.push(SettingError::new(key, message));
        };
        match self.window {
            Window::Count(n) => {
                if n == 0 || n > MAX_COUNT_WINDOW {
                    err(
                        "window",
                        format!(
                            "a count window must hold 1 to {MAX_COUNT_WINDOW} outcomes, got {n}"
                        ),
                    );
                } else if self.min_requests > n {
                    err(
                        "min_requests",
                        format!(
                            "{} exceeds the count window of {n}: the error rate could never open \
                             the breaker",
                            self.min_requests
                        ),
                    );
                }
            }
            Window::Time(d) => {
                if !(MIN_TIME_WINDOW..=MAX_TIME_WINDOW).contains(&d) {
                    err(
                        "window",
                        format!(
                            "a time window must be {} to {}, got {}",
                            secs(MIN_TIME_WINDOW),
                            secs(MAX_TIME_WINDOW),
                            secs(d)
                        ),
                    );
                }
            }
        }
        let t = self.error_threshold;
        if !(t.is_finite() && t > 0.0 && t <= 1.0) {
            err("error_threshold", format!("must be in (0, 1], got {t}"));
        }
        if self.min_requests == 0 {
            err("min_requests", "must be at least 1".into());
        }
        if self.reset_timeout.is_zero() || self.reset_timeout > MAX_RESET_TIMEOUT {
            err(
                "reset_timeout",
                format!(
                    "must be more than 0 and at most {}, got {}",
                    secs(MAX_RESET_TIMEOUT),
                    secs(self.reset_timeout)
                ),
            );
        }
        if let Backoff::Exponential { factor, cap } = self.backoff {
            if !(factor.is_finite() && factor >= 1.0) {
                err(
                    "backoff_factor",
                    format!("must be at least 1, got {factor}"),
                );
            }
            if cap < self.reset_timeout || cap > MAX_RESET_TIMEOUT {
                err(
                    "backoff_cap",
                    format!(
                        "must be between reset_timeout ({}) and {}, got {}",
                        secs(self.reset_timeout),
                        secs(MAX_RESET_TIMEOUT),
                        secs(cap)
                    ),
                );
            }
        }
        if self.half_open_trials == 0 {
            err(
                "half_open_trials",
                "must be at least 1: a half-open breaker with no trials could never close".into(),
            );
        }
        if self.half_open_interval.is_zero() || self.half_open_interval > MAX_HALF_OPEN_INTERVAL {
            err(
                "half_open_interval",
                format!(
                    "must be more than 0 and at most {}, got {}",
                    secs(MAX_HALF_OPEN_INTERVAL),
                    secs(self.half_open_interval)
                ),
            );
        }
        if self.success_threshold == 0 {
            err("success_threshold", "must be at least 1".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

pub(super) fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// A group's settings that differ from the defaults (`[breaker.groups.NAME]`); `None`
/// keeps the value underneath.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerOverrides {
    pub window: Option<Window>,
    pub error_threshold: Option<f64>,
    pub min_requests: Option<u32>,
    pub consecutive_failures: Option<u32>,
    pub reset_timeout: Option<Duration>,
    pub backoff: Option<Backoff>,
    pub half_open_trials: Option<u32>,
    pub half_open_interval: Option<Duration>,
    pub success_threshold: Option<u32>,
}

impl BreakerOverrides {
    /// Built-in preset: `critical` (error threshold 0.7, reset timeout 15 s — tolerate more
    /// errors before cutting a service everything depends on, and retry it sooner) or
    /// `non_critical` (0.5, 30 s).
    pub fn preset(name: &str) -> Option<Self> {
        let (error_threshold, reset_timeout) = match name {
            "critical" => (0.7, Duration::from_secs(15)),
            "non_critical" => (0.5, Duration::from_secs(30)),
            _ => return None,
        };
        Some(Self {
            error_threshold: Some(error_threshold),
            reset_timeout: Some(reset_timeout),
            ..Self::default()
        })
    }

    /// `base` with every set field replaced.
    pub fn apply(&self, base: &BreakerSettings) -> BreakerSettings {
        BreakerSettings {
            window: self.window.unwrap_or(base.window),
            error_threshold: self.error_threshold.unwrap_or(base.error_threshold),
            min_requests: self.min_requests.unwrap_or(base.min_requests),
            consecutive_failures: self
                .consecutive_failures
                .unwrap_or(base.consecutive_failures),
            reset_timeout: self.reset_timeout.unwrap_or(base.reset_timeout),
            backoff: self.backoff.unwrap_or(base.backoff),
            half_open_trials: self.half_open_trials.unwrap_or(base.half_open_trials),
            half_open_interval: self.half_open_interval.unwrap_or(base.half_open_interval),
            success_threshold: self.success_threshold.unwrap_or(base.success_threshold),
        }
    }
}
