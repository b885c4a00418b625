use std::time::Duration;

use traffic_common::BucketKey;

use super::{
    Baseline, BaselineSettings, Sample,
    suggest::{ClassInfo, SuggestRequest, render_toml, suggest, thresholds_above},
};
use crate::pressure::Resource;

fn key(i: u32, class: u32) -> BucketKey {
    let [a, b, c, d] = i.to_be_bytes();
    BucketKey {
        addr: traffic_common::v4_mapped([198, 18 + (a & 1), c ^ b, d]),
        class,
    }
}

fn settings(window: u64, max: u32) -> BaselineSettings {
    BaselineSettings {
        enabled: true,
        window: Duration::from_secs(window),
        max_sources: max,
    }
}

/// `n` sources of class 1 at `pps` packets of 100 bytes a second, source `i` at
/// `pps·(1 + i mod 3)/2` when `spread`, read every second for `secs` seconds.
fn drive(b: &mut Baseline, n: u32, pps: u64, secs: u64, spread: bool) {
    for t in 0..=secs {
        let samples: Vec<_> = (0..n)
            .map(|i| {
                let r = if spread {
                    pps * u64::from(1 + i % 3) / 2
                } else {
                    pps
                };
                Sample {
                    key: key(i, 1),
                    packets: r * t,
                    bytes: r * t * 100,
                }
            })
            .collect();
        b.observe(Duration::from_secs(100 + t), &samples, false);
    }
}

fn request(q: f64, h: f64) -> SuggestRequest {
    SuggestRequest {
        class: None,
        quantile: q,
        headroom: h,
    }
}

fn classes() -> [ClassInfo<'static>; 2] {
    [
        ClassInfo {
            name: "basic",
            slot: 1,
            has_buckets: true,
        },
        ClassInfo {
            name: "internal",
            slot: 2,
            has_buckets: false,
        },
    ]
}

#[test]
fn steady_sources_give_rate_times_headroom() {
    let mut b = Baseline::new(settings(10, 1000));
    drive(&mut b, 50, 20, 30, false);
    let r = suggest(&b, &classes(), &request(0.999, 2.0));
    let basic = &r.classes[0];
    let p = basic.packets.unwrap();
    assert!((39..=41).contains(&p.rate), "{p:?}");
    assert!((39..=41).contains(&p.burst), "{p:?}");
    let by = basic.bytes.unwrap();
    assert!((3900..=4100).contains(&by.rate), "{by:?}");
    assert_eq!(basic.sources, 50);
    assert_eq!(basic.would_limit, 0);
    assert!(basic.note.is_none(), "{:?}", basic.note);
    assert!(r.classes[1].packets.is_none());
    assert!(
        r.classes[1]
            .note
            .as_deref()
            .unwrap()
            .contains("no per-source limits")
    );
}

#[test]
fn the_quantile_picks_the_fast_sources_and_counts_the_limited_ones() {
    let mut b = Baseline::new(settings(10, 1000));
    // Rates 10, 20 and 30 packets a second, a third each.
    drive(&mut b, 60, 20, 30, true);
    let median = suggest(&b, &classes(), &request(0.5, 1.0)).classes[0]
        .packets
        .unwrap();
    assert!((20..=21).contains(&median.rate), "{median:?}");
    // At the median with no headroom, the 20 sources at 30/s are over the rate.
    let r = suggest(&b, &classes(), &request(0.5, 1.0));
    assert_eq!(r.classes[0].would_limit, 20);
    let top = suggest(&b, &classes(), &request(1.0, 1.0)).classes[0]
        .packets
        .unwrap();
    assert!((30..=31).contains(&top.rate), "{top:?}");
}

