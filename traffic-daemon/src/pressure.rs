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
//! PSI and disk statistics are read from files under one root directory (default
//! [`DEFAULT_ROOT`]). CPU and memory utilisation come from the `sysinfo` crate when that root
//! is the real `/proc` (sysinfo reads only the real one); with any other root — an end-to-end
//! test pointing the daemon at a directory it writes itself — they are parsed from that
//! root's `stat` and `meminfo` with the same definitions (busy = all ticks but idle and
//! iowait; memory = 1 − available / total), so the throttle can be driven deterministically.
//! `tests/throttle.rs` covers both: files it writes, and real CPU load read through sysinfo.
//!
//! The files are small procfs reads that do not block on anything; the daemon may call
//! [`Sampler::sample`] from its loop directly or from `spawn_blocking`.

use std::{
    collections::BTreeMap,
    fmt, io,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::setting::SettingError;

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

/// `[pressure]` settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PressureSettings {
    /// Directory holding `pressure/*`, `stat`, `meminfo` and `diskstats`.
    pub root: PathBuf,
    /// Time between samples.
    pub interval: Duration,
    /// Signal per resource.
    pub signal: PerResource<Signal>,
}

impl Default for PressureSettings {
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_ROOT),
            interval: DEFAULT_INTERVAL,
            signal: PerResource::default(),
        }
    }
}

impl PressureSettings {
    /// Range checks; every error names its key (`pressure.…`).
    pub fn validate(&self) -> Result<(), Vec<SettingError>> {
        let mut errors = Vec::new();
        if self.interval < MIN_INTERVAL || self.interval > MAX_INTERVAL {
            errors.push(SettingError::new(
                "pressure.interval",
                format!(
                    "must be between {}ms and {}s",
                    MIN_INTERVAL.as_millis(),
                    MAX_INTERVAL.as_secs()
                ),
            ));
        }
        if self.root.as_os_str().is_empty() {
            errors.push(SettingError::new("pressure.root", "must not be empty"));
        }
        if self.signal.cpu.uses_full() {
            errors.push(SettingError::new(
                "pressure.signal.cpu",
                format!(
                    "`{}`: the kernel reports no system-wide `full` CPU pressure (always 0); \
                     use a `some` signal",
                    self.signal.cpu
                ),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsers (pure).

/// Why a file's text could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{0}")]
    Missing(String),
}

fn line_err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError::Line {
        line,
        message: message.into(),
    }
}

/// One line of a PSI file, averages converted from percent to ratios.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsiLine {
    pub avg10_ratio: f64,
    pub avg60_ratio: f64,
    pub avg300_ratio: f64,
    /// Cumulative stall time since boot.
    pub total_us: u64,
}

/// A PSI file: `some` always, `full` where the kernel reports it (not for `cpu` before 5.13).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// Parse `/proc/pressure/{cpu,memory,io}`:
///
/// ```text
/// some avg10=0.56 avg60=0.78 avg300=0.62 total=10775585
/// full avg10=0.00 avg60=0.03 avg300=0.05 total=5525848
/// ```
///
/// Unknown lines and unknown `key=value` pairs are ignored (forward compatibility); the four
/// known keys are required on a `some`/`full` line.
pub fn parse_psi(text: &str) -> Result<Psi, ParseError> {
    let mut some = None;
    let mut full = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                return Err(line_err(n, format!("`{word}` is not key=value")));
            };
            let pct = |v: &str| -> Result<f64, ParseError> {
                match v.parse::<f64>() {
                    Ok(p) if p.is_finite() && p >= 0.0 => Ok(p / 100.0),
                    _ => Err(line_err(n, format!("{key}: `{v}` is not a percentage"))),
                }
            };
            match key {
                "avg10" => avg10 = Some(pct(value)?),
                "avg60" => avg60 = Some(pct(value)?),
                "avg300" => avg300 = Some(pct(value)?),
                "total" => {
                    total = Some(value.parse::<u64>().map_err(|_| {
                        line_err(n, format!("total: `{value}` is not a count of µs"))
                    })?);
                }
                _ => {}
            }
        }
        let missing = |what: &str| line_err(n, format!("`{what}=` is missing"));
        *slot = Some(PsiLine {
            avg10_ratio: avg10.ok_or_else(|| missing("avg10"))?,
            avg60_ratio: avg60.ok_or_else(|| missing("avg60"))?,
            avg300_ratio: avg300.ok_or_else(|| missing("avg300"))?,
            total_us: total.ok_or_else(|| missing("total"))?,
        });
    }
    let some = some.ok_or_else(|| ParseError::Missing("no `some` line".to_owned()))?;
    Ok(Psi { some, full })
}

/// The aggregate `cpu` line of `/proc/stat`, in USER_HZ ticks since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    pub guest: u64,
    pub guest_nice: u64,
}

impl CpuTimes {
    /// All ticks. `guest` and `guest_nice` are already part of `user` and `nice`.
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }

    /// Ticks the CPUs were not available for new work: everything but idle and iowait
    /// (iowait is idle time with I/O outstanding; IO pressure covers it). Steal counts as
    /// busy: the hypervisor took the CPU, so the node could not use it.
    pub fn busy(&self) -> u64 {
        self.total() - self.idle - self.iowait
    }

    /// Busy share between `prev` and `self`; `None` when no tick passed.
    pub fn utilisation_since(&self, prev: &CpuTimes) -> Option<f64> {
        let total = self.total().checked_sub(prev.total())?;
        if total == 0 {
            return None;
        }
        let busy = self.busy().saturating_sub(prev.busy());
        Some((busy as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// Parse the aggregate `cpu` line of `/proc/stat` (older kernels have fewer columns: the
/// missing ones are 0; at least user, nice, system and idle are required).
pub fn parse_proc_stat_cpu(text: &str) -> Result<CpuTimes, ParseError> {
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("cpu") {
            continue;
        }
        let mut v = [0u64; 10];
        let mut count = 0;
        for (slot, word) in v.iter_mut().zip(words) {
            *slot = word
                .parse()
                .map_err(|_| line_err(i + 1, format!("`{word}` is not a tick count")))?;
            count += 1;
        }
        if count < 4 {
            return Err(line_err(
                i + 1,
                format!("`cpu` has {count} columns, expected at least 4"),
            ));
        }
        let [
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
            guest,
            guest_nice,
        ] = v;
        return Ok(CpuTimes {
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
            guest,
            guest_nice,
        });
    }
    Err(ParseError::Missing("no aggregate `cpu` line".to_owned()))
}

/// The part of `/proc/meminfo` that utilisation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemInfo {
    pub total_kib: u64,
    /// `MemAvailable`; on kernels before 3.14, which lack it, `MemFree + Buffers + Cached`.
    pub available_kib: u64,
}

impl MemInfo {
    /// `1 − available / total`.
    pub fn utilisation(&self) -> f64 {
        if self.total_kib == 0 {
            return 0.0;
        }
        (1.0 - self.available_kib as f64 / self.total_kib as f64).clamp(0.0, 1.0)
    }
}

/// Parse `/proc/meminfo` (`Key:   value kB` lines; only the keys needed are read).
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    const KEYS: [&str; 5] = ["MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached"];
    let mut found: [Option<u64>; 5] = [None; 5];
    for (i, line) in text.lines().enumerate() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(k) = KEYS.iter().position(|&known| known == key.trim()) else {
            continue;
        };
        let value = rest.trim().trim_end_matches("kB").trim();
        found[k] = Some(
            value
                .parse()
                .map_err(|_| line_err(i + 1, format!("{key}: `{}` is not kB", rest.trim())))?,
        );
    }
    let [total, available, free, buffers, cached] = found;
    let total_kib = total.ok_or_else(|| ParseError::Missing("no `MemTotal`".to_owned()))?;
    if total_kib == 0 {
        return Err(ParseError::Missing("`MemTotal` is 0".to_owned()));
    }
    let available_kib = match (available, free) {
        (Some(a), _) => a,
        (None, Some(f)) => f + buffers.unwrap_or(0) + cached.unwrap_or(0),
        (None, None) => {
            return Err(ParseError::Missing(
                "neither `MemAvailable` nor `MemFree`".to_owned(),
            ));
        }
    };
    Ok(MemInfo {
        total_kib,
        available_kib,
    })
}

