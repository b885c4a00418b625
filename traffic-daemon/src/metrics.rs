//! Prometheus exposition (text format 0.0.4), rendered from the daemon's state on each
//! scrape. Names are `traffic_*` in base units; no label ever carries a source address, so
//! the series count is bounded by classes × reasons and upstreams.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::daemon::Shared;

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
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
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

    pub fn finish(self) -> String {
        self.out
    }
}

/// Render every family from the daemon's state.
pub fn render(core: &crate::daemon::Core) -> String {
    let mut e = Exposition::new();
    let status = core.status();
    e.family("traffic_build_info", Kind::Gauge, "Build of the running trafficd (value is always 1).")
        .sample(
            "traffic_build_info",
            &[("version", &status.version), ("abi", &status.abi_version.to_string())],
            1.0,
        );
    e.family("traffic_uptime_seconds", Kind::Gauge, "Seconds since trafficd started.")
        .sample("traffic_uptime_seconds", &[], status.uptime_seconds as f64);

    match core.counters() {
        Ok(counters) => {
            e.family(
                "traffic_packets_total",
                Kind::Counter,
                "Packets seen by the XDP program by class, outcome (pass, drop, would_drop) and reason.",
            );
            for c in &counters.classes {
                for r in &c.reasons {
                    e.sample(
                        "traffic_packets_total",
                        &[("class", &c.class), ("outcome", r.outcome.name()), ("reason", &r.reason)],
                        r.packets as f64,
                    );
                }
            }
            e.family(
                "traffic_bytes_total",
                Kind::Counter,
                "Bytes (whole frames) seen by the XDP program by class, outcome and reason.",
            );
            for c in &counters.classes {
                for r in &c.reasons {
                    e.sample(
                        "traffic_bytes_total",
                        &[("class", &c.class), ("outcome", r.outcome.name()), ("reason", &r.reason)],
                        r.bytes as f64,
                    );
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "metrics: cannot read counters"),
    }

    if let Ok(limits) = core.limits() {
        e.family(
            "traffic_class_limit_factor_ratio",
            Kind::Gauge,
            "Multiplier applied to the class's configured limits (1 without pressure).",
        );
        for c in &limits.classes {
            e.sample("traffic_class_limit_factor_ratio", &[("class", &c.class)], c.factor);
        }
        e.family(
            "traffic_class_packet_rate_limit",
            Kind::Gauge,
            "Effective packets per second allowed per source, per stacked limit.",
        );
        for c in &limits.classes {
            for (i, l) in c.packets.iter().enumerate() {
                e.sample(
                    "traffic_class_packet_rate_limit",
                    &[("class", &c.class), ("limit", &i.to_string())],
                    l.rate_per_sec,
                );
            }
        }
        e.family(
            "traffic_class_packet_burst_limit",
            Kind::Gauge,
            "Effective packet burst per source, per stacked limit.",
        );
        for c in &limits.classes {
            for (i, l) in c.packets.iter().enumerate() {
                e.sample(
                    "traffic_class_packet_burst_limit",
                    &[("class", &c.class), ("limit", &i.to_string())],
                    l.burst as f64,
                );
            }
        }
        e.family(
            "traffic_class_byte_rate_limit",
            Kind::Gauge,
            "Effective bytes per second allowed per source.",
        );
        for c in &limits.classes {
            if let Some(b) = &c.bytes {
                e.sample("traffic_class_byte_rate_limit", &[("class", &c.class)], b.rate_per_sec);
            }
        }
        e.family("traffic_tracked_sources", Kind::Gauge, "Sources with their own bucket, per class.");
        for c in &limits.classes {
            e.sample("traffic_tracked_sources", &[("class", &c.class)], c.tracked_sources as f64);
        }
        e.family(
            "traffic_admitted_sources_total",
            Kind::Counter,
            "New sources that got their own bucket.",
        );
        for c in &limits.classes {
            e.sample("traffic_admitted_sources_total", &[("class", &c.class)], c.admitted as f64);
        }
        e.family(
            "traffic_overflow_packets_total",
            Kind::Counter,
            "Packets of sources over the admission budget, charged to the class's overflow bucket.",
        );
        for c in &limits.classes {
            e.sample("traffic_overflow_packets_total", &[("class", &c.class)], c.overflowed as f64);
        }
        e.family(
            "traffic_map_full_total",
            Kind::Counter,
            "Bucket inserts the source table refused (charged to the overflow bucket).",
        );
        for c in &limits.classes {
            e.sample("traffic_map_full_total", &[("class", &c.class)], c.map_full as f64);
        }
    }

    let r = &status.reload;
    e.family(
        "traffic_config_reloads_total",
        Kind::Counter,
        "Configuration reloads by result.",
    )
    .sample("traffic_config_reloads_total", &[("result", "success")], r.succeeded as f64)
    .sample("traffic_config_reloads_total", &[("result", "failure")], r.failed as f64);
    e.family(
        "traffic_config_last_reload_successful",
        Kind::Gauge,
        "1 if the last reload attempt succeeded (or none was made), 0 if it failed.",
    )
    .sample(
        "traffic_config_last_reload_successful",
        &[],
        if r.last_error.is_none() { 1.0 } else { 0.0 },
    );
    e.family(
        "traffic_config_last_reload_success_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last successful (re)load.",
    )
    .sample(
        "traffic_config_last_reload_success_timestamp_seconds",
        &[],
        r.last_success_unix.unwrap_or(0) as f64,
    );
    e.finish()
}

/// The `/metrics` route.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(shared)
}

async fn scrape(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let text = s.lock().metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}

/// Serve `/metrics` on `addr` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    if let Err(e) = axum::serve(listener, router(shared)).await {
        tracing::error!(error = %e, "metrics listener stopped");
    }
}

/// Bind the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
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
        e.family("traffic_probe_duration_seconds", Kind::Histogram, "Probe latency.")
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
        assert!(t.contains("traffic_probe_duration_seconds_bucket{upstream=\"web\",le=\"0.005\"} 1\n"));
        assert!(t.contains("traffic_probe_duration_seconds_bucket{upstream=\"web\",le=\"+Inf\"} 4\n"));
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
