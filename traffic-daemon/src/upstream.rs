//! The node's upstream services: active probes (TCP connect or HTTP GET), the passive signal
//! from TC egress, socket statistics for the bulkhead, and each upstream's breaker. The
//! decisions are the pure `policy::breaker`; this module gathers their inputs and turns the
//! result into the port rule the XDP gate enforces.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use traffic_common::{Chaos, EgressStats, Gate, PORT_GATE_RESET, PORT_SHED, PortRule, PortStats};

use crate::{
    config::{GateAction, ProbeKind, UpstreamSpec},
    policy::{
        breaker::{Breaker, BreakerSnapshot, GateState, Outcome, Transition},
        limits,
    },
    sockdiag::PortSockets,
};

/// Upper bounds (seconds) of the probe latency histogram.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
];

/// Passive outcomes recorded per tick at most (scaled down proportionally beyond), so a flood
/// of handshakes costs the daemon a bounded amount of work.
const MAX_PASSIVE_PER_TICK: u64 = 2000;

/// Transitions kept per upstream for `trafficctl circuits`.
const TRANSITION_HISTORY: usize = 16;

/// Result of one probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub ok: bool,
    pub latency_seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Run one probe of an upstream.
pub async fn probe(
    kind: ProbeKind,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> ProbeResult {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        if kind != ProbeKind::Http {
            return Ok(());
        }
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: trafficd-probe\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let got = s.read(&mut buf[n..]).await.map_err(|e| format!("read: {e}"))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next().unwrap_or("")))?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    })
    .await;
    let latency_seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(Ok(())) => ProbeResult {
            ok: true,
            latency_seconds,
            error: None,
        },
        Ok(Err(e)) => ProbeResult {
            ok: false,
            latency_seconds,
            error: Some(e),
        },
        Err(_) => ProbeResult {
            ok: false,
            latency_seconds,
            error: Some(format!("timeout after {timeout:?}")),
        },
    }
}

/// Why new connections are being shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shedding {
    /// Established connections at the (level-scaled) maximum.
    Connections,
    /// The listen socket's accept queue past its fraction of the backlog.
    AcceptQueue,
}

/// Fault injection in force on an upstream or a class.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChaosSetting {
    pub drop_ratio: f64,
    pub reset_ratio: f64,
    /// Kernel clock deadline (ns).
    pub until_ns: u64,
}

impl ChaosSetting {
    /// The kernel encoding.
    pub fn kernel(&self) -> Chaos {
        let ratio = |r: f64| (r.clamp(0.0, 1.0) * f64::from(u32::MAX)).round() as u32;
        Chaos {
            drop_ratio: ratio(self.drop_ratio),
            reset_ratio: ratio(self.reset_ratio),
            until_ns: self.until_ns,
        }
    }

    pub fn active(&self, now_ns: u64) -> bool {
        now_ns < self.until_ns
    }
}

/// A latency histogram with cumulative buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if v <= *le {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

/// A transition as shown to operators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionRecord {
    /// Seconds since the daemon started.
    pub at_seconds: f64,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// One upstream at run time.
pub struct Upstream {
    pub spec: UpstreamSpec,
    /// Slot of its port rule (statistics index).
    pub slot: u32,
    pub breaker: Breaker,
    pub last_probe: Option<ProbeResult>,
    pub probes_ok: u64,
    pub probes_failed: u64,
    pub latency: Histogram,
    pub sockets: Option<PortSockets>,
    pub shedding: Option<Shedding>,
    pub chaos: Option<ChaosSetting>,
    pub next_probe: Instant,
    pub probing: bool,
    last_egress: Option<EgressStats>,
    pub passive_successes: u64,
    pub passive_failures: u64,
    pub transitions: VecDeque<TransitionRecord>,
    pub transitions_by_reason: std::collections::BTreeMap<String, u64>,
}

impl Upstream {
    pub fn new(spec: UpstreamSpec, slot: u32, now: Duration) -> Self {
        Self {
            breaker: Breaker::new(spec.breaker, now),
            spec,
            slot,
            last_probe: None,
            probes_ok: 0,
            probes_failed: 0,
            latency: Histogram::default(),
            sockets: None,
            shedding: None,
            chaos: None,
            next_probe: Instant::now(),
            probing: false,
            last_egress: None,
            passive_successes: 0,
            passive_failures: 0,
            transitions: VecDeque::new(),
            transitions_by_reason: Default::default(),
        }
    }

    /// Take a new spec on reload: the breaker keeps its state, the settings change.
    pub fn reconfigure(&mut self, spec: UpstreamSpec) {
        self.breaker.reconfigure(spec.breaker);
        self.spec = spec;
    }

