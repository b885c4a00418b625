//! The fleet story: the attacker (flooding node 1 until banned, then nodes 2 and 3) and
//! the client (3× its rate spread over the nodes) run side by side; a watcher polls every
//! node's ban list every 10 ms for the attacker's prefix; the main loop samples each second
//! and draws the live view.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::Serialize;
use traffic_daemon::api::{Client, bans::BansReport};
use traffic_testkit::{
    topo::SERVICE_V4,
    udp::{FlowStats, UdpFlow, UdpSink, run_flows},
};

use super::{Lab, NODES, RATE, report};
use crate::{admin, demo::interrupted};

/// The attacker's address index on every client host (198.18.1.2) and the client's
/// (198.18.1.11).
pub(super) const ATTACKER: u32 = 1;
pub(super) const CLIENT: u32 = 10;
/// The attacker's rate: 30× the limit, 97 % dropped, over the offender rule's 90 %.
const ATTACK_PPS: f64 = 3000.0;
/// Longest flood of node 1 waiting for the ban (window 10 s, detector every 5 s).
const FIRST_LEG_MAX: Duration = Duration::from_secs(30);
/// How long the attacker stays on node 1 after its ban, and on each later node.
const AFTER_BAN: Duration = Duration::from_secs(2);
const LEG: Duration = Duration::from_secs(6);
/// How long the client sends: 3× its rate, a third to each node.
const CLIENT_SECS: f64 = 40.0;

/// One node in one second (counts in that second; `listed` at its end).
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct NodeSecond {
    pub attacker_sent: u64,
    pub attacker_passed: u64,
    /// Drops of reason `banned` on the node (only the attacker is banned).
    pub banned_drops: u64,
    pub attacker_listed: bool,
    pub client_sent: u64,
    pub client_passed: u64,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct Sample {
    pub t: f64,
    pub dt: f64,
    /// Where the attacker sends (1-based), 0 when it does not.
    pub attacker_at: usize,
    pub nodes: Vec<NodeSecond>,
    /// The client's passes over the fleet since it started, and `rate·t + burst` then.
    pub client_fleet_passed: u64,
    pub client_allowed: f64,
}

/// When each node first listed the attacker's prefix, and with which origin.
#[derive(Clone, Debug, Default)]
pub(super) struct Listing {
    pub at: Option<Instant>,
    pub origin: String,
    pub reason: String,
    pub until_unix_ms: u64,
    /// When the ban was made (on node 1: by its detector) and when this node was first
    /// seen listing it, wall clock (ms).
    pub created_unix_ms: u64,
    pub seen_unix_ms: u64,
}

/// What the story measured, for the report.
pub(super) struct Run {
    pub t0: Instant,
    pub samples: Vec<Sample>,
    pub listings: Vec<Listing>,
    /// (instant, label) of the attacker's moves.
    pub moves: Vec<(Instant, String)>,
    /// Final counts per node: attacker and client passed (sinks drained).
    pub attacker_passed: Vec<u64>,
    pub client_passed: Vec<u64>,
    pub attacker_sent: Vec<u64>,
    pub client_sent: Vec<u64>,
    pub banned_drops: Vec<u64>,
    pub client_flows: Vec<FlowStats>,
    /// Whether any node banned the client.
    pub client_banned: bool,
    pub redis_ops_per_node_s: f64,
}

fn flow(host: &traffic_testkit::topo::Host, i: u32, pps: f64, d: Duration) -> UdpFlow {
    UdpFlow {
        src: IpAddr::V4(host.v4(i)),
        dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), super::PORT),
        rate_pps: pps,
        duration: d,
        max_packets: (pps * d.as_secs_f64()).ceil() as u64,
        payload_len: 32,
        cpu: None,
        progress: None,
    }
}

