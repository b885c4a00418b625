//! Issue 12, items 1, 9 and 10: the admin socket and the metrics port under hostile local
//! users (thousands of idle and slow connections; a reader who tries to control; a file that
//! is not ours at the socket path). The rig is shared with `instance.rs`.

use std::{
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::support::{PinDir, TempDir, poll, trafficctl, trafficd};
use traffic_daemon::api::circuits::{CircuitReport, CircuitsReport};
use traffic_testkit::{
    daemon::{DaemonProcess, http_get},
    topo::{HostSpec, Topology, unique_tag},
};

/// `[admin]` keys for a socket only root uses.
pub(super) const NO_GROUP: &str = "socket_group = \"\"";

/// UDP port of the bursts.
const PORT: u16 = 9000;

/// The node with one client host (198.18.12.0/24, class premium) and, once started,
/// trafficd. Fields drop in order: the daemon stops before the namespaces go.
pub(super) struct Rig {
    pub daemon: Option<DaemonProcess>,
    pub topo: Topology,
    pub pins: PinDir,
    pub tmp: TempDir,
}

impl Rig {
    pub fn new(name: &str) -> Self {
        let topo = Topology::build(
            &unique_tag(),
            &[HostSpec::new(
                "cli",
                ([198, 18, 12, 0].into(), 24),
                (
                    std::net::Ipv6Addr::new(0x2001, 0xdb8, 12, 0, 0, 0, 0, 0),
                    64,
                ),
            )],
        )
        .expect("topology");
        Self {
            daemon: None,
            topo,
            pins: PinDir::new(name),
            tmp: TempDir::new(name),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.tmp.path("admin.sock")
    }

    /// A config file named `file` with the premium class's `packets`, `admin` keys added to
    /// `[admin]` and `extra` TOML appended (e.g. `[metrics]`), its admin socket `socket`.
    pub fn write_config(
        &self,
        file: &str,
        socket: &Path,
        packets: &str,
        admin: &str,
        extra: &str,
    ) -> PathBuf {
        let text = format!(
            r#"
[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"
[admin]
socket = "{socket}"
{admin}
# The node's own pressure must not rescale the limits under test.
[pressure.signal]
cpu = "off"
memory = "off"
io = "off"
{extra}
[classes.default]
packets = {{ rate = 1000 }}
[classes.premium]
packets = {packets}
[[rules]]
cidr = "198.18.12.0/24"
class = "premium"
"#,
            iface = self.topo.hosts[0].node_if,
            pins = self.pins.0.display(),
            socket = socket.display(),
        );
        let path = self.tmp.path(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Start trafficd on `config` (its socket the rig's).
    pub fn start(&mut self, config: &Path) -> &DaemonProcess {
        let d = DaemonProcess::start(
            &self.topo.node,
            trafficd(),
            config,
            &self.socket(),
            &self.tmp.path("trafficd.log"),
            Duration::from_secs(20),
        )
        .expect("trafficd starts");
        self.daemon.insert(d)
    }

    /// Send `n` datagrams from the client's address `i`; returns how many arrived.
    pub fn burst(&self, i: u32, n: u64) -> u64 {
        crate::support::udp_burst(&self.topo, PORT, i, n)
    }
}

// ---------------------------------------------------------------------------------------
// Item 1: thousands of idle and slow connections on each listener
// ---------------------------------------------------------------------------------------

/// The metrics listener of the exhaustion case, on the node's loopback.
const METRICS: &str = "127.0.0.1:19412";
/// A local upstream the daemon probes and counts with sock_diag during the attack.
const UPSTREAM: u16 = 18412;
/// Connections the attacker opens on each listener.
const IDLE: usize = 5_000;
const SLOW: usize = 500;
/// Connections held open to the upstream: what sock_diag must keep seeing.
const HELD: u32 = 3;

/// Raise this process's RLIMIT_NOFILE soft limit to `want` (capped at the hard limit): the
/// attacker holds about 2 × (IDLE + SLOW) descriptors.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
    // SAFETY: getrlimit and setrlimit on a struct that lives for both calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.min(want.max(lim.rlim_cur));
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// trafficd under `prlimit --nofile=1024:16384`: systemd's default soft limit with the
/// unit's LimitNOFILE as the hard one, so a daemon that neither raises its limit nor caps
/// its listeners runs out of descriptors here as it did under systemd.
fn limited_trafficd(rig: &Rig) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = rig.tmp.path("trafficd-limited");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec prlimit --nofile=1024:16384 {} \"$@\"\n",
            trafficd().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A connection to `addr`, tried up to 10 times for 200 ms each. A listener at its cap
/// accepts only as fast as it evicts, so its accept queue fills under the attacker's
/// connects and the kernel drops a SYN now and then; the client's own retransmission would
/// come a second later (measured: 30 s of this case's 49 went to those waits).
fn tcp_connect(addr: &SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let mut last = None;
    for _ in 0..10 {
        match std::net::TcpStream::connect_timeout(addr, Duration::from_millis(200)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no attempt")))
}

/// Opens `n` connections with `connect`; returns those that connected.
fn open_many<S>(n: usize, connect: impl Fn() -> std::io::Result<S>) -> (Vec<S>, usize) {
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        match connect() {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    (held, failed)
}

/// The head of a request whose body will never be complete.
fn slow_head(path: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
    )
}

/// The daemon's resident set, from /proc/PID/status, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Items 1 and 10's held connections: 5,000 idle and 500 slow-body connections on each of the
/// metrics port and the admin socket, against trafficd with the unit's descriptor limits.
/// Meanwhile `trafficctl status` answers within 1 s (checked every 300 ms for 12 s: through
/// the request and idle timeouts), the upstream's probes go on and sock_diag counts its
/// connections, its breaker never moves, and trafficd's RSS stays ≤ 30 MB.
///
/// On the main of 2026-12-04 trafficd took every connection until it had no descriptor
/// left (its soft limit 1024): trafficctl got no answer and sock_diag failed.
pub fn thousands_of_idle_and_slow_connections_leave_the_control_plane_working() {
    use std::io::Write as _;
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("{:>6.1} s  {what}", t0.elapsed().as_secs_f64());
    assert!(raise_nofile(16_384) >= 2 * (IDLE + SLOW) as u64 + 256);
    let mut rig = Rig::new("listeners");
    // The upstream: a listener that holds what it accepts.
    let upstream = rig
        .topo
        .node
        .run(|| std::net::TcpListener::bind(("127.0.0.1", UPSTREAM)))
        .unwrap()
        .unwrap();
    // Never joined: it blocks in accept until the test binary exits.
    std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in upstream.incoming() {
            match c {
                Ok(c) => conns.push(c),
                Err(_) => break,
            }
        }
    });
    let _clients: Vec<std::net::TcpStream> = rig
        .topo
        .node
        .run(|| {
            (0..HELD)
                .map(|_| std::net::TcpStream::connect(("127.0.0.1", UPSTREAM)).unwrap())
                .collect()
        })
        .unwrap();
    let extra = format!(
        "[metrics]\nlisten = \"{METRICS}\"\n[[upstreams]]\nname = \"api\"\nport = {UPSTREAM}\n\
         probe = \"tcp\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\nmax_connections = 1000\n"
    );
    let config = rig.write_config(
        "traffic.toml",
        &rig.socket(),
        "{ rate = 1000 }",
        NO_GROUP,
        &extra,
    );
    let bin = limited_trafficd(&rig);
    let d = DaemonProcess::start(
        &rig.topo.node,
        &bin,
        &config,
        &rig.socket(),
        &rig.tmp.path("trafficd.log"),
        Duration::from_secs(20),
    )
    .expect("trafficd starts");
    let pid = d.pid().unwrap();
    rig.daemon = Some(d);
    let circuit = |rig: &Rig| -> CircuitReport {
        let c: CircuitsReport = ctl(rig, &["circuits"]);
        c.upstreams.into_iter().find(|c| c.name == "api").unwrap()
    };
    let before = poll(
        "sock_diag to count the held connections",
        Duration::from_secs(10),
        || {
            let c = circuit(&rig);
            (c.established.is_some_and(|n| n >= HELD) && c.probes_ok > 0).then_some(c)
        },
    );
    let rss_before = rss(pid);
    phase("trafficd started, the upstream's connections counted");

    // The attack: idle, then slow-body, on each listener.
    let metrics: SocketAddr = METRICS.parse().unwrap();
    let (idle_tcp, failed_tcp) = rig
        .topo
        .node
        .run(move || open_many(IDLE, || tcp_connect(&metrics)))
        .unwrap();
    phase("idle TCP connections open");
    let socket = rig.socket();
    let (idle_unix, failed_unix) = open_many(IDLE, || UnixStream::connect(&socket));
    phase("idle unix connections open");
    let (mut slow_tcp, _) = rig
        .topo
        .node
        .run(move || {
            open_many(SLOW, || {
                let mut s = tcp_connect(&metrics)?;
                s.write_all(slow_head("/metrics").as_bytes())?;
                Ok(s)
            })
        })
        .unwrap();
    phase("slow TCP connections open");
    let (mut slow_unix, _) = open_many(SLOW, || {
        let mut s = UnixStream::connect(&socket)?;
        s.write_all(slow_head("/v1/reload").as_bytes())?;
        Ok(s)
    });
    phase("the attack's connections open");
    eprintln!(
        "attack: {} idle TCP ({failed_tcp} failed), {} idle unix ({failed_unix} failed), {} + {} slow",
        idle_tcp.len(),
        idle_unix.len(),
        slow_tcp.len(),
        slow_unix.len()
    );

    // Through the request (5 s) and idle (10 s) timeouts: status answers fast, every time.
    let end = Instant::now() + Duration::from_secs(12);
    let mut slowest = Duration::ZERO;
    let mut rss_max = 0;
    while Instant::now() < end {
        for s in &mut slow_tcp {
            let _ = s.write_all(b" ");
        }
        for s in &mut slow_unix {
            let _ = s.write_all(b" ");
        }
        let t = Instant::now();
        let (code, _, err) = trafficctl(&["--socket", socket.to_str().unwrap(), "status"]);
        let took = t.elapsed();
        assert_eq!(code, 0, "trafficctl status during the attack: {err}");
        assert!(
            took < Duration::from_secs(1),
            "trafficctl status took {took:?}"
        );
        slowest = slowest.max(took);
        rss_max = rss_max.max(rss(pid));
        std::thread::sleep(Duration::from_millis(300));
    }
    phase("through the timeouts");
    let (code, body) = http_get(&rig.topo.node, metrics, "/metrics").unwrap();
    assert_eq!(code, 200);
    let after = circuit(&rig);
    let log = std::fs::read_to_string(rig.tmp.path("trafficd.log")).unwrap();
    eprintln!(
        "status: slowest {slowest:?}; RSS {:.1} MB before, at most {:.1} MB under attack; \
         probes ok {} → {}; established {:?}\n{}",
        rss_before as f64 / 1e6,
        rss_max as f64 / 1e6,
        before.probes_ok,
        after.probes_ok,
        after.established,
        body.lines()
            .filter(|l| l.starts_with("traffic_listener"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !log.contains("sock_diag failed") && !log.contains("Too many open files"),
        "{log}"
    );
    assert!(after.established.is_some_and(|n| n >= HELD), "{after:?}");
    assert!(
        after.probes_ok > before.probes_ok + 10,
        "probes stopped: {after:?}"
    );
    assert_eq!(after.probes_failed, before.probes_failed, "a probe failed");
    assert_eq!(after.breaker.state, before.breaker.state);
    assert_eq!(
        after.transitions.len(),
        before.transitions.len(),
        "the breaker moved"
    );
    // What the attack may add: the connections' state is bounded by the caps, so the growth
    // is, whatever the binary's own size (this is a debug build, its code pages larger with
    // every feature; the release figures are the benchmark's).
    assert!(
        rss_max.saturating_sub(rss_before) <= 16_000_000,
        "RSS grew from {rss_before} to {rss_max} bytes"
    );
    drop((idle_tcp, idle_unix, slow_tcp, slow_unix));
    phase("the attack's connections closed");
    let mut d = rig.daemon.take().unwrap();
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
    phase("trafficd stopped");
}

/// `trafficctl --json ARGS` against the rig's socket, parsed.
fn ctl<T: serde::de::DeserializeOwned>(rig: &Rig, args: &[&str]) -> T {
    let socket = rig.socket();
    let mut full = vec!["--socket", socket.to_str().unwrap(), "--json"];
    full.extend_from_slice(args);
    let (code, out, err) = trafficctl(&full);
    assert_eq!(code, 0, "trafficctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("trafficctl {args:?} JSON: {e}\n{out}"))
}

// ---------------------------------------------------------------------------------------
// Item 9: readers and controllers; what the socket path may hold
// ---------------------------------------------------------------------------------------

/// `trafficctl --socket SOCKET ARGS` as uid and gid 65534 (nobody, nogroup) with the
/// supplementary `groups` (setpriv), from a copy any user may execute.
fn ctl_as_nobody(rig: &Rig, groups: &str, args: &[&str]) -> (i32, String) {
    use std::os::unix::fs::PermissionsExt as _;
    let exe = rig.tmp.path("trafficctl");
    if !exe.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_trafficctl"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let group_arg = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        format!("--groups={groups}")
    };
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", &group_arg])
        .arg(&exe)
        .arg("--socket")
        .arg(rig.socket())
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A user in the socket's group only (nogroup here) reads but gets 403 on every change; a
/// member of the control group (adm here) changes; both are logged with their uid. Before
/// that, a regular file at the socket path makes trafficd refuse to start, and survives.
///
/// On the main of 2026-12-04 trafficd deleted the file and bound its socket, and the reader's
/// `circuit open` went through.
pub fn a_reader_cannot_control_and_a_file_at_the_socket_path_survives() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut rig = Rig::new("authz");
    std::fs::set_permissions(&rig.tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let admin = "socket_group = \"nogroup\"\ncontrol_group = \"adm\"";
    let extra = format!(
        "[metrics]\nenabled = false\n[[upstreams]]\nname = \"api\"\nport = {UPSTREAM}\n\
         probe = \"tcp\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n"
    );
    let config = rig.write_config(
        "traffic.toml",
        &rig.socket(),
        "{ rate = 1000 }",
        admin,
        &extra,
    );

    std::fs::write(rig.socket(), "an operator's notes").unwrap();
    let out = rig
        .topo
        .node
        .command(trafficd())
        .unwrap()
        .arg("--config")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(rig.socket()).unwrap(),
        "an operator's notes"
    );
    std::fs::remove_file(rig.socket()).unwrap();

    rig.start(&config);
    let (code, out) = ctl_as_nobody(&rig, "", &["--json", "status"]);
    assert_eq!(code, 0, "a reader reads: {out}");
    for change in [
        &["circuit", "open", &UPSTREAM.to_string()][..],
        &["reload"],
        &["source", "reset", "198.18.12.1"],
    ] {
        let (code, out) = ctl_as_nobody(&rig, "", change);
        assert_eq!(code, 1, "{change:?}: {out}");
        assert!(
            out.contains("403") && out.contains("`adm`"),
            "{change:?}: {out}"
        );
    }
    let c: CircuitsReport = ctl(&rig, &["circuits"]);
    assert!(
        c.upstreams[0].transitions.is_empty(),
        "the reader opened it"
    );
    let (code, out) = ctl_as_nobody(&rig, "4", &["circuit", "open", &UPSTREAM.to_string()]);
    assert_eq!(code, 0, "a member of the control group changes: {out}");
    let log = std::fs::read_to_string(rig.tmp.path("trafficd.log")).unwrap();
    let lines = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(lines("control request denied"), 3, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("control request allowed") && l.contains("uid=Some(65534)")),
        "{log}"
    );
    let mut d = rig.daemon.take().unwrap();
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
}
