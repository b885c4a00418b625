//! The shipped unit, checked by systemd's own tools: `systemd-analyze verify` with no output
//! at all, and `systemd-analyze security --offline=yes` at an exposure of at most 2.5.
//! (systemd is not PID 1 on the test machines, so the unit cannot be started here.)
#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::{path::PathBuf, process::Command};

fn unit_with_built_binaries(test: &str) -> (PathBuf, PathBuf) {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/trafficd.service");
    let text = std::fs::read_to_string(shipped).expect("read config/trafficd.service");
    assert!(
        text.contains("ExecStart=/usr/bin/trafficd "),
        "unit no longer starts /usr/bin/trafficd"
    );
    // verify checks that the executables exist: point them at the binaries under test.
    let text = text
        .replace("/usr/bin/trafficd", env!("CARGO_BIN_EXE_trafficd"))
        .replace("/usr/bin/trafficctl", env!("CARGO_BIN_EXE_trafficctl"));
    let dir = std::env::temp_dir().join(format!("trf-unit-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("trafficd.service");
    std::fs::write(&unit, text).unwrap();
    (dir, unit)
}

fn analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze").args(args).output().expect(
        "systemd-analyze is missing: `cargo xtask setup` installs it (Debian package systemd)",
    )
}

#[test]
fn unit_verifies_without_warnings() {
    let (dir, unit) = unit_with_built_binaries("verify");
    // The man pages the unit names are installed by the package; the service layer of
    // `cargo xtask test` runs verify with them in place.
    let out = analyze(&["verify", "--man=no", unit.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stdout}{stderr}"
    );
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "systemd-analyze verify warned:\n{stdout}{stderr}"
    );
}

#[test]
fn unit_exposure_is_at_most_2_5() {
    let (dir, unit) = unit_with_built_binaries("security");
    let out = analyze(&[
        "security",
        "--offline=yes",
        "--no-pager",
        unit.to_str().unwrap(),
    ]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read exposure from {line:?}"));
    assert!(level <= 2.5, "exposure {level} > 2.5:\n{text}");
}

#[test]
fn unit_runs_with_only_bpf_capabilities() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/trafficd.service"
    ))
    .unwrap();
    let caps: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet")
        .split_whitespace()
        .collect();
    assert_eq!(caps, ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]);
    assert!(text.contains("Type=notify"));
    assert!(text.contains("WatchdogSec="));
    assert!(text.contains("ExecReload=/usr/bin/trafficctl reload"));
}
