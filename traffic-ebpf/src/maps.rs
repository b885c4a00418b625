//! The only map statics. Names, sizes and layouts come from `traffic-common`; the contract
//! test checks that the identifiers below equal `traffic_common::map_names`.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use traffic_common::{
    Addr, BANS_ENTRIES, BanEntry, FLOWS_ENTRIES, FailSource, FlowKey, FlowSeen, LOCAL_ENTRIES,
};
use traffic_common::{
    BUCKETS_ENTRIES, BucketKey, CLASS_CACHE_ENTRIES, CLASS_STATE_ENTRIES, CLASSES_ENTRIES,
    CONFIG_ENTRIES, COUNTERS_ENTRIES, ClassCacheEntry, ClassConfig, ClassState, ClassStats,
    Counter, DEBT_ENTRIES, EgressStats, FLEET_HOT_ENTRIES, GlobalConfig, PORT_STATS_ENTRIES,
    PORTS_ENTRIES, PortKey, PortRule, PortStats, RULES_ENTRIES, Rule, RuleAddr, SEEN_MAP_FLAGS,
    SEEN_WORDS, SLOT_NAMES_ENTRIES, SeenWord, SlotName,
};
use traffic_common::{
    ClassPrefix, ClockCopy, DROP_TALLY_ENTRIES, DropTally, TABLE_MAP_FLAGS, TableSlot,
};
use traffic_common::{FEED_V4_ENTRIES, FEED_V6_ENTRIES, FeedValue};
use traffic_common::{WATCH_RING_BYTES, WATCH_STATE_ENTRIES, WatchEvent, WatchState};

#[btf_map(pin_by_name)]
pub static TRF_CONFIG: Array<GlobalConfig, { CONFIG_ENTRIES as usize }> = Array::new();

#[btf_map(pin_by_name)]
pub static TRF_RULES: LpmTrie<RuleAddr, Rule, { RULES_ENTRIES as usize }> = LpmTrie::new();

#[btf_map(pin_by_name)]
pub static TRF_CLASSES: Array<ClassConfig, { CLASSES_ENTRIES as usize }> = Array::new();

/// Shared by all CPUs: the source table (see `table`), slots read and written atomically
/// word by word; the daemon maps it.
#[btf_map(pin_by_name)]
pub static TRF_BUCKETS: Array<
    TableSlot,
    { BUCKETS_ENTRIES as usize },
    { TABLE_MAP_FLAGS as usize },
> = Array::new();

#[btf_map(pin_by_name)]
pub static TRF_CLASS_STATE: Array<ClassState, { CLASS_STATE_ENTRIES as usize }> = Array::new();

#[btf_map(pin_by_name)]
pub static TRF_CLASS_STATS: PerCpuArray<ClassStats, { CLASS_STATE_ENTRIES as usize }> =
    PerCpuArray::new();

#[btf_map(pin_by_name)]
pub static TRF_PORTS: HashMap<PortKey, PortRule, { PORTS_ENTRIES as usize }> = HashMap::new();

#[btf_map(pin_by_name)]
pub static TRF_COUNTERS: PerCpuArray<Counter, { COUNTERS_ENTRIES as usize }> = PerCpuArray::new();

/// User space only (class names of slots); kept with the pinned maps.
#[btf_map(pin_by_name)]
pub static TRF_SLOT_NAMES: Array<SlotName, { SLOT_NAMES_ENTRIES as usize }> = Array::new();

#[btf_map(pin_by_name)]
pub static TRF_PORT_STATS: PerCpuArray<PortStats, { PORT_STATS_ENTRIES as usize }> =
    PerCpuArray::new();

#[btf_map(pin_by_name)]
pub static TRF_EGRESS: PerCpuArray<EgressStats, { PORT_STATS_ENTRIES as usize }> =
    PerCpuArray::new();

/// Per CPU: each CPU caches the sources it classifies; entries of another rule generation
/// are ignored, so it is never flushed.
#[btf_map(pin_by_name)]
pub static TRF_CLS_CACHE: PerCpuArray<ClassCacheEntry, { CLASS_CACHE_ENTRIES as usize }> =
    PerCpuArray::new();

