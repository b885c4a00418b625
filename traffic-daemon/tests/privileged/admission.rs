//! Program tests of stacked limits and of the admission budget for new sources: the XDP
//! program run with BPF_PROG_TEST_RUN, its counters, class statistics and bucket states
//! read back through the kernel adapter.
//!
//! Privileged and stateful like program.rs: each test loads its own copy of the
//! program with its maps pinned in its own directory under /sys/fs/bpf, removed by a guard
//! even when the test panics. Run one at a time through `cargo xtask test`, or:
//!
//! ```text
//! cargo test -p traffic-daemon --test privileged -- admission::
//! ```
//!
//! Limits refill at most once per second (most far slower), so no token comes back while a
//! test runs: the outcomes do not depend on timing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::support::bpf::{Lab, NODE4, NODE6, Slot, XDP_DROP, XDP_PASS};
use anyhow::{Context as _, Result};
use traffic_common::{
    BYTE_INTERVAL_SHIFT, BYTE_LIMIT_SLOT, Bucket, BucketKey, ClassConfig, ClassStats, Limit,
    Reason, counter_index, v4_mapped,
};
use traffic_daemon::dataplane::Dataplane as _;
use traffic_testkit::packet::Frame;

// ---------------------------------------------------------------------------------------
// Harness (shared: support::bpf)
// ---------------------------------------------------------------------------------------

impl Lab {
    /// The class's limits as the kernel holds them.
    fn class_config(&self, class: u32) -> Result<ClassConfig> {
        Ok(self.kernel.read_state()?.classes[class as usize])
    }

    fn stats(&self, class: u32) -> Result<ClassStats> {
        Ok(self.kernel.class_stats()?[class as usize])
    }

    fn passes(&self, name: &str, frame: &[u8], class: u32) -> Result<()> {
        self.expect(name, frame, XDP_PASS, Slot::new(class, Reason::Pass))
    }

    fn drops(&self, name: &str, frame: &[u8], class: u32, reason: Reason) -> Result<()> {
        self.expect(name, frame, XDP_DROP, Slot::new(class, reason))
    }

    /// The bucket of one key.
    fn bucket(&self, key: &BucketKey) -> Result<Bucket> {
        self.kernel
            .buckets()?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, b)| b)
            .with_context(|| format!("no bucket for {:?} in class {}", key.addr, key.class))
    }

    /// Total packets counted in one (row, reason) slot.
    fn count(&self, row: u32, reason: Reason) -> Result<u64> {
        Ok(self.kernel.counters()?[counter_index(row, reason as u32, false) as usize].packets)
    }
}

/// Whole tokens left in a GCRA limit whose state is `tat`, at `now`.
fn tokens_left(tat: u64, lim: &Limit, now: u64) -> u64 {
    let debt = tat.saturating_sub(now);
    lim.tolerance.saturating_sub(debt) / lim.interval
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or_else(|_| panic!("bad IPv6 literal {s}"))
}

/// A UDP packet from `src` to the node, padded to at least `len` bytes.
fn udp_from(src: IpAddr, len: usize) -> Vec<u8> {
    let dst = match src {
        IpAddr::V4(_) => IpAddr::V4(NODE4),
        IpAddr::V6(_) => IpAddr::V6(NODE6),
    };
    Frame::ip(src, dst).udp(40000, 53).pad_to(len).build()
}

fn key4(class: u32, a: Ipv4Addr) -> BucketKey {
    BucketKey {
        addr: v4_mapped(a.octets()),
        class,
    }
}

// ---------------------------------------------------------------------------------------
// Stacked limits
// ---------------------------------------------------------------------------------------

