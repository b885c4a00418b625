//! The fleet demo's live view, final report, chart (`target/demo/fleet.svg`), data
//! (`fleet.json`) and the outcome `--check` judges.

use std::{io::Write as _, time::Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{
    BUDGET_INTERVAL, BURST, FLEET_BUDGETS, Lab, NODES, RATE,
    story::{Listing, Run, Sample},
};
use crate::{
    chart::panels::{self, Panel, Series},
    load::Mark,
};

/// What the limits allow a source over `t` seconds: `rate·t + burst`.
pub(super) fn allowed(t: f64) -> f64 {
    RATE * t + BURST
}

/// The README's bound on what the fleet passes one source over `t` seconds.
pub(super) fn bound(t: f64) -> f64 {
    allowed(t) + (NODES as f64 - 1.0) * (BURST + 2.0 * RATE * BUDGET_INTERVAL)
}

const COLORS: [&str; 3] = ["#2b9348", "#0077b6", "#9d4edd"];

/// The figures of the run.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    /// Seconds from the start until node 1 listed the attacker's ban.
    pub first_ban_s: Option<f64>,
    /// Per node: ms after node 1 that it listed the ban (node 1: 0).
    pub propagation_ms: Vec<Option<f64>>,
    pub origins: Vec<String>,
    pub attacker_sent: Vec<u64>,
    pub attacker_passed: Vec<u64>,
    pub banned_drops: Vec<u64>,
    pub client_sent: Vec<u64>,
    pub client_passed: Vec<u64>,
    /// The client's sending time (first to last datagram over the nodes), seconds.
    pub client_secs: f64,
    pub client_fleet_passed: u64,
    pub client_allowed: f64,
    pub client_bound: f64,
    pub client_banned: bool,
    pub fleet_budgets: bool,
    pub redis_ops_per_node_s: f64,
}

impl Outcome {
    /// What `--check` refuses, in words; empty when everything held.
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.first_ban_s.is_none() {
            f.push("the attacker was not banned on node1".into());
        }
        for k in 1..NODES {
            match self.propagation_ms[k] {
                Some(ms) if ms <= 1000.0 => {}
                Some(ms) => f.push(format!(
                    "node{} listed the ban {ms:.0} ms after node1",
                    k + 1
                )),
                None => f.push(format!("node{} never listed the ban", k + 1)),
            }
            if self.attacker_passed[k] > 0 {
                f.push(format!(
                    "node{} passed {} of the attacker's datagrams",
                    k + 1,
                    self.attacker_passed[k]
                ));
            }
            if (self.banned_drops[k] as f64) < 0.9 * self.attacker_sent[k] as f64
                || self.attacker_sent[k] == 0
            {
                f.push(format!(
                    "node{} dropped {} as banned of the attacker's {}",
                    k + 1,
                    self.banned_drops[k],
                    self.attacker_sent[k]
                ));
            }
        }
        if self.client_banned {
            f.push("the client was banned".into());
        }
        if FLEET_BUDGETS {
            let p = self.client_fleet_passed as f64;
            if p > self.client_bound {
                f.push(format!(
                    "the fleet passed the client {p:.0}, over the bound {:.0}",
                    self.client_bound
                ));
            }
            if p < 0.8 * RATE * self.client_secs {
                f.push(format!(
                    "the fleet passed the client {p:.0}: below 80 % of rate·t"
                ));
            }
        }
        f
    }
}

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

fn ms_after(a: Instant, b: Instant) -> f64 {
    a.saturating_duration_since(b).as_secs_f64() * 1e3
}

