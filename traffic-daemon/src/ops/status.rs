//! `GET /v1/status` and the periodic summary line.

use tracing::{info, warn};

use crate::{
    api::{ClassStatus, StatusReport},
    engine::Core,
};

impl Core {
    /// Status for the CLI.
    pub fn status(&self) -> StatusReport {
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            abi_version: traffic_common::ABI_VERSION,
            pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs(),
            config_path: self.config.source.clone(),
            config_included: self.config.included.clone(),
            mode: self.config.daemon.mode,
            on_exit: self.config.daemon.on_exit,
            adopted_pinned_state: self.dp.adopted(),
            interfaces: self.interfaces.clone(),
            classes: self
                .config
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| ClassStatus {
                    name: c.name.clone(),
                    slot: self.slots.slot_of_index(&self.config, i),
                    mode: self.config.class_mode(i),
                    priority: c.priority,
                    limited: c.is_limited(),
                })
                .collect(),
            rules: self.config.rules.len(),
            reload: self.reload.clone(),
            chaos: self.chaos_status(),
            throttle: Some(self.throttle_status()),
            last_rescale_buckets: self.last_rescale,
            fleet: self.fleet.as_ref().map(crate::fleet::status),
        }
    }

    /// One log line per class with what passed and dropped since start.
    pub fn log_summary(&self) {
        match self.counters() {
            Ok(r) => {
                for c in r.classes {
                    info!(
                        class = %c.class,
                        passed = c.passed.packets,
                        dropped = c.dropped.packets,
                        would_drop = c.would_drop.packets,
                        "summary"
                    );
                }
            }
            Err(e) => warn!(error = %e, "cannot read counters"),
        }
    }
}
