//! The story `cargo xtask demo` tells: one function per chapter, each adding what it
//! showed to the facts printed at the end.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::{
    busy::Busy,
    interrupted,
    live::{Live, run_for, run_until},
    print_report, write_outputs,
};
use crate::{
    load::{Generator, LoadReport},
    profile::{ClientClass, Profile},
    services::Behaviour,
};

/// Throttle levels, lowest first.
const LEVELS: [&str; 5] = ["none", "low", "medium", "high", "critical"];

pub(super) fn story(lab: &mut Generator<'_>, normal: &Profile, burst: &Profile) -> Result<()> {
    let mut live = Live::new(lab);
    let mut facts: Vec<String> = Vec::new();
    // Normal traffic carries on under every chapter; it is stopped at the end.
    let normal = normal.with_duration(Duration::from_secs(600));
    live.chapter(
        lab,
        "normal traffic",
        "premium, basic and guest clients under their limits; HTTP to web, echo to api",
    );
    let base = lab.start(&normal, None)?;
    run_for(lab, &mut live, Duration::from_secs(15));
    if !interrupted() {
        attack(lab, &mut live, burst, &mut facts)?;
    }
    if !interrupted() {
        live.chapter(
            lab,
            "web fails",
            "the web service stops listening: its breaker opens, the XDP gate refuses new connections with a RST",
        );
        lab.set_service("web", Behaviour::Down)?;
        match breaker_reaches(lab, &mut live, "open", Duration::from_secs(20)) {
            Some(s) => facts.push(format!(
                "web: breaker open within {:.0} s of the service stopping",
                s.ceil()
            )),
            None if !interrupted() => {
                facts.push("web: the breaker did not open within 20 s".into());
            }
            None => {}
        }
        run_for(lab, &mut live, Duration::from_secs(8));
    }
    if !interrupted() {
        live.chapter(
            lab,
            "web recovers",
            "web listens again: after the reset timeout the breaker goes half-open, trials succeed, it closes",
        );
        lab.set_service("web", Behaviour::Up)?;
        if let Some(s) = breaker_reaches(lab, &mut live, "closed", Duration::from_secs(45)) {
            facts.push(format!(
                "web: closed again {s:.0} s after the service came back"
            ));
        }
        run_for(lab, &mut live, Duration::from_secs(2));
    }
    if !interrupted() {
        facts.push(cpu_pressure(lab, &mut live));
    }
    if !interrupted() {
        pressure_eases(lab, &mut live, &mut facts);
    }
    lab.stop_run(base);
    let report = lab.finish()?;
    summary(lab, &report, facts)
}

/// Sum of a client class's datagrams over the seconds of a phase: (offered, passed).
fn phase_totals(lab: &Generator<'_>, phase: &str, class: &str) -> (u64, u64) {
    lab.timeline
        .iter()
        .filter(|s| s.phase == phase)
        .filter_map(|s| s.classes.get(class))
        .fold((0, 0), |a, c| (a.0 + c.offered, a.1 + c.passed))
}

/// The attacker of `burst` floods on top of normal traffic; premium and basic keep their
/// rates.
fn attack(
    lab: &mut Generator<'_>,
    live: &mut Live,
    burst: &Profile,
    facts: &mut Vec<String>,
) -> Result<()> {
    let attacker = burst.class(ClientClass::Attacker).map_or(0, |c| c.sources);
    live.chapter(
        lab,
        "attack",
        &format!("{attacker} attacker addresses flood UDP on top of normal traffic"),
    );
    let b = lab.start(burst, Some(&[ClientClass::Attacker]))?;
    run_until(
        lab,
        live,
        burst.duration + Duration::from_secs(10),
        |lab, _| lab.run_finished(b),
    );
    run_for(lab, live, Duration::from_secs(2));
    if interrupted() {
        return Ok(());
    }
    let (ao, ap) = phase_totals(lab, "attack", "attacker");
    let keep: Vec<String> = ["premium", "basic"]
        .iter()
        .map(|c| {
            let (o, p) = phase_totals(lab, "attack", c);
            format!(
                "{c} passed {:.0} % of what it offered",
                (100.0 * p as f64 / o.max(1) as f64).min(100.0)
            )
        })
        .collect();
    facts.push(format!(
        "attack: the attacker offered {ao} datagrams and got {ap} through ({:.0} %); {}",
        100.0 * ap as f64 / ao.max(1) as f64,
        keep.join(", ")
    ));
    Ok(())
}

/// Run until web's breaker is in `state` (at most `max`); the seconds it took.
fn breaker_reaches(
    lab: &mut Generator<'_>,
    live: &mut Live,
    state: &str,
    max: Duration,
) -> Option<f64> {
    let t0 = Instant::now();
    run_until(lab, live, max, |_, s| {
        s.upstreams.get("web").is_some_and(|u| u.state == state)
    })
    .then(|| t0.elapsed().as_secs_f64())
}

