use traffic_common::{Bucket, BucketKey, CLASS_ACTIVE, CLASS_BYTES, CLASS_FLEET};

use super::*;
use crate::config::RateLimit;
use crate::policy::limits::{packet_gcra, prefix_mask, rescale_tat};

/// The program's GCRA (`traffic_ebpf::gcra`), for the simulation.
mod gcra {
    use traffic_common::Limit;
    pub fn charged(tat: u64, cost: u64, now: u64) -> u64 {
        tat.max(now) + cost
    }
    pub fn conforms(tat: u64, lim: &Limit, cost: u64, now: u64) -> bool {
        charged(tat, cost, now) - now <= lim.tolerance
    }
}

const SEC: u64 = 1_000_000_000;
const NOW: u64 = 1_000 * SEC;

fn class(rate: f64, burst: u64) -> FleetClass {
    let mut limits = ClassConfig {
        flags: CLASS_ACTIVE | CLASS_FLEET,
        packet_limits: 1,
        mask_v4: prefix_mask(true, 24),
        mask_v6: prefix_mask(false, 64),
        ..ClassConfig::default()
    };
    limits.packets[0] = packet_gcra(&RateLimit {
        rate_per_sec: rate,
        burst,
    });
    FleetClass {
        slot: 3,
        name: "web".into(),
        limits,
        aggregate_v4: 24,
        aggregate_v6: 64,
    }
}

fn key_of(c: &FleetClass, text: &str) -> BucketKey {
    parse_field(
        format!("{} {text}", c.name).as_bytes(),
        std::slice::from_ref(c),
    )
    .unwrap()
}

fn bucket(packets: u64, dropped: u64) -> Bucket {
    Bucket {
        packets,
        dropped,
        bytes: packets * 100,
        ..Bucket::default()
    }
}

#[test]
fn fields_name_the_class_and_the_masked_prefix_and_refuse_what_is_not_one_bucket() {
    let c = class(10.0, 10);
    let classes = std::slice::from_ref(&c);
    let k = key_of(&c, "198.18.1.77/32");
    assert_eq!(k.class, 3);
    assert_eq!(field(&c, &k), "web 198.18.1.0/24");
    assert_eq!(parse_field(field(&c, &k).as_bytes(), classes), Some(k));
    let k6 = key_of(&c, "2001:db8:1:2:3:4:5:6/128");
    assert_eq!(field(&c, &k6), "web 2001:db8:1:2::/64");
    for bad in [
        "web 198.18.1.0/16",     // coarser than this node's /24: many buckets
        "web 198.18.1.0/33",     // no such prefix
        "api 198.18.1.0/24",     // not a fleet class here
        "web198.18.1.0/24",      // no separator
        "web 198.18.1.0",        // no length
        "web not-an-address/24", // garbage
    ] {
        assert_eq!(parse_field(bad.as_bytes(), classes), None, "{bad}");
    }
    assert_eq!(parse_field(&[0xff, b' ', b'1'], classes), None);
    let long = format!("web 198.18.1.0/24{}", " ".repeat(MAX_FIELD));
    assert_eq!(parse_field(long.as_bytes(), classes), None);
}

#[test]
fn heavy_means_a_fraction_of_a_limits_refill() {
    let c = class(100.0, 10); // 10 ms per packet
    let l = &c.limits;
    // 200 ms at 100/s refills 20 packets; a quarter of it is 5.
    assert!(heavy(l, 5, 0, SEC / 5, 0.25));
    assert!(!heavy(l, 4, 0, SEC / 5, 0.25));
    assert!(!heavy(l, 0, 0, SEC / 5, 0.25));
    let mut b = c.limits;
    b.flags |= CLASS_BYTES;
    b.packet_limits = 0;
    b.bytes = crate::policy::limits::byte_gcra(&RateLimit {
        rate_per_sec: 1e6,
        burst: 100_000,
    });
    // 1 MB/s over 200 ms: 200 kB; a quarter is 50 kB.
    assert!(heavy(&b, 1, 50_000, SEC / 5, 0.25));
    assert!(!heavy(&b, 1, 40_000, SEC / 5, 0.25));
}

