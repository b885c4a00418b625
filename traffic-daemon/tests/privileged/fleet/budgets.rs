//! Fleet-wide budgets: a client spreading its traffic over three nodes is held to one
//! limit for the fleet (against rate·t + burst and the README's bound), while a client of a
//! class of node scope gets its limit on every node; and under a flood of 10⁶ spoofed
//! sources in the fleet class, Redis sees no more than the stated commands per node.
//!
//! Before the budget sync, `scope = "fleet"` was an unknown key (the daemons would not
//! start); with the sync switched off (the debits not applied) the fleet total is about
//! three times the limit, which the first case's bound refuses.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use traffic_testkit::{
    packet::Frame,
    raw::send_frames,
    topo::{SERVICE_V4, SERVICE_V6},
    udp::{UdpFlow, UdpSink, run_flows},
};

use super::Fleet;
use crate::support::poll;

const RATE: f64 = 100.0;
const BURST: f64 = 20.0;
/// `[fleet] budget_interval` (the default).
const INTERVAL: f64 = 0.2;
const PORT: u16 = 9000;
/// Host addresses (index for `Host::v4`): the fleet-scoped client and the node-scoped one.
const FLEET_CLIENT: u32 = 209;
const LOCAL_CLIENT: u32 = 210;

/// The classes and rules of the cases: `web` of fleet scope, `webl` the same limits per
/// node; spoofed IPv6 sources of `2001:db8:f100::/40` fall in `web` one bucket each.
fn classes(_k: usize) -> String {
    format!(
        "[classes.web]\npackets = {{ rate = {RATE}, burst = {BURST} }}\nscope = \"fleet\"\naggregate_v6 = 128\n\
         [classes.webl]\npackets = {{ rate = {RATE}, burst = {BURST} }}\n\
         [[rules]]\ncidr = \"198.18.1.210/32\"\nclass = \"web\"\n\
         [[rules]]\ncidr = \"198.18.1.211/32\"\nclass = \"webl\"\n\
         [[rules]]\ncidr = \"2001:db8:f100::/40\"\nclass = \"web\"\n"
    )
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Three nodes; one client sends 200/s to each (6× its limit in all) for 6 s, a second
/// client of a node-scoped class the same. The fleet-scoped client's total over the three
/// nodes stays within `rate·t + burst + (nodes − 1)·(burst + 2·rate·interval)` and above
/// 80 % of `rate·t`; the node-scoped one gets about three limits. Every node charged
/// debits, and the metrics say so.
pub fn a_client_spread_over_three_nodes_is_held_to_one_fleet_wide_limit() {
    let mut f = Fleet::new("fl-budget", classes);
    f.redis.start();
    for n in &mut f.nodes {
        n.start();
    }
    f.wait_connected(Duration::from_secs(10));
    poll("every node sees three", Duration::from_secs(5), || {
        f.nodes
            .iter()
            .all(|n| n.fleet().nodes.len() == 3)
            .then_some(())
    });
    let secs = 6.0;
    let flow = |host: &traffic_testkit::topo::Host, i: u32| UdpFlow {
        src: IpAddr::V4(host.v4(i)),
        dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), PORT),
        rate_pps: 2.0 * RATE,
        duration: Duration::from_secs_f64(secs),
        max_packets: (2.0 * RATE * secs) as u64,
        payload_len: 32,
        cpu: None,
        progress: None,
    };
    let sinks: Vec<UdpSink> = f
        .nodes
        .iter()
        .map(|n| UdpSink::start(&n.rig.topo.node, PORT, 1).expect("sink"))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let sent: Vec<u64> = std::thread::scope(|s| {
        let senders: Vec<_> = f
            .nodes
            .iter()
            .map(|n| {
                let host = &n.rig.topo.hosts[0];
                let flows = [flow(host, FLEET_CLIENT), flow(host, LOCAL_CLIENT)];
                let stop = stop.clone();
                s.spawn(move || run_flows(&host.ns, &flows, &stop).expect("flows"))
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|h| h.join().unwrap().into_iter().map(|st| st.sent))
            .collect()
    });
    let t = t0.elapsed().as_secs_f64();
    let (mut fleet, mut local) = (0u64, 0u64);
    let mut per_node = Vec::new();
    for (n, sink) in f.nodes.iter().zip(sinks) {
        let got = sink.finish(Duration::from_secs(2));
        let host = &n.rig.topo.hosts[0];
        let (a, b) = (
            got.get(&IpAddr::V4(host.v4(FLEET_CLIENT)))
                .copied()
                .unwrap_or(0),
            got.get(&IpAddr::V4(host.v4(LOCAL_CLIENT)))
                .copied()
                .unwrap_or(0),
        );
        per_node.push(a);
        fleet += a;
        local += b;
    }
    let allowed = RATE * t + BURST;
    let bound = allowed + 2.0 * (BURST + 2.0 * RATE * INTERVAL);
    let views: Vec<_> = f.nodes.iter().map(|n| n.fleet()).collect();
    eprintln!(
        "fleet budget: sent {} per flow over {t:.1} s; fleet-scoped client passed {fleet} \
         (per node {per_node:?}) against rate·t + burst = {allowed:.0} and bound {bound:.0}; \
         node-scoped client passed {local}; corrections {:?}",
        sent.iter().max().unwrap_or(&0),
        views
            .iter()
            .map(|v| v.budget_corrections)
            .collect::<Vec<_>>()
    );
    assert!(
        (fleet as f64) <= bound,
        "the fleet passed {fleet}, over the bound {bound:.0}"
    );
    assert!(
        (fleet as f64) >= 0.8 * RATE * t,
        "the fleet passed {fleet}: starved below 80 % of rate·t"
    );
    assert!(
        (local as f64) >= 2.5 * RATE * t,
        "the node-scoped client passed {local}: each node should give it its limit"
    );
    for (n, v) in f.nodes.iter().zip(&views) {
        assert!(
            v.budget_corrections > 0,
            "{} charged no debit: {v:?}",
            n.name
        );
        let text = n.rig.metrics_text();
        assert!(
            metric(&text, "traffic_fleet_budget_corrections_total") > 0.0,
            "{}: {text}",
            n.name
        );
    }
}

