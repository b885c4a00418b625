//! Issue 14: several nodes share bans, budgets and one view through a real redis-server.
//!
//! The harness: a redis-server in its own namespace, linked by one veth pair to each of
//! three nodes (198.18.250.4k+1 on Redis's side, .4k+2 on node k's), each node a
//! [`Rig`] of its own (namespace, client host "prem" in 198.18.1.0/24, pin dir, socket)
//! running trafficd with `[fleet]`. Redis runs with the README's minimal ACL: the default
//! user off, user `traffic` limited to the namespace's keys and channel and the commands
//! the daemon sends.

pub mod bans;
pub mod budgets;
pub mod faults;
pub mod hostile;
pub mod tls;

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use traffic_daemon::{api::StatusReport, fleet::FleetSnapshot};
use traffic_testkit::{daemon::DaemonProcess, netns::Netns, topo::unique_tag};

use crate::hostile_host::links::Rig;
use crate::support::{TempDir, poll, trafficctl};

const NS: &str = "fleettest";
const PASSWORD: &str = "fleet-test-secret";

/// The README's minimal ACL, for namespace [`NS`].
fn acl() -> String {
    format!(
        "user default off\nuser admin on >{PASSWORD}-admin ~* &* +@all\nuser traffic on >{PASSWORD} resetkeys ~{{{NS}}}:* resetchannels &{{{NS}}}:* \
         -@all +ping +set +sadd +srem +srandmember +mget +hset +hdel +hscan +pexpire \
         +publish +subscribe +unsubscribe\n"
    )
}

/// redis-server in its own namespace.
pub struct Redis {
    pub ns: Netns,
    child: Option<Child>,
    tmp: TempDir,
    /// Serve TLS only, with a certificate of the test's own CA (`ca.pem` in `tmp`).
    tls: bool,
}

impl Redis {
    fn addr(k: usize) -> String {
        format!("198.18.250.{}", 4 * k + 1)
    }

