//! Pins left by another build or another `max_sources`: a restart migrates what it can
//! into fresh maps and always ends up enforcing with the new ones, instead of refusing to
//! start (which, with `on_exit = "detach"`, would leave the node unfiltered).
//!
//! - Pins written by another ABI (the version in the pinned config differs, or the config
//!   itself has another layout) are all replaced: the layouts' meaning may differ, so
//!   nothing is reinterpreted and the daemon starts fresh.
//! - Same ABI, but a map whose shape differs (in practice the bucket map after a
//!   `max_sources` change): that map alone is replaced; buckets are copied into the new
//!   map, so sources keep their tokens; a source in debt that a smaller map cannot take
//!   leaves its debt in the debt sketch, as an eviction by the program does. Every other
//!   pin is adopted as usual.
//!
//! Link pins (`link_<iface>`, `on_exit = "keep"`) are left alone: the next attach takes
//! them over atomically with the new program, so enforcement never lapses.

use std::path::Path;

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, MapError},
};
use traffic_common::{
    ABI_VERSION, GlobalConfig, SEEN_WORDS, SeenWord, addr_words, bucket_full_at, debt_slot,
    map_names,
};

use super::{DataplaneError, table::BucketTable};

/// A pinned map that did not fit this build, taken off its pin but still open.
pub(super) struct MovedAside {
    pub name: String,
    pub old: MapData,
}

/// The ABI version recorded in the pinned config map, `None` if it cannot be read with
/// this build's layout (a layout change of the config is an ABI change too).
pub(super) fn pinned_abi(pin_dir: &Path) -> Option<u32> {
    let md = MapData::from_pin(pin_dir.join(map_names::CONFIG)).ok()?;
    let config: Array<_, GlobalConfig> = Array::try_from(Map::Array(md)).ok()?;
    config.get(&0, 0).ok().map(|g| g.abi_version)
}

/// Decide from the pinned config whether the pins are of this ABI; if not, remove every
/// map pin so the load creates fresh maps. Returns whether pins remain to be adopted.
pub(super) fn check_abi(pin_dir: &Path) -> Result<bool, DataplaneError> {
    if !pin_dir.join(map_names::CONFIG).exists() {
        return Ok(false);
    }
    match pinned_abi(pin_dir) {
        // 0: a config map created but never written (a start that failed early).
        Some(v) if v == ABI_VERSION || v == 0 => Ok(true),
        found => {
            let removed = remove_map_pins(pin_dir)?;
            tracing::warn!(
                pin_dir = %pin_dir.display(),
                found = found.map_or_else(|| "unreadable".to_owned(), |v| v.to_string()),
                expected = ABI_VERSION,
                removed,
                "pinned maps were written by another ABI: starting with fresh maps \
                 (buckets, counters and statistics dropped; limits, rules and gates are \
                 written from the config)"
            );
            Ok(false)
        }
    }
}

/// Remove the pin of every map of ours in `pin_dir`; link pins stay.
fn remove_map_pins(pin_dir: &Path) -> Result<usize, DataplaneError> {
    let mut removed = 0;
    for name in map_names::ALL {
        match std::fs::remove_file(pin_dir.join(name)) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unpin_failed(pin_dir, name, &e)),
        }
    }
    Ok(removed)
}

fn unpin_failed(pin_dir: &Path, name: &str, e: &std::io::Error) -> DataplaneError {
    DataplaneError::PinnedMismatch {
        pin_dir: pin_dir.to_path_buf(),
        expected: ABI_VERSION,
        detail: format!("cannot replace the pin of {name}: {e}"),
    }
}

/// If `error` is aya's refusal of a pinned map of another shape, take that map off its
/// pin (keeping it open) so the next load creates it afresh. `None`: another error.
pub(super) fn move_aside(
    pin_dir: &Path,
    error: &aya::EbpfError,
) -> Option<Result<MovedAside, DataplaneError>> {
    let aya::EbpfError::MapError(MapError::IncompatiblePinnedMap {
        name,
        property,
        expected,
        actual,
    }) = error
    else {
        return None;
    };
    let path = pin_dir.join(name);
    Some((|| {
        let old = MapData::from_pin(&path).map_err(|e| DataplaneError::PinnedMismatch {
            pin_dir: pin_dir.to_path_buf(),
            expected: ABI_VERSION,
            detail: format!("cannot open the pin of {name}: {e}"),
        })?;
        std::fs::remove_file(&path).map_err(|e| unpin_failed(pin_dir, name, &e))?;
        tracing::warn!(
            map = %name,
            property,
            pinned = actual,
            configured = expected,
            "pinned map has another shape (e.g. max_sources changed): replacing it"
        );
        Ok(MovedAside {
            name: name.clone(),
            old,
        })
    })())
}

