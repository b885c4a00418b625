//! The baseline behind `trafficctl suggest`: readings handed in by the walk off the lock
//! (`serve::walks::observe_baseline`), suggestions computed under it.

use std::time::Duration;

use super::{OpError, sources::SourcesWalk};
use crate::{
    engine::Core,
    policy::baseline::{
        Sample,
        suggest::{ClassInfo, SuggestReport, SuggestRequest, suggest},
    },
};

/// Sources read per baseline walk: about 2 µs each, so at most ~30 ms of a second.
pub const BASELINE_WALK_MAX: u64 = 16_384;
/// The baseline walk's time bound.
pub const BASELINE_WALK_BUDGET: Duration = Duration::from_millis(100);

/// What the baseline's walk of this second has to do.
pub enum BaselineWalk {
    /// Nothing: the table's blocks were all empty at the last walks and no bucket was
    /// created since (see `BucketTable::is_quiet`). The reading is an empty walk.
    Quiet,
    /// Walk (off the engine's lock).
    Walk(SourcesWalk),
}

impl Core {
    /// A walk for the baseline, or `None` when it is switched off.
    pub fn baseline_walk(&self) -> Result<Option<BaselineWalk>, OpError> {
        if !self.config.baseline.enabled {
            return Ok(None);
        }
        // One per-CPU read a second per configured class (only a configured class creates
        // buckets): while the sum does not change, the walk reads only the table's occupied
        // blocks (an idle node's walk reads nothing, and is not set up). The set of slots
        // read is folded in, so a reload that changes it cannot leave the sum unchanged by
        // chance while a bucket was created.
        let slots: Vec<u32> = (0..self.config.classes.len())
            .map(|i| self.slots.slot_of_index(&self.config, i))
            .collect();
        let slot_set = slots.iter().fold(0u64, |m, s| m | 1u64 << (s % 64));
        let created = self
            .dp
            .class_admitted(&slots)?
            .wrapping_add(slot_set.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if self.dp.bucket_walker()?.quiet(created) {
            return Ok(Some(BaselineWalk::Quiet));
        }
        let mut walk = self.sources_walk()?;
        walk.created = created;
        Ok(Some(BaselineWalk::Walk(walk)))
    }

    /// Take a baseline walk's readings.
    pub fn observe_baseline(&mut self, samples: &[Sample], partial: bool) {
        let now = self.now();
        self.baseline.observe(now, samples, partial);
    }

    /// Limits suggested from what has been observed.
    pub fn suggest(&self, req: &SuggestRequest) -> Result<SuggestReport, OpError> {
        req.validate().map_err(OpError::Invalid)?;
        if let Some(name) = &req.class
            && !self.config.classes.iter().any(|c| &c.name == name)
        {
            return Err(OpError::NotFound(format!("no class named {name:?}")));
        }
        let classes: Vec<_> = self
            .config
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| ClassInfo {
                name: &c.name,
                slot: self.slots.slot_of_index(&self.config, i),
                has_buckets: !c.packets.is_empty() || c.bytes.is_some(),
            })
            .collect();
        Ok(suggest(&self.baseline, &classes, req))
    }
}
