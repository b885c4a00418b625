//! Redis lies: garbage written straight into the real redis-server (as its admin, past the
//! nodes' ACL) — malformed, oversized, too wide and too long bans, a field that is not its
//! prefix, events that are not JSON, a fake node sharing a use hash of 5,000 entries, most
//! of them garbage, and one that claims 10¹² packets of a real client. The nodes stay
//! connected, take none of the bad bans, count what they refused, and the lie holds the
//! client off for at most the cap (10 s beyond its burst), not for good.

use std::time::{Duration, Instant};

use super::{Fleet, Node};
use crate::support::poll;

/// Host index of the client (198.18.1.11, class `web`).
const CLIENT: u32 = 10;

fn classes(_k: usize) -> String {
    "[classes.web]\npackets = { rate = 100, burst = 20 }\nscope = \"fleet\"\n\
     [[rules]]\ncidr = \"198.18.1.11/32\"\nclass = \"web\"\n"
        .into()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn prefixes(n: &Node) -> Vec<String> {
    n.bans().bans.iter().map(|b| b.prefix.to_string()).collect()
}

pub fn garbage_in_redis_is_refused_bounded_and_a_lie_costs_a_source_at_most_the_cap() {
    let mut f = Fleet::new("fl-hostile", classes);
    f.redis.start();
    f.nodes[0].start();
    f.nodes[1].start();
    f.wait_connected(Duration::from_secs(10));
    let ns = "{fleettest}";
    let r = &f.redis;
    let far = (now_ms() + 3_600_000).to_string();
    let ban = |prefix: &str, until: &str, node: &str| {
        format!(
            r#"{{"prefix":"{prefix}","until_unix_ms":{until},"reason":"x","created_unix_ms":1,"node":"{node}"}}"#
        )
    };
    let huge = "x".repeat(10_000);
    for (field, value) in [
        ("10.0.0.0/4", ban("10.0.0.0/4", &far, "evil")), // wider than /8
        (
            "198.18.1.50/32",
            ban("198.18.1.50/32", "99999999999999999", "evil"),
        ), // too long
        ("198.18.1.51/32", ban("198.18.1.52/32", &far, "evil")), // field is not its prefix
        ("198.18.1.53/32", ban("198.18.1.53/32", &far, "bad node")), // bad node name
        ("198.18.1.54/32", "not json".to_owned()),
        ("198.18.1.55/32", huge.clone()), // oversized
    ] {
        r.admin(&["HSET", &format!("{ns}:bans"), field, &value]);
    }
    for payload in [
        "not json".to_owned(),
        huge.clone(),
        format!(r#"{{"op":"ban","ban":{}}}"#, ban("0.0.0.0/0", &far, "evil")),
        format!(r#"{{"op":"unban","prefix":"{}","node":"evil"}}"#, "::/0"),
    ] {
        r.admin(&["PUBLISH", &format!("{ns}:events"), &payload]);
    }
    // Two fake nodes with heartbeats (so the nodes read their use hashes): `evil` shares
    // 5,000 entries of garbage, `liar` one lie about the client.
    for fake in ["evil", "liar"] {
        let hb = format!(
            r#"{{"node":"{fake}","version":"9","seen_unix_ms":{},"level":"NONE","open_breakers":[],"bans":0,"fleet_bans":0,"top_sources":[]}}"#,
            now_ms()
        );
        r.admin(&["SET", &format!("{ns}:node:{fake}"), &hb, "PX", "600000"]);
        r.admin(&["SADD", &format!("{ns}:nodes"), fake]);
    }
    let mut args = vec!["HSET".to_owned(), format!("{ns}:use:evil")];
    for i in 0..5_000 {
        args.push(format!("web 198.18.{}.{}/32", 100 + i / 250, i % 250));
        args.push(if i % 2 == 0 {
            "1 x y".into()
        } else {
            huge[..100].into()
        });
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    r.admin(&refs);
    let liar = format!("{ns}:use:liar");
    r.admin(&["HSET", &liar, "web 198.18.9.9/32", "1 1 1"]);
    poll("the fake nodes are read", Duration::from_secs(5), || {
        f.nodes
            .iter()
            .take(2)
            .all(|n| n.fleet().budget_refused > 0)
            .then_some(())
    });
    assert_eq!(
        f.nodes[0].rig.burst(CLIENT, 10),
        10,
        "the client passes before the lie"
    );
    // The liar's first read was a baseline: now the lie, as growth.
    r.admin(&["HSET", &liar, "web 198.18.1.11/32", "77 1000000000000 0"]);
    let t0 = Instant::now();
    poll("the lie charged", Duration::from_secs(3), || {
        (f.nodes[0].rig.burst(CLIENT, 1) == 0).then_some(())
    });
    // Held off — but only until the cap has passed.
    poll("the client passes again", Duration::from_secs(14), || {
        (f.nodes[0].rig.burst(CLIENT, 1) == 1).then_some(())
    });
    let held = t0.elapsed();
    eprintln!(
        "a lie of 10^12 packets held the client off {held:.1?} (cap: 10 s beyond its 0.2 s burst)"
    );
    assert!(
        held >= Duration::from_secs(9) && held <= Duration::from_secs(12),
        "held {held:?}"
    );

    for n in f.nodes.iter().take(2) {
        let v = n.fleet();
        assert!(v.connected, "{}: {v:?}", n.name);
        assert!(
            v.bans_refused >= 3,
            "{}: refused {}",
            n.name,
            v.bans_refused
        );
        assert!(
            v.budget_refused >= 2_500,
            "{}: {}",
            n.name,
            v.budget_refused
        );
        let p = prefixes(n);
        assert!(
            p.iter().all(|p| !p.starts_with("10.")
                && !p.starts_with("0.")
                && !p.starts_with("198.18.1.5")),
            "{}: took a bad ban: {p:?}",
            n.name
        );
    }
}
