//! The final report of a run: per class offered / passed / dropped against what the limits
//! allowed, per upstream connect outcomes and latency percentiles, breaker transitions.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::{
    conn::ConnOutcome,
    ideal::{self, SourceRule},
    profile::ClientClass,
};

use traffic_testkit::udp::settle;

use super::{ConnSample, Generator, Mark, Source, percentile, sorted};

// ---------------------------------------------------------------------------------------
// LoadReport

/// Outcomes and latencies of a set of connections.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConnStats {
    pub attempts: u64,
    pub ok: u64,
    pub reset: u64,
    pub timeout: u64,
    pub error: u64,
    /// Connect latency p50 / p95 / p99 (ms) of connects that were answered (SYN-ACK or RST).
    pub connect_ms: [Option<f64>; 3],
    /// Latency of the refusals: p50 / p99 / max (ms).
    pub reset_ms: [Option<f64>; 3],
    /// Time to the end of the exchange, p50 / p95 / p99 (ms).
    pub total_ms: [Option<f64>; 3],
}

#[derive(Clone, Debug, Serialize)]
pub struct UpstreamReport {
    pub name: String,
    pub port: u16,
    pub total: ConnStats,
    /// Per phase of the run, in order.
    pub by_phase: Vec<(String, ConnStats)>,
    /// Per client class.
    pub by_class: Vec<(String, ConnStats)>,
}

/// One client class over the whole run.
#[derive(Clone, Debug, Serialize)]
pub struct ClassReport {
    pub client: ClientClass,
    /// What the rules made of it: a daemon class, "… (allow)" or "deny rule".
    pub verdict: String,
    pub sources_v4: usize,
    pub sources_v6: usize,
    pub tcp_clients: usize,
    pub offered: u64,
    pub passed: u64,
    pub dropped: u64,
    /// What the ideal buckets with the limits in force passed of what was offered.
    pub allowed: u64,
    pub buckets: usize,
    /// Whether sources share buckets (aggregation coarser than the generator's addresses).
    pub shared_buckets: bool,
    /// Buckets that passed more than allowed + 1 (+2 per limit change), and the worst excess.
    pub buckets_over: usize,
    /// Buckets that lost datagrams (were held to their limit).
    pub limited_buckets: usize,
    pub worst_excess: u64,
    pub ok: bool,
    pub check: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct BreakerTransition {
    /// Seconds since the lab started (negative: before it).
    pub t: f64,
    pub upstream: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The final report of a lab.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub duration: f64,
    /// (profile, started at, classes).
    pub runs: Vec<(String, f64, Vec<String>)>,
    pub classes: Vec<ClassReport>,
    pub upstreams: Vec<UpstreamReport>,
    pub marks: Vec<Mark>,
    /// Seconds spent at each throttle level, in order of first appearance.
    pub levels: Vec<(String, f64)>,
    pub breaker_transitions: Vec<BreakerTransition>,
    /// How often the limits in force changed during the run (throttle).
    pub limits_changes: usize,
    /// Whether "allowed" is exact (the limits never changed) or follows the changes with up
    /// to a second's delay.
    pub exact: bool,
    pub skipped_connections: u64,
    /// Every client class within its check.
    pub ok: bool,
}

/// How "allowed" is computed, for reports.
pub const ALLOWED_NOTE: &str = "allowed = what a perfect token bucket per source would pass of the datagrams offered, judged \
packet by packet at their send times with the rate and burst in force (/v1/limits read every 200 ms, throttle factor \
included; each change applied at the moment the daemon's throttle changed level): the integral of the effective rate \
plus the burst, capped by what was offered. A new bucket starts full; on a change the tokens left are kept up to the \
new burst; sources over a class's admission budget share its overflow bucket. Checks: a limited class passes at most \
allowed + 1 in every bucket (+2 per limit change: trafficd rewrites buckets a few ms after the level changes) and at \
least 95 % of allowed in total; an allowed class loses nothing; a denied one gets nothing.";

fn ms(v: Option<f64>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |x| {
            if x < 10.0 {
                format!("{x:.2}")
            } else {
                format!("{x:.0}")
            }
        },
    )
}

impl LoadReport {
    /// The report as text: per class, per upstream (and per phase), transitions, levels.
    pub fn render(&self) -> String {
        let mut o = String::new();
        self.render_classes(&mut o);
        self.render_upstreams(&mut o);
        self.render_timeline(&mut o);
        o
    }

