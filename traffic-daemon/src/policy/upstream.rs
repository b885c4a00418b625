//! The node's upstream services at run time: each upstream's breaker fed by probe results
//! and the passive signal from TC egress, its bulkhead fed by socket statistics, and the
//! port rule the XDP gate enforces. No I/O here: the probes run in `serve::probe`, socket
//! statistics come from `sockdiag`, and time is an argument.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use traffic_common::{Chaos, EgressStats, Gate, PORT_GATE_RESET, PORT_SHED, PortRule};

use crate::{
    config::{GateAction, ProbeKind, UpstreamSpec},
    policy::{
        breaker::{Breaker, GateState, Outcome, Transition},
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

/// The RST budget of every upstream's port: RSTs per second and burst. Refused SYNs past it
/// are dropped silently (`gate_rst_budget`): enough for every real client to be refused at
/// once, too little for the gate to serve as a reflector of spoofed SYN floods.
pub const RST_BUDGET: crate::config::RateLimit = crate::config::RateLimit {
    rate_per_sec: 1000.0,
    burst: 200,
};

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

/// `ok` successes and `bad` failures, the failures spread evenly among the successes
/// (Bresenham): `bad` ≥ `ok` still yields runs of failures, a few among many do not.
fn interleave(ok: u64, bad: u64) -> impl Iterator<Item = Outcome> {
    let total = ok + bad;
    let mut acc = 0u64;
    (0..total).map(move |_| {
        acc += bad;
        if acc >= total {
            acc -= total;
            Outcome::Failure
        } else {
            Outcome::Success
        }
    })
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

/// One upstream at run time. Fields are `pub(crate)`: the engine's operations and reports
/// read them; nothing outside the daemon does.
pub struct Upstream {
    pub(crate) spec: UpstreamSpec,
    /// Slot of its port rule (statistics index).
    pub(crate) slot: u32,
    pub(crate) breaker: Breaker,
    pub(crate) last_probe: Option<ProbeResult>,
    pub(crate) probes_ok: u64,
    pub(crate) probes_failed: u64,
    pub(crate) latency: Histogram,
    /// Time failed probes took (a timeout shows as the probe timeout).
    pub(crate) failed_latency: Histogram,
    pub(crate) sockets: Option<PortSockets>,
    pub(crate) shedding: Option<Shedding>,
    pub(crate) chaos: Option<ChaosSetting>,
    pub(crate) next_probe: Instant,
    pub(crate) probing: bool,
    last_egress: Option<EgressStats>,
    pub(crate) passive_successes: u64,
    pub(crate) passive_failures: u64,
    /// Refusals of the same peer as the one before (one source, one vote): not failures.
    pub(crate) passive_repeated: u64,
    /// RSTs and unreachables answering no attempt seen arriving: not failures.
    pub(crate) passive_unverified: u64,
    pub(crate) transitions: VecDeque<TransitionRecord>,
    pub(crate) transitions_by_reason: std::collections::BTreeMap<String, u64>,
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
            failed_latency: Histogram::default(),
            sockets: None,
            shedding: None,
            chaos: None,
            next_probe: Instant::now(),
            probing: false,
            last_egress: None,
            passive_successes: 0,
            passive_failures: 0,
            passive_repeated: 0,
            passive_unverified: 0,
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
            self.failed_latency.observe(r.latency_seconds);
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
    ///
    /// A refusal is what the kernel counted as one: a reply to an attempt that really
    /// arrived, from a peer other than the previous refusal's (one source, one vote; see
    /// `traffic_common::EgressStats`). Within a tick the order is lost: failures are spread
    /// evenly among the successes, so consecutive failures build up only where refusals
    /// outnumber accepted handshakes, and the error rate sees the tick's true share. A dead
    /// server accepts nothing, so real traffic cannot mask it; a flood of accepted
    /// handshakes cannot hide a high error rate either.
    pub fn passive(&mut self, egress: EgressStats, now: Duration) {
        let Some(prev) = self.last_egress.replace(egress) else {
            return;
        };
        if !self.spec.passive {
            return;
        }
        self.passive_repeated += egress.repeated.saturating_sub(prev.repeated);
        self.passive_unverified += egress.unverified.saturating_sub(prev.unverified);
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
        for outcome in interleave(ok, bad) {
            if let Some(t) = self.breaker.record(now, outcome) {
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
        // Chaos resets and bulkhead resets share the budget, so it is always set.
        rule.rst_budget = limits::packet_gcra(&RST_BUDGET);
        if self.shedding.is_some() {
            rule.flags |= PORT_SHED;
        }
        if let Some(c) = self.chaos.filter(|c| c.active(now_ns)) {
            rule.chaos = c.kernel();
        }
        debug_assert!(rule.gate <= Gate::HalfOpen as u32);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{config::Config, policy::breaker::BreakerState};

    /// An upstream opening after 3 consecutive failures (count window of 10), TCP probes,
    /// a bulkhead of 10 connections and an accept-queue limit of half the backlog.
    fn upstream(extra: &str) -> Upstream {
        let text = format!(
            "[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\n\
             [breaker]\nwindow = 10\nconsecutive_failures = 3\n\
             [[upstreams]]\nname = \"web\"\nport = 8080\nprobe = \"tcp\"\n\
             max_connections = 10\naccept_queue_ratio = 0.5\n{extra}"
        );
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        Upstream::new(c.upstreams[0].clone(), 2, Duration::ZERO)
    }

    fn fail() -> ProbeResult {
        ProbeResult {
            ok: false,
            latency_seconds: 0.5,
            error: Some("connect: refused".into()),
        }
    }

    fn egress(syn_acks: u64, resets: u64) -> EgressStats {
        EgressStats {
            syn_acks,
            resets,
            ..Default::default()
        }
    }

    #[test]
    fn probe_failures_open_the_breaker_and_close_the_gate() {
        let mut u = upstream("");
        let wall = Instant::now();
        assert!(u.probe_due(wall, Duration::ZERO));
        for i in 1..=3 {
            u.probe_done(fail(), Duration::from_secs(i));
        }
        assert_eq!(u.probes_failed, 3);
        assert_eq!(u.breaker.state(), BreakerState::Open);
        assert_eq!(u.transitions.len(), 1);
        assert_eq!(u.transitions[0].to, "open");
        // An open breaker probes no more until its timeout; the port rule gates.
        assert!(!u.probe_due(wall + Duration::from_secs(5), Duration::from_secs(4)));
        let mut rule = PortRule::default();
        u.apply_to(&mut rule, 0);
        assert_eq!(rule.gate, Gate::Open as u32);
        assert_eq!(rule.rst_budget, limits::packet_gcra(&RST_BUDGET));
        assert_eq!(rule.rst_budget.interval, 1_000_000, "1,000 RST/s");
    }

    #[test]
    fn successes_record_latency_and_wait_for_the_interval() {
        let mut u = upstream("");
        u.probe_done(
            ProbeResult {
                ok: true,
                latency_seconds: 0.002,
                error: None,
            },
            Duration::ZERO,
        );
        assert_eq!((u.probes_ok, u.latency.count), (1, 1));
        assert_eq!(u.latency.buckets[1], 0, "2 ms is above the 1 ms bucket");
        assert_eq!(u.latency.buckets[2], 1);
        assert!(
            !u.probe_due(Instant::now(), Duration::ZERO),
            "next probe after `interval`"
        );
    }

    #[test]
    fn passive_refusals_open_only_where_they_outnumber_accepted_handshakes() {
        let mut u = upstream("");
        u.passive(egress(0, 0), Duration::ZERO); // the first reading is the baseline
        u.passive(egress(5, 3), Duration::from_secs(1));
        assert_eq!((u.passive_successes, u.passive_failures), (5, 3));
        assert_eq!(
            u.breaker.state(),
            BreakerState::Closed,
            "3 refusals among 5 accepted handshakes are not 3 in a row"
        );
        // A dead server accepts nothing: its refusals are consecutive.
        u.passive(egress(5, 6), Duration::from_secs(2));
        assert_eq!(u.breaker.state(), BreakerState::Open);
    }

    #[test]
    fn repeats_and_unverified_replies_are_counted_but_never_failures() {
        let mut u = upstream("");
        u.passive(EgressStats::default(), Duration::ZERO);
        let e = EgressStats {
            resets: 1,
            repeated: 40,
            unverified: 2000,
            ..Default::default()
        };
        u.passive(e, Duration::from_secs(1));
        assert_eq!(u.passive_failures, 1);
        assert_eq!((u.passive_repeated, u.passive_unverified), (40, 2000));
        assert_eq!(u.breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn interleave_spreads_failures_and_keeps_the_counts() {
        let seq: Vec<Outcome> = interleave(4, 2).collect();
        assert_eq!(seq.iter().filter(|o| **o == Outcome::Failure).count(), 2);
        assert_eq!(seq.len(), 6);
        assert!(
            !seq.windows(2)
                .any(|w| w == [Outcome::Failure, Outcome::Failure]),
            "{seq:?}"
        );
        assert!(interleave(0, 3).all(|o| o == Outcome::Failure));
        assert!(interleave(3, 0).all(|o| o == Outcome::Success));
        let run = interleave(1, 6)
            .collect::<Vec<_>>()
            .split(|o| *o == Outcome::Success)
            .map(<[Outcome]>::len)
            .max();
        assert!(run >= Some(3), "failures dominate: runs remain");
    }

    #[test]
    fn passive_signal_is_bounded_per_tick_and_can_be_off() {
        let mut u = upstream("");
        u.passive(egress(0, 0), Duration::ZERO);
        u.passive(egress(10 * MAX_PASSIVE_PER_TICK, 0), Duration::from_secs(1));
        assert_eq!(u.passive_successes, MAX_PASSIVE_PER_TICK);
        let mut off = upstream("passive = false\n");
        off.passive(egress(0, 0), Duration::ZERO);
        off.passive(egress(0, 50), Duration::from_secs(1));
        assert_eq!(off.passive_failures, 0);
        assert_eq!(off.breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn bulkhead_sheds_on_connections_or_accept_queue() {
        let mut u = upstream("");
        let sockets = |established, accept_queue| PortSockets {
            port: 8080,
            established,
            listeners: 1,
            accept_queue,
            backlog: 100,
        };
        u.bulkhead(Some(sockets(10, 0)), u.cap(1.0, None));
        assert_eq!(u.shedding, Some(Shedding::Connections));
        u.bulkhead(Some(sockets(3, 50)), u.cap(1.0, None));
        assert_eq!(u.shedding, Some(Shedding::AcceptQueue));
        u.bulkhead(Some(sockets(3, 10)), u.cap(1.0, None));
        assert_eq!(u.shedding, None);
        let mut rule = PortRule::default();
        u.bulkhead(Some(sockets(10, 0)), u.cap(1.0, None));
        u.apply_to(&mut rule, 0);
        assert_ne!(rule.flags & PORT_SHED, 0);
    }

    #[test]
    fn cap_scales_with_the_level_and_takes_the_level_maximum() {
        let u = upstream("");
        assert_eq!(u.cap(1.0, None), Some(10));
        assert_eq!(u.cap(0.25, None), Some(3), "rounded up");
        assert_eq!(u.cap(0.01, None), Some(1), "never 0");
        assert_eq!(u.cap(1.0, Some(4)), Some(4));
        let mut unbounded = upstream("");
        unbounded.spec.max_connections = None;
        assert_eq!(
            unbounded.cap(0.5, Some(4)),
            None,
            "no bulkhead, no level cap"
        );
    }

    #[test]
    fn chaos_is_in_the_rule_only_while_active() {
        let mut u = upstream("gate = \"reset\"\n");
        u.chaos = Some(ChaosSetting {
            drop_ratio: 1.0,
            reset_ratio: 0.0,
            until_ns: 100,
        });
        let mut rule = PortRule::default();
        u.apply_to(&mut rule, 50);
        assert_eq!(rule.chaos, u.chaos.unwrap().kernel());
        assert_ne!(rule.flags & PORT_GATE_RESET, 0);
        let mut later = PortRule::default();
        u.apply_to(&mut later, 200);
        assert_eq!(later.chaos, Chaos::default());
    }
}
