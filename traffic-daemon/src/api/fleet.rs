//! `/v1/fleet`: the table of `trafficctl fleet` (the wire type is
//! [`crate::fleet::FleetSnapshot`]).

use std::fmt::Write as _;

pub use crate::fleet::FleetSnapshot;

/// The nodes with their last heartbeat, then the heaviest sources across the fleet.
pub fn render_fleet(s: &FleetSnapshot, now_unix_ms: u64) -> String {
    let mut o = String::new();
    let state = if s.connected {
        "connected".to_owned()
    } else {
        format!(
            "DISCONNECTED ({}); enforcing locally",
            s.error.as_deref().unwrap_or("not yet connected")
        )
    };
    let _ = writeln!(o, "fleet {} as {}: {state}", s.url, s.node);
    let _ = writeln!(
        o,
        "bans shared {}, received {}, refused {}; this node's shared bans in force {}",
        s.bans_sent, s.bans_received, s.bans_refused, s.own_bans
    );
    let _ = writeln!(
        o,
        "fleet budgets: sources shared {}, buckets charged with other nodes' use {}, entries refused {}",
        s.budget_shared, s.budget_corrections, s.budget_refused
    );
    let _ = writeln!(
        o,
        "\n{:<24} {:>9} {:<10} {:<8} {:>6} {:>6}  OPEN BREAKERS",
        "NODE", "SEEN", "VERSION", "LEVEL", "BANS", "SHARED"
    );
    for n in &s.nodes {
        let ago = now_unix_ms.saturating_sub(n.seen_unix_ms) as f64 / 1000.0;
        let _ = writeln!(
            o,
            "{:<24} {:>8.1}s {:<10} {:<8} {:>6} {:>6}  {}",
            n.node,
            ago,
            n.version,
            n.level,
            n.bans,
            n.fleet_bans,
            if n.open_breakers.is_empty() {
                "-".to_owned()
            } else {
                n.open_breakers.join(",")
            }
        );
    }
    let mut top: Vec<_> = s
        .nodes
        .iter()
        .flat_map(|n| n.top_sources.iter().map(move |t| (n.node.as_str(), t)))
        .collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1.packets));
    if !top.is_empty() {
        let _ = writeln!(
            o,
            "\n{:<44} {:<12} {:<24} {:>12} {:>12}",
            "TOP SOURCE", "CLASS", "NODE", "PACKETS", "DROPPED"
        );
        for (node, t) in top.iter().take(10) {
            let _ = writeln!(
                o,
                "{:<44} {:<12} {:<24} {:>12} {:>12}",
                t.prefix, t.class, node, t.packets, t.dropped
            );
        }
    }
    o
}
