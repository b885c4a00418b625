//! The fleet demo's chart (`target/demo/fleet.svg`, with [`crate::chart::panels`]) and
//! data (`fleet.json`).

use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, Result};

use super::{
    BUDGET_INTERVAL, BURST, FLEET_BUDGETS, NODES, RATE,
    report::{Outcome, bound, fmt_ms},
    story::{Run, Sample},
};
use crate::{
    chart::panels::{self, Panel, Series},
    load::Mark,
};

const COLORS: [&str; 3] = ["#2b9348", "#0077b6", "#9d4edd"];

pub(super) fn write_outputs(run: &Run, o: &Outcome) -> Result<(PathBuf, PathBuf)> {
    let t_of = |i: Instant| i.saturating_duration_since(run.t0).as_secs_f64();
    let mut marks: Vec<Mark> = run
        .moves
        .iter()
        .map(|(i, l)| Mark {
            t: t_of(*i),
            kind: "phase",
            label: l.clone(),
        })
        .collect();
    // The ban: one mark at node 1's listing, the others' delays in its label (they follow
    // within milliseconds, so separate marks would only overlap).
    if let Some(a) = run.listings[0].at {
        let others: Vec<String> = (1..NODES)
            .map(|k| match o.propagation_ms[k] {
                Some(ms) => format!("node{} +{ms:.0}ms", k + 1),
                None => format!("node{} never", k + 1),
            })
            .collect();
        marks.push(Mark {
            t: t_of(a),
            kind: "breaker",
            label: format!("banned ({})", others.join(", ")),
        });
    }
    let s = &run.samples;
    let pts =
        |f: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> { s.iter().map(|x| (x.t, f(x))).collect() };
    let rate = |n: u64, x: &Sample| n as f64 / x.dt.max(1e-3);
    let per_node = |f: fn(&super::story::NodeSecond) -> u64| -> Vec<Series> {
        (0..NODES)
            .map(|k| Series {
                label: format!("node{}", k + 1),
                color: COLORS[k],
                dash: None,
                points: pts(&|x| rate(f(&x.nodes[k]), x)),
            })
            .collect()
    };
    let sending = |x: &Sample| x.nodes.iter().any(|n| n.client_sent > 0);
    let series = |label: &str, color, dash, points| Series {
        label: label.into(),
        color,
        dash,
        points,
    };
    let panels = vec![
        Panel {
            title: format!(
                "client, fleet total: {} of {} datagrams passed",
                o.client_fleet_passed,
                o.client_sent.iter().sum::<u64>()
            ),
            unit: "datagrams/s".into(),
            series: vec![
                series(
                    "offered/s",
                    "#999",
                    Some("5 3"),
                    pts(&|x| rate(x.nodes.iter().map(|n| n.client_sent).sum(), x)),
                ),
                series(
                    "limit (rate/s)",
                    "#1d4ed8",
                    Some("2 2"),
                    pts(&|x| if sending(x) { RATE } else { 0.0 }),
                ),
                series(
                    "passed/s, all nodes",
                    "#2b9348",
                    None,
                    pts(&|x| rate(x.nodes.iter().map(|n| n.client_passed).sum(), x)),
                ),
            ],
        },
        Panel {
            title: format!(
                "client, fleet total since it started: passed {} of rate·t + burst = {:.0} (bound {:.0}); shown above rate·t",
                o.client_fleet_passed, o.client_allowed, o.client_bound
            ),
            unit: "datagrams above rate·t".into(),
            series: vec![
                series(
                    "burst (what the limit allows above rate·t)",
                    "#1d4ed8",
                    Some("2 2"),
                    pts(&|_| BURST),
                ),
                series(
                    "the README's bound",
                    "#d62828",
                    Some("6 3"),
                    pts(&|_| bound(0.0)),
                ),
                series(
                    "passed over the fleet − rate·t",
                    "#2b9348",
                    None,
                    pts(&|x| x.client_fleet_passed as f64 - (x.client_allowed - BURST)),
                ),
            ],
        },
        Panel {
            title: "client passed/s per node".into(),
            unit: "datagrams/s".into(),
            series: per_node(|n| n.client_passed),
        },
        Panel {
            title: "attacker passed/s per node".into(),
            unit: "datagrams/s".into(),
            series: per_node(|n| n.attacker_passed),
        },
        Panel {
            title: "attacker dropped as banned, per node".into(),
            unit: "datagrams/s".into(),
            series: per_node(|n| n.banned_drops),
        },
    ];
    let subtitle = format!(
        "3 trafficd nodes, one redis-server; class api {RATE:.0}/s burst {BURST:.0}, offender scope fleet{}; attacker {:.0} s to its ban, propagation {} / {}",
        if FLEET_BUDGETS {
            format!(
                ", scope fleet (budget_interval {:.0} ms)",
                BUDGET_INTERVAL * 1e3
            )
        } else {
            ", node scope".into()
        },
        o.first_ban_s.unwrap_or(0.0),
        fmt_ms(o.propagation_ms[1]),
        fmt_ms(o.propagation_ms[2]),
    );
    let t_max = s.last().map_or(1.0, |x| x.t);
    let svg = panels::svg(
        "trafficd fleet: shared bans and a fleet-wide budget",
        &subtitle,
        t_max,
        &marks,
        &panels,
    );
    let dir = crate::target_dir().join("demo");
    std::fs::create_dir_all(&dir)?;
    let svg_path = dir.join("fleet.svg");
    std::fs::write(&svg_path, svg).with_context(|| format!("write {}", svg_path.display()))?;
    let json = serde_json::json!({
        "name": "fleet",
        "limits": { "rate": RATE, "burst": BURST, "budget_interval_s": BUDGET_INTERVAL, "fleet_budgets": FLEET_BUDGETS },
        "outcome": o,
        "marks": marks,
        "timeline": s,
    });
    let json_path = dir.join("fleet.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    Ok((svg_path, json_path))
}
