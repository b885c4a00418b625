//! Reloading the config file: validate completely, then apply, or keep the running config.

use std::path::Path;

use tracing::{error, info};

use super::OpError;
use crate::{
    api::Applied,
    config::{Config, ConfigError},
    engine::{Core, unix_now},
};

impl Core {
    /// Re-read the config file and apply it; on any error the running config stays.
    pub fn reload_from(&mut self, path: &Path) -> Result<Applied, OpError> {
        let loaded = Config::load(path);
        self.reload_with(path, loaded)
    }

    /// Apply a config read from `path` (its files read and validated by the caller, before
    /// taking the state lock: an include directory can hold up to 64 MiB); on any error the
    /// running config stays.
    pub fn reload_with(
        &mut self,
        path: &Path,
        loaded: Result<Config, ConfigError>,
    ) -> Result<Applied, OpError> {
        self.reload.last_attempt_unix = Some(unix_now());
        let result = loaded
            .map_err(OpError::from)
            .and_then(|c| Ok(self.apply_config(c)?));
        match &result {
            Ok(a) => {
                self.reload.succeeded += 1;
                self.reload.last_success_unix = Some(unix_now());
                self.reload.last_error = None;
                info!(writes = a.writes, path = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                self.reload.failed += 1;
                self.reload.last_error = Some(e.to_string());
                error!(error = %e, "reload failed; keeping the running configuration");
            }
        }
        result
    }
}
