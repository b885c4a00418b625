//! Issue 13 item 1: `trafficctl watch`, driven through the real daemon. Each case fails on
//! the main of 2026-12-04 (no `watch` command, no `/v1/watch`, no watch flag or ring).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use traffic_common::{BUCKETS_ENTRIES, GLOBAL_WATCH, GLOBAL_WATCH_DROPS};
use traffic_daemon::{api::watch::VerdictLine, dataplane::Dataplane as _};
use traffic_testkit::packet::Frame;

use crate::{
    hostile_host::links::Rig,
    support::{bpf::NODE4, poll, trafficctl},
};

/// A `trafficctl watch` running in the background; its stdout lines on a channel. Killed
/// on drop.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(socket: &str, args: &[&str]) -> Self {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trafficctl"))
            .args(["--socket", socket])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start trafficctl watch");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Lines until `n` have come or `timeout` passed.
    fn take(&self, n: usize, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => break,
            }
        }
        got
    }

    /// Whatever has arrived by now.
    fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The program's watch flags as the daemon wrote them (read through the pins).
fn watch_flags(rig: &Rig) -> u32 {
    let k = crate::support::bpf::load(&rig.pins, BUCKETS_ENTRIES).unwrap();
    k.global().unwrap().flags & (GLOBAL_WATCH | GLOBAL_WATCH_DROPS)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the scrape"))
}

fn start_rig(name: &str, metrics: &'static str) -> (Rig, traffic_testkit::daemon::DaemonProcess) {
    let rig = Rig::new(name, metrics);
    rig.write_config("", "");
    let d = rig.start();
    (rig, d)
}

