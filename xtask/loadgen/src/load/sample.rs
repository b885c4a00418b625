//! One sample per second of the run (per class and per upstream), for the live view and the
//! chart.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::atomic::Ordering,
    time::Instant,
};

use serde::Serialize;

use crate::{admin, conn::ConnOutcome, profile::ClientClass, services::Behaviour};

use super::{Generator, canonical, percentile, sorted};

/// A marker on the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Mark {
    pub t: f64,
    /// "phase", "level", "breaker" or "note".
    pub kind: &'static str,
    pub label: String,
}

/// One client class in one second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassSecond {
    pub offered: u64,
    pub passed: u64,
    pub dropped: u64,
    pub allowed: u64,
}

/// One upstream in one second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UpstreamSecond {
    /// Breaker state as the daemon reports it.
    pub state: String,
    /// How the demo service behaves ("up", "down", …).
    pub service: String,
    pub ok: u64,
    pub reset: u64,
    pub timeout: u64,
    pub error: u64,
    pub connect_p50_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    /// RSTs the XDP gate sent this second.
    pub gate_resets: u64,
}

/// What the lab saw in one second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Second {
    /// Seconds since the lab started (end of the interval).
    pub t: f64,
    pub dt: f64,
    pub phase: String,
    pub level: String,
    pub cpu: Option<f64>,
    /// Per client class.
    pub classes: BTreeMap<String, ClassSecond>,
    /// Per daemon class: throttle factor and the first packet limit per source in force.
    pub factors: BTreeMap<String, f64>,
    pub rates: BTreeMap<String, f64>,
    pub upstreams: BTreeMap<String, UpstreamSecond>,
    /// Per daemon class, as trafficd counts them (datagrams and TCP): passed, dropped.
    pub daemon: BTreeMap<String, (u64, u64)>,
}

