//! Walking the source table off the engine's lock, within a deadline and a bounded number of
//! entries.
//!
//! A full table holds `max_sources` sources (up to 16M): the engine hands out a
//! [`BucketWalker`] (a shared handle on the table's mapping) under its lock and the walk
//! runs on a blocking thread, reading the mapping slot by slot. It stops after `max`
//! entries or at its deadline, and then says it is partial.

use std::{sync::Arc, time::Instant};

use traffic_common::{Bucket, BucketKey};

use super::{DataplaneError, table::BucketTable};

/// Slots read between two looks at the clock.
const CLOCK_EVERY: u64 = 4096;

/// A handle on the source table, independent of the engine (it may move to another thread).
pub enum BucketWalker {
    /// The kernel table, through its mapping.
    Kernel(Arc<BucketTable>),
    /// A copy of the entries (the in-memory dataplane of tests).
    Snapshot(Vec<(BucketKey, Bucket)>),
}

/// How a walk ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkEnd {
    /// Entries visited.
    pub visited: u64,
    /// The walk stopped at its deadline or its entry bound, not at the end of the table.
    pub partial: bool,
}

impl BucketWalker {
    /// Visit entries until the end of the table, or `deadline`, whichever comes first.
    pub fn walk(
        &self,
        deadline: Instant,
        visit: impl FnMut(&BucketKey, &Bucket),
    ) -> Result<WalkEnd, DataplaneError> {
        self.walk_at_most(deadline, u64::MAX, visit)
    }

    /// [`BucketWalker::walk`], stopping after `max` entries too.
    pub fn walk_at_most(
        &self,
        deadline: Instant,
        max: u64,
        visit: impl FnMut(&BucketKey, &Bucket),
    ) -> Result<WalkEnd, DataplaneError> {
        self.walk_with(None, deadline, max, visit)
    }

    /// [`BucketWalker::walk_at_most`] over the table's occupied blocks and a rotating part
    /// of the others while buckets are being created (`created`, the program's count; see
    /// [`BucketTable::for_each_hinted`]): for a walk every second that may see a new source
    /// a few seconds late.
    pub fn walk_hinted(
        &self,
        created: u64,
        deadline: Instant,
        max: u64,
        visit: impl FnMut(&BucketKey, &Bucket),
    ) -> Result<WalkEnd, DataplaneError> {
        self.walk_with(Some(created), deadline, max, visit)
    }

    /// Whether [`BucketWalker::walk_hinted`] with `created` would visit nothing (an idle
    /// node's table); a snapshot is always walked.
    pub fn quiet(&self, created: u64) -> bool {
        match self {
            Self::Kernel(table) => table.is_quiet(created),
            Self::Snapshot(_) => false,
        }
    }

    fn walk_with(
        &self,
        hinted: Option<u64>,
        deadline: Instant,
        max: u64,
        mut visit: impl FnMut(&BucketKey, &Bucket),
    ) -> Result<WalkEnd, DataplaneError> {
        let mut end = WalkEnd::default();
        match self {
            Self::Kernel(table) => {
                let mut looked = 0u64;
                let each = |k: &BucketKey, b: &Bucket| {
                    looked += 1;
                    if end.visited >= max
                        || ((looked == 1 || looked.is_multiple_of(CLOCK_EVERY))
                            && Instant::now() >= deadline)
                    {
                        end.partial = true;
                        return false;
                    }
                    visit(k, b);
                    end.visited += 1;
                    true
                };
                match hinted {
                    Some(created) => table.for_each_hinted(created, each),
                    None => table.for_each(each),
                }
            }
            Self::Snapshot(entries) => {
                for (k, v) in entries {
                    if end.visited >= max || Instant::now() >= deadline {
                        end.partial = true;
                        break;
                    }
                    visit(k, v);
                    end.visited += 1;
                }
            }
        }
        Ok(end)
    }
}
