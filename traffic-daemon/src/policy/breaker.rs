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

use std::{collections::VecDeque, fmt, time::Duration};

use serde::{Deserialize, Serialize};
use traffic_common::Gate;

use crate::setting::SettingError;

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

fn secs(d: Duration) -> String {
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

/// Outcomes in a breaker's window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowStats {
    pub requests: u64,
    pub failures: u64,
}

impl WindowStats {
    /// Failures / requests; 0 for an empty window.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failures as f64 / self.requests as f64
        }
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

/// Slot of a time window: outcomes from `at` to `at + window / TIME_WINDOW_SLOTS`.
#[derive(Clone, Copy, Debug)]
struct Slot {
    at: Duration,
    successes: u64,
    failures: u64,
}

#[derive(Clone, Debug)]
enum Outcomes {
    Count {
        size: u32,
        ring: VecDeque<Outcome>,
        failures: u64,
    },
    Time {
        window: Duration,
        slots: VecDeque<Slot>,
    },
}

impl Outcomes {
    fn new(window: Window) -> Self {
        match window {
            Window::Count(size) => Outcomes::Count {
                size,
                ring: VecDeque::with_capacity(size.min(MAX_COUNT_WINDOW) as usize),
                failures: 0,
            },
            Window::Time(window) => Outcomes::Time {
                window,
                slots: VecDeque::new(),
            },
        }
    }

    /// The same outcomes under a new window shape where they carry over (same kind), or
    /// none.
    fn reshaped(self, window: Window) -> Self {
        match (self, window) {
            (Outcomes::Count { ring, .. }, Window::Count(size)) => {
                let mut out = Outcomes::new(window);
                for o in ring.into_iter().rev().take(size as usize).rev() {
                    out.push(Duration::ZERO, o);
                }
                out
            }
            (Outcomes::Time { slots, .. }, Window::Time(window)) => {
                Outcomes::Time { window, slots }
            }
            (_, window) => Outcomes::new(window),
        }
    }

    fn clear(&mut self) {
        match self {
            Outcomes::Count { ring, failures, .. } => {
                ring.clear();
                *failures = 0;
            }
            Outcomes::Time { slots, .. } => slots.clear(),
        }
    }

    fn push(&mut self, now: Duration, outcome: Outcome) {
        let failed = u64::from(outcome == Outcome::Failure);
        match self {
            Outcomes::Count {
                size,
                ring,
                failures,
            } => {
                ring.push_back(outcome);
                *failures += failed;
                while ring.len() > *size as usize {
                    if ring.pop_front() == Some(Outcome::Failure) {
                        *failures -= 1;
                    }
                }
            }
            Outcomes::Time { window, slots } => {
                while slots.front().is_some_and(|s| expired(s.at, *window, now)) {
                    slots.pop_front();
                }
                let width = *window / TIME_WINDOW_SLOTS;
                match slots.back_mut() {
                    Some(slot) if now < slot.at.saturating_add(width) => {
                        slot.successes += 1 - failed;
                        slot.failures += failed;
                    }
                    _ => slots.push_back(Slot {
                        at: now,
                        successes: 1 - failed,
                        failures: failed,
                    }),
                }
            }
        }
    }

    fn stats(&self, now: Duration) -> WindowStats {
        match self {
            Outcomes::Count { ring, failures, .. } => WindowStats {
                requests: ring.len() as u64,
                failures: *failures,
            },
            Outcomes::Time { window, slots } => slots
                .iter()
                .filter(|s| !expired(s.at, *window, now))
                .fold(WindowStats::default(), |acc, s| WindowStats {
                    requests: acc.requests + s.successes + s.failures,
                    failures: acc.failures + s.failures,
                }),
        }
    }
}

/// An outcome at `at` is out of a window of `window` at `now` once it is `window` old.
fn expired(at: Duration, window: Duration, now: Duration) -> bool {
    now.saturating_sub(at) >= window
}

/// The circuit breaker of one upstream port.
#[derive(Clone, Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    since: Duration,
    /// Latest `now` seen; earlier ones are raised to it.
    clock: Duration,
    forced: bool,
    window: Outcomes,
    consecutive_failures: u32,
    half_open_successes: u32,
    /// Index (since entering half-open) of the interval `trials_admitted` counts.
    trial_interval: u128,
    trials_admitted: u32,
    consecutive_opens: u32,
    /// Reset timeout of the current open (meaningful while open and not forced).
    open_timeout: Duration,
    opens: u64,
    transitions: u64,
    last_outcome: Option<(Duration, Outcome)>,
    last_transition: Option<Transition>,
}

impl Breaker {
    /// A closed breaker with empty windows. Settings should have passed
    /// [`BreakerSettings::validate`]; invalid ones give odd behaviour, never a panic.
    pub fn new(settings: BreakerSettings, now: Duration) -> Self {
        Self {
            settings,
            state: BreakerState::Closed,
            since: now,
            clock: now,
            forced: false,
            window: Outcomes::new(settings.window),
            consecutive_failures: 0,
            half_open_successes: 0,
            trial_interval: 0,
            trials_admitted: 0,
            consecutive_opens: 0,
            open_timeout: settings.reset_timeout,
            opens: 0,
            transitions: 0,
            last_outcome: None,
            last_transition: None,
        }
    }

    /// Apply new settings (a reload) without losing state: the state, backoff step,
    /// counters and the current open's deadline stay; window outcomes stay when the window
    /// keeps its kind (a smaller count window keeps the newest), and are dropped when it
    /// changes between count and time. Thresholds apply from the next outcome, the
    /// half-open budget from the next [`Breaker::gate`].
    pub fn reconfigure(&mut self, settings: BreakerSettings) {
        if settings.window != self.settings.window {
            let old = std::mem::replace(&mut self.window, Outcomes::new(settings.window));
            self.window = old.reshaped(settings.window);
        }
        self.settings = settings;
    }

