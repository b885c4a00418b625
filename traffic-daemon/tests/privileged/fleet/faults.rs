//! Redis away and back: `kill -9` of redis-server mid-run (nodes keep enforcing, status
//! and metric say disconnected, a `--fleet` ban made meanwhile is kept), a restart empty
//! (the nodes re-publish theirs, once each), and a partition of one node (a ban made and
//! one lifted meanwhile reach it when the link heals, without duplicates), and of a ban's
//! owner while another node lifts it (it stays lifted: a tombstone).

use std::time::Duration;

use super::{Fleet, Node};
use crate::support::poll;

fn prefixes(n: &Node) -> Vec<String> {
    let mut v: Vec<String> = n.bans().bans.iter().map(|b| b.prefix.to_string()).collect();
    v.sort();
    v
}

fn wait_prefixes(n: &Node, want: &[&str], timeout: Duration) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    poll(
        &format!("{} holds exactly {want:?}", n.name),
        timeout,
        || (prefixes(n) == want).then_some(()),
    );
}

fn hash_fields(f: &Fleet) -> Vec<String> {
    let mut v: Vec<String> = f
        .redis
        .admin(&["HKEYS", "{fleettest}:bans"])
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// (The host's address `i` is 198.18.1.(i+1): `burst(19)` sends from a = .20.)
pub fn redis_killed_restarted_empty_and_a_partition_heal_without_losses() {
    let mut f = Fleet::new("fl-fault", |_| String::new());
    f.redis.start();
    for n in &mut f.nodes {
        n.start();
    }
    f.wait_connected(Duration::from_secs(10));
    let (a, b, c) = ("198.18.1.20/32", "198.18.1.21/32", "198.18.1.22/32");
    f.nodes[0].ok(&["ban", "198.18.1.20", "--for", "1h", "--fleet"]);
    for n in &f.nodes {
        wait_prefixes(n, &[a], Duration::from_secs(2));
    }

    // kill -9: every node notices, says so, and keeps enforcing.
    f.redis.kill9();
    for n in &f.nodes {
        poll(
            &format!("{} disconnected", n.name),
            Duration::from_secs(5),
            || (!n.connected()).then_some(()),
        );
    }
    let status = f.nodes[1].ok(&["status"]);
    assert!(status.contains("DISCONNECTED as node2"), "{status}");
    assert!(
        f.nodes[1]
            .rig
            .metrics_text()
            .lines()
            .any(|l| l == "traffic_fleet_connected 0"),
        "metric"
    );
    assert_eq!(
        f.nodes[1].rig.burst(19, 10),
        0,
        "the fleet ban still enforced on node 2"
    );
    // A fleet ban made while Redis is away is enforced here and kept for later.
    f.nodes[1].ok(&["ban", "198.18.1.21", "--for", "1h", "--fleet"]);

    // Restarted empty: the nodes reconnect and re-publish their own bans, once each.
    f.redis.start();
    f.wait_connected(Duration::from_secs(20));
    for n in &f.nodes {
        wait_prefixes(n, &[a, b], Duration::from_secs(5));
    }
    assert_eq!(hash_fields(&f), vec![a.to_owned(), b.to_owned()]);

    // Partition node 3; meanwhile node 1 bans c and node 2 lifts b fleet-wide.
    f.nodes[2].link(false);
    poll("node3 disconnected", Duration::from_secs(5), || {
        (!f.nodes[2].connected()).then_some(())
    });
    f.nodes[0].ok(&["ban", "198.18.1.22", "--for", "1h", "--fleet"]);
    f.nodes[1].ok(&["unban", "198.18.1.21", "--fleet"]);
    for n in &f.nodes[..2] {
        wait_prefixes(n, &[a, c], Duration::from_secs(2));
    }
    assert_eq!(
        prefixes(&f.nodes[2]),
        vec![a.to_owned(), b.to_owned()],
        "cut off"
    );
    // Heal: the reconcile on reconnect brings c and lifts b.
    f.nodes[2].link(true);
    f.wait_connected(Duration::from_secs(20));
    for n in &f.nodes {
        wait_prefixes(n, &[a, c], Duration::from_secs(5));
    }
    assert_eq!(hash_fields(&f), vec![a.to_owned(), c.to_owned()]);
    assert_eq!(f.nodes[2].rig.burst(21, 10), 0, "c enforced on node 3");
    assert_eq!(f.nodes[2].rig.burst(20, 10), 10, "b lifted on node 3");

    // Partition the owner of c, node 1, and lift c on node 2: the tombstone makes node 1
    // drop its own ban when it heals, instead of re-publishing it everywhere.
    f.nodes[0].link(false);
    poll("node1 disconnected", Duration::from_secs(5), || {
        (!f.nodes[0].connected()).then_some(())
    });
    f.nodes[1].ok(&["unban", "198.18.1.22", "--fleet"]);
    for n in &f.nodes[1..] {
        wait_prefixes(n, &[a], Duration::from_secs(2));
    }
    f.nodes[0].link(true);
    f.wait_connected(Duration::from_secs(20));
    for n in &f.nodes {
        wait_prefixes(n, &[a], Duration::from_secs(5));
    }
    // Two sync intervals later it has not come back anywhere.
    std::thread::sleep(Duration::from_secs(4));
    for n in &f.nodes {
        assert_eq!(prefixes(n), vec![a.to_owned()], "{} after the heal", n.name);
    }
    assert_eq!(hash_fields(&f), vec![a.to_owned()]);
}
