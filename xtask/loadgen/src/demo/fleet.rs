//! `cargo xtask demo --fleet`: three nodes sharing bans and budgets through a redis-server.
//!
//! A redis-server in its own namespace (no persistence, the README's minimal ACL) is linked
//! to three nodes, each a namespace with trafficd and a client host (198.18.1.0/24 behind
//! every node: a source there is the same client whichever node it reaches). Two clients:
//!
//! - `client` (198.18.1.11, class `web`, `scope = "fleet"`, 50/s burst 10) sends 50/s to
//!   each node, 150/s in all: the fleet holds it to one limit;
//! - `attacker` (198.18.1.67, class `guest`, 20/s, offender rule of fleet scope) floods
//!   node 1 until its offender rule bans it there, then rotates to node 2 and node 3: the
//!   ban reached them first, so it is dropped as `banned` everywhere.
//!
//! A line a second, a report (the client's total against `rate·t + burst` and the bound of
//! the README; the ban's propagation), and `target/demo/fleet.svg` / `fleet.json`. With
//! `--check` it fails unless the ban reached both other nodes within a second and the
//! client stayed within the bound. Everything is torn down at the end, also on Ctrl-C.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use traffic_testkit::{
    daemon::DaemonProcess,
    netns::Netns,
    topo::{HostSpec, SERVICE_V4, Topology, unique_tag},
    udp::{UdpFlow, UdpSink, run_flows},
};

use super::interrupted;
use crate::{
    admin, chart,
    load::{ClassSecond, Mark, Second},
};

const RATE: f64 = 50.0;
const BURST: f64 = 10.0;
const INTERVAL: f64 = 0.2;
const PORT: u16 = 9000;
/// Host address indexes (`Host::v4(i)` is 198.18.1.(i+1)).
const CLIENT: u32 = 10;
const ATTACKER: u32 = 66;
const RUN: Duration = Duration::from_secs(40);
const PASSWORD: &str = "demo-fleet-secret";
const NS: &str = "demo";