    /// Record the outcome of a request, connection or probe. Closed: counts it and may
    /// open. Half-open: a trial outcome, which may close or reopen. Open: ignored (shown as
    /// the last outcome only); call [`Breaker::poll`] first so an elapsed reset timeout
    /// moves to half-open before the outcome is judged.
    pub fn record(&mut self, now: Duration, outcome: Outcome) -> Option<Transition> {
        let now = self.tick(now);
        self.last_outcome = Some((now, outcome));
        match self.state {
            BreakerState::Closed => {
                self.window.push(now, outcome);
                match outcome {
                    Outcome::Success => self.consecutive_failures = 0,
                    Outcome::Failure => {
                        self.consecutive_failures = self.consecutive_failures.saturating_add(1)
                    }
                }
                let stats = self.window.stats(now);
                let s = &self.settings;
                if stats.requests >= u64::from(s.min_requests.max(1))
                    && stats.error_rate() >= s.error_threshold
                {
                    let reason = TransitionReason::ErrorRate {
                        rate: stats.error_rate(),
                        requests: stats.requests,
                    };
                    Some(self.open(now, reason))
                } else if s.consecutive_failures > 0
                    && self.consecutive_failures >= s.consecutive_failures
                {
                    let reason = TransitionReason::ConsecutiveFailures {
                        failures: self.consecutive_failures,
                    };
                    Some(self.open(now, reason))
                } else {
                    None
                }
            }
            BreakerState::Open => None,
            BreakerState::HalfOpen => match outcome {
                Outcome::Failure => Some(self.open(now, TransitionReason::TrialFailed)),
                Outcome::Success => {
                    self.half_open_successes = self.half_open_successes.saturating_add(1);
                    if self.half_open_successes >= self.settings.success_threshold {
                        // A full close: the backoff starts from the base again.
                        self.consecutive_opens = 0;
                        Some(self.enter(
                            now,
                            BreakerState::Closed,
                            TransitionReason::TrialSucceeded,
                        ))
                    } else {
                        None
                    }
                }
            },
        }
    }

    /// Move on time: open → half-open once the reset timeout has elapsed (exactly at the
    /// deadline, not before). Never for a forced open. Call every tick.
    pub fn poll(&mut self, now: Duration) -> Option<Transition> {
        let now = self.tick(now);
        match self.open_until() {
            Some(deadline) if now >= deadline => {
                Some(self.enter(now, BreakerState::HalfOpen, TransitionReason::ResetTimeout))
            }
            _ => None,
        }
    }