/// A premium source (burst 20, then 1/min) sends 40 datagrams over the veth: a watcher of
/// the premium prefix's drops sees exactly its 20 drops, named (interface, source, port,
/// class `premium`, reason `packet_rate`, action `drop`), as JSON lines that parse; a
/// watcher filtering another port sees none; the program's flag is off before anyone
/// watches, drops-only while only drop watchers are there, and off again once they leave.
pub fn watch_shows_named_drops_filters_them_and_the_flag_follows_the_watchers() {
    let (rig, _d) = start_rig("watch", "127.0.0.1:19301");
    let socket = rig.socket();
    assert_eq!(watch_flags(&rig), 0, "off while nobody watches");

    let drops = Watcher::start(
        &socket,
        &["--json", "watch", "--source", "198.18.1.0/24", "--drops"],
    );
    let other_port = Watcher::start(&socket, &["watch", "--drops", "--port", "9001"]);
    poll("the drops-only watch flag", Duration::from_secs(5), || {
        (watch_flags(&rig) == GLOBAL_WATCH | GLOBAL_WATCH_DROPS).then_some(())
    });
    let src = rig.topo.hosts[0].v4(5);
    let arrived = rig.burst(5, 40);
    assert_eq!(arrived, 20, "burst 20 passes, the rest drops");

    let lines = drops.take(20, Duration::from_secs(10));
    assert_eq!(lines.len(), 20, "one event per drop: {lines:?}");
    for l in &lines {
        let v: VerdictLine = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(v.source, Some(src.into()), "{l}");
        assert_eq!(
            (
                v.interface.as_str(),
                v.dport,
                v.protocol.as_str(),
                v.class.as_str(),
                v.reason.as_str(),
                v.action.as_str()
            ),
            (
                rig.iface().as_str(),
                9000,
                "udp",
                "premium",
                "packet_rate",
                "drop"
            ),
            "{l}"
        );
        assert!(v.len >= 60, "{l}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(drops.drain().is_empty(), "no passes, no more drops");
    let other: Vec<String> = other_port.drain();
    assert_eq!(
        other.len(),
        1,
        "the port-9001 watcher prints its header only: {other:?}"
    );
    assert!(other[0].starts_with("TIME"), "{other:?}");

    // A watcher of everything: passes too, and the flag loses its drops-only bit.
    let all = Watcher::start(&socket, &["watch", "--source", &src.to_string()]);
    poll("the full watch flag", Duration::from_secs(5), || {
        (watch_flags(&rig) == GLOBAL_WATCH).then_some(())
    });
    rig.burst(5, 1);
    let human = all.take(2, Duration::from_secs(5));
    assert_eq!(human.len(), 2, "{human:?}");
    assert!(
        human[1].contains(&src.to_string()) && human[1].contains("premium"),
        "{human:?}"
    );

    let m = rig.metrics_text();
    assert!(metric(&m, "traffic_watch_events_total") >= 21.0, "{m}");
    assert_eq!(metric(&m, "traffic_watch_subscribers"), 3.0);
    drop((drops, other_port, all));
    poll("the watch flag off again", Duration::from_secs(5), || {
        (watch_flags(&rig) == 0).then_some(())
    });
    assert_eq!(
        metric(&rig.metrics_text(), "traffic_watch_subscribers"),
        0.0
    );
    // A bad filter is a usage error; a watch of a daemon that is not there, exit 3.
    let (code, _, err) = trafficctl(&["--socket", &socket, "watch", "--reason", "slow"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = trafficctl(&["--socket", &socket, "watch", "--class", "nope"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = trafficctl(&["--socket", "/nonexistent/admin.sock", "watch"]);
    assert_eq!(code, 3);
}

/// Under a flood of 200,000 over-limit verdicts (BPF_PROG_TEST_RUN through the daemon's
/// pins, one CPU) the program sends at most its budget (1000 per CPU per second) and counts
/// the rest as suppressed; a watcher that never reads its stream holds no one up:
/// `trafficctl status` answers fast throughout, and the reading watcher gets its events.
pub fn the_budget_bounds_a_flood_and_a_stalled_watcher_stalls_nothing() {
    let (rig, mut d) = start_rig("watchflood", "127.0.0.1:19302");
    let socket = rig.socket();
    // The stalled watcher: asks, then never reads.
    let mut stalled = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stalled
        .write_all(b"GET /v1/watch HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let reader = Watcher::start(&socket, &["--json", "watch", "--drops"]);
    poll("the watch flag", Duration::from_secs(5), || {
        (watch_flags(&rig) & GLOBAL_WATCH != 0).then_some(())
    });

    let k = crate::support::bpf::load(&rig.pins, BUCKETS_ENTRIES).unwrap();
    let frame = Frame::ipv4([198, 18, 1, 9].into(), NODE4)
        .udp(4000, 9000)
        .build();
    const FLOOD: u32 = 200_000;
    let started = Instant::now();
    let flood = std::thread::spawn(move || {
        for _ in 0..4 {
            k.test_run(&frame, FLOOD / 4).unwrap();
        }
    });
    let mut worst = Duration::ZERO;
    while !flood.is_finished() || worst.is_zero() {
        let t = Instant::now();
        let (code, _, err) = trafficctl(&["--socket", &socket, "status"]);
        assert_eq!(code, 0, "{err}");
        worst = worst.max(t.elapsed());
    }
    flood.join().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let got = reader.take(usize::MAX, Duration::from_secs(2)).len() as f64;
    let m = rig.metrics_text();
    let events = metric(&m, "traffic_watch_events_total");
    let suppressed = metric(&m, "traffic_watch_events_suppressed_total");
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    let bound = 1000.0 * cpus * (elapsed.ceil() + 1.0);
    eprintln!(
        "flood of {FLOOD} in {elapsed:.2} s: {events} events, {suppressed} suppressed, reader got {got}, worst status {worst:?}"
    );
    assert!(
        events >= 20.0 && events <= bound,
        "{events} events, bound {bound}"
    );
    assert!(
        suppressed >= f64::from(FLOOD) - bound,
        "{suppressed} suppressed"
    );
    assert!(got >= 20.0 && got <= events, "reader got {got} of {events}");
    assert!(worst < Duration::from_secs(1), "status took {worst:?}");
    drop(stalled);
    drop(reader);
    poll("the watch flag off again", Duration::from_secs(5), || {
        (watch_flags(&rig) == 0).then_some(())
    });
    // The daemon going ends a watch with exit 3.
    let mut last = Watcher::start(&socket, &["watch"]);
    poll("a watcher", Duration::from_secs(5), || {
        (watch_flags(&rig) != 0).then_some(())
    });
    d.terminate(Duration::from_secs(10)).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = last.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "watch did not end with the daemon");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3));
}
