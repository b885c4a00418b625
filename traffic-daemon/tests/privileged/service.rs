//! Operating trafficd like a service: reload (SIGHUP and trafficctl) applies atomically and
//! refuses bad files; a restart adopts the pinned maps (buckets keep their tokens, counters
//! continue) for both `on_exit` settings, even after kill -9; a pinned layout from another
//! ABI is refused; Prometheus scrapes the metrics.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use crate::support::{PinDir, TempDir, poll, trafficctl, trafficd};
use traffic_daemon::{
    api::StatusReport,
    api::report::{CountersReport, LimitsReport, SourcesReport},
};
use traffic_testkit::{
    daemon::{DaemonProcess, http_get},
    netns::Netns,
    topo::{HostSpec, Topology, unique_tag},
};

const PORT: u16 = 9000;
const METRICS: &str = "127.0.0.1:19187";

struct Rig {
    topo: Topology,
    pins: PinDir,
    tmp: TempDir,
}

impl Rig {
    fn new(name: &str) -> Self {
        let topo = Topology::build(
            &unique_tag(),
            &[HostSpec::new(
                "prem",
                ([198, 18, 1, 0].into(), 24),
                (std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 64),
            )],
        )
        .expect("topology");
        Self {
            topo,
            pins: PinDir::new(name),
            tmp: TempDir::new(name),
        }
    }

    fn socket(&self) -> String {
        self.tmp.path("admin.sock").display().to_string()
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.tmp.path("traffic.toml")
    }