/// Print the report, write the chart and the data; the outcome.
pub(super) fn report(lab: &Lab, run: &Run) -> Result<Outcome> {
    let first = run.listings[0].at;
    let client_secs = {
        let a = run
            .client_flows
            .iter()
            .map(|f| f.first_ns)
            .filter(|&x| x > 0)
            .min();
        let b = run.client_flows.iter().map(|f| f.last_ns).max();
        match (a, b) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
            _ => 0.0,
        }
    };
    let o = Outcome {
        first_ban_s: first.map(|f| f.duration_since(run.t0).as_secs_f64()),
        propagation_ms: run
            .listings
            .iter()
            .map(|l| Some(ms_after(l.at?, first?)))
            .collect(),
        origins: run.listings.iter().map(|l| l.origin.clone()).collect(),
        attacker_sent: run.attacker_sent.clone(),
        attacker_passed: run.attacker_passed.clone(),
        banned_drops: run.banned_drops.clone(),
        client_sent: run.client_sent.clone(),
        client_passed: run.client_passed.clone(),
        client_secs,
        client_fleet_passed: run.client_passed.iter().sum(),
        client_allowed: allowed(client_secs),
        client_bound: bound(client_secs),
        client_banned: run.client_banned,
        fleet_budgets: FLEET_BUDGETS,
        redis_ops_per_node_s: run.redis_ops_per_node_s,
    };
    println!("\n==> report\n");
    println!(
        "  {:<6} {:>13} {:>13} {:>14} {:<12} {:>12} {:>12}",
        "NODE", "ATTACKER SENT", "PASSED", "DROPPED BANNED", "BAN LISTED", "CLIENT SENT", "PASSED"
    );
    for k in 0..NODES {
        let l = match o.propagation_ms[k] {
            Some(ms) => format!("{} +{ms:.0}ms", o.origins[k]),
            None => "never".into(),
        };
        println!(
            "  {:<6} {:>13} {:>13} {:>14} {:<12} {:>12} {:>12}",
            lab.nodes[k].name,
            o.attacker_sent[k],
            o.attacker_passed[k],
            o.banned_drops[k],
            l,
            o.client_sent[k],
            o.client_passed[k]
        );
    }
    println!("\n==> the fleet in numbers");
    match (o.first_ban_s, &run.listings[0]) {
        (Some(t), l) => println!(
            "  - the attacker's offender rule banned it on node1 {t:.1} s into the flood ({}, reason \"{}\", {} s left); node2 listed it {} later, node3 {}",
            l.origin,
            l.reason,
            l.until_unix_ms
                .saturating_sub(traffic_daemon::api::bans::unix_now_ms())
                / 1000,
            fmt_ms(o.propagation_ms[1]),
            fmt_ms(o.propagation_ms[2]),
        ),
        (None, _) => println!("  - the attacker was not banned"),
    }
    for k in 1..NODES {
        println!(
            "  - node{}: the attacker sent {}, {} passed, {} dropped as banned",
            k + 1,
            o.attacker_sent[k],
            o.attacker_passed[k],
            o.banned_drops[k]
        );
    }
    println!(
        "  - the client sent {} over {:.1} s to the {NODES} nodes ({:.0}/s, 3× its limit); the fleet passed {} ({}): rate·t + burst = {:.0}, the README's bound {:.0}{}",
        o.client_sent.iter().sum::<u64>(),
        o.client_secs,
        o.client_sent.iter().sum::<u64>() as f64 / o.client_secs.max(1e-3),
        o.client_fleet_passed,
        o.client_passed
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" + "),
        o.client_allowed,
        o.client_bound,
        if FLEET_BUDGETS {
            ""
        } else {
            " (fleet budget OFF: each node gives its own limit)"
        }
    );
    println!(
        "  - the client was {}banned; Redis served {:.1} commands/s per node",
        if o.client_banned { "" } else { "not " },
        o.redis_ops_per_node_s
    );
    let (svg, json) = write_outputs(run, &o)?;
    println!(
        "\n==> chart {}\n    data  {}",
        svg.display(),
        json.display()
    );
    Ok(o)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("never".into(), |ms| format!("{ms:.0} ms"))
}

fn write_outputs(run: &Run, o: &Outcome) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
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
    for (k, l) in run.listings.iter().enumerate() {
        if let Some(a) = l.at {
            marks.push(Mark {
                t: t_of(a),
                kind: if k == 0 { "breaker" } else { "note" },
                label: match o.propagation_ms[k] {
                    Some(ms) if k > 0 => format!("banned on node{} (+{ms:.0} ms)", k + 1),
                    _ => format!("banned on node{} ({})", k + 1, l.origin),
                },
            });
        }
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
                "client, fleet total since it started: passed {} vs rate·t + burst {:.0} (bound {:.0})",
                o.client_fleet_passed, o.client_allowed, o.client_bound
            ),
            unit: "datagrams".into(),
            series: vec![
                series(
                    "rate·t + burst",
                    "#1d4ed8",
                    Some("2 2"),
                    pts(&|x| x.client_allowed),
                ),
                series(
                    "bound",
                    "#d62828",
                    Some("6 3"),
                    pts(&|x| bound(x.client_allowed / RATE - BURST / RATE)),
                ),
                series(
                    "passed, all nodes",
                    "#2b9348",
                    None,
                    pts(&|x| x.client_fleet_passed as f64),
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
