//! Walking the bucket map off the engine's lock, within a deadline and a bounded number of
//! entries.
//!
//! A full map holds `max_sources` entries (up to 16M), two syscalls each: the engine hands
//! out a [`BucketWalker`] (a duplicate of the map's descriptor) under its lock and the walk
//! runs on a blocking thread. The kernel's "next key" restarts from the first key when the
//! current one was evicted meanwhile, so under LRU churn a walk can revisit entries and
//! never end: it stops after as many entries as the map holds, or at its deadline, and then
//! says it is partial. aya (0.16) has no batched lookup (`BPF_MAP_LOOKUP_BATCH`), so the
//! walk is next-key + lookup.

use std::time::Instant;

use aya::maps::{HashMap, Map, MapData, MapError};
use traffic_common::{Bucket, BucketKey};

use super::DataplaneError;

/// A handle on the bucket map, independent of the engine (it may move to another thread).
pub enum BucketWalker {
    /// The kernel map, through its own descriptor.
    Kernel {
        map: HashMap<MapData, BucketKey, Bucket>,
        capacity: u64,
    },
    /// A copy of the entries (the in-memory dataplane of tests).
    Snapshot(Vec<(BucketKey, Bucket)>),
}

/// How a walk ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkEnd {
    /// Entries visited (a revisited entry counts again; never more than the capacity).
    pub visited: u64,
    /// The walk stopped at its deadline or its entry bound, not at the end of the map.
    pub partial: bool,
}

impl BucketWalker {
    /// A walker on the kernel map `map` of `capacity` entries, through a duplicate of its
    /// descriptor.
    pub(super) fn kernel(map: &MapData, capacity: u32) -> Result<Self, DataplaneError> {
        use std::os::fd::AsFd as _;
        let fd = map
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| DataplaneError::Other(format!("duplicate the bucket map fd: {e}")))?;
        let open = |source| DataplaneError::Map {
            map: traffic_common::map_names::BUCKETS,
            op: "open",
            source,
        };
        let data = MapData::from_fd(fd).map_err(open)?;
        let map = HashMap::try_from(Map::LruHashMap(data)).map_err(open)?;
        Ok(Self::Kernel {
            map,
            capacity: u64::from(capacity),
        })
    }

    /// Visit entries until the end of the map, `deadline`, or as many entries as the map
    /// holds, whichever comes first.
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
        mut visit: impl FnMut(&BucketKey, &Bucket),
    ) -> Result<WalkEnd, DataplaneError> {
        let mut end = WalkEnd::default();
        match self {
            Self::Kernel { map, capacity } => {
                let bound = max.min(*capacity);
                for item in map.iter() {
                    if end.visited >= bound || Instant::now() >= deadline {
                        end.partial = true;
                        break;
                    }
                    match item {
                        Ok((k, v)) => {
                            visit(&k, &v);
                            end.visited += 1;
                        }
                        // Evicted between "next key" and "lookup": not an error.
                        Err(MapError::KeyNotFound) => {}
                        Err(source) => {
                            return Err(DataplaneError::Map {
                                map: traffic_common::map_names::BUCKETS,
                                op: "iterate",
                                source,
                            });
                        }
                    }
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
