//! Pressure sampling: CPU, memory and IO load of the node as ratios in `0..=1`.
//!
//! Two kinds of signal, per resource:
//!
//! - **PSI** (`<root>/pressure/{cpu,memory,io}`, Linux ≥ 4.20 with `CONFIG_PSI`): the share
//!   of wall time in which some (or all) runnable tasks were stalled on the resource. The
//!   kernel's `avg10` is a 10-second moving average; the change of the cumulative `total`
//!   (µs) over one sampling interval is a faster signal.
//! - **Utilisation**, for nodes without PSI (or by choice): CPU busy ticks over all ticks
//!   from `<root>/stat`, `1 − MemAvailable / MemTotal` from `<root>/meminfo`, and for IO the
//!   busiest whole disk's share of wall time with I/O in flight (Δ `io_ticks`, as iostat's
//!   `%util`) from `<root>/diskstats`.
//!
//! Every file is read under one root directory (default [`DEFAULT_ROOT`]): PSI, `stat`,
//! `meminfo` and `diskstats` (busy = all ticks but idle and iowait; memory = 1 − available /
//! total). Under the real `/proc` the files stay open between samples; any other root — an
//! end-to-end test pointing the daemon at a directory it writes itself, so the throttle can
//! be driven deterministically — is opened afresh for every read.
//! `tests/privileged/throttle.rs` covers both: files it writes, and real CPU load.
//!
//! The files are small procfs reads that do not block on anything; the daemon may call
//! [`Sampler::sample`] from its loop directly or from `spawn_blocking`.
//!
//! Files: the vocabulary here (resources, signals, intervals), `settings`, the procfs
//! parsers in `procfs` and `disks`, and the stateful [`Sampler`] in `sampler`.

mod disks;
mod procfs;
mod sampler;
mod settings;

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use disks::{DiskStat, io_devices, parse_diskstats};
pub use procfs::{
    CpuTimes, MemInfo, ParseError, Psi, PsiLine, parse_meminfo, parse_proc_stat_cpu, parse_psi,
};
pub use sampler::{Reading, Sample, SampleError, Sampler};
pub use settings::PressureSettings;

/// Where the kernel's files live; tests use a directory of their own.
pub const DEFAULT_ROOT: &str = "/proc";
/// Default sampling interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest accepted sampling interval: below it `io_ticks` (ms) and CPU ticks (10 ms) are
/// too coarse for the deltas to mean anything.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest accepted sampling interval: beyond PSI's shortest window the delta signals stop
/// being faster than `avg10`, and the throttle reacts too late to be useful.
pub const MAX_INTERVAL: Duration = Duration::from_secs(10);

/// A resource whose pressure is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Cpu,
    Memory,
    Io,
}

impl Resource {
    /// All resources, in report order.
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Io];

    /// Lower-case name, as in config keys, JSON and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Io => "io",
        }
    }

    /// The PSI file of this resource, relative to the root.
    pub fn psi_path(self) -> PathBuf {
        Path::new("pressure").join(self.as_str())
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per resource (signals, thresholds, last readings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PerResource<T> {
    pub cpu: T,
    pub memory: T,
    pub io: T,
}

impl<T> PerResource<T> {
    /// Build from a function of the resource.
    pub fn from_fn(mut f: impl FnMut(Resource) -> T) -> Self {
        Self {
            cpu: f(Resource::Cpu),
            memory: f(Resource::Memory),
            io: f(Resource::Io),
        }
    }

    pub fn get(&self, r: Resource) -> &T {
        match r {
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.memory,
            Resource::Io => &self.io,
        }
    }

    pub fn get_mut(&mut self, r: Resource) -> &mut T {
        match r {
            Resource::Cpu => &mut self.cpu,
            Resource::Memory => &mut self.memory,
            Resource::Io => &mut self.io,
        }
    }

    /// `(resource, value)` in [`Resource::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Resource, &T)> {
        Resource::ALL.into_iter().map(move |r| (r, self.get(r)))
    }
}

/// Which signal drives a resource's reading (`[pressure.signal]` in the config).
///
/// When the chosen PSI signal is not available (no PSI file, or no `full` line) the reading
/// falls back to utilisation, and [`Reading::used`] says so. On the first sample, which has
/// no interval to take deltas over, a `*_delta` signal falls back to the same line's `avg10`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// With PSI: the larger of `some avg10` and `some` Δtotal over the last interval, so a
    /// sudden stall shows within one interval while `avg10` keeps the reading from dropping
    /// the moment a burst ends. Without PSI: utilisation.
    #[default]
    Auto,
    /// PSI `some avg10`: share of the last ~10 s in which at least one task was stalled.
    PsiSomeAvg10,
    /// PSI `full avg10`: share of the last ~10 s in which all non-idle tasks were stalled.
    /// Not meaningful for `cpu` at the system level (the kernel reports 0).
    PsiFullAvg10,
    /// PSI `some`: Δtotal over the last sampling interval (share of it stalled).
    PsiSomeDelta,
    /// PSI `full`: Δtotal over the last sampling interval. Not meaningful for `cpu`.
    PsiFullDelta,
    /// CPU busy share, memory in use (`1 − MemAvailable/MemTotal`), busiest disk's `%util`.
    #[serde(alias = "utilization")]
    Utilisation,
    /// Not sampled: the resource never raises the throttle level.
    Off,
}

impl Signal {
    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::Auto => "auto",
            Signal::PsiSomeAvg10 => "psi_some_avg10",
            Signal::PsiFullAvg10 => "psi_full_avg10",
            Signal::PsiSomeDelta => "psi_some_delta",
            Signal::PsiFullDelta => "psi_full_delta",
            Signal::Utilisation => "utilisation",
            Signal::Off => "off",
        }
    }

    fn uses_full(self) -> bool {
        matches!(self, Signal::PsiFullAvg10 | Signal::PsiFullDelta)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
