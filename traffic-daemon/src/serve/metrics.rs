//! Prometheus exposition (text format 0.0.4), rendered from the daemon's state on each
//! scrape. Names are `traffic_*` in base units; no label ever carries a source address, so
//! the series count is bounded by classes × reasons and upstreams.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use super::Shared;
use crate::{
    api::{
        ReloadStatus,
        circuits::{CircuitReport, CircuitsReport},
        report::{ClassLimits, CountersReport, EffectiveLimit, LimitsReport},
    },
    engine::Core,
    policy::{
        breaker::BreakerState,
        throttle::ThrottleStatus,
        upstream::{LATENCY_BUCKETS, Upstream},
    },
};

use super::exposition::{Exposition, Kind, Labels};

/// Every family of the daemon's state as text (tests; a scrape goes through
/// [`registry`]).
pub fn render(core: &mut Core) -> String {
    let mut e = Exposition::new();
    render_into(&mut e, core);
    e.finish()
}

/// Every family from the daemon's state, in a fixed order.
fn render_into(e: &mut Exposition, core: &mut Core) {
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
    e.rows(
        "traffic_start_time_seconds",
        Kind::Gauge,
        "Unix time trafficd started (uptime: time() - this).",
        [(vec![], start_time_unix(status.uptime_seconds as f64))],
    );
    match core.counters() {
        Ok(counters) => packets(e, &counters),
        Err(err) => tracing::warn!(error = %err, "metrics: cannot read counters"),
    }
    if let Ok(limits) = core.limits() {
        class_limits(e, &limits);
    }
    throttle(e, &core.throttle_status(), core.rescaled_total);
    if let Ok(circuits) = core.circuits() {
        breakers(e, &circuits, &core.upstreams);
        upstreams(e, &circuits);
    }
    e.rows(
        "traffic_chaos_active",
        Kind::Gauge,
        "Fault injections in force (1 per target).",
        status
            .chaos
            .iter()
            .map(|c| (vec![("target", c.target.clone())], 1.0)),
    );
    e.rows(
        "traffic_interface_attached",
        Kind::Gauge,
        "1 if the program is attached to the configured interface, 0 if not (missing, deleted, or attach failed).",
        status.interfaces.iter().map(|i| {
            let up = if i.attached { 1.0 } else { 0.0 };
            (vec![("interface", i.name.clone())], up)
        }),
    );
    reloads(e, &status.reload);
    super::bans::render(e, &core.bans_snapshot());
    crate::feeds::state::metrics(e, &core.feeds.report());
    crate::watch::render_metrics(e, &core.watch_snapshot());
    super::fleet::render(e, core.fleet.as_ref());
}

/// The Unix time of a start `uptime` seconds ago, computed at the first scrape and kept, so
/// the gauge does not wobble with the uptime's rounding.
fn start_time_unix(uptime: f64) -> f64 {
    static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (now - uptime).floor()
    })
}

fn class(name: &str) -> Labels {
    vec![("class", name.to_owned())]
}

fn upstream(name: &str) -> Labels {
    vec![("upstream", name.to_owned())]
}

fn with(mut labels: Labels, key: &'static str, value: &str) -> Labels {
    labels.push((key, value.to_owned()));
    labels
}

/// Every (outcome, reason) a class's packets can be counted under: pass reasons pass, drop
/// reasons drop or (in monitor mode) would drop.
fn outcomes() -> impl Iterator<Item = (&'static str, &'static str)> {
    traffic_common::Reason::ALL.into_iter().flat_map(|r| {
        let outcomes: &[&'static str] = if r.is_drop() {
            &["drop", "would_drop"]
        } else {
            &["pass"]
        };
        outcomes.iter().map(move |o| (*o, r.name()))
    })
}