/// Per CPU: the leaf rule this CPU matched last (see `classify`); of another rule generation
/// it is ignored.
#[btf_map(pin_by_name)]
pub static TRF_CLS_PREFIX: PerCpuArray<ClassPrefix, 1> = PerCpuArray::new();

/// Per CPU: the coarse clock as this CPU last read it, and the jiffy it did (see `clock`).
#[btf_map(pin_by_name)]
pub static TRF_CLOCK: PerCpuArray<ClockCopy, 1> = PerCpuArray::new();

/// Shared by all CPUs: bits set with an atomic OR, never cleared by the program (the daemon
/// ages it through a memory mapping); pinned with the buckets, so an adopted bucket map
/// keeps its bits.
#[btf_map(pin_by_name)]
pub static TRF_SEEN: Array<SeenWord, { SEEN_WORDS as usize }, { SEEN_MAP_FLAGS as usize }> =
    Array::new();

/// Per CPU: refusals of busy sources, added to their buckets in batches (see `tally`).
#[btf_map(pin_by_name)]
pub static TRF_DROP_TALLY: PerCpuArray<DropTally, { DROP_TALLY_ENTRIES as usize }> =
    PerCpuArray::new();

/// Shared by all CPUs: written when a source in debt is evicted, raised and never lowered
/// (a time in the past is no debt), so it needs no aging (see `debt`).
#[btf_map(pin_by_name)]
pub static TRF_DEBT: Array<u64, { DEBT_ENTRIES as usize }> = Array::new();

/// Shared by all CPUs, written only for `scope = "fleet"` classes (see `fleet`); read by
/// the daemon's budget sync.
#[btf_map(pin_by_name)]
pub static TRF_FLEET_HOT: LruHashMap<BucketKey, u64, { FLEET_HOT_ENTRIES as usize }> =
    LruHashMap::new();

/// Written by the XDP program for attempts to port-rule ports, read (and consumed) by the
/// TC egress program; shared by all CPUs, since a SYN and its reply may run on different
/// ones.
#[btf_map(pin_by_name)]
pub static TRF_FLOWS: LruHashMap<FlowKey, FlowSeen, { FLOWS_ENTRIES as usize }> = LruHashMap::new();

/// Shared by all CPUs (one vote per peer across CPUs); written by TC egress only.
#[btf_map(pin_by_name)]
pub static TRF_FAIL_SRC: Array<FailSource, { PORT_STATS_ENTRIES as usize }> = Array::new();

/// Shared by all CPUs, charged with a compare-and-swap like every GCRA word.
#[btf_map(pin_by_name)]
pub static TRF_RST_BUDGET: Array<u64, { PORT_STATS_ENTRIES as usize }> = Array::new();

/// Written by the daemon only.
#[btf_map(pin_by_name)]
pub static TRF_LOCAL: HashMap<Addr, u32, { LOCAL_ENTRIES as usize }> = HashMap::new();

/// Written by the daemon only; read on a classification miss (see `bans`).
#[btf_map(pin_by_name)]
pub static TRF_BANS: LpmTrie<RuleAddr, BanEntry, { BANS_ENTRIES as usize }> = LpmTrie::new();
/// Blocklist-feed prefixes, IPv4 (see `feeds`); written by the daemon only.
#[btf_map(pin_by_name)]
pub static TRF_FEED_V4: LpmTrie<[u8; 4], FeedValue, { FEED_V4_ENTRIES as usize }> = LpmTrie::new();

/// Blocklist-feed prefixes, IPv6; written by the daemon only.
#[btf_map(pin_by_name)]
pub static TRF_FEED_V6: LpmTrie<[u8; 16], FeedValue, { FEED_V6_ENTRIES as usize }> = LpmTrie::new();
/// Sampled verdict events for `trafficctl watch`; pinned, so a program run through the
/// pins (tests, benchmarks) reaches the daemon's reader.
#[btf_map(pin_by_name)]
pub static TRF_WATCH: RingBuf<WatchEvent, { WATCH_RING_BYTES as usize }> = RingBuf::new();

/// Per CPU: the watch budget's window and counters.
#[btf_map(pin_by_name)]
pub static TRF_WATCH_ST: PerCpuArray<WatchState, { WATCH_STATE_ENTRIES as usize }> =
    PerCpuArray::new();
