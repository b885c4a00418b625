//! Limits suggested from the baseline: per class a rate (the sustained rate at the
//! quantile, times the headroom) and a burst (the 1 s peak at the quantile, times the
//! headroom, at least the rate), and per resource throttle thresholds above the readings
//! seen; with how many of the sources seen each suggestion would have limited.

use serde::{Deserialize, Serialize};

use super::{Baseline, ClassHistograms, Rates, SourceFigures};
use crate::pressure::Resource;

/// Fewer sources than this behind a class's suggestion make it a guess: it is printed with
/// a warning.
pub const FEW_SOURCES: u64 = 20;

/// What `trafficctl suggest` asks for.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SuggestRequest {
    /// Only this class (all classes with buckets when absent).
    pub class: Option<String>,
    /// The quantile of the sources' rates the limits sit on (0.5–1).
    pub quantile: f64,
    /// The factor above that quantile (1–100).
    pub headroom: f64,
}

impl SuggestRequest {
    /// Refuse values that make no limit.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.5..=1.0).contains(&self.quantile) {
            return Err(format!("quantile {} is not within 0.5–1", self.quantile));
        }
        if !(1.0..=100.0).contains(&self.headroom) {
            return Err(format!("headroom {} is not within 1–100", self.headroom));
        }
        Ok(())
    }
}

/// A rate and burst per second.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suggested {
    pub rate: u64,
    pub burst: u64,
}

/// The suggestion for one class.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassSuggestion {
    pub class: String,
    /// Sources with at least one figure behind the suggestion.
    pub sources: u64,
    pub packets: Option<Suggested>,
    pub bytes: Option<Suggested>,
    /// Sources seen that the suggested packet limit would have limited (over the rate for a
    /// window, or over rate + burst in a second); exact for live sources, estimated from the
    /// histograms for sources gone.
    pub would_limit: u64,
    /// Why there is no suggestion, or why it is a guess.
    pub note: Option<String>,
}

/// Throttle thresholds suggested for one resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThresholdSuggestion {
    pub resource: String,
    pub readings: u64,
    /// The reading at the quantile.
    pub reading: f64,
    pub low: f64,
    pub medium: f64,
    pub high: f64,
    pub critical: f64,
}

/// The whole answer of `/v1/suggest`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuggestReport {
    pub quantile: f64,
    pub headroom: f64,
    pub observed_seconds: f64,
    pub window_seconds: f64,
    pub live_sources: u64,
    pub skipped_sources: u64,
    pub classes: Vec<ClassSuggestion>,
    pub thresholds: Vec<ThresholdSuggestion>,
}

/// A class the daemon knows: its slot and whether it has per-source buckets.
pub struct ClassInfo<'a> {
    pub name: &'a str,
    pub slot: u32,
    pub has_buckets: bool,
}

