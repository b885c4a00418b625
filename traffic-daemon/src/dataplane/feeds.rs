//! The feed tries ([`traffic_common::map_names::FEED_V4`] and `FEED_V6`) behind a handle
//! of their own: the feed task writes a generation (up to millions of entries) without the
//! engine's lock, which it takes only for the flip (see [`crate::feeds::generation`]).

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
};

use aya::maps::{LpmTrie, Map, MapData, lpm_trie::Key as LpmKey};
use traffic_common::{FeedValue, map_names};

use super::DataplaneError;
use crate::feeds::parse::Key;

/// One trie, by family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

/// Read and write the feed tries. Keys are left-aligned ([`Key`]).
pub trait FeedTries: Send {
    /// Every entry of one trie, sorted.
    fn read(&self, family: Family) -> Result<Vec<(Key, [u16; 2])>, DataplaneError>;
    /// Insert or overwrite entries.
    fn update(&mut self, family: Family, entries: &[(Key, [u16; 2])])
    -> Result<(), DataplaneError>;
    /// Delete entries (missing ones are not an error).
    fn delete(&mut self, family: Family, keys: &[Key]) -> Result<(), DataplaneError>;
}

/// Both tries in memory: (family, key) → verdicts per generation.
pub type TrieEntries = BTreeMap<(Family, Key), [u16; 2]>;

/// In memory, for the fake dataplane; clones share the tries.
#[derive(Clone, Debug, Default)]
pub struct MemoryTries {
    pub tries: Arc<Mutex<TrieEntries>>,
}

impl FeedTries for MemoryTries {
    fn read(&self, family: Family) -> Result<Vec<(Key, [u16; 2])>, DataplaneError> {
        let t = self.tries.lock().unwrap_or_else(|e| e.into_inner());
        Ok(t.iter()
            .filter(|((f, _), _)| *f == family)
            .map(|((_, k), v)| (*k, *v))
            .collect())
    }

    fn update(
        &mut self,
        family: Family,
        entries: &[(Key, [u16; 2])],
    ) -> Result<(), DataplaneError> {
        let mut t = self.tries.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in entries {
            t.insert((family, *k), *v);
        }
        Ok(())
    }

    fn delete(&mut self, family: Family, keys: &[Key]) -> Result<(), DataplaneError> {
        let mut t = self.tries.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            t.remove(&(family, *k));
        }
        Ok(())
    }
}

/// The pinned tries, opened from the pin directory (a second file descriptor on the maps
/// the program uses).
pub struct PinnedTries {
    v4: LpmTrie<MapData, [u8; 4], FeedValue>,
    v6: LpmTrie<MapData, [u8; 16], FeedValue>,
}

fn map_err(
    map: &'static str,
    op: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, op, source }
}

impl PinnedTries {
    pub fn open(pin_dir: &Path) -> Result<Self, DataplaneError> {
        let open = |name: &'static str| {
            let data = MapData::from_pin(pin_dir.join(name)).map_err(map_err(name, "open pin"))?;
            Ok::<_, DataplaneError>(Map::LpmTrie(data))
        };
        Ok(Self {
            v4: LpmTrie::try_from(open(map_names::FEED_V4)?)
                .map_err(map_err(map_names::FEED_V4, "open"))?,
            v6: LpmTrie::try_from(open(map_names::FEED_V6)?)
                .map_err(map_err(map_names::FEED_V6, "open"))?,
        })
    }
}

fn v4_key((addr, len): Key) -> LpmKey<[u8; 4]> {
    LpmKey::new(u32::from(len), ((addr >> 96) as u32).to_be_bytes())
}

fn v6_key((addr, len): Key) -> LpmKey<[u8; 16]> {
    LpmKey::new(u32::from(len), addr.to_be_bytes())
}

impl FeedTries for PinnedTries {
    fn read(&self, family: Family) -> Result<Vec<(Key, [u16; 2])>, DataplaneError> {
        let mut out = Vec::new();
        match family {
            Family::V4 => {
                for item in self.v4.iter() {
                    let (k, v) = item.map_err(map_err(map_names::FEED_V4, "iterate"))?;
                    let addr = u128::from(u32::from_be_bytes(k.data())) << 96;
                    out.push(((addr, k.prefix_len() as u8), v.verdict));
                }
            }
            Family::V6 => {
                for item in self.v6.iter() {
                    let (k, v) = item.map_err(map_err(map_names::FEED_V6, "iterate"))?;
                    out.push((
                        (u128::from_be_bytes(k.data()), k.prefix_len() as u8),
                        v.verdict,
                    ));
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn update(
        &mut self,
        family: Family,
        entries: &[(Key, [u16; 2])],
    ) -> Result<(), DataplaneError> {
        for (k, v) in entries {
            let value = FeedValue { verdict: *v };
            match family {
                Family::V4 => self
                    .v4
                    .insert(&v4_key(*k), &value, 0)
                    .map_err(map_err(map_names::FEED_V4, "update"))?,
                Family::V6 => self
                    .v6
                    .insert(&v6_key(*k), &value, 0)
                    .map_err(map_err(map_names::FEED_V6, "update"))?,
            }
        }
        Ok(())
    }

    fn delete(&mut self, family: Family, keys: &[Key]) -> Result<(), DataplaneError> {
        for k in keys {
            let r = match family {
                Family::V4 => self.v4.remove(&v4_key(*k)),
                Family::V6 => self.v6.remove(&v6_key(*k)),
            };
            match r {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => {
                    let name = match family {
                        Family::V4 => map_names::FEED_V4,
                        Family::V6 => map_names::FEED_V6,
                    };
                    return Err(map_err(name, "delete")(e));
                }
            }
        }
        Ok(())
    }
}