    /// Remember a transition (and log it).
    pub fn note(&mut self, t: &Transition) {
        tracing::warn!(upstream = %self.spec.name, port = self.spec.port, "breaker {t}");
        self.transitions.push_back(TransitionRecord {
            at_seconds: t.at.as_secs_f64(),
            from: t.from.as_str().to_owned(),
            to: t.to.as_str().to_owned(),
            reason: t.reason.to_string(),
        });
        while self.transitions.len() > TRANSITION_HISTORY {
            self.transitions.pop_front();
        }
        *self
            .transitions_by_reason
            .entry(t.reason.as_str().to_owned())
            .or_default() += 1;
    }

    /// Whether a probe is due; in half-open a probe is a trial and needs a trial slot.
    pub fn probe_due(&mut self, wall: Instant, now: Duration) -> bool {
        if self.spec.probe == ProbeKind::None || self.probing || wall < self.next_probe {
            return false;
        }
        match self.breaker.gate() {
            GateState::Open => false,
            GateState::HalfOpen { .. } => self.breaker.try_admit_trial(now),
            GateState::Closed => true,
        }
    }

    /// Record a probe result.
    pub fn probe_done(&mut self, r: ProbeResult, now: Duration) {
        self.probing = false;
        self.next_probe = Instant::now() + self.spec.interval;
        if r.ok {
            self.probes_ok += 1;
            self.latency.observe(r.latency_seconds);
        } else {
            self.probes_failed += 1;
            tracing::debug!(upstream = %self.spec.name, error = ?r.error, "probe failed");
        }
        let outcome = if r.ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.last_probe = Some(r);
        if let Some(t) = self.breaker.record(now, outcome) {
            self.note(&t);
        }
    }

    /// Feed the passive signal: handshakes accepted and refused since the last tick.
    pub fn passive(&mut self, egress: EgressStats, now: Duration) {
        let Some(prev) = self.last_egress.replace(egress) else {
            return;
        };
        if !self.spec.passive {
            return;
        }
        let ok = egress.syn_acks.saturating_sub(prev.syn_acks);
        let bad = egress.resets.saturating_sub(prev.resets)
            + egress.unreachables.saturating_sub(prev.unreachables);
        let total = ok + bad;
        if total == 0 {
            return;
        }
        let (ok, bad) = if total > MAX_PASSIVE_PER_TICK {
            let f = MAX_PASSIVE_PER_TICK as f64 / total as f64;
            (
                (ok as f64 * f).round() as u64,
                (bad as f64 * f).round() as u64,
            )
        } else {
            (ok, bad)
        };
        self.passive_successes += ok;
        self.passive_failures += bad;
        // Failures first: a burst of refusals should not be hidden by earlier successes in
        // the same tick when counting consecutive failures.
        for _ in 0..ok {
            if let Some(t) = self.breaker.record(now, Outcome::Success) {
                self.note(&t);
            }
        }
        for _ in 0..bad {
            if let Some(t) = self.breaker.record(now, Outcome::Failure) {
                self.note(&t);
            }
        }
    }

    /// Bulkhead decision from socket statistics and the concurrency cap at this level.
    pub fn bulkhead(&mut self, sockets: Option<PortSockets>, cap: Option<u32>) {
        let before = self.shedding;
        self.shedding = sockets.as_ref().and_then(|s| {
            if let Some(cap) = cap
                && s.established >= cap
            {
                return Some(Shedding::Connections);
            }
            let ratio = self.spec.accept_queue_ratio;
            if ratio > 0.0
                && s.backlog > 0
                && f64::from(s.accept_queue) >= ratio * f64::from(s.backlog)
            {
                return Some(Shedding::AcceptQueue);
            }
            None
        });
        if before != self.shedding {
            match self.shedding {
                Some(why) => {
                    tracing::warn!(upstream = %self.spec.name, ?why, cap, "bulkhead full: shedding new connections")
                }
                None => tracing::info!(upstream = %self.spec.name, "bulkhead has room again"),
            }
        }
        self.sockets = sockets;
    }

