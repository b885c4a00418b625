//! `/proc/diskstats` and which devices count as disks for IO utilisation.

use serde::{Deserialize, Serialize};

use super::procfs::{ParseError, line_err};

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
