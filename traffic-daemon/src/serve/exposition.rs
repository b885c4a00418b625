//! Typed metric families built at scrape time, on the `prometheus` crate's model: each render
//! function of the daemon (`serve::metrics`, and one per feature: bans, feeds, watch,
//! listeners) adds families to an [`Exposition`]; the crate's [`prometheus::TextEncoder`]
//! writes them (text format 0.0.4), and its process collector adds `process_*`.
//!
//! Porting or adding a family is one call: [`Exposition::rows`] for a family from a list of
//! (labels, value) rows, or [`Exposition::family`] then [`Exposition::sample`] /
//! [`Exposition::histogram`] per series. Knows nothing of the daemon.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

/// Labels of one sample: names are fixed, values come from the state.
pub type Labels = Vec<(&'static str, String)>;

/// Families being built for one scrape.
#[derive(Default)]
pub struct Exposition {
    families: Vec<MetricFamily>,
}

/// Metric types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Histogram => MetricType::HISTOGRAM,
        }
    }
}

fn metric(labels: &[(&str, &str)]) -> Metric {
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name((*k).to_owned());
                l.set_value((*v).to_owned());
                l
            })
            .collect(),
    );
    m
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start a family. A family with no series is left out of the scrape (the crate's
    /// rule): families with a known label set are given their series at 0 instead.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.replace('\n', " "));
        f.set_field_type(kind.metric_type());
        self.families.push(f);
        self
    }

    /// The family being built; `name` must be the one [`Exposition::family`] started.
    fn current(&mut self, name: &str) -> Option<&mut MetricFamily> {
        let f = self.families.last_mut()?;
        debug_assert_eq!(f.name(), name, "a sample outside its family");
        (f.name() == name).then_some(f)
    }

    /// One series of a counter or gauge family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let Some(f) = self.current(name) else {
            return self;
        };
        let mut m = metric(labels);
        if f.get_field_type() == MetricType::COUNTER {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        f.mut_metric().push(m);
        self
    }

    /// One series of a histogram family, from cumulative bucket counts (upper bounds
    /// ascending; `+Inf` is `count`).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) -> &mut Self {
        let Some(f) = self.current(name) else {
            return self;
        };
        let mut h = Histogram::default();
        h.set_bucket(
            buckets
                .iter()
                .map(|(le, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(*le);
                    b.set_cumulative_count(*n);
                    b
                })
                .collect(),
        );
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        let mut m = metric(labels);
        m.set_histogram(h);
        f.mut_metric().push(m);
        self
    }

    /// A whole family from its rows (labels, value).
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

    /// The families built, for a collector.
    pub fn into_families(self) -> Vec<MetricFamily> {
        self.families
    }

    /// The families as text (tests, and callers without a registry); empty families are
    /// left out like the registry does.
    pub fn finish(self) -> String {
        encode(&self.into_families())
    }
}

/// Families as the text format, empty ones left out.
pub fn encode(families: &[MetricFamily]) -> String {
    let kept: Vec<MetricFamily> = families
        .iter()
        .filter(|f| !f.get_metric().is_empty())
        .cloned()
        .collect();
    prometheus::TextEncoder::new()
        .encode_to_string(&kept)
        .unwrap_or_else(|e| format!("# metrics could not be encoded: {e}\n"))
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
        e.rows("traffic_empty", Kind::Gauge, "No series.", []);
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
        assert!(!t.contains("traffic_empty"), "{t}");
    }
}