/// Packets and bytes by class, outcome and reason: every series of every class reported,
/// at 0 until counted, so `rate()` and alerts see a series from the first scrape.
fn packets(e: &mut Exposition, counters: &CountersReport) {
    let by_reason = |bytes: bool| {
        counters.classes.iter().flat_map(move |c| {
            outcomes().map(move |(outcome, reason)| {
                let n = c
                    .reasons
                    .iter()
                    .find(|r| r.outcome.name() == outcome && r.reason == reason)
                    .map_or(0, |r| if bytes { r.bytes } else { r.packets });
                let labels = with(with(class(&c.class), "outcome", outcome), "reason", reason);
                (labels, n as f64)
            })
        })
    };
    e.rows(
        "traffic_packets_total",
        Kind::Counter,
        "Packets seen by the XDP program by class, outcome (pass, drop, would_drop) and reason.",
        by_reason(false),
    );
    e.rows(
        "traffic_bytes_total",
        Kind::Counter,
        "Bytes (whole frames) seen by the XDP program by class, outcome and reason.",
        by_reason(true),
    );
}

/// Effective limits and source admission per class.
fn class_limits(e: &mut Exposition, limits: &LimitsReport) {
    let per_class =
        |f: fn(&ClassLimits) -> f64| limits.classes.iter().map(move |c| (class(&c.class), f(c)));
    let per_packet_limit = |f: fn(&EffectiveLimit) -> f64| {
        limits.classes.iter().flat_map(move |c| {
            c.packets
                .iter()
                .enumerate()
                .map(move |(i, l)| (with(class(&c.class), "limit", &i.to_string()), f(l)))
        })
    };
    e.rows(
        "traffic_class_limit_factor_ratio",
        Kind::Gauge,
        "Multiplier applied to the class's configured limits (1 without pressure).",
        per_class(|c| c.factor),
    );
    e.rows(
        "traffic_class_packet_rate_limit_packets_per_second",
        Kind::Gauge,
        "Effective packets per second allowed per source, per stacked limit.",
        per_packet_limit(|l| l.rate_per_sec),
    );
    e.rows(
        "traffic_class_packet_burst_limit_packets",
        Kind::Gauge,
        "Effective packet burst per source, per stacked limit.",
        per_packet_limit(|l| l.burst as f64),
    );
    e.rows(
        "traffic_class_byte_rate_limit_bytes_per_second",
        Kind::Gauge,
        "Effective bytes per second allowed per source.",
        limits
            .classes
            .iter()
            .filter_map(|c| c.bytes.as_ref().map(|b| (class(&c.class), b.rate_per_sec))),
    );
    e.rows(
        "traffic_tracked_sources",
        Kind::Gauge,
        "Sources with their own bucket, per class.",
        per_class(|c| c.tracked_sources as f64),
    );
    e.rows(
        "traffic_admitted_sources_total",
        Kind::Counter,
        "New sources that got their own bucket.",
        per_class(|c| c.admitted as f64),
    );
    e.rows(
        "traffic_overflow_packets_total",
        Kind::Counter,
        "Packets of sources over the admission budget, charged to the class's overflow bucket.",
        per_class(|c| c.overflowed as f64),
    );
    e.rows(
        "traffic_map_full_total",
        Kind::Counter,
        "Bucket inserts the source table refused (charged to the overflow bucket).",
        per_class(|c| c.map_full as f64),
    );
    e.rows(
        "traffic_indebted_sources_total",
        Kind::Counter,
        "New buckets that started with a debt remembered from an earlier refusal (evicted over-limit sources coming back).",
        per_class(|c| c.indebted as f64),
    );
}

