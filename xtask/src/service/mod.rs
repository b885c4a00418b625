//! The service layer of `cargo xtask test` (`--layer service`): the real `.deb` installed
//! and operated under a real, private systemd, exactly as the README's "Install as a
//! service" section tells an operator to.
//!
//! The machine ([`machine::Machine`]) is systemd as PID 1 of new PID and mount namespaces,
//! in a network namespace of its own holding the node's end of a veth; a client namespace
//! holds the other end. Its /usr, /etc and /var are overlays on a tmpfs, so `apt install`
//! changes nothing on the host (no files, no dpkg state, no `traffic` group), and its
//! bpffs is private, so pins vanish with it.
//!
//! Proven, in order: install (unit under /usr/lib/systemd/system, neither enabled nor
//! started, `systemd-analyze verify` clean with the man pages in place); `systemctl enable
//! --now` → active and READY, CapEff exactly CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON, client
//! traffic limited as configured; `trafficctl status` for a member of `traffic` (the config
//! words) and exit 3 for a non-member; reload of a valid file applied, of an invalid one
//! refused with file:line:key in `systemctl status` and `journalctl -p warning`, the running
//! config kept; `kill -9` → restarted, buckets adopted (not refilled); SIGSTOP → restarted
//! by the watchdog; an upgrade to a higher version restarts it and keeps its state; a
//! restart over pins of another ABI (an upgrade across an ABI bump) starts fresh and
//! enforces; `stop` detaches with `on_exit = "detach"` and keeps enforcing with `"keep"`;
//! `apt remove` stops it, keeps the config and the enablement; `apt purge` removes both.

mod daemon;
mod machine;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use daemon::{counts, is_active, json, main_pid, send_counted, show, wait_restarted, write_config};
use machine::{Machine, poll};

use crate::{install, toolchains::Toolchains, util};

/// The class the test config puts the client into: 50 packets, then one a minute, so a
/// refill during the test is at most a few packets and a refilled bucket would show.
const BURST: u64 = 50;
const CONFIG: &str = "/etc/traffic/traffic.toml";
const ENABLE_LINK: &str = "/etc/systemd/system/multi-user.target.wants/trafficd.service";
/// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
const CAPS: u64 = (1 << 12) | (1 << 38) | (1 << 39);

/// One step of the scenario: the machine, and the package to upgrade to.
type Step = fn(&Machine, &Path) -> Result<()>;

/// Build the package (and a copy with a higher version for the upgrade), boot the machine,
/// run the scenario, tear everything down.
pub fn run(tc: &Toolchains) -> Result<()> {
    let t = Instant::now();
    let bin = crate::build(tc, true)?;
    crate::generated::write(&bin)?;
    // The upgrade first: cargo-deb deletes the packages in target/debian/ when it builds
    // elsewhere, so the one `apt install` takes from there is built last.
    let upgrade = build_upgrade(tc)?;
    let debs = util::target_dir().join("debian");
    let deb = install::build_deb(tc, &debs)?;
    remove_stale_debs(&debs, &deb)?;
    println!(
        "service: packages built ({:.1} s): {} and {}",
        t.elapsed().as_secs_f64(),
        deb.display(),
        upgrade.display()
    );
    let m = Machine::boot()?;
    let steps: [(&str, Step); 9] = [
        ("install", |m, up| install_package(m, up)),
        ("enable --now", |m, _| enable_now(m)),
        ("trafficctl and the traffic group", |m, _| group_access(m)),
        ("reload", |m, _| reload(m)),
        ("kill -9 and watchdog", |m, _| restarts(m)),
        ("upgrade", upgrade_package),
        ("restart over pins of another ABI", |m, _| another_abi(m)),
        ("stop: detach and keep", |m, _| stop(m)),
        ("remove and purge", |m, _| remove_purge(m)),
    ];
    for (name, step) in steps {
        let t = Instant::now();
        if let Err(e) = step(&m, &upgrade) {
            diagnose(&m);
            return Err(e).with_context(|| format!("service step `{name}`"));
        }
        println!("service: {name} … ok ({:.1} s)", t.elapsed().as_secs_f64());
    }
    Ok(())
}

