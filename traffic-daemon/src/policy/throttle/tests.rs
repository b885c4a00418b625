#![allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
use std::time::Duration;

use super::*;
use crate::pressure::{PerResource, Resource};

const CPU: Resource = Resource::Cpu;
const MEM: Resource = Resource::Memory;
const IO: Resource = Resource::Io;

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn throttle() -> Throttle {
    Throttle::new(ThrottleSettings::default(), Duration::ZERO)
}

/// A throttle already at `level` (raised by cpu at t = 0).
fn at(level: Level) -> Throttle {
    let mut t = throttle();
    if let Some(v) = Thresholds::CPU.get(level) {
        t.update(Duration::ZERO, &[(CPU, v)]);
    }
    assert_eq!(t.level(), level);
    t
}

#[test]
fn levels() {
    assert!(Level::None < Level::Low && Level::High < Level::Critical);
    let names: Vec<&str> = Level::ALL.iter().map(|l| l.as_str()).collect();
    assert_eq!(names, ["none", "low", "medium", "high", "critical"]);
    assert_eq!(Level::Critical.severity(), 4);
    assert_eq!(Level::Low.below(), Some(Level::None));
    assert_eq!(serde_json::to_string(&Level::Medium).unwrap(), "\"medium\"");
    let l: Level = serde_json::from_str("\"critical\"").unwrap();
    assert_eq!(l, Level::Critical);
}

#[test]
fn threshold_crossings_per_resource_and_level() {
    #[rustfmt::skip]
    let cases: &[(Resource, f64, Level)] = &[
        (CPU, 0.0, Level::None), (CPU, 0.599, Level::None), (CPU, 0.6, Level::Low),
        (CPU, 0.699, Level::Low), (CPU, 0.7, Level::Medium), (CPU, 0.799, Level::Medium),
        (CPU, 0.8, Level::High), (CPU, 0.899, Level::High), (CPU, 0.9, Level::Critical),
        (CPU, 1.0, Level::Critical),
        (MEM, 0.699, Level::None), (MEM, 0.7, Level::Low), (MEM, 0.8, Level::Medium),
        (MEM, 0.899, Level::Medium), (MEM, 0.9, Level::High), (MEM, 0.949, Level::High),
        (MEM, 0.95, Level::Critical),
        (IO, 0.599, Level::None), (IO, 0.6, Level::Low), (IO, 0.7, Level::Medium),
        (IO, 0.8, Level::High), (IO, 0.9, Level::Critical),
    ];
    for &(r, v, want) in cases {
        let thresholds = ThrottleSettings::default().thresholds;
        assert_eq!(thresholds.get(r).level_for(v), want, "{r} {v}");
        let mut t = throttle();
        let tr = t.update(s(1.0), &[(r, v)]);
        assert_eq!(t.level(), want, "{r} {v}");
        match tr {
            None => assert_eq!(want, Level::None),
            Some(tr) => assert_eq!(
                tr,
                LevelChange {
                    from: Level::None,
                    to: want,
                    at: s(1.0),
                    cause: r,
                    ratio: v
                }
            ),
        }
    }
}

#[test]
fn level_is_the_highest_any_resource_reaches() {
    #[rustfmt::skip]
    let cases: &[([f64; 3], Level, Resource)] = &[
        // cpu, memory, io → level, cause
        ([0.1, 0.1, 0.1], Level::None, CPU),
        ([0.65, 0.1, 0.1], Level::Low, CPU),
        ([0.65, 0.85, 0.1], Level::Medium, MEM),
        ([0.65, 0.85, 0.95], Level::Critical, IO),
        ([0.91, 0.96, 0.1], Level::Critical, MEM), // tie on level: higher reading
        ([0.7, 0.1, 0.7], Level::Medium, CPU),     // full tie: first resource
        // memory 0.75 is only LOW although higher than cpu's MEDIUM 0.72
        ([0.72, 0.75, 0.0], Level::Medium, CPU),
    ];
    for &([c, m, i], want, cause) in cases {
        let mut t = throttle();
        let tr = t.update(s(1.0), &[(CPU, c), (MEM, m), (IO, i)]);
        assert_eq!(t.level(), want, "{c} {m} {i}");
        if let Some(tr) = tr {
            assert_eq!(tr.cause, cause, "{c} {m} {i}");
        }
        let status = t.status(s(1.0));
        assert_eq!(status.resources[2].ratio, Some(i));
    }
}

