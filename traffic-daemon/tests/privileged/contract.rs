//! Contract: the built eBPF object's maps and program match `traffic-common`.
//!
//! Parses the embedded object with `aya-obj` (no syscalls, no root), so a layout, size or
//! name that drifted between the XDP program and the contract crate fails here before
//! anything is loaded. Needs the real object: builds with `AYA_BUILD_SKIP=1` embed an empty
//! stub, which the binary's gate (main.rs) refuses loudly before any case runs.

use std::mem::size_of;

use aya_obj::{
    Object, ProgramSection,
    generated::bpf_map_type::{
        self, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE, BPF_MAP_TYPE_LRU_HASH,
        BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_RINGBUF,
    },
    maps::PinningType,
};
use traffic_common::{
    Addr, BUCKETS_ENTRIES, BucketKey, CLASS_CACHE_ENTRIES, CLASS_STATE_ENTRIES, CLASSES_ENTRIES,
    CONFIG_ENTRIES, COUNTERS_ENTRIES, ClassCacheEntry, ClassConfig, ClassState, ClassStats,
    Counter, DEBT_ENTRIES, EgressStats, FLEET_HOT_ENTRIES, FLOWS_ENTRIES, FailSource, FlowKey,
    FlowSeen, GlobalConfig, LOCAL_ENTRIES, PORT_STATS_ENTRIES, PORTS_ENTRIES, PROGRAM_NAME,
    PortKey, PortRule, PortStats, RULES_ENTRIES, Rule, RuleAddr, SEEN_MAP_FLAGS, SEEN_WORDS,
    SLOT_NAMES_ENTRIES, SeenWord, SlotName, TABLE_MAP_FLAGS, TableSlot, WATCH_RING_BYTES,
    WATCH_STATE_ENTRIES, WatchEvent, WatchState, map_names,
};
use traffic_common::{FEED_V4_ENTRIES, FEED_V6_ENTRIES, FeedValue};

/// What the contract says one map must look like.
struct Expected {
    map_type: bpf_map_type,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
}

/// Array indices are u32.
const INDEX: usize = size_of::<u32>();
/// LPM trie keys: a u32 prefix length followed by the address.
const LPM_KEY: usize = size_of::<u32>() + size_of::<RuleAddr>();