/// One node: its topology, daemon and sink.
struct Node {
    topo: Topology,
    daemon: Option<DaemonProcess>,
    socket: PathBuf,
    pins: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(d) = &mut self.daemon {
            let _ = d.terminate(Duration::from_secs(10));
        }
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// redis-server in its own namespace, killed on drop.
struct Redis {
    ns: Netns,
    child: Child,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_config(k: usize, node: &Node, tmp: &Path) -> Result<PathBuf> {
    let creds = tmp.join(format!("fleet{k}.credentials"));
    std::fs::write(&creds, format!("traffic {PASSWORD}\n"))?;
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let text = format!(
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
[classes.default]
packets = {{ rate = 1000 }}
[classes.web]
packets = {{ rate = {RATE}, burst = {BURST} }}
scope = "fleet"
[classes.guest]
packets = {{ rate = 20, burst = 20 }}
[classes.guest.offender]
drop_ratio = 0.5
window = "10s"
min_packets = 100
ban_for = "10m"
scope = "fleet"
[[rules]]
cidr = "198.18.1.11/32"
class = "web"
[[rules]]
cidr = "198.18.1.64/26"
class = "guest"
[bans]
state_file = "{state}"
[fleet]
url = "redis://198.18.250.{redis}:6379"
credentials_file = "{creds}"
node = "node{k}"
namespace = "{NS}"
heartbeat_interval = "500ms"
budget_interval = "{interval}ms"
"#,
        iface = node.topo.hosts[0].node_if,
        pins = node.pins.display(),
        socket = node.socket.display(),
        state = tmp.join(format!("bans{k}.json")).display(),
        redis = 4 * k + 1,
        creds = creds.display(),
        interval = (INTERVAL * 1000.0) as u64,
    );
    let path = tmp.join(format!("traffic{k}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn start_redis(tag: &str, tmp: &Path) -> Result<Redis> {
    let ns = Netns::create(&format!("trf{tag}-redis"))?;
    ns.ip(&["link", "set", "lo", "up"])?;
    let acl = tmp.join("users.acl");
    std::fs::write(
        &acl,
        format!(
            "user default off\nuser traffic on >{PASSWORD} resetkeys ~{{{NS}}}:* resetchannels &{{{NS}}}:* \
             -@all +ping +set +sadd +srem +srandmember +mget +hset +hdel +hscan +pexpire \
             +publish +subscribe +unsubscribe\n"
        ),
    )?;
    let conf = tmp.join("redis.conf");
    std::fs::write(
        &conf,
        format!(
            "bind 0.0.0.0\nport 6379\nprotected-mode no\nsave \"\"\nappendonly no\ndir {}\naclfile {}\n",
            tmp.display(),
            acl.display()
        ),
    )?;
    let log = std::fs::File::create(tmp.join("redis.log"))?;
    let child = ns
        .command("redis-server")?
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("redis-server (cargo xtask setup installs it)")?;
    let redis = Redis { ns, child };
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let out = redis
            .ns
            .command("redis-cli")?
            .args([
                "--user",
                "traffic",
                "--pass",
                PASSWORD,
                "--no-auth-warning",
                "PING",
            ])
            .output()?;
        if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
            return Ok(redis);
        }
        ensure!(Instant::now() < end, "redis-server does not answer PING");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Redis, three linked nodes with trafficd running and connected.
fn build(bin_dir: &Path, tag: &str, tmp: &Path) -> Result<(Redis, Vec<Node>)> {
    let redis = start_redis(tag, tmp)?;
    let mut nodes = Vec::new();
    for k in 1..=3usize {
        let ntag = unique_tag();
        let topo = Topology::build(
            &ntag,
            &[HostSpec::new(
                "cli",
                ([198, 18, 1, 0].into(), 24),
                (std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 64),
            )],
        )?;
        let (r_if, n_if) = (format!("{tag}r{k}"), format!("{tag}f{k}"));
        redis.ns.veth_pair(
            (&r_if, &format!("02:7d:00:00:{k:02x}:01")),
            (&n_if, &format!("02:7d:00:00:{k:02x}:02")),
            &topo.node,
        )?;
        redis.ns.addresses_up(
            &r_if,
            &format!("198.18.250.{}/30", 4 * k + 1),
            &format!("2001:db8:fa:{k:x}::1/64"),
        )?;
        topo.node.addresses_up(
            &n_if,
            &format!("198.18.250.{}/30", 4 * k + 2),
            &format!("2001:db8:fa:{k:x}::2/64"),
        )?;
        let mut node = Node {
            topo,
            daemon: None,
            socket: tmp.join(format!("admin{k}.sock")),
            pins: PathBuf::from(format!("/sys/fs/bpf/traffic-demo-{tag}-{k}")),
        };
        let cfg = node_config(k, &node, tmp)?;
        node.daemon = Some(DaemonProcess::start(
            &node.topo.node,
            &bin_dir.join("trafficd"),
            &cfg,
            &node.socket,
            &tmp.join(format!("trafficd{k}.log")),
            Duration::from_secs(30),
        )?);
        nodes.push(node);
    }
    let end = Instant::now() + Duration::from_secs(15);
    for (k, n) in nodes.iter().enumerate() {
        loop {
            let v = admin::get_json(&n.socket, "/v1/fleet").unwrap_or_default();
            if v["connected"] == true && v["nodes"].as_array().is_some_and(|a| a.len() == 3) {
                break;
            }
            ensure!(
                Instant::now() < end && !interrupted(),
                "node{} not connected to the fleet: {v}",
                k + 1
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok((redis, nodes))
}

/// Whether a node lists a ban on `prefix`.
fn banned(n: &Node, prefix: &str) -> bool {
    admin::get_json(&n.socket, "/v1/bans")
        .ok()
        .and_then(|v| v["bans"].as_array().cloned())
        .is_some_and(|bans| bans.iter().any(|b| b["prefix"] == prefix))
}

fn flow(src: IpAddr, pps: f64, secs: f64) -> UdpFlow {
    UdpFlow {
        src,
        dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), PORT),
        rate_pps: pps,
        duration: Duration::from_secs_f64(secs),
        max_packets: (pps * secs) as u64 + 1,
        payload_len: 32,
        cpu: None,
        progress: None,
    }
}

mod run;

pub use run::run;
