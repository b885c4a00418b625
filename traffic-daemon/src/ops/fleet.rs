//! The engine's side of the fleet: the outbox of automatic bans of `scope = "fleet"`
//! classes waiting for the fleet task (`serve::fleet`), bounded, and what the budget sync
//! reads (the marked sources of fleet classes) and writes (debits) — see
//! [`crate::fleet::budget`].

use traffic_common::{Bucket, BucketKey, CLASS_FLEET};

use super::OpError;
use crate::{
    bans::Ban,
    engine::Core,
    fleet::budget::{Debit, FleetClass, debit_request},
};

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

    /// The classes of `scope = "fleet"`, with the limits in force.
    pub fn fleet_classes(&self) -> Vec<FleetClass> {
        self.config
            .classes
            .iter()
            .enumerate()
            .filter(|(_, c)| c.fleet)
            .map(|(i, c)| {
                let slot = self.slots.slot_of_index(&self.config, i);
                FleetClass {
                    slot,
                    name: c.name.clone(),
                    limits: self
                        .applied
                        .classes
                        .get(slot as usize)
                        .copied()
                        .unwrap_or_default(),
                    aggregate_v4: c.aggregate_v4,
                    aggregate_v6: c.aggregate_v6,
                }
            })
            .collect()
    }

    /// The sources the program marked busy in fleet classes, with their buckets (at most
    /// `max`), and the program's clock when they were read.
    pub fn fleet_hot(&mut self, max: usize) -> Result<(Vec<(BucketKey, Bucket)>, u64), OpError> {
        let hot = self.dp.fleet_hot(max)?;
        Ok((hot, self.dp.now_ns()))
    }

    /// Drop the marks of sources the budget sync no longer follows.
    pub fn forget_fleet_hot(&mut self, keys: &[BucketKey]) {
        if let Err(e) = self.dp.forget_fleet_hot(keys) {
            tracing::warn!(error = %e, "fleet: cannot drop marks of idle sources");
        }
    }

    /// Charge other nodes' use to the local buckets of fleet classes (a bucket this node
    /// does not hold is not made). Returns how many buckets were charged.
    pub fn fleet_debit(&mut self, debits: &[Debit]) -> usize {
        let mut charged = 0;
        for d in debits {
            let Some(cc) = self.applied.classes.get(d.key.class as usize) else {
                continue;
            };
            if cc.flags & CLASS_FLEET == 0 {
                continue;
            }
            let Some(req) = debit_request(d, cc) else {
                continue;
            };
            match self.dp.rescale_bucket(&req) {
                Ok(crate::dataplane::Rescaled::Done) => charged += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "fleet: cannot charge a bucket");
                    break;
                }
            }
        }
        charged
    }
}