/// One line of `/proc/diskstats`, reduced to what IO utilisation needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStat {
    pub major: u32,
    pub minor: u32,
    pub name: String,
    /// Milliseconds with at least one I/O in flight (the 10th statistics column).
    pub io_ticks_ms: u64,
}

/// Parse `/proc/diskstats`: `major minor name` followed by at least 10 statistics columns
/// (11 before 4.18, 15 since, 17 since 5.5; only the 10th, `io_ticks`, is used).
pub fn parse_diskstats(text: &str) -> Result<Vec<DiskStat>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        if words.len() < 13 {
            return Err(line_err(
                n,
                format!("{} columns, expected at least 13", words.len()),
            ));
        }
        let num = |idx: usize, what: &str| -> Result<u64, ParseError> {
            words[idx]
                .parse()
                .map_err(|_| line_err(n, format!("{what}: `{}` is not a number", words[idx])))
        };
        let major = num(0, "major")?;
        let minor = num(1, "minor")?;
        let io_ticks_ms = num(12, "io_ticks")?;
        out.push(DiskStat {
            major: u32::try_from(major).map_err(|_| line_err(n, "major out of range"))?,
            minor: u32::try_from(minor).map_err(|_| line_err(n, "minor out of range"))?,
            name: words[2].to_owned(),
            io_ticks_ms,
        });
    }
    Ok(out)
}

/// Stacked or memory-backed devices whose load is either not disk load (`ram`, `zram`,
/// `loop` over a file the real disk already accounts for) or shows on the disks beneath
/// them (`dm-`, `md`, `zd` zvols); optical (`sr`) and floppy (`fd`) drives never carry a
/// service's I/O. Matched as prefix + device number, so `sda` or `mdisk` are not caught.
const VIRTUAL_PREFIXES: [&str; 8] = ["loop", "ram", "zram", "dm-", "md", "zd", "sr", "fd"];

fn is_virtual(name: &str) -> bool {
    VIRTUAL_PREFIXES.iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether `name` is a partition of `disk`, by the kernel's naming rule: `<disk><n>`, or
/// `<disk>p<n>` when the disk's name ends in a digit (`sda1`, `nvme0n1p1`, `mmcblk0p2`).
fn is_partition_of(name: &str, disk: &str) -> bool {
    let Some(rest) = name.strip_prefix(disk) else {
        return false;
    };
    let number = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        match rest.strip_prefix('p') {
            Some(n) => n,
            None => return false,
        }
    } else {
        rest
    };
    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
}

/// The devices IO utilisation looks at: whole, real disks. Partitions are dropped (their
/// busy time is part of their disk's), and so are `loop`, `ram`, `zram`, `dm-`, `md`, `zd`, `sr` and `fd` devices.
pub fn io_devices(stats: &[DiskStat]) -> impl Iterator<Item = &DiskStat> {
    stats.iter().filter(move |d| {
        !is_virtual(&d.name)
            && !stats
                .iter()
                .any(|other| other.name != d.name && is_partition_of(&d.name, &other.name))
    })
}

// ---------------------------------------------------------------------------------------
// Sampler (reads files under the root).

/// Why a sample failed. Always names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: ParseError },
}

impl SampleError {
    /// The file at fault.
    pub fn path(&self) -> &Path {
        match self {
            SampleError::Read { path, .. } | SampleError::Parse { path, .. } => path,
        }
    }
}

/// One resource's reading.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Reading {
    pub resource: Resource,
    /// The configured signal.
    pub requested: Signal,
    /// The signal `ratio` came from (never `Auto`; differs from `requested` on a fallback).
    pub used: Signal,
    /// What the throttle compares with its thresholds, `0..=1`.
    pub ratio: f64,
    /// The PSI file as read; `None` without PSI (or when the resource is `off`).
    pub psi: Option<Psi>,
    /// `some` Δtotal / Δwall over the last interval; `None` on the first sample.
    pub psi_some_delta_ratio: Option<f64>,
    /// `full` Δtotal / Δwall over the last interval.
    pub psi_full_delta_ratio: Option<f64>,
    /// Utilisation, when its file was there and (for CPU and IO) an interval has passed.
    pub utilisation_ratio: Option<f64>,
}

/// One sample of all resources.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Sample {
    /// Monotonic time of the sample, as passed to [`Sampler::sample`].
    pub at: Duration,
    /// Time since the previous successful sample; `None` on the first (no deltas).
    pub elapsed: Option<Duration>,
    /// Cpu, memory, io.
    pub readings: PerResource<Reading>,
}

impl Sample {
    pub fn get(&self, r: Resource) -> &Reading {
        self.readings.get(r)
    }

    /// `(resource, ratio)` of every sampled resource (not those set to `off`), the input of
    /// [`Throttle::update`](crate::policy::throttle::Throttle::update).
    pub fn ratios(&self) -> Vec<(Resource, f64)> {
        self.readings
            .iter()
            .filter(|(_, r)| r.used != Signal::Off)
            .map(|(res, r)| (res, r.ratio))
            .collect()
    }
}

/// Counters kept from the last successful sample.
#[derive(Clone, Debug, Default)]
struct Baseline {
    at: Duration,
    /// `some` and `full` totals per resource.
    psi: PerResource<Option<(u64, Option<u64>)>>,
    cpu: Option<CpuTimes>,
    /// `io_ticks` of the whole disks.
    disks: Option<BTreeMap<String, u64>>,
}

