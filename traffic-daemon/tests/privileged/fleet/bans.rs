//! Shared bans across three nodes and one view: propagation time, same expiry, a node
//! that joins later, the receiving node's allow rule, a fleet unban, status, the fleet
//! table and the metrics, and Redis operations per node under a flood.
//!
//! On main before the fleet work none of this existed: `[fleet]` was an unknown key (the
//! daemons would not start) and `trafficctl ban --fleet` an unknown flag.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use traffic_daemon::bans::Origin;
use traffic_testkit::{
    topo::SERVICE_V4,
    udp::{UdpFlow, run_flows},
};

use super::{Fleet, Node, quantile};
use crate::support::poll;

fn has(n: &Node, prefix: &str) -> Option<traffic_daemon::bans::Ban> {
    n.bans()
        .bans
        .into_iter()
        .find(|b| b.prefix.to_string() == prefix)
}

/// The host's address `i` as [`traffic_testkit::topo::Host::v4`] counts it.
fn addr(i: u32) -> String {
    format!("198.18.1.{}", i + 1)
}

/// A ban made with `--fleet` on any node is enforced on the others within a second (p99 over
/// 20 bans made on rotating nodes), with the same end; node 3, started later, loads the
/// bans in force; node 2's allow rule wins over a forced fleet ban; `unban --fleet` on
/// another node than the ban's lifts it everywhere.
pub fn a_fleet_ban_is_enforced_everywhere_within_a_second_with_the_same_end() {
    let mut f = Fleet::new("fl-bans", |k| {
        if k == 2 {
            format!(
                "[[rules]]\ncidr = \"{}/32\"\naction = \"allow\"\n",
                addr(200)
            )
        } else {
            String::new()
        }
    });
    f.redis.start();
    f.nodes[0].start();
    f.nodes[1].start();
    f.wait_connected(Duration::from_secs(10));

    let first = addr(5);
    f.nodes[0].ok(&[
        "ban",
        &first,
        "--for",
        "1h",
        "--reason",
        "ssh brute force",
        "--fleet",
    ]);
    let made = has(&f.nodes[0], &format!("{first}/32")).expect("banned on node 1");
    let got = poll("the ban on node 2", Duration::from_secs(2), || {
        has(&f.nodes[1], &format!("{first}/32"))
    });
    assert_eq!(got.until_unix_ms, made.until_unix_ms, "the same end");
    assert_eq!(got.origin, Origin::Fleet);
    assert_eq!(got.reason, "ssh brute force");

    // A node that joins later gets the bans in force at once.
    f.nodes[2].start();
    f.wait_connected(Duration::from_secs(10));
    let late = poll(
        "the ban on node 3 (joined later)",
        Duration::from_secs(3),
        || has(&f.nodes[2], &format!("{first}/32")),
    );
    assert_eq!(late.until_unix_ms, made.until_unix_ms);
    assert_eq!(f.nodes[2].rig.burst(5, 10), 0, "dropped on node 3");
    assert_eq!(
        f.nodes[2].rig.burst(6, 10),
        10,
        "its neighbour passes on node 3"
    );

    // Propagation: 20 bans from rotating nodes, timed until both others list them.
    let mut lat = Vec::new();
    for i in 0..20u32 {
        let origin = (i % 3) as usize;
        let prefix = format!("{}/32", addr(100 + i));
        let t0 = Instant::now();
        f.nodes[origin].ok(&["ban", &addr(100 + i), "--for", "10m", "--fleet"]);
        for (k, n) in f.nodes.iter().enumerate().filter(|(k, _)| *k != origin) {
            poll(
                &format!("{prefix} on node {}", k + 1),
                Duration::from_secs(3),
                || has(n, &prefix),
            );
        }
        lat.push(t0.elapsed().as_secs_f64());
    }
    let (p50, p99) = (quantile(&mut lat, 0.5), quantile(&mut lat, 0.99));
    eprintln!(
        "fleet ban propagation (to both other nodes, trafficctl round trips included): \
         p50 {:.0} ms, p99 {:.0} ms",
        p50 * 1e3,
        p99 * 1e3
    );
    assert!(p99 <= 1.0, "p99 {p99:.3} s over 1 s");

    // The receiving node's allow rule wins, even over a forced ban; the origin enforces it.
    f.nodes[0].ok(&["ban", &addr(200), "--for", "10m", "--force", "--fleet"]);
    let on2 = poll("the forced ban on node 2", Duration::from_secs(2), || {
        has(&f.nodes[1], &format!("{}/32", addr(200)))
    });
    assert!(!on2.force, "a fleet ban is never forced on the receiver");
    assert_eq!(
        f.nodes[1].rig.burst(200, 10),
        10,
        "node 2's allow rule wins"
    );
    assert_eq!(f.nodes[0].rig.burst(200, 10), 0, "forced on node 1");

    // `unban --fleet` on node 2 lifts node 1's ban everywhere.
    f.nodes[1].ok(&["unban", &first, "--fleet"]);
    for n in &f.nodes {
        poll(
            &format!("{first} lifted on {}", n.name),
            Duration::from_secs(2),
            || has(n, &format!("{first}/32")).is_none().then_some(()),
        );
    }

    // One view: status, the fleet table, the metrics.
    let status = f.nodes[0].ok(&["status"]);
    assert!(
        status.contains("fleet:      connected as node1"),
        "{status}"
    );
    // Every node's heartbeat (≤ 0.5 s old) says 21 bans: the 20 and the forced one.
    poll(
        "3 nodes with 21 bans each in the view",
        Duration::from_secs(3),
        || {
            let v = f.nodes[0].fleet();
            (v.nodes.len() == 3 && v.nodes.iter().all(|n| n.level == "none" && n.bans == 21))
                .then_some(v)
        },
    );
    let table = f.nodes[0].ok(&["fleet"]);
    assert!(
        table.contains("node2") && table.contains("node3"),
        "{table}"
    );
    let m = f.nodes[1].rig.metrics_text();
    for line in ["traffic_fleet_connected 1", "traffic_fleet_nodes 3"] {
        assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
    }
    assert!(
        m.lines()
            .any(|l| l.starts_with("traffic_fleet_bans_received_total ") && !l.ends_with(" 0")),
        "{m}"
    );
    promtool_accepts(&m);
    // Hash entries equal bans in force: no duplicates (one field per prefix).
    let hlen: u64 = f
        .redis
        .admin(&["HLEN", "{fleettest}:bans"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(hlen, 21, "20 + the forced one");

    redis_ops_under_a_flood(&f);

    // The flood's sources show in the fleet view on another node, with node 1's name.
    let view = poll(
        "node 1's top sources seen from node 2",
        Duration::from_secs(8),
        || {
            let v = f.nodes[1].fleet();
            v.nodes
                .iter()
                .any(|n| {
                    n.node == "node1"
                        && n.top_sources
                            .iter()
                            .any(|t| t.class == "premium" && t.dropped > 0)
                })
                .then_some(v)
        },
    );
    let table = f.nodes[1].ok(&["fleet"]);
    assert!(
        table.contains("TOP SOURCE") && table.contains("198.18.1."),
        "{table}\n{view:?}"
    );
}

/// Redis commands per node per second while node 1 takes a flood from 200 sources (every
/// one of them over its limit): only heartbeats and syncs travel, so it stays at a handful.
fn redis_ops_under_a_flood(f: &Fleet) {
    let host = &f.nodes[0].rig.topo.hosts[0];
    let flows: Vec<UdpFlow> = (1..=200u32)
        .map(|i| UdpFlow {
            src: IpAddr::V4(host.v4(i)),
            dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), 9000),
            rate_pps: 500.0,
            duration: Duration::from_secs(4),
            max_packets: 2000,
            payload_len: 32,
            cpu: None,
            progress: None,
        })
        .collect();
    let before = f.redis.commands_processed();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sent: u64 = run_flows(&host.ns, &flows, &stop)
        .expect("flood")
        .iter()
        .map(|s| s.sent)
        .sum();
    let secs = t0.elapsed().as_secs_f64();
    let ops = f.redis.commands_processed() - before;
    let per_node = ops as f64 / secs / 3.0;
    eprintln!(
        "redis ops under a flood of {sent} packets from 200 sources: {ops} in {secs:.1} s, \
         {per_node:.1}/s per node (heartbeat 500 ms, sync 2 s)"
    );
    // Bound: per heartbeat 3 commands + MGET (+ SREM), per sync 1 HSCAN: 2/0.5 s·4 + 0.5.
    assert!(per_node <= 12.0, "{per_node:.1} ops/s per node");
}

