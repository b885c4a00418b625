//! [`Sampler`]: reads the files and turns them into one reading per resource.

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    CpuTimes, DEFAULT_ROOT, ParseError, PerResource, PressureSettings, Psi, Resource, Signal,
    io_devices, parse_diskstats, parse_meminfo, parse_proc_stat_cpu, parse_psi,
};

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
    /// The files read.
    files: Files,
}

/// The files a sample reads, their paths joined once.
struct Files {
    psi: PerResource<Source>,
    stat: Source,
    meminfo: Source,
    diskstats: Source,
}

impl Files {
    /// Under the real `/proc` the files are kept open (see [`Source`]).
    fn new(root: &Path) -> Self {
        let keep = root == Path::new(DEFAULT_ROOT);
        Self {
            psi: PerResource::from_fn(|r| Source::new(root.join(r.psi_path()), keep)),
            stat: Source::new(root.join("stat"), keep),
            meminfo: Source::new(root.join("meminfo"), keep),
            diskstats: Source::new(root.join("diskstats"), keep),
        }
    }
}

/// One file a sample reads. A `/proc` file is kept open and read again from its start,
/// which procfs answers with a fresh reading: an idle daemon's sample then costs no
/// `openat` (a path walk, the slowest call of an idle second on a VM). Any other root's
/// files are opened for every read: tests and tools replace them, and a kept file would
/// read the replaced one.
pub(super) struct Source {
    path: PathBuf,
    keep: bool,
    open: Option<File>,
    /// Length of the last reading: the next one's buffer is made this large up front.
    last_len: usize,
}

impl Source {
    pub(super) fn new(path: PathBuf, keep: bool) -> Self {
        Self {
            path,
            keep,
            open: None,
            last_len: 0,
        }
    }

    /// The file's text; `None` when it does not exist or the kernel does not support it.
    pub(super) fn read(&mut self) -> Result<Option<String>, SampleError> {
        if let Some(f) = &self.open {
            if let Ok(text) = from_start(f, &mut self.last_len) {
                return Ok(Some(text));
            }
            // Opened again below: an error that persists is reported from there.
            self.open = None;
        }
        let absent = |e: &io::Error| {
            e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EOPNOTSUPP)
        };
        let failed = |source| SampleError::Read {
            path: self.path.clone(),
            source,
        };
        // Non-blocking: opening a FIFO with no writer would wait for one.
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        match from_start(&f, &mut self.last_len) {
            Ok(text) => {
                if self.keep {
                    self.open = Some(f);
                }
                Ok(Some(text))
            }
            Err(e) if absent(&e) => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }

    /// Like [`Source::read`], but a missing file is an error when `needed`.
    fn read_needed(&mut self, needed: bool) -> Result<Option<String>, SampleError> {
        match self.read()? {
            None if needed => Err(SampleError::Read {
                path: self.path.clone(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "not found, and utilisation needs it",
                ),
            }),
            other => Ok(other),
        }
    }

    /// A parse error of this file.
    fn parse_error(&self, source: ParseError) -> SampleError {
        SampleError::Parse {
            path: self.path.clone(),
            source,
        }
    }
}

/// The most a sampled file may hold. `/proc/stat` of a machine with thousands of CPUs
/// stays far below it; `pressure.root` pointing at something endless (`/dev/zero`, a
/// growing log) gets an error instead of the daemon's memory.
pub(super) const MAX_FILE_BYTES: usize = 4 << 20;

/// The whole text of `f`, read from its start with positioned reads into a buffer sized by
/// the last reading (`last_len`, updated): two `pread`s for a file that did not grow, where
/// a seek and `read_to_string` cost a seek, an `fstat` and a seek more. A procfs file read
/// at offset 0 starts a fresh reading. A pipe cannot be read at an offset: an error, never
/// a wait.
fn from_start(f: &File, last_len: &mut usize) -> io::Result<String> {
    // One byte past the cap: a file of exactly the cap reads whole, a longer one fills it.
    let most = MAX_FILE_BYTES + 1;
    let mut buf = vec![0u8; (*last_len + 1024).next_power_of_two().min(most)];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len == most {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("larger than {} MiB", MAX_FILE_BYTES >> 20),
                ));
            }
            buf.resize((buf.len() * 2).min(most), 0);
        }
        match f.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    *last_len = len;
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("root", &self.root)
            .field("signal", &self.signal)
            .field("prev", &self.prev)
            .finish()
    }
}

impl Sampler {
    pub fn new(root: impl Into<PathBuf>, signal: PerResource<Signal>) -> Self {
        let root = root.into();
        Self {
            files: Files::new(&root),
            root,
            signal,
            prev: None,
        }
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
    ///
    /// About 100 lines: it reads each source once (PSI files, stat, meminfo, diskstats)
    /// and only then resolves the three readings, so one sample sees one moment.
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
            let file = self.files.psi.get_mut(r);
            let Some(text) = file.read()? else {
                continue;
            };
            let p = parse_psi(&text).map_err(|e| file.parse_error(e))?;
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

        if *self.signal.get(Resource::Cpu) != Signal::Off {
            let file = &mut self.files.stat;
            if let Some(text) = file.read_needed(needs_util(Resource::Cpu))? {
                let cpu = parse_proc_stat_cpu(&text).map_err(|e| file.parse_error(e))?;
                util.cpu = elapsed
                    .and(prev.and_then(|p| p.cpu))
                    .and_then(|before| cpu.utilisation_since(&before));
                next.cpu = Some(cpu);
            }
        }
        if *self.signal.get(Resource::Memory) != Signal::Off {
            let file = &mut self.files.meminfo;
            if let Some(text) = file.read_needed(needs_util(Resource::Memory))? {
                let mem = parse_meminfo(&text).map_err(|e| file.parse_error(e))?;
                util.memory = Some(mem.utilisation());
            }
        }
        if *self.signal.get(Resource::Io) != Signal::Off {
            let file = &mut self.files.diskstats;
            if let Some(text) = file.read_needed(needs_util(Resource::Io))? {
                let stats = parse_diskstats(&text).map_err(|e| file.parse_error(e))?;
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
pub(super) fn resolve(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_proc_file_gives_a_fresh_reading_each_time() {
        let mut stat = Source::new(PathBuf::from("/proc/stat"), true);
        let first = parse_proc_stat_cpu(&stat.read().unwrap().unwrap()).unwrap();
        assert!(stat.open.is_some(), "kept open");
        // Some CPU time passes on this thread's CPU.
        let end = std::time::Instant::now() + Duration::from_millis(50);
        while std::time::Instant::now() < end {
            std::hint::black_box(0u64);
        }
        let second = parse_proc_stat_cpu(&stat.read().unwrap().unwrap()).unwrap();
        assert!(second.total() > first.total(), "{first:?} then {second:?}");
    }

    #[test]
    fn another_roots_file_is_read_anew_after_being_replaced() {
        let dir = std::env::temp_dir().join(format!("trf-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meminfo");
        std::fs::write(&path, "one").unwrap();
        let mut f = Source::new(path.clone(), false);
        assert_eq!(f.read().unwrap().as_deref(), Some("one"));
        assert!(f.open.is_none(), "not kept");
        let next = dir.join("meminfo.new");
        std::fs::write(&next, "two").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(f.read().unwrap().as_deref(), Some("two"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(f.read().unwrap(), None, "gone: no file");
        assert!(f.read_needed(true).is_err(), "gone and needed: an error");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
