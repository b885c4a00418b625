//! The real dataplane: the traffic XDP program loaded with aya, maps pinned by name under
//! the pin directory (adopted when already there), attached to interfaces (see the `attach` module).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{SchedClassifier, Xdp},
};
use traffic_common::{
    Addr, BanEntry, Bucket, BucketKey, ClassConfig, ClassStats, Counter, EGRESS_PROGRAM_NAME,
    EgressStats, GlobalConfig, MAX_CLASSES, PROGRAM_NAME, PortKey, PortRule, PortStats,
    RESCALE_PROGRAM_NAME, RescaleRequest, Rule, SlotName, map_names,
};

pub use super::attach::Attachment;
use super::{
    AttachedMode, Dataplane, DataplaneError, Rescaled, chain, monotonic_ns, seen::SeenMap,
};

mod testing;
use crate::{
    config::AttachMode,
    plan::{Desired, Write},
};

/// How to load the program.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Directory (on bpffs) for map and link pins.
    pub pin_dir: PathBuf,
    /// Capacity of the bucket map.
    pub max_sources: u32,
}

/// The loaded program and typed handles on its maps.
pub struct Kernel {
    pub(super) ebpf: Ebpf,
    pub(super) pin_dir: PathBuf,
    config: Array<MapData, GlobalConfig>,
    rules: LpmTrie<MapData, Addr, Rule>,
    classes: Array<MapData, ClassConfig>,
    buckets: std::sync::Arc<super::table::BucketTable>,
    class_stats: PerCpuArray<MapData, ClassStats>,
    counters: PerCpuArray<MapData, Counter>,
    slot_names: Array<MapData, SlotName>,
    ports: HashMap<MapData, PortKey, PortRule>,
    port_stats: PerCpuArray<MapData, PortStats>,
    egress: PerCpuArray<MapData, EgressStats>,
    /// The tracked-source bitmap, memory-mapped (aged by clearing a generation).
    seen: SeenMap,
    /// The debt sketch (a reset source's slot is cleared).
    debt: Array<MapData, u64>,
    /// The ban map (see `crate::bans`).
    bans: LpmTrie<MapData, Addr, BanEntry>,
    /// Marked sources of fleet-scoped classes (see `crate::fleet::budget`).
    fleet_hot: HashMap<MapData, BucketKey, u64>,
    pub(super) attachments: Vec<Attachment>,
    adopted: bool,
    /// How the TC egress program attaches on this kernel.
    pub(super) tc_backend: super::tc::TcBackend,
    /// Keeps the node's addresses in the program's set (the daemon only; see `local`).
    local: Option<super::local::Tracker>,
}

fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, op, source }
}

macro_rules! take_map {
    ($ebpf:expr, $name:expr, $ty:ident) => {{
        let map = $ebpf
            .take_map($name)
            .ok_or_else(|| DataplaneError::Load(format!("object has no map {}", $name)))?;
        $ty::try_from(map).map_err(map_err($name, "open"))?
    }};
}

