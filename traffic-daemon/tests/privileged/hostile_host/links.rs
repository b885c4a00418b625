//! Cases: see the table in main.rs.
//!
//! Issue 12 item 3: an attached interface deleted and recreated under trafficd. Before the
//! fix the links were silently gone (status still said attached; no warning) and traffic
//! on the recreated interface was never filtered again.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::support::{PinDir, TempDir, poll, trafficctl, trafficd};
use traffic_daemon::api::StatusReport;
use traffic_testkit::{
    daemon::{DaemonProcess, http_get},
    topo::{HostSpec, Topology, unique_tag},
};

const PORT: u16 = 9000;

/// One client host ("prem", 198.18.1.0/24) and trafficd on the node, with a premium class
/// of `rate = 1/min, burst = 20` so every source passes 20 packets and then drops.
pub struct Rig {
    pub topo: Topology,
    pub pins: PinDir,
    pub tmp: TempDir,
    pub metrics: &'static str,
}

impl Rig {
    pub fn new(name: &str, metrics: &'static str) -> Self {
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
            metrics,
        }
    }

    pub fn socket(&self) -> String {
        self.tmp.path("admin.sock").display().to_string()
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.tmp.path("traffic.toml")
    }

    /// Write the config: `extra_daemon` goes in `[daemon]`, `tail` at the end.
    pub fn write_config(&self, extra_daemon: &str, tail: &str) {
        let text = format!(
            r#"
[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"
{extra_daemon}
[admin]
socket = "{socket}"
socket_group = ""
[metrics]
listen = "{metrics}"
[pressure.signal]
cpu = "off"
memory = "off"
io = "off"
[classes.default]
packets = {{ rate = 1000 }}
[classes.premium]
packets = {{ rate = 1, per = "1m", burst = 20 }}
[[rules]]
cidr = "198.18.1.0/24"
class = "premium"
{tail}
"#,
            iface = self.iface(),
            pins = self.pins.0.display(),
            socket = self.socket(),
            metrics = self.metrics,
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    pub fn start(&self) -> DaemonProcess {
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

    pub fn status(&self) -> StatusReport {
        let socket = self.socket();
        let (code, out, err) = trafficctl(&["--socket", &socket, "--json", "status"]);
        assert_eq!(code, 0, "trafficctl status: {err}");
        serde_json::from_str(&out).unwrap()
    }

    pub fn metrics_text(&self) -> String {
        let (code, text) =
            http_get(&self.topo.node, self.metrics.parse().unwrap(), "/metrics").unwrap();
        assert_eq!(code, 200);
        text
    }

    /// Send `n` UDP datagrams from the host's address `i`; returns how many arrived.
    pub fn burst(&self, i: u32, n: u64) -> u64 {
        crate::support::udp_burst(&self.topo, PORT, i, n)
    }

    pub fn iface(&self) -> String {
        self.topo.hosts[0].node_if.clone()
    }

    /// Recreate the node↔host veth pair as `Topology::build` made it (host 1): same names,
    /// MACs, addresses, neighbours and routes; a new ifindex.
    fn recreate_link(&self) {
        let host = &self.topo.hosts[0];
        let node = &self.topo.node;
        let (nmac, hmac) = ("02:7f:00:01:00:01", "02:7f:00:01:00:02");
        node.veth_pair((&host.node_if, nmac), (&host.host_if, hmac), &host.ns)
            .unwrap();
        node.addresses_up(&host.node_if, "198.19.1.1/30", "2001:db8:ffff:1::1/64")
            .unwrap();
        host.ns
            .addresses_up(&host.host_if, "198.19.1.2/30", "2001:db8:ffff:1::2/64")
            .unwrap();
        node.permanent_neighbour("198.19.1.2", hmac, &host.node_if)
            .unwrap();
        node.permanent_neighbour("2001:db8:ffff:1::2", hmac, &host.node_if)
            .unwrap();
        host.ns
            .permanent_neighbour("198.19.1.1", nmac, &host.host_if)
            .unwrap();
        host.ns
            .permanent_neighbour("2001:db8:ffff:1::1", nmac, &host.host_if)
            .unwrap();
        node.ip(&[
            "route",
            "add",
            "198.18.1.0/24",
            "via",
            "198.19.1.2",
            "dev",
            &host.node_if,
        ])
        .unwrap();
        host.ns
            .ip(&[
                "route",
                "add",
                "198.18.0.0/15",
                "via",
                "198.19.1.1",
                "dev",
                &host.host_if,
            ])
            .unwrap();
    }
}

fn attached_metric(text: &str, iface: &str) -> Option<String> {
    let prefix = format!("traffic_interface_attached{{interface=\"{iface}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

pub fn a_deleted_and_recreated_interface_is_reported_then_reattached_within_a_second() {
    let rig = Rig::new("hotplug", "127.0.0.1:19191");
    rig.write_config("", "");
    let mut d = rig.start();
    let iface = rig.iface();
    assert_eq!(rig.burst(1, 40), 20, "enforcing before the hot-plug");
    assert_eq!(
        attached_metric(&rig.metrics_text(), &iface).as_deref(),
        Some("1")
    );

    rig.topo.node.ip(&["link", "del", &iface]).unwrap();
    let st = poll(
        "status to report the interface detached",
        Duration::from_secs(2),
        || {
            let s = rig.status();
            (!s.interfaces[0].attached).then_some(s)
        },
    );
    assert!(st.interfaces[0].mode.is_none());
    let (_, text, _) = trafficctl(&["--socket", &rig.socket(), "status"]);
    assert!(text.contains("DETACHED"), "human status hides it:\n{text}");
    assert_eq!(
        attached_metric(&rig.metrics_text(), &iface).as_deref(),
        Some("0")
    );
    assert!(
        d.log_text().contains("went away"),
        "no warning in the log:\n{}",
        d.log_text()
    );

    rig.recreate_link();
    let returned = Instant::now();
    let st = poll("re-attach", Duration::from_secs(5), || {
        let s = rig.status();
        s.interfaces[0].attached.then_some(s)
    });
    let took = returned.elapsed();
    assert!(took < Duration::from_secs(1), "re-attached after {took:?}");
    assert!(st.interfaces[0].mode.is_some());
    assert!(
        rig.topo.xdp_attached(&iface).unwrap(),
        "XDP not on the new link"
    );
    assert_eq!(
        attached_metric(&rig.metrics_text(), &iface).as_deref(),
        Some("1")
    );
    // Enforcement resumed: source 1's bucket is still empty, a new source gets its burst.
    assert_eq!(rig.burst(1, 10), 0, "the exhausted source passes again");
    assert_eq!(rig.burst(3, 40), 20, "a new source is not limited");
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
    assert!(
        !rig.topo.xdp_attached(&iface).unwrap(),
        "left attached after stop"
    );
}

/// With `on_exit = "keep"` the link pin of a deleted interface names a dead link: the
/// re-attach pins the new link, so a crash after the hot-plug still leaves it enforcing.
pub fn with_keep_a_recreated_interface_is_pinned_again() {
    let rig = Rig::new("hotkeep", "127.0.0.1:19196");
    rig.write_config("on_exit = \"keep\"", "");
    let mut d = rig.start();
    let iface = rig.iface();
    rig.topo.node.ip(&["link", "del", &iface]).unwrap();
    poll("detached", Duration::from_secs(2), || {
        (!rig.status().interfaces[0].attached).then_some(())
    });
    rig.recreate_link();
    poll("re-attach", Duration::from_secs(2), || {
        rig.status().interfaces[0].attached.then_some(())
    });
    d.kill9().unwrap();
    assert!(
        rig.topo.xdp_attached(&iface).unwrap(),
        "the new link was not pinned: kill -9 detached it"
    );
    assert_eq!(rig.burst(1, 40), 20, "still enforcing after the crash");
    drop(d);
    traffic_daemon::dataplane::kernel::Kernel::remove_pins(&rig.pins.0).unwrap();
    poll("detach after unpinning", Duration::from_secs(5), || {
        (!rig.topo.xdp_attached(&iface).unwrap()).then_some(())
    });
}

pub fn a_missing_interface_at_start_is_attached_when_it_appears() {
    let rig = Rig::new("late", "127.0.0.1:19192");
    let iface = rig.iface();
    rig.write_config("", "");
    // A second, missing interface: trafficd starts with the one present.
    let text = std::fs::read_to_string(rig.config_path()).unwrap().replace(
        &format!("[\"{iface}\"]"),
        &format!("[\"{iface}\", \"{iface}x\"]"),
    );
    std::fs::write(rig.config_path(), text).unwrap();
    let mut d = rig.start();
    let s = rig.status();
    assert!(s.interfaces[0].attached && !s.interfaces[1].attached);
    assert!(d.log_text().contains("interface missing"));
    assert_eq!(
        attached_metric(&rig.metrics_text(), &format!("{iface}x")).as_deref(),
        Some("0")
    );
    rig.topo
        .node
        .ip(&[
            "link",
            "add",
            &format!("{iface}x"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{iface}y"),
        ])
        .unwrap();
    let appeared = Instant::now();
    poll(
        "attach to the late interface",
        Duration::from_secs(5),
        || rig.status().interfaces[1].attached.then_some(()),
    );
    assert!(appeared.elapsed() < Duration::from_secs(1));
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());

    // None of the interfaces exists: refused, with the reason.
    let text = std::fs::read_to_string(rig.config_path())
        .unwrap()
        .replace(&format!("[\"{iface}\", \"{iface}x\"]"), "[\"nosuch0\"]");
    std::fs::write(rig.config_path(), text).unwrap();
    let out = rig
        .topo
        .node
        .command(trafficd())
        .unwrap()
        .args(["--config", rig.config_path().to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("none of daemon.interfaces exists"), "{log}");
}

/// Lines of `tc filter show dev IFACE egress` naming our egress program.
fn egress_filters(rig: &Rig) -> usize {
    let out = rig
        .topo
        .node
        .command("tc")
        .unwrap()
        .args(["filter", "show", "dev", &rig.iface(), "egress"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(traffic_common::EGRESS_PROGRAM_NAME))
        .count()
}

/// Issue 12 item 11, on a kernel ≥ 6.6 through the override that selects the old-kernel
/// path: the netlink attach creates the `clsact` qdisc it needs, a filter left by a killed
/// daemon is replaced (not stacked) by the next one, and a clean stop removes it.
pub fn tc_egress_through_netlink_creates_clsact_and_replaces_a_crashed_runs_filter() {
    let rig = Rig::new("tcnl", "127.0.0.1:19195");
    rig.write_config("", "");
    let start = || {
        let log = std::fs::File::create(rig.tmp.path("trafficd.log")).unwrap();
        let child = rig
            .topo
            .node
            .command(trafficd())
            .unwrap()
            .args(["--config", rig.config_path().to_str().unwrap()])
            .env(traffic_daemon::dataplane::tc::BACKEND_ENV, "netlink")
            .stderr(log)
            .spawn()
            .unwrap();
        poll("trafficd ready", Duration::from_secs(20), || {
            let (code, _, _) = trafficctl(&["--socket", &rig.socket(), "status"]);
            (code == 0).then_some(())
        });
        child
    };
    let log = || std::fs::read_to_string(rig.tmp.path("trafficd.log")).unwrap_or_default();
    let mut first = start();
    let out = rig
        .topo
        .node
        .command("tc")
        .unwrap()
        .args(["qdisc", "show", "dev", &rig.iface()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("clsact"),
        "no clsact qdisc:\n{}",
        log()
    );
    assert_eq!(egress_filters(&rig), 1, "{}", log());
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(
        egress_filters(&rig),
        1,
        "a netlink filter outlives its process"
    );

    let mut second = start();
    assert_eq!(
        egress_filters(&rig),
        1,
        "the crashed run's filter was not replaced:\n{}",
        log()
    );
    assert!(log().contains("left by an earlier run"), "{}", log());
    // SAFETY: signalling our own child.
    #[allow(unsafe_code, reason = "kill(2) on our child")]
    unsafe {
        libc::kill(second.id() as i32, libc::SIGTERM)
    };
    assert!(second.wait().unwrap().success(), "{}", log());
    assert_eq!(egress_filters(&rig), 0, "a clean stop leaves no filter");
}
