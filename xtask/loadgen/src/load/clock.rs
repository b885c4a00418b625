//! The run's clock: time since the start of the load, shared by the workers and the sampler.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// A run's clock: profile time, with the pauses (asked for, and scheduled by the profile)
/// taken out.
#[derive(Debug)]
pub struct RunClock {
    start: Instant,
    manual: Mutex<(Option<Instant>, Duration)>,
    scheduled: Vec<(Duration, Duration)>,
}

impl RunClock {
    pub(super) fn new(scheduled: &[(Duration, Duration)]) -> Self {
        let mut s = scheduled.to_vec();
        s.sort();
        Self {
            start: Instant::now(),
            manual: Mutex::new((None, Duration::ZERO)),
            scheduled: s,
        }
    }

    /// (profile time, paused now).
    pub fn now(&self) -> (Duration, bool) {
        let m = self.manual.lock().unwrap_or_else(|e| e.into_inner());
        let wall = self.start.elapsed();
        let paused_for = m.1 + m.0.map_or(Duration::ZERO, |p| p.elapsed());
        let manual_paused = m.0.is_some();
        drop(m);
        let mut active = wall.saturating_sub(paused_for);
        for &(at, len) in &self.scheduled {
            if active <= at {
                break;
            }
            if active < at + len {
                return (at, true);
            }
            active -= len;
        }
        (active, manual_paused)
    }

    pub(super) fn pause(&self) {
        let mut m = self.manual.lock().unwrap_or_else(|e| e.into_inner());
        if m.0.is_none() {
            m.0 = Some(Instant::now());
        }
    }

    pub(super) fn resume(&self) {
        let mut m = self.manual.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = m.0.take() {
            m.1 += p.elapsed();
        }
    }
}