#[test]
fn hysteresis_prevents_flapping() {
    // cpu oscillates around MEDIUM's 0.7 but never below 0.65 (= 0.7 − 0.05).
    let mut t = throttle();
    let mut changes = Vec::new();
    for i in 0..120 {
        let v = [0.71, 0.69, 0.66, 0.7, 0.651][i % 5];
        changes.extend(t.update(s(i as f64), &[(CPU, v)]));
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0].from, changes[0].to),
        (Level::None, Level::Medium)
    );
    assert_eq!(t.transitions(), 1);

    // Dipping below the margin lowers (after the dwell); coming back raises again: at
    // most one round trip per dwell.
    let mut t = throttle();
    let mut changes = 0;
    for i in 0..60 {
        let v = if i % 2 == 0 { 0.71 } else { 0.64 };
        changes += t.update(s(i as f64), &[(CPU, v)]).is_some() as u32;
    }
    assert!(changes <= 2 * 60 / 5 + 1, "{changes}");
    assert!(changes >= 2, "{changes}");
}

#[test]
fn release_needs_every_resource_below_threshold_minus_margin() {
    // HIGH: cpu releases below 0.75, memory below 0.85, io below 0.75.
    #[rustfmt::skip]
    let cases: &[([f64; 3], bool)] = &[
        ([0.0, 0.0, 0.0], true),
        ([0.7499, 0.8499, 0.7499], true),
        ([0.75, 0.0, 0.0], false),       // not strictly below
        ([0.79, 0.0, 0.0], false),       // below HIGH but inside the margin
        ([0.0, 0.86, 0.0], false),       // memory holds it
        ([0.0, 0.0, 0.76], false),       // io holds it
    ];
    for &([c, m, i], lowers) in cases {
        let mut t = at(Level::High);
        let tr = t.update(s(10.0), &[(CPU, c), (MEM, m), (IO, i)]);
        assert_eq!(tr.is_some(), lowers, "{c} {m} {i}");
        assert_eq!(t.level(), if lowers { Level::Medium } else { Level::High });
    }
    let t = at(Level::High);
    assert_eq!(
        t.settings()
            .release_below(MEM, Level::High)
            .map(|v| (v * 100.0).round()),
        Some(85.0)
    );
    assert_eq!(t.settings().release_below(MEM, Level::None), None);
}

#[test]
fn dwell_delays_lowering_but_not_raising() {
    let mut t = throttle();
    assert!(t.update(s(0.0), &[(CPU, 0.85)]).is_some());
    assert_eq!(t.level(), Level::High);
    // Quiet at once, but HIGH is held for min_dwell (5 s).
    for i in 1..50 {
        assert_eq!(t.update(s(f64::from(i) * 0.1), &[(CPU, 0.0)]), None, "{i}");
    }
    assert_eq!(t.status(s(4.0)).dwell_remaining_seconds, 1.0);
    let tr = t.update(s(5.0), &[(CPU, 0.0)]).unwrap();
    assert_eq!(
        (tr.from, tr.to, tr.at),
        (Level::High, Level::Medium, s(5.0))
    );
    assert!(!tr.is_raise());
    assert_eq!(t.since(), s(5.0));
    assert_eq!(t.time_in_level(s(6.5)), s(1.5));

    // Within MEDIUM's dwell, pressure returns: raised at once.
    let tr = t.update(s(6.0), &[(CPU, 0.95)]).unwrap();
    assert_eq!((tr.from, tr.to), (Level::Medium, Level::Critical));
    assert!(tr.is_raise());
    // And a further raise right after a raise is not delayed either.
    let mut t = throttle();
    t.update(s(0.0), &[(CPU, 0.6)]);
    t.update(s(0.1), &[(CPU, 0.7)]);
    t.update(s(0.2), &[(CPU, 0.8)]);
    assert_eq!(t.level(), Level::High);
    assert_eq!(t.transitions(), 3);
}