    /// Per client class: sources, buckets, offered, passed, allowed, the check.
    fn render_classes(&self, o: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            o,
            "per client class (datagrams; {})",
            if self.exact {
                "limits constant all run".to_owned()
            } else {
                format!("the limits in force changed {} times", self.limits_changes)
            }
        );
        let _ = writeln!(
            o,
            "  {:<9} {:<17} {:>9} {:>9} {:>9} {:>9} {:>9}  CHECK",
            "CLASS", "RULE → CLASS", "SOURCES", "OFFERED", "PASSED", "DROPPED", "ALLOWED"
        );
        for c in &self.classes {
            let _ = writeln!(
                o,
                "  {:<9} {:<17} {:>9} {:>9} {:>9} {:>9} {:>9}  {} {}",
                c.client.as_str(),
                c.verdict,
                format!("{}+{}", c.sources_v4, c.sources_v6),
                c.offered,
                c.passed,
                c.dropped,
                c.allowed,
                if c.ok { "ok:" } else { "FAIL:" },
                c.check
            );
        }
        let _ = writeln!(
            o,
            "  (SOURCES = IPv4+IPv6 datagram sources, one bucket each; TCP clients use addresses of their own)"
        );
    }

    /// Per upstream: outcomes and latencies in total, per phase and per class.
    fn render_upstreams(&self, o: &mut String) {
        use std::fmt::Write as _;
        if !self.upstreams.is_empty() {
            let _ = writeln!(o, "\nper upstream (TCP connections; latency in ms)");
            let _ = writeln!(
                o,
                "  {:<22} {:>7} {:>6} {:>6} {:>7} {:>6}  {:>21}  {:>16}",
                "UPSTREAM / PHASE",
                "CONNS",
                "OK",
                "RESET",
                "TIMEOUT",
                "ERROR",
                "CONNECT p50/p95/p99",
                "RESET p50/p99"
            );
            for u in &self.upstreams {
                let row = |o: &mut String, name: &str, s: &ConnStats| {
                    let _ = writeln!(
                        o,
                        "  {:<22} {:>7} {:>6} {:>6} {:>7} {:>6}  {:>21}  {:>16}",
                        name,
                        s.attempts,
                        s.ok,
                        s.reset,
                        s.timeout,
                        s.error,
                        format!(
                            "{}/{}/{}",
                            ms(s.connect_ms[0]),
                            ms(s.connect_ms[1]),
                            ms(s.connect_ms[2])
                        ),
                        format!("{}/{}", ms(s.reset_ms[0]), ms(s.reset_ms[1])),
                    );
                };
                row(o, &format!("{}:{}", u.name, u.port), &u.total);
                if u.by_phase.len() > 1 {
                    for (p, s) in &u.by_phase {
                        row(
                            o,
                            &format!("  {}", p.chars().take(20).collect::<String>()),
                            s,
                        );
                    }
                }
                for (c, s) in &u.by_class {
                    row(o, &format!("  from {c}"), s);
                }
            }
            if self.skipped_connections > 0 {
                let _ = writeln!(
                    o,
                    "  ({} connections not started: every client of the class was busy — in-flight is bounded)",
                    self.skipped_connections
                );
            }
        }
    }

    /// Breaker transitions and throttle levels over the run.
    fn render_timeline(&self, o: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(o, "\nbreaker transitions");
        if self.breaker_transitions.is_empty() {
            let _ = writeln!(o, "  none");
        }
        for t in &self.breaker_transitions {
            let _ = writeln!(
                o,
                "  {:>6.1}s  {:<5} {} → {}: {}",
                t.t, t.upstream, t.from, t.to, t.reason
            );
        }
        let _ = writeln!(o, "\nthrottle levels seen");
        let _ = writeln!(
            o,
            "  {}",
            self.levels
                .iter()
                .map(|(l, s)| format!("{l} {s:.0}s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let changes: Vec<String> = self
            .marks
            .iter()
            .filter(|m| m.kind == "level")
            .map(|m| format!("{:.0}s {}", m.t, m.label.trim_start_matches("level ")))
            .collect();
        if !changes.is_empty() {
            let _ = writeln!(o, "  changes: {}", changes.join(" → "));
        }
    }
}

impl Generator<'_> {
    /// Stop everything, wait for the threads and for the receivers to drain, take a last
    /// sample, and build the report.
    pub fn finish(&mut self) -> Result<LoadReport> {
        self.stop_all();
        let mut errors = Vec::new();
        for r in &mut self.runs {
            for t in r.threads.drain(..) {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => errors.push(format!("{}: {e:#}", r.profile.name)),
                    Err(_) => errors.push(format!("{}: a sender thread panicked", r.profile.name)),
                }
            }
        }
        self.restore_services();
        // Drain: until the receivers' counts stop moving (polled, with a deadline).
        settle(Duration::from_secs(3), Duration::from_millis(150), || {
            self.received()
        });
        self.tick();
        // "Allowed" per second by send time (the ideal buckets judge a little late).
        let series = self
            .allowed_series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in &mut self.timeline {
            let (t0, t1) = (s.t - s.dt, s.t);
            for (c, cs) in &mut s.classes {
                let Some(v) = ClientClass::from_name(c).and_then(|cc| series.get(&cc)) else {
                    continue;
                };
                let sum: f64 = (t0.max(0.0).floor() as usize..(t1.ceil() as usize).min(v.len()))
                    .map(|k| v[k] as f64 * ((k as f64 + 1.0).min(t1) - (k as f64).max(t0)).max(0.0))
                    .sum();
                cs.allowed = sum.round() as u64;
            }
        }
        let received = self.received();
        for (_, s) in std::mem::take(&mut self.sinks) {
            let _ = s.finish(Duration::from_millis(200));
        }
        if let Some(mut s) = self.services.take() {
            s.stop();
        }
        if !errors.is_empty() {
            bail!("the generator failed: {}", errors.join("; "));
        }
        Ok(self.report(&received))
    }

    fn report(&self, received: &HashMap<IpAddr, u64>) -> LoadReport {
        let limits_changes = self.board.history().len().saturating_sub(1);
        let exact = limits_changes == 0;
        let classes = self.class_reports(received, limits_changes);
        let upstreams = self.upstream_reports();

        // Time per level, from the timeline.
        let mut levels: Vec<(String, f64)> = Vec::new();
        for s in &self.timeline {
            match levels.iter_mut().find(|(l, _)| *l == s.level) {
                Some(e) => e.1 += s.dt,
                None => levels.push((s.level.clone(), s.dt)),
            }
        }
        let skipped = self
            .runs
            .iter()
            .map(|r| r.skipped.load(Ordering::Relaxed))
            .sum();
        let mut marks = self.marks.clone();
        marks.sort_by(|a, b| a.t.partial_cmp(&b.t).unwrap_or(std::cmp::Ordering::Equal));
        let mut transitions: Vec<BreakerTransition> = self
            .transitions
            .iter()
            .map(|(t, name, from, to, reason, _)| BreakerTransition {
                t: *t,
                upstream: name.clone(),
                from: from.clone(),
                to: to.clone(),
                reason: reason.clone(),
            })
            .collect();
        transitions.sort_by(|a, b| a.t.partial_cmp(&b.t).unwrap_or(std::cmp::Ordering::Equal));
        LoadReport {
            duration: self.now(),
            runs: self
                .runs
                .iter()
                .map(|r| {
                    (
                        r.profile.name.clone(),
                        r.started_at,
                        r.classes.iter().map(|c| c.to_string()).collect(),
                    )
                })
                .collect(),
            ok: classes.iter().all(|c| c.ok),
            classes,
            upstreams,
            marks,
            levels,
            breaker_transitions: transitions,
            limits_changes,
            exact,
            skipped_connections: skipped,
        }
    }

    /// Per client class: sources, buckets (sources masked to the class's aggregation),
    /// offered, passed and allowed, and the verdict of [`judge`].
    fn class_reports(
        &self,
        received: &HashMap<IpAddr, u64>,
        limits_changes: usize,
    ) -> Vec<ClassReport> {
        let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let limits = self.board.all();
        let mut classes = Vec::new();
        for c in ClientClass::ALL {
            let list: Vec<&Arc<Source>> = sources.iter().filter(|s| s.client == c).collect();
            if list.is_empty() {
                continue;
            }
            let udp: Vec<&&Arc<Source>> = list.iter().filter(|s| !s.tcp).collect();
            let verdict = udp
                .first()
                .map(|s| s.verdict.clone())
                .or_else(|| list.first().map(|s| s.verdict.clone()))
                .unwrap_or(SourceRule::Deny);
            let mut r = ClassReport {
                client: c,
                verdict: verdict.describe(),
                sources_v4: udp.iter().filter(|s| s.addr.is_ipv4()).count(),
                sources_v6: udp.iter().filter(|s| s.addr.is_ipv6()).count(),
                tcp_clients: list.len() - udp.len(),
                offered: 0,
                passed: 0,
                dropped: 0,
                allowed: 0,
                buckets: 0,
                shared_buckets: false,
                buckets_over: 0,
                limited_buckets: 0,
                worst_excess: 0,
                ok: false,
                check: String::new(),
            };
            // Buckets: sources masked to the class's aggregation prefixes.
            let (p4, p6) = verdict
                .class()
                .and_then(|k| limits.get(k))
                .map_or((32, 64), |l| (l.aggregate_v4, l.aggregate_v6));
            let mut buckets: BTreeMap<IpAddr, (u64, u64, u64)> = BTreeMap::new();
            for s in &udp {
                let key = ideal::masked(s.addr, if s.addr.is_ipv6() { p6 } else { p4 });
                let e = buckets.entry(key).or_default();
                e.0 += s.offered.load(Ordering::Relaxed);
                e.1 += received.get(&s.addr).copied().unwrap_or(0);
                e.2 += s.allowed.load(Ordering::Relaxed);
            }
            r.buckets = buckets.len();
            r.shared_buckets = buckets.len() < udp.len();
            // trafficd rewrites the buckets a few ms after a level change; the ideal buckets
            // switch at the change itself: allow 2 packets per change for that gap.
            let slack = 1 + 2 * limits_changes as u64;
            for (o, p, a) in buckets.values() {
                r.offered += o;
                r.passed += p;
                r.allowed += a;
                if p < o {
                    r.limited_buckets += 1;
                }
                if *p > a + slack {
                    r.buckets_over += 1;
                    r.worst_excess = r.worst_excess.max(p - a);
                }
            }
            r.dropped = r.offered.saturating_sub(r.passed);
            let (ok, why) = judge(&verdict, &r, slack);
            r.ok = ok;
            r.check = why;
            classes.push(r);
        }
        drop(sources);
        classes
    }

    /// Per upstream: connection outcomes in total, per phase and per client class.
    fn upstream_reports(&self) -> Vec<UpstreamReport> {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let mut upstreams = Vec::new();
        for u in &self.upstreams {
            let all: Vec<&ConnSample> = conns.iter().filter(|c| c.upstream == u.name).collect();
            if all.is_empty() {
                continue;
            }

            let mut by_phase = Vec::new();
            for (i, p) in self.phases.iter().enumerate() {
                let set: Vec<&ConnSample> = all.iter().copied().filter(|c| c.phase == i).collect();
                if !set.is_empty() {
                    by_phase.push((p.clone(), conn_stats(&set)));
                }
            }
            let mut by_class = Vec::new();
            for c in ClientClass::ALL {
                let set: Vec<&ConnSample> = all.iter().copied().filter(|s| s.client == c).collect();
                if !set.is_empty() {
                    by_class.push((c.to_string(), conn_stats(&set)));
                }
            }
            upstreams.push(UpstreamReport {
                name: u.name.clone(),
                port: u.port,
                total: conn_stats(&all),
                by_phase,
                by_class,
            });
        }
        drop(conns);
        upstreams
    }
}