/// The throttle level, its readings and thresholds, and bucket rescales.
fn throttle(e: &mut Exposition, t: &ThrottleStatus, rescaled_total: u64) {
    e.rows(
        "traffic_throttle_level",
        Kind::Gauge,
        "Throttle level: 0 none, 1 low, 2 medium, 3 high, 4 critical.",
        [(vec![], f64::from(t.level.severity()))],
    );
    e.rows(
        "traffic_throttle_multiplier_ratio",
        Kind::Gauge,
        "Rate multiplier of the current level (before class priority).",
        [(vec![], t.multiplier)],
    );
    e.rows(
        "traffic_throttle_transitions_total",
        Kind::Counter,
        "Throttle level changes.",
        [(vec![], t.transitions as f64)],
    );
    let resource = |r: &str| vec![("resource", r.to_owned())];
    e.rows(
        "traffic_pressure_ratio",
        Kind::Gauge,
        "Last pressure reading per resource (the configured signal), 0–1.",
        t.resources
            .iter()
            .filter_map(|r| r.ratio.map(|v| (resource(r.resource.as_str()), v))),
    );
    e.rows(
        "traffic_pressure_threshold_ratio",
        Kind::Gauge,
        "Reading at which each throttle level starts, per resource.",
        t.resources.iter().flat_map(|r| {
            [
                ("low", r.thresholds.low),
                ("medium", r.thresholds.medium),
                ("high", r.thresholds.high),
                ("critical", r.thresholds.critical),
            ]
            .map(|(level, v)| (with(resource(r.resource.as_str()), "level", level), v))
        }),
    );
    e.rows(
        "traffic_rescaled_buckets_total",
        Kind::Counter,
        "Buckets rewritten to keep their tokens when limits changed.",
        [(vec![], rescaled_total as f64)],
    );
}

/// Breaker states, transitions, error ratios, probes and their latency.
fn breakers(e: &mut Exposition, circuits: &CircuitsReport, live: &[Upstream]) {
    e.rows(
        "traffic_breaker_state",
        Kind::Gauge,
        "1 for the breaker's current state (closed, open, half_open), 0 for the others.",
        circuits.upstreams.iter().flat_map(|u| {
            BreakerState::ALL.map(|st| {
                let on = if st == u.breaker.state { 1.0 } else { 0.0 };
                (with(upstream(&u.name), "state", st.as_str()), on)
            })
        }),
    );
    e.rows(
        "traffic_breaker_transitions_total",
        Kind::Counter,
        "Breaker state changes (and operator actions) by reason.",
        live.iter().flat_map(|u| {
            u.transitions_by_reason
                .iter()
                .map(|(reason, n)| (with(upstream(&u.spec.name), "reason", reason), *n as f64))
        }),
    );
    e.rows(
        "traffic_breaker_error_ratio",
        Kind::Gauge,
        "Share of failed outcomes in the breaker's window.",
        circuits
            .upstreams
            .iter()
            .map(|u| (upstream(&u.name), u.breaker.error_rate_ratio)),
    );
    let results = |ok: fn(&CircuitReport) -> u64, failed: fn(&CircuitReport) -> u64| {
        circuits.upstreams.iter().flat_map(move |u| {
            [("success", ok(u)), ("failure", failed(u))]
                .map(|(result, n)| (with(upstream(&u.name), "result", result), n as f64))
        })
    };
    e.rows(
        "traffic_probes_total",
        Kind::Counter,
        "Active probes by result.",
        results(|u| u.probes_ok, |u| u.probes_failed),
    );
    e.family(
        "traffic_probe_duration_seconds",
        Kind::Histogram,
        "Duration of probes by result (success, failure: a timeout counts its full timeout).",
    );
    for u in &circuits.upstreams {
        for (result, h) in [("success", &u.latency), ("failure", &u.failed_latency)] {
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .zip(h.buckets.iter().copied().chain(std::iter::repeat(0)))
                .collect();
            e.histogram(
                "traffic_probe_duration_seconds",
                &[("upstream", &u.name), ("result", result)],
                &buckets,
                h.count,
                h.sum,
            );
        }
    }
    e.rows(
        "traffic_passive_outcomes_total",
        Kind::Counter,
        "Handshakes seen leaving the upstream's port: accepted (SYN-ACK) or refused (RST, ICMP unreachable).",
        results(|u| u.passive_successes, |u| u.passive_failures),
    );
    e.rows(
        "traffic_passive_ignored_total",
        Kind::Counter,
        "RSTs and ICMP unreachables leaving the upstream's port that were not counted as failures: repeated (the same source as the refusal before) or unverified (answering no attempt seen arriving).",
        live.iter().flat_map(|u| {
            [("repeated", u.passive_repeated), ("unverified", u.passive_unverified)]
                .map(|(why, n)| (with(upstream(&u.spec.name), "why", why), n as f64))
        }),
    );
}

