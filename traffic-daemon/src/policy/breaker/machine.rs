//! [`Breaker`]: the state machine (closed, open, half-open), its backoff and trial budget.

use std::time::Duration;

use super::{
    BreakerSettings, BreakerSnapshot, BreakerState, GateState, Outcome, Transition,
    TransitionReason, WindowStats, window::Outcomes,
};

/// The circuit breaker of one upstream port.
#[derive(Clone, Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    since: Duration,
    /// Latest `now` seen; earlier ones are raised to it.
    clock: Duration,
    forced: bool,
    pub(super) window: Outcomes,
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
