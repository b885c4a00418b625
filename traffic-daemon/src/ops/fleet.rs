//! The fleet's outbox: automatic bans of `scope = "fleet"` classes waiting for the fleet
//! task (`serve::fleet`), bounded.

use crate::{bans::Ban, engine::Core};

impl Core {
    /// Queue an automatic ban of a `scope = "fleet"` class for the fleet task.
    pub(crate) fn share_with_fleet(&mut self, ban: Ban) {
        if self.fleet_outbox.len() >= crate::fleet::MAX_OUTBOX {
            tracing::warn!(prefix = %ban.prefix, "fleet: outbox full; the ban stays local");
            return;
        }
        self.fleet_outbox.push(ban);
    }

    /// Take the queued automatic bans (the fleet task, every 100 ms).
    pub fn take_fleet_outbox(&mut self) -> Vec<Ban> {
        std::mem::take(&mut self.fleet_outbox)
    }
}