#[test]
fn lowering_goes_one_level_per_dwell() {
    let mut t = at(Level::Critical);
    let mut steps = Vec::new();
    for i in 1..=30 {
        if let Some(tr) = t.update(s(f64::from(i)), &[(CPU, 0.0), (MEM, 0.0), (IO, 0.0)]) {
            steps.push((tr.at, tr.to));
        }
    }
    assert_eq!(
        steps,
        [
            (s(5.0), Level::High),
            (s(10.0), Level::Medium),
            (s(15.0), Level::Low),
            (s(20.0), Level::None)
        ]
    );
    assert_eq!(t.transitions(), 5);

    // A reading that justifies MEDIUM stops the descent there.
    let mut t = at(Level::Critical);
    for i in 1..=30 {
        t.update(s(f64::from(i)), &[(CPU, 0.72)]);
    }
    assert_eq!(t.level(), Level::Medium);

    // Zero dwell: one level per update.
    let mut t = Throttle::new(
        ThrottleSettings {
            min_dwell: Duration::ZERO,
            ..ThrottleSettings::default()
        },
        Duration::ZERO,
    );
    t.update(s(0.0), &[(CPU, 1.0)]);
    t.update(s(0.0), &[(CPU, 0.0)]);
    assert_eq!(t.level(), Level::High);
}

#[test]
fn missing_and_invalid_readings() {
    let mut t = at(Level::Medium);
    // Nothing usable: nothing changes, even after the dwell.
    assert_eq!(t.update(s(60.0), &[]), None);
    assert_eq!(
        t.update(s(60.0), &[(CPU, f64::NAN), (IO, f64::INFINITY)]),
        None
    );
    assert_eq!(t.level(), Level::Medium);
    assert_eq!(t.last_ratio(CPU), Some(0.7));
    // A resource not sampled does not hold the level; the ones sampled decide.
    assert!(t.update(s(61.0), &[(MEM, 0.1)]).is_some());
    assert_eq!(t.level(), Level::Low);
    assert_eq!(t.last_ratio(MEM), Some(0.1));
    // A resource given twice counts with its higher reading; negatives read as 0.
    let mut t = throttle();
    t.update(s(0.0), &[(IO, 0.1), (IO, 0.95), (CPU, -3.0)]);
    assert_eq!(t.level(), Level::Critical);
    assert_eq!(t.last_ratio(CPU), Some(0.0));
    // Time going backwards never satisfies the dwell.
    let mut t = throttle();
    t.update(s(100.0), &[(CPU, 0.9)]);
    assert_eq!(t.update(s(50.0), &[(CPU, 0.0)]), None);
    assert_eq!(t.time_in_level(s(50.0)), Duration::ZERO);
}

#[test]
fn multipliers_and_priorities() {
    let st = ThrottleSettings::default();
    use Priority::*;
    #[rustfmt::skip]
    let cases: &[(Level, Priority, f64)] = &[
        (Level::None, Critical, 1.0), (Level::None, High, 1.0),
        (Level::None, Normal, 1.0), (Level::None, Low, 1.0),
        (Level::Low, Critical, 1.0), (Level::Low, High, 1.0),
        (Level::Low, Normal, 0.8), (Level::Low, Low, 0.4),
        (Level::Medium, Critical, 1.0), (Level::Medium, High, 0.9),
        (Level::Medium, Normal, 0.6), (Level::Medium, Low, 0.3),
        (Level::High, Critical, 0.8), (Level::High, High, 0.6),
        (Level::High, Normal, 0.4), (Level::High, Low, 0.2),
        (Level::Critical, Critical, 0.4), (Level::Critical, High, 0.3),
        (Level::Critical, Normal, 0.2), (Level::Critical, Low, 0.1),
    ];
    for &(level, p, want) in cases {
        let got = class_factor(level, p, &st);
        assert!(close(got, want), "{level} {p:?}: {got} != {want}");
    }
    // A low priority never gets more than its level at NONE either.
    let generous = ThrottleSettings {
        priority: PriorityMultipliers {
            critical: 10.0,
            high: 10.0,
            normal: 10.0,
            low: 10.0,
        },
        ..ThrottleSettings::default()
    };
    assert_eq!(class_factor(Level::Critical, Low, &generous), 1.0);

    let caps: Vec<Option<u32>> = Level::ALL.iter().map(|&l| st.max_connections(l)).collect();
    assert_eq!(caps, [None, Some(512), Some(256), Some(128), Some(64)]);
    let mults: Vec<f64> = Level::ALL.iter().map(|&l| st.multiplier(l)).collect();
    assert_eq!(mults, [1.0, 0.8, 0.6, 0.4, 0.2]);

    let t = at(Level::High);
    assert_eq!(t.multiplier(), 0.4);
    assert_eq!(t.max_connections(), Some(128));
    assert!(close(t.class_factor(High), 0.6));
}