/// Whether a class got what its rule says (deny: nothing; allow: everything; limit: at
/// most allowed + `slack` per bucket and at least 95 % of allowed), and why.
fn judge(verdict: &SourceRule, r: &ClassReport, slack: u64) -> (bool, String) {
    match verdict {
        SourceRule::Deny => (
            r.passed == 0,
            if r.passed == 0 {
                "deny rule: nothing passed".to_owned()
            } else {
                format!("deny rule, yet {} passed", r.passed)
            },
        ),
        SourceRule::Allow(_) => (
            r.passed == r.offered,
            if r.passed == r.offered {
                "allow rule: nothing lost".to_owned()
            } else {
                format!("allow rule, yet {} lost", r.offered - r.passed)
            },
        ),
        SourceRule::Limit(_) => {
            let low = r.passed as f64 >= 0.95 * r.allowed as f64;
            let high = r.buckets_over == 0;
            let why = match (high, low) {
                (true, true) => format!(
                    "within limits ({:.1} % of allowed)",
                    100.0 * r.passed as f64 / (r.allowed.max(1)) as f64
                ),
                (false, _) => format!(
                    "{} bucket(s) passed more than allowed + {slack} (worst by {})",
                    r.buckets_over, r.worst_excess
                ),
                (true, false) => format!(
                    "passed only {:.1} % of allowed (want ≥ 95 %)",
                    100.0 * r.passed as f64 / r.allowed.max(1) as f64
                ),
            };
            (high && low, why)
        }
    }
}