    /// Whether a connection or probe that does not pass the kernel gate (an active probe
    /// over loopback) may go now. Closed: always. Open: never. Half-open: at most
    /// `half_open_trials` per `half_open_interval`, intervals counted from entering
    /// half-open — the kernel's budget, kept in user space.
    pub fn try_admit_trial(&mut self, now: Duration) -> bool {
        let now = self.tick(now);
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let interval = self.settings.half_open_interval.as_nanos().max(1);
                let index = now.saturating_sub(self.since).as_nanos() / interval;
                if index != self.trial_interval {
                    self.trial_interval = index;
                    self.trials_admitted = 0;
                }
                if self.trials_admitted < self.settings.half_open_trials {
                    self.trials_admitted += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Operator action: open now and stay open until [`Breaker::reset`] (no half-open on
    /// time, outcomes ignored). Returns a transition even when already open (`from == to`),
    /// so every operator action is on record. The backoff step is left alone.
    pub fn force_open(&mut self, now: Duration) -> Transition {
        let now = self.tick(now);
        let from = self.state;
        if from != BreakerState::Open {
            self.opens += 1;
            self.since = now;
        }
        self.state = BreakerState::Open;
        self.forced = true;
        self.clear_counts();
        self.note(Transition {
            from,
            to: BreakerState::Open,
            at: now,
            reason: TransitionReason::ForcedOpen,
            reset_timeout: None,
        })
    }

    /// Operator action: closed, windows cleared, backoff back to the base, forced open
    /// lifted. Returns a transition even when already closed (`from == to`).
    pub fn reset(&mut self, now: Duration) -> Transition {
        let now = self.tick(now);
        let from = self.state;
        if from != BreakerState::Closed {
            self.since = now;
        }
        self.state = BreakerState::Closed;
        self.forced = false;
        self.consecutive_opens = 0;
        self.clear_counts();
        self.note(Transition {
            from,
            to: BreakerState::Closed,
            at: now,
            reason: TransitionReason::ManualReset,
            reset_timeout: None,
        })
    }

    /// What the kernel gate should do now.
    pub fn gate(&self) -> GateState {
        match self.state {
            BreakerState::Closed => GateState::Closed,
            BreakerState::Open => GateState::Open,
            BreakerState::HalfOpen => GateState::HalfOpen {
                trials_per_interval: self.settings.half_open_trials,
                interval: self.settings.half_open_interval,
            },
        }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When the current state was entered.
    pub fn since(&self) -> Duration {
        self.since
    }

    pub fn time_in_state(&self, now: Duration) -> Duration {
        now.saturating_sub(self.since)
    }

    /// Opened by an operator (only while open).
    pub fn is_forced(&self) -> bool {
        self.forced
    }

    /// Transitions so far, operator actions included.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Times the breaker entered open, forced opens included.
    pub fn opens(&self) -> u64 {
        self.opens
    }

    /// Opens since the last close or reset (the backoff step).
    pub fn consecutive_opens(&self) -> u32 {
        self.consecutive_opens
    }

    /// Reset timeout of the current open; when not open (or forced), the one the next open
    /// would get.
    pub fn reset_timeout(&self) -> Duration {
        if self.state == BreakerState::Open && !self.forced {
            self.open_timeout
        } else {
            self.settings.backoff.timeout(
                self.settings.reset_timeout,
                self.consecutive_opens.saturating_add(1),
            )
        }
    }

    /// When [`Breaker::poll`] will move to half-open: `Some` only while open and not forced.
    pub fn open_until(&self) -> Option<Duration> {
        (self.state == BreakerState::Open && !self.forced)
            .then(|| self.since.saturating_add(self.open_timeout))
    }

    /// Outcomes in the window at `now` (empty unless closed: opening clears it).
    pub fn stats(&self, now: Duration) -> WindowStats {
        self.window.stats(now.max(self.clock))
    }

    /// Failures in a row while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Successful trials since entering half-open.
    pub fn half_open_successes(&self) -> u32 {
        self.half_open_successes
    }

    /// The last outcome recorded, in any state, and when.
    pub fn last_outcome(&self) -> Option<(Duration, Outcome)> {
        self.last_outcome
    }

    pub fn last_transition(&self) -> Option<&Transition> {
        self.last_transition.as_ref()
    }

    /// Everything at once, for the admin API.
    pub fn snapshot(&self, now: Duration) -> BreakerSnapshot {
        let stats = self.stats(now);
        BreakerSnapshot {
            state: self.state,
            forced: self.forced,
            time_in_state_seconds: self.time_in_state(now).as_secs_f64(),
            half_open_in_seconds: self
                .open_until()
                .map(|t| t.saturating_sub(now).as_secs_f64()),
            reset_timeout_seconds: self.reset_timeout().as_secs_f64(),
            consecutive_opens: self.consecutive_opens,
            opens_total: self.opens,
            transitions_total: self.transitions,
            window_requests: stats.requests,
            window_failures: stats.failures,
            error_rate_ratio: stats.error_rate(),
            consecutive_failures: self.consecutive_failures,
            half_open_successes: self.half_open_successes,
            last_outcome: self.last_outcome.map(|(_, o)| o),
            last_outcome_age_seconds: self
                .last_outcome
                .map(|(at, _)| now.saturating_sub(at).as_secs_f64()),
            last_reason: self.last_transition.map(|t| t.reason),
        }
    }

    fn tick(&mut self, now: Duration) -> Duration {
        self.clock = self.clock.max(now);
        self.clock
    }

    fn clear_counts(&mut self) {
        self.window.clear();
        self.consecutive_failures = 0;
        self.half_open_successes = 0;
        self.trial_interval = 0;
        self.trials_admitted = 0;
    }

    fn open(&mut self, now: Duration, reason: TransitionReason) -> Transition {
        self.consecutive_opens = self.consecutive_opens.saturating_add(1);
        self.opens += 1;
        self.open_timeout = self
            .settings
            .backoff
            .timeout(self.settings.reset_timeout, self.consecutive_opens);
        let mut t = self.enter(now, BreakerState::Open, reason);
        t.reset_timeout = Some(self.open_timeout);
        self.last_transition = Some(t);
        t
    }

    fn enter(&mut self, now: Duration, to: BreakerState, reason: TransitionReason) -> Transition {
        let from = self.state;
        self.state = to;
        self.since = now;
        self.forced = false;
        self.clear_counts();
        self.note(Transition {
            from,
            to,
            at: now,
            reason,
            reset_timeout: None,
        })
    }

    fn note(&mut self, t: Transition) -> Transition {
        self.transitions += 1;
        self.last_transition = Some(t);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use BreakerState::{Closed, HalfOpen, Open};
    use Outcome::{Failure, Success};

    const S: Outcome = Success;
    const F: Outcome = Failure;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    /// Defaults with the consecutive-failure rule off, to test the error rate alone.
    fn rate_only() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 0,
            ..BreakerSettings::default()
        }
    }

    /// Record `outcomes` one second apart from `start`; the transitions that happened.
    fn feed(b: &mut Breaker, start: Duration, outcomes: &[Outcome]) -> Vec<Transition> {
        outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| b.record(start + secs(i as u64), *o))
            .collect()
    }

    /// A breaker opened by consecutive failures at t = 0.
    fn opened(settings: BreakerSettings) -> Breaker {
        let mut b = Breaker::new(settings, Duration::ZERO);
        let n = settings.consecutive_failures.max(1);
        for _ in 0..n {
            b.record(Duration::ZERO, F);
        }
        assert_eq!(b.state(), Open);
        b
    }

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let d = BreakerSettings::default();
        assert_eq!(d.window, Window::Time(secs(30)));
        assert_eq!(d.error_threshold, 0.5);
        assert_eq!(d.min_requests, 10);
        assert_eq!(d.consecutive_failures, 5);
        assert_eq!(d.reset_timeout, secs(30));
        assert_eq!(
            d.backoff,
            Backoff::Exponential {
                factor: 2.0,
                cap: secs(300)
            }
        );
        assert_eq!((d.half_open_trials, d.half_open_interval), (3, secs(1)));
        assert_eq!(d.success_threshold, 2);
        assert_eq!(d.validate(), Ok(()));
    }

    #[test]
    fn new_breaker_is_closed_and_empty() {
        let b = Breaker::new(BreakerSettings::default(), secs(7));
        assert_eq!(b.state(), Closed);
        assert_eq!(b.since(), secs(7));
        assert_eq!(b.gate(), GateState::Closed);
        assert_eq!(b.stats(secs(7)), WindowStats::default());
        assert_eq!(
            (b.opens(), b.transitions(), b.consecutive_opens()),
            (0, 0, 0)
        );
        assert_eq!(b.reset_timeout(), secs(30));
        assert_eq!(b.open_until(), None);
        assert_eq!(b.last_outcome(), None);
        assert!(b.last_transition().is_none());
    }

    #[test]
    fn minimum_requests_gate_the_error_rate() {
        // (min_requests, failures recorded, expected state)
        let table = [
            (10, 9, Closed),
            (10, 10, Open),
            (1, 1, Open),
            (20, 19, Closed),
            (20, 20, Open),
        ];
        for (min, failures, want) in table {
            let settings = BreakerSettings {
                min_requests: min,
                ..rate_only()
            };
            let mut b = Breaker::new(settings, Duration::ZERO);
            let t = feed(&mut b, Duration::ZERO, &vec![F; failures]);
            assert_eq!(b.state(), want, "min {min}, {failures} failures at 100%");
            if want == Open {
                assert_eq!(t.len(), 1);
                assert_eq!(
                    t[0].reason,
                    TransitionReason::ErrorRate {
                        rate: 1.0,
                        requests: min as u64
                    }
                );
            } else {
                assert!(t.is_empty());
                assert_eq!(b.stats(secs(failures as u64)).error_rate(), 1.0);
            }
        }
    }

    #[test]
    fn error_rate_opens_at_the_threshold_not_below() {
        // (threshold, successes then failures, expected state, expected reason rate/requests)
        let table = [
            (0.5, 5, 5, Open, Some((0.5, 10))),
            (0.5, 6, 4, Closed, None),
            (0.5, 11, 10, Closed, None), // 10/21 just below
            (0.5, 10, 10, Open, Some((0.5, 20))),
            (0.7, 3, 7, Open, Some((0.7, 10))),
            (0.7, 4, 6, Closed, None),
            (1.0, 0, 10, Open, Some((1.0, 10))),
            (1.0, 1, 9, Closed, None),
            (0.1, 9, 1, Open, Some((0.1, 10))),
        ];
        for (threshold, ok, bad, want, reason) in table {
            let settings = BreakerSettings {
                error_threshold: threshold,
                ..rate_only()
            };
            let mut b = Breaker::new(settings, Duration::ZERO);
            let mut outcomes = vec![S; ok];
            outcomes.extend(vec![F; bad]);
            let t = feed(&mut b, Duration::ZERO, &outcomes);
            assert_eq!(
                b.state(),
                want,
                "threshold {threshold}, {ok} ok, {bad} failed"
            );
            match reason {
                Some((rate, requests)) => {
                    assert_eq!(t.len(), 1);
                    assert_eq!(t[0].reason, TransitionReason::ErrorRate { rate, requests });
                    assert_eq!((t[0].from, t[0].to), (Closed, Open));
                }
                None => assert!(t.is_empty()),
            }
        }
    }

    #[test]
    fn error_rate_is_checked_on_a_success_too() {
        // Five failures, then successes: the tenth outcome (a success) reaches min_requests
        // at exactly 50%.
        let mut b = Breaker::new(rate_only(), Duration::ZERO);
        let mut outcomes = vec![F; 5];
        outcomes.extend(vec![S; 5]);
        let t = feed(&mut b, Duration::ZERO, &outcomes);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].at, secs(9));
        assert_eq!(
            t[0].reason,
            TransitionReason::ErrorRate {
                rate: 0.5,
                requests: 10
            }
        );
    }

    #[test]
    fn consecutive_failures_open_below_minimum_requests() {
        // (consecutive_failures, outcomes, expected state, reason count)
        let table: [(u32, &[Outcome], BreakerState, Option<u32>); 7] = [
            (5, &[F, F, F, F, F], Open, Some(5)),
            (5, &[F, F, F, F], Closed, None),
            (5, &[F, F, F, F, S, F, F, F, F], Closed, None),
            (5, &[S, S, F, F, F, F, F], Open, Some(5)),
            (1, &[F], Open, Some(1)),
            (3, &[F, S, F, F, F], Open, Some(3)),
            (0, &[F, F, F, F, F, F, F, F, F], Closed, None), // off, and under min_requests
        ];
        for (n, outcomes, want, count) in table {
            let settings = BreakerSettings {
                consecutive_failures: n,
                ..BreakerSettings::default()
            };
            let mut b = Breaker::new(settings, Duration::ZERO);
            let t = feed(&mut b, Duration::ZERO, outcomes);
            assert_eq!(b.state(), want, "consecutive {n}, {outcomes:?}");
            match count {
                Some(failures) => {
                    assert_eq!(t.len(), 1);
                    assert_eq!(
                        t[0].reason,
                        TransitionReason::ConsecutiveFailures { failures }
                    );
                }
                None => assert!(t.is_empty()),
            }
        }
    }

    #[test]
    fn error_rate_wins_when_both_rules_fire() {
        let settings = BreakerSettings {
            min_requests: 5,
            ..BreakerSettings::default()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        let t = feed(&mut b, Duration::ZERO, &[F; 5]);
        assert_eq!(
            t[0].reason,
            TransitionReason::ErrorRate {
                rate: 1.0,
                requests: 5
            }
        );
    }

    #[test]
    fn count_window_evicts_the_oldest_outcomes() {
        // (window, outcomes, expected requests, failures) with nothing able to open.
        let table: [(u32, &[Outcome], u64, u64); 5] = [
            (3, &[F, F, S, S, S], 3, 0),
            (3, &[F, F, S], 3, 2),
            (3, &[F, F, S, S], 3, 1),
            (4, &[S, F], 2, 1),
            (1, &[F, F, S], 1, 0),
        ];
        for (n, outcomes, requests, failures) in table {
            let settings = BreakerSettings {
                window: Window::Count(n),
                min_requests: 1000,
                ..rate_only()
            };
            let mut b = Breaker::new(settings, Duration::ZERO);
            feed(&mut b, Duration::ZERO, outcomes);
            let stats = b.stats(secs(1000));
            assert_eq!(
                (stats.requests, stats.failures),
                (requests, failures),
                "count {n}, {outcomes:?}"
            );
        }
        // Behaviour: over the last 4, 2 failures are 50%; over all 7 they would be 29%.
        let settings = BreakerSettings {
            window: Window::Count(4),
            min_requests: 4,
            ..rate_only()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        let t = feed(&mut b, Duration::ZERO, &[S, S, S, S, S, F, F]);
        assert_eq!(
            t[0].reason,
            TransitionReason::ErrorRate {
                rate: 0.5,
                requests: 4
            }
        );
    }

    #[test]
    fn time_window_evicts_outcomes_once_they_are_window_old() {
        let settings = BreakerSettings {
            window: Window::Time(secs(30)),
            min_requests: 1000,
            ..rate_only()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        b.record(secs(0), F);
        b.record(secs(10), S);
        b.record(secs(20), S);
        // (now, expected requests, failures)
        let table = [
            (secs(20), 3, 1),
            (ms(29_999), 3, 1),
            (secs(30), 2, 0),
            (secs(39), 2, 0),
            (secs(40), 1, 0),
            (secs(50), 0, 0),
        ];
        for (now, requests, failures) in table {
            let stats = b.stats(now);
            assert_eq!(
                (stats.requests, stats.failures),
                (requests, failures),
                "at {now:?}"
            );
        }

        // Behaviour: F@0 F@1 S@2 then S@t with min 4 at 50%: opens only while F@0 counts.
        // (t of the fourth outcome, expected state)
        let table = [(ms(29_999), Open), (secs(30), Closed), (secs(31), Closed)];
        for (t, want) in table {
            let settings = BreakerSettings {
                window: Window::Time(secs(30)),
                min_requests: 4,
                ..rate_only()
            };
            let mut b = Breaker::new(settings, Duration::ZERO);
            b.record(secs(0), F);
            b.record(secs(1), F);
            b.record(secs(2), S);
            b.record(t, S);
            assert_eq!(b.state(), want, "fourth outcome at {t:?}");
        }
    }

    #[test]
    fn time_window_memory_is_bounded_by_slots() {
        let settings = BreakerSettings {
            window: Window::Time(secs(10)),
            min_requests: u32::MAX,
            ..rate_only()
        };
        let mut b = Breaker::new(settings, Duration::ZERO);
        // 100 000 outcomes over 20 s, one every 200 µs.
        for i in 0..100_000u64 {
            b.record(
                Duration::from_micros(i * 200),
                if i % 4 == 0 { F } else { S },
            );
        }
        let Outcomes::Time { slots, .. } = &b.window else {
            panic!("time window expected");
        };
        assert!(
            slots.len() <= TIME_WINDOW_SLOTS as usize + 1,
            "{}",
            slots.len()
        );
        // The last 10 s hold about half the outcomes (slots expire up to 100 ms early).
        let stats = b.stats(Duration::from_micros(99_999 * 200));
        assert!((49_000..=50_000).contains(&stats.requests), "{stats:?}");
        assert!((stats.error_rate() - 0.25).abs() < 0.01, "{stats:?}");
    }

    #[test]
    fn open_moves_to_half_open_exactly_at_the_reset_timeout() {
        // (poll at, expected state after the poll)
        let table = [
            (secs(1), Open),
            (ms(29_999), Open),
            (secs(30), HalfOpen),
            (secs(45), HalfOpen),
        ];
        for (at, want) in table {
            let mut b = opened(BreakerSettings::default());
            assert_eq!(b.open_until(), Some(secs(30)));
            let t = b.poll(at);
            assert_eq!(b.state(), want, "poll at {at:?}");
            if want == HalfOpen {
                let t = t.expect("a transition");
                assert_eq!((t.from, t.to, t.at), (Open, HalfOpen, at));
                assert_eq!(t.reason, TransitionReason::ResetTimeout);
                assert_eq!(b.since(), at);
                assert_eq!(
                    b.gate(),
                    GateState::HalfOpen {
                        trials_per_interval: 3,
                        interval: secs(1)
                    }
                );
            } else {
                assert_eq!(t, None);
                assert_eq!(b.gate(), GateState::Open);
            }
        }
    }

    #[test]
    fn poll_does_nothing_when_closed_or_half_open() {
        let mut b = Breaker::new(BreakerSettings::default(), Duration::ZERO);
        assert_eq!(b.poll(secs(1000)), None);
        let mut b = opened(BreakerSettings::default());
        assert!(b.poll(secs(30)).is_some());
        assert_eq!(b.poll(secs(1000)), None);
        assert_eq!(b.state(), HalfOpen);
    }

    #[test]
    fn outcomes_while_open_are_ignored_but_shown() {
        let mut b = opened(BreakerSettings::default());
        for (i, o) in [S, S, S, F, F, F, F, F, F].into_iter().enumerate() {
            assert_eq!(b.record(secs(i as u64), o), None);
        }
        assert_eq!(b.state(), Open);
        assert_eq!(b.stats(secs(9)), WindowStats::default());
        assert_eq!(b.last_outcome(), Some((secs(8), F)));
        assert_eq!(b.opens(), 1);
    }

    #[test]
    fn half_open_admits_only_the_trial_budget_per_interval() {
        let mut b = opened(BreakerSettings::default());
        b.poll(secs(30));
        // (asked at, admitted?) — 3 per 1 s interval, counted from entering half-open.
        let table = [
            (secs(30), true),
            (secs(30), true),
            (ms(30_500), true),
            (ms(30_999), false),
            (secs(31), true),
            (secs(31), true),
            (secs(31), true),
            (secs(31), false),
            (secs(35), true),
        ];
        for (i, (at, want)) in table.into_iter().enumerate() {
            assert_eq!(b.try_admit_trial(at), want, "request {i} at {at:?}");
        }
        // Closed admits everything, open nothing.
        let mut closed = Breaker::new(BreakerSettings::default(), Duration::ZERO);
        assert!((0..100).all(|_| closed.try_admit_trial(Duration::ZERO)));
        let mut open = opened(BreakerSettings::default());
        assert!(!open.try_admit_trial(secs(1)));
    }

    #[test]
    fn half_open_closes_after_success_threshold_and_reopens_on_failure() {
        // (success_threshold, trial outcomes, expected state, expected last reason)
        let table: [(u32, &[Outcome], BreakerState, TransitionReason); 7] = [
            (2, &[S], HalfOpen, TransitionReason::ResetTimeout),
            (2, &[S, S], Closed, TransitionReason::TrialSucceeded),
            (3, &[S, S], HalfOpen, TransitionReason::ResetTimeout),
            (3, &[S, S, S], Closed, TransitionReason::TrialSucceeded),
            (1, &[S], Closed, TransitionReason::TrialSucceeded),
            (2, &[F], Open, TransitionReason::TrialFailed),
            (3, &[S, S, F], Open, TransitionReason::TrialFailed),
        ];
        for (threshold, trials, want, reason) in table {
            let settings = BreakerSettings {
                success_threshold: threshold,
                ..BreakerSettings::default()
            };
            let mut b = opened(settings);
            b.poll(secs(30));
            feed(&mut b, secs(30), trials);
            assert_eq!(b.state(), want, "threshold {threshold}, trials {trials:?}");
            assert_eq!(b.last_transition().map(|t| t.reason), Some(reason));
            if want == Closed {
                assert_eq!(b.consecutive_opens(), 0);
                assert_eq!(b.stats(secs(100)), WindowStats::default());
                assert_eq!(b.gate(), GateState::Closed);
            }
            if want == Open {
                assert_eq!(b.reset_timeout(), secs(60), "second consecutive open");
            }
        }
    }

    #[test]
    fn backoff_grows_over_consecutive_opens() {
        let exp = |factor, cap| Backoff::Exponential { factor, cap };
        // (backoff, base, reset timeouts of opens 1, 2, 3, …)
        let table: [(Backoff, Duration, &[u64]); 5] = [
            (
                Backoff::Immediate,
                secs(30),
                &[30_000, 30_000, 30_000, 30_000],
            ),
            (
                Backoff::Linear,
                secs(30),
                &[30_000, 60_000, 90_000, 120_000],
            ),
            (
                exp(2.0, secs(300)),
                secs(30),
                &[30_000, 60_000, 120_000, 240_000, 300_000, 300_000],
            ),
            (
                exp(1.5, secs(100)),
                secs(30),
                &[30_000, 45_000, 67_500, 100_000],
            ),
            (exp(1.0, secs(100)), secs(15), &[15_000, 15_000, 15_000]),
        ];
        for (backoff, base, want) in table {
            let settings = BreakerSettings {
                backoff,
                reset_timeout: base,
                ..BreakerSettings::default()
            };
            // Through the state machine: open, half-open on time, fail the trial, repeat.
            let mut b = opened(settings);
            let mut opened_at = Duration::ZERO;
            for (n, want_ms) in want.iter().enumerate() {
                let want = ms(*want_ms);
                assert_eq!(b.reset_timeout(), want, "{backoff:?} open {}", n + 1);
                assert_eq!(b.open_until(), Some(opened_at + want));
                assert_eq!(b.consecutive_opens(), n as u32 + 1);
                assert_eq!(b.poll(opened_at + want - ms(1)), None);
                assert!(b.poll(opened_at + want).is_some());
                opened_at += want;
                let t = b.record(opened_at, F).expect("trial failure reopens");
                assert_eq!(t.reason, TransitionReason::TrialFailed);
                assert_eq!(t.reset_timeout, Some(b.reset_timeout()));
            }
            // Directly, from the same table.
            for (n, want_ms) in want.iter().enumerate() {
                assert_eq!(backoff.timeout(base, n as u32 + 1), ms(*want_ms));
            }
        }
    }

    #[test]
    fn backoff_never_panics_at_the_extremes() {
        let base = secs(30);
        // (backoff, opens, expected)
        let table = [
            (Backoff::Immediate, 0, base),
            (Backoff::Linear, 0, base),
            (Backoff::Linear, u32::MAX, secs(30 * u64::from(u32::MAX))),
            (
                Backoff::Exponential {
                    factor: 2.0,
                    cap: secs(300),
                },
                u32::MAX,
                secs(300),
            ),
            (
                Backoff::Exponential {
                    factor: f64::NAN,
                    cap: secs(300),
                },
                3,
                secs(300),
            ),
            (
                Backoff::Exponential {
                    factor: 0.5,
                    cap: secs(300),
                },
                3,
                base,
            ),
            (
                Backoff::Exponential {
                    factor: -3.0,
                    cap: secs(300),
                },
                2,
                secs(300),
            ),
            (
                Backoff::Exponential {
                    factor: 2.0,
                    cap: secs(10),
                },
                1,
                secs(10),
            ),
        ];
        for (backoff, opens, want) in table {
            assert_eq!(backoff.timeout(base, opens), want, "{backoff:?} × {opens}");
        }
    }

    #[test]
    fn the_transition_carries_the_reset_timeout_of_the_open() {
        let mut b = opened(BreakerSettings::default());
        assert_eq!(
            b.last_transition().and_then(|t| t.reset_timeout),
            Some(secs(30))
        );
        b.poll(secs(30));
        let t = b.record(secs(31), F).expect("reopen");
        assert_eq!(t.reset_timeout, Some(secs(60)));
        assert_eq!(
            t.to_string(),
            "half_open → open: a trial failed (half-open in 60s)"
        );
    }

    #[test]
    fn closing_resets_the_backoff() {
        let settings = BreakerSettings {
            backoff: Backoff::Linear,
            ..BreakerSettings::default()
        };
        let mut b = opened(settings);
        b.poll(secs(30));
        b.record(secs(30), F); // second open: 60 s
        assert_eq!((b.reset_timeout(), b.consecutive_opens()), (secs(60), 2));
        b.poll(secs(90));
        b.record(secs(91), S);
        assert_eq!(b.consecutive_opens(), 2, "not closed yet");
        assert_eq!(
            b.reset_timeout(),
            secs(90),
            "the next open would be the third"
        );
        b.record(secs(92), S);
        assert_eq!(b.state(), Closed);
        assert_eq!((b.consecutive_opens(), b.reset_timeout()), (0, secs(30)));
        // Trip again: back to the base.
        let t = feed(&mut b, secs(100), &[F; 5]);
        assert_eq!(t[0].reset_timeout, Some(secs(30)));
        assert_eq!(b.open_until(), Some(secs(104) + secs(30)));
        assert_eq!(b.opens(), 3);
    }

    #[test]
    fn force_open_holds_until_reset() {
        // (state before, expected `from`, opens counted by the force)
        let table = [(Closed, 1), (Open, 0), (HalfOpen, 1)];
        for (before, opens_added) in table {
            let mut b = Breaker::new(BreakerSettings::default(), Duration::ZERO);
            if before != Closed {
                feed(&mut b, Duration::ZERO, &[F; 5]);
            }
            if before == HalfOpen {
                b.poll(secs(100));
            }
            assert_eq!(b.state(), before);
            let opens = b.opens();
            let since = b.since();
            let t = b.force_open(secs(200));
            assert_eq!((t.from, t.to), (before, Open));
            assert_eq!(
                (t.reason, t.reset_timeout),
                (TransitionReason::ForcedOpen, None)
            );
            assert_eq!(b.opens(), opens + opens_added);
            if before == Open {
                assert_eq!(b.since(), since, "still the same open");
            } else {
                assert_eq!(b.since(), secs(200));
            }
            assert!(b.is_forced());
            assert_eq!(b.open_until(), None);
            // Holds: no half-open on time, outcomes ignored, no trials.
            for at in [secs(230), secs(10_000), Duration::MAX] {
                assert_eq!(b.poll(at), None);
                assert_eq!(b.record(at, S), None);
                assert!(!b.try_admit_trial(at));
                assert_eq!((b.state(), b.gate()), (Open, GateState::Open));
            }
            let t = b.reset(Duration::MAX);
            assert_eq!(
                (t.from, t.to, t.reason),
                (Open, Closed, TransitionReason::ManualReset)
            );
            assert!(!b.is_forced());
            assert_eq!(b.gate(), GateState::Closed);
        }
    }

    #[test]
    fn forcing_keeps_the_backoff_step() {
        let mut b = opened(BreakerSettings::default());
        b.poll(secs(30));
        b.record(secs(30), F);
        assert_eq!(b.consecutive_opens(), 2);
        b.force_open(secs(40));
        assert_eq!(b.consecutive_opens(), 2);
        assert_eq!(
            b.reset_timeout(),
            secs(120),
            "what the next automatic open would get"
        );
    }

    #[test]
    fn reset_clears_windows_and_backoff_from_every_state() {
        // (state before reset, expected `from`)
        for before in [Closed, Open, HalfOpen] {
            let settings = BreakerSettings {
                min_requests: 100,
                ..BreakerSettings::default()
            };
            let mut b = Breaker::new(settings, Duration::ZERO);
            feed(&mut b, Duration::ZERO, &[F, F, S, F, F, F, F, F]); // opens at the 8th
            if before == HalfOpen {
                b.poll(secs(100));
                b.record(secs(100), F); // second open
                b.poll(secs(200));
                b.record(secs(200), S);
            }
            if before == Closed {
                b.reset(secs(10));
                feed(&mut b, secs(10), &[F, F, S, F, F]);
                assert_eq!(b.stats(secs(15)).requests, 5);
            }
            assert_eq!(b.state(), before);
            let t = b.reset(secs(300));
            assert_eq!(
                (t.from, t.to, t.reason),
                (before, Closed, TransitionReason::ManualReset)
            );
            assert_eq!(b.state(), Closed);
            assert_eq!(b.stats(secs(300)), WindowStats::default());
            assert_eq!(b.consecutive_failures(), 0);
            assert_eq!(b.half_open_successes(), 0);
            assert_eq!(b.consecutive_opens(), 0);
            assert_eq!(b.reset_timeout(), secs(30));
            // A streak has to start over: four failures are not enough.
            feed(&mut b, secs(300), &[F, F, F, F]);
            assert_eq!(b.state(), Closed, "reset from {before:?}");
            b.record(secs(310), F);
            assert_eq!(b.state(), Open);
            assert_eq!(b.reset_timeout(), secs(30));
        }
    }

    #[test]
    fn counters_and_time_in_state() {
        let mut b = Breaker::new(BreakerSettings::default(), secs(10));
        feed(&mut b, secs(10), &[F; 5]); // open at 14
        assert_eq!((b.state(), b.since()), (Open, secs(14)));
        assert_eq!(b.time_in_state(secs(20)), secs(6));
        b.poll(secs(44)); // half-open
        b.record(secs(45), S);
        b.record(secs(46), S); // closed
        b.force_open(secs(50));
        b.reset(secs(60));
        b.reset(secs(61)); // an operator action on record, state unchanged
        assert_eq!(b.transitions(), 6);
        assert_eq!(b.opens(), 2);
        assert_eq!(b.since(), secs(60), "a no-op reset keeps the time in state");
        assert_eq!(b.time_in_state(secs(70)), secs(10));
        assert_eq!(b.time_in_state(secs(0)), Duration::ZERO);
    }

    #[test]
    fn time_going_backwards_is_held_at_the_latest_seen() {
        let mut b = Breaker::new(BreakerSettings::default(), secs(100));
        feed(&mut b, secs(100), &[F; 5]); // open at 104, until 134
        assert_eq!(b.poll(secs(50)), None);
        assert_eq!(b.record(secs(1), S), None);
        assert_eq!(b.last_outcome(), Some((secs(104), S)));
        let t = b.poll(secs(134)).expect("half-open");
        assert_eq!(t.at, secs(134));
        assert!(b.try_admit_trial(secs(0)));
    }

    #[test]
    fn snapshot_reports_everything() {
        let mut b = Breaker::new(BreakerSettings::default(), Duration::ZERO);
        feed(&mut b, Duration::ZERO, &[S, F, F]);
        let s = b.snapshot(secs(12));
        assert_eq!(s.state, Closed);
        assert_eq!((s.window_requests, s.window_failures), (3, 2));
        assert!((s.error_rate_ratio - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(s.last_outcome, Some(F));
        assert_eq!(s.last_outcome_age_seconds, Some(10.0));
        assert_eq!(s.time_in_state_seconds, 12.0);
        assert_eq!(s.half_open_in_seconds, None);
        assert_eq!(s.last_reason, None);

        feed(&mut b, secs(3), &[F, F, F]);
        let s = b.snapshot(secs(15));
        assert_eq!(s.state, Open);
        assert_eq!(s.half_open_in_seconds, Some(20.0));
        assert_eq!(s.reset_timeout_seconds, 30.0);
        assert_eq!(
            (s.opens_total, s.transitions_total, s.consecutive_opens),
            (1, 1, 1)
        );
        assert_eq!(
            s.last_reason,
            Some(TransitionReason::ConsecutiveFailures { failures: 5 })
        );
        let json = serde_json::to_value(&s).expect("serializes");
        assert_eq!(json["state"], "open");
        assert_eq!(json["last_reason"]["consecutive_failures"]["failures"], 5);
    }

    #[test]
    fn reconfigure_keeps_state_and_reshapes_the_window() {
        let mut b = Breaker::new(rate_only(), Duration::ZERO);
        feed(&mut b, Duration::ZERO, &[S, F, S, F]);
        // Same kind, shorter: outcomes kept.
        b.reconfigure(BreakerSettings {
            window: Window::Time(secs(10)),
            ..rate_only()
        });
        assert_eq!(b.stats(secs(4)).requests, 4);
        // Time → count: dropped.
        b.reconfigure(BreakerSettings {
            window: Window::Count(3),
            ..rate_only()
        });
        assert_eq!(b.stats(secs(4)).requests, 0);
        feed(&mut b, secs(10), &[F, S, S]);
        // Smaller count: newest kept.
        b.reconfigure(BreakerSettings {
            window: Window::Count(2),
            min_requests: 2,
            ..rate_only()
        });
        assert_eq!(
            b.stats(secs(20)),
            WindowStats {
                requests: 2,
                failures: 0
            }
        );
        assert_eq!(b.record(secs(20), F).map(|t| t.to), Some(Open));
        // While open: the deadline of this open stays; the half-open budget follows at once.
        let until = b.open_until();
        b.reconfigure(BreakerSettings {
            reset_timeout: secs(5),
            half_open_trials: 7,
            ..rate_only()
        });
        assert_eq!(b.open_until(), until);
        b.poll(until.expect("open"));
        assert_eq!(
            b.gate(),
            GateState::HalfOpen {
                trials_per_interval: 7,
                interval: secs(1)
            }
        );
    }

    #[test]
    fn group_presets_override_the_defaults() {
        // (group, expected error_threshold, reset_timeout)
        let table = [
            ("critical", Some((0.7, secs(15)))),
            ("non_critical", Some((0.5, secs(30)))),
            ("batch", None),
            ("", None),
        ];
        for (group, want) in table {
            let got = BreakerSettings::for_group(group);
            match want {
                Some((threshold, timeout)) => {
                    let s = got.expect("a preset");
                    assert_eq!((s.error_threshold, s.reset_timeout), (threshold, timeout));
                    // Everything else is the default.
                    let rest = BreakerSettings {
                        error_threshold: 0.5,
                        reset_timeout: secs(30),
                        ..s
                    };
                    assert_eq!(rest, BreakerSettings::default());
                    assert_eq!(s.validate(), Ok(()));
                }
                None => assert_eq!(got, None, "{group}"),
            }
        }
        assert!(
            GROUP_PRESETS
                .iter()
                .all(|g| BreakerSettings::for_group(g).is_some())
        );
    }

    #[test]
    fn resolve_layers_defaults_preset_and_overrides() {
        let defaults = BreakerSettings {
            min_requests: 20,
            error_threshold: 0.3,
            ..BreakerSettings::default()
        };
        let overrides = BreakerOverrides {
            reset_timeout: Some(secs(5)),
            backoff: Some(Backoff::Linear),
            ..BreakerOverrides::default()
        };
        // (group, overrides, expected threshold, reset timeout, min_requests, backoff)
        let table = [
            ("critical", None, 0.7, secs(15), 20, defaults.backoff),
            (
                "critical",
                Some(&overrides),
                0.7,
                secs(5),
                20,
                Backoff::Linear,
            ),
            ("batch", None, 0.3, secs(30), 20, defaults.backoff),
            ("batch", Some(&overrides), 0.3, secs(5), 20, Backoff::Linear),
            ("non_critical", None, 0.5, secs(30), 20, defaults.backoff),
        ];
        for (group, o, threshold, timeout, min, backoff) in table {
            let s = defaults.resolve(group, o);
            assert_eq!(
                (
                    s.error_threshold,
                    s.reset_timeout,
                    s.min_requests,
                    s.backoff
                ),
                (threshold, timeout, min, backoff),
                "{group} {o:?}"
            );
        }
    }

    #[test]
    fn validate_names_the_key_at_fault() {
        fn with(change: impl FnOnce(&mut BreakerSettings)) -> BreakerSettings {
            let mut s = BreakerSettings::default();
            change(&mut s);
            s
        }
        let exp = |factor, cap| Backoff::Exponential { factor, cap };
        // (settings, expected key, message fragment)
        let table = [
            (
                with(|s| s.error_threshold = 0.0),
                "error_threshold",
                "must be in (0, 1], got 0",
            ),
            (
                with(|s| s.error_threshold = 1.5),
                "error_threshold",
                "must be in (0, 1], got 1.5",
            ),
            (
                with(|s| s.error_threshold = -0.1),
                "error_threshold",
                "(0, 1]",
            ),
            (
                with(|s| s.error_threshold = f64::NAN),
                "error_threshold",
                "(0, 1]",
            ),
            (with(|s| s.min_requests = 0), "min_requests", "at least 1"),
            (
                with(|s| s.window = Window::Count(0)),
                "window",
                "1 to 10000",
            ),
            (
                with(|s| s.window = Window::Count(10_001)),
                "window",
                "1 to 10000",
            ),
            (
                with(|s| s.window = Window::Count(5)),
                "min_requests",
                "exceeds the count window of 5",
            ),
            (
                with(|s| s.window = Window::Time(ms(999))),
                "window",
                "1s to 3600s, got 0.999s",
            ),
            (
                with(|s| s.window = Window::Time(secs(3601))),
                "window",
                "1s to 3600s",
            ),
            (
                with(|s| s.reset_timeout = Duration::ZERO),
                "reset_timeout",
                "more than 0",
            ),
            (
                with(|s| (s.reset_timeout, s.backoff) = (secs(86_401), Backoff::Linear)),
                "reset_timeout",
                "at most 86400s",
            ),
            (
                with(|s| s.backoff = exp(0.5, secs(300))),
                "backoff_factor",
                "at least 1, got 0.5",
            ),
            (
                with(|s| s.backoff = exp(f64::INFINITY, secs(300))),
                "backoff_factor",
                "at least 1",
            ),
            (
                with(|s| s.backoff = exp(2.0, secs(10))),
                "backoff_cap",
                "between reset_timeout (30s)",
            ),
            (
                with(|s| s.backoff = exp(2.0, secs(86_401))),
                "backoff_cap",
                "86400s",
            ),
            (
                with(|s| s.half_open_trials = 0),
                "half_open_trials",
                "at least 1",
            ),
            (
                with(|s| s.half_open_interval = Duration::ZERO),
                "half_open_interval",
                "more than 0",
            ),
            (
                with(|s| s.half_open_interval = secs(3601)),
                "half_open_interval",
                "at most 3600s",
            ),
            (
                with(|s| s.success_threshold = 0),
                "success_threshold",
                "at least 1",
            ),
        ];
        for (settings, key, fragment) in table {
            let errors = settings.validate().expect_err(key);
            assert_eq!(errors.len(), 1, "{key}: {errors:?}");
            assert_eq!(errors[0].key, key);
            assert!(
                errors[0].message.contains(fragment),
                "{key}: {}",
                errors[0].message
            );
            assert!(errors[0].to_string().starts_with(&format!("{key}: ")));
        }
        // Valid edges.
        let ok = [
            with(|s| s.error_threshold = 1.0),
            with(|s| s.window = Window::Count(10)),
            with(|s| s.window = Window::Time(secs(1))),
            with(|s| s.window = Window::Time(secs(3600))),
            with(|s| s.consecutive_failures = 0),
            with(|s| s.backoff = exp(1.0, secs(30))),
            with(|s| s.backoff = Backoff::Immediate),
        ];
        for s in ok {
            assert_eq!(s.validate(), Ok(()), "{s:?}");
        }
        // Every problem at once, in a stable order.
        let bad = with(|s| (s.error_threshold, s.min_requests, s.success_threshold) = (2.0, 0, 0));
        let keys: Vec<_> = bad
            .validate()
            .expect_err("invalid")
            .iter()
            .map(|e| e.key.clone())
            .collect();
        assert_eq!(
            keys,
            ["error_threshold", "min_requests", "success_threshold"]
        );
    }

    #[test]
    fn names_and_serde_shapes() {
        for (state, name) in [(Closed, "closed"), (Open, "open"), (HalfOpen, "half_open")] {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(serde_json::to_value(state).expect("json"), name);
            let back: BreakerState = serde_json::from_value(name.into()).expect("json");
            assert_eq!(back, state);
        }
        assert_eq!(
            BreakerState::ALL.map(BreakerState::as_str),
            ["closed", "open", "half_open"]
        );
        assert_eq!((S.as_str(), F.as_str()), ("success", "failure"));
        let gates = [
            (GateState::Closed, Gate::Closed),
            (GateState::Open, Gate::Open),
            (
                GateState::HalfOpen {
                    trials_per_interval: 3,
                    interval: secs(1),
                },
                Gate::HalfOpen,
            ),
        ];
        for (state, gate) in gates {
            assert_eq!(state.kernel_gate(), gate);
        }
        let reasons = [
            (
                TransitionReason::ErrorRate {
                    rate: 0.6,
                    requests: 10,
                },
                "error_rate",
                "error rate 60% over 10 requests",
            ),
            (
                TransitionReason::ConsecutiveFailures { failures: 5 },
                "consecutive_failures",
                "5 consecutive failures",
            ),
            (
                TransitionReason::ResetTimeout,
                "reset_timeout",
                "reset timeout elapsed",
            ),
            (
                TransitionReason::TrialSucceeded,
                "trial_succeeded",
                "trials succeeded",
            ),
            (
                TransitionReason::TrialFailed,
                "trial_failed",
                "a trial failed",
            ),
            (TransitionReason::ForcedOpen, "forced_open", "forced open"),
            (
                TransitionReason::ManualReset,
                "manual_reset",
                "manual reset",
            ),
        ];
        for (reason, name, text) in reasons {
            assert_eq!((reason.as_str(), reason.to_string().as_str()), (name, text));
        }
        assert_eq!(
            [
                Backoff::Immediate,
                Backoff::Linear,
                BreakerSettings::default().backoff
            ]
            .map(|b| b.as_str()),
            ["immediate", "linear", "exponential"]
        );
    }

    #[test]
    fn settings_deserialize_strictly() {
        let s: BreakerSettings = toml::from_str(
            "error_threshold = 0.7\nwindow = { count = 20 }\nbackoff = \"linear\"\n",
        )
        .expect("parses");
        assert_eq!(
            s,
            BreakerSettings {
                error_threshold: 0.7,
                window: Window::Count(20),
                backoff: Backoff::Linear,
                ..BreakerSettings::default()
            }
        );
        let s: BreakerSettings = toml::from_str(
            "backoff = { exponential = { factor = 3.0, cap = { secs = 600, nanos = 0 } } }\n",
        )
        .expect("parses");
        assert_eq!(
            s.backoff,
            Backoff::Exponential {
                factor: 3.0,
                cap: secs(600)
            }
        );
        let o: BreakerOverrides =
            toml::from_str("reset_timeout = { secs = 15, nanos = 0 }\n").expect("parses");
        assert_eq!(o.apply(&BreakerSettings::default()).reset_timeout, secs(15));
        for text in [
            "error_treshold = 0.5\n",
            "backoff = \"fibonacci\"\n",
            "window = { requests = 20 }\n",
        ] {
            assert!(toml::from_str::<BreakerSettings>(text).is_err(), "{text}");
            assert!(toml::from_str::<BreakerOverrides>(text).is_err(), "{text}");
        }
    }
}
