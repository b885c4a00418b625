//! Circuit breakers for the node's own upstream service ports: CLOSED / OPEN / HALF_OPEN.
//!
//! Pure: no clocks, no I/O. Every call that can change state takes `now`, a monotonic
//! [`Duration`] since any fixed origin; a `now` earlier than one already seen is treated as
//! the latest one seen, so a clock hiccup cannot produce negative ages. The daemon owns one
//! [`Breaker`] per upstream port, feeds it outcomes from active probes and passive signals,
//! calls [`Breaker::poll`] every tick, and writes [`Breaker::gate`] to the kernel's port
//! table when it changes.
//!
//! - **Closed**: outcomes go into a sliding [`Window`] (the last *n* outcomes, or those of
//!   the last *d*). After each outcome the breaker opens when the window holds at least
//!   `min_requests` outcomes and the error rate is at or over `error_threshold`, or when the
//!   last `consecutive_failures` outcomes all failed (whatever the window holds; 0 turns
//!   this rule off). If both rules fire on the same outcome, the reason is the error rate.
//! - **Open**: the kernel refuses new connections. Outcomes are ignored (they still show as
//!   the last outcome). [`Breaker::poll`] moves to half-open exactly when the reset timeout
//!   has elapsed, not before. A breaker opened with [`Breaker::force_open`] never half-opens
//!   by itself: it stays open until [`Breaker::reset`].
//! - **Half-open**: the kernel admits `half_open_trials` new connections per
//!   `half_open_interval`. Every outcome recorded while half-open is a trial outcome —
//!   passive signals come from connections the kernel already admitted, so they are not
//!   asked for admission again. Active probes reach the port over loopback, past the XDP
//!   gate, so the prober asks [`Breaker::try_admit_trial`], which keeps the same budget in
//!   user space. Any failed trial reopens; `success_threshold` successes close.
//! - **Backoff**: the reset timeout of the *n*-th consecutive open (opens with no close in
//!   between) is the base for [`Backoff::Immediate`], base × *n* for [`Backoff::Linear`],
//!   and base × factor^(n−1) up to the cap for [`Backoff::Exponential`]. A close from
//!   half-open and a manual reset return *n* to 0, so the next open starts from the base
//!   again. A forced open leaves *n* alone.
//!
//! Settings come from `[breaker]` (the defaults), then the built-in preset of the port's
//! group ([`GROUP_PRESETS`]), then `[breaker.groups.NAME]`: see
//! [`BreakerSettings::resolve`].

//!
//! Files: `settings` (what `[breaker]` configures), `window` (the sliding window of
//! outcomes), `machine` (the state machine); the vocabulary they share is here.

mod machine;
mod settings;
mod window;

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};
use traffic_common::Gate;

pub use machine::Breaker;
use settings::secs;
pub use settings::{Backoff, BreakerOverrides, BreakerSettings, Window};
pub use window::WindowStats;

/// Names of the built-in group presets ([`BreakerOverrides::preset`]).
pub const GROUP_PRESETS: [&str; 2] = ["critical", "non_critical"];

/// Largest count window: a ring of this many outcomes per breaker.
pub const MAX_COUNT_WINDOW: u32 = 10_000;
/// Shortest time window.
pub const MIN_TIME_WINDOW: Duration = Duration::from_secs(1);
/// Longest time window.
pub const MAX_TIME_WINDOW: Duration = Duration::from_secs(3600);
/// Longest reset timeout or backoff cap.
pub const MAX_RESET_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Longest half-open admission interval.
pub const MAX_HALF_OPEN_INTERVAL: Duration = Duration::from_secs(3600);
/// A time window keeps at most this many slots (plus one): outcomes closer together than
/// `window / TIME_WINDOW_SLOTS` share a slot, so memory stays bounded however busy the
/// port. A slot expires with its first outcome, so an outcome counts for between
/// `window − window / TIME_WINDOW_SLOTS` and `window`, never longer.
pub const TIME_WINDOW_SLOTS: u32 = 100;

/// Result of one request, connection or probe to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// Lower-case name, as in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of a breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Traffic flows; outcomes are counted.
    #[default]
    Closed,
    /// New connections are refused until the reset timeout (or a manual reset).
    Open,
    /// A bounded number of trial connections per interval pass.
    HalfOpen,
}