/// Carry the maps moved aside into the freshly created ones: buckets are copied (marked in
/// the seen bitmap, so the program finds them); anything else is dropped, with a warning.
/// Never fails: what cannot be copied is reported and left behind.
pub(super) fn carry_over(ebpf: &mut Ebpf, moved: Vec<MovedAside>) {
    for MovedAside { name, old } in moved {
        if name != map_names::BUCKETS {
            tracing::warn!(map = %name, "its pinned contents were dropped");
            continue;
        }
        match copy_buckets(ebpf, old) {
            Ok((copied, failed)) => tracing::warn!(
                copied,
                failed,
                "buckets migrated into the resized bucket map: sources keep their tokens"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "buckets could not be migrated: every source starts with a full burst"
            ),
        }
    }
}

/// Copy every bucket of `old` into the program's source table. Returns (copied, failed);
/// when the new table is smaller, a full set keeps the sources copied last, and the debt
/// of every source in debt is in the sketch first, so one left out comes back in debt.
fn copy_buckets(ebpf: &mut Ebpf, old: MapData) -> Result<(u64, u64), String> {
    use std::os::fd::AsFd as _;
    let old = BucketTable::new(old).map_err(|e| format!("old table: {e}"))?;
    remember_debts(ebpf, &old)?;
    let new = {
        let map = ebpf
            .map(map_names::BUCKETS)
            .ok_or("the object has no bucket map")?;
        let Map::Array(data) = map else {
            return Err("the bucket map is not an array".to_owned());
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("duplicate the table's fd: {e}"))?;
        let data = MapData::from_fd(fd).map_err(|e| format!("new table: {e}"))?;
        BucketTable::new(data).map_err(|e| format!("new table: {e}"))?
    };
    let mut words = vec![0u64; SEEN_WORDS as usize];
    let (mut copied, mut failed) = (0u64, 0u64);
    old.for_each(|k, v| {
        if new.put(k, v) {
            let (word, bit) = traffic_common::seen_bit(k);
            words[word as usize] |= bit;
            copied += 1;
        } else {
            failed += 1;
        }
        true
    });
    let map = ebpf
        .map_mut(map_names::SEEN)
        .ok_or("the object has no seen map")?;
    let mut seen: Array<_, SeenWord> =
        Array::try_from(map).map_err(|e| format!("seen map: {e}"))?;
    for (i, bits) in (0u32..).zip(words) {
        if bits == 0 {
            continue;
        }
        // Both generations: a copied source counts as seen until two agings pass it by.
        let mut cur = seen.get(&i, 0).map_err(|e| format!("seen map: {e}"))?;
        if cur.generation.iter().any(|g| g & bits != bits) {
            for g in &mut cur.generation {
                *g |= bits;
            }
            seen.set(i, &cur, 0).map_err(|e| format!("seen map: {e}"))?;
        }
    }
    Ok((copied, failed))
}

/// Raise the debt sketch's slot of every source of `table` whose bucket is not full again
/// yet to when it is (the program's eviction does the same for the source it evicts).
fn remember_debts(ebpf: &mut Ebpf, table: &BucketTable) -> Result<(), String> {
    let now = super::monotonic_ns();
    let mut owed = std::collections::BTreeMap::<u32, u64>::new();
    table.for_each(|k, b| {
        let full_at = bucket_full_at(b);
        if full_at > now {
            let (lo, hi) = addr_words(&k.addr);
            let slot = owed.entry(debt_slot(lo, hi, k.class)).or_default();
            *slot = (*slot).max(full_at);
        }
        true
    });
    let map = ebpf
        .map_mut(map_names::DEBT)
        .ok_or("the object has no debt map")?;
    let mut debt: Array<_, u64> = Array::try_from(map).map_err(|e| format!("debt map: {e}"))?;
    for (slot, full_at) in owed {
        let cur = debt.get(&slot, 0).map_err(|e| format!("debt map: {e}"))?;
        if cur < full_at {
            debt.set(slot, &full_at, 0)
                .map_err(|e| format!("debt map: {e}"))?;
        }
    }
    Ok(())
}