/// Outcomes and latency percentiles of a set of connections.
fn conn_stats(set: &[&ConnSample]) -> ConnStats {
    let mut s = ConnStats {
        attempts: set.len() as u64,
        ..Default::default()
    };
    for c in set {
        match c.outcome {
            ConnOutcome::Ok => s.ok += 1,
            ConnOutcome::Reset => s.reset += 1,
            ConnOutcome::Timeout => s.timeout += 1,
            ConnOutcome::Error => s.error += 1,
        }
    }
    let lat = sorted(set.iter().filter_map(|c| c.connect_ms).collect());
    s.connect_ms = [
        percentile(&lat, 50.0),
        percentile(&lat, 95.0),
        percentile(&lat, 99.0),
    ];
    let resets = sorted(
        set.iter()
            .filter(|c| c.outcome == ConnOutcome::Reset)
            .filter_map(|c| c.connect_ms)
            .collect(),
    );
    s.reset_ms = [
        percentile(&resets, 50.0),
        percentile(&resets, 99.0),
        resets.last().copied(),
    ];
    let total = sorted(set.iter().map(|c| c.total_ms).collect());
    s.total_ms = [
        percentile(&total, 50.0),
        percentile(&total, 95.0),
        percentile(&total, 99.0),
    ];
    s
}