#[test]
fn defaults_are_valid() {
    assert_eq!(ThrottleSettings::default().validate(), Ok(()));
}

#[test]
fn validate_names_the_key() {
    type Edit = fn(&mut ThrottleSettings);
    #[rustfmt::skip]
    let cases: &[(Edit, &[&str])] = &[
        (|s| s.thresholds.cpu.medium = 0.55,
         &["throttle.thresholds.cpu: must increase strictly from low to critical (got 0.6, 0.55, 0.8, 0.9)"]),
        (|s| s.thresholds.io.critical = 0.8,
         &["throttle.thresholds.io: must increase strictly"]),
        (|s| s.thresholds.memory.critical = 1.2,
         &["throttle.thresholds.memory.critical: 1.2 is not a ratio in (0, 1]"]),
        (|s| s.thresholds.cpu.low = f64::NAN,
         &["throttle.thresholds.cpu.low: NaN is not a ratio"]),
        (|s| s.thresholds.io.low = 0.0,
         &["throttle.thresholds.io.low: 0 is not a ratio"]),
        (|s| s.hysteresis = -0.01, &["throttle.hysteresis: -0.01 is not a margin in [0, 0.5)"]),
        (|s| s.hysteresis = 0.5, &["throttle.hysteresis: 0.5 is not a margin"]),
        (|s| s.thresholds.memory.low = 0.04,
         &["throttle.hysteresis: 0.05 is not below the memory low threshold (0.04): LOW could never be left"]),
        (|s| s.hysteresis = 0.0, &[]),
        (|s| s.min_dwell = Duration::from_secs(3601), &["throttle.min_dwell: must be at most 3600s"]),
        (|s| s.min_dwell = Duration::ZERO, &[]),
        (|s| s.multipliers.low = 1.5, &["throttle.multipliers.low: 1.5 is not a multiplier in (0, 1]"]),
        (|s| s.multipliers.critical = 0.0, &["throttle.multipliers.critical: 0 is not a multiplier"]),
        (|s| s.multipliers.high = 0.7, &["throttle.multipliers: must not increase from low to critical"]),
        (|s| s.multipliers.high = 0.6, &[]),
        (|s| s.max_connections.medium = Some(0), &["throttle.max_connections.medium: must be at least 1"]),
        (|s| s.max_connections.high = Some(300), &["throttle.max_connections: must not increase"]),
        (|s| s.max_connections.critical = None, &["throttle.max_connections: must not increase"]),
        (|s| s.max_connections.low = None, &[]),
        (|s| s.priority.low = 0.0, &["throttle.priority.low: 0 is not a positive multiplier"]),
        (|s| s.priority.high = 2.5, &["throttle.priority: must not increase from critical to low"]),
        (|s| { s.thresholds.cpu.low = 2.0; s.multipliers.low = 0.0; s.priority.normal = -1.0; },
         &["throttle.thresholds.cpu.low", "throttle.multipliers.low", "throttle.priority.normal"]),
    ];
    for (i, (edit, want)) in cases.iter().enumerate() {
        let mut st = ThrottleSettings::default();
        edit(&mut st);
        let got: Vec<String> = st
            .validate()
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got.len(), want.len(), "case {i}: {got:?}");
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(
                g.starts_with(w),
                "case {i}: `{g}` does not start with `{w}`"
            );
        }
    }
}