/// Suggest for `classes` from `b`.
pub fn suggest(b: &Baseline, classes: &[ClassInfo<'_>], req: &SuggestRequest) -> SuggestReport {
    let classes = classes
        .iter()
        .filter(|c| req.class.as_deref().is_none_or(|n| n == c.name))
        .map(|c| class(b, c, req))
        .collect();
    let thresholds = Resource::ALL
        .iter()
        .filter_map(|&res| {
            let h = b.pressure(res)?;
            let q = h.quantile(req.quantile)?;
            let [low, medium, high, critical] = thresholds_above(q);
            Some(ThresholdSuggestion {
                resource: res.as_str().into(),
                readings: h.count(),
                reading: q,
                low,
                medium,
                high,
                critical,
            })
        })
        .collect();
    SuggestReport {
        quantile: req.quantile,
        headroom: req.headroom,
        observed_seconds: b.observed().as_secs_f64(),
        window_seconds: b.settings().window.as_secs_f64(),
        live_sources: b.live_count() as u64,
        skipped_sources: b.skipped,
        classes,
        thresholds,
    }
}

fn class(b: &Baseline, c: &ClassInfo<'_>, req: &SuggestRequest) -> ClassSuggestion {
    let mut out = ClassSuggestion {
        class: c.name.to_owned(),
        sources: 0,
        packets: None,
        bytes: None,
        would_limit: 0,
        note: None,
    };
    if !c.has_buckets {
        out.note = Some("no per-source limits: no buckets to observe".into());
        return out;
    }
    let h = b.class(c.slot);
    out.sources = h.sources;
    let pick = |sus: &super::LogHistogram, peak: &super::LogHistogram| {
        let rate = sus
            .quantile(req.quantile)
            .or_else(|| peak.quantile(req.quantile))?;
        let peak = peak.quantile(req.quantile).unwrap_or(rate);
        let rate = (rate * req.headroom).ceil().max(1.0) as u64;
        let burst = ((peak * req.headroom).ceil() as u64).max(rate);
        Some(Suggested { rate, burst })
    };
    out.packets = pick(&h.sustained_packets, &h.peak_packets);
    out.bytes = pick(&h.sustained_bytes, &h.peak_bytes).filter(|s| s.rate > 1);
    match out.packets {
        None => out.note = Some("no source observed long enough yet".into()),
        Some(p) => {
            out.would_limit = would_limit(b.live_sources(c.slot), b.gone(c.slot), p);
            if h.sources < FEW_SOURCES {
                out.note = Some(format!(
                    "only {} sources observed: a guess, not a baseline",
                    h.sources
                ));
            } else if h.sustained_packets.count() == 0 {
                out.note = Some("no full window observed yet: the rate is the 1 s peak".into());
            }
        }
    }
    out
}

/// Sources over a packet suggestion: live ones exactly; gone ones by their histograms (the
/// larger of those over the rate and those over rate + burst in a second, a lower bound).
fn would_limit(
    live: impl Iterator<Item = SourceFigures>,
    gone: Option<&ClassHistograms>,
    s: Suggested,
) -> u64 {
    let over = |r: Option<Rates>, limit: u64| r.is_some_and(|r| r.packets > limit as f64);
    let live = live
        .filter(|f| over(f.sustained, s.rate) || over(f.peak, s.rate + s.burst))
        .count() as u64;
    let gone = gone.map_or(0, |g| {
        g.sustained_packets
            .above(s.rate as f64)
            .max(g.peak_packets.above((s.rate + s.burst) as f64))
    });
    live + gone
}

/// Thresholds between reading `q` and 1: a quarter, half, three quarters and nine tenths
/// of the way, rounded to 0.001 and kept strictly increasing.
pub fn thresholds_above(q: f64) -> [f64; 4] {
    let q = q.clamp(0.0, 0.99);
    let mut out = [0.25, 0.5, 0.75, 0.9].map(|f| ((q + (1.0 - q) * f) * 1000.0).round() / 1000.0);
    for i in 1..4 {
        if out[i] <= out[i - 1] {
            out[i] = out[i - 1] + 0.001;
        }
    }
    out.map(|v| v.min(1.0))
}

/// The report as a TOML snippet to paste into the config, with the figures as comments.
pub fn render_toml(r: &SuggestReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# trafficctl suggest: the sources' rates at quantile {} × headroom {}",
        r.quantile, r.headroom
    );
    let _ = writeln!(
        s,
        "# observed {:.0} s (sustained window {:.0} s); {} sources followed now{}",
        r.observed_seconds,
        r.window_seconds,
        r.live_sources,
        if r.skipped_sources > 0 {
            format!(
                ", {} readings of sources past the table skipped",
                r.skipped_sources
            )
        } else {
            String::new()
        }
    );
    for c in &r.classes {
        let _ = writeln!(s, "\n[classes.{}]", toml_key(&c.class));
        let _ = writeln!(s, "# {} sources observed", c.sources);
        if let Some(n) = &c.note {
            let _ = writeln!(s, "# NOTE: {n}");
        }
        if let Some(p) = c.packets {
            let _ = writeln!(
                s,
                "# {} of the sources seen would have been limited",
                c.would_limit
            );
            let _ = writeln!(
                s,
                "packets = {{ rate = {}, per = \"1s\", burst = {} }}",
                p.rate, p.burst
            );
        }
        if let Some(b) = c.bytes {
            let _ = writeln!(
                s,
                "bytes = {{ rate = {}, per = \"1s\", burst = {} }}",
                b.rate, b.burst
            );
        }
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(s, "\n[throttle.thresholds]");
        for t in &r.thresholds {
            let _ = writeln!(
                s,
                "# {}: {} readings, {:.3} at the quantile",
                t.resource, t.readings, t.reading
            );
            let _ = writeln!(
                s,
                "{} = {{ low = {}, medium = {}, high = {}, critical = {} }}",
                t.resource, t.low, t.medium, t.high, t.critical
            );
        }
    }
    s
}

/// A class name as a TOML key: bare when it can be, quoted otherwise.
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}
