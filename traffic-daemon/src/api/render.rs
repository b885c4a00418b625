//! Text renderings of `/v1/status`, `/v1/throttle` and `/v1/circuits` for `trafficctl` (the other
//! reports render in [`super::report`]). Pure functions of the API types, so their output is
//! tested without a daemon.

use std::fmt::Write as _;

use super::{StatusReport, circuits::CircuitsReport};
use crate::policy::throttle::ThrottleStatus;

/// How the config file spells an enum value (`enforce`, `detach`): its serde name, not
/// its Rust name.
pub(crate) fn config_word<T: serde::Serialize + std::fmt::Debug>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{v:?}").to_lowercase(),
    }
}

/// The throttle section of `trafficctl status` and `trafficctl throttle`.
pub fn render_throttle(t: &ThrottleStatus) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "throttle level: {} for {:.0}s (rate ×{:.2}, {} transitions){}",
        t.level,
        t.time_in_level_seconds,
        t.multiplier,
        t.transitions,
        t.max_connections
            .map(|m| format!(", at most {m} connections per upstream"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "{:<8} {:>8} {:>9}  {:<28} RELEASE BELOW",
        "RESOURCE", "READING", "REACHES", "THRESHOLDS (low/med/high/crit)"
    );
    for r in &t.resources {
        let _ = writeln!(
            o,
            "{:<8} {:>8} {:>9}  {:<28} {}",
            r.resource.as_str(),
            r.ratio.map_or("-".to_owned(), |v| format!("{v:.3}")),
            r.reaches.as_str(),
            format!(
                "{:.2}/{:.2}/{:.2}/{:.2}",
                r.thresholds.low, r.thresholds.medium, r.thresholds.high, r.thresholds.critical
            ),
            r.release_below
                .map_or("-".to_owned(), |v| format!("{v:.2}")),
        );
    }
    o
}

/// The `trafficctl status` text.
pub fn render_status(s: &StatusReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "trafficd {} (ABI {}), pid {}, up {}s",
        s.version, s.abi_version, s.pid, s.uptime_seconds
    );
    let _ = writeln!(o, "config:     {}", s.config_path.display());
    for f in &s.config_included {
        let _ = writeln!(o, "            + {}", f.display());
    }
    let _ = writeln!(
        o,
        "mode:       {}, on exit: {}{}",
        config_word(&s.mode),
        config_word(&s.on_exit),
        if s.adopted_pinned_state {
            ", state adopted from pins"
        } else {
            ""
        }
    );
    let ifaces: Vec<String> = s
        .interfaces
        .iter()
        .map(|i| match &i.mode {
            Some(mode) if i.attached => format!("{} ({})", i.name, config_word(mode)),
            _ => format!("{} (DETACHED: not filtered)", i.name),
        })
        .collect();
    let _ = writeln!(o, "interfaces: {}", ifaces.join(", "));
    let _ = writeln!(o, "rules:      {}", s.rules);
    if let Some(f) = &s.fleet {
        let _ = writeln!(o, "fleet:      {}", crate::fleet::status_line(f));
    }
    let _ = writeln!(
        o,
        "reloads:    {} ok, {} failed{}",
        s.reload.succeeded,
        s.reload.failed,
        s.reload
            .last_error
            .as_ref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    );
    for c in &s.chaos {
        let _ = writeln!(
            o,
            "CHAOS:      {} drop {:.0}%, reset {:.0}%, expires in {:.0}s",
            c.target,
            c.drop_ratio * 100.0,
            c.reset_ratio * 100.0,
            c.expires_in_seconds
        );
    }
    if let Some(t) = &s.throttle {
        let _ = writeln!(o);
        o.push_str(&render_throttle(t));
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<14} {:>4} {:<8} {:<9} LIMITED",
        "CLASS", "SLOT", "MODE", "PRIORITY"
    );
    for c in &s.classes {
        let _ = writeln!(
            o,
            "{:<14} {:>4} {:<8} {:<9} {}",
            c.name,
            c.slot,
            config_word(&c.mode),
            config_word(&c.priority),
            if c.limited { "yes" } else { "no" }
        );
    }
    o
}

/// The `trafficctl circuits` table.
pub fn render_circuits(r: &CircuitsReport) -> String {
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
