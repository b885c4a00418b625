//! The live view of a demo run: a frame per second (redrawn in place on a terminal, one
//! compact line otherwise) and the loops that tick the generator once a second.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use super::interrupted;
use crate::{
    ideal::SourceRule,
    load::{Generator, Second},
    profile::ClientClass,
};

pub(super) struct Live {
    tty: bool,
    drawn: usize,
    /// Per client class: what the rules make of it (shown) and the daemon class.
    verdicts: Vec<(ClientClass, String, String)>,
    narration: String,
}

fn per_s(n: u64, dt: f64) -> String {
    format!("{:.0}", n as f64 / dt.max(1e-3))
}

impl Live {
    pub(super) fn new(lab: &Generator<'_>) -> Self {
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: isatty has no preconditions.
        let tty =
            unsafe { libc::isatty(1) } == 1 && std::env::var_os("TRAFFIC_DEMO_PLAIN").is_none();
        let verdicts = ClientClass::ALL
            .iter()
            .map(|c| {
                let v = lab.verdict_of(*c);
                let shown = match &v {
                    SourceRule::Limit(k) => k.clone(),
                    SourceRule::Allow(_) => "allow".into(),
                    SourceRule::Deny => "deny".into(),
                };
                (*c, shown, v.class().unwrap_or("-").to_owned())
            })
            .collect();
        Self {
            tty,
            drawn: 0,
            verdicts,
            narration: String::new(),
        }
    }

    /// A new chapter: printed as a heading, kept on the live view.
    pub(super) fn chapter(&mut self, lab: &mut Generator<'_>, name: &str, narration: &str) {
        lab.set_phase(name);
        self.narration = narration.to_owned();
        self.drawn = 0; // the heading stays above the next frame
        println!("\n### {name} — {narration}");
    }

    /// The heading and a row per client class: offered, passed, dropped, limit, factor.
    fn class_rows(&self, s: &Second, cpu: &str) -> Vec<String> {
        let mut lines = Vec::new();
        lines.push(format!(
            "t={:>5.0}s  {:<16} throttle level {:<8} cpu {cpu}",
            s.t,
            s.phase,
            s.level.to_uppercase()
        ));
        lines.push(format!(
            "  {:<9} {:<9} {:>9} {:>9} {:>9} {:>11} {:>7}",
            "CLASS", "RULE", "OFFERED/s", "PASSED/s", "DROPPED/s", "LIMIT/src/s", "FACTOR"
        ));
        for (name, c) in &s.classes {
            let (shown, daemon_class) = ClientClass::from_name(name)
                .and_then(|cc| self.verdicts.iter().find(|(k, _, _)| *k == cc))
                .map_or(("-", "-"), |(_, s, d)| (s.as_str(), d.as_str()));
            let limit = match (ClientClass::from_name(name), s.rates.get(daemon_class)) {
                (Some(ClientClass::Denied), _) => "deny".to_owned(),
                (Some(ClientClass::Internal), _) => "allow".to_owned(),
                (_, Some(r)) => format!("{r:.0}"),
                _ => "-".to_owned(),
            };
            let factor = s
                .factors
                .get(daemon_class)
                .map_or("-".into(), |f| format!("{f:.2}"));
            lines.push(format!(
                "  {:<9} {:<9} {:>9} {:>9} {:>9} {:>11} {:>7}",
                name,
                shown,
                per_s(c.offered, s.dt),
                per_s(c.passed, s.dt),
                per_s(c.dropped, s.dt),
                limit,
                factor
            ));
        }
        lines
    }

    /// One frame: the level, a row per client class, a row per upstream, recent events.
    fn show(&mut self, s: &Second, lab: &Generator<'_>) {
        let cpu = s.cpu.map_or_else(|| "-".into(), |c| format!("{c:.2}"));
        let mut lines = self.class_rows(s, &cpu);
        lines.extend(upstream_rows(s));
        lines.push(events_row(lab));
        let mut out = std::io::stdout().lock();
        if self.tty {
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}F", self.drawn);
            }
            for l in &lines {
                let _ = writeln!(out, "\x1b[2K{l}");
            }
            self.drawn = lines.len();
        } else {
            // Not a terminal: one compact line a second.
            let classes: Vec<String> = s
                .classes
                .iter()
                .map(|(k, c)| format!("{k} {}/{}", per_s(c.passed, s.dt), per_s(c.offered, s.dt)))
                .collect();
            let ups: Vec<String> = s
                .upstreams
                .iter()
                .map(|(k, u)| format!("{k} {} ok{} rst{} to{}", u.state, u.ok, u.reset, u.timeout))
                .collect();
            let _ = writeln!(
                out,
                "t={:>4.0}s {:<15} level {:<8} cpu {cpu} | passed/offered per s: {} | {}",
                s.t,
                s.phase,
                s.level,
                classes.join(", "),
                ups.join(", ")
            );
        }
        let _ = out.flush();
    }
}

/// A row per upstream: breaker, service, outcomes, gate RSTs, connect latency.
fn upstream_rows(s: &Second) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "  {:<9} {:<10} {:<8} {:>5} {:>7} {:>9} {:>7}  {:>19}",
        "UPSTREAM",
        "BREAKER",
        "SERVICE",
        "OK/s",
        "RESET/s",
        "TIMEOUT/s",
        "GATE/s",
        "CONNECT p50/p99 ms"
    ));
    for (name, u) in &s.upstreams {
        let lat = match (u.connect_p50_ms, u.connect_p99_ms) {
            (Some(a), Some(b)) => format!("{a:.2}/{b:.2}"),
            _ => "-".into(),
        };
        lines.push(format!(
            "  {:<9} {:<10} {:<8} {:>5} {:>7} {:>9} {:>7}  {:>19}",
            name,
            u.state.to_uppercase(),
            u.service,
            per_s(u.ok, s.dt),
            per_s(u.reset, s.dt),
            per_s(u.timeout, s.dt),
            per_s(u.gate_resets, s.dt),
            lat
        ));
    }
    lines
}

/// The last three events (level changes, breaker transitions, notes).
fn events_row(lab: &Generator<'_>) -> String {
    let recent: Vec<String> = lab
        .marks
        .iter()
        .rev()
        .filter(|m| m.kind != "phase")
        .take(3)
        .map(|m| format!("{:.1}s {}", m.t, m.label))
        .collect();
    format!(
        "  events: {}",
        if recent.is_empty() {
            "-".into()
        } else {
            recent.into_iter().rev().collect::<Vec<_>>().join(" · ")
        }
    )
}

/// Tick the lab once a second (showing each second) until `done` holds, `max` passes or
/// Ctrl-C; whether `done` held.
pub(super) fn run_until(
    lab: &mut Generator<'_>,
    live: &mut Live,
    max: Duration,
    mut done: impl FnMut(&Generator<'_>, &Second) -> bool,
) -> bool {
    let end = Instant::now() + max;
    let mut next = Instant::now() + Duration::from_secs(1);
    loop {
        while Instant::now() < next {
            if interrupted() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        next += Duration::from_secs(1);
        let s = lab.tick();
        live.show(&s, lab);
        if done(lab, &s) {
            return true;
        }
        if Instant::now() >= end || interrupted() {
            return false;
        }
    }
}

pub(super) fn run_for(lab: &mut Generator<'_>, live: &mut Live, d: Duration) {
    let end = Instant::now() + d;
    run_until(lab, live, d + Duration::from_secs(1), |_, _| {
        Instant::now() + Duration::from_millis(500) >= end
    });
}