    /// Start (or restart, empty: no persistence) the server and wait for its PING.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let conf = self.tmp.path("redis.conf");
        let acl_file = self.tmp.path("users.acl");
        std::fs::write(&acl_file, acl()).unwrap();
        std::fs::write(
            &conf,
            format!(
                "bind 0.0.0.0\nport 6379\nprotected-mode no\nsave \"\"\nappendonly no\n\
                 dir {}\naclfile {}\n",
                self.tmp.0.display(),
                acl_file.display()
            ),
        )
        .unwrap();
        if self.tls {
            let t = self.tmp.0.display();
            std::fs::write(
                &conf,
                std::fs::read_to_string(&conf)
                    .unwrap()
                    .replace("port 6379\n", "port 0\n")
                    + &format!(
                        "tls-port 6379\ntls-cert-file {t}/server.pem\ntls-key-file {t}/server.key\n\
                         tls-ca-cert-file {t}/ca.pem\ntls-auth-clients no\n"
                    ),
            )
            .unwrap();
        }
        let log = std::fs::File::create(self.tmp.path("redis.log")).unwrap();
        let child = self
            .ns
            .command("redis-server")
            .unwrap()
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server (cargo xtask setup installs it)");
        self.child = Some(child);
        poll("redis-server answers PING", Duration::from_secs(10), || {
            (self.cli(&["PING"]).trim() == "PONG").then_some(())
        });
    }

    /// `kill -9` the server.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// redis-cli as the fleet's user, in the server's namespace.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_as("traffic", PASSWORD, args)
    }

    /// redis-cli as the test's admin (for INFO, which the fleet's user may not run).
    pub fn admin(&self, args: &[&str]) -> String {
        self.cli_as("admin", &format!("{PASSWORD}-admin"), args)
    }

    fn cli_as(&self, user: &str, pass: &str, args: &[&str]) -> String {
        let ca = self.tmp.path("ca.pem").display().to_string();
        let tls: &[&str] = if self.tls {
            &["--tls", "--cacert", &ca]
        } else {
            &[]
        };
        let out = self
            .ns
            .command("redis-cli")
            .unwrap()
            .args([
                "-h",
                "127.0.0.1",
                "--user",
                user,
                "--pass",
                pass,
                "--no-auth-warning",
            ])
            .args(tls)
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Commands the server has processed since it started (`INFO stats`).
    pub fn commands_processed(&self) -> u64 {
        self.admin(&["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One node: its rig and its daemon.
pub struct Node {
    pub rig: Rig,
    pub daemon: Option<DaemonProcess>,
    pub name: String,
    /// The node side of its link to Redis (set down for a partition).
    pub link: String,
}

impl Node {
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let socket = self.rig.socket();
        let mut all = vec!["--socket", &socket];
        all.extend_from_slice(args);
        trafficctl(&all)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(code, 0, "{}: trafficctl {args:?}: {out}{err}", self.name);
        out
    }

    pub fn bans(&self) -> traffic_daemon::api::bans::BansReport {
        serde_json::from_str(&self.ok(&["--json", "bans"])).unwrap()
    }

    pub fn status(&self) -> StatusReport {
        serde_json::from_str(&self.ok(&["--json", "status"])).unwrap()
    }

    pub fn fleet(&self) -> FleetSnapshot {
        serde_json::from_str(&self.ok(&["--json", "fleet"])).unwrap()
    }

    pub fn connected(&self) -> bool {
        self.status().fleet.is_some_and(|f| f.connected)
    }

    pub fn start(&mut self) {
        self.daemon = Some(self.rig.start());
    }

    /// Cut this node off from Redis (`up = false`) or heal it.
    pub fn link(&self, up: bool) {
        self.rig
            .topo
            .node
            .ip(&["link", "set", &self.link, if up { "up" } else { "down" }])
            .unwrap();
    }
}

/// Redis and three nodes, linked; the daemons are not started.
pub struct Fleet {
    // Declared first: the daemons stop before the namespaces go.
    pub nodes: Vec<Node>,
    pub redis: Redis,
}

impl Fleet {
    /// `extra(k)`: config lines for node k after its rules (e.g. an allow rule).
    pub fn new(name: &str, extra: impl Fn(usize) -> String) -> Self {
        Self::build(name, extra, false)
    }

    /// As [`Fleet::new`], Redis serving TLS only with a certificate of a CA made here.
    pub fn new_tls(name: &str) -> Self {
        Self::build(name, |_| String::new(), true)
    }

    fn build(name: &str, extra: impl Fn(usize) -> String, tls: bool) -> Self {
        let tag = unique_tag();
        let redis = Redis {
            ns: Netns::create(&format!("trf{tag}-redis")).unwrap(),
            child: None,
            tmp: TempDir::new(&format!("{name}-redis")),
            tls,
        };
        if tls {
            make_certificates(&redis.tmp);
        }
        let (scheme, ca) = if tls {
            (
                "rediss",
                format!("ca_file = \"{}\"\n", redis.tmp.path("ca.pem").display()),
            )
        } else {
            ("redis", String::new())
        };
        redis.ns.ip(&["link", "set", "lo", "up"]).unwrap();
        let mut nodes = Vec::new();
        for k in 1..=3usize {
            let rig = Rig::new(&format!("{name}-{k}"), "127.0.0.1:19301");
            let (r_if, n_if) = (format!("{tag}r{k}"), format!("{tag}f{k}"));
            redis
                .ns
                .veth_pair(
                    (&r_if, &format!("02:7e:00:00:{k:02x}:01")),
                    (&n_if, &format!("02:7e:00:00:{k:02x}:02")),
                    &rig.topo.node,
                )
                .unwrap();
            let base = 4 * k;
            redis
                .ns
                .addresses_up(
                    &r_if,
                    &format!("198.18.250.{}/30", base + 1),
                    &format!("2001:db8:fa:{k:x}::1/64"),
                )
                .unwrap();
            rig.topo
                .node
                .addresses_up(
                    &n_if,
                    &format!("198.18.250.{}/30", base + 2),
                    &format!("2001:db8:fa:{k:x}::2/64"),
                )
                .unwrap();
            let creds = rig.tmp.path("fleet.credentials");
            std::fs::write(&creds, format!("# test\ntraffic {PASSWORD}\n")).unwrap();
            std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let node = format!("node{k}");
            rig.write_config(
                "",
                &format!(
                    "{extra}\n[bans]\nstate_file = \"{state}\"\n[fleet]\nurl = \"{scheme}://{addr}:6379\"\n{ca}\
                     credentials_file = \"{creds}\"\nnode = \"{node}\"\nnamespace = \"{NS}\"\n\
                     heartbeat_interval = \"500ms\"\nsync_interval = \"2s\"\ncommand_timeout = \"300ms\"\n\
                     connect_timeout = \"500ms\"\n",
                    extra = extra(k),
                    state = rig.tmp.path("bans.json").display(),
                    addr = Redis::addr(k),
                    creds = creds.display(),
                ),
            );
            nodes.push(Node {
                rig,
                daemon: None,
                name: node,
                link: n_if,
            });
        }
        Fleet { nodes, redis }
    }

    /// Wait until every running node says it is connected.
    pub fn wait_connected(&self, timeout: Duration) {
        for n in self.nodes.iter().filter(|n| n.daemon.is_some()) {
            poll(&format!("{} connected", n.name), timeout, || {
                n.connected().then_some(())
            });
        }
    }
}

impl Drop for Fleet {
    /// On a failure, the logs (the temp dirs go with the fleet).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for n in &self.nodes {
            if let Some(d) = &n.daemon {
                let log = d.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "--- {} log (last 40 lines, newest first):\n{}",
                    n.name,
                    tail.join("\n")
                );
            }
        }
        let log = std::fs::read_to_string(self.redis.tmp.path("redis.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("--- redis log (newest first):\n{}", tail.join("\n"));
    }
}

/// A CA and a server certificate for Redis's addresses (openssl, as the operator would).
fn make_certificates(dir: &TempDir) {
    let d = dir.0.display().to_string();
    let sans: Vec<String> = std::iter::once("IP:127.0.0.1".to_owned())
        .chain((1..=3).map(|k| format!("IP:{}", Redis::addr(k))))
        .collect();
    std::fs::write(
        dir.path("ext"),
        format!("subjectAltName={}\n", sans.join(",")),
    )
    .unwrap();
    for args in [
        format!(
            "req -x509 -newkey rsa:2048 -nodes -keyout {d}/ca.key -out {d}/ca.pem -days 2 -subj /CN=fleet-test-ca"
        ),
        format!(
            "req -newkey rsa:2048 -nodes -keyout {d}/server.key -out {d}/server.csr -subj /CN=redis"
        ),
        format!(
            "x509 -req -in {d}/server.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial -out {d}/server.pem -days 2 -extfile {d}/ext"
        ),
    ] {
        let out = std::process::Command::new("openssl")
            .args(args.split(' '))
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `q` quantile of `v` (sorted in place).
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}