/// Bulkheads and what the XDP gate did on each upstream's port.
fn upstreams(e: &mut Exposition, circuits: &CircuitsReport) {
    let each = |f: fn(&CircuitReport) -> Option<u32>| {
        circuits
            .upstreams
            .iter()
            .filter_map(move |u| f(u).map(|n| (upstream(&u.name), f64::from(n))))
    };
    e.rows(
        "traffic_upstream_connections",
        Kind::Gauge,
        "Established connections to the upstream's port.",
        each(|u| u.established),
    );
    e.rows(
        "traffic_upstream_max_connections",
        Kind::Gauge,
        "Bulkhead: connections allowed at the current throttle level.",
        each(|u| u.max_connections),
    );
    e.rows(
        "traffic_upstream_accept_queue",
        Kind::Gauge,
        "Connections waiting in the upstream's accept queue.",
        each(|u| u.accept_queue),
    );
    e.rows(
        "traffic_upstream_shedding",
        Kind::Gauge,
        "1 while the bulkhead sheds new connections.",
        circuits.upstreams.iter().map(|u| {
            let on = if u.shedding.is_some() { 1.0 } else { 0.0 };
            (upstream(&u.name), on)
        }),
    );
    e.rows(
        "traffic_gate_connections_seen_total",
        Kind::Counter,
        "New connections (SYNs) to the upstream's port seen by the XDP gate.",
        circuits
            .upstreams
            .iter()
            .map(|u| (upstream(&u.name), u.gate.syns as f64)),
    );
    e.rows(
        "traffic_gate_connections_total",
        Kind::Counter,
        "New connections the XDP gate acted on, by action (subsets of the seen ones; each connection counted once).",
        circuits.upstreams.iter().flat_map(|u| {
            let g = &u.gate;
            [
                ("gated", g.gated),
                ("reset_sent", g.resets),
                ("shed", g.shed),
                ("trial", g.trials),
                ("syn_limited", g.syn_limited),
                ("chaos_dropped", g.chaos_dropped),
                ("chaos_reset", g.chaos_reset),
            ]
            .map(|(action, n)| (with(upstream(&u.name), "action", action), n as f64))
        }),
    );
}

/// Reload counts and the last reload's result.
fn reloads(e: &mut Exposition, r: &ReloadStatus) {
    e.rows(
        "traffic_config_reloads_total",
        Kind::Counter,
        "Configuration reloads by result.",
        [("success", r.succeeded), ("failure", r.failed)]
            .map(|(result, n)| (vec![("result", result.to_owned())], n as f64)),
    );
    e.rows(
        "traffic_config_last_reload_successful",
        Kind::Gauge,
        "1 if the last reload attempt succeeded (or none was made), 0 if it failed.",
        [(vec![], if r.last_error.is_none() { 1.0 } else { 0.0 })],
    );
    e.rows(
        "traffic_config_last_reload_success_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the last successful (re)load.",
        [(vec![], r.last_success_unix.unwrap_or(0) as f64)],
    );
}

/// The daemon's families, read from its state when the registry gathers (a scrape): the
/// engine's (`render`) and the listeners' statistics.
struct DaemonCollector {
    shared: Arc<Shared>,
}

impl prometheus::core::Collector for DaemonCollector {
    /// None declared: the families depend on the config (classes, upstreams, feeds), so the
    /// collector is unchecked, as the crate allows.
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut e = Exposition::new();
        render_into(&mut e, &mut self.shared.lock());
        super::listener::render_stats(
            &mut e,
            &[
                ("metrics", &self.shared.listeners.metrics),
                ("admin", &self.shared.listeners.admin),
            ],
        );
        e.into_families()
    }
}

