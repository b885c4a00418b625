//! The Prometheus text format (0.0.4): families, samples and histograms written into one
//! string. Knows nothing of the daemon; `metrics` and the listeners' statistics write with it.

use std::fmt::Write as _;

/// Labels of one sample: names are fixed, values come from the state.
pub type Labels = Vec<(&'static str, String)>;

/// A metric family being written.
pub struct Exposition {
    out: String,
}

/// Metric types.
#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

impl Exposition {
    pub fn new() -> Self {
        Self { out: String::new() }
    }

    /// Start a family: `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample with labels.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    /// A histogram's samples from cumulative bucket counts (upper bounds ascending).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) -> &mut Self {
        for (le, n) in buckets {
            let le = number(*le);
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, *n as f64);
        }
        let mut l: Vec<(&str, &str)> = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, count as f64);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
        self
    }

    /// A whole family: `# HELP`, `# TYPE`, then one sample per row (none is fine: the
    /// family is still announced, as Prometheus expects for a known metric).
    pub fn rows(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        rows: impl IntoIterator<Item = (Labels, f64)>,
    ) -> &mut Self {
        self.family(name, kind, help);
        for (labels, value) in rows {
            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &l, value);
        }
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_samples_and_histograms() {
        let mut e = Exposition::new();
        e.family("traffic_packets_total", Kind::Counter, "Packets.")
            .sample(
                "traffic_packets_total",
                &[("class", "pre\"mium"), ("outcome", "pass")],
                12.0,
            );
        e.family(
            "traffic_probe_duration_seconds",
            Kind::Histogram,
            "Probe latency.",
        )
        .histogram(
            "traffic_probe_duration_seconds",
            &[("upstream", "web")],
            &[(0.005, 1), (0.01, 3)],
            4,
            0.0315,
        );
        let t = e.finish();
        assert!(t.contains("# TYPE traffic_packets_total counter\n"));
        assert!(t.contains("traffic_packets_total{class=\"pre\\\"mium\",outcome=\"pass\"} 12\n"));
        assert!(
            t.contains("traffic_probe_duration_seconds_bucket{upstream=\"web\",le=\"0.005\"} 1\n")
        );
        assert!(
            t.contains("traffic_probe_duration_seconds_bucket{upstream=\"web\",le=\"+Inf\"} 4\n")
        );
        assert!(t.contains("traffic_probe_duration_seconds_sum{upstream=\"web\"} 0.0315\n"));
        assert!(t.contains("traffic_probe_duration_seconds_count{upstream=\"web\"} 4\n"));
    }

    #[test]
    fn numbers() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }
}