fn expected(name: &str) -> Expected {
    let (map_type, key_size, value_size, max_entries) = match name {
        map_names::CONFIG => (
            BPF_MAP_TYPE_ARRAY,
            INDEX,
            size_of::<GlobalConfig>(),
            CONFIG_ENTRIES,
        ),
        map_names::RULES => (
            BPF_MAP_TYPE_LPM_TRIE,
            LPM_KEY,
            size_of::<Rule>(),
            RULES_ENTRIES,
        ),
        map_names::CLASSES => (
            BPF_MAP_TYPE_ARRAY,
            INDEX,
            size_of::<ClassConfig>(),
            CLASSES_ENTRIES,
        ),
        // Shared, never per-CPU: every CPU must charge the same bucket.
        map_names::BUCKETS => (
            BPF_MAP_TYPE_ARRAY,
            INDEX,
            size_of::<TableSlot>(),
            BUCKETS_ENTRIES,
        ),
        // Per CPU: each CPU's own batches, no shared line on a refusal.
        map_names::DROP_TALLY => (
            BPF_MAP_TYPE_PERCPU_ARRAY,
            INDEX,
            size_of::<traffic_common::DropTally>(),
            traffic_common::DROP_TALLY_ENTRIES,
        ),
        map_names::CLASS_STATE => (
            BPF_MAP_TYPE_ARRAY,
            INDEX,
            size_of::<ClassState>(),
            CLASS_STATE_ENTRIES,
        ),
        map_names::CLASS_STATS => (
            BPF_MAP_TYPE_PERCPU_ARRAY,
            INDEX,
            size_of::<ClassStats>(),
            CLASS_STATE_ENTRIES,
        ),
        map_names::PORTS => (
            BPF_MAP_TYPE_HASH,
            size_of::<PortKey>(),
            size_of::<PortRule>(),
            PORTS_ENTRIES,
        ),
        map_names::COUNTERS => (
            BPF_MAP_TYPE_PERCPU_ARRAY,
            INDEX,
            size_of::<Counter>(),
            COUNTERS_ENTRIES,
        ),
        map_names::SLOT_NAMES => (
            BPF_MAP_TYPE_ARRAY,
            INDEX,
            size_of::<SlotName>(),
            SLOT_NAMES_ENTRIES,
        ),
        map_names::PORT_STATS => (
            BPF_MAP_TYPE_PERCPU_ARRAY,
            INDEX,
            size_of::<PortStats>(),
            PORT_STATS_ENTRIES,
        ),
        map_names::EGRESS => (
            BPF_MAP_TYPE_PERCPU_ARRAY,
            INDEX,
            size_of::<EgressStats>(),
            PORT_STATS_ENTRIES,
        ),
        // Per CPU on purpose: a cache of this CPU's classifications, no shared state.
        map_names::CLASS_CACHE => (
            BPF_MAP_TYPE_PERCPU_ARRAY,
            INDEX,
            size_of::<ClassCacheEntry>(),
            CLASS_CACHE_ENTRIES,
        ),
        // Per CPU, one entry: the leaf rule this CPU matched last.
        map_names::CLASS_PREFIX => (
            BPF_MAP_TYPE_PERCPU_ARRAY,
            INDEX,
            size_of::<traffic_common::ClassPrefix>(),
            1,
        ),
        // Per CPU, one entry: the clock as this CPU read it at its last jiffy.
        map_names::CLOCK => (
            BPF_MAP_TYPE_PERCPU_ARRAY,
            INDEX,
            size_of::<traffic_common::ClockCopy>(),
            1,
        ),
        // Shared: a bit one CPU's insert sets must be seen by every CPU.
        map_names::SEEN => (BPF_MAP_TYPE_ARRAY, INDEX, size_of::<SeenWord>(), SEEN_WORDS),
        // Shared: a debt one CPU records must be seen by the CPU that re-creates the bucket.
        map_names::DEBT => (BPF_MAP_TYPE_ARRAY, INDEX, size_of::<u64>(), DEBT_ENTRIES),
        // Shared: a mark one CPU makes is read by the daemon; an LRU, so a flood of busy
        // sources evicts the oldest marks and never fills it.
        map_names::FLEET_HOT => (
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<BucketKey>(),
            size_of::<u64>(),
            FLEET_HOT_ENTRIES,
        ),
        // Shared: a SYN and its reply may run on different CPUs.
        map_names::FLOWS => (
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<FlowKey>(),
            size_of::<FlowSeen>(),
            FLOWS_ENTRIES,
        ),
        map_names::FAIL_SOURCE => (
            BPF_MAP_TYPE_ARRAY,
            INDEX,
            size_of::<FailSource>(),
            PORT_STATS_ENTRIES,
        ),
        map_names::RST_BUDGET => (
            BPF_MAP_TYPE_ARRAY,
            INDEX,
            size_of::<u64>(),
            PORT_STATS_ENTRIES,
        ),
        map_names::LOCAL => (
            BPF_MAP_TYPE_HASH,
            size_of::<Addr>(),
            size_of::<u32>(),
            LOCAL_ENTRIES,
        ),
        // Read on a classification miss only; written by the daemon.
        map_names::BANS => (
            BPF_MAP_TYPE_LPM_TRIE,
            LPM_KEY,
            size_of::<traffic_common::BanEntry>(),
            traffic_common::BANS_ENTRIES,
        ),
        map_names::FEED_V4 => (
            BPF_MAP_TYPE_LPM_TRIE,
            size_of::<u32>() + 4,
            size_of::<FeedValue>(),
            FEED_V4_ENTRIES,
        ),
        map_names::FEED_V6 => (
            BPF_MAP_TYPE_LPM_TRIE,
            size_of::<u32>() + 16,
            size_of::<FeedValue>(),
            FEED_V6_ENTRIES,
        ),
        // A ring's max_entries is its size in bytes; it has no key, and its value is the
        // event type in the object (aya creates the map with value size 0).
        map_names::WATCH => (
            BPF_MAP_TYPE_RINGBUF,
            0,
            size_of::<WatchEvent>(),
            WATCH_RING_BYTES,
        ),
        // Per CPU: each CPU's own budget, no shared state on the hot path.
        map_names::WATCH_STATE => (
            BPF_MAP_TYPE_PERCPU_ARRAY,
            INDEX,
            size_of::<WatchState>(),
            WATCH_STATE_ENTRIES,
        ),
        other => panic!("map_names::ALL lists {other}, which this test does not know: add it"),
    };
    Expected {
        map_type,
        key_size,
        value_size,
        max_entries,
    }
}