pub fn stacked_limits_the_short_window_binds_first() -> Result<()> {
    let mut lab = Lab::configured(
        "stacked-short",
        r#"
[daemon]
interfaces = ["lo"]
[classes.stacked]
packets = [{ rate = 1, per = "1s", burst = 5 }, { rate = 8, per = "1h", burst = 8 }]
[classes.default]
[[rules]]
cidr = "198.18.7.0/24"
class = "stacked"
"#,
    )?;
    let stacked = lab.class("stacked");
    let cc = lab.class_config(stacked)?;
    assert_eq!(cc.packet_limits, 2, "two stacked limits written");
    let src = v4(198, 18, 7, 1);
    let key = key4(stacked, src);
    let frame = udp_from(src.into(), 0);
    for i in 1..=5 {
        lab.passes(&format!("#{i} within both"), &frame, stacked)?;
    }
    let after_five = lab.bucket(&key)?;
    for i in 6..=12 {
        lab.drops(
            &format!("#{i} over the 5/s burst"),
            &frame,
            stacked,
            Reason::PacketRate,
        )?;
    }
    let after_drops = lab.bucket(&key)?;
    assert_eq!(
        after_drops.tat, after_five.tat,
        "refused packets charge no limit"
    );
    assert_eq!((after_drops.packets, after_drops.dropped), (12, 7));
    let now = lab.kernel.now_ns();
    assert_eq!(
        tokens_left(after_drops.tat[0], &cc.packets[0], now),
        0,
        "the 5/s burst is spent"
    );
    assert_eq!(
        tokens_left(after_drops.tat[1], &cc.packets[1], now),
        3,
        "the 8/h limit paid for 5 packets only, not for the 7 the first limit refused"
    );

    // Behaviour: refill the short window by hand; exactly the 3 tokens left in the long
    // window pass, then the long window refuses.
    let mut refilled = after_drops;
    refilled.tat[0] = 0;
    lab.kernel.set_bucket(&key, &refilled)?;
    for i in 1..=3 {
        lab.passes(&format!("long window token {i} of 3"), &frame, stacked)?;
    }
    let mut refilled = lab.bucket(&key)?;
    refilled.tat[0] = 0;
    lab.kernel.set_bucket(&key, &refilled)?;
    for i in 1..=3 {
        lab.drops(
            &format!("long window spent #{i}"),
            &frame,
            stacked,
            Reason::PacketRate,
        )?;
    }
    assert_eq!(
        lab.bucket(&key)?.tat[0],
        0,
        "a packet the 8/h limit refuses leaves the (full) 5/s limit untouched"
    );
    Ok(())
}

pub fn stacked_limits_the_long_window_binds_and_is_checked_before_charging() -> Result<()> {
    let lab = Lab::configured(
        "stacked-long",
        r#"
[daemon]
interfaces = ["lo"]
[classes.stacked]
packets = [{ rate = 1000, burst = 100 }, { rate = 3, per = "1h", burst = 3 }]
[classes.default]
[[rules]]
cidr = "2001:db8:7::/48"
class = "stacked"
"#,
    )?;
    let stacked = lab.class("stacked");
    let src = v6("2001:db8:7:1::1");
    let key = BucketKey {
        addr: v6("2001:db8:7:1::").octets(),
        class: stacked,
    };
    let frame = udp_from(src.into(), 0);
    for i in 1..=3 {
        lab.passes(&format!("#{i} within 3/h"), &frame, stacked)?;
    }
    let after_three = lab.bucket(&key)?;
    for i in 4..=40 {
        lab.drops(
            &format!("#{i} over 3/h"),
            &frame,
            stacked,
            Reason::PacketRate,
        )?;
    }
    let after_drops = lab.bucket(&key)?;
    // Charging the 1000/s limit before checking the 3/h one would have moved tat[0] by 1 ms
    // per refused packet.
    assert_eq!(
        after_drops.tat[0], after_three.tat[0],
        "packets refused by the second limit must not consume the first"
    );
    assert_eq!(after_drops.tat[1], after_three.tat[1]);
    assert_eq!((after_drops.packets, after_drops.dropped), (40, 37));
    assert_eq!(lab.count(stacked, Reason::Pass)?, 3, "exactly 3 passed");
    Ok(())
}