/// The registry of a metrics listener: the daemon's collector and the process collector
/// (`process_*`: CPU seconds, resident memory, open descriptors, start time).
pub fn registry(shared: Arc<Shared>) -> prometheus::Registry {
    let r = prometheus::Registry::new();
    let registered = r
        .register(Box::new(DaemonCollector { shared }))
        .and_then(|()| {
            r.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
        });
    if let Err(e) = registered {
        tracing::warn!(error = %e, "metrics: a collector could not be registered");
    }
    r
}

/// State of the `/metrics` route.
#[derive(Clone)]
struct Scrape {
    shared: Arc<Shared>,
    registry: Arc<prometheus::Registry>,
}

/// The `/metrics` route.
pub fn router(shared: Arc<Shared>) -> Router {
    let registry = Arc::new(registry(shared.clone()));
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { shared, registry })
}

async fn scrape(State(s): State<Scrape>) -> impl IntoResponse {
    super::walks::refresh_tracked_sources(&s.shared).await;
    let text = super::exposition::encode(&s.registry.gather());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Serve `/metrics` on `listener`, within `limits`, until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    limits: super::listener::Limits,
) {
    let stats = shared.listeners.metrics.clone();
    super::listener::serve(listener, "metrics", router(shared), limits, stats).await;
}

/// The message of a failed metrics bind. It stops trafficd before READY (the start fails
/// visibly, rather than the node running unscraped without anyone noticing); it names the
/// port and the key to change.
pub fn bind_failure(addr: SocketAddr, config: &std::path::Path, e: &std::io::Error) -> String {
    format!(
        "metrics listener: cannot listen on {addr} (port {port}): {e}. Another program may \
         use port {port}: set `listen` in the [metrics] section of {config} to a free \
         address, or `enabled = false` there to run without metrics",
        port = addr.port(),
        config = config.display()
    )
}

/// Bind the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole exposition of a daemon with every kind of family, against a stored copy:
    /// metric names, help texts, label order and number formatting are an interface
    /// (dashboards, alerts, `promtool check metrics` in the tests).
    #[test]
    fn exposition_is_stable() {
        let text = "[daemon]\ninterfaces = [\"veth0\"]\n[classes.default]\npackets = [{ rate = 100, burst = 200 }, { rate = 1000, per = \"1m\" }]\nbytes = { rate = \"1MB\" }\n[classes.premium]\npackets = { rate = 1000 }\nadmission = { rate = 10 }\noverflow = { rate = 50 }\n[[rules]]\ncidr = \"198.18.1.0/24\"\nclass = \"premium\"\n[[upstreams]]\nname = \"web\"\nport = 8080\nprobe = \"tcp\"\nmax_connections = 10\n[[upstreams]]\nname = \"api\"\nport = 8081\nprobe = \"none\"\n";
        let c = crate::config::Config::parse(std::path::Path::new("t.toml"), text).unwrap();
        let mut core = Core::new(c, Box::new(crate::dataplane::fake::Fake::default())).unwrap();
        core.attach_all().unwrap();
        let ok = crate::policy::upstream::ProbeResult {
            ok: true,
            latency_seconds: 0.003,
            error: None,
        };
        core.probe_done("web", ok);
        let out: String = render(&mut core)
            .lines()
            .map(|l| {
                if l.starts_with("traffic_start_time_seconds ") {
                    "traffic_start_time_seconds START".to_owned()
                } else if l.starts_with("traffic_config_last_reload_success_timestamp_seconds ") {
                    "traffic_config_last_reload_success_timestamp_seconds TIMESTAMP".to_owned()
                } else if let Some(rest) = l.strip_prefix("traffic_build_info{version=\"") {
                    let after = rest.split_once('"').map_or("", |(_, a)| a);
                    format!("traffic_build_info{{version=\"VERSION\"{after}")
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\n")
            .collect();
        if std::env::var_os("TRAFFIC_UPDATE_GOLDEN").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/serve/metrics.golden.txt");
            std::fs::write(path, &out).unwrap();
        }
        assert_eq!(out, include_str!("metrics.golden.txt"));
    }
}
