//! [`SettingError`]: a setting out of range, found by the settings type that owns the rule
//! (`ThrottleSettings`, `BreakerSettings`, `PressureSettings`). A leaf module so that both
//! policy and pressure can report one and the config loader can place it in the file,
//! without the config, policy and pressure modules importing each other in a circle.

/// A setting out of range, with its key (e.g. `throttle.thresholds.cpu`, or for breaker
/// settings the key relative to the breaker's table, `backoff_cap`) so the config loader
/// can point at the line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

impl SettingError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
