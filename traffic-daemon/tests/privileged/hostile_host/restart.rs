//! Cases: see the table in main.rs.
//!
//! Issue 12 item 5: a restart over pins that no longer match. On the main of 2026-12-04 a
//! changed `max_sources` (aya refuses the pinned bucket map of another size) or pins of
//! another ABI made trafficd exit at start; with `on_exit = "detach"` the node was then
//! unfiltered. Now the bucket map is resized with its buckets carried over, and pins of
//! another ABI are replaced by fresh maps: the daemon always starts and enforces.

use std::time::Duration;

use aya::maps::{Array, Map, MapData};
use traffic_common::{GlobalConfig, map_names};

use super::links::Rig;

/// Under both exit policies: a source that spent its burst is still limited right after a
/// restart that changed `max_sources` (its bucket was migrated, not refilled).
pub fn a_changed_max_sources_keeps_a_saturated_sources_bucket() {
    for on_exit in ["detach", "keep"] {
        let rig = Rig::new(&format!("resize-{on_exit}"), "127.0.0.1:19196");
        rig.write_config(&format!("max_sources = 4096\non_exit = \"{on_exit}\""), "");
        let mut d = rig.start();
        assert_eq!(rig.burst(1, 40), 20, "{on_exit}: premium burst before");
        let status = d.terminate(Duration::from_secs(10)).unwrap();
        assert!(status.success(), "{status}:\n{}", d.log_text());

        rig.write_config(&format!("max_sources = 8192\non_exit = \"{on_exit}\""), "");
        let mut d = rig.start();
        let buckets = MapData::from_pin(rig.pins.0.join(map_names::BUCKETS)).unwrap();
        assert_eq!(buckets.info().unwrap().max_entries(), 8192, "{on_exit}");
        assert!(
            in_debt_and_remembered(&rig.pins.0, buckets) > 0,
            "{on_exit}: no migrated source in debt"
        );
        assert_eq!(
            rig.burst(1, 10),
            0,
            "{on_exit}: the saturated source got a fresh burst after the resize:\n{}",
            d.log_text()
        );
        assert_eq!(
            rig.burst(2, 40),
            20,
            "{on_exit}: a new source after the resize"
        );
        let log = d.log_text();
        assert!(log.contains("buckets migrated"), "{on_exit}: {log}");
        assert!(rig.topo.xdp_attached(&rig.iface()).unwrap(), "{on_exit}");
        let status = d.terminate(Duration::from_secs(10)).unwrap();
        assert!(status.success(), "{status}:\n{}", d.log_text());
    }
}

/// Sources of the table `buckets` whose bucket is not full again yet; panics unless the
/// debt sketch (pinned in `pins`) remembers each of them: the migration writes the debt of
/// every source in debt there first, so one a smaller table leaves out comes back in debt
/// (a packet never writes the sketch; only an eviction does).
fn in_debt_and_remembered(pins: &std::path::Path, buckets: MapData) -> usize {
    let table = traffic_daemon::dataplane::table::BucketTable::new(buckets).unwrap();
    let debt: Array<_, u64> = Array::try_from(Map::Array(
        MapData::from_pin(pins.join(map_names::DEBT)).unwrap(),
    ))
    .unwrap();
    let now = traffic_daemon::dataplane::monotonic_ns();
    let mut n = 0;
    for (k, b) in table.entries() {
        let full_at = traffic_common::bucket_full_at(&b);
        if full_at <= now {
            continue;
        }
        let (lo, hi) = traffic_common::addr_words(&k.addr);
        let remembered = debt
            .get(&traffic_common::debt_slot(lo, hi, k.class), 0)
            .unwrap();
        assert!(
            remembered >= full_at,
            "{k:?}: in debt until {full_at}, the sketch remembers {remembered}"
        );
        n += 1;
    }
    n
}

/// Pins written by another ABI (an upgrade or a downgrade of trafficd) are replaced by
/// fresh maps: the daemon starts, says so at warning, and enforces. (Replaces the old
/// `service::pinned_maps_from_another_abi_are_refused`.)
pub fn a_restart_over_pins_of_another_abi_starts_fresh_and_enforces() {
    let rig = Rig::new("abi", "127.0.0.1:19197");
    rig.write_config("", "");
    let mut d = rig.start();
    assert_eq!(rig.burst(1, 40), 20, "premium burst before");
    let status = d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}:\n{}", d.log_text());
    // Pretend another trafficd wrote the pins.
    let md = MapData::from_pin(rig.pins.0.join(map_names::CONFIG)).unwrap();
    let mut cfg: Array<_, GlobalConfig> = Array::try_from(Map::Array(md)).unwrap();
    let mut g = cfg.get(&0, 0).unwrap();
    g.abi_version = 99;
    cfg.set(0, &g, 0).unwrap();
    drop(cfg);

    let mut d = rig.start();
    let log = d.log_text();
    assert!(
        log.contains("another ABI") && log.contains("WARN"),
        "no warning about the replaced pins: {log}"
    );
    assert!(rig.topo.xdp_attached(&rig.iface()).unwrap());
    assert!(
        !rig.status().adopted_pinned_state,
        "fresh maps, nothing adopted"
    );
    // Fresh buckets (the old layout is not reinterpreted), and the limits hold.
    assert_eq!(rig.burst(1, 40), 20, "premium burst after the fresh start");
    assert_eq!(rig.burst(1, 10), 0, "premium limit after the fresh start");
    let md = MapData::from_pin(rig.pins.0.join(map_names::CONFIG)).unwrap();
    let cfg: Array<_, GlobalConfig> = Array::try_from(Map::Array(md)).unwrap();
    assert_eq!(
        cfg.get(&0, 0).unwrap().abi_version,
        traffic_common::ABI_VERSION
    );
    let status = d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}:\n{}", d.log_text());
}

/// An upgrade over pins of the build before the credit (issue 16): its classification cache
/// had 40-byte entries, this build's have 88. The start replaces that map alone and adopts
/// the rest, so a source that spent its burst stays limited across the upgrade.
pub fn a_restart_over_the_earlier_classification_cache_keeps_the_buckets() {
    let rig = Rig::new("cache-layout", "127.0.0.1:19199");
    rig.write_config("", "");
    let mut d = rig.start();
    assert_eq!(rig.burst(1, 40), 20, "premium burst before");
    let status = d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}:\n{}", d.log_text());
    // The earlier build's cache, as it would have pinned it.
    let pin = rig.pins.0.join(map_names::CLASS_CACHE);
    std::fs::remove_file(&pin).unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&pin)
        .args(["type", "percpu_array", "key", "4", "value", "40", "entries"])
        .arg(traffic_common::CLASS_CACHE_ENTRIES.to_string())
        .args(["name", map_names::CLASS_CACHE])
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool map create: {out:?}");

    let mut d = rig.start();
    let log = d.log_text();
    assert!(
        log.contains("another shape") && log.contains(map_names::CLASS_CACHE),
        "no warning about the replaced cache: {log}"
    );
    assert!(rig.status().adopted_pinned_state, "the other pins adopted");
    let cache = MapData::from_pin(&pin).unwrap();
    assert_eq!(
        cache.info().unwrap().value_size() as usize,
        size_of::<traffic_common::ClassCacheEntry>()
    );
    assert_eq!(
        rig.burst(1, 10),
        0,
        "the saturated source got a fresh burst across the upgrade:\n{log}"
    );
    assert_eq!(rig.burst(2, 40), 20, "a new source after the upgrade");
    let status = d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}:\n{}", d.log_text());
}