    /// The concurrency cap at a throttle level with the given multiplier.
    pub fn cap(&self, level_multiplier: f64, level_max: Option<u32>) -> Option<u32> {
        let scaled = self
            .spec
            .max_connections
            .map(|m| ((f64::from(m) * level_multiplier).ceil() as u32).max(1));
        match (scaled, level_max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, None) => a,
            (None, Some(b)) if self.spec.max_connections.is_some() => Some(b),
            (None, _) => None,
        }
    }

    /// The gate fields of this upstream's port rule.
    pub fn apply_to(&self, rule: &mut PortRule, now_ns: u64) {
        let gate = self.breaker.gate();
        rule.gate = gate.kernel_gate() as u32;
        if let GateState::HalfOpen {
            trials_per_interval,
            interval,
        } = gate
        {
            rule.half_open = limits::packet_gcra(&crate::config::RateLimit {
                rate_per_sec: f64::from(trials_per_interval.max(1))
                    / interval.as_secs_f64().max(1e-3),
                burst: u64::from(trials_per_interval.max(1)),
            });
        } else {
            rule.half_open = Default::default();
        }
        if self.spec.gate == GateAction::Reset {
            rule.flags |= PORT_GATE_RESET;
        }
        if self.shedding.is_some() {
            rule.flags |= PORT_SHED;
        }
        if let Some(c) = self.chaos.filter(|c| c.active(now_ns)) {
            rule.chaos = c.kernel();
        }
        debug_assert!(rule.gate <= Gate::HalfOpen as u32);
    }
}

/// `GET /v1/circuits`: one upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitReport {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub group: Option<String>,
    pub probe: ProbeKind,
    pub breaker: BreakerSnapshot,
    pub last_probe: Option<ProbeResult>,
    pub probes_ok: u64,
    pub probes_failed: u64,
    pub passive_successes: u64,
    pub passive_failures: u64,
    pub latency: Histogram,
    pub established: Option<u32>,
    pub accept_queue: Option<u32>,
    pub backlog: Option<u32>,
    /// Concurrency cap at the current throttle level.
    pub max_connections: Option<u32>,
    pub shedding: Option<Shedding>,
    pub chaos: Option<ChaosSetting>,
    pub gate: GateStats,
    pub transitions: Vec<TransitionRecord>,
}

/// What the XDP gate did on the upstream's port (from `PortStats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStats {
    pub syns: u64,
    pub gated: u64,
    pub resets: u64,
    pub shed: u64,
    pub chaos_dropped: u64,
    pub chaos_reset: u64,
    pub syn_limited: u64,
    pub trials: u64,
}

impl From<PortStats> for GateStats {
    fn from(p: PortStats) -> Self {
        Self {
            syns: p.syns,
            gated: p.gated,
            resets: p.resets,
            shed: p.shed,
            chaos_dropped: p.chaos_dropped,
            chaos_reset: p.chaos_reset,
            syn_limited: p.syn_limited,
            trials: p.trials,
        }
    }
}

/// `GET /v1/circuits`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitsReport {
    pub upstreams: Vec<CircuitReport>,
}

/// The `trafficctl circuits` table.
pub fn render_circuits(r: &CircuitsReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<12} {:>9} {:<9} {:>8} {:>6} {:>9} {:<18} {:>11} {:>7} {:>7} {:>6}",
        "UPSTREAM",
        "PORT",
        "STATE",
        "FOR",
        "ERR%",
        "REQUESTS",
        "LAST PROBE",
        "CONNS",
        "GATED",
        "RESETS",
        "SHED"
    );
    for u in &r.upstreams {
        let probe = match &u.last_probe {
            None => "-".to_owned(),
            Some(p) if p.ok => format!("ok {:.1}ms", p.latency_seconds * 1000.0),
            Some(p) => format!("FAIL {}", p.error.as_deref().unwrap_or("?"))
                .chars()
                .take(18)
                .collect(),
        };
        let conns = match (u.established, u.max_connections) {
            (Some(e), Some(m)) => format!("{e}/{m}"),
            (Some(e), None) => e.to_string(),
            _ => "-".to_owned(),
        };
        let mut state = u.breaker.state.as_str().to_owned();
        if u.breaker.forced {
            state.push('!');
        }
        let _ = writeln!(
            o,
            "{:<12} {:>9} {:<9} {:>7.0}s {:>6.1} {:>9} {:<18} {:>11} {:>7} {:>7} {:>6}",
            u.name,
            format!("{}/{}", u.protocol, u.port),
            state,
            u.breaker.time_in_state_seconds,
            u.breaker.error_rate_ratio * 100.0,
            u.breaker.window_requests,
            probe,
            conns,
            u.gate.gated,
            u.gate.resets,
            u.gate.shed,
        );
        if let Some(s) = u.shedding {
            let _ = writeln!(o, "  shedding new connections: {s:?}");
        }
        if let Some(c) = &u.chaos {
            let _ = writeln!(
                o,
                "  chaos: drop {:.0}%, reset {:.0}%",
                c.drop_ratio * 100.0,
                c.reset_ratio * 100.0
            );
        }
        for t in u.transitions.iter().rev().take(3) {
            let _ = writeln!(
                o,
                "  at {:>7.1}s  {} → {}: {}",
                t.at_seconds, t.from, t.to, t.reason
            );
        }
    }
    o
}