pub fn byte_limit_stacked_with_a_packet_limit() -> Result<()> {
    let lab = Lab::configured(
        "stacked-bytes",
        r#"
[daemon]
interfaces = ["lo"]
[classes.both]
packets = { rate = 1, burst = 5 }
bytes = { rate = "1KB", burst = "2KB" }
[classes.default]
[[rules]]
cidr = "198.18.8.0/24"
class = "both"
"#,
    )?;
    let both = lab.class("both");

    // Source A: the packet limit binds. 4 small frames and one of 1000 bytes (1400 bytes)
    // fit both; the 6th packet is refused by the packet limit and costs no bytes.
    let a = v4(198, 18, 8, 1);
    let small = udp_from(a.into(), 100);
    let large = udp_from(a.into(), 1000);
    assert_eq!((small.len(), large.len()), (100, 1000));
    for i in 1..=4 {
        lab.passes(&format!("A small #{i}"), &small, both)?;
    }
    lab.passes("A large (5th packet, 1400 bytes)", &large, both)?;
    let before = lab.bucket(&key4(both, a))?;
    for i in 1..=3 {
        lab.drops(
            &format!("A small over the packet burst #{i}"),
            &small,
            both,
            Reason::PacketRate,
        )?;
    }
    let after = lab.bucket(&key4(both, a))?;
    assert_eq!(
        after.tat[BYTE_LIMIT_SLOT], before.tat[BYTE_LIMIT_SLOT],
        "packets refused by the packet limit cost no bytes"
    );
    let now = lab.kernel.now_ns();
    let cc = lab.class_config(both)?;
    let bytes_left = cc
        .bytes
        .tolerance
        .saturating_sub(after.tat[BYTE_LIMIT_SLOT].saturating_sub(now))
        / (cc.bytes.interval >> BYTE_INTERVAL_SHIFT);
    assert!(
        (600..=700).contains(&bytes_left),
        "about 600 of 2000 bytes left, not {bytes_left}"
    );

    // Source B: the byte limit binds. Two 1000-byte frames fill 2 KB; the third is refused
    // with ByteRate and costs no packet token.
    let b = v4(198, 18, 8, 2);
    let large = udp_from(b.into(), 1000);
    lab.passes("B 1000 bytes #1", &large, both)?;
    lab.passes("B 1000 bytes #2", &large, both)?;
    let before = lab.bucket(&key4(both, b))?;
    for i in 3..=6 {
        lab.drops(
            &format!("B 1000 bytes #{i}"),
            &large,
            both,
            Reason::ByteRate,
        )?;
    }
    let after = lab.bucket(&key4(both, b))?;
    assert_eq!(
        after.tat[0], before.tat[0],
        "packets refused by the byte limit cost no packet token"
    );
    assert_eq!(
        tokens_left(after.tat[0], &cc.packets[0], lab.kernel.now_ns()),
        3,
        "3 of 5 packet tokens left"
    );
    assert_eq!((after.packets, after.dropped), (6, 4));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Admission
// ---------------------------------------------------------------------------------------

const ADMISSION_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]
[classes.guarded]
packets = { rate = 1, burst = 5 }
admission = { rate = 3, per = "1m", burst = 3 }
overflow = { rate = 2, per = "1m", burst = 2 }
[classes.strict]
packets = { rate = 1, burst = 5 }
admission = { rate = 2, per = "1m", burst = 2 }
[classes.default]
[[rules]]
cidr = "198.18.5.0/24"
class = "guarded"
[[rules]]
cidr = "2001:db8:5::/48"
class = "guarded"
[[rules]]
cidr = "198.18.6.0/24"
class = "strict"
"#;