impl Generator<'_> {
    /// Received datagrams per source so far.
    pub(super) fn received(&self) -> HashMap<IpAddr, u64> {
        let mut out: HashMap<IpAddr, u64> = HashMap::new();
        for s in self.sinks.values() {
            for (k, v) in s.snapshot() {
                *out.entry(canonical(k)).or_default() += v;
            }
        }
        out
    }

    /// Sample the last interval: counters, receivers, TCP outcomes, the daemon's level,
    /// limits and breakers. Also applies the runs' scheduled degradations. Call about once
    /// a second.
    pub fn tick(&mut self) -> Second {
        self.degrade();
        let now = self.now();
        let dt = self.last_tick.elapsed().as_secs_f64();
        self.last_tick = Instant::now();
        let mut sec = Second {
            t: now,
            dt,
            phase: self.phases.last().cloned().unwrap_or_default(),
            ..Default::default()
        };

        self.sample_level(&mut sec);
        let circuits = self.sample_circuits();
        self.sample_counters(&mut sec);
        self.sample_datagrams(&mut sec);
        self.sample_connections(&mut sec, &circuits);
        self.timeline.push(sec.clone());
        sec
    }

    /// The throttle level and CPU (from the poller, or asked now), the factors and rates in
    /// force (a level change is marked).
    fn sample_level(&mut self, sec: &mut Second) {
        let status = self
            .poller
            .status()
            .or_else(|| admin::get_json(&self.socket, "/v1/status").ok());
        if let Some(v) = status {
            let (level, cpu) = admin::throttle(&v);
            if self.last_level.as_ref() != Some(&level) {
                if self.last_level.is_some() {
                    self.mark("level", format!("level {level}"));
                }
                self.last_level = Some(level.clone());
            }
            sec.level = level;
            sec.cpu = cpu;
        } else {
            sec.level = self.last_level.clone().unwrap_or_default();
        }
        for (c, l) in &self.board.all() {
            sec.factors.insert(c.clone(), l.factor);
            if let Some(p) = l.packets.first() {
                sec.rates.insert(c.clone(), p.rate_per_sec);
            }
        }
    }

    /// The breakers: new transitions recorded and marked, the state of each kept.
    fn sample_circuits(&mut self) -> Vec<admin::Circuit> {
        let circuits = admin::get_json(&self.socket, "/v1/circuits")
            .map(|v| admin::circuits(&v))
            .unwrap_or_default();
        for c in &circuits {
            for (at, from, to, reason) in &c.transitions {
                let t = at - self.poller.offset().unwrap_or(self.daemon_offset);
                // Keyed by the daemon's own time of the transition, which never changes.
                if !self
                    .transitions
                    .iter()
                    .any(|x| x.5 == *at && x.1 == c.name && x.3 == *to)
                {
                    self.transitions.push((
                        t,
                        c.name.clone(),
                        from.clone(),
                        to.clone(),
                        reason.clone(),
                        *at,
                    ));
                    if t >= 0.0 {
                        self.marks.push(Mark {
                            t,
                            kind: "breaker",
                            label: format!("{} {to}", c.name),
                        });
                    }
                }
            }
            self.last_state.insert(c.name.clone(), c.state.clone());
        }
        circuits
    }

    /// The daemon's own per-class counters over the interval.
    fn sample_counters(&mut self, sec: &mut Second) {
        if let Ok(v) = admin::get_json(&self.socket, "/v1/counters") {
            let totals = admin::counters(&v);
            for (c, (p, d)) in &totals {
                let (lp, ld) = self.last_daemon.get(c).copied().unwrap_or_default();
                sec.daemon
                    .insert(c.clone(), (p.saturating_sub(lp), d.saturating_sub(ld)));
            }
            self.last_daemon = totals;
        }
    }

    /// Datagrams per client class over the interval: offered, passed, dropped, allowed.
    fn sample_datagrams(&mut self, sec: &mut Second) {
        let received = self.received();
        let mut sums: BTreeMap<ClientClass, (u64, u64, u64)> = BTreeMap::new();
        for s in self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| !s.tcp)
        {
            let e = sums.entry(s.client).or_default();
            e.0 += s.offered.load(Ordering::Relaxed);
            e.1 += received.get(&s.addr).copied().unwrap_or(0);
            e.2 += s.allowed.load(Ordering::Relaxed);
        }
        for (c, (o, p, a)) in &sums {
            let (lo, lp, la) = self.last_class.get(c).copied().unwrap_or_default();
            let offered = o.saturating_sub(lo);
            let passed = p.saturating_sub(lp);
            sec.classes.insert(
                c.to_string(),
                ClassSecond {
                    offered,
                    passed,
                    dropped: offered.saturating_sub(passed),
                    allowed: a.saturating_sub(la),
                },
            );
        }
        self.last_class = sums;
    }

    /// Per upstream over the interval: breaker state, service behaviour, connection
    /// outcomes and latency, the gate's RSTs.
    fn sample_connections(&mut self, sec: &mut Second, circuits: &[admin::Circuit]) {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let new = &conns[self.conns_seen.min(conns.len())..];
        for u in &self.upstreams {
            let mut us = UpstreamSecond {
                state: self.last_state.get(&u.name).cloned().unwrap_or_default(),
                service: self
                    .services
                    .as_ref()
                    .and_then(|s| s.behaviour(&u.name))
                    .map_or("-".into(), |b| match b {
                        Behaviour::Up => "up".into(),
                        Behaviour::Down => "down".into(),
                        Behaviour::Error => "500".into(),
                        Behaviour::Slow(d) => format!("slow {}ms", d.as_millis()),
                    }),
                ..Default::default()
            };
            let mut lat = Vec::new();
            for c in new.iter().filter(|c| c.upstream == u.name) {
                match c.outcome {
                    ConnOutcome::Ok => us.ok += 1,
                    ConnOutcome::Reset => us.reset += 1,
                    ConnOutcome::Timeout => us.timeout += 1,
                    ConnOutcome::Error => us.error += 1,
                }
                lat.extend(c.connect_ms);
            }
            let lat = sorted(lat);
            us.connect_p50_ms = percentile(&lat, 50.0);
            us.connect_p99_ms = percentile(&lat, 99.0);
            if let Some(c) = circuits.iter().find(|c| c.name == u.name) {
                let last = self
                    .last_gate
                    .insert(u.name.clone(), c.resets)
                    .unwrap_or(c.resets);
                us.gate_resets = c.resets.saturating_sub(last);
            }
            sec.upstreams.insert(u.name.clone(), us);
        }
        self.conns_seen = conns.len();
        drop(conns);
    }
}