/// `banned` drops summed over the node's classes (`/v1/counters`).
fn banned_drops(socket: &std::path::Path) -> u64 {
    admin::get_json(socket, "/v1/counters")
        .ok()
        .map(|v| {
            v["classes"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["reasons"].as_array().into_iter().flatten())
                .filter(|r| r["reason"] == "banned" && r["outcome"] == "drop")
                .filter_map(|r| r["packets"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// The ban of `prefix` on a node, if listed.
fn listed(c: &Client, prefix: &str) -> Option<traffic_daemon::bans::Ban> {
    c.get::<BansReport>("/v1/bans")
        .ok()?
        .bans
        .into_iter()
        .find(|b| b.prefix.to_string() == prefix)
}

pub(super) fn run(lab: &Lab) -> Result<report::Outcome> {
    let attacker_ip = lab.nodes[0].host().v4(ATTACKER);
    let client_ip = lab.nodes[0].host().v4(CLIENT);
    let prefix = format!("{attacker_ip}/32");
    let sinks: Vec<UdpSink> = lab
        .nodes
        .iter()
        .map(|n| UdpSink::start(&n.topo.node, super::PORT, 1))
        .collect::<Result<_>>()?;
    let a_sent: Vec<Arc<AtomicU64>> = (0..NODES).map(|_| Arc::default()).collect();
    let c_sent: Vec<Arc<AtomicU64>> = (0..NODES).map(|_| Arc::default()).collect();
    let listings: Mutex<Vec<Listing>> = Mutex::new(vec![Listing::default(); NODES]);
    let moves: Mutex<Vec<(Instant, String)>> = Mutex::new(Vec::new());
    let attacker_at = AtomicUsize::new(0);
    let stop = Arc::new(AtomicBool::new(false));
    let done = AtomicBool::new(false);
    let redis_before = lab.redis_commands();
    let t0 = Instant::now();
    println!(
        "\n### the fleet — attacker {attacker_ip} floods node1 at {ATTACK_PPS:.0}/s until banned, then rotates; client {client_ip} sends {:.0}/s ({}× its limit) spread over the {NODES} nodes",
        3.0 * RATE,
        3
    );
    let mut live = super::live::Live::new();
    let (samples, client_flows) = std::thread::scope(|s| -> Result<_> {
        // The watcher: every node's ban list every 10 ms until all list the attacker.
        s.spawn(|| {
            let clients: Vec<Client> = lab
                .nodes
                .iter()
                .map(|n| Client::new(&n.socket).with_timeout(Duration::from_secs(2)))
                .collect();
            while !done.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                for (k, c) in clients.iter().enumerate() {
                    if lock(&listings)[k].at.is_some() {
                        continue;
                    }
                    if let Some(b) = listed(c, &prefix) {
                        let origin = serde_json::to_value(b.origin)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        lock(&listings)[k] = Listing {
                            at: Some(Instant::now()),
                            origin,
                            reason: b.reason,
                            until_unix_ms: b.until_unix_ms,
                            created_unix_ms: b.created_unix_ms,
                            seen_unix_ms: traffic_daemon::api::bans::unix_now_ms(),
                        };
                    }
                }
                if lock(&listings).iter().all(|l| l.at.is_some()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        // The attacker: node 1 until banned there (+2 s), then 6 s on each other node.
        let attacker = s.spawn(|| {
            for (k, (node, sent)) in lab.nodes.iter().zip(&a_sent).enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let host = node.host();
                let d = if k == 0 { FIRST_LEG_MAX } else { LEG };
                let mut f = flow(host, ATTACKER, ATTACK_PPS, d);
                f.progress = Some(sent.clone());
                lock(&moves).push((Instant::now(), format!("attacker → {}", node.name)));
                attacker_at.store(k + 1, Ordering::Relaxed);
                let leg_stop = Arc::new(AtomicBool::new(false));
                let h = {
                    let (ns, leg_stop) = (&host.ns, leg_stop.clone());
                    s.spawn(move || run_flows(ns, std::slice::from_ref(&f), &leg_stop))
                };
                while !h.is_finished() {
                    let banned_for = lock(&listings)[0]
                        .at
                        .map(|t| t.elapsed())
                        .unwrap_or_default();
                    if stop.load(Ordering::Relaxed) || (k == 0 && banned_for >= AFTER_BAN) {
                        leg_stop.store(true, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = h.join();
            }
            attacker_at.store(0, Ordering::Relaxed);
        });
        // The client: a third of 3× its rate to each node.
        let clients: Vec<_> = lab
            .nodes
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let mut f = flow(n.host(), CLIENT, RATE, Duration::from_secs_f64(CLIENT_SECS));
                f.progress = Some(c_sent[k].clone());
                let stop = stop.clone();
                s.spawn(move || run_flows(&n.host().ns, std::slice::from_ref(&f), &stop))
            })
            .collect();
        // Each second: sample, show; until both have finished (bounded).
        let mut samples: Vec<Sample> = Vec::new();
        let mut prev = [[0u64; 5]; NODES];
        let mut last = t0;
        let mut next = t0 + Duration::from_secs(1);
        let end = t0 + FIRST_LEG_MAX + 2 * LEG + Duration::from_secs(20);
        loop {
            while Instant::now() < next && !interrupted() {
                std::thread::sleep(Duration::from_millis(20));
            }
            next += Duration::from_secs(1);
            if interrupted() || Instant::now() > end {
                stop.store(true, Ordering::Relaxed);
            }
            let now = Instant::now();
            let ls = lock(&listings).clone();
            let mut sample = Sample {
                t: now.duration_since(t0).as_secs_f64(),
                dt: now.duration_since(last).as_secs_f64(),
                attacker_at: attacker_at.load(Ordering::Relaxed),
                ..Default::default()
            };
            last = now;
            for (k, n) in lab.nodes.iter().enumerate() {
                let got = sinks[k].snapshot();
                let cur = [
                    a_sent[k].load(Ordering::Relaxed),
                    got.get(&IpAddr::V4(attacker_ip)).copied().unwrap_or(0),
                    banned_drops(&n.socket),
                    c_sent[k].load(Ordering::Relaxed),
                    got.get(&IpAddr::V4(client_ip)).copied().unwrap_or(0),
                ];
                let d: Vec<u64> = (0..5).map(|i| cur[i].saturating_sub(prev[k][i])).collect();
                prev[k] = cur;
                sample.nodes.push(NodeSecond {
                    attacker_sent: d[0],
                    attacker_passed: d[1],
                    banned_drops: d[2],
                    attacker_listed: ls[k].at.is_some(),
                    client_sent: d[3],
                    client_passed: d[4],
                });
            }
            sample.client_fleet_passed = prev.iter().map(|p| p[4]).sum();
            sample.client_allowed = report::allowed(sample.t.min(CLIENT_SECS));
            live.show(&sample, &ls, t0, lab);
            samples.push(sample);
            let finished = attacker.is_finished() && clients.iter().all(|c| c.is_finished());
            if finished || stop.load(Ordering::Relaxed) {
                break;
            }
        }
        done.store(true, Ordering::Relaxed);
        let _ = attacker.join();
        let flows: Vec<FlowStats> = clients
            .into_iter()
            .filter_map(|c| c.join().ok().and_then(Result::ok))
            .flatten()
            .collect();
        Ok((samples, flows))
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let redis_ops = lab.redis_commands().saturating_sub(redis_before);
    let mut run = Run {
        t0,
        samples,
        listings: lock(&listings).clone(),
        moves: lock(&moves).clone(),
        attacker_passed: Vec::new(),
        client_passed: Vec::new(),
        attacker_sent: a_sent.iter().map(|a| a.load(Ordering::Relaxed)).collect(),
        client_sent: c_sent.iter().map(|a| a.load(Ordering::Relaxed)).collect(),
        banned_drops: Vec::new(),
        client_flows,
        client_banned: false,
        redis_ops_per_node_s: redis_ops as f64 / secs / NODES as f64,
    };
    let client_prefix = format!("{client_ip}/32");
    for (n, sink) in lab.nodes.iter().zip(sinks) {
        let got = sink.finish(Duration::from_secs(2));
        run.attacker_passed
            .push(got.get(&IpAddr::V4(attacker_ip)).copied().unwrap_or(0));
        run.client_passed
            .push(got.get(&IpAddr::V4(client_ip)).copied().unwrap_or(0));
        run.banned_drops.push(banned_drops(&n.socket));
        let c = Client::new(&n.socket).with_timeout(Duration::from_secs(2));
        run.client_banned |= listed(&c, &client_prefix).is_some();
    }
    report::report(lab, &run)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