/// What the machine says about trafficd, for a failed step.
fn diagnose(m: &Machine) {
    for args in [
        &["systemctl", "status", "--no-pager", "-n", "0", "trafficd"][..],
        &["journalctl", "-u", "trafficd", "--no-pager", "-n", "60"],
    ] {
        if let Ok(out) = m.run(args) {
            eprintln!(
                "--- {} ---\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `apt install ./target/debian/traffic_*.deb` must find one package: the one just built.
fn remove_stale_debs(dir: &Path, keep: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("traffic_") && name.ends_with(".deb") && p != keep {
            std::fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
            println!("service: removed the older package {}", p.display());
        }
    }
    Ok(())
}

/// The same binaries packaged as version `<version>-99`: a higher version for the upgrade.
fn build_upgrade(tc: &Toolchains) -> Result<PathBuf> {
    let dir = util::target_dir().join("service-upgrade");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let version = format!("{}-99", env!("CARGO_PKG_VERSION"));
    util::output(
        util::cargo(tc)
            .args([
                "deb",
                "-p",
                "traffic-daemon",
                "--no-build",
                "--deb-version",
                &version,
            ])
            .arg("--output")
            .arg(&dir),
    )?;
    let deb = dir.join(format!(
        "{}_{version}_{}.deb",
        install::DEB_PACKAGE,
        util::output(Command::new("dpkg").arg("--print-architecture"))?.trim()
    ));
    ensure!(deb.is_file(), "{} was not written", deb.display());
    Ok(deb)
}

fn install_package(m: &Machine, _: &Path) -> Result<()> {
    m.sh(
        &util::root(),
        "apt install -y ./target/debian/traffic_*.deb",
    )?;
    ensure!(
        m.path("/usr/lib/systemd/system/trafficd.service").is_file(),
        "no unit"
    );
    ensure!(
        std::fs::read(m.path(CONFIG))? == std::fs::read(util::root().join("config/traffic.toml"))?,
        "{CONFIG} is not the shipped config/traffic.toml"
    );
    let enabled = m.run(&["systemctl", "is-enabled", "trafficd"])?;
    let enabled = String::from_utf8_lossy(&enabled.stdout).trim().to_owned();
    ensure!(enabled == "disabled", "enabled by the package: {enabled}");
    ensure!(!is_active(m)?, "started by the package");
    m.ok(&["getent", "group", "traffic"])
        .context("no traffic group")?;
    m.ok(&["getent", "group", "traffic-admin"])
        .context("no traffic-admin group (control through trafficctl)")?;
    let verify = m.run(&["systemd-analyze", "verify", "trafficd.service"])?;
    let said = String::from_utf8_lossy(&verify.stdout).into_owned()
        + &String::from_utf8_lossy(&verify.stderr);
    ensure!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
    for page in [
        "/usr/share/man/man8/trafficd.8.gz",
        "/usr/share/man/man8/trafficctl.8.gz",
        "/usr/share/man/man5/traffic.toml.5.gz",
        "/usr/share/bash-completion/completions/trafficctl",
        "/usr/share/zsh/vendor-completions/_trafficctl",
        "/usr/share/fish/vendor_completions.d/trafficctl.fish",
    ] {
        ensure!(m.path(page).is_file(), "{page} not installed");
    }
    // man-db finds them (where it is installed: a minimal system may lack it).
    m.ok(&[
        "sh",
        "-c",
        "! command -v man >/dev/null || man -w trafficd trafficctl traffic.toml",
    ])?;
    for shell in ["bash", "zsh", "fish"] {
        m.ok(&["trafficctl", "completions", shell])?;
    }
    log_formats(m)
}

/// `--log-format json` writes one JSON object a line; text has no ANSI escapes when stderr
/// is not a terminal (here a pipe) and no `<N>` prefix outside the journal.
fn log_formats(m: &Machine) -> Result<()> {
    let missing = "/nonexistent/traffic.toml";
    let json = m.run(&["trafficd", "--log-format", "json", "--config", missing])?;
    ensure!(json.status.code() == Some(2), "exit {:?}", json.status);
    let line = String::from_utf8_lossy(&json.stderr)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    let v: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
    ensure!(v["level"] == "ERROR", "level of {line}");
    ensure!(
        v["fields"]["message"]
            .as_str()
            .is_some_and(|t| t.contains(missing)),
        "message of {line}"
    );
    let text = m.run(&["trafficd", "--config", missing])?;
    let err = String::from_utf8_lossy(&text.stderr);
    ensure!(
        !err.contains('\u{1b}') && !err.starts_with('<') && err.contains("ERROR"),
        "text log on a pipe: {err:?}"
    );
    Ok(())
}

/// With the metrics port taken, trafficd does not start, and says which port and key.
fn metrics_port_taken(m: &Machine) -> Result<()> {
    let port = m.occupy(std::net::SocketAddr::from(([127, 0, 0, 1], 10187)))?;
    let out = m.run(&["systemctl", "start", "trafficd"])?;
    ensure!(!out.status.success(), "started with its metrics port taken");
    let journal = m.ok(&[
        "journalctl",
        "-u",
        "trafficd",
        "-p",
        "err",
        "--no-pager",
        "-o",
        "cat",
    ])?;
    ensure!(
        journal.contains("cannot listen on 127.0.0.1:10187 (port 10187)")
            && journal.contains("`listen` in the [metrics] section of /etc/traffic/traffic.toml"),
        "the error does not name the port and the key:\n{journal}"
    );
    drop(port);
    // Restart=on-failure would try again: stop cancels the pending restart.
    m.ok(&["systemctl", "stop", "trafficd"])?;
    Ok(())
}

fn enable_now(m: &Machine) -> Result<()> {
    write_config(m, "detach", 1)?;
    m.ok(&["trafficctl", "check-config"])?;
    metrics_port_taken(m)?;
    m.ok(&["systemctl", "enable", "--now", "trafficd"])?;
    ensure!(is_active(m)?, "not active after enable --now");
    let status = m.ok(&["systemctl", "status", "--no-pager", "trafficd"])?;
    ensure!(
        status.contains("Active: active (running)") && status.contains("enabled;"),
        "systemctl status:\n{status}"
    );
    // Type=notify: active means READY=1 came; STATUS= came with it.
    ensure!(show(m, "StatusText")? == "enforcing", "no READY status");
    let pid = main_pid(m)?;
    let status = m.ok(&["cat", &format!("/proc/{pid}/status")])?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("no CapEff")?;
    ensure!(
        cap_eff == CAPS,
        "CapEff {cap_eff:#x}, expected {CAPS:#x} (BPF, NET_ADMIN, PERFMON)"
    );
    ensure!(m.xdp_attached()?, "no XDP program on {}", m.node_if);
    let sink = m.sink()?;
    let (passed, dropped) = send_counted(m, 3 * BURST)?;
    ensure!(
        (BURST..=BURST + 2).contains(&passed) && passed + dropped == 3 * BURST,
        "{} packets: {passed} passed, {dropped} dropped; the limit allows a burst of {BURST}",
        3 * BURST
    );
    poll(
        "the receiver to get the passed packets",
        Duration::from_secs(5),
        || Ok((sink.received.load(std::sync::atomic::Ordering::Relaxed) == passed).then_some(())),
    )?;
    Ok(())
}

fn group_access(m: &Machine) -> Result<()> {
    for user in ["trfsvc-member", "trfsvc-other"] {
        m.ok(&[
            "useradd",
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            user,
        ])?;
    }
    // As the README says: add the operator to the group.
    m.ok(&["usermod", "-aG", "traffic", "trfsvc-member"])?;
    let as_user = |u: &str| {
        m.run(&[
            "setpriv",
            &format!("--reuid={u}"),
            &format!("--regid={u}"),
            "--init-groups",
            "trafficctl",
            "status",
        ])
    };
    let ok = as_user("trfsvc-member")?;
    let text = String::from_utf8_lossy(&ok.stdout);
    ensure!(
        ok.status.success(),
        "member: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    ensure!(
        text.contains("mode:       enforce, on exit: detach"),
        "status does not use the config's words:\n{text}"
    );
    let refused = as_user("trfsvc-other")?;
    let err = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        refused.status.code() == Some(3),
        "non-member: {:?} {err}",
        refused.status
    );
    ensure!(
        err.contains("permission denied") && err.contains("traffic"),
        "no reason: {err}"
    );
    Ok(())
}

fn reload(m: &Machine) -> Result<()> {
    let reloads = |m: &Machine| -> Result<(u64, u64)> {
        let v = json(m, &["status"])?;
        Ok((
            v["reload"]["succeeded"].as_u64().unwrap_or(0),
            v["reload"]["failed"].as_u64().unwrap_or(0),
        ))
    };
    let pid = main_pid(m)?;
    let (ok0, failed0) = reloads(m)?;
    write_config(m, "detach", 2)?;
    m.ok(&["systemctl", "reload", "trafficd"])?;
    ensure!(
        reloads(m)? == (ok0 + 1, failed0),
        "valid reload not applied"
    );
    let text = write_config(m, "detach", -5)?;
    let line = text[..text.find("rate = -5").context("no bad rate")?]
        .matches('\n')
        .count()
        + 1;
    let out = m.run(&["systemctl", "reload", "trafficd"])?;
    ensure!(!out.status.success(), "reload of an invalid file succeeded");
    ensure!(
        reloads(m)? == (ok0 + 1, failed0 + 1),
        "the refusal was not counted"
    );
    ensure!(
        main_pid(m)? == pid && is_active(m)?,
        "the daemon did not stay up"
    );
    let at = format!("{CONFIG}:{line}:");
    let status = String::from_utf8_lossy(
        &m.run(&["systemctl", "status", "--no-pager", "-n", "30", "trafficd"])?
            .stdout,
    )
    .into_owned();
    ensure!(
        status.contains(&at) && status.contains("classes.svc.packets"),
        "systemctl status lacks {at} …:\n{status}"
    );
    let journal = m.ok(&[
        "journalctl",
        "-u",
        "trafficd",
        "-p",
        "warning",
        "--no-pager",
        "-o",
        "cat",
    ])?;
    ensure!(
        journal.contains(&at) && journal.contains("reload failed"),
        "journalctl -p warning lacks {at}:\n{journal}"
    );
    ensure!(!journal.contains('\u{1b}'), "ANSI escapes in the journal");
    // The running limits stayed those of the valid file, and it goes back on disk.
    write_config(m, "detach", 1)?;
    m.ok(&["systemctl", "reload", "trafficd"])?;
    Ok(())
}

fn restarts(m: &Machine) -> Result<()> {
    let pid = main_pid(m)?;
    let (p0, d0) = counts(m)?;
    m.ok(&["kill", "-9", &pid.to_string()])?;
    let pid = wait_restarted(m, pid, Duration::from_secs(20))?;
    let status = json(m, &["status"])?;
    ensure!(
        status["adopted_pinned_state"] == true,
        "pinned state not adopted"
    );
    let (p, d) = counts(m)?;
    ensure!(
        p >= p0 && d >= d0,
        "counters went back: {p0}/{d0} → {p}/{d}"
    );
    let (passed, dropped) = send_counted(m, 20)?;
    ensure!(
        passed <= 2,
        "after kill -9 the bucket was refilled: {passed} of 20 passed ({dropped} dropped)"
    );
    println!(
        "service: kill -9 → restarted (pid {pid}), buckets adopted; SIGSTOP, waiting for the watchdog (WatchdogSec=30s)"
    );
    m.ok(&["kill", "-STOP", &pid.to_string()])?;
    let t = Instant::now();
    wait_restarted(m, pid, Duration::from_secs(90))?;
    println!(
        "service: watchdog restart after {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let journal = m.ok(&["journalctl", "-u", "trafficd", "--no-pager", "-o", "cat"])?;
    ensure!(
        journal.contains("Watchdog timeout"),
        "no watchdog timeout in the journal"
    );
    Ok(())
}

fn upgrade_package(m: &Machine, deb: &Path) -> Result<()> {
    let pid = main_pid(m)?;
    let (p0, d0) = counts(m)?;
    let dir = deb.parent().context("upgrade package has no directory")?;
    let name = deb
        .file_name()
        .context("no file name")?
        .to_string_lossy()
        .into_owned();
    m.sh(dir, &format!("apt install -y ./{name}"))?;
    let version = m.ok(&["dpkg-query", "-W", "-f=${Version}", "traffic"])?;
    ensure!(version.ends_with("-99"), "installed version {version}");
    wait_restarted(m, pid, Duration::from_secs(20)).context("not restarted by the upgrade")?;
    ensure!(
        json(m, &["status"])?["adopted_pinned_state"] == true,
        "state not adopted"
    );
    let (p, d) = counts(m)?;
    ensure!(
        p >= p0 && d >= d0,
        "counters went back: {p0}/{d0} → {p}/{d}"
    );
    let (passed, _) = send_counted(m, 10)?;
    ensure!(
        passed <= 2,
        "after the upgrade the bucket was refilled: {passed} of 10 passed"
    );
    Ok(())
}

/// What an upgrade across an ABI bump leaves: pins whose config carries another ABI
/// version (set to 99 with bpftool). The restarted daemon replaces them with fresh maps,
/// says so at warning, and enforces at once (it used to exit, leaving the node unfiltered).
fn another_abi(m: &Machine) -> Result<()> {
    let pin = "/sys/fs/bpf/traffic/TRF_CONFIG";
    let key = ["key", "0", "0", "0", "0"];
    let mut args = vec!["bpftool", "-j", "map", "lookup", "pinned", pin];
    args.extend_from_slice(&key);
    let entry: serde_json::Value = serde_json::from_str(&m.ok(&args)?)?;
    let mut value: Vec<String> = entry["value"]
        .as_array()
        .context("bpftool: no value")?
        .iter()
        .map(|b| {
            b.as_str()
                .unwrap_or("0x00")
                .trim_start_matches("0x")
                .to_owned()
        })
        .collect();
    ensure!(value.len() >= 4, "config value of {} bytes", value.len());
    // `abi_version` is the first u32 (little-endian on this machine).
    value[..4].clone_from_slice(&["63".into(), "00".into(), "00".into(), "00".into()]);
    let mut args = vec!["bpftool", "map", "update", "pinned", pin];
    args.extend_from_slice(&key);
    args.extend(["value", "hex"]);
    args.extend(value.iter().map(String::as_str));
    m.ok(&args)?;
    let pid = main_pid(m)?;
    m.ok(&["systemctl", "restart", "trafficd"])?;
    wait_restarted(m, pid, Duration::from_secs(20)).context("not restarted over the pins")?;
    ensure!(m.xdp_attached()?, "not attached after the restart");
    ensure!(
        json(m, &["status"])?["adopted_pinned_state"] == false,
        "pins of another ABI were adopted"
    );
    let journal = m.ok(&["journalctl", "-u", "trafficd", "--no-pager", "-o", "cat"])?;
    ensure!(
        journal.contains("another ABI"),
        "no warning about the replaced pins"
    );
    let (passed, dropped) = send_counted(m, BURST + 20)?;
    ensure!(
        (BURST..=BURST + 2).contains(&passed),
        "after the fresh start: {passed} passed, {dropped} dropped (burst {BURST})"
    );
    Ok(())
}

fn stop(m: &Machine) -> Result<()> {
    let sink = m.sink()?;
    let received = || sink.received.load(std::sync::atomic::Ordering::Relaxed);
    m.ok(&["systemctl", "stop", "trafficd"])?;
    ensure!(
        !m.xdp_attached()?,
        "on_exit = detach: still attached after stop"
    );
    let before = received();
    m.send(20)?;
    poll(
        "all 20 packets to pass unfiltered",
        Duration::from_secs(5),
        || Ok((received() == before + 20).then_some(())),
    )?;

    write_config(m, "keep", 1)?;
    m.ok(&["systemctl", "start", "trafficd"])?;
    let (p0, d0) = counts(m)?;
    m.ok(&["systemctl", "stop", "trafficd"])?;
    ensure!(m.xdp_attached()?, "on_exit = keep: detached after stop");
    // Still enforcing the last limits with no daemon: the program counts into the pinned
    // maps, which the next start reads.
    let before = received();
    m.send(20)?;
    m.ok(&["systemctl", "start", "trafficd"])?;
    let (p, d) = poll(
        "the counters to see the 20 packets",
        Duration::from_secs(5),
        || {
            let (p, d) = counts(m)?;
            Ok((p + d >= p0 + d0 + 20).then_some((p, d)))
        },
    )?;
    let through = received() - before;
    ensure!(
        p - p0 <= 2 && through <= 2,
        "on_exit = keep: {} of 20 passed ({} dropped, {through} received) with trafficd stopped",
        p - p0,
        d - d0
    );
    Ok(())
}

fn remove_purge(m: &Machine) -> Result<()> {
    m.ok(&["apt", "remove", "-y", "traffic"])?;
    ensure!(!is_active(m)?, "still running after remove");
    ensure!(
        !m.path("/usr/bin/trafficd").exists(),
        "binary left after remove"
    );
    ensure!(m.path(CONFIG).is_file(), "config removed by remove");
    ensure!(
        m.path(ENABLE_LINK).symlink_metadata().is_ok(),
        "enablement dropped by remove"
    );
    // on_exit = keep left the program attached through its pinned link; remove drops pins.
    ensure!(!m.xdp_attached()?, "program still attached after remove");
    m.ok(&["apt", "purge", "-y", "traffic"])?;
    ensure!(!m.path(CONFIG).exists(), "config left after purge");
    ensure!(
        m.path(ENABLE_LINK).symlink_metadata().is_err(),
        "enablement left after purge"
    );
    Ok(())
}