pub fn admission_budget_then_a_shared_overflow_bucket() -> Result<()> {
    let lab = Lab::configured("admission", ADMISSION_CONFIG)?;
    let guarded = lab.class("guarded");
    assert_eq!(lab.stats(guarded)?, ClassStats::default());

    // The first three new sources (both families) are admitted: each gets a bucket.
    let tracked: [IpAddr; 3] = [
        v4(198, 18, 5, 1).into(),
        v6("2001:db8:5:1::1").into(),
        v4(198, 18, 5, 2).into(),
    ];
    for (i, s) in tracked.iter().enumerate() {
        lab.passes(
            &format!("new source {s} (#{} of the budget)", i + 1),
            &udp_from(*s, 0),
            guarded,
        )?;
    }
    assert_eq!(lab.buckets_of(guarded)?.len(), 3, "three sources tracked");
    let s = lab.stats(guarded)?;
    assert_eq!((s.admitted, s.overflowed, s.map_full), (3, 0, 0));

    // Every further new source shares the overflow bucket of 2: two of their packets pass
    // in total, the rest drop with Overflow. None of them gets a bucket.
    let untracked: [IpAddr; 4] = [
        v4(198, 18, 5, 3).into(),
        v6("2001:db8:5:2::1").into(),
        v4(198, 18, 5, 4).into(),
        v4(198, 18, 5, 5).into(),
    ];
    lab.passes(
        "untracked #1, overflow token 1",
        &udp_from(untracked[0], 0),
        guarded,
    )?;
    lab.passes(
        "untracked #2, overflow token 2",
        &udp_from(untracked[1], 0),
        guarded,
    )?;
    for (i, s) in untracked.iter().enumerate() {
        lab.drops(
            &format!("untracked {s}, overflow spent (#{})", i + 1),
            &udp_from(*s, 0),
            guarded,
            Reason::Overflow,
        )?;
    }
    lab.drops(
        "untracked #3 again",
        &udp_from(untracked[2], 0),
        guarded,
        Reason::Overflow,
    )?;
    assert_eq!(
        lab.buckets_of(guarded)?.len(),
        3,
        "unadmitted sources are not tracked"
    );
    let s = lab.stats(guarded)?;
    assert_eq!(
        (s.admitted, s.overflowed, s.map_full),
        (3, 7, 0),
        "every packet of an unadmitted source is charged to the overflow bucket"
    );

    // Tracked sources keep their own buckets: 4 more packets each, then their own limit.
    for s in &tracked {
        let f = udp_from(*s, 0);
        for i in 2..=5 {
            lab.passes(&format!("tracked {s} #{i}"), &f, guarded)?;
        }
        lab.drops(&format!("tracked {s} #6"), &f, guarded, Reason::PacketRate)?;
    }
    assert_eq!(lab.count(guarded, Reason::Pass)?, 3 + 2 + 12);
    assert_eq!(lab.count(guarded, Reason::Overflow)?, 5);
    assert_eq!(lab.count(guarded, Reason::PacketRate)?, 3);
    assert_eq!(lab.count(guarded, Reason::MapFull)?, 0);
    for (k, b) in lab.buckets_of(guarded)? {
        assert_eq!((b.packets, b.dropped), (6, 1), "bucket {:?}", k.addr);
    }
    Ok(())
}

pub fn admission_without_overflow_drops_new_sources() -> Result<()> {
    let lab = Lab::configured("admission-strict", ADMISSION_CONFIG)?;
    let strict = lab.class("strict");
    let cc = lab.class_config(strict)?;
    assert_eq!(cc.overflow.interval, 0, "no overflow bucket configured");
    for d in 1..=2 {
        lab.passes(
            &format!("new source #{d} within the budget"),
            &udp_from(v4(198, 18, 6, d).into(), 0),
            strict,
        )?;
    }
    // A full budget never fails open: every packet of a further new source drops.
    for d in 3..=6 {
        for i in 1..=2 {
            lab.drops(
                &format!("unadmitted 198.18.6.{d} #{i}"),
                &udp_from(v4(198, 18, 6, d).into(), 0),
                strict,
                Reason::Overflow,
            )?;
        }
    }
    lab.passes(
        "admitted source still passes",
        &udp_from(v4(198, 18, 6, 1).into(), 0),
        strict,
    )?;
    let s = lab.stats(strict)?;
    assert_eq!((s.admitted, s.overflowed, s.map_full), (2, 8, 0));
    assert_eq!(lab.buckets_of(strict)?.len(), 2);
    // The other class's budget is its own.
    let guarded = lab.class("guarded");
    assert_eq!(lab.stats(guarded)?, ClassStats::default());
    lab.passes(
        "a new source of another class",
        &udp_from(v4(198, 18, 5, 1).into(), 0),
        guarded,
    )?;
    Ok(())
}

