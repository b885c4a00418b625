//! `[pressure]` settings and their ranges.

use std::{path::PathBuf, time::Duration};

use serde::Serialize;

use super::{DEFAULT_INTERVAL, DEFAULT_ROOT, MAX_INTERVAL, MIN_INTERVAL, PerResource, Signal};
use crate::setting::SettingError;

/// `[pressure]` settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PressureSettings {
    /// Directory holding `pressure/*`, `stat`, `meminfo` and `diskstats`.
    pub root: PathBuf,
    /// Time between samples.
    pub interval: Duration,
    /// Signal per resource.
    pub signal: PerResource<Signal>,
}

impl Default for PressureSettings {
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_ROOT),
            interval: DEFAULT_INTERVAL,
            signal: PerResource::default(),
        }
    }
}

impl PressureSettings {
    /// Range checks; every error names its key (`pressure.…`).
    pub fn validate(&self) -> Result<(), Vec<SettingError>> {
        let mut errors = Vec::new();
        if self.interval < MIN_INTERVAL || self.interval > MAX_INTERVAL {
            errors.push(SettingError::new(
                "pressure.interval",
                format!(
                    "must be between {}ms and {}s",
                    MIN_INTERVAL.as_millis(),
                    MAX_INTERVAL.as_secs()
                ),
            ));
        }
        if self.root.as_os_str().is_empty() {
            errors.push(SettingError::new("pressure.root", "must not be empty"));
        }
        if self.signal.cpu.uses_full() {
            errors.push(SettingError::new(
                "pressure.signal.cpu",
                format!(
                    "`{}`: the kernel reports no system-wide `full` CPU pressure (always 0); \
                     use a `some` signal",
                    self.signal.cpu
                ),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