/// Busy threads step the node's CPU pressure up; the throttle level rises and the limits
/// tighten by priority. Returns the fact to print.
fn cpu_pressure(lab: &mut Generator<'_>, live: &mut Live) -> String {
    live.chapter(
        lab,
        "CPU pressure",
        "busy threads on every CPU, stepping the CPU pressure up: the throttle level rises, limits tighten by priority",
    );
    let mut busy = Busy::start(Duration::from_secs(24));
    let t0 = Instant::now();
    let mut first_raise: Option<(f64, String)> = None;
    let mut highest = String::from("none");
    let rank = |l: &str| LEVELS.iter().position(|x| *x == l).unwrap_or(0);
    for duty in [620u64, 720, 820, 920] {
        busy.set_duty(duty);
        let step_end = Instant::now() + Duration::from_secs(5);
        run_until(lab, live, Duration::from_secs(6), |_, s| {
            if s.level != "none" && first_raise.is_none() {
                first_raise = Some((t0.elapsed().as_secs_f64(), s.level.clone()));
            }
            if rank(&s.level) > rank(&highest) {
                highest = s.level.clone();
            }
            Instant::now() + Duration::from_millis(500) >= step_end
        });
        if interrupted() {
            break;
        }
    }
    let factors = lab
        .timeline
        .iter()
        .rev()
        .find(|s| s.level == highest)
        .map(|s| {
            s.factors
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    busy.stop();
    let _ = busy.finished();
    match first_raise {
        Some((t, l)) => format!(
            "CPU pressure: level {l} {t:.0} s after the load started, up to {highest} (factors there: {factors})"
        ),
        None => "CPU pressure: the level did not rise (is the machine's CPU reading below the LOW threshold even with the load?)".into(),
    }
}

/// The busy threads have stopped: the level steps down to none.
fn pressure_eases(lab: &mut Generator<'_>, live: &mut Live, facts: &mut Vec<String>) {
    live.chapter(
        lab,
        "pressure eases",
        "the busy threads stop; the level steps down one level per min_dwell, the limits relax",
    );
    let t0 = Instant::now();
    let eased = run_until(lab, live, Duration::from_secs(40), |_, s| s.level == "none");
    if eased {
        facts.push(format!(
            "pressure eased: back to level none {:.0} s after the load stopped",
            t0.elapsed().as_secs_f64()
        ));
    } else if !interrupted() {
        let level = lab.timeline.last().map_or("?".into(), |s| s.level.clone());
        facts.push(format!(
            "pressure eased: still at level {level} 40 s after the load stopped (the node is busy besides the demo)"
        ));
    }
    run_for(lab, live, Duration::from_secs(2));
}

/// The report, the story in numbers, the chart.
fn summary(lab: &Generator<'_>, report: &LoadReport, mut facts: Vec<String>) -> Result<()> {
    if let Some(a) = report
        .classes
        .iter()
        .find(|c| c.client == ClientClass::Attacker)
    {
        facts.insert(
            1.min(facts.len()),
            format!(
                "attack: {} of the {} attacker sources went over their own limit and were held to it; the other {} stayed under theirs (allowed {} of {} offered, passed {})",
                a.limited_buckets,
                a.buckets,
                a.buckets - a.limited_buckets,
                a.allowed,
                a.offered,
                a.passed
            ),
        );
    }
    print_report(report);
    println!("\n==> the story in numbers");
    for f in &facts {
        println!("  - {f}");
    }
    if let Some(web) = report.upstreams.iter().find(|u| u.name == "web")
        && let Some((_, s)) = web.by_phase.iter().find(|(p, _)| p == "web fails")
    {
        let rst = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.2} ms"));
        println!(
            "  - while web was failing: {} connects, {} refused with a RST in p50 {} / p99 {} / max {}, {} timed out",
            s.attempts,
            s.reset,
            rst(s.reset_ms[0]),
            rst(s.reset_ms[1]),
            rst(s.reset_ms[2]),
            s.timeout
        );
    }
    let gate: u64 = lab
        .timeline
        .iter()
        .filter_map(|s| s.upstreams.get("web"))
        .map(|u| u.gate_resets)
        .sum();
    println!("  - RSTs sent by the XDP gate for web: {gate}");
    let (svg, json) = write_outputs(
        "story",
        "trafficd: normal traffic, an attack, a failing upstream, CPU pressure",
        lab,
        report,
    )?;
    println!(
        "\n==> chart {}\n    data  {}",
        svg.display(),
        json.display()
    );
    Ok(())
}
