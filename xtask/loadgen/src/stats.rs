//! Benchmark bookkeeping: one sample per figure per repetition, summarised as
//! min / median / max; paired ratios computed inside each repetition (both sides measured
//! in the same repetition, moments apart) and only then summarised; targets judged on the
//! median and on every repetition; a table for people and the same figures as JSON.
//!
//! Pure: no clock, no kernel. The benchmark (`xtask/bench`, package `traffic-bench`) fills a
//! [`BenchReport`], `cargo xtask bench` reads the JSON back.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// Min, median and max of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// Summarise finite samples (NaN and infinities are ignored); `None` if there are none. The
/// median of an even count is the mean of the two middle samples.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        min: v[0],
        median,
        max: v[n - 1],
    })
}

/// The order of `items` for repetition `rep`: rotated left by `rep`, so every variant
/// takes every position (first, after the floor, last) as often as the others.
pub fn rotation<T: Clone>(items: &[T], rep: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let k = rep % v.len();
        v.rotate_left(k);
    }
    v
}

/// One measured or derived quantity, one sample per repetition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figure {
    /// Stable key, e.g. `known_pass.work_ns`.
    pub name: String,
    /// Unit, e.g. `ns`, `ns/packet`, `ratio`, `Mpps`.
    pub unit: String,
    /// What it is and how it was measured, in one line.
    pub about: String,
    /// Samples in repetition order (NaN for a repetition where it could not be measured;
    /// `null` in JSON).
    #[serde(with = "nan_as_null")]
    pub samples: Vec<f64>,
    /// Summary of the finite samples; `None` if there are none.
    pub summary: Option<Summary>,
}

/// A bound a figure must meet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Bound {
    /// The figure must be at most this.
    AtMost(f64),
    /// The figure must be at least this.
    AtLeast(f64),
}

impl Bound {
    /// Whether `value` meets the bound.
    pub fn holds(self, value: f64) -> bool {
        match self {
            Bound::AtMost(b) => value <= b,
            Bound::AtLeast(b) => value >= b,
        }
    }

    fn render(self) -> String {
        match self {
            Bound::AtMost(b) => format!("≤ {}", fmt_num(b)),
            Bound::AtLeast(b) => format!("≥ {}", fmt_num(b)),
        }
    }

    /// The sample that is hardest on the bound.
    fn worst(self, s: &Summary) -> f64 {
        match self {
            Bound::AtMost(_) => s.max,
            Bound::AtLeast(_) => s.min,
        }
    }
}

/// A target judged on a figure of the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    /// What the target says, e.g. "known-source program work ≤ 60 ns".
    pub name: String,
    /// The figure it is judged on.
    pub figure: String,
    pub bound: Bound,
    /// A tighter aim, reported but not required.
    pub aim: Option<Bound>,
    /// The figure's median, if it was measured.
    pub median: Option<f64>,
    /// The figure's worst repetition with respect to the bound.
    pub worst: Option<f64>,
    /// The median meets the bound.
    pub met: bool,
    /// Every repetition meets the bound.
    pub met_every_rep: bool,
    /// The median meets the aim (false without an aim).
    pub aim_met: bool,
}

/// One benchmark's results.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BenchReport {
    /// Short name; the JSON file is `<name>.json`.
    pub name: String,
    /// Title printed above the table.
    pub title: String,
    /// Free-form facts about the run (repetitions, repeat counts, kernel, tools, settings).
    pub meta: serde_json::Map<String, serde_json::Value>,
    pub figures: Vec<Figure>,
    pub targets: Vec<Target>,
    /// Observations that are not figures (skips, anomalies, explanations).
    pub notes: Vec<String>,
}

impl BenchReport {
    /// An empty report.
    pub fn new(name: &str, title: &str) -> Self {
        Self {
            name: name.to_owned(),
            title: title.to_owned(),
            ..Self::default()
        }
    }

    /// Record a fact about the run.
    pub fn meta(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.meta.insert(key.to_owned(), value.into());
    }

    /// Add a figure from its per-repetition samples.
    pub fn figure(&mut self, name: &str, unit: &str, about: &str, samples: Vec<f64>) {
        let summary = summarize(&samples);
        self.figures.push(Figure {
            name: name.to_owned(),
            unit: unit.to_owned(),
            about: about.to_owned(),
            samples,
            summary,
        });
    }

    /// Add a paired ratio `num / den`, computed within each repetition. Both figures must be
    /// present; a repetition where either is missing (or the denominator is 0) gives NaN.
    pub fn ratio(&mut self, name: &str, num: &str, den: &str, about: &str) {
        let (Some(n), Some(d)) = (self.samples(num), self.samples(den)) else {
            self.notes
                .push(format!("ratio {name}: {num} or {den} was not measured"));
            return;
        };
        let samples = n
            .iter()
            .zip(d.iter())
            .map(|(a, b)| if *b != 0.0 { a / b } else { f64::NAN })
            .collect();
        self.figure(name, "ratio", about, samples);
    }

