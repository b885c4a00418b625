//! What the daemon reports (admin API JSON, CLI tables, log summaries). Pure: built from
//! map snapshots and config, rendered to text without I/O.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use traffic_common::{COUNTER_ROWS, Counter, Reason, UNCLASSIFIED, counter_index};

use crate::plan::Slots;

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

impl Totals {
    fn add(&mut self, c: &Counter) {
        self.packets += c.packets;
        self.bytes += c.bytes;
    }
}

/// What happened to the packets counted under a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PacketOutcome {
    Pass,
    Drop,
    /// A drop reason in monitor mode: counted, passed.
    WouldDrop,
}

impl PacketOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::WouldDrop => "would_drop",
        }
    }
}

/// One non-zero (reason, outcome) counter of a class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub outcome: PacketOutcome,
    pub packets: u64,
    pub bytes: u64,
}

/// Counters of one class (or of `unclassified` traffic).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounters {
    pub class: String,
    pub passed: Totals,
    pub dropped: Totals,
    pub would_drop: Totals,
    pub reasons: Vec<ReasonCount>,
}

/// `GET /v1/counters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersReport {
    pub classes: Vec<ClassCounters>,
}

impl CountersReport {
    /// Counters of a class by name.
    pub fn class(&self, name: &str) -> Option<&ClassCounters> {
        self.classes.iter().find(|c| c.class == name)
    }
}

/// Name of the counter row for traffic without a class.
pub const UNCLASSIFIED_NAME: &str = "unclassified";

/// Build the report from raw (CPU-summed) counters. Rows of configured classes are always
/// listed; other rows only when they counted something.
pub fn counters_report(raw: &[Counter], slots: &Slots) -> CountersReport {
    let mut classes = Vec::new();
    for row in 0..COUNTER_ROWS {
        let name = if row == UNCLASSIFIED {
            Some(UNCLASSIFIED_NAME.to_owned())
        } else {
            slots.name_of(row).map(str::to_owned)
        };
        let mut c = ClassCounters {
            class: name.clone().unwrap_or_else(|| format!("slot{row}")),
            passed: Totals::default(),
            dropped: Totals::default(),
            would_drop: Totals::default(),
            reasons: Vec::new(),
        };
        for reason in Reason::ALL {
            for monitored in [false, true] {
                let Some(v) = raw.get(counter_index(row, reason as u32, monitored) as usize) else {
                    continue;
                };
                if v.packets == 0 {
                    continue;
                }
                let outcome = match (reason.is_drop(), monitored) {
                    (false, _) => PacketOutcome::Pass,
                    (true, false) => PacketOutcome::Drop,
                    (true, true) => PacketOutcome::WouldDrop,
                };
                match outcome {
                    PacketOutcome::Pass => c.passed.add(v),
                    PacketOutcome::Drop => c.dropped.add(v),
                    PacketOutcome::WouldDrop => {
                        // Would-drops were passed too.
                        c.would_drop.add(v);
                        c.passed.add(v);
                    }
                }
                c.reasons.push(ReasonCount {
                    reason: reason.name().to_owned(),
                    outcome,
                    packets: v.packets,
                    bytes: v.bytes,
                });
            }
        }
        if name.is_some() && (row != UNCLASSIFIED || !c.reasons.is_empty()) || !c.reasons.is_empty()
        {
            classes.push(c);
        }
    }
    CountersReport { classes }
}

/// One limit as enforced: rate per second and burst.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EffectiveLimit {
    pub rate_per_sec: f64,
    pub burst: u64,
}

/// Effective limits of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassLimits {
    pub class: String,
    pub priority: crate::config::Priority,
    pub mode: crate::config::Mode,
    /// Multiplier applied to the configured limits (1.0 without pressure).
    pub factor: f64,
    /// Packet limits (stacked).
    pub packets: Vec<EffectiveLimit>,
    /// Byte limit, bytes per second.
    pub bytes: Option<EffectiveLimit>,
    pub aggregate_v4: u8,
    pub aggregate_v6: u8,
    /// New sources per second that get their own bucket; `None` = unlimited.
    pub admission: Option<EffectiveLimit>,
    pub overflow: Option<EffectiveLimit>,
    /// Tracked sources (buckets) of this class at the last walk.
    pub tracked_sources: u64,
    pub admitted: u64,
    pub overflowed: u64,
    pub map_full: u64,
    /// New buckets that started with a debt the kernel remembered (an evicted source that
    /// had been refused came back). Absent from older daemons.
    #[serde(default)]
    pub indebted: u64,
}

/// `GET /v1/limits`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitsReport {
    pub level: String,
    pub classes: Vec<ClassLimits>,
}

fn limit_text(l: &EffectiveLimit, unit: &str) -> String {
    format!("{:.1}{unit}/s burst {}", l.rate_per_sec, l.burst)
}

/// The `trafficctl limits` table.
pub fn render_limits(r: &LimitsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "throttle level: {}", r.level);
    let _ = writeln!(
        out,
        "{:<12} {:<9} {:>6} {:<34} {:<30} {:>8} {:>9}",
        "CLASS", "PRIORITY", "FACTOR", "PACKETS", "BYTES", "SOURCES", "OVERFLOW"
    );
    for c in &r.classes {
        let packets = if c.packets.is_empty() {
            "-".to_owned()
        } else {
            c.packets
                .iter()
                .map(|l| limit_text(l, "p"))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        let bytes = c.bytes.as_ref().map_or("-".to_owned(), |b| {
            format!(
                "{}/s burst {}",
                human_bytes(b.rate_per_sec as u64),
                human_bytes(b.burst)
            )
        });
        let _ = writeln!(
            out,
            "{:<12} {:<9} {:>6.2} {:<34} {:<30} {:>8} {:>9}",
            c.class,
            format!("{:?}", c.priority).to_lowercase(),
            c.factor,
            packets,
            bytes,
            thousands(c.tracked_sources),
            thousands(c.overflowed),
        );
    }
    out
}

