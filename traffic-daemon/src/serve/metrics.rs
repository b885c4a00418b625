//! Prometheus exposition (text format 0.0.4), rendered from the daemon's state on each
//! scrape. Names are `traffic_*` in base units; no label ever carries a source address, so
//! the series count is bounded by classes × reasons and upstreams.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use super::Shared;

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

    pub fn finish(self) -> String {
        self.out
    }
}

/// Render every family from the daemon's state.
pub fn render(core: &mut crate::engine::Core) -> String {
    let mut e = Exposition::new();
    let status = core.status();
    e.family(
        "traffic_build_info",
        Kind::Gauge,
        "Build of the running trafficd (value is always 1).",
    )
    .sample(
        "traffic_build_info",
        &[
            ("version", &status.version),
            ("abi", &status.abi_version.to_string()),
        ],
        1.0,
    );
    e.family(
        "traffic_uptime_seconds",
        Kind::Gauge,
        "Seconds since trafficd started.",
    )
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
                        &[
                            ("class", &c.class),
                            ("outcome", r.outcome.name()),
                            ("reason", &r.reason),
                        ],
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
                        &[
                            ("class", &c.class),
                            ("outcome", r.outcome.name()),
                            ("reason", &r.reason),
                        ],
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
            e.sample(
                "traffic_class_limit_factor_ratio",
                &[("class", &c.class)],
                c.factor,
            );
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
                e.sample(
                    "traffic_class_byte_rate_limit",
                    &[("class", &c.class)],
                    b.rate_per_sec,
                );
            }
        }
        e.family(
            "traffic_tracked_sources",
            Kind::Gauge,
            "Sources with their own bucket, per class.",
        );
        for c in &limits.classes {
            e.sample(
                "traffic_tracked_sources",
                &[("class", &c.class)],
                c.tracked_sources as f64,
            );
        }
        e.family(
            "traffic_admitted_sources_total",
            Kind::Counter,
            "New sources that got their own bucket.",
        );
        for c in &limits.classes {
            e.sample(
                "traffic_admitted_sources_total",
                &[("class", &c.class)],
                c.admitted as f64,
            );
        }
        e.family(
            "traffic_overflow_packets_total",
            Kind::Counter,
            "Packets of sources over the admission budget, charged to the class's overflow bucket.",
        );
        for c in &limits.classes {
            e.sample(
                "traffic_overflow_packets_total",
                &[("class", &c.class)],
                c.overflowed as f64,
            );
        }
        e.family(
            "traffic_map_full_total",
            Kind::Counter,
            "Bucket inserts the source table refused (charged to the overflow bucket).",
        );
        for c in &limits.classes {
            e.sample(
                "traffic_map_full_total",
                &[("class", &c.class)],
                c.map_full as f64,
            );
        }
    }

    // Throttle.
    let t = core.throttle_status();
    e.family(
        "traffic_throttle_level",
        Kind::Gauge,
        "Throttle level: 0 none, 1 low, 2 medium, 3 high, 4 critical.",
    )
    .sample("traffic_throttle_level", &[], f64::from(t.level.severity()));
    e.family(
        "traffic_throttle_multiplier_ratio",
        Kind::Gauge,
        "Rate multiplier of the current level (before class priority).",
    )
    .sample("traffic_throttle_multiplier_ratio", &[], t.multiplier);
    e.family(
        "traffic_throttle_transitions_total",
        Kind::Counter,
        "Throttle level changes.",
    )
    .sample(
        "traffic_throttle_transitions_total",
        &[],
        t.transitions as f64,
    );
    e.family(
        "traffic_pressure_ratio",
        Kind::Gauge,
        "Last pressure reading per resource (the configured signal), 0–1.",
    );
    for r in &t.resources {
        if let Some(v) = r.ratio {
            e.sample(
                "traffic_pressure_ratio",
                &[("resource", r.resource.as_str())],
                v,
            );
        }
    }
    e.family(
        "traffic_pressure_threshold_ratio",
        Kind::Gauge,
        "Reading at which each throttle level starts, per resource.",
    );
    for r in &t.resources {
        for (level, v) in [
            ("low", r.thresholds.low),
            ("medium", r.thresholds.medium),
            ("high", r.thresholds.high),
            ("critical", r.thresholds.critical),
        ] {
            e.sample(
                "traffic_pressure_threshold_ratio",
                &[("resource", r.resource.as_str()), ("level", level)],
                v,
            );
        }
    }
    e.family(
        "traffic_rescaled_buckets_total",
        Kind::Counter,
        "Buckets rewritten to keep their tokens when limits changed.",
    )
    .sample(
        "traffic_rescaled_buckets_total",
        &[],
        core.rescaled_total as f64,
    );

    // Upstreams: breakers, probes, bulkheads, gates.
    if let Ok(circuits) = core.circuits() {
        e.family(
            "traffic_breaker_state",
            Kind::Gauge,
            "1 for the breaker's current state (closed, open, half_open), 0 for the others.",
        );
        for u in &circuits.upstreams {
            for st in crate::policy::breaker::BreakerState::ALL {
                e.sample(
                    "traffic_breaker_state",
                    &[("upstream", &u.name), ("state", st.as_str())],
                    if st == u.breaker.state { 1.0 } else { 0.0 },
                );
            }
        }
        e.family(
            "traffic_breaker_transitions_total",
            Kind::Counter,
            "Breaker state changes (and operator actions) by reason.",
        );
        for u in &core.upstreams {
            for (reason, n) in &u.transitions_by_reason {
                e.sample(
                    "traffic_breaker_transitions_total",
                    &[("upstream", &u.spec.name), ("reason", reason)],
                    *n as f64,
                );
            }
        }
        e.family(
            "traffic_breaker_error_ratio",
            Kind::Gauge,
            "Share of failed outcomes in the breaker's window.",
        );
        for u in &circuits.upstreams {
            e.sample(
                "traffic_breaker_error_ratio",
                &[("upstream", &u.name)],
                u.breaker.error_rate_ratio,
            );
        }
        e.family(
            "traffic_probes_total",
            Kind::Counter,
            "Active probes by result.",
        );
        for u in &circuits.upstreams {
            e.sample(
                "traffic_probes_total",
                &[("upstream", &u.name), ("result", "success")],
                u.probes_ok as f64,
            );
            e.sample(
                "traffic_probes_total",
                &[("upstream", &u.name), ("result", "failure")],
                u.probes_failed as f64,
            );
        }
        e.family(
            "traffic_probe_duration_seconds",
            Kind::Histogram,
            "Latency of successful probes.",
        );
        for u in &circuits.upstreams {
            let buckets: Vec<(f64, u64)> = crate::policy::upstream::LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(
                    u.latency
                        .buckets
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(0)),
                )
                .collect();
            e.histogram(
                "traffic_probe_duration_seconds",
                &[("upstream", &u.name)],
                &buckets,
                u.latency.count,
                u.latency.sum,
            );
        }
        e.family(
            "traffic_passive_outcomes_total",
            Kind::Counter,
            "Handshakes seen leaving the upstream's port: accepted (SYN-ACK) or refused (RST, ICMP unreachable).",
        );
        for u in &circuits.upstreams {
            e.sample(
                "traffic_passive_outcomes_total",
                &[("upstream", &u.name), ("result", "success")],
                u.passive_successes as f64,
            );
            e.sample(
                "traffic_passive_outcomes_total",
                &[("upstream", &u.name), ("result", "failure")],
                u.passive_failures as f64,
            );
        }
        e.family(
            "traffic_upstream_connections",
            Kind::Gauge,
            "Established connections to the upstream's port.",
        );
        for u in &circuits.upstreams {
            if let Some(n) = u.established {
                e.sample(
                    "traffic_upstream_connections",
                    &[("upstream", &u.name)],
                    f64::from(n),
                );
            }
        }
        e.family(
            "traffic_upstream_max_connections",
            Kind::Gauge,
            "Bulkhead: connections allowed at the current throttle level.",
        );
        for u in &circuits.upstreams {
            if let Some(n) = u.max_connections {
                e.sample(
                    "traffic_upstream_max_connections",
                    &[("upstream", &u.name)],
                    f64::from(n),
                );
            }
        }
        e.family(
            "traffic_upstream_accept_queue",
            Kind::Gauge,
            "Connections waiting in the upstream's accept queue.",
        );
        for u in &circuits.upstreams {
            if let Some(n) = u.accept_queue {
                e.sample(
                    "traffic_upstream_accept_queue",
                    &[("upstream", &u.name)],
                    f64::from(n),
                );
            }
        }
        e.family(
            "traffic_upstream_shedding",
            Kind::Gauge,
            "1 while the bulkhead sheds new connections.",
        );
        for u in &circuits.upstreams {
            e.sample(
                "traffic_upstream_shedding",
                &[("upstream", &u.name)],
                if u.shedding.is_some() { 1.0 } else { 0.0 },
            );
        }
        e.family(
            "traffic_gate_connections_total",
            Kind::Counter,
            "What the XDP gate did with new connections to the upstream's port.",
        );
        for u in &circuits.upstreams {
            let g = &u.gate;
            for (action, n) in [
                ("seen", g.syns),
                ("gated", g.gated),
                ("reset_sent", g.resets),
                ("shed", g.shed),
                ("trial", g.trials),
                ("syn_limited", g.syn_limited),
                ("chaos_dropped", g.chaos_dropped),
                ("chaos_reset", g.chaos_reset),
            ] {
                e.sample(
                    "traffic_gate_connections_total",
                    &[("upstream", &u.name), ("action", action)],
                    n as f64,
                );
            }
        }
    }
    e.family(
        "traffic_chaos_active",
        Kind::Gauge,
        "Fault injections in force (1 per target).",
    );
    for c in &status.chaos {
        e.sample("traffic_chaos_active", &[("target", &c.target)], 1.0);
    }

    let r = &status.reload;
    e.family(
        "traffic_config_reloads_total",
        Kind::Counter,
        "Configuration reloads by result.",
    )
    .sample(
        "traffic_config_reloads_total",
        &[("result", "success")],
        r.succeeded as f64,
    )
    .sample(
        "traffic_config_reloads_total",
        &[("result", "failure")],
        r.failed as f64,
    );
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
    let text = render(&mut s.lock());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
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