    /// Write the config with the premium class's packet limit and on_exit.
    fn write_config(&self, packets: &str, on_exit: &str) {
        let text = format!(
            r#"
[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"
on_exit = "{on_exit}"
[admin]
socket = "{socket}"
socket_group = ""
[metrics]
listen = "{METRICS}"
# The node's own pressure must not rescale the limits under test.
[pressure.signal]
cpu = "off"
memory = "off"
io = "off"
[classes.default]
packets = {{ rate = 1000 }}
[classes.premium]
packets = {packets}
[[rules]]
cidr = "198.18.1.0/24"
class = "premium"
"#,
            iface = self.topo.hosts[0].node_if,
            pins = self.pins.0.display(),
            socket = self.socket(),
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn start(&self) -> DaemonProcess {
        DaemonProcess::start(
            &self.topo.node,
            trafficd(),
            &self.config_path(),
            Path::new(&self.socket()),
            &self.tmp.path("trafficd.log"),
            Duration::from_secs(20),
        )
        .expect("trafficd starts")
    }

    fn ctl<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        let socket = self.socket();
        let mut full = vec!["--socket", socket.as_str(), "--json"];
        full.extend_from_slice(args);
        let (code, out, err) = trafficctl(&full);
        assert_eq!(code, 0, "trafficctl {args:?}: {err}");
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("trafficctl {args:?} JSON: {e}\n{out}"))
    }

    /// Send `n` datagrams as fast as pacing allows from `host_index` address `i`; returns
    /// how many arrived.
    fn burst(&self, i: u32, n: u64) -> u64 {
        crate::support::udp_burst(&self.topo, PORT, i, n)
    }

    fn iface(&self) -> String {
        self.topo.hosts[0].node_if.clone()
    }
}

fn premium_passed(rig: &Rig) -> u64 {
    let c: CountersReport = rig.ctl(&["counters"]);
    c.class("premium").map_or(0, |p| p.passed.packets)
}

pub fn reload_applies_atomically_keeps_tokens_and_refuses_bad_files() {
    let rig = Rig::new("reload");
    // A slow refill so tokens do not come back during the test.
    rig.write_config("{ rate = 10, per = \"1m\", burst = 20 }", "detach");
    let mut d = rig.start();
    assert_eq!(rig.burst(1, 50), 20, "the burst passes, then the limit");

    // trafficctl reload: only the premium class changes; the exhausted bucket stays empty.
    rig.write_config("{ rate = 20, per = \"1m\", burst = 40 }", "detach");
    let (code, out, err) = trafficctl(&["--socket", &rig.socket(), "reload"]);
    assert_eq!(code, 0, "reload: {err}");
    assert!(out.contains("1 map entries written"), "{out}");
    let limits: LimitsReport = rig.ctl(&["limits"]);
    let p = limits
        .classes
        .iter()
        .find(|c| c.class == "premium")
        .unwrap();
    assert_eq!(p.packets[0].burst, 40);
    let sources: SourcesReport = rig.ctl(&["sources", "--top", "5"]);
    let tokens = sources
        .sources
        .iter()
        .find(|s| s.prefix == "198.18.1.2/32")
        .and_then(|s| s.tokens)
        .unwrap();
    assert!(tokens < 2.0, "reload refilled the bucket: {tokens} tokens");
    assert!(rig.burst(1, 5) <= 1, "exhausted source passes after reload");

    // An invalid file: refused with file, line and key; the running config stays.
    rig.write_config("{ rate = -5 }", "detach");
    let (code, _, err) = trafficctl(&["--socket", &rig.socket(), "reload"]);
    assert_eq!(code, 2, "bad reload exit code; stderr: {err}");
    assert!(
        err.contains("traffic.toml:") && err.contains("classes.premium.packets[0].rate"),
        "{err}"
    );
    let status: StatusReport = rig.ctl(&["status"]);
    assert_eq!(status.reload.failed, 1);
    assert!(
        status
            .reload
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("packets[0].rate")
    );
    let limits: LimitsReport = rig.ctl(&["limits"]);
    assert_eq!(
        limits
            .classes
            .iter()
            .find(|c| c.class == "premium")
            .unwrap()
            .packets[0]
            .burst,
        40
    );
    let (_, metrics) = http_get(&rig.topo.node, METRICS.parse().unwrap(), "/metrics").unwrap();
    assert!(
        metrics.contains("traffic_config_last_reload_successful 0"),
        "metric not set"
    );
    assert!(
        d.log_text().contains("reload failed"),
        "log does not say why"
    );

    // SIGHUP after fixing the file.
    rig.write_config("{ rate = 30, per = \"1m\", burst = 60 }", "detach");
    d.signal(libc::SIGHUP);
    poll("SIGHUP reload", Duration::from_secs(10), || {
        let s: StatusReport = rig.ctl(&["status"]);
        (s.reload.succeeded == 2).then_some(())
    });
    let limits: LimitsReport = rig.ctl(&["limits"]);
    assert_eq!(
        limits
            .classes
            .iter()
            .find(|c| c.class == "premium")
            .unwrap()
            .packets[0]
            .burst,
        60
    );
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
}

pub fn kill9_with_detach_fails_open_and_a_restart_adopts_the_state() {
    let rig = Rig::new("detach");
    rig.write_config("{ rate = 1, per = \"1m\", burst = 20 }", "detach");
    let mut d = rig.start();
    assert_eq!(rig.burst(1, 60), 20);
    let passed_before = premium_passed(&rig);
    assert_eq!(passed_before, 20);

    d.kill9().unwrap();
    assert!(
        !rig.topo.xdp_attached(&rig.iface()).unwrap(),
        "on_exit=detach: a killed daemon must not leave XDP attached"
    );
    assert_eq!(rig.burst(1, 30), 30, "detached: traffic flows unfiltered");

    let mut d = rig.start();
    let status: StatusReport = rig.ctl(&["status"]);
    assert!(
        status.adopted_pinned_state,
        "restart did not adopt the pinned maps"
    );
    assert!(
        premium_passed(&rig) >= passed_before,
        "counters restarted from zero"
    );
    assert_eq!(
        rig.burst(1, 10),
        0,
        "the exhausted bucket was refilled by the restart"
    );
    assert_eq!(rig.burst(2, 25), 20, "a new source gets a fresh bucket");
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
    assert!(!rig.topo.xdp_attached(&rig.iface()).unwrap());
}

pub fn kill9_with_keep_keeps_enforcing_and_a_restart_takes_over() {
    let rig = Rig::new("keep");
    rig.write_config("{ rate = 1, per = \"1m\", burst = 20 }", "keep");
    let mut d = rig.start();
    assert_eq!(rig.burst(1, 40), 20);

    d.kill9().unwrap();
    assert!(
        rig.topo.xdp_attached(&rig.iface()).unwrap(),
        "on_exit=keep: the pinned link must survive kill -9"
    );
    assert_eq!(rig.burst(1, 10), 0, "still enforcing the exhausted bucket");
    assert_eq!(
        rig.burst(3, 30),
        20,
        "still enforcing limits on new sources"
    );

    let mut d = rig.start();
    let status: StatusReport = rig.ctl(&["status"]);
    assert!(status.adopted_pinned_state);
    assert!(rig.topo.xdp_attached(&rig.iface()).unwrap());
    assert_eq!(
        rig.burst(1, 10),
        0,
        "the exhausted bucket was refilled by the restart"
    );
    let counters: CountersReport = rig.ctl(&["counters"]);
    assert!(
        counters.class("premium").unwrap().passed.packets >= 40,
        "counters lost across the restart"
    );

    // A graceful stop with keep leaves the program enforcing too.
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
    assert!(rig.topo.xdp_attached(&rig.iface()).unwrap());
    assert_eq!(rig.burst(1, 5), 0);
    // Removing the pins (the PinDir guard does it) detaches.
    drop(d);
    traffic_daemon::dataplane::kernel::Kernel::remove_pins(&rig.pins.0).unwrap();
    poll("detach after unpinning", Duration::from_secs(5), || {
        (!rig.topo.xdp_attached(&rig.iface()).unwrap()).then_some(())
    });
}

fn start_prometheus(ns: &Netns, dir: &Path) -> std::process::Child {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: trafficd\n    static_configs:\n      - targets: ['{METRICS}']\n"),
    )
    .unwrap();
    ns.command("prometheus")
        .unwrap()
        .args([
            &format!("--config.file={}", cfg.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            "--web.listen-address=127.0.0.1:19090",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus (Debian package `prometheus`, installed by `cargo xtask setup`)")
}

pub fn prometheus_scrapes_the_metrics() {
    let rig = Rig::new("prom");
    rig.write_config("{ rate = 10, per = \"1m\", burst = 20 }", "detach");
    let mut d = rig.start();
    assert_eq!(rig.burst(1, 30), 20);

    let (status, text) = http_get(&rig.topo.node, METRICS.parse().unwrap(), "/metrics").unwrap();
    assert_eq!(status, 200);
    for needle in ["198.18.", "2001:db8", "::ffff"] {
        assert!(
            !text.contains(needle),
            "a metric label carries a source address ({needle})"
        );
    }
    // promtool's linter on the exposition.
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus server scraping trafficd, queried through its API.
    let dir = rig.tmp.path("prom");
    std::fs::create_dir_all(&dir).unwrap();
    let mut prom = start_prometheus(&rig.topo.node, &dir);
    let query = |q: &str| -> Option<serde_json::Value> {
        let path = format!(
            "/api/v1/query?query={}",
            q.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
                .replace('=', "%3D")
                .replace('(', "%28")
                .replace(')', "%29")
        );
        let (code, body) = http_get(
            &rig.topo.node,
            "127.0.0.1:19090".parse::<SocketAddr>().unwrap(),
            &path,
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200
            && v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()))
        .then_some(v)
    };
    // The series are there at 0 from the first scrape: wait for one after the traffic.
    let value = |v: &serde_json::Value| -> f64 {
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1.0)
    };
    let passed = poll(
        "prometheus to scrape trafficd after the traffic",
        Duration::from_secs(60),
        || {
            query("sum(traffic_packets_total{class=\"premium\",outcome=\"pass\"})")
                .filter(|v| value(v) > 0.0)
        },
    );
    assert_eq!(value(&passed), 20.0);
    let dropped = poll("drop series", Duration::from_secs(10), || {
        query("traffic_packets_total{class=\"premium\",outcome=\"drop\",reason=\"packet_rate\"}")
    });
    assert_eq!(
        dropped["data"]["result"][0]["value"][1].as_str().unwrap(),
        "10"
    );
    for series in [
        "traffic_build_info",
        "traffic_class_packet_rate_limit_packets_per_second",
        "traffic_tracked_sources",
        "traffic_config_last_reload_successful",
        "traffic_throttle_level",
        "traffic_pressure_threshold_ratio",
        "traffic_admitted_sources_total",
    ] {
        poll(series, Duration::from_secs(10), || query(series));
    }
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
}

pub fn systemd_notifications_ready_reloading_stopping_and_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let rig = Rig::new("notify");
    rig.write_config("{ rate = 100 }", "detach");
    let notify_path = rig.tmp.path("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let log = std::fs::File::create(rig.tmp.path("notify.log")).unwrap();
    let mut child = rig
        .topo
        .node
        .command(trafficd())
        .unwrap()
        .args(["--config", rig.config_path().to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut buf = [0u8; 256];
    let mut next = |want: &str| -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < end, "no {want} notification");
            let n = sock.recv(&mut buf).expect("notification");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains(want) {
                return msg;
            }
        }
    };
    next("READY=1");
    next("WATCHDOG=1");
    next("WATCHDOG=1");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let reloading = next("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    next("READY=1");
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    next("STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