/// An automatic ban of a class whose offender rule says `scope = "fleet"`: a source that
/// floods node 1 is banned there by the detector and, within a second, on node 2 (where it
/// sent nothing), with the same end and reason.
pub fn an_automatic_ban_of_a_fleet_scoped_class_reaches_the_other_nodes() {
    let mut f = Fleet::new("fl-auto", |k| {
        if k == 1 {
            "[classes.premium.offender]\ndrop_ratio = 0.9\nwindow = \"10s\"\nmin_packets = 100\n\
             ban_for = \"5m\"\nscope = \"fleet\"\n"
                .into()
        } else {
            String::new()
        }
    });
    f.redis.start();
    f.nodes[0].start();
    f.nodes[1].start();
    f.wait_connected(Duration::from_secs(10));
    let host = &f.nodes[0].rig.topo.hosts[0];
    let flooder = host.v4(1);
    let flow = UdpFlow {
        src: IpAddr::V4(flooder),
        dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), 9000),
        rate_pps: 100.0,
        duration: Duration::from_secs(25),
        max_packets: 2_500,
        payload_len: 32,
        cpu: None,
        progress: None,
    };
    let prefix = format!("{flooder}/32");
    let stop = Arc::new(AtomicBool::new(false));
    let (on1, on2) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| run_flows(&host.ns, std::slice::from_ref(&flow), &stop));
        let on1 = poll(
            "the automatic ban on node 1",
            Duration::from_secs(30),
            || has(&f.nodes[0], &prefix),
        );
        let t0 = Instant::now();
        let on2 = poll(
            "the automatic ban on node 2",
            Duration::from_secs(1),
            || has(&f.nodes[1], &prefix),
        );
        eprintln!(
            "automatic fleet ban on node 2 {} ms after node 1 listed it",
            t0.elapsed().as_millis()
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap().unwrap();
        (on1, on2)
    });
    assert_eq!(on1.origin, Origin::Auto);
    assert_eq!(on2.origin, Origin::Fleet);
    assert_eq!(on2.reason, "offender in class premium");
    assert_eq!(on2.until_unix_ms, on1.until_unix_ms, "the same end");
    assert_eq!(f.nodes[1].rig.burst(1, 10), 0, "banned on node 2 too");
}

/// promtool's linter on an exposition with the fleet families.
fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