fn parse_object() -> Object {
    Object::parse(traffic_daemon::EBPF_OBJECT)
        .unwrap_or_else(|e| panic!("the embedded eBPF object does not parse: {e}"))
}

pub fn maps_match_the_contract() {
    let obj = parse_object();
    let mut problems = Vec::new();
    for name in map_names::ALL {
        let want = expected(name);
        let Some(map) = obj.maps.get(name) else {
            problems.push(format!("{name}: missing from the object"));
            continue;
        };
        let mut check = |what: &str, got: u64, want: u64| {
            if got != want {
                problems.push(format!("{name}: {what} is {got}, the contract says {want}"));
            }
        };
        check("map type", u64::from(map.map_type()), want.map_type as u64);
        check("key size", u64::from(map.key_size()), want.key_size as u64);
        check(
            "value size",
            u64::from(map.value_size()),
            want.value_size as u64,
        );
        check(
            "max_entries",
            u64::from(map.max_entries()),
            u64::from(want.max_entries),
        );
        // The daemon ages the bitmap, and walks and edits the table, through a memory
        // mapping.
        if name == map_names::SEEN {
            check(
                "map flags",
                u64::from(map.map_flags()),
                u64::from(SEEN_MAP_FLAGS),
            );
        }
        if name == map_names::BUCKETS {
            check(
                "map flags",
                u64::from(map.map_flags()),
                u64::from(TABLE_MAP_FLAGS),
            );
        }
        // The daemon adopts state across restarts through these pins.
        if map.pinning() != PinningType::ByName {
            problems.push(format!("{name}: not pinned by name ({:?})", map.pinning()));
        }
    }
    assert!(
        problems.is_empty(),
        "object/contract mismatch:\n  {}",
        problems.join("\n  ")
    );
}

pub fn every_map_in_the_object_is_in_the_contract() {
    let obj = parse_object();
    // Data sections (.bss, .rodata, …) become maps too; they are not part of the contract.
    let mut extra: Vec<&str> = obj
        .maps
        .keys()
        .map(String::as_str)
        .filter(|n| !n.starts_with('.') && !map_names::ALL.contains(n))
        .collect();
    extra.sort_unstable();
    assert!(
        extra.is_empty(),
        "maps in the object but not in traffic_common::map_names::ALL: {extra:?}"
    );
}

/// The XDP program, and the never-attached rescale program the daemon test-runs.
pub fn program_is_present_and_xdp() {
    let obj = parse_object();
    for name in [PROGRAM_NAME, traffic_common::RESCALE_PROGRAM_NAME] {
        let program = obj.programs.get(name).unwrap_or_else(|| {
            let mut names: Vec<&String> = obj.programs.keys().collect();
            names.sort_unstable();
            panic!("object has no program {name}; it has {names:?}")
        });
        assert!(
            matches!(program.section, ProgramSection::Xdp { .. }),
            "{name} is not an XDP program: {:?}",
            program.section
        );
    }
}

pub fn egress_program_is_present_and_a_classifier() {
    let obj = parse_object();
    let program = obj
        .programs
        .get(traffic_common::EGRESS_PROGRAM_NAME)
        .expect("object has no egress program");
    assert!(
        matches!(program.section, ProgramSection::SchedClassifier),
        "{} is not a TC classifier: {:?}",
        traffic_common::EGRESS_PROGRAM_NAME,
        program.section
    );
}
