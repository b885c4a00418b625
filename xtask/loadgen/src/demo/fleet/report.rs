//! The fleet demo's final report and the outcome `--check` judges.

use anyhow::Result;
use serde::Serialize;

use super::{BUDGET_INTERVAL, BURST, FLEET_BUDGETS, Lab, NODES, RATE, live::ms_after, story::Run};

/// What the limits allow a source over `t` seconds: `rate·t + burst`.
pub(super) fn allowed(t: f64) -> f64 {
    RATE * t + BURST
}

/// The README's bound on what the fleet passes one source over `t` seconds.
pub(super) fn bound(t: f64) -> f64 {
    allowed(t) + (NODES as f64 - 1.0) * (BURST + 2.0 * RATE * BUDGET_INTERVAL)
}

/// The figures of the run.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    /// Seconds from the start until node 1 listed the attacker's ban.
    pub first_ban_s: Option<f64>,
    /// Per node: ms after node 1 that it listed the ban (node 1: 0).
    pub propagation_ms: Vec<Option<f64>>,
    /// Per node: ms from the ban's creation on node 1 until the node was seen listing it
    /// (wall clock; every node's list polled every 10 ms).
    pub since_created_ms: Vec<Option<u64>>,
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
        since_created_ms: run
            .listings
            .iter()
            .map(|l| {
                let c = run.listings[0].created_unix_ms;
                (l.at.is_some() && c > 0).then(|| l.seen_unix_ms.saturating_sub(c))
            })
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
            "  - the attacker's offender rule banned it on node1 {t:.1} s into the flood ({}, reason \"{}\", {} s left); node2 listed it {} after node1 did, node3 {} (since the ban was made on node1: node1 {}, node2 {}, node3 {}; lists polled every 10 ms)",
            l.origin,
            l.reason,
            l.until_unix_ms
                .saturating_sub(traffic_daemon::api::bans::unix_now_ms())
                / 1000,
            fmt_ms(o.propagation_ms[1]),
            fmt_ms(o.propagation_ms[2]),
            fmt_ms(o.since_created_ms[0].map(|v| v as f64)),
            fmt_ms(o.since_created_ms[1].map(|v| v as f64)),
            fmt_ms(o.since_created_ms[2].map(|v| v as f64)),
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
    let (svg, json) = super::chart::write_outputs(run, &o)?;
    println!(
        "\n==> chart {}\n    data  {}",
        svg.display(),
        json.display()
    );
    Ok(o)
}

pub(super) fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("never".into(), |ms| format!("{ms:.0} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> Outcome {
        Outcome {
            first_ban_s: Some(13.0),
            propagation_ms: vec![Some(0.0), Some(11.0), Some(12.0)],
            since_created_ms: vec![Some(40), Some(45), Some(46)],
            origins: vec!["auto".into(), "fleet".into(), "fleet".into()],
            attacker_sent: vec![44_000, 18_000, 18_000],
            attacker_passed: vec![1_300, 0, 0],
            banned_drops: vec![6_000, 18_000, 18_000],
            client_sent: vec![4_000; 3],
            client_passed: vec![900, 2_000, 1_194],
            client_secs: 40.0,
            client_fleet_passed: 4_094,
            client_allowed: allowed(40.0),
            client_bound: bound(40.0),
            client_banned: false,
            fleet_budgets: FLEET_BUDGETS,
            redis_ops_per_node_s: 29.0,
        }
    }

    #[test]
    fn the_bound_is_the_readmes() {
        // rate·t + burst + (nodes − 1)·(burst + 2·rate·interval) at 100/s, 20, 200 ms.
        assert_eq!(allowed(40.0), 4_020.0);
        assert_eq!(bound(40.0), 4_020.0 + 2.0 * (20.0 + 40.0));
    }

    #[test]
    fn check_accepts_what_held_and_names_each_failure() {
        assert!(held().failures().is_empty(), "{:?}", held().failures());
        let mut late = held();
        late.propagation_ms[2] = Some(1_500.0);
        late.attacker_passed[1] = 3;
        late.client_banned = true;
        let f = late.failures();
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].contains("node2 passed 3"), "{f:?}");
        assert!(f[1].contains("node3 listed the ban 1500 ms"), "{f:?}");
        assert!(f[2].contains("client was banned"), "{f:?}");
        let mut never = held();
        never.first_ban_s = None;
        never.propagation_ms = vec![None; 3];
        assert!(never.failures().len() >= 3);
        if FLEET_BUDGETS {
            let mut over = held();
            over.client_fleet_passed = 12_000;
            assert_eq!(over.failures().len(), 1);
            let mut starved = held();
            starved.client_fleet_passed = 3_000;
            assert_eq!(starved.failures().len(), 1);
        }
    }
}
