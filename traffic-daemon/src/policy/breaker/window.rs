//! The sliding window of outcomes: the last *n*, or those of the last *d* in
//! [`super::TIME_WINDOW_SLOTS`] slots.

use std::{collections::VecDeque, time::Duration};

use serde::Serialize;

use super::{MAX_COUNT_WINDOW, Outcome, TIME_WINDOW_SLOTS, Window};

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

/// Slot of a time window: outcomes from `at` to `at + window / TIME_WINDOW_SLOTS`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    at: Duration,
    successes: u64,
    failures: u64,
}

#[derive(Clone, Debug)]
pub(super) enum Outcomes {
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
    pub(super) fn new(window: Window) -> Self {
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
    pub(super) fn reshaped(self, window: Window) -> Self {
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

    pub(super) fn clear(&mut self) {
        match self {
            Outcomes::Count { ring, failures, .. } => {
                ring.clear();
                *failures = 0;
            }
            Outcomes::Time { slots, .. } => slots.clear(),
        }
    }

    pub(super) fn push(&mut self, now: Duration, outcome: Outcome) {
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

    pub(super) fn stats(&self, now: Duration) -> WindowStats {
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