#[test]
fn a_source_is_shared_once_heavy_counted_from_then_and_dropped_when_idle() {
    let c = class(100.0, 10);
    let classes = std::slice::from_ref(&c);
    let k = key_of(&c, "198.18.1.7/32");
    let light = key_of(&c, "198.18.2.7/32");
    let mut t = Tracker::new(40, 100);
    // First look: baselines only (old buckets, full).
    let u = t.observe(
        &[(k, bucket(500, 0)), (light, bucket(100, 0))],
        classes,
        SEC / 5,
        NOW,
        0.25,
    );
    assert!(u.write.is_empty());
    // 30 passed, 10 dropped in 200 ms: heavy. The light one passed 1.
    let u = t.observe(
        &[(k, bucket(540, 10)), (light, bucket(101, 0))],
        classes,
        SEC / 5,
        NOW,
        0.25,
    );
    assert_eq!(
        u.write,
        vec![("web 198.18.1.0/24".into(), "40 30 3000".into())]
    );
    assert_eq!(t.shared(), 1);
    // It goes on counting from there, light intervals included.
    let u = t.observe(
        &[(k, bucket(542, 10)), (light, bucket(101, 0))],
        classes,
        SEC / 5,
        NOW,
        0.25,
    );
    assert_eq!(u.write[0].1, "40 32 3200");
    // A new session: a new epoch from zero, so nothing is counted twice.
    t.restart();
    let u = t.observe(&[(k, bucket(545, 10))], classes, SEC / 5, NOW, 0.25);
    assert_eq!(u.write[0].1, "41 3 300");
    // Idle (or gone from the marks) long enough: deleted and forgotten.
    let (mut deleted, mut forgotten) = (Vec::new(), Vec::new());
    for i in 0..IDLE_INTERVALS {
        let u = t.observe(&[(k, bucket(545, 10))], classes, SEC / 5, NOW, 0.25);
        if i + 1 < IDLE_INTERVALS {
            assert_eq!(u.write.len(), 1, "still shared while idle");
        }
        deleted.extend(u.delete);
        forgotten.extend(u.forget);
    }
    assert_eq!(deleted, vec!["web 198.18.1.0/24".to_owned()]);
    assert!(forgotten.contains(&k) && forgotten.contains(&light));
    assert_eq!(t.shared(), 0);
}

#[test]
fn a_new_source_shares_the_burst_it_spent_before_the_first_look_and_not_its_history() {
    let c = class(100.0, 10); // 10 ms per packet
    let classes = std::slice::from_ref(&c);
    let k = key_of(&c, "198.18.1.7/32");
    let mut t = Tracker::new(5, 10);
    // 8 of 10 tokens spent: the bucket is full again 80 ms from now.
    let mut b = bucket(1000, 0);
    b.tat[0] = NOW + 80_000_000;
    let u = t.observe(&[(k, b)], classes, SEC / 5, NOW, 0.25);
    assert_eq!(
        u.write,
        vec![("web 198.18.1.0/24".into(), "5 8 800".into())]
    );
    // A young bucket shares all it passed.
    let young = key_of(&c, "198.18.3.7/32");
    let u = t.observe(&[(young, bucket(20, 4))], classes, SEC / 5, NOW, 0.25);
    assert!(
        u.write
            .contains(&("web 198.18.3.0/24".into(), "6 16 1600".into())),
        "{u:?}"
    );
    // A full bucket with a long history shares nothing at first.
    let other = key_of(&c, "198.18.2.7/32");
    let u = t.observe(
        &[(other, bucket(1_000_000, 0))],
        classes,
        SEC / 5,
        NOW,
        0.25,
    );
    assert!(
        u.write.iter().all(|(f, _)| !f.contains("198.18.2.")),
        "{u:?}"
    );
}

#[test]
fn a_recreated_bucket_counts_from_zero_and_the_table_is_bounded() {
    let c = class(100.0, 10);
    let classes = std::slice::from_ref(&c);
    let k = key_of(&c, "198.18.1.7/32");
    let mut t = Tracker::new(0, 1);
    t.observe(&[(k, bucket(1000, 0))], classes, SEC / 5, NOW, 0.25);
    let u = t.observe(&[(k, bucket(20, 0))], classes, SEC / 5, NOW, 0.25);
    assert_eq!(u.write[0].1, "0 20 2000");
    // Full: a second source is not followed.
    let other = key_of(&c, "198.18.9.1/32");
    t.observe(&[(other, bucket(100, 0))], classes, SEC / 5, NOW, 0.25);
    let u = t.observe(&[(other, bucket(200, 0))], classes, SEC / 5, NOW, 0.25);
    assert!(u.write.iter().all(|(f, _)| !f.contains("198.18.9.")));
}

