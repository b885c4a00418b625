//! Loading: the traffic program through the daemon's adapter, the benchmark programs, and
//! the pin directories of this run.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuValues, ProgramArray},
    programs::{ProgramFd, Xdp},
    util::nr_cpus,
};
use traffic_common::{ClassStats, Counter, PROGRAM_NAME, Reason, counter_index, map_names};
use traffic_daemon::{
    config::{AttachMode, Config},
    dataplane::{
        Dataplane as _,
        kernel::{Kernel, LoadOptions},
    },
    plan::{Slots, desired, diff},
};
use traffic_ebpf_bench::{self as gen_abi, GenConfig, GenState, LegitStat};
use traffic_loadgen::flood::{self, FloodNet};

use crate::MAX_SOURCES;

/// Remove pin directories of earlier runs that died without cleaning up (killed by a
/// signal): `/sys/fs/bpf/trfbench-<pid>-*` whose process is gone.
pub(crate) fn remove_stale_pins() {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("trfbench-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Kernel::remove_pins(&entry.path());
        }
    }
}

/// A pin directory of this run, removed on drop.
struct PinDir(pub(crate) PathBuf);

impl PinDir {
    pub(crate) fn new(what: &str) -> Result<PinDir> {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/trfbench-{}-{what}",
            std::process::id()
        ));
        Kernel::remove_pins(&path).with_context(|| format!("remove stale {}", path.display()))?;
        Ok(PinDir(path))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = Kernel::remove_pins(&self.0) {
            eprintln!("warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// The traffic program configured from config text, with its own pinned maps. Fields drop
/// in order: program handles close before the pins go.
pub(crate) struct Traffic {
    pub(crate) kernel: Kernel,
    /// The same object loaded again onto the same pinned maps, for its program fd (the
    /// tail-call target); `None` unless asked for.
    second: Option<Ebpf>,
    slots: Slots,
    pins: PinDir,
}

impl Traffic {
    pub(crate) fn load(what: &str, config: &str, second: bool) -> Result<Traffic> {
        let pins = PinDir::new(what)?;
        let mut kernel = Kernel::open_object(
            traffic_daemon::EBPF_OBJECT,
            &LoadOptions {
                pin_dir: pins.0.clone(),
                max_sources: MAX_SOURCES,
            },
        )
        .with_context(|| format!("load the traffic program ({what})"))?;
        let config = Config::parse(Path::new("bench.toml"), config).context("bench config")?;
        let slots = Slots::default().assign(&config);
        kernel
            .apply(&diff(None, &desired(&config, &slots, |_| 1.0)))
            .context("apply the bench config")?;
        let mut traffic = Traffic {
            kernel,
            second: None,
            slots,
            pins,
        };
        if second {
            traffic.second = Some(
                traffic
                    .load_alongside(traffic_daemon::EBPF_OBJECT)
                    .context("load the traffic object a second time")?,
            );
        }
        Ok(traffic)
    }

    /// Another build of the traffic object (same ABI) loaded onto this one's pinned maps,
    /// its program loaded and not attached: the variant of suite `variant`.
    pub(crate) fn load_alongside(&self, object: &[u8]) -> Result<Ebpf> {
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&self.pins.0)
            .map_max_entries(map_names::BUCKETS, MAX_SOURCES)
            .load(object)
            .context("load the object on the pinned maps")?;
        xdp_mut(&mut ebpf, PROGRAM_NAME)?
            .load()
            .context("load its traffic program")?;
        Ok(ebpf)
    }

    /// Apply another config (same classes and rules, other limits): every entry rewritten,
    /// buckets and class state kept.
    pub(crate) fn reconfigure(&mut self, config: &str) -> Result<()> {
        let config = Config::parse(Path::new("bench.toml"), config).context("bench config")?;
        let want = desired(&config, &self.slots, |_| 1.0);
        self.kernel
            .apply(&diff(None, &want))
            .context("apply the bench config")?;
        Ok(())
    }

    pub(crate) fn slot(&self, class: &str) -> Result<u32> {
        self.slots
            .slot_of(class)
            .with_context(|| format!("bench config has no class {class}"))
    }

    pub(crate) fn program(&self) -> Result<&Xdp> {
        xdp(
            self.second
                .as_ref()
                .context("traffic loaded without a second instance")?,
            PROGRAM_NAME,
        )
    }

    pub(crate) fn class_stats(&self, slot: u32) -> Result<ClassStats> {
        Ok(self.kernel.class_stats()?[slot as usize])
    }

    pub(crate) fn counter(&self, slot: u32, reason: Reason) -> Result<Counter> {
        Ok(self.kernel.counters()?[counter_index(slot, reason as u32, false) as usize])
    }

    /// Attach to the receiver's interface the way trafficd does (native XDP).
    pub(crate) fn attach(&mut self, net: &FloodNet) -> Result<()> {
        let _in = flood::enter(&net.receiver)?;
        self.kernel
            .attach(&net.rcv_if, AttachMode::Native, false)
            .context("attach the traffic program")?;
        Ok(())
    }

    pub(crate) fn detach(&mut self, net: &FloodNet) -> Result<()> {
        let _in = flood::enter(&net.receiver)?;
        self.kernel.detach_all();
        Ok(())
    }
}

pub(crate) fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    ebpf.program(name)
        .with_context(|| format!("object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

pub(crate) fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .with_context(|| format!("object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

/// The `traffic-ebpf-bench` object: the floor, the generator and the rewriter, with their maps.
pub(crate) struct BenchObject {
    pub(crate) ebpf: Ebpf,
    config: Array<MapData, [u64; gen_abi::GEN_CONFIG_WORDS]>,
    pub(crate) state: PerCpuArray<MapData, [u64; gen_abi::GEN_STATE_WORDS]>,
    legit: Array<MapData, [u64; gen_abi::LEGIT_STAT_WORDS]>,
    /// Kept open: the kernel empties a program array when its last user reference closes.
    jump: ProgramArray<MapData>,
    ncpus: usize,
}

impl BenchObject {
    pub(crate) fn load() -> Result<BenchObject> {
        let mut ebpf = EbpfLoader::new()
            .load(crate::BENCH_OBJECT)
            .context("load the traffic-ebpf-bench object")?;
        for name in [
            gen_abi::FLOOR_PROGRAM,
            gen_abi::GEN_PROGRAM,
            gen_abi::SPOOF_PROGRAM,
        ] {
            xdp_mut(&mut ebpf, name)?
                .load()
                .with_context(|| format!("load {name}"))?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("traffic-ebpf-bench has no map {name}"))
        };
        let config = Array::try_from(take(gen_abi::CONFIG_MAP)?).context("open BENCH_CONFIG")?;
        let state = PerCpuArray::try_from(take(gen_abi::STATE_MAP)?).context("open BENCH_STATE")?;
        let legit = Array::try_from(take(gen_abi::LEGIT_MAP)?).context("open BENCH_LEGIT")?;
        let jump = ProgramArray::try_from(take(gen_abi::JUMP_MAP)?).context("open BENCH_JUMP")?;
        let ncpus = nr_cpus()
            .map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?
            .get() as usize;
        Ok(BenchObject {
            ebpf,
            config,
            state,
            legit,
            jump,
            ncpus,
        })
    }

    pub(crate) fn program(&self, name: &str) -> Result<&Xdp> {
        xdp(&self.ebpf, name)
    }

    pub(crate) fn floor_fd(&self) -> Result<&ProgramFd> {
        self.program(gen_abi::FLOOR_PROGRAM)?
            .fd()
            .context("floor_drop fd")
    }

    pub(crate) fn configure(&mut self, cfg: &GenConfig) -> Result<()> {
        self.config
            .set(0, &cfg.to_words(), 0)
            .context("write BENCH_CONFIG")
    }

    /// Zero the generator's state and the legitimate sources' statistics.
    pub(crate) fn reset(&mut self) -> Result<()> {
        let zero = PerCpuValues::try_from(vec![[0u64; gen_abi::GEN_STATE_WORDS]; self.ncpus])
            .context("per-CPU zero")?;
        self.state.set(0, zero, 0).context("reset BENCH_STATE")?;
        for i in 0..gen_abi::MAX_LEGIT {
            self.legit
                .set(i, &[0u64; gen_abi::LEGIT_STAT_WORDS], 0)
                .context("reset BENCH_LEGIT")?;
        }
        Ok(())
    }

    /// Generator state summed over CPUs (counts added, first/last taken at the extremes).
    pub(crate) fn state(&self) -> Result<GenState> {
        let per_cpu = self.state.get(&0, 0).context("read BENCH_STATE")?;
        let mut acc = GenState::default();
        for w in per_cpu.iter() {
            let s = GenState::from_words(w);
            acc.seq += s.seq;
            acc.legit_sent += s.legit_sent;
            acc.held += s.held;
            if s.first_ns != 0 && (acc.first_ns == 0 || s.first_ns < acc.first_ns) {
                acc.first_ns = s.first_ns;
            }
            acc.last_ns = acc.last_ns.max(s.last_ns);
        }
        Ok(acc)
    }

    pub(crate) fn legit_stats(&self, n: u32) -> Result<Vec<LegitStat>> {
        (0..n)
            .map(|i| {
                self.legit
                    .get(&i, 0)
                    .map(|w| LegitStat::from_words(&w))
                    .context("read BENCH_LEGIT")
            })
            .collect()
    }

    pub(crate) fn set_jump(&mut self, target: &ProgramFd) -> Result<()> {
        self.jump.set(0, target, 0).context("write BENCH_JUMP")
    }
}