/// Samples pressure from the files under a root directory. Stateful only for deltas.
///
/// - PSI files that do not exist (or that the kernel refuses with `EOPNOTSUPP`, as with
///   `psi=0` on the command line) mean "no PSI" for that resource.
/// - `stat`, `meminfo` and `diskstats` are read when present; a missing one is an error only
///   when a reading needs it (no PSI, or `utilisation` chosen).
/// - A file that exists but does not parse is always an error.
/// - The first sample has no deltas: `*_delta` signals fall back to `avg10`, and CPU and IO
///   utilisation read 0 (with `utilisation_ratio: None`) — the next sample, one interval
///   later, is complete. Since-boot averages would be no better than nothing.
/// - A failed sample leaves the baseline alone, so the next deltas span the gap.
pub struct Sampler {
    root: PathBuf,
    signal: PerResource<Signal>,
    prev: Option<Baseline>,
    /// CPU and memory utilisation when `root` is the real `/proc`.
    system: Option<sysinfo::System>,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("root", &self.root)
            .field("signal", &self.signal)
            .field("prev", &self.prev)
            .field("sysinfo", &self.system.is_some())
            .finish()
    }
}

/// CPU usage and RAM only: what the utilisation signals need.
fn sysinfo_kinds() -> sysinfo::RefreshKind {
    sysinfo::RefreshKind::nothing()
        .with_cpu(sysinfo::CpuRefreshKind::nothing().with_usage())
        .with_memory(sysinfo::MemoryRefreshKind::nothing().with_ram())
}

impl Sampler {
    pub fn new(root: impl Into<PathBuf>, signal: PerResource<Signal>) -> Self {
        let root = root.into();
        // sysinfo cannot be pointed elsewhere; if it cannot start, the files serve.
        let system = (root == Path::new(DEFAULT_ROOT))
            .then(|| sysinfo::System::new_with_specifics(sysinfo_kinds()).ok())
            .flatten();
        Self {
            root,
            signal,
            prev: None,
            system,
        }
    }

    /// Whether CPU and memory utilisation come from sysinfo (else from `stat`/`meminfo`).
    pub fn uses_sysinfo(&self) -> bool {
        self.system.is_some()
    }

