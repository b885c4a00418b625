//! `cargo xtask demo --fleet`: three trafficd nodes sharing bans and budgets through a real
//! redis-server (issue 14).
//!
//! The lab: redis-server in its own namespace (no persistence, the README's minimal ACL),
//! linked by one veth pair to each of three node namespaces (198.18.250.4k+1 on Redis's
//! side, .4k+2 on node k's); each node a [`Topology`] of its own whose client host owns
//! 198.18.1.0/24, so one source address (the attacker 198.18.1.2, the client 198.18.1.11)
//! reaches every node. Every node runs trafficd with `[fleet]` and the class `api`
//! (100/s, burst 20) whose offender rule has `scope = "fleet"` and which itself has
//! `scope = "fleet"` (a fleet-wide budget; [`FLEET_BUDGETS`]).
//!
//! The story ([`story`]): the attacker floods node 1 until its offender rule bans it, then
//! rotates to nodes 2 and 3, where it is dropped as `banned` from the first packet; the
//! client spreads 3× its rate evenly over the three nodes and is held to about
//! `rate·t + burst` over the fleet. Live view, report, `target/demo/fleet.svg` and
//! `fleet.json`; with `--check` a non-zero exit unless both hold. Namespaces, links, pins,
//! redis-server and the daemons are removed at the end, also on Ctrl-C.

mod chart;
mod live;
mod redis;
mod report;
mod story;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use traffic_testkit::{
    daemon::DaemonProcess,
    netns::Netns,
    topo::{HostSpec, Topology, unique_tag},
};

use super::{Scratch, install_interrupt_handler, interrupted};
use crate::admin;
use redis::Redis;

/// Whether the class `api` has `scope = "fleet"` (fleet-wide budgets, with
/// `[fleet] budget_interval`). Off: the same run with node-scoped limits, and `--check`
/// leaves the budget out.
pub(crate) const FLEET_BUDGETS: bool = true;
/// The class's per-source limit: datagrams per second and burst.
pub(crate) const RATE: f64 = 100.0;
pub(crate) const BURST: f64 = 20.0;
/// `[fleet] budget_interval`, seconds.
pub(crate) const BUDGET_INTERVAL: f64 = 0.2;
/// The nodes.
pub(crate) const NODES: usize = 3;
/// UDP port the nodes' sinks listen on.
const PORT: u16 = 9000;

/// One node: its daemon (declared first: stopped before its namespaces go), topology and
/// admin socket.
pub(super) struct Node {
    daemon: Option<DaemonProcess>,
    pub(super) name: String,
    pub(super) topo: Topology,
    pub(super) socket: PathBuf,
}

impl Node {
    /// The node's client host (198.18.1.0/24).
    pub(super) fn host(&self) -> &traffic_testkit::topo::Host {
        &self.topo.hosts[0]
    }
}

/// Redis and the three nodes, torn down on drop: daemons, Redis, namespaces, then the
/// scratch and pin directories.
pub(super) struct Lab {
    pub(super) nodes: Vec<Node>,
    redis: Redis,
    redis_ns: Netns,
    _scratch: Scratch,
}

impl Lab {
    /// Commands Redis has processed so far.
    pub(super) fn redis_commands(&self) -> u64 {
        self.redis.commands_processed(&self.redis_ns)
    }
}

/// The node's config: its interface, pins, socket; the class `api` for the client range,
/// with its offender rule of fleet scope; `[fleet]` pointing at Redis over its link.
fn config(k: usize, node: &Topology, pins: &Path, socket: &Path, dir: &Path) -> String {
    let budget = if FLEET_BUDGETS {
        "scope = \"fleet\"\n"
    } else {
        ""
    };
    let budget_key = if FLEET_BUDGETS {
        format!(
            "budget_interval = \"{}ms\"\n",
            (BUDGET_INTERVAL * 1e3) as u64
        )
    } else {
        String::new()
    };
    format!(
        r#"[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"

[admin]
socket = "{socket}"
socket_group = ""

[pressure.signal]
cpu = "off"
memory = "off"
io = "off"

[bans]
state_file = "{dir}/bans.json"

[classes.default]
packets = {{ rate = 1000 }}

[classes.api]
packets = {{ rate = {RATE}, burst = {BURST} }}
{budget}
[classes.api.offender]
drop_ratio = 0.9
window = "10s"
min_packets = 200
ban_for = "5m"
scope = "fleet"

[[rules]]
cidr = "198.18.1.0/24"
class = "api"

[fleet]
url = "redis://198.18.250.{redis}:6379"
credentials_file = "{dir}/fleet.credentials"
node = "node{k}"
namespace = "{ns}"
heartbeat_interval = "500ms"
sync_interval = "2s"
command_timeout = "300ms"
connect_timeout = "500ms"
{budget_key}"#,
        iface = node.node_interfaces()[0],
        pins = pins.display(),
        socket = socket.display(),
        dir = dir.display(),
        redis = 4 * k + 1,
        ns = redis::NAMESPACE,
    )
}

