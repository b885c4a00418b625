//! Parsers of the procfs files pressure reads: PSI, `/proc/stat`'s `cpu` line and
//! `/proc/meminfo`. Pure: text in, values out.

use serde::{Deserialize, Serialize};

/// Why a file's text could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{0}")]
    Missing(String),
}

pub(super) fn line_err(line: usize, message: impl Into<String>) -> ParseError {
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
