//! [`Shared`]: the engine behind one lock, as the event loop and the servers hold it.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use super::{listener, notify};
use crate::{api::Applied, engine::Core, ops::OpError};

/// State shared by the event loop and the admin API.
pub struct Shared {
    pub core: Mutex<Core>,
    pub config_path: PathBuf,
    /// What the metrics and admin listeners did with their connections (outside the lock:
    /// the listeners count without waiting for the engine).
    pub listeners: Listeners,
    /// Bans to share with the fleet (`None`: no `[fleet]`), to [`super::fleet`]'s task.
    pub fleet: Option<tokio::sync::mpsc::Sender<super::fleet::Outgoing>>,
}

/// The listeners' connection statistics, by listener.
#[derive(Debug, Default)]
pub struct Listeners {
    pub metrics: Arc<listener::Stats>,
    pub admin: Arc<listener::Stats>,
}

impl Shared {
    /// Lock the core; a panic in another holder does not make the daemon unusable.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reload from the config path (SIGHUP and the admin API share this).
    pub fn reload(&self) -> Result<Applied, OpError> {
        notify::reloading();
        // Read and validate the files before taking the lock: the control loop and the
        // admin API keep running while a large include directory is parsed.
        let loaded = crate::config::Config::load(&self.config_path);
        let r = self.lock().reload_with(&self.config_path, loaded);
        notify::ready();
        r
    }
}
