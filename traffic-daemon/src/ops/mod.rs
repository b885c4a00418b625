//! Operations on the engine: what the admin API, the control loop and the reports ask of
//! [`Core`](crate::engine::Core). Each file is an `impl Core` block for one concern. Errors are [`OpError`]s,
//! which say what went wrong, not which HTTP status it is (that mapping is `serve::admin`'s).

mod bans;
mod baseline;
mod chaos;
mod circuits;
mod control;
mod fleet;
mod reload;
pub mod sources;
mod status;
mod watch;

pub use baseline::{BASELINE_WALK_BUDGET, BASELINE_WALK_MAX, BaselineWalk};
pub use control::{CONTROL_TICK, IDLE_CONTROL_TICK, ProbeJob, SocketDemand};

use crate::{config::ConfigError, dataplane::DataplaneError, engine::EngineError};

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The named upstream, class or port does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (out of range, contradictory).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<DataplaneError> for OpError {
    fn from(e: DataplaneError) -> Self {
        Self::Engine(e.into())
    }
}

impl From<ConfigError> for OpError {
    fn from(e: ConfigError) -> Self {
        Self::Engine(e.into())
    }
}