/// Build Redis and the nodes, start the daemons, wait until each is connected and sees the
/// three.
fn build(bin_dir: &Path) -> Result<Lab> {
    let tag = unique_tag();
    let scratch = Scratch {
        tmp: std::env::temp_dir().join(format!("traffic-fleet-{tag}")),
        pins: PathBuf::from(format!("/sys/fs/bpf/traffic-fleet-{tag}")),
    };
    std::fs::create_dir_all(&scratch.tmp)?;
    println!(
        "==> topology: redis-server and {NODES} nodes, each with a client host (namespaces trf{tag}-redis, trf…-node, trf…-cli)"
    );
    let redis_ns = Netns::create(&format!("trf{tag}-redis"))?;
    let mut nodes: Vec<Node> = Vec::new();
    for k in 1..=NODES {
        let topo = Topology::build(
            &unique_tag(),
            &[HostSpec::new(
                "cli",
                ([198, 18, 1, 0].into(), 24),
                (std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 64),
            )],
        )?;
        let (r_if, n_if) = (format!("{tag}r{k}"), format!("{tag}f{k}"));
        redis_ns.veth_pair(
            (&r_if, &format!("02:7d:00:00:{k:02x}:01")),
            (&n_if, &format!("02:7d:00:00:{k:02x}:02")),
            &topo.node,
        )?;
        redis_ns.addresses_up(
            &r_if,
            &format!("198.18.250.{}/30", 4 * k + 1),
            &format!("2001:db8:fa:{k:x}::1/64"),
        )?;
        topo.node.addresses_up(
            &n_if,
            &format!("198.18.250.{}/30", 4 * k + 2),
            &format!("2001:db8:fa:{k:x}::2/64"),
        )?;
        let dir = scratch.tmp.join(format!("node{k}"));
        std::fs::create_dir_all(&dir)?;
        let creds = dir.join("fleet.credentials");
        std::fs::write(&creds, format!("traffic {}\n", redis::PASSWORD))?;
        std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let socket = dir.join("admin.sock");
        let pins = scratch.pins.join(format!("node{k}"));
        std::fs::write(
            dir.join("traffic.toml"),
            config(k, &topo, &pins, &socket, &dir),
        )?;
        nodes.push(Node {
            daemon: None,
            name: format!("node{k}"),
            topo,
            socket,
        });
    }
    let redis_dir = scratch.tmp.join("redis");
    std::fs::create_dir_all(&redis_dir)?;
    println!("==> redis-server (no persistence, the README's minimal ACL)");
    let redis = Redis::start(&redis_ns, &redis_dir)?;
    let mut lab = Lab {
        nodes,
        redis,
        redis_ns,
        _scratch: scratch,
    };
    for n in &mut lab.nodes {
        let dir = n.socket.parent().context("socket dir")?.to_owned();
        println!("==> trafficd {} with [fleet]", n.name);
        n.daemon = Some(DaemonProcess::start(
            &n.topo.node,
            &bin_dir.join("trafficd"),
            &dir.join("traffic.toml"),
            &n.socket,
            &dir.join("trafficd.log"),
            Duration::from_secs(30),
        )?);
    }
    let end = Instant::now() + Duration::from_secs(15);
    for n in &lab.nodes {
        loop {
            let seen = admin::get_json(&n.socket, "/v1/fleet")
                .ok()
                .and_then(|v| v["nodes"].as_array().map(Vec::len))
                .unwrap_or(0);
            let connected = admin::get_json(&n.socket, "/v1/status")
                .is_ok_and(|v| v["fleet"]["connected"].as_bool() == Some(true));
            if connected && seen == NODES {
                break;
            }
            if Instant::now() > end || interrupted() {
                bail!(
                    "{} not connected to the fleet (sees {seen} nodes):\n{}",
                    n.name,
                    lab.daemon_log(n)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("==> the {NODES} nodes are connected and see each other");
    Ok(lab)
}

impl Lab {
    fn daemon_log(&self, n: &Node) -> String {
        n.daemon
            .as_ref()
            .map(DaemonProcess::log_text)
            .unwrap_or_default()
    }

    /// Stop the daemons (SIGTERM, waited for) and Redis; keep the logs if asked.
    fn stop(&mut self, keep_logs: bool) {
        for n in &mut self.nodes {
            if let Some(mut d) = n.daemon.take() {
                if keep_logs {
                    let kept = std::env::temp_dir().join(format!("trafficd-fleet-{}.log", n.name));
                    let _ = std::fs::copy(&d.log, &kept);
                    eprintln!("({} log kept at {})", n.name, kept.display());
                }
                if let Err(e) = d.terminate(Duration::from_secs(10)) {
                    eprintln!("==> trafficd {}: {e:#}", n.name);
                }
            }
        }
        if keep_logs {
            let kept = std::env::temp_dir().join("redis-fleet-demo.log");
            let _ = std::fs::copy(&self.redis.log, &kept);
        }
        self.redis.stop();
    }
}

/// The fleet demo; with `check`, an error unless the story's promises held.
pub fn run(bin_dir: &Path, check: bool) -> Result<()> {
    install_interrupt_handler();
    anyhow::ensure!(
        traffic_testkit::is_root(),
        "the fleet demo creates network namespaces and loads XDP: run it as root"
    );
    let started = Instant::now();
    let mut lab = build(bin_dir)?;
    let result = story::run(&lab);
    lab.stop(result.is_err());
    drop(lab);
    println!("==> daemons and redis-server stopped; namespaces, links and pins removed");
    let outcome = result?;
    println!("\n==> done in {:.0} s", started.elapsed().as_secs_f64());
    if interrupted() {
        bail!("interrupted: the report covers the part that ran; everything is cleaned up");
    }
    if check {
        let failed = outcome.failures();
        if !failed.is_empty() {
            bail!(
                "the fleet demo's check failed:\n  - {}",
                failed.join("\n  - ")
            );
        }
        println!("==> check passed");
    }
    Ok(())
}