    /// From the `[pressure]` settings.
    pub fn from_settings(s: &PressureSettings) -> Self {
        Self::new(s.root.clone(), s.signal)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Read every file and compute the readings. `now` is monotonic (e.g. time since the
    /// daemon started); `now` not after the previous sample gives no deltas.
    pub fn sample(&mut self, now: Duration) -> Result<Sample, SampleError> {
        let prev = self.prev.as_ref();
        let elapsed = prev
            .and_then(|p| now.checked_sub(p.at))
            .filter(|e| !e.is_zero());
        let mut next = Baseline {
            at: now,
            ..Baseline::default()
        };

        let mut psi: PerResource<Option<Psi>> = PerResource::default();
        let mut deltas: PerResource<(Option<f64>, Option<f64>)> = PerResource::default();
        for r in Resource::ALL {
            if *self.signal.get(r) == Signal::Off {
                continue;
            }
            let path = self.root.join(r.psi_path());
            let Some(text) = read_optional(&path)? else {
                continue;
            };
            let p = parse_psi(&text).map_err(|source| SampleError::Parse {
                path: path.clone(),
                source,
            })?;
            let totals = (p.some.total_us, p.full.map(|f| f.total_us));
            if let (Some(e), Some(Some((some0, full0)))) = (elapsed, prev.map(|b| b.psi.get(r))) {
                let ratio = |now_us: u64, then_us: u64| {
                    (now_us.saturating_sub(then_us) as f64 / e.as_micros() as f64).clamp(0.0, 1.0)
                };
                let some = ratio(totals.0, *some0);
                let full = totals.1.zip(*full0).map(|(n, t)| ratio(n, t));
                *deltas.get_mut(r) = (Some(some), full);
            }
            *next.psi.get_mut(r) = Some(totals);
            *psi.get_mut(r) = Some(p);
        }

        let needs_util = |r: Resource| {
            let (sd, fd) = *deltas.get(r);
            resolve(*self.signal.get(r), psi.get(r).as_ref(), sd, fd, None).0 == Signal::Utilisation
        };
        let mut util: PerResource<Option<f64>> = PerResource::default();

        if let Some(system) = &mut self.system {
            // The same definitions as the file parsers below, from sysinfo's own refreshes
            // (its first one happened when the sampler was made, so deltas start there).
            if *self.signal.get(Resource::Cpu) != Signal::Off {
                system.refresh_cpu_usage();
                util.cpu = elapsed
                    .and(prev)
                    .map(|_| (f64::from(system.global_cpu_usage()) / 100.0).clamp(0.0, 1.0));
            }
            if *self.signal.get(Resource::Memory) != Signal::Off {
                system.refresh_memory_specifics(sysinfo::MemoryRefreshKind::nothing().with_ram());
                let total = system.total_memory();
                if total > 0 {
                    util.memory =
                        Some((system.used_memory() as f64 / total as f64).clamp(0.0, 1.0));
                }
            }
        } else {
            if *self.signal.get(Resource::Cpu) != Signal::Off {
                let path = self.root.join("stat");
                if let Some(text) = read_needed(&path, needs_util(Resource::Cpu))? {
                    let cpu = parse_proc_stat_cpu(&text)
                        .map_err(|source| SampleError::Parse { path, source })?;
                    util.cpu = elapsed
                        .and(prev.and_then(|p| p.cpu))
                        .and_then(|before| cpu.utilisation_since(&before));
                    next.cpu = Some(cpu);
                }
            }
            if *self.signal.get(Resource::Memory) != Signal::Off {
                let path = self.root.join("meminfo");
                if let Some(text) = read_needed(&path, needs_util(Resource::Memory))? {
                    let mem = parse_meminfo(&text)
                        .map_err(|source| SampleError::Parse { path, source })?;
                    util.memory = Some(mem.utilisation());
                }
            }
        }
        if *self.signal.get(Resource::Io) != Signal::Off {
            let path = self.root.join("diskstats");
            if let Some(text) = read_needed(&path, needs_util(Resource::Io))? {
                let stats =
                    parse_diskstats(&text).map_err(|source| SampleError::Parse { path, source })?;
                let disks: BTreeMap<String, u64> = io_devices(&stats)
                    .map(|d| (d.name.clone(), d.io_ticks_ms))
                    .collect();
                if let (Some(e), Some(before)) = (elapsed, prev.and_then(|p| p.disks.as_ref())) {
                    util.io = Some(io_utilisation(before, &disks, e));
                }
                next.disks = Some(disks);
            }
        }

        let readings = PerResource::from_fn(|r| {
            let requested = *self.signal.get(r);
            let (sd, fd) = *deltas.get(r);
            let p = *psi.get(r);
            let u = *util.get(r);
            let (used, ratio) = resolve(requested, p.as_ref(), sd, fd, u);
            Reading {
                resource: r,
                requested,
                used,
                ratio,
                psi: p,
                psi_some_delta_ratio: sd,
                psi_full_delta_ratio: fd,
                utilisation_ratio: u,
            }
        });
        self.prev = Some(next);
        Ok(Sample {
            at: now,
            elapsed,
            readings,
        })
    }
}

/// Busiest disk's share of `elapsed` with I/O in flight; disks absent from either sample
/// (hot-plugged) are skipped, and a counter that went backwards counts as idle.
fn io_utilisation(
    before: &BTreeMap<String, u64>,
    now: &BTreeMap<String, u64>,
    elapsed: Duration,
) -> f64 {
    let wall_ms = elapsed.as_secs_f64() * 1000.0;
    now.iter()
        .filter_map(|(name, ticks)| {
            let t0 = before.get(name)?;
            Some(ticks.saturating_sub(*t0) as f64 / wall_ms)
        })
        .fold(0.0, f64::max)
        .clamp(0.0, 1.0)
}

/// The signal a reading ends up using and its ratio (see [`Signal`] for the fallbacks).
fn resolve(
    requested: Signal,
    psi: Option<&Psi>,
    some_delta: Option<f64>,
    full_delta: Option<f64>,
    util: Option<f64>,
) -> (Signal, f64) {
    let utilisation = (Signal::Utilisation, util.unwrap_or(0.0));
    let full = psi.and_then(|p| p.full);
    let (used, ratio) = match (requested, psi) {
        (Signal::Off, _) => (Signal::Off, 0.0),
        (Signal::Utilisation, _) | (_, None) => utilisation,
        (Signal::Auto, Some(p)) => match some_delta {
            Some(d) if d > p.some.avg10_ratio => (Signal::PsiSomeDelta, d),
            _ => (Signal::PsiSomeAvg10, p.some.avg10_ratio),
        },
        (Signal::PsiSomeAvg10, Some(p)) => (Signal::PsiSomeAvg10, p.some.avg10_ratio),
        (Signal::PsiSomeDelta, Some(p)) => match some_delta {
            Some(d) => (Signal::PsiSomeDelta, d),
            None => (Signal::PsiSomeAvg10, p.some.avg10_ratio),
        },
        (Signal::PsiFullAvg10, Some(_)) => match full {
            Some(f) => (Signal::PsiFullAvg10, f.avg10_ratio),
            None => utilisation,
        },
        (Signal::PsiFullDelta, Some(_)) => match (full_delta, full) {
            (Some(d), _) => (Signal::PsiFullDelta, d),
            (None, Some(f)) => (Signal::PsiFullAvg10, f.avg10_ratio),
            (None, None) => utilisation,
        },
    };
    (used, ratio.clamp(0.0, 1.0))
}

/// The file's text; `None` when it does not exist or the kernel does not support it.
fn read_optional(path: &Path) -> Result<Option<String>, SampleError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::EOPNOTSUPP) =>
        {
            Ok(None)
        }
        Err(source) => Err(SampleError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Like [`read_optional`], but a missing file is an error when `needed`.
fn read_needed(path: &Path, needed: bool) -> Result<Option<String>, SampleError> {
    match read_optional(path)? {
        None if needed => Err(SampleError::Read {
            path: path.to_owned(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "not found, and utilisation needs it",
            ),
        }),
        other => Ok(other),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    // Copied from a 2-CPU VM (kernel 6.18) while it was compiling.
    const PSI_CPU: &str = "some avg10=93.09 avg60=87.56 avg300=65.04 total=554150201\n\
                           full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    const PSI_IO: &str = "some avg10=0.56 avg60=0.78 avg300=0.62 total=10775585\n\
                          full avg10=0.00 avg60=0.03 avg300=0.05 total=5525848\n";
    const STAT: &str = "cpu  265215 0 28178 296571 1178 0 375 3726 0 0\n\
                        cpu0 133901 0 13765 147283 716 0 86 1896 0 0\n\
                        cpu1 131314 0 14412 149288 462 0 288 1830 0 0\n\
                        intr 1281178 0 0 0 0 0 0 0 0 0\n\
                        ctxt 2475757\n\
                        btime 1795326720\n\
                        processes 60038\n\
                        procs_running 7\n\
                        procs_blocked 0\n\
                        softirq 936515 0 123415 94 232254 111181 0 670 137952 0 330949\n";
    const MEMINFO: &str = "MemTotal:       24684084 kB\n\
                           MemFree:        12093636 kB\n\
                           MemAvailable:   24006956 kB\n\
                           Buffers:           88728 kB\n\
                           Cached:         11774748 kB\n\
                           SwapCached:            0 kB\n\
                           HugePages_Total:       0\n\
                           Hugepagesize:       2048 kB\n";
    const DISKSTATS: &str = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
        \x20254       0 vda 33419 7726 5545626 23598 41840 100179 49682408 429093 0 36408 466247 56325 32 25062040 13454 1957 101\n\
        \x20254       1 vda1 33000 7700 5545000 23500 41800 100100 49682000 429000 0 36300 466000 56300 32 25062000 13400 0 0\n\
        \x20253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// A temporary root directory, removed on drop.
    struct Root(PathBuf);

    impl Root {
        fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "traffic-pressure-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(dir.join("pressure")).unwrap();
            Root(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            std::fs::write(self.0.join(rel), text).unwrap();
        }

        fn remove(&self, rel: &str) {
            std::fs::remove_file(self.0.join(rel)).unwrap();
        }

        fn psi(&self, r: &str, avg10_pct: f64, some_us: u64, full: Option<(f64, u64)>) {
            let mut t =
                format!("some avg10={avg10_pct:.2} avg60=0.00 avg300=0.00 total={some_us}\n");
            if let Some((pct, us)) = full {
                t += &format!("full avg10={pct:.2} avg60=0.00 avg300=0.00 total={us}\n");
            }
            self.write(&format!("pressure/{r}"), &t);
        }

        /// `/proc/stat` with `busy` user ticks and `idle` idle ticks.
        fn stat(&self, busy: u64, idle: u64) {
            self.write(
                "stat",
                &format!(
                    "cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n"
                ),
            );
        }

        fn meminfo(&self, total: u64, available: u64) {
            self.write(
                "meminfo",
                &format!("MemTotal: {total} kB\nMemFree: 1 kB\nMemAvailable: {available} kB\n"),
            );
        }

        /// Whole disk `sda` with a partition, and `nvme0n1`, with the given io_ticks.
        fn diskstats(&self, sda: u64, nvme: u64) {
            let line = |maj: u32, min: u32, name: &str, ticks: u64| {
                format!("{maj} {min} {name} 1 0 8 1 1 0 8 1 0 {ticks} 2 0 0 0 0 0 0\n")
            };
            self.write(
                "diskstats",
                &(line(8, 0, "sda", sda)
                    + &line(8, 1, "sda1", sda)
                    + &line(259, 0, "nvme0n1", nvme)
                    + &line(7, 0, "loop0", 1_000_000)),
            );
        }

        fn sampler(&self, signal: PerResource<Signal>) -> Sampler {
            Sampler::new(self.0.clone(), signal)
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn all(s: Signal) -> PerResource<Signal> {
        PerResource::from_fn(|_| s)
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    // --- sources -------------------------------------------------------------------------

    #[test]
    fn real_proc_uses_sysinfo_and_other_roots_use_files() {
        let real = Sampler::new(DEFAULT_ROOT, all(Signal::Utilisation));
        assert!(
            real.uses_sysinfo(),
            "the real /proc is read through sysinfo"
        );
        let root = Root::new();
        assert!(!root.sampler(all(Signal::Utilisation)).uses_sysinfo());
    }

    #[test]
    fn sysinfo_readings_are_ratios_after_one_interval() {
        let mut s = Sampler::new(DEFAULT_ROOT, all(Signal::Utilisation));
        let first = s.sample(secs(1.0)).unwrap();
        assert_eq!(
            first.get(Resource::Cpu).utilisation_ratio,
            None,
            "no delta yet"
        );
        let mem = first.get(Resource::Memory).utilisation_ratio.unwrap();
        assert!(mem > 0.0 && mem < 1.0, "memory {mem}");
        // sysinfo refreshes CPU usage at most every MINIMUM_CPU_UPDATE_INTERVAL.
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL + Duration::from_millis(50));
        let second = s.sample(secs(2.0)).unwrap();
        let cpu = second.get(Resource::Cpu).utilisation_ratio.unwrap();
        assert!((0.0..=1.0).contains(&cpu), "cpu {cpu}");
        assert_eq!(second.get(Resource::Cpu).used, Signal::Utilisation);
    }

    // --- parsers -------------------------------------------------------------------------

    #[test]
    fn psi_real_samples() {
        let cpu = parse_psi(PSI_CPU).unwrap();
        assert!(close(cpu.some.avg10_ratio, 0.9309));
        assert!(close(cpu.some.avg60_ratio, 0.8756));
        assert!(close(cpu.some.avg300_ratio, 0.6504));
        assert_eq!(cpu.some.total_us, 554_150_201);
        assert_eq!(cpu.full.map(|f| f.total_us), Some(0));

        let io = parse_psi(PSI_IO).unwrap();
        assert!(close(io.some.avg10_ratio, 0.0056));
        let full = io.full.unwrap();
        assert!(close(full.avg60_ratio, 0.0003));
        assert_eq!(full.total_us, 5_525_848);

        // Kernels before 5.13 have no `full` line for cpu; unknown keys and lines are
        // ignored.
        let old =
            parse_psi("some avg10=1.50 avg60=0.10 avg300=0.00 total=42 new=7\nnext 1\n").unwrap();
        assert!(close(old.some.avg10_ratio, 0.015));
        assert_eq!(old.full, None);
    }

    #[test]
    fn psi_malformed() {
        let cases: &[(&str, &str)] = &[
            ("", "no `some` line"),
            ("garbage\n", "no `some` line"),
            (
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
                "no `some` line",
            ),
            (
                "some avg10=abc avg60=0.00 avg300=0.00 total=1\n",
                "line 1: avg10: `abc` is not a percentage",
            ),
            (
                "some avg10=-1 avg60=0.00 avg300=0.00 total=1\n",
                "line 1: avg10: `-1` is not a percentage",
            ),
            (
                "some avg10=1.00 avg60=0.00 avg300=0.00 total=-5\n",
                "line 1: total: `-5` is not a count of µs",
            ),
            (
                "some avg10=1.00 avg60=0.00 avg300=0.00\n",
                "line 1: `total=` is missing",
            ),
            (
                "some avg10=1.00 avg60=0.00 avg300=0.00 total=1\nfull avg10 avg60=0\n",
                "line 2: `avg10` is not key=value",
            ),
        ];
        for (text, want) in cases {
            let got = parse_psi(text).unwrap_err().to_string();
            assert_eq!(&got, want, "for {text:?}");
        }
    }

    #[test]
    fn proc_stat_real_sample() {
        let cpu = parse_proc_stat_cpu(STAT).unwrap();
        assert_eq!(
            cpu,
            CpuTimes {
                user: 265_215,
                system: 28_178,
                idle: 296_571,
                iowait: 1178,
                softirq: 375,
                steal: 3726,
                ..CpuTimes::default()
            }
        );
        assert_eq!(cpu.total(), 265_215 + 28_178 + 296_571 + 1178 + 375 + 3726);
        assert_eq!(cpu.busy(), 265_215 + 28_178 + 375 + 3726);

        // Guest time is already in user/nice: not counted twice.
        let g = parse_proc_stat_cpu("cpu 10 5 0 85 0 0 0 0 10 5\n").unwrap();
        assert_eq!((g.total(), g.busy()), (100, 15));

        // Old kernels: four columns.
        let old = parse_proc_stat_cpu("cpu 1 2 3 4\n").unwrap();
        assert_eq!((old.total(), old.busy()), (10, 6));

        let later = CpuTimes {
            user: cpu.user + 30,
            idle: cpu.idle + 60,
            iowait: cpu.iowait + 10,
            ..cpu
        };
        assert!(close(later.utilisation_since(&cpu).unwrap(), 0.3));
        assert_eq!(cpu.utilisation_since(&cpu), None, "no tick passed");
        assert_eq!(
            cpu.utilisation_since(&later),
            None,
            "counters went backwards"
        );
    }

    #[test]
    fn proc_stat_malformed() {
        let cases: &[(&str, &str)] = &[
            ("", "no aggregate `cpu` line"),
            ("cpu0 1 2 3 4\n", "no aggregate `cpu` line"),
            ("intr 1\ncpu 1 2 x 4\n", "line 2: `x` is not a tick count"),
            (
                "cpu 1 2 3\n",
                "line 1: `cpu` has 3 columns, expected at least 4",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                &parse_proc_stat_cpu(text).unwrap_err().to_string(),
                want,
                "for {text:?}"
            );
        }
    }

    #[test]
    fn meminfo_real_sample() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(
            m,
            MemInfo {
                total_kib: 24_684_084,
                available_kib: 24_006_956
            }
        );
        assert!(close(m.utilisation(), 1.0 - 24_006_956.0 / 24_684_084.0));

        // Before 3.14: no MemAvailable, estimated from free + buffers + cached.
        let old =
            parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n")
                .unwrap();
        assert_eq!(old.available_kib, 400);
        assert!(close(old.utilisation(), 0.6));
    }

    #[test]
    fn meminfo_malformed() {
        let cases: &[(&str, &str)] = &[
            ("MemFree: 1 kB\n", "no `MemTotal`"),
            ("MemTotal: 0 kB\nMemAvailable: 0 kB\n", "`MemTotal` is 0"),
            ("MemTotal: 10 kB\n", "neither `MemAvailable` nor `MemFree`"),
            (
                "MemTotal: 10 kB\nMemAvailable: lots kB\n",
                "line 2: MemAvailable: `lots kB` is not kB",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                &parse_meminfo(text).unwrap_err().to_string(),
                want,
                "for {text:?}"
            );
        }
    }

    #[test]
    fn diskstats_real_sample() {
        let d = parse_diskstats(DISKSTATS).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(
            d[1],
            DiskStat {
                major: 254,
                minor: 0,
                name: "vda".into(),
                io_ticks_ms: 36_408
            }
        );
        let used: Vec<&str> = io_devices(&d).map(|d| d.name.as_str()).collect();
        assert_eq!(used, ["vda"]);

        // Pre-4.18 format: 11 statistics columns.
        let old = parse_diskstats("8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n").unwrap();
        assert_eq!(old[0].io_ticks_ms, 10);
    }

    #[test]
    fn diskstats_malformed() {
        let cases: &[(&str, &str)] = &[
            ("8 0 sda 1 2 3\n", "line 1: 6 columns, expected at least 13"),
            (
                "8 0 sda 1 2 3 4 5 6 7 8 9 x 11\n",
                "line 1: io_ticks: `x` is not a number",
            ),
            (
                "\n8 x sda 1 2 3 4 5 6 7 8 9 10 11\n",
                "line 2: minor: `x` is not a number",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                &parse_diskstats(text).unwrap_err().to_string(),
                want,
                "for {text:?}"
            );
        }
    }

    #[test]
    fn io_devices_are_whole_real_disks() {
        let names = [
            "sda",
            "sda1",
            "sda15",
            "sdaa",
            "nvme0n1",
            "nvme0n1p1",
            "nvme0n10",
            "mmcblk0",
            "mmcblk0p2",
            "mmcblk0boot0",
            "vda",
            "vda1",
            "xvda",
            "xvda1",
            "nbd0",
            "nbd0p1",
            "loop0",
            "loop0p1",
            "ram0",
            "zram0",
            "dm-0",
            "md127",
            "md127p1",
            "sr0",
            "fd0",
            "zd16",
            "mdisk",
        ];
        let stats: Vec<DiskStat> = names
            .iter()
            .map(|n| DiskStat {
                major: 1,
                minor: 0,
                name: (*n).to_owned(),
                io_ticks_ms: 0,
            })
            .collect();
        let used: Vec<&str> = io_devices(&stats).map(|d| d.name.as_str()).collect();
        // mmcblk0boot0 is a hardware boot area, named like a separate disk by the kernel.
        assert_eq!(
            used,
            [
                "sda",
                "sdaa",
                "nvme0n1",
                "nvme0n10",
                "mmcblk0",
                "mmcblk0boot0",
                "vda",
                "xvda",
                "nbd0",
                "mdisk"
            ]
        );
    }

    /// requested, psi, some Δ, full Δ, utilisation → used, ratio
    type ResolveCase<'a> = (
        Signal,
        Option<&'a Psi>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Signal,
        f64,
    );

    #[test]
    fn resolve_table() {
        let line = |avg10_ratio: f64| PsiLine {
            avg10_ratio,
            avg60_ratio: 0.0,
            avg300_ratio: 0.0,
            total_us: 0,
        };
        let with_full = Psi {
            some: line(0.3),
            full: Some(line(0.1)),
        };
        let some_only = Psi {
            some: line(0.3),
            full: None,
        };
        use Signal::*;
        #[rustfmt::skip]
        let cases: &[ResolveCase] = &[
            // requested, psi, some Δ, full Δ, utilisation → used, ratio
            (Auto, Some(&with_full), None, None, Some(0.9), PsiSomeAvg10, 0.3),
            (Auto, Some(&with_full), Some(0.5), None, Some(0.9), PsiSomeDelta, 0.5),
            (Auto, Some(&with_full), Some(0.2), None, Some(0.9), PsiSomeAvg10, 0.3),
            (Auto, None, None, None, Some(0.9), Utilisation, 0.9),
            (Auto, None, None, None, None, Utilisation, 0.0),
            (PsiSomeAvg10, Some(&with_full), Some(0.5), None, None, PsiSomeAvg10, 0.3),
            (PsiSomeAvg10, None, None, None, Some(0.7), Utilisation, 0.7),
            (PsiFullAvg10, Some(&with_full), None, None, Some(0.7), PsiFullAvg10, 0.1),
            (PsiFullAvg10, Some(&some_only), None, None, Some(0.7), Utilisation, 0.7),
            (PsiSomeDelta, Some(&with_full), Some(0.05), None, None, PsiSomeDelta, 0.05),
            (PsiSomeDelta, Some(&with_full), None, None, None, PsiSomeAvg10, 0.3),
            (PsiSomeDelta, None, None, None, Some(0.4), Utilisation, 0.4),
            (PsiFullDelta, Some(&with_full), Some(0.5), Some(0.25), None, PsiFullDelta, 0.25),
            (PsiFullDelta, Some(&with_full), None, None, None, PsiFullAvg10, 0.1),
            (PsiFullDelta, Some(&some_only), Some(0.5), None, Some(0.6), Utilisation, 0.6),
            (Utilisation, Some(&with_full), Some(0.5), None, Some(0.6), Utilisation, 0.6),
            (Utilisation, None, None, None, Some(1.5), Utilisation, 1.0),
            (Off, Some(&with_full), Some(0.5), None, Some(0.6), Off, 0.0),
        ];
        for &(req, psi, sd, fd, util, used, ratio) in cases {
            let got = resolve(req, psi, sd, fd, util);
            assert_eq!(got.0, used, "{req:?} {psi:?} {sd:?} {fd:?} {util:?}");
            assert!(close(got.1, ratio), "{req:?}: {} != {ratio}", got.1);
        }
    }

    // --- sampler -------------------------------------------------------------------------

    #[test]
    fn psi_deltas_over_the_interval() {
        let root = Root::new();
        root.psi("cpu", 20.0, 1_000_000, Some((0.0, 0)));
        root.psi("memory", 0.0, 500, Some((0.0, 100)));
        root.psi("io", 1.0, 7_000, Some((0.5, 3_000)));
        let mut s = root.sampler(PerResource {
            cpu: Signal::Auto,
            memory: Signal::PsiFullDelta,
            io: Signal::PsiSomeDelta,
        });

        // First sample: no deltas, avg10 stands in.
        let first = s.sample(secs(10.0)).unwrap();
        assert_eq!(first.elapsed, None);
        let cpu = first.get(Resource::Cpu);
        assert_eq!(
            (cpu.used, cpu.psi_some_delta_ratio),
            (Signal::PsiSomeAvg10, None)
        );
        assert!(close(cpu.ratio, 0.2));
        assert_eq!(first.get(Resource::Memory).used, Signal::PsiFullAvg10);
        assert_eq!(first.get(Resource::Io).used, Signal::PsiSomeAvg10);
        assert!(close(first.get(Resource::Io).ratio, 0.01));
        // No utilisation files, none needed.
        assert_eq!(cpu.utilisation_ratio, None);

        // 2 s later: cpu stalled 1.2 s of 2 (0.6 > avg10 0.2), memory full 0.5 s, io 0.1 s.
        root.psi("cpu", 20.0, 2_200_000, Some((0.0, 0)));
        root.psi("memory", 0.0, 600_500, Some((0.0, 500_100)));
        root.psi("io", 1.0, 207_000, Some((0.5, 3_000)));
        let second = s.sample(secs(12.0)).unwrap();
        assert_eq!(second.elapsed, Some(secs(2.0)));
        let cpu = second.get(Resource::Cpu);
        assert_eq!(cpu.used, Signal::PsiSomeDelta);
        assert!(close(cpu.ratio, 0.6));
        assert!(close(cpu.psi_full_delta_ratio.unwrap(), 0.0));
        let mem = second.get(Resource::Memory);
        assert_eq!(mem.used, Signal::PsiFullDelta);
        assert!(close(mem.ratio, 0.25));
        assert!(close(mem.psi_some_delta_ratio.unwrap(), 0.3));
        let io = second.get(Resource::Io);
        assert_eq!(io.used, Signal::PsiSomeDelta);
        assert!(close(io.ratio, 0.1));

        let ratios = second.ratios();
        assert_eq!(ratios.len(), 3);
        assert_eq!(ratios[0].0, Resource::Cpu);
        assert!(close(ratios[0].1, 0.6));

        // A counter reset (or wrap) reads as no stall, not as a huge one.
        root.psi("cpu", 20.0, 5, Some((0.0, 0)));
        let third = s.sample(secs(13.0)).unwrap();
        assert!(close(
            third.get(Resource::Cpu).psi_some_delta_ratio.unwrap(),
            0.0
        ));
        assert_eq!(third.get(Resource::Cpu).used, Signal::PsiSomeAvg10);
    }

    #[test]
    fn without_psi_utilisation_is_used() {
        let root = Root::new();
        root.stat(1_000, 9_000);
        root.meminfo(1_000_000, 250_000);
        root.diskstats(5_000, 100);
        let mut s = root.sampler(all(Signal::Auto));

        let first = s.sample(secs(1.0)).unwrap();
        for r in Resource::ALL {
            assert_eq!(first.get(r).used, Signal::Utilisation, "{r}");
            assert_eq!(first.get(r).psi, None);
        }
        // No interval yet for cpu and io: they read 0 until the next sample.
        assert_eq!(first.get(Resource::Cpu).utilisation_ratio, None);
        assert_eq!(first.get(Resource::Cpu).ratio, 0.0);
        assert_eq!(first.get(Resource::Io).utilisation_ratio, None);
        assert!(close(first.get(Resource::Memory).ratio, 0.75));

        // 500 ms later: 40 of 100 ticks busy; sda busy 250 ms (its partition and loop0 are
        // ignored even though loop0 would read 100 %), nvme 100 ms.
        root.stat(1_040, 9_060);
        root.meminfo(1_000_000, 100_000);
        root.diskstats(5_250, 200);
        root.write(
            "diskstats",
            &(std::fs::read_to_string(root.0.join("diskstats"))
                .unwrap()
                .replace(
                    "loop0 1 0 8 1 1 0 8 1 0 1000000",
                    "loop0 1 0 8 1 1 0 8 1 0 1000500",
                )),
        );
        let second = s.sample(secs(1.5)).unwrap();
        assert!(close(second.get(Resource::Cpu).ratio, 0.4));
        assert!(close(second.get(Resource::Memory).ratio, 0.9));
        assert!(close(second.get(Resource::Io).ratio, 0.5));
        assert!(close(
            second.get(Resource::Io).utilisation_ratio.unwrap(),
            0.5
        ));

        // A disk busier than the wall clock (rounding at the boundaries) reads as 1.
        root.diskstats(6_000, 200);
        assert!(close(
            s.sample(secs(2.0)).unwrap().get(Resource::Io).ratio,
            1.0
        ));
    }

    #[test]
    fn psi_for_some_resources_only() {
        // E.g. psi=0 for io only, or a test that writes just one PSI file.
        let root = Root::new();
        root.psi("cpu", 75.0, 0, None);
        root.meminfo(100, 40);
        root.diskstats(0, 0);
        let mut s = root.sampler(all(Signal::Auto));
        let x = s.sample(secs(1.0)).unwrap();
        assert_eq!(x.get(Resource::Cpu).used, Signal::PsiSomeAvg10);
        assert!(close(x.get(Resource::Cpu).ratio, 0.75));
        assert_eq!(x.get(Resource::Memory).used, Signal::Utilisation);
        assert!(close(x.get(Resource::Memory).ratio, 0.6));
        assert_eq!(x.get(Resource::Io).used, Signal::Utilisation);
    }

    #[test]
    fn explicit_psi_signal_falls_back_to_utilisation() {
        let root = Root::new();
        root.psi("cpu", 50.0, 0, None);
        root.stat(0, 0);
        root.meminfo(100, 10);
        root.diskstats(0, 0);
        let mut s = root.sampler(PerResource {
            cpu: Signal::PsiFullAvg10,    // no `full` line
            memory: Signal::PsiSomeAvg10, // no file
            io: Signal::Utilisation,
        });
        s.sample(secs(1.0)).unwrap();
        root.stat(10, 10);
        let x = s.sample(secs(2.0)).unwrap();
        let cpu = x.get(Resource::Cpu);
        assert_eq!(
            (cpu.requested, cpu.used),
            (Signal::PsiFullAvg10, Signal::Utilisation)
        );
        assert!(close(cpu.ratio, 0.5));
        assert_eq!(x.get(Resource::Memory).used, Signal::Utilisation);
        assert!(close(x.get(Resource::Memory).ratio, 0.9));
    }

    #[test]
    fn off_resources_are_not_read() {
        let root = Root::new();
        root.psi("cpu", 10.0, 0, None);
        root.write("pressure/io", "not psi at all\n");
        root.write("diskstats", "broken\n");
        let mut s = root.sampler(PerResource {
            cpu: Signal::Auto,
            memory: Signal::Off,
            io: Signal::Off,
        });
        let x = s.sample(secs(1.0)).unwrap();
        assert_eq!(x.get(Resource::Io).used, Signal::Off);
        assert_eq!(x.get(Resource::Memory).ratio, 0.0);
        let ratios = x.ratios();
        assert_eq!(ratios.len(), 1);
        assert_eq!(ratios[0].0, Resource::Cpu);
    }

    #[test]
    fn errors_name_the_file() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "pressure/cpu",
                "some avg10=x avg60=0 avg300=0 total=0\n",
                "pressure/cpu: line 1: avg10: `x` is not a percentage",
            ),
            (
                "pressure/memory",
                "nothing\n",
                "pressure/memory: no `some` line",
            ),
            ("pressure/io", "", "pressure/io: no `some` line"),
            (
                "stat",
                "cpu 1 2\n",
                "stat: line 1: `cpu` has 2 columns, expected at least 4",
            ),
            (
                "meminfo",
                "MemTotal: many kB\n",
                "meminfo: line 1: MemTotal: `many kB` is not kB",
            ),
            (
                "diskstats",
                "8 0 sda\n",
                "diskstats: line 1: 3 columns, expected at least 13",
            ),
        ];
        for (file, text, want) in cases {
            let root = Root::new();
            root.psi("cpu", 0.0, 0, None);
            root.psi("memory", 0.0, 0, None);
            root.psi("io", 0.0, 0, None);
            root.stat(0, 0);
            root.meminfo(10, 10);
            root.diskstats(0, 0);
            root.write(file, text);
            let e = root
                .sampler(all(Signal::Auto))
                .sample(secs(1.0))
                .unwrap_err();
            assert_eq!(e.path(), root.0.join(file));
            let msg = e.to_string();
            assert!(
                msg.ends_with(want),
                "{file}: `{msg}` does not end with `{want}`"
            );
            assert!(msg.starts_with(&root.0.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn missing_file_is_an_error_only_when_needed() {
        let root = Root::new();
        root.psi("cpu", 0.0, 0, None);
        root.psi("memory", 0.0, 0, None);
        root.psi("io", 0.0, 0, None);
        // PSI everywhere: no utilisation file needed.
        let mut s = root.sampler(all(Signal::Auto));
        s.sample(secs(1.0)).unwrap();

        // Utilisation asked for: the missing file is named.
        let mut s = root.sampler(PerResource {
            cpu: Signal::Auto,
            memory: Signal::Utilisation,
            io: Signal::Auto,
        });
        let e = s.sample(secs(1.0)).unwrap_err();
        assert!(matches!(e, SampleError::Read { .. }));
        assert_eq!(e.path(), root.0.join("meminfo"));

        // PSI gone: stat is needed for cpu.
        root.remove("pressure/cpu");
        let e = root
            .sampler(all(Signal::Auto))
            .sample(secs(1.0))
            .unwrap_err();
        assert_eq!(e.path(), root.0.join("stat"));
        assert!(e.to_string().contains("utilisation needs it"), "{e}");
    }

    #[test]
    fn failed_sample_keeps_the_baseline() {
        let root = Root::new();
        root.psi("cpu", 0.0, 0, None);
        root.stat(0, 0);
        root.diskstats(0, 0);
        let mut s = root.sampler(PerResource {
            cpu: Signal::PsiSomeDelta,
            memory: Signal::Off,
            io: Signal::Utilisation,
        });
        s.sample(secs(1.0)).unwrap();
        root.write("pressure/cpu", "torn write\n");
        assert!(s.sample(secs(2.0)).is_err());
        root.psi("cpu", 0.0, 1_500_000, None);
        root.diskstats(1_000, 0);
        let x = s.sample(secs(3.0)).unwrap();
        assert_eq!(x.elapsed, Some(secs(2.0)));
        assert!(close(x.get(Resource::Cpu).ratio, 0.75));
        assert!(close(x.get(Resource::Io).ratio, 0.5));
    }

    #[test]
    fn same_instant_gives_no_deltas() {
        let root = Root::new();
        root.psi("cpu", 30.0, 0, None);
        let mut s = root.sampler(PerResource {
            cpu: Signal::PsiSomeDelta,
            memory: Signal::Off,
            io: Signal::Off,
        });
        s.sample(secs(5.0)).unwrap();
        root.psi("cpu", 30.0, 1_000_000, None);
        let x = s.sample(secs(5.0)).unwrap();
        assert_eq!(x.elapsed, None);
        assert_eq!(x.get(Resource::Cpu).used, Signal::PsiSomeAvg10);
    }

    /// The real /proc parses, and every reading is a ratio.
    #[test]
    fn real_proc() {
        let mut s = Sampler::from_settings(&PressureSettings::default());
        s.sample(Duration::from_secs(1)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let x = s.sample(Duration::from_millis(1050)).unwrap();
        for (r, reading) in x.readings.iter() {
            assert!((0.0..=1.0).contains(&reading.ratio), "{r}: {reading:?}");
            assert!(reading.used != Signal::Auto);
        }
        assert!(x.get(Resource::Memory).utilisation_ratio.is_some());
    }

    #[test]
    fn settings() {
        assert_eq!(PressureSettings::default().validate(), Ok(()));
        let bad = PressureSettings {
            root: PathBuf::new(),
            interval: Duration::from_millis(50),
            signal: PerResource {
                cpu: Signal::PsiFullDelta,
                ..PerResource::default()
            },
        };
        let keys: Vec<String> = bad
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(
            keys,
            ["pressure.interval", "pressure.root", "pressure.signal.cpu"]
        );
        let slow = PressureSettings {
            interval: Duration::from_secs(11),
            ..PressureSettings::default()
        };
        assert_eq!(
            slow.validate().unwrap_err()[0].to_string(),
            "pressure.interval: must be between 100ms and 10s"
        );
    }

    #[test]
    fn signal_names() {
        let s: PerResource<Signal> =
            toml::from_str("cpu = \"psi_some_delta\"\nmemory = \"utilization\"\nio = \"off\"\n")
                .unwrap();
        assert_eq!(
            s,
            PerResource {
                cpu: Signal::PsiSomeDelta,
                memory: Signal::Utilisation,
                io: Signal::Off
            }
        );
        for sig in [
            Signal::Auto,
            Signal::PsiSomeAvg10,
            Signal::PsiFullAvg10,
            Signal::PsiSomeDelta,
            Signal::PsiFullDelta,
            Signal::Utilisation,
            Signal::Off,
        ] {
            let json = serde_json::to_string(&sig).unwrap();
            assert_eq!(json, format!("\"{}\"", sig.as_str()));
        }
        let e = toml::from_str::<PerResource<Signal>>(
            "cpu = \"psi\"\nmemory = \"auto\"\nio = \"auto\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `psi`"), "{e}");
        assert_eq!(Resource::Io.psi_path(), Path::new("pressure/io"));
    }
}
