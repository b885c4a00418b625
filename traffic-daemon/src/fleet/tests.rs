use std::collections::BTreeMap;

use super::*;

const NOW: u64 = 1_800_000_000_000;

fn wire(prefix: &str, until: u64, node: &str) -> WireBan {
    WireBan {
        prefix: prefix.into(),
        until_unix_ms: until,
        reason: "ssh brute force".into(),
        created_unix_ms: NOW,
        node: node.into(),
    }
}

fn ban(prefix: &str, until: u64, origin: Origin) -> Ban {
    Ban {
        prefix: Prefix::parse(prefix).unwrap(),
        until_unix_ms: until,
        reason: "r".into(),
        force: false,
        origin,
        created_unix_ms: NOW,
    }
}

#[test]
fn keys_share_one_hash_tag() {
    let k = Keys::new("home");
    assert_eq!(k.bans(), "{home}:bans");
    assert_eq!(k.events(), "{home}:events");
    assert_eq!(k.node("n1"), "{home}:node:n1");
    assert_eq!(k.nodes(), "{home}:nodes");
}

#[test]
fn fleet_bans_are_validated_like_operator_input_and_never_forced() {
    let b = wire("203.0.113.0/24", NOW + 60_000, "n1")
        .to_ban(NOW)
        .unwrap();
    assert_eq!(b.origin, Origin::Fleet);
    assert!(!b.force);
    for bad in [
        wire("203.0.113.1/24", NOW + 1000, "n1"), // host bits
        wire("10.0.0.0/4", NOW + 1000, "n1"),     // too wide
        wire("::ffff:1.2.3.4", NOW + 1000, "n1"), // mapped
        wire("203.0.113.7", NOW, "n1"),           // ended
        wire("203.0.113.7", NOW + 400 * 86_400_000, "n1"), // too long
        wire("203.0.113.7", NOW + 1000, "bad node"),
        WireBan {
            reason: "\"quoted\"".into(),
            ..wire("203.0.113.7", NOW + 1000, "n1")
        },
    ] {
        assert!(bad.to_ban(NOW).is_err(), "{bad:?}");
    }
}

#[test]
fn events_round_trip_and_oversized_values_are_refused_unparsed() {
    let e = Event::Ban {
        ban: wire("2001:db8::/48", NOW + 1000, "n2"),
    };
    let text = serde_json::to_vec(&e).unwrap();
    assert_eq!(parse_value::<Event>(&text).unwrap(), e);
    let big = vec![b' '; MAX_VALUE + 1];
    assert!(parse_value::<Event>(&big).unwrap_err().contains("at most"));
    assert!(parse_value::<Event>(b"{\"op\":\"nuke\"}").is_err());
}

#[test]
fn heartbeats_are_bounded() {
    let hb = Heartbeat {
        node: "n1".into(),
        version: "0.1.0".into(),
        seen_unix_ms: NOW,
        level: "NONE".into(),
        open_breakers: vec!["web".into()],
        bans: 3,
        fleet_bans: 1,
        top_sources: vec![TopSource {
            prefix: "198.18.0.0/24".into(),
            class: "default".into(),
            packets: 5,
            dropped: 1,
        }],
    };
    assert!(hb.clone().validate(NOW).is_ok());
    let mut long = hb.clone();
    long.open_breakers = vec!["x".into(); MAX_LIST + 1];
    assert!(long.validate(NOW).is_err());
    let mut future = hb.clone();
    future.seen_unix_ms = NOW + 2 * CLOCK_SKEW_MS;
    assert!(future.validate(NOW).is_err());
    let mut bad = hb;
    bad.level = "a\nb".into();
    assert!(bad.validate(NOW).is_err());
}

fn remote(entries: &[(&str, u64, &str)]) -> BTreeMap<Prefix, (Ban, String)> {
    entries
        .iter()
        .map(|(p, u, n)| {
            let b = wire(p, *u, n).to_ban(NOW).unwrap();
            (b.prefix, (b, (*n).to_owned()))
        })
        .collect()
}

#[test]
fn reconcile_applies_new_drops_gone_and_is_idempotent() {
    let r = remote(&[
        ("198.51.100.1", NOW + 5000, "n2"),
        ("198.51.100.2", NOW + 5000, "n3"),
    ]);
    let local = vec![
        ban("198.51.100.1", NOW + 5000, Origin::Fleet), // same: nothing
        ban("198.51.100.9", NOW + 5000, Origin::Fleet), // gone from the fleet
        ban("198.51.100.5", NOW + 5000, Origin::Operator), // local, not shared: kept
    ];
    let p = reconcile(&r, &local, &BTreeMap::new(), "n1", 100);
    assert_eq!(p.apply.len(), 1);
    assert_eq!(p.apply[0].prefix.to_string(), "198.51.100.2/32");
    assert_eq!(p.drop, vec![Prefix::parse("198.51.100.9").unwrap()]);
    assert!(p.republish.is_empty());
}

#[test]
fn local_bans_win_and_the_cap_holds() {
    let r = remote(&[
        ("198.51.100.1", NOW + 9000, "n2"),
        ("198.51.100.2", NOW + 9000, "n2"),
        ("198.51.100.3", NOW + 9000, "n2"),
    ]);
    let local = vec![ban("198.51.100.1", NOW + 10, Origin::Operator)];
    let p = reconcile(&r, &local, &BTreeMap::new(), "n1", 1);
    assert_eq!(p.apply.len(), 1);
    assert_eq!(p.over_cap, 1);
}

#[test]
fn own_bans_missing_from_redis_are_republished_not_reapplied() {
    let mut own = BTreeMap::new();
    let b = ban("198.51.100.7", NOW + 5000, Origin::Operator);
    own.insert(b.prefix, b.clone());
    // Redis restarted empty.
    let p = reconcile(&BTreeMap::new(), std::slice::from_ref(&b), &own, "n1", 10);
    assert_eq!(p.republish, vec![b.clone()]);
    assert!(p.apply.is_empty() && p.drop.is_empty());
    // Present with the same end: nothing to do; our own entry is never applied back.
    let r = remote(&[("198.51.100.7", NOW + 5000, "n1")]);
    assert_eq!(reconcile(&r, &[b], &own, "n1", 10), Plan::default());
}

#[test]
fn lag_is_time_since_the_last_exchange() {
    let mut s = FleetSnapshot::default();
    assert_eq!(s.lag_seconds(NOW), None);
    s.last_sync_unix_ms = NOW - 1500;
    assert_eq!(s.lag_seconds(NOW), Some(1.5));
}

#[test]
fn an_own_ban_lifted_elsewhere_after_it_was_made_is_dropped_not_republished() {
    let mut own = BTreeMap::new();
    let old = ban("203.0.113.0/24", NOW + 60_000, Origin::Operator);
    let newer = Ban {
        created_unix_ms: NOW + 5_000,
        ..ban("198.51.100.0/24", NOW + 60_000, Origin::Operator)
    };
    own.insert(old.prefix, old.clone());
    own.insert(newer.prefix, newer.clone());
    let mut lifted = BTreeMap::new();
    lifted.insert(old.prefix, NOW + 1_000);
    lifted.insert(newer.prefix, NOW + 1_000);
    // The first was lifted after it was made; the second was made after its lift.
    assert_eq!(lifted_since(&own, &lifted), vec![old.prefix]);
    assert!(lifted_since(&own, &BTreeMap::new()).is_empty());
    assert_eq!(Keys::new("home").lifted(), "{home}:lifted");
}