pub fn a_tiny_bucket_map_evicts_instead_of_refusing() -> Result<()> {
    const CAPACITY: u32 = 8;
    // One packet an hour: the 400 test runs below take seconds on a slow VM, and at 1/s
    // the first source would have earned its next packet back by the time it returns.
    let lab = Lab::build(
        "tiny-map",
        CAPACITY,
        r#"
[daemon]
interfaces = ["lo"]
[classes.limited]
packets = { rate = 1, per = "1h", burst = 5 }
[classes.default]
[[rules]]
cidr = "198.18.9.0/24"
class = "limited"
"#,
        |d, _| d,
    )?;
    let limited = lab.class("limited");
    let first = v4(198, 18, 9, 1);
    let f = udp_from(first.into(), 0);
    for i in 1..=5 {
        lab.passes(&format!("first source #{i}"), &f, limited)?;
    }
    lab.drops("first source spent", &f, limited, Reason::PacketRate)?;

    // Eight times the capacity in new sources, each spending its burst after the first
    // did: every insert succeeds by evicting, and a full set gives up the source full again
    // first — the first one, spent earliest. Sources whose debt slot another already uses
    // are skipped, so no new source starts from another's debt.
    let flood = 8 * CAPACITY as u8;
    let slot_of = |a: Ipv4Addr| {
        let k = key4(limited, a);
        let (lo, hi) = traffic_common::addr_words(&k.addr);
        traffic_common::debt_slot(lo, hi, k.class)
    };
    let mut slots = vec![slot_of(first)];
    let mut sent = 0u8;
    for d in 0..=240u8 {
        if sent == flood {
            break;
        }
        let a = v4(198, 18, 9, 10 + d);
        if slots.contains(&slot_of(a)) {
            continue;
        }
        slots.push(slot_of(a));
        sent += 1;
        let f = udp_from(a.into(), 0);
        for i in 1..=5 {
            lab.passes(&format!("new source {a} #{i}"), &f, limited)?;
        }
        lab.drops(
            &format!("new source {a} spent"),
            &f,
            limited,
            Reason::PacketRate,
        )?;
    }
    assert_eq!(
        sent, flood,
        "not enough sources with a debt slot of their own"
    );
    let buckets = lab.buckets_of(limited)?;
    assert!(
        buckets.len() <= CAPACITY as usize,
        "{} buckets in a map of {CAPACITY}",
        buckets.len()
    );
    let s = lab.stats(limited)?;
    assert_eq!(
        (s.admitted, s.overflowed, s.map_full),
        (1 + u64::from(flood), 0, 0),
        "the table never refuses an insert: no map_full"
    );
    assert!(
        !buckets.iter().any(|(k, _)| *k == key4(limited, first)),
        "the spent source was evicted"
    );

    // The evicted source comes back with its debt (remembered when it was refused), not
    // with a full bucket: still refused, in a bucket of its own again.
    lab.drops(
        "evicted source back, still in debt",
        &f,
        limited,
        Reason::PacketRate,
    )?;
    let s = lab.stats(limited)?;
    assert_eq!((s.admitted, s.map_full), (2 + u64::from(flood), 0));
    assert_eq!(s.indebted, 1, "one bucket started from a remembered debt");
    assert_eq!(lab.count(limited, Reason::MapFull)?, 0);
    println!(
        "tiny map: {} of {CAPACITY} entries in use after {} sources; the evicted source came back in debt",
        lab.buckets_of(limited)?.len(),
        1 + flood
    );
    Ok(())
}
