//! The shipped load profiles parse and validate, and every validation error names the
//! file, the line (and column) and the key at fault. No root needed.
#![allow(clippy::unwrap_used, reason = "a panic is how a test fails")]

use std::path::{Path, PathBuf};

use traffic_loadgen::profile::{ClientClass, DegradeMode, Profile, list};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/profiles")
}

#[test]
fn every_shipped_profile_parses() {
    let names = list(&dir());
    for want in ["normal", "peak", "burst", "degraded", "smoke"] {
        assert!(
            names.iter().any(|n| n == want),
            "config/profiles/{want}.toml is missing (found {names:?})"
        );
    }
    for name in &names {
        let p =
            Profile::load(&dir().join(format!("{name}.toml"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&p.name, name);
        assert!(!p.description.is_empty(), "{name}: no description");
        let shares: f64 = p.classes.iter().map(|c| c.share).sum();
        assert!(
            (shares - 1.0).abs() < 1e-3,
            "{name}: class shares add up to {shares}"
        );
        assert!(
            p.max_packets > 0 && p.duration.as_secs() <= 60,
            "{name}: bounded and short"
        );
        // The schedule integrates to rate × (duration − half the ramps).
        let d =
            p.duration.as_secs_f64() - (p.ramp_up.as_secs_f64() + p.ramp_down.as_secs_f64()) / 2.0;
        assert!(
            (p.ops_until(p.duration) - p.rate * d).abs() < 1e-6 * p.rate * d,
            "{name}"
        );
    }
    let burst = Profile::load(&dir().join("burst.toml")).unwrap();
    let attacker = burst
        .class(ClientClass::Attacker)
        .expect("burst has an attacker");
    assert!(
        attacker.sources >= 2000,
        "the burst comes from many addresses"
    );
    assert!(
        burst
            .workloads_of(ClientClass::Attacker)
            .iter()
            .all(|(w, _)| w.is_udp())
    );
    let degraded = Profile::load(&dir().join("degraded.toml")).unwrap();
    let d = degraded.degrade.expect("degraded degrades an upstream");
    assert_eq!((d.upstream.as_str(), &d.mode), ("web", &DegradeMode::Down));
}

/// A valid profile, edited by each case below.
const BASE: &str = r#"description = "base"
rate = 1000
duration = "10s"
ramp_up = "1s"

[classes.premium]
share = 0.7
sources = 2

[classes.attacker]
share = 0.3
sources = 100
heavy = { sources = 5, share = 0.5 }

[[workloads]]
kind = "udp"
share = 0.9
sizes = [64, 512]

[[workloads]]
kind = "tcp"
share = 0.1
upstream = "web"
timeout = "1s"

[degrade]
upstream = "web"
mode = "slow"
delay = "2s"
at = "2s"
for = "3s"
"#;

/// The error lines for `BASE` with `from` replaced by `to` (the edit must apply).
fn errors(from: &str, to: &str) -> Vec<String> {
    assert!(BASE.contains(from), "case does not apply: {from:?}");
    let text = BASE.replacen(from, to, 1);
    match Profile::parse(Path::new("config/profiles/bad.toml"), &text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

fn expect(from: &str, to: &str, want: &str) {
    let got = errors(from, to);
    assert!(
        got.iter().any(|l| l.starts_with(want)),
        "{from:?} → {to:?}: want a line starting with\n  {want}\ngot\n  {}",
        got.join("\n  ")
    );
}

#[test]
fn base_is_valid() {
    let p = Profile::parse(Path::new("base.toml"), BASE).unwrap();
    assert_eq!(p.classes.len(), 2);
    assert_eq!(
        p.degrade.unwrap().mode,
        DegradeMode::Slow(std::time::Duration::from_secs(2))
    );
}

#[test]
fn validation_errors_name_file_line_and_key() {
    let f = "config/profiles/bad.toml";
    // Values out of range: the value's position.
    expect(
        "rate = 1000",
        "rate = 0",
        &format!("{f}:2:8: rate: must be more than 0"),
    );
    expect(
        "share = 0.7",
        "share = 1.7",
        &format!("{f}:7:9: classes.premium.share: must be between 0 and 1"),
    );
    expect(
        "share = 0.7",
        "share = 0.6",
        &format!("{f}:6:2: classes: the shares add up to 0.900, not 1"),
    );
    expect(
        "heavy = { sources = 5",
        "heavy = { sources = 500",
        &format!("{f}:13:21: classes.attacker.heavy.sources: must be between 1 and sources − 1"),
    );
    expect(
        "sizes = [64, 512]",
        "sizes = [64, 5120]",
        &format!("{f}:18:14: workloads[0].sizes[1]: must be between 1 and 1452"),
    );
    expect(
        "timeout = \"1s\"",
        "timeout = \"1 fortnight\"",
        &format!("{f}:24:11: workloads[1].timeout: unknown duration unit"),
    );
    expect(
        "duration = \"10s\"",
        "duration = \"10s\"\nramp_down = \"9.5s\"",
        &format!("{f}:4:13: ramp_down: ramp_up + ramp_down (10500ms) is longer than duration"),
    );
    expect(
        "mode = \"slow\"",
        "mode = \"melt\"",
        &format!("{f}:28:8: degrade.mode: unknown mode `melt`"),
    );
    expect(
        "for = \"3s\"",
        "for = \"30s\"",
        &format!("{f}:31:7: degrade.for: must be between 100ms and 10s"),
    );
    expect(
        "kind = \"tcp\"",
        "kind = \"sctp\"",
        &format!("{f}:21:8: workloads[1].kind: unknown kind `sctp`"),
    );
    expect(
        "upstream = \"web\"\ntimeout",
        "upstream = \"\"\ntimeout",
        &format!("{f}:23:12: workloads[1].upstream: must name an upstream"),
    );
    // Unknown names: the key's position.
    expect(
        "[classes.attacker]",
        "[classes.botnet]",
        &format!("{f}:10:10: classes.botnet: unknown client class `botnet`"),
    );
    expect(
        "sources = 2\n",
        "sourcez = 2\n",
        &format!("{f}:8:1: classes.premium.sourcez: unknown field `sourcez`"),
    );
    expect(
        "heavy = { sources = 5, share",
        "heavy = { sources = 5, shares",
        &format!("{f}:13:24: classes.attacker.heavy.shares: unknown field `shares`"),
    );
    expect(
        "delay = \"2s\"",
        "delay = \"2s\"\njitter = \"1s\"",
        &format!("{f}:30:1: degrade.jitter: unknown field `jitter`"),
    );
    // Wrong types: the value's position, the key it belongs to.
    expect(
        "sources = 100",
        "sources = \"many\"",
        &format!("{f}:12:11: classes.attacker.sources: invalid type"),
    );
    // A missing key: the table it is missing from.
    expect(
        "rate = 1000\n",
        "",
        &format!("{f}:1:1: rate: missing field `rate`"),
    );
    // Several problems: all of them, each located.
    let both = errors("share = 0.7\nsources = 2", "share = 0.7\nsources = 0");
    assert!(both.iter().all(|l| l.starts_with(f)), "{both:?}");
}