/// One tracked source (bucket).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceEntry {
    pub class: String,
    /// The bucket's prefix, e.g. `198.18.1.10/32` or `2001:db8:1::/64`.
    pub prefix: String,
    pub packets: u64,
    pub dropped: u64,
    /// Tokens left in the first packet limit (None for classes without packet limits).
    pub tokens: Option<f64>,
}

/// `GET /v1/sources?top=N`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcesReport {
    /// Tracked sources in total (all classes).
    pub tracked: u64,
    pub sources: Vec<SourceEntry>,
    /// The walk of the bucket map stopped at its time budget: `tracked` and the rows
    /// cover part of the map.
    #[serde(default)]
    pub partial: bool,
}

/// The `trafficctl sources` table.
pub fn render_sources(r: &SourcesReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}{} tracked sources; top {} by packets:",
        if r.partial { "at least " } else { "" },
        thousands(r.tracked),
        r.sources.len()
    );
    if r.partial {
        let _ = writeln!(
            out,
            "(partial: the walk of the bucket map stopped at its time budget)"
        );
    }
    let _ = writeln!(
        out,
        "{:<12} {:<42} {:>12} {:>12} {:>9}",
        "CLASS", "SOURCE", "PACKETS", "DROPPED", "TOKENS"
    );
    for s in &r.sources {
        let tokens = s.tokens.map_or("-".to_owned(), |t| format!("{t:.0}"));
        let _ = writeln!(
            out,
            "{:<12} {:<42} {:>12} {:>12} {:>9}",
            s.class,
            s.prefix,
            thousands(s.packets),
            thousands(s.dropped),
            tokens
        );
    }
    out
}

/// Human-readable count: 1234 → "1,234".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Human-readable bytes: 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The `trafficctl counters` table.
pub fn render_counters(r: &CountersReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:>12} {:>11} {:>12} {:>11} {:>12}",
        "CLASS", "PASSED", "BYTES", "DROPPED", "BYTES", "WOULD-DROP"
    );
    for c in &r.classes {
        let _ = writeln!(
            out,
            "{:<14} {:>12} {:>11} {:>12} {:>11} {:>12}",
            c.class,
            thousands(c.passed.packets),
            human_bytes(c.passed.bytes),
            thousands(c.dropped.packets),
            human_bytes(c.dropped.bytes),
            thousands(c.would_drop.packets),
        );
    }
    let detail: Vec<_> = r
        .classes
        .iter()
        .flat_map(|c| c.reasons.iter().map(move |x| (c, x)))
        .collect();
    if !detail.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<14} {:<11} {:<12} {:>12} {:>11}",
            "CLASS", "OUTCOME", "REASON", "PACKETS", "BYTES"
        );
        for (c, x) in detail {
            let _ = writeln!(
                out,
                "{:<14} {:<11} {:<12} {:>12} {:>11}",
                c.class,
                x.outcome.name(),
                x.reason,
                thousands(x.packets),
                human_bytes(x.bytes),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use traffic_common::COUNTERS_ENTRIES;

    use super::*;
    use crate::config::Config;

    fn slots() -> Slots {
        let c = Config::parse(
            Path::new("t.toml"),
            "[daemon]\ninterfaces=[\"eth0\"]\n[classes.default]\npackets={rate=1}\n[classes.premium]\n",
        )
        .unwrap();
        Slots::default().assign(&c)
    }

    #[test]
    fn totals_by_outcome() {
        let s = slots();
        let p = s.slot_of("premium").unwrap();
        let mut raw = vec![Counter::default(); COUNTERS_ENTRIES as usize];
        raw[counter_index(p, Reason::Pass as u32, false) as usize] = Counter {
            packets: 10,
            bytes: 1000,
        };
        raw[counter_index(p, Reason::PacketRate as u32, false) as usize] = Counter {
            packets: 3,
            bytes: 300,
        };
        raw[counter_index(p, Reason::PacketRate as u32, true) as usize] = Counter {
            packets: 2,
            bytes: 200,
        };
        raw[counter_index(UNCLASSIFIED, Reason::NonIp as u32, false) as usize] = Counter {
            packets: 1,
            bytes: 60,
        };
        let r = counters_report(&raw, &s);
        let pc = r.class("premium").unwrap();
        assert_eq!(
            pc.passed,
            Totals {
                packets: 12,
                bytes: 1200
            }
        );
        assert_eq!(
            pc.dropped,
            Totals {
                packets: 3,
                bytes: 300
            }
        );
        assert_eq!(
            pc.would_drop,
            Totals {
                packets: 2,
                bytes: 200
            }
        );
        assert_eq!(pc.reasons.len(), 3);
        assert_eq!(r.class(UNCLASSIFIED_NAME).unwrap().passed.packets, 1);
        assert!(
            r.class("default").is_some(),
            "configured classes always listed"
        );
        let table = render_counters(&r);
        assert!(table.contains("premium"));
        assert!(table.contains("packet_rate"));
        assert!(table.contains("would_drop"));
    }

    #[test]
    fn unclassified_row_hidden_when_empty() {
        let raw = vec![Counter::default(); COUNTERS_ENTRIES as usize];
        let r = counters_report(&raw, &slots());
        assert!(r.class(UNCLASSIFIED_NAME).is_none());
    }

    #[test]
    fn number_formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