#[test]
fn a_burst_shows_in_the_peak_not_the_rate() {
    let mut b = Baseline::new(settings(20, 100));
    let mut packets = 0;
    for t in 0..=40u64 {
        // 10/s, and 100 in one second of each window.
        packets += if t % 20 == 5 { 100 } else { 10 };
        let s = Sample {
            key: key(1, 1),
            packets,
            bytes: packets * 60,
        };
        b.observe(Duration::from_secs(t), &[s], false);
    }
    let p = suggest(&b, &classes(), &request(1.0, 1.0)).classes[0]
        .packets
        .unwrap();
    assert!((14..=15).contains(&p.rate), "{p:?}");
    assert!((100..=102).contains(&p.burst), "{p:?}");
}

#[test]
fn the_live_table_is_bounded_and_quiet_sources_move_to_the_histograms() {
    let mut b = Baseline::new(settings(5, 10));
    drive(&mut b, 25, 5, 12, false);
    assert_eq!(b.live_count(), 10);
    assert!(b.skipped > 0);
    // Nobody reads for a minute: the live sources retire into their class.
    b.observe(Duration::from_secs(200), &[], false);
    assert_eq!(b.live_count(), 0);
    let h = b.class(1);
    assert_eq!(h.sources, 10);
    assert_eq!(h.sustained_packets.count(), 10);
}

#[test]
fn a_recreated_bucket_is_not_a_negative_or_huge_rate() {
    let mut b = Baseline::new(settings(5, 10));
    for (t, p) in [(0, 0), (1, 1000), (2, 5), (3, 10), (4, 15)] {
        let s = Sample {
            key: key(1, 1),
            packets: p,
            bytes: p,
        };
        b.observe(Duration::from_secs(t), &[s], false);
    }
    let h = b.class(1);
    assert!(h.peak_packets.quantile(1.0).unwrap() < 1010.0);
    // The walk that met the key again within half a second adds no peak.
    let mut b = Baseline::new(settings(5, 10));
    for (ms, p) in [(0, 0), (100, 50), (1000, 60)] {
        let s = Sample {
            key: key(1, 1),
            packets: p,
            bytes: p,
        };
        b.observe(Duration::from_millis(ms), &[s], false);
    }
    let peak = b.class(1).peak_packets.quantile(1.0).unwrap();
    assert!((59.0..61.0).contains(&peak), "{peak}");
}

#[test]
fn thresholds_lie_above_the_readings_and_increase() {
    assert_eq!(thresholds_above(0.2), [0.4, 0.6, 0.8, 0.92]);
    let t = thresholds_above(0.999);
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
    assert!(t[3] <= 1.0);
    let mut b = Baseline::new(settings(5, 10));
    for i in 0..100 {
        b.observe_pressure(&[(Resource::Cpu, f64::from(i) / 200.0)]);
    }
    let r = suggest(&b, &classes(), &request(1.0, 2.0));
    assert_eq!(r.thresholds.len(), 1);
    assert_eq!(r.thresholds[0].resource, "cpu");
    assert!((r.thresholds[0].reading - 0.495).abs() < 0.002);
}

#[test]
fn few_sources_are_flagged_and_the_snippet_parses_as_toml() {
    let mut b = Baseline::new(settings(5, 10));
    drive(&mut b, 3, 7, 12, false);
    b.observe_pressure(&[(Resource::Memory, 0.4)]);
    let r = suggest(&b, &classes(), &request(0.99, 2.0));
    assert!(
        r.classes[0]
            .note
            .as_deref()
            .unwrap()
            .contains("only 3 sources")
    );
    let text = render_toml(&r);
    let v: toml::Table = toml::from_str(&text).unwrap();
    let rate = v["classes"]["basic"]["packets"]["rate"]
        .as_integer()
        .unwrap();
    assert!((14..=15).contains(&rate), "{text}");
    assert!(
        v["throttle"]["thresholds"]["memory"]["low"]
            .as_float()
            .unwrap()
            > 0.4
    );
}

#[test]
fn absurd_requests_are_refused() {
    assert!(request(0.2, 2.0).validate().is_err());
    assert!(request(0.99, 0.5).validate().is_err());
    assert!(request(f64::NAN, 2.0).validate().is_err());
    assert!(request(0.999, 2.0).validate().is_ok());
}
