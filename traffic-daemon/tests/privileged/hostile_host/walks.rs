//! Cases: see the table in main.rs.
//!
//! Issue 12 item 2: walks of the bucket map (the metrics scrape, `/v1/sources`) ran on the
//! control loop under the engine's lock, two syscalls per entry of a map of `max_sources`
//! entries; under LRU churn a walk could revisit entries. Now they run off the lock, within
//! a time budget and a bounded number of rows.

use std::{
    os::unix::net::UnixDatagram,
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use traffic_daemon::{
    api::Client,
    dataplane::kernel::{Kernel, LoadOptions},
};
use traffic_testkit::packet::Frame;

use super::links::Rig;
use crate::support::{bpf::NODE6, trafficctl, trafficd};

const MAX_SOURCES: u32 = 1_048_576;
/// The flood's bounds: sources (twice the map, so the LRU churns), frames and time.
const FLOOD_SOURCES: u32 = 2 * MAX_SOURCES;
const FLOOD_FRAMES: u32 = 8 * MAX_SOURCES;
const FLOOD_TIME: Duration = Duration::from_secs(40);
/// How long scrapes, `sources` and the latency probe run together under the flood.
const MEASURE: Duration = Duration::from_secs(8);
/// `WATCHDOG_USEC` given to trafficd: it must ping at least this often.
const WATCHDOG_USEC: u64 = 2_000_000;

/// Kill the daemon we started, whatever happens.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A distinct /64 (the default class's aggregate) for each `i`.
fn spoofed(i: u32) -> Vec<u8> {
    let src = std::net::Ipv6Addr::new(
        0x2001,
        0xdb8,
        (i >> 16) as u16 | 0x4000,
        i as u16,
        0,
        0,
        0,
        1,
    );
    Frame::ipv6(src, NODE6).udp(4000, 9000).build()
}

/// Run the daemon's program (through the pinned maps) on one frame per source, until
/// `stop`, the frame bound or the time bound (cycling through the sources); `filled` is raised after one map's worth.
fn flood(rig: &Rig, filled: &AtomicBool, stop: &AtomicBool, sent: &AtomicU64) {
    let k = Kernel::open_object(
        traffic_daemon::EBPF_OBJECT,
        &LoadOptions {
            pin_dir: rig.pins.0.clone(),
            max_sources: MAX_SOURCES,
        },
    )
    .expect("load the program on the daemon's pins");
    let end = Instant::now() + FLOOD_TIME;
    for n in 0..FLOOD_FRAMES {
        if stop.load(Ordering::Relaxed) || Instant::now() > end {
            break;
        }
        let i = n % FLOOD_SOURCES;
        k.test_run(&spoofed(i), 1).expect("test run");
        sent.fetch_add(1, Ordering::Relaxed);
        if n + 1 == MAX_SOURCES {
            filled.store(true, Ordering::Relaxed);
        }
    }
    filled.store(true, Ordering::Relaxed);
}

/// The gaps between WATCHDOG=1 notifications until `stop`; the largest one.
fn watch(sock: &UnixDatagram, stop: &AtomicBool) -> Duration {
    let mut buf = [0u8; 256];
    let mut last = Instant::now();
    let mut worst = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1")
        {
            worst = worst.max(last.elapsed());
            last = Instant::now();
        }
    }
    worst.max(last.elapsed())
}

/// Scrapes and `trafficctl sources` under a spoofed flood that fills a 1,048,576-entry
/// bucket map and churns it: the control loop keeps answering (`/v1/status` p99 < 200 ms)
/// and never misses a watchdog ping. (A walk of the full map exceeds its 1 s budget on this
/// VM, so the scraped counts are partial: at least an eighth of the map proves the walk.)
pub fn scrapes_and_sources_over_a_full_churning_map_never_stall_the_control_loop() {
    let rig = Rig::new("walks", "127.0.0.1:19198");
    rig.write_config(&format!("max_sources = {MAX_SOURCES}"), "");
    let notify_path = rig.tmp.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = std::fs::File::create(rig.tmp.path("trafficd.log")).unwrap();
    let child = rig
        .topo
        .node
        .command(trafficd())
        .unwrap()
        .args(["--config", rig.config_path().to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _reaper = Reaper(child);
    let socket = rig.socket();
    let client = Client::new(std::path::Path::new(&socket)).with_timeout(Duration::from_secs(10));
    let ready_by = Instant::now() + Duration::from_secs(20);
    while !client
        .request("GET", "/v1/status", None)
        .is_ok_and(|r| r.status == 200)
    {
        assert!(Instant::now() < ready_by, "trafficd not ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (filled, stop, sent) = (
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicU64::new(0),
    );
    let (scrapes, sources) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut latencies = Vec::new();
    let mut worst_watchdog = Duration::ZERO;
    let mut tracked_seen = 0f64;
    std::thread::scope(|s| {
        s.spawn(|| flood(&rig, &filled, &stop, &sent));
        let watchdog = s.spawn(|| watch(&notify, &stop));
        let fill_by = Instant::now() + FLOOD_TIME;
        while !filled.load(Ordering::Relaxed) {
            assert!(Instant::now() < fill_by, "the flood did not fill the map");
            std::thread::sleep(Duration::from_millis(50));
        }
        let until = Instant::now() + MEASURE;
        let (rig, scrapes, sources, socket) = (&rig, &scrapes, &sources, &socket);
        let scraper = s.spawn(move || {
            let mut tracked = 0f64;
            while Instant::now() < until {
                let text = rig.metrics_text();
                tracked = text
                    .lines()
                    .filter(|l| l.starts_with("traffic_tracked_sources{"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
                    .max(tracked);
                scrapes.fetch_add(1, Ordering::Relaxed);
            }
            tracked
        });
        s.spawn(move || {
            while Instant::now() < until {
                let (code, out, err) = trafficctl(&["--socket", socket, "sources"]);
                assert_eq!(code, 0, "trafficctl sources: {out}{err}");
                sources.fetch_add(1, Ordering::Relaxed);
            }
        });
        while Instant::now() < until {
            let t = Instant::now();
            let r = client.request("GET", "/v1/status", None).expect("status");
            assert_eq!(r.status, 200);
            latencies.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        tracked_seen = scraper.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        worst_watchdog = watchdog.join().unwrap();
    });

    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let (scrapes, sources, sent) = (
        scrapes.load(Ordering::Relaxed),
        sources.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
    );
    eprintln!(
        "walks: {} status probes, p99 {p99:?}, max {:?}; {scrapes} scrapes, {sources} sources; \
         {sent} spoofed frames; tracked (max scraped) {tracked_seen}; worst watchdog gap {worst_watchdog:?}",
        latencies.len(),
        latencies.last().unwrap()
    );
    assert!(
        tracked_seen >= f64::from(MAX_SOURCES) / 8.0,
        "the scrape saw {tracked_seen} tracked sources: the map was not walked"
    );
    assert!(
        scrapes >= 2 && sources >= 2,
        "{scrapes} scrapes, {sources} sources"
    );
    assert!(
        p99 < Duration::from_millis(200),
        "control-loop latency p99 {p99:?} under walks"
    );
    assert!(
        worst_watchdog < Duration::from_micros(WATCHDOG_USEC),
        "a watchdog ping came {worst_watchdog:?} after the previous one (timeout {WATCHDOG_USEC} µs)"
    );
}