fn entries(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    list.iter()
        .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn a_ledger_debits_growth_only_and_never_counts_twice() {
    let c = class(100.0, 10);
    let classes = std::slice::from_ref(&c);
    let k = key_of(&c, "198.18.1.0/24");
    let mut l = Ledger::default();
    // First read of a node: where it stands, no debit.
    let r = l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "7 100 1000")]),
        classes,
        10,
    );
    assert_eq!(r, Reading::default());
    let r = l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "7 130 1300")]),
        classes,
        10,
    );
    assert_eq!(
        r.debits,
        vec![Debit {
            key: k,
            packets: 30,
            bytes: 300
        }]
    );
    // Read again unchanged: nothing.
    let r = l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "7 130 1300")]),
        classes,
        10,
    );
    assert!(r.debits.is_empty());
    // An empty read (Redis lost it) changes nothing; the same epoch later goes on.
    assert!(l.read("n2", Vec::new(), classes, 10).debits.is_empty());
    let r = l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "7 135 1350")]),
        classes,
        10,
    );
    assert_eq!(r.debits[0].packets, 5);
    // A new epoch (the node began sharing it again): all of it is new.
    let r = l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "8 4 40")]),
        classes,
        10,
    );
    assert_eq!(r.debits[0].packets, 4);
    // A count that went back in the same epoch is a lie: no debit, and the higher mark
    // stays (the lie cannot be replayed upwards for a second debit).
    let r = l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "8 1 10")]),
        classes,
        10,
    );
    assert!(r.debits.is_empty());
    let r = l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "8 4 40")]),
        classes,
        10,
    );
    assert!(r.debits.is_empty());
    // A partial read (the field missing) does not make the next one count it again.
    l.read(
        "n2",
        entries(&[("web 198.18.9.0/24", "9 1 1")]),
        classes,
        10,
    );
    let r = l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "8 6 60")]),
        classes,
        10,
    );
    assert_eq!(r.debits[0].packets, 2);
    // Forgotten nodes start over with a baseline.
    l.retain(&[]);
    let r = l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "8 50 500")]),
        classes,
        10,
    );
    assert!(r.debits.is_empty());
}

#[test]
fn hostile_entries_are_refused_and_bounded() {
    let c = class(100.0, 10);
    let classes = std::slice::from_ref(&c);
    let mut l = Ledger::default();
    l.read(
        "n2",
        entries(&[("web 198.18.1.0/24", "1 1 1")]),
        classes,
        10,
    );
    let r = l.read(
        "n2",
        entries(&[
            ("web 198.18.1.0/24", "1 -5 1"),
            ("web 198.18.1.0/24", "1 5"),
            ("web 198.18.1.0/24", "x 5 5"),
            ("web 198.18.1.0/24", "1 99999999999999999999999 1"),
            ("api 198.18.1.0/24", "1 5 5"),
            ("web 0.0.0.0/0", "1 5 5"),
            ("web 198.18.3.0/24", "2 5 5"),
            ("web 198.18.4.0/24", "2 5 5"),
        ]),
        classes,
        7,
    );
    // Six malformed, one past the bound of 7; one good entry.
    assert_eq!(r.refused, 7);
    assert_eq!(r.debits.len(), 1);
    let long = "1 2 3 ".repeat(20);
    let r = l.read("n2", entries(&[("web 198.18.5.0/24", &long)]), classes, 10);
    assert_eq!((r.refused, r.debits.len()), (1, 0));
}

/// Charge a debit the way the fake dataplane (and, in integers, the program) does.
fn apply(tat: &mut [u64], req: &RescaleRequest, now: u64) {
    for (i, t) in tat.iter_mut().enumerate() {
        let shift = if i == BYTE_LIMIT_SLOT {
            BYTE_INTERVAL_SHIFT
        } else {
            0
        };
        *t = rescale_tat(*t, &req.old[i], &req.new[i], now, shift);
    }
}