#[test]
fn status_reports_readings_against_thresholds() {
    let mut t = throttle();
    t.update(s(2.0), &[(CPU, 0.81), (MEM, 0.5)]);
    let st = t.status(s(3.5));
    assert_eq!(st.level, Level::High);
    assert_eq!(st.time_in_level_seconds, 1.5);
    assert_eq!(st.dwell_remaining_seconds, 3.5);
    assert_eq!(st.transitions, 1);
    assert_eq!(st.multiplier, 0.4);
    assert_eq!(st.max_connections, Some(128));
    assert_eq!(st.last_transition.map(|tr| tr.to), Some(Level::High));
    let cpu = &st.resources[0];
    assert_eq!(
        (cpu.resource, cpu.ratio, cpu.reaches),
        (CPU, Some(0.81), Level::High)
    );
    assert_eq!(cpu.thresholds, Thresholds::CPU);
    assert!(close(cpu.release_below.unwrap(), 0.75));
    assert_eq!(st.resources[1].reaches, Level::None);
    assert_eq!(
        (st.resources[2].resource, st.resources[2].ratio),
        (IO, None)
    );

    // JSON for the admin API, and back.
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["level"], "high");
    assert_eq!(json["last_transition"]["at_seconds"], 2.0);
    assert_eq!(json["last_transition"]["cause"], "cpu");
    assert_eq!(json["resources"][0]["thresholds"]["medium"], 0.7);
    let back: ThrottleStatus = serde_json::from_value(json).unwrap();
    assert_eq!(back, st);

    let idle = throttle().status(s(9.0));
    assert_eq!(idle.dwell_remaining_seconds, 0.0);
    assert_eq!(idle.max_connections, None);
    assert_eq!(idle.resources[0].release_below, None);
}

#[test]
fn transition_text() {
    let mut t = throttle();
    let up = t.update(s(1.0), &[(MEM, 0.912)]).unwrap();
    assert_eq!(
        up.to_string(),
        "throttle raised none → high (memory at 0.91)"
    );
    let down = t.update(s(7.0), &[(MEM, 0.2)]).unwrap();
    assert_eq!(
        down.to_string(),
        "throttle lowered high → medium (memory at 0.20)"
    );
}

#[test]
fn reload_keeps_the_level() {
    let mut t = at(Level::Medium);
    let looser = ThrottleSettings {
        thresholds: PerResource::from_fn(|_| Thresholds::new(0.9, 0.95, 0.97, 0.99)),
        ..ThrottleSettings::default()
    };
    t.set_settings(looser);
    assert_eq!(t.level(), Level::Medium);
    // Still within the dwell: held even though 0.7 is now below everything.
    assert_eq!(t.update(s(1.0), &[(CPU, 0.7)]), None);
    assert!(t.update(s(5.0), &[(CPU, 0.7)]).is_some());
    assert_eq!(t.level(), Level::Low);
}

#[test]
fn per_level_and_thresholds_from_toml() {
    let th: PerResource<Thresholds> = toml::from_str(
        "cpu = { low = 0.5, medium = 0.6, high = 0.7, critical = 0.8 }\n\
         memory = { low = 0.7, medium = 0.8, high = 0.9, critical = 0.95 }\n\
         io = { low = 0.6, medium = 0.7, high = 0.8, critical = 0.9 }\n",
    )
    .unwrap();
    assert_eq!(th.cpu, Thresholds::new(0.5, 0.6, 0.7, 0.8));
    assert_eq!(*th.get(MEM), Thresholds::MEMORY);
    let m: PerLevel<f64> =
        toml::from_str("low = 0.9\nmedium = 0.7\nhigh = 0.5\ncritical = 0.3\n").unwrap();
    assert_eq!(m.get(Level::High), Some(&0.5));
    assert_eq!(m.get(Level::None), None);
    assert!(
        toml::from_str::<PerLevel<f64>>("low = 1\nmedium = 1\nhigh = 1\nextreme = 1\n").is_err()
    );
}
