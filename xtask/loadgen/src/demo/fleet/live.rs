//! The fleet demo's live view: a frame a second (a table per node, redrawn in place on a
//! terminal; one compact line otherwise).

use std::{io::Write as _, time::Instant};

use super::{
    FLEET_BUDGETS, Lab,
    story::{Listing, Sample},
};

fn per_s(n: u64, dt: f64) -> String {
    format!("{:.0}", n as f64 / dt.max(1e-3))
}

/// The live view: a frame a second, redrawn in place on a terminal.
pub(super) struct Live {
    tty: bool,
    drawn: usize,
}

impl Live {
    pub(super) fn new() -> Self {
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: isatty has no preconditions.
        let tty =
            unsafe { libc::isatty(1) } == 1 && std::env::var_os("TRAFFIC_DEMO_PLAIN").is_none();
        Self { tty, drawn: 0 }
    }

    pub(super) fn show(&mut self, s: &Sample, ls: &[Listing], t0: Instant, lab: &Lab) {
        let first = ls[0].at;
        let listed = |l: &Listing| match (l.at, first) {
            (Some(a), Some(f)) => format!("{} +{:.0}ms", l.origin, ms_after(a, f)),
            _ => "-".into(),
        };
        let mut lines = vec![format!(
            "t={:>4.0}s  attacker at {:<6} ban on node1 {}",
            s.t,
            match s.attacker_at {
                0 => "-".to_owned(),
                k => format!("node{k}"),
            },
            first.map_or("-".into(), |f| format!(
                "at {:.1}s",
                f.duration_since(t0).as_secs_f64()
            ))
        )];
        lines.push(format!(
            "  {:<6} {:>9} {:>9} {:>9}  {:<16} {:>9} {:>9} {:>9}",
            "NODE",
            "ATTACK/s",
            "PASSED/s",
            "BANNED/s",
            "ATTACKER LISTED",
            "CLIENT/s",
            "PASSED/s",
            "DROPPED/s"
        ));
        for (k, n) in s.nodes.iter().enumerate() {
            lines.push(format!(
                "  {:<6} {:>9} {:>9} {:>9}  {:<16} {:>9} {:>9} {:>9}",
                lab.nodes[k].name,
                per_s(n.attacker_sent, s.dt),
                per_s(n.attacker_passed, s.dt),
                per_s(n.banned_drops, s.dt),
                listed(&ls[k]),
                per_s(n.client_sent, s.dt),
                per_s(n.client_passed, s.dt),
                per_s(n.client_sent.saturating_sub(n.client_passed), s.dt),
            ));
        }
        lines.push(format!(
            "  client over the fleet: passed {} since it started; rate·t + burst = {:.0}{}",
            s.client_fleet_passed,
            s.client_allowed,
            if FLEET_BUDGETS {
                " (fleet budget on)"
            } else {
                " (fleet budget OFF: node limits)"
            }
        ));
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
            let nodes: Vec<String> = s
                .nodes
                .iter()
                .enumerate()
                .map(|(k, n)| {
                    format!(
                        "n{} atk {}/{} ban {} cli {}/{}",
                        k + 1,
                        per_s(n.attacker_passed, s.dt),
                        per_s(n.attacker_sent, s.dt),
                        per_s(n.banned_drops, s.dt),
                        per_s(n.client_passed, s.dt),
                        per_s(n.client_sent, s.dt)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "t={:>4.0}s {} | client fleet {} / allowed {:.0}",
                s.t,
                nodes.join(" | "),
                s.client_fleet_passed,
                s.client_allowed
            );
        }
        let _ = out.flush();
    }
}

pub(super) fn ms_after(a: Instant, b: Instant) -> f64 {
    a.saturating_duration_since(b).as_secs_f64() * 1e3
}