#[test]
fn a_debit_moves_the_bucket_by_its_cost_and_no_further_than_the_cap() {
    let c = class(100.0, 10); // 10 ms per packet, tolerance 100 ms
    let cc = &c.limits;
    let key = key_of(&c, "198.18.1.0/24");
    let now = 1_000 * SEC;
    let d = |packets| Debit {
        key,
        packets,
        bytes: 0,
    };
    assert_eq!(debit_request(&d(0), cc), None);
    // A full bucket (tat in the past) is charged from now.
    let mut tat = [0u64; MAX_PACKET_LIMITS + 1];
    apply(&mut tat, &debit_request(&d(4), cc).unwrap(), now);
    assert_eq!(tat[0], now + 40_000_000);
    // In debt: from its tat; beyond the burst too (the source is held off).
    apply(&mut tat, &debit_request(&d(20), cc).unwrap(), now);
    assert_eq!(tat[0], now + 240_000_000);
    assert!(!gcra::conforms(
        tat[0],
        &cc.packets[0],
        cc.packets[0].interval,
        now
    ));
    // Words of unused limits stay as they were.
    assert_eq!(tat[1..], [0; MAX_PACKET_LIMITS]);
    // A lie of 10¹⁸ packets holds the source off for the cap, no longer.
    apply(&mut tat, &debit_request(&d(1 << 60), cc).unwrap(), now);
    assert_eq!(tat[0], now + cc.packets[0].tolerance + MAX_DEBT_NS);
}

/// Three nodes, one source sending 3× its rate spread evenly over them, a sync every
/// interval: the fleet passes no more than the stated bound, and not much less than the
/// limit (no node starves it).
#[test]
fn three_nodes_hold_a_spread_source_to_one_limit_within_the_bound() {
    let c = class(100.0, 20);
    let classes = std::slice::from_ref(&c);
    let key = key_of(&c, "198.18.1.7/32");
    let lim = c.limits.packets[0];
    let interval = SEC / 5;
    let nodes = 3usize;
    let mut tat = vec![0u64; nodes];
    let mut counts = vec![(0u64, 0u64); nodes];
    let mut trackers: Vec<Tracker> = (0..nodes)
        .map(|i| Tracker::new(i as u64 * 1000, 100))
        .collect();
    let mut ledgers: Vec<Ledger> = (0..nodes).map(|_| Ledger::default()).collect();
    let mut hashes: Vec<Vec<(String, String)>> = vec![Vec::new(); nodes];
    let start = 1_000 * SEC;
    let secs = 10u64;
    // 300 packets a second in all, 100 to each node, round robin by the millisecond.
    let step = SEC / 300;
    let mut now = start;
    let mut next_sync = start + interval;
    let mut i = 0usize;
    while now < start + secs * SEC {
        let n = i % nodes;
        counts[n].0 += 1;
        if gcra::conforms(tat[n], &lim, lim.interval, now) {
            tat[n] = gcra::charged(tat[n], lim.interval, now);
        } else {
            counts[n].1 += 1;
        }
        i += 1;
        now += step;
        if now >= next_sync {
            next_sync += interval;
            for n in 0..nodes {
                let b = Bucket {
                    packets: counts[n].0,
                    dropped: counts[n].1,
                    ..Bucket::default()
                };
                hashes[n] = trackers[n]
                    .observe(&[(key, b)], classes, interval, now, 0.25)
                    .write;
            }
            for n in 0..nodes {
                for m in (0..nodes).filter(|&m| m != n) {
                    let e = hashes[m]
                        .iter()
                        .map(|(f, v)| (f.clone().into_bytes(), v.clone().into_bytes()))
                        .collect();
                    for d in ledgers[n].read(&format!("n{m}"), e, classes, 100).debits {
                        let req = debit_request(&d, &c.limits).unwrap();
                        let mut words = [0u64; MAX_PACKET_LIMITS + 1];
                        words[0] = tat[n];
                        apply(&mut words, &req, now);
                        tat[n] = words[0];
                    }
                }
            }
        }
    }
    let passed: u64 = counts.iter().map(|(p, d)| p - d).sum();
    let (rate, burst) = (100.0, 20.0);
    let t = secs as f64;
    let bound = rate * t + burst + (nodes as f64 - 1.0) * (burst + 2.0 * rate * 0.2);
    assert!(
        passed as f64 <= bound,
        "fleet passed {passed}, bound {bound}"
    );
    assert!(
        passed as f64 >= 0.9 * rate * t,
        "fleet passed {passed}: starved below the limit"
    );
    // Without the sync each node would have passed its own limit: about 3 × 1,020.
    assert!(passed < 2 * (rate * t) as u64, "{passed}");
}