impl BreakerState {
    /// Snake-case name (`closed`, `open`, `half_open`), as in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// Every state, in order (for metrics that export one series per state).
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the kernel gate of the breaker's port should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateState {
    /// Everything passes.
    Closed,
    /// New TCP connections are refused (dropped or reset, per the port's config).
    Open,
    /// `trials_per_interval` new connections pass per `interval`.
    HalfOpen {
        trials_per_interval: u32,
        interval: Duration,
    },
}

impl GateState {
    /// The [`Gate`] discriminant for `PortRule::gate`; the half-open budget goes into
    /// `PortRule::half_open`.
    pub fn kernel_gate(&self) -> Gate {
        match self {
            GateState::Closed => Gate::Closed,
            GateState::Open => Gate::Open,
            GateState::HalfOpen { .. } => Gate::HalfOpen,
        }
    }
}

/// Why a breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// Closed → open: the window's error rate reached the threshold.
    ErrorRate { rate: f64, requests: u64 },
    /// Closed → open: this many failures in a row.
    ConsecutiveFailures { failures: u32 },
    /// Open → half-open: the reset timeout elapsed.
    ResetTimeout,
    /// Half-open → closed: `success_threshold` trials succeeded.
    TrialSucceeded,
    /// Half-open → open: a trial failed.
    TrialFailed,
    /// Any → open by an operator; stays open until reset.
    ForcedOpen,
    /// Any → closed by an operator, windows and backoff cleared.
    ManualReset,
}

impl TransitionReason {
    /// Snake-case name of the reason, for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransitionReason::ErrorRate { .. } => "error_rate",
            TransitionReason::ConsecutiveFailures { .. } => "consecutive_failures",
            TransitionReason::ResetTimeout => "reset_timeout",
            TransitionReason::TrialSucceeded => "trial_succeeded",
            TransitionReason::TrialFailed => "trial_failed",
            TransitionReason::ForcedOpen => "forced_open",
            TransitionReason::ManualReset => "manual_reset",
        }
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionReason::ErrorRate { rate, requests } => {
                write!(
                    f,
                    "error rate {:.0}% over {requests} requests",
                    rate * 100.0
                )
            }
            TransitionReason::ConsecutiveFailures { failures } => {
                write!(f, "{failures} consecutive failures")
            }
            TransitionReason::ResetTimeout => f.write_str("reset timeout elapsed"),
            TransitionReason::TrialSucceeded => f.write_str("trials succeeded"),
            TransitionReason::TrialFailed => f.write_str("a trial failed"),
            TransitionReason::ForcedOpen => f.write_str("forced open"),
            TransitionReason::ManualReset => f.write_str("manual reset"),
        }
    }
}

/// A change of state (or an operator action, which may leave the state as it was).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    /// `now` of the call that made it.
    pub at: Duration,
    pub reason: TransitionReason,
    /// When `to` is open and not forced: the time until half-open.
    pub reset_timeout: Option<Duration>,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}: {}", self.from, self.to, self.reason)?;
        if let Some(t) = self.reset_timeout {
            write!(f, " (half-open in {})", secs(t))?;
        }
        Ok(())
    }
}

/// Everything an operator sees of a breaker, in base units (for the admin API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Opened by an operator: no half-open until reset.
    pub forced: bool,
    pub time_in_state_seconds: f64,
    /// Time left until half-open, when open and not forced.
    pub half_open_in_seconds: Option<f64>,
    /// Reset timeout of the current open, or of the next one when not open.
    pub reset_timeout_seconds: f64,
    pub consecutive_opens: u32,
    pub opens_total: u64,
    pub transitions_total: u64,
    pub window_requests: u64,
    pub window_failures: u64,
    pub error_rate_ratio: f64,
    pub consecutive_failures: u32,
    pub half_open_successes: u32,
    pub last_outcome: Option<Outcome>,
    pub last_outcome_age_seconds: Option<f64>,
    pub last_reason: Option<TransitionReason>,
}

#[cfg(test)]
mod tests;