/// Take an array map out of the object as its data (for a memory mapping).
fn take_array(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, DataplaneError> {
    match ebpf.take_map(name) {
        Some(aya::maps::Map::Array(data)) => Ok(data),
        _ => Err(DataplaneError::Load(format!(
            "object has no array map {name}"
        ))),
    }
}

impl Kernel {
    /// Load the embedded program, creating or adopting the pinned maps.
    pub fn open(opts: &LoadOptions) -> Result<Self, DataplaneError> {
        Self::open_object(crate::EBPF_OBJECT, opts)
    }

    /// Load a given object (tests and benchmarks).
    pub fn open_object(object: &[u8], opts: &LoadOptions) -> Result<Self, DataplaneError> {
        if object.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        std::fs::create_dir_all(&opts.pin_dir).map_err(|source| DataplaneError::PinDir {
            path: opts.pin_dir.clone(),
            source,
        })?;
        // Pins of another ABI are replaced, a map of another shape is moved aside and its
        // contents carried over (see `migrate`): a restart never refuses for that reason.
        let adopted = super::migrate::check_abi(&opts.pin_dir)?;
        let mut moved = Vec::new();
        let slots = traffic_common::table_slots(opts.max_sources);
        let set_mask = traffic_common::table_set_mask(slots);
        let mut ebpf = loop {
            let loaded = EbpfLoader::new()
                .default_map_pin_directory(&opts.pin_dir)
                .map_max_entries(map_names::BUCKETS, slots)
                .override_global(traffic_common::TABLE_SET_MASK_GLOBAL, &set_mask, true)
                .load(object);
            match loaded {
                Ok(ebpf) => break ebpf,
                // Each attempt names one map; there are at most `ALL.len()` of them.
                Err(e) if moved.len() < map_names::ALL.len() => {
                    match super::migrate::move_aside(&opts.pin_dir, &e) {
                        Some(aside) => moved.push(aside?),
                        None => return Err(DataplaneError::Load(chain(&e))),
                    }
                }
                Err(e) => return Err(DataplaneError::Load(chain(&e))),
            }
        };
        super::migrate::carry_over(&mut ebpf, moved);
        let config = take_map!(ebpf, map_names::CONFIG, Array);
        let rules = take_map!(ebpf, map_names::RULES, LpmTrie);
        let classes = take_map!(ebpf, map_names::CLASSES, Array);
        let buckets = std::sync::Arc::new(super::table::BucketTable::new(take_array(
            &mut ebpf,
            map_names::BUCKETS,
        )?)?);
        let class_stats = take_map!(ebpf, map_names::CLASS_STATS, PerCpuArray);
        let counters = take_map!(ebpf, map_names::COUNTERS, PerCpuArray);
        let ports = take_map!(ebpf, map_names::PORTS, HashMap);
        let slot_names = take_map!(ebpf, map_names::SLOT_NAMES, Array);
        let port_stats = take_map!(ebpf, map_names::PORT_STATS, PerCpuArray);
        let egress = take_map!(ebpf, map_names::EGRESS, PerCpuArray);
        let seen = SeenMap::new(take_array(&mut ebpf, map_names::SEEN)?)?;
        let debt = take_map!(ebpf, map_names::DEBT, Array);
        let bans = take_map!(ebpf, map_names::BANS, LpmTrie);
        let fleet_hot = take_map!(ebpf, map_names::FLEET_HOT, HashMap);
        let mut kernel = Self {
            ebpf,
            pin_dir: opts.pin_dir.clone(),
            config,
            rules,
            classes,
            buckets,
            class_stats,
            counters,
            slot_names,
            ports,
            port_stats,
            egress,
            seen,
            debt,
            bans,
            fleet_hot,
            attachments: Vec::new(),
            adopted,
            tc_backend: super::tc::detect().map_err(DataplaneError::Other)?,
            local: None,
        };
        for name in [PROGRAM_NAME, RESCALE_PROGRAM_NAME] {
            xdp_program(&mut kernel.ebpf, name)?
                .load()
                .map_err(|e| DataplaneError::Load(format!("{name}: {}", chain(&e))))?;
        }
        egress_program(&mut kernel.ebpf)?
            .load()
            .map_err(|e| DataplaneError::Load(chain(&e)))?;
        Ok(kernel)
    }

    /// The instructions the verifier processed to accept the XDP program, when the kernel
    /// says: its limit is 10⁶, so this is the hot path's headroom for more code.
    pub fn verified_insns(&self) -> Option<u32> {
        let prog: &Xdp = self.ebpf.program(PROGRAM_NAME)?.try_into().ok()?;
        prog.info().ok()?.verified_instruction_count()
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Apply port rules only to traffic addressed to this node: fill the program's set of
    /// local addresses now and keep it current (see `dataplane::local`). Tests that craft
    /// frames to arbitrary addresses leave it off, and then every destination is gated.
    pub fn track_local_addresses(&mut self) -> Result<(), DataplaneError> {
        let map = take_map!(self.ebpf, map_names::LOCAL, HashMap);
        self.local = Some(super::local::Tracker::start(map, super::local::SAFETY_NET)?);
        Ok(())
    }

    /// Remove every pin in `dir` and the directory itself (a fresh start).
    pub fn remove_pins(dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        // Links not pinned on purpose detach here: never leave the program attached by
        // accident. Pinned links stay: they were pinned to outlive us.
        self.detach_links(false);
    }
}

fn sum_percpu<T: Copy + Default>(values: &[T], add: &impl Fn(&mut T, &T)) -> T {
    let mut acc = T::default();
    for v in values {
        add(&mut acc, v);
    }
    acc
}

/// Every slot of a per-CPU array, summed over the CPUs with `add`.
fn sum_slots<T: Copy + Default + aya::Pod>(
    map: &PerCpuArray<MapData, T>,
    name: &'static str,
    add: impl Fn(&mut T, &T),
) -> Result<Vec<T>, DataplaneError> {
    map.iter()
        .map(|item| {
            let per_cpu = item.map_err(map_err(name, "lookup"))?;
            Ok(sum_percpu(&per_cpu, &add))
        })
        .collect()
}

impl Dataplane for Kernel {
    fn attach(
        &mut self,
        iface: &str,
        mode: AttachMode,
        pin: bool,
    ) -> Result<AttachedMode, DataplaneError> {
        self.attach_iface(iface, mode, pin)
    }

    fn detach_all(&mut self) {
        self.detach_links(true);
    }

    fn detach(&mut self, iface: &str) {
        self.detach_iface(iface, true);
    }

    fn ifindex(&self, iface: &str) -> Option<u32> {
        super::if_nametoindex(iface)
    }

    fn keep_attached(&mut self) -> Result<(), DataplaneError> {
        self.pin_links()
    }

    fn adopted(&self) -> bool {
        self.adopted
    }

    fn apply(&mut self, writes: &[Write]) -> Result<(), DataplaneError> {
        for w in writes {
            match w {
                Write::SlotName(slot, n) => self
                    .slot_names
                    .set(*slot, n, 0)
                    .map_err(map_err(map_names::SLOT_NAMES, "update"))?,
                Write::Class(slot, c) => self
                    .classes
                    .set(*slot, c, 0)
                    .map_err(map_err(map_names::CLASSES, "update"))?,
                Write::Rule((addr, bits), r) => self
                    .rules
                    .insert(&Key::new(*bits, *addr), r, 0)
                    .map_err(map_err(map_names::RULES, "update"))?,
                Write::RemoveRule((addr, bits)) => match self.rules.remove(&Key::new(*bits, *addr))
                {
                    Ok(()) | Err(MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(map_names::RULES, "delete")(e)),
                },
                Write::Global(g) => self
                    .config
                    .set(0, g, 0)
                    .map_err(map_err(map_names::CONFIG, "update"))?,
                Write::Port((port, protocol), p) => self
                    .ports
                    .insert(
                        &PortKey {
                            port: *port,
                            protocol: *protocol,
                            _pad: 0,
                        },
                        p,
                        0,
                    )
                    .map_err(map_err(map_names::PORTS, "update"))?,
                Write::RemovePort((port, protocol)) => {
                    let key = PortKey {
                        port: *port,
                        protocol: *protocol,
                        _pad: 0,
                    };
                    match self.ports.remove(&key) {
                        Ok(()) | Err(MapError::KeyNotFound) => {}
                        Err(e) => return Err(map_err(map_names::PORTS, "delete")(e)),
                    }
                }
            }
        }
        Ok(())
    }

    fn read_state(&self) -> Result<Desired, DataplaneError> {
        let mut classes = Vec::with_capacity(MAX_CLASSES as usize);
        for slot in 0..MAX_CLASSES {
            classes.push(
                self.classes
                    .get(&slot, 0)
                    .map_err(map_err(map_names::CLASSES, "lookup"))?,
            );
        }
        let mut names = Vec::with_capacity(MAX_CLASSES as usize);
        for slot in 0..MAX_CLASSES {
            names.push(
                self.slot_names
                    .get(&slot, 0)
                    .map_err(map_err(map_names::SLOT_NAMES, "lookup"))?,
            );
        }
        let mut rules = BTreeMap::new();
        for item in self.rules.iter() {
            let (k, v) = item.map_err(map_err(map_names::RULES, "iterate"))?;
            rules.insert((k.data(), k.prefix_len()), v);
        }
        let mut ports = BTreeMap::new();
        for item in self.ports.iter() {
            let (k, v) = item.map_err(map_err(map_names::PORTS, "iterate"))?;
            ports.insert((k.port, k.protocol), v);
        }
        Ok(Desired {
            global: self.global()?,
            classes,
            names,
            rules,
            ports,
        })
    }

    fn global(&self) -> Result<GlobalConfig, DataplaneError> {
        self.config
            .get(&0, 0)
            .map_err(map_err(map_names::CONFIG, "lookup"))
    }

    fn counters(&self) -> Result<Vec<Counter>, DataplaneError> {
        sum_slots(&self.counters, map_names::COUNTERS, |a, v| {
            a.packets += v.packets;
            a.bytes += v.bytes;
        })
    }

    fn port_stats(&self) -> Result<Vec<PortStats>, DataplaneError> {
        sum_slots(&self.port_stats, map_names::PORT_STATS, |a, v| {
            a.syns += v.syns;
            a.gated += v.gated;
            a.resets += v.resets;
            a.shed += v.shed;
            a.chaos_dropped += v.chaos_dropped;
            a.chaos_reset += v.chaos_reset;
            a.syn_limited += v.syn_limited;
            a.trials += v.trials;
        })
    }

    fn egress_stats(&self) -> Result<Vec<EgressStats>, DataplaneError> {
        sum_slots(&self.egress, map_names::EGRESS, |a, v| {
            a.syn_acks += v.syn_acks;
            a.resets += v.resets;
            a.unreachables += v.unreachables;
            a.repeated += v.repeated;
            a.unverified += v.unverified;
        })
    }

    fn class_stats(&self) -> Result<Vec<ClassStats>, DataplaneError> {
        sum_slots(&self.class_stats, map_names::CLASS_STATS, |a, v| {
            a.admitted += v.admitted;
            a.overflowed += v.overflowed;
            a.map_full += v.map_full;
            a.indebted += v.indebted;
        })
    }

    fn class_admitted(&self, slots: &[u32]) -> Result<u64, DataplaneError> {
        slots.iter().try_fold(0u64, |sum, slot| {
            let per_cpu = self
                .class_stats
                .get(slot, 0)
                .map_err(map_err(map_names::CLASS_STATS, "lookup"))?;
            Ok(per_cpu.iter().fold(sum, |a, v| a.wrapping_add(v.admitted)))
        })
    }

    fn buckets(&self) -> Result<Vec<(BucketKey, Bucket)>, DataplaneError> {
        Ok(self.buckets.entries())
    }

    fn bucket_walker(&self) -> Result<super::walk::BucketWalker, DataplaneError> {
        Ok(super::walk::BucketWalker::Kernel(std::sync::Arc::clone(
            &self.buckets,
        )))
    }

    fn set_bucket(&mut self, key: &BucketKey, bucket: &Bucket) -> Result<(), DataplaneError> {
        if self.buckets.put(key, bucket) {
            Ok(())
        } else {
            Err(DataplaneError::Other(format!(
                "map {}: the slots of {key:?} stayed contended",
                map_names::BUCKETS
            )))
        }
    }

    fn fleet_hot(&mut self, max: usize) -> Result<Vec<(BucketKey, Bucket)>, DataplaneError> {
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for key in self.fleet_hot.keys() {
            if found.len() >= max {
                break;
            }
            let key = match key {
                Ok(k) => k,
                // Evicted between two "next key" calls: the walk restarted; stop here.
                Err(MapError::KeyNotFound) => break,
                Err(e) => return Err(map_err(map_names::FLEET_HOT, "iterate")(e)),
            };
            match self.buckets.get(&key) {
                Some(b) => found.push((key, b)),
                None => gone.push(key),
            }
        }
        self.forget_fleet_hot(&gone)?;
        Ok(found)
    }

    fn forget_fleet_hot(&mut self, keys: &[BucketKey]) -> Result<(), DataplaneError> {
        for k in keys {
            match self.fleet_hot.remove(k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(map_names::FLEET_HOT, "delete")(e)),
            }
        }
        Ok(())
    }

    fn rescale_bucket(&mut self, req: &RescaleRequest) -> Result<Rescaled, DataplaneError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let program: &Xdp = self
            .ebpf
            .program(RESCALE_PROGRAM_NAME)
            .ok_or_else(|| DataplaneError::Load(format!("no program {RESCALE_PROGRAM_NAME}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| DataplaneError::Load(chain(&e)))?;
        let r = program
            .test_run(TestRunOptions {
                data_in: Some(bytemuck::bytes_of(req)),
                repeat: 1,
                ..TestRunOptions::default()
            })
            .map_err(|e| DataplaneError::Other(format!("rescale: {}", chain(&e))))?;
        // XDP_PASS, XDP_DROP, XDP_TX (traffic_rescale's answers).
        match r.return_value {
            2 => Ok(Rescaled::Done),
            1 => Ok(Rescaled::Missing),
            3 => Ok(Rescaled::Contended),
            other => Err(DataplaneError::Other(format!(
                "rescale program returned {other}"
            ))),
        }
    }

    fn remove_bucket(&mut self, key: &BucketKey) -> Result<bool, DataplaneError> {
        // Its debt too: a reset source starts over with a full bucket (as may a source that
        // shares its slot).
        let (lo, hi) = traffic_common::addr_words(&key.addr);
        self.debt
            .set(traffic_common::debt_slot(lo, hi, key.class), &0, 0)
            .map_err(map_err(map_names::DEBT, "update"))?;
        Ok(self.buckets.remove(key))
    }

    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }

    fn age_seen(&mut self, generation: u32) -> Result<(), DataplaneError> {
        self.seen.clear(generation);
        Ok(())
    }

    fn set_ban(
        &mut self,
        (addr, bits): &crate::plan::RuleKey,
        ban: &BanEntry,
    ) -> Result<(), DataplaneError> {
        self.bans
            .insert(&Key::new(*bits, *addr), ban, 0)
            .map_err(map_err(map_names::BANS, "update"))
    }

    fn remove_ban(&mut self, (addr, bits): &crate::plan::RuleKey) -> Result<bool, DataplaneError> {
        match self.bans.remove(&Key::new(*bits, *addr)) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err(map_names::BANS, "delete")(e)),
        }
    }

    fn bans(&self) -> Result<Vec<(crate::plan::RuleKey, BanEntry)>, DataplaneError> {
        self.bans
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(map_err(map_names::BANS, "iterate"))?;
                Ok(((k.data(), k.prefix_len()), v))
            })
            .collect()
    }

    fn mtu(&self, iface: &str) -> Option<u32> {
        super::interface_mtu(iface)
    }

    fn feed_tries(&self) -> Result<Box<dyn super::feeds::FeedTries>, DataplaneError> {
        Ok(Box::new(super::feeds::PinnedTries::open(&self.pin_dir)?))
    }

    fn take_watch_ring(&mut self) -> Option<super::watch::WatchRing> {
        let map = self.ebpf.take_map(map_names::WATCH)?;
        let opened = aya::maps::RingBuf::try_from(map)
            .map_err(|e| chain(&e))
            .and_then(|r| super::watch::WatchRing::new(r).map_err(|e| e.to_string()));
        match opened {
            Ok(ring) => Some(ring),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the watch ring: `trafficctl watch` gets no events");
                None
            }
        }
    }

    fn watch_state(&self) -> Result<traffic_common::WatchState, DataplaneError> {
        let map = self.ebpf.map(map_names::WATCH_STATE).ok_or_else(|| {
            DataplaneError::Load(format!("object has no map {}", map_names::WATCH_STATE))
        })?;
        let per_cpu: PerCpuArray<&MapData, traffic_common::WatchState> =
            PerCpuArray::try_from(map).map_err(map_err(map_names::WATCH_STATE, "open"))?;
        let values = per_cpu
            .get(&0, 0)
            .map_err(map_err(map_names::WATCH_STATE, "lookup"))?;
        Ok(sum_percpu(
            &values,
            &|a: &mut traffic_common::WatchState, v| {
                a.sent += v.sent;
                a.suppressed += v.suppressed;
            },
        ))
    }
}

pub(super) fn egress_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(EGRESS_PROGRAM_NAME)
        .ok_or_else(|| {
            DataplaneError::Load(format!("object has no program {EGRESS_PROGRAM_NAME}"))
        })?
        .try_into()
        .map_err(|e| DataplaneError::Load(format!("{EGRESS_PROGRAM_NAME}: {e}")))
}

pub(super) fn kernel_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    xdp_program(ebpf, PROGRAM_NAME)
}

fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or_else(|| DataplaneError::Load(format!("object has no program {name}")))?
        .try_into()
        .map_err(|e| DataplaneError::Load(format!("{name}: {e}")))
}