    /// Samples of a figure.
    pub fn samples(&self, name: &str) -> Option<Vec<f64>> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.samples.clone())
    }

    /// Summary of a figure.
    pub fn summary(&self, name: &str) -> Option<Summary> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.summary)
    }

    /// Judge a target on a figure.
    pub fn target(&mut self, name: &str, figure: &str, bound: Bound, aim: Option<Bound>) {
        let s = self.summary(figure);
        let samples = self.samples(figure).unwrap_or_default();
        let met = s.is_some_and(|s| bound.holds(s.median));
        let met_every_rep =
            !samples.is_empty() && samples.iter().all(|x| x.is_finite() && bound.holds(*x));
        self.targets.push(Target {
            name: name.to_owned(),
            figure: figure.to_owned(),
            bound,
            aim,
            median: s.map(|s| s.median),
            worst: s.map(|s| bound.worst(&s)),
            met,
            met_every_rep,
            aim_met: aim.is_some_and(|a| s.is_some_and(|s| a.holds(s.median))),
        });
    }

    /// Add a note.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The figures and targets as a plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {} ==", self.title);
        let width = self
            .figures
            .iter()
            .map(|f| f.name.chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            out,
            "{:<width$}  {:>10}  {:>10}  {:>10}  unit",
            "figure", "min", "median", "max"
        );
        for f in &self.figures {
            let (a, b, c) = match f.summary {
                Some(s) => (fmt_num(s.min), fmt_num(s.median), fmt_num(s.max)),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {a:>10}  {b:>10}  {c:>10}  {}",
                f.name, f.unit
            );
        }
        if !self.targets.is_empty() {
            let _ = writeln!(
                out,
                "-- targets (judged on the median; worst repetition shown) --"
            );
            for t in &self.targets {
                let verdict = match (t.met, t.met_every_rep) {
                    (true, true) => "MET",
                    (true, false) => "MET (median; not every rep)",
                    (false, _) => "MISSED",
                };
                let aim = match t.aim {
                    Some(a) => format!(
                        "; aim {} {}",
                        a.render(),
                        if t.aim_met { "met" } else { "not met" }
                    ),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{verdict:<28} {}: {} {} (median {}, worst {}){aim}",
                    t.name,
                    t.figure,
                    t.bound.render(),
                    t.median.map_or("-".into(), fmt_num),
                    t.worst.map_or("-".into(), fmt_num),
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// Write `<dir>/<name>.json`; returns its path.
    pub fn write_json(&self, dir: &Path) -> Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.name));
        let text = serde_json::to_string_pretty(self).context("serialise the report")?;
        std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Read a report written by [`BenchReport::write_json`].
    pub fn read_json(path: &Path) -> Result<BenchReport> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }
}

/// JSON has no NaN: missing samples are written as `null` and read back as NaN.
mod nan_as_null {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v = Vec::<Option<f64>>::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}

/// A number with about four significant digits.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = summarize(&[3.0, 1.0, 2.0]).expect("samples");
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = summarize(&[4.0, 1.0, 2.0, 3.0, f64::NAN]).expect("samples");
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert!(summarize(&[f64::NAN]).is_none());
    }

    #[test]
    fn rotation_moves_every_item_through_every_place() {
        let items = ["a", "b", "c"];
        assert_eq!(rotation(&items, 0), ["a", "b", "c"]);
        assert_eq!(rotation(&items, 1), ["b", "c", "a"]);
        assert_eq!(rotation(&items, 4), ["b", "c", "a"]);
    }

    #[test]
    fn ratios_are_paired_per_repetition() {
        let mut r = BenchReport::new("t", "t");
        r.figure("a", "ns", "", vec![10.0, 20.0, 30.0]);
        r.figure("b", "ns", "", vec![5.0, 40.0, 10.0]);
        r.ratio("a/b", "a", "b", "");
        // Paired: 2, 0.5, 3 — not median(a)/median(b) = 20/10.
        let s = r.summary("a/b").expect("ratio");
        assert_eq!((s.min, s.median, s.max), (0.5, 2.0, 3.0));
    }

    #[test]
    fn targets_on_median_and_every_rep() {
        let mut r = BenchReport::new("t", "t");
        r.figure("x", "ns", "", vec![50.0, 55.0, 70.0]);
        r.target(
            "x small",
            "x",
            Bound::AtMost(60.0),
            Some(Bound::AtMost(35.0)),
        );
        let t = &r.targets[0];
        assert!(t.met && !t.met_every_rep && !t.aim_met);
        assert_eq!(t.worst, Some(70.0));
        r.target("missing", "nope", Bound::AtLeast(1.0), None);
        assert!(!r.targets[1].met);
    }

    #[test]
    fn json_round_trip() {
        let mut r = BenchReport::new("t", "title");
        r.meta("reps", 5);
        r.figure("x", "ns", "about", vec![1.0, f64::NAN]);
        let dir = std::env::temp_dir().join(format!("benchstat-{}", std::process::id()));
        let path = r.write_json(&dir).expect("write");
        let back = BenchReport::read_json(&path).expect("read");
        assert_eq!(back.figures[0].summary, r.figures[0].summary);
        assert!(back.figures[0].samples[1].is_nan());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