/// 10⁶ spoofed IPv6 sources (one packet each, every one a bucket of the fleet class) sent
/// to node 1 at line rate: none is marked busy, so nothing is shared; Redis sees only the
/// heartbeats, syncs and the budget reads — at most `4/heartbeat + 1/sync + (nodes +
/// 2)/budget_interval` commands per node and second.
pub fn a_flood_of_a_million_spoofed_sources_adds_no_redis_traffic() {
    let mut f = Fleet::new("fl-flood", classes);
    f.redis.start();
    for n in &mut f.nodes {
        n.start();
    }
    f.wait_connected(Duration::from_secs(10));
    poll("every node sees three", Duration::from_secs(5), || {
        f.nodes
            .iter()
            .all(|n| n.fleet().nodes.len() == 3)
            .then_some(())
    });
    let host = &f.nodes[0].rig.topo.hosts[0];
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0xf100, 0, 0, 0, 0, 0));
    const FLOOD: u32 = 1_000_000;
    const CHUNK: u32 = 100_000;
    let before = f.redis.commands_processed();
    let t0 = Instant::now();
    let mut sent = 0usize;
    for c in 0..FLOOD / CHUNK {
        let frames: Vec<Vec<u8>> = (0..CHUNK)
            .map(|i| {
                let src = Ipv6Addr::from(base + u128::from(c * CHUNK + i) + 1);
                Frame::ipv6(src, SERVICE_V6)
                    .udp(40000, PORT)
                    .payload(&[0; 16])
                    .macs(host.host_mac, host.node_mac)
                    .build()
            })
            .collect();
        let (n, _) = send_frames(
            &host.ns,
            &host.host_if,
            frames,
            0.0,
            Duration::from_secs(30),
        )
        .expect("flood");
        sent += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    let ops = f.redis.commands_processed() - before;
    let per_node = ops as f64 / secs / 3.0;
    let views: Vec<_> = f.nodes.iter().map(|n| n.fleet()).collect();
    let shared: u64 = views.iter().map(|v| v.budget_shared).sum();
    let st = f.nodes[0].status();
    eprintln!(
        "redis under a flood of {sent} spoofed sources in {secs:.1} s: {ops} commands, \
         {per_node:.1}/s per node; sources shared {shared}; node 1 status {:?}",
        st.fleet
    );
    assert_eq!(sent, FLOOD as usize, "the whole flood was sent");
    assert_eq!(shared, 0, "no spoofed source is busy enough to share");
    // heartbeat 500 ms: 4 commands (+ SREM); sync 2 s: 1; budget 200 ms: nodes − 1 reads.
    let bound = 5.0 / 0.5 + 1.0 / 2.0 + 5.0 / INTERVAL;
    assert!(
        per_node <= bound,
        "{per_node:.1} Redis commands/s per node, over the bound {bound:.1}"
    );
}
