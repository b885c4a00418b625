//! Circuit breakers and bulkheads end to end: trafficd in a node namespace guarding real TCP
//! and HTTP servers that run there, clients connecting from another namespace over a veth
//! pair, and `trafficctl` watching and steering it.
//!
//! - A stopped server trips its breaker within the window; while open, a client's connect
//!   is refused by the XDP gate's RST in well under 10 ms instead of waiting out SYN
//!   retransmits; a failed half-open trial reopens; a restarted server closes it again.
//! - `gate = "drop"` makes clients wait (their connect times out), `gate = "reset"` refuses
//!   at once; established flows pass an open gate.
//! - An HTTP server answering 500 trips the HTTP probe's breaker.
//! - Holding `max_connections` connections open sheds the next one at the gate; closing
//!   them lets new ones in again.
//! - Chaos at 50 % drops (or resets) about half, within binomial bounds, shows in
//!   `trafficctl status`, and stops when it expires.
//! - With probes off, RSTs the node's own stack sends (counted by the TC egress program)
//!   open the breaker: the passive signal.
//!
//! Privileged and stateful: one at a time through `cargo xtask test`, or
//!
//! ```text
//! cargo test -p traffic-daemon --test privileged -- circuits:: --nocapture
//! ```

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use crate::support::{PinDir, TempDir, trafficctl, trafficd};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Xdp, XdpMode},
};
use traffic_common::{PROGRAM_NAME, map_names};
use traffic_daemon::{
    api::{
        StatusReport,
        circuits::{CircuitReport, CircuitsReport},
    },
    policy::{breaker::BreakerState, upstream::Shedding},
};
use traffic_testkit::{
    daemon::DaemonProcess,
    tcplab::{Connect, TcpServer, connect_in, connect_many, echo_roundtrip, http_status},
    topo::{Host, HostSpec, SERVICE_V4, SERVICE_V6, Topology, unique_tag},
    udp::{UdpFlow, UdpSink, run_flows},
};

/// Polling period of every wait below.
const POLL: Duration = Duration::from_millis(10);
/// A refused connect must come back within this (the gate's RST, no retransmits).
const FAST_REFUSAL: Duration = Duration::from_millis(10);
/// Connect timeout where a connect is expected to succeed or be refused.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Breakers that react within a second or two: 3 failures in a row open, 2 s to half-open
/// (always 2 s), 2 trials per second, 2 successes close.
const BREAKER: &str = r#"
[breaker]
window = "10s"
error_threshold = 0.5
min_requests = 10
consecutive_failures = 3
reset_timeout = "2s"
backoff = "immediate"
half_open_trials = 2
half_open_interval = "1s"
success_threshold = 2
"#;

/// The node, one client host, trafficd. Fields drop in order: the daemon stops (and
/// detaches) before the namespaces go, the pins and scratch files last.
struct Rig {
    daemon: DaemonProcess,
    _peers: Vec<PeerXdp>,
    topo: Topology,
    _pins: PinDir,
    tmp: TempDir,
}

impl Rig {
    /// Build the topology and start trafficd with `upstreams` (TOML `[[upstreams]]` tables).
    fn start(name: &str, upstreams: &str) -> Rig {
        let topo = Topology::build(
            &unique_tag(),
            &[HostSpec::new(
                "cli",
                ([198, 18, 7, 0].into(), 24),
                (std::net::Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 0), 64),
            )],
        )
        .expect("topology");
        let peers = topo
            .hosts
            .iter()
            .map(|h| PeerXdp::attach(h, &format!("{name}-peer-{}", h.spec.name)))
            .collect();
        let pins = PinDir::new(name);
        let tmp = TempDir::new(name);
        let socket = tmp.path("admin.sock");
        let config = tmp.path("traffic.toml");
        let text = format!(
            r#"
[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"
[admin]
socket = "{socket}"
socket_group = ""
[metrics]
enabled = false
# The node's own pressure must not scale the bulkheads under test.
[pressure.signal]
cpu = "off"
memory = "off"
io = "off"
{BREAKER}
[classes.default]
{upstreams}
"#,
            iface = topo.hosts[0].node_if,
            pins = pins.0.display(),
            socket = socket.display(),
        );
        std::fs::write(&config, text).expect("write config");
        let daemon = DaemonProcess::start(
            &topo.node,
            trafficd(),
            &config,
            &socket,
            &tmp.path("trafficd.log"),
            Duration::from_secs(20),
        )
        .expect("trafficd starts");
        Rig {
            daemon,
            _peers: peers,
            topo,
            _pins: pins,
            tmp,
        }
    }

    fn socket(&self) -> PathBuf {
        self.tmp.path("admin.sock")
    }

    fn client(&self) -> &Host {
        &self.topo.hosts[0]
    }

    /// `trafficctl --json ARGS`, parsed.
    fn ctl<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        let out = self.ctl_text(&[&["--json"], args].concat());
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("trafficctl {args:?}: bad JSON ({e}):\n{out}"))
    }

    /// `trafficctl ARGS`; its stdout. Fails the test on a non-zero exit.
    fn ctl_text(&self, args: &[&str]) -> String {
        let socket = self.socket();
        let mut full = vec!["--socket", socket.to_str().expect("UTF-8 path")];
        full.extend_from_slice(args);
        let (code, out, err) = trafficctl(&full);
        assert_eq!(
            code,
            0,
            "trafficctl {args:?} exited {code}: {err}\n{}",
            self.log_tail()
        );
        out
    }

    fn circuit(&self, name: &str) -> CircuitReport {
        let all: CircuitsReport = self.ctl(&["circuits"]);
        all.upstreams
            .into_iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("trafficctl circuits shows no upstream {name}"))
    }

    fn status(&self) -> StatusReport {
        self.ctl(&["status"])
    }

    /// Poll `circuits` until `ok` holds for upstream `name`; the report and how long it took.
    fn wait(
        &self,
        name: &str,
        what: &str,
        deadline: Duration,
        mut ok: impl FnMut(&CircuitReport) -> bool,
    ) -> (CircuitReport, Duration) {
        let start = Instant::now();
        loop {
            let c = self.circuit(name);
            if ok(&c) {
                return (c, start.elapsed());
            }
            assert!(
                start.elapsed() < deadline,
                "{name}: no {what} within {deadline:?}; last report:\n{c:#?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Wait for a breaker state.
    fn wait_state(
        &self,
        name: &str,
        state: BreakerState,
        deadline: Duration,
    ) -> (CircuitReport, Duration) {
        self.wait(name, &format!("state {state}"), deadline, |c| {
            c.breaker.state == state
        })
    }

    fn log_tail(&self) -> String {
        let log = self.daemon.log_text();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "trafficd log (tail):\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// Connect from the client to the node's service address.
    fn connect(
        &self,
        v6: bool,
        port: u16,
        timeout: Duration,
    ) -> (Option<std::net::TcpStream>, Connect, Duration) {
        connect_in(&self.client().ns, service(v6, port), timeout).expect("client thread")
    }

    /// Connects from both families must be refused, each within [`FAST_REFUSAL`]; the
    /// slowest refusal.
    fn assert_refused_fast(&self, port: u16, why: &str) -> Duration {
        let mut slowest = Duration::ZERO;
        for v6 in [false, true] {
            let (_, outcome, took) = self.connect(v6, port, CONNECT_TIMEOUT);
            assert_eq!(
                outcome,
                Connect::Refused,
                "{why}: connect to {} was not refused (took {took:?})",
                service(v6, port)
            );
            assert!(
                took < FAST_REFUSAL,
                "{why}: refusal of {} took {took:?}, want < {FAST_REFUSAL:?}",
                service(v6, port)
            );
            slowest = slowest.max(took);
        }
        slowest
    }

    /// Connects from both families must succeed (and echo, for an echo server).
    fn assert_connects(&self, port: u16, echo: bool, why: &str) -> Duration {
        let mut slowest = Duration::ZERO;
        for v6 in [false, true] {
            let (s, outcome, took) = self.connect(v6, port, CONNECT_TIMEOUT);
            assert_eq!(
                outcome,
                Connect::Connected,
                "{why}: connect to {}",
                service(v6, port)
            );
            if echo {
                let mut s = s.expect("stream");
                echo_roundtrip(&mut s, b"ping", Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("{why}: echo over {}: {e}", service(v6, port)));
            }
            slowest = slowest.max(took);
        }
        slowest
    }
}

/// An XDP program attached natively to a client's end of its veth pair: the traffic
/// program, loaded on maps of its own that are never configured, so it passes everything.
///
/// XDP_TX on the node's veth hands the frame to the peer as an xdp_frame. The peer takes it
/// into its ring only when it runs NAPI (GRO on, or an XDP program), but schedules that NAPI
/// for it only when it has an XDP program of its own: with GRO alone the gate's RSTs sit in
/// the ring (no counter moves) and clients wait out their SYN retransmits as if the gate
/// dropped them. A real NIC has no such dependency.
pub(crate) struct PeerXdp {
    _ebpf: Ebpf,
    _pins: PinDir,
}

impl PeerXdp {
    pub(crate) fn attach(host: &Host, pins: &str) -> PeerXdp {
        let pins = PinDir::new(pins);
        std::fs::create_dir_all(&pins.0).expect("peer pin dir");
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.0)
            .map_max_entries(map_names::BUCKETS, 1024)
            .load(traffic_daemon::EBPF_OBJECT)
            .expect("load the peer's pass-through program");
        let xdp: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .expect("XDP program")
            .try_into()
            .expect("an XDP program");
        xdp.load().expect("load the peer's XDP program");
        // Interface names and the link belong to the namespace of the attaching thread.
        let iface = std::ffi::CString::new(host.host_if.clone()).expect("interface name");
        let ebpf = host
            .ns
            .run(move || {
                let mut ebpf = ebpf;
                let xdp: &mut Xdp = ebpf
                    .program_mut(PROGRAM_NAME)
                    .expect("XDP program")
                    .try_into()
                    .expect("an XDP program");
                xdp.attach(iface.as_c_str(), XdpMode::Driver)
                    .map(|_| ())
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(ebpf)
            })
            .expect("thread in the host namespace")
            .unwrap_or_else(|e| panic!("attach XDP to {} natively: {e}", host.host_if));
        PeerXdp {
            _ebpf: ebpf,
            _pins: pins,
        }
    }
}

fn service(v6: bool, port: u16) -> SocketAddr {
    if v6 {
        SocketAddr::new(IpAddr::V6(SERVICE_V6), port)
    } else {
        SocketAddr::new(IpAddr::V4(SERVICE_V4), port)
    }
}

/// One `[[upstreams]]` table.
fn upstream(name: &str, port: u16, extra: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nport = {port}\n{extra}\n")
}

/// Probed over TCP every 200 ms.
const TCP_PROBE: &str = "probe = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"";

fn transitions(c: &CircuitReport) -> Vec<(String, String, String)> {
    c.transitions
        .iter()
        .map(|t| (t.from.clone(), t.to.clone(), t.reason.clone()))
        .collect()
}

/// The transition history, one "at from → to: reason" per line.
fn describe_transitions(c: &CircuitReport) -> String {
    c.transitions
        .iter()
        .map(|t| format!("{:.2}s {} → {}: {}", t.at_seconds, t.from, t.to, t.reason))
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn assert_transition(c: &CircuitReport, index: usize, from: &str, to: &str, reason: &str) {
    let t = transitions(c);
    let got = t.get(index);
    assert!(
        got.is_some_and(|(f, to_, r)| f == from && to_ == to && r.contains(reason)),
        "{}: transition {index} should be {from} → {to} ({reason}); history:\n  {}",
        c.name,
        describe_transitions(c)
    );
}

// ---------------------------------------------------------------------------------------
// Breakers
// ---------------------------------------------------------------------------------------

const API: u16 = 18081;

pub fn stopped_server_opens_the_breaker_and_the_gate_refuses_fast() {
    let rig = Rig::start(
        "circ-stop",
        &upstream("api", API, &format!("{TCP_PROBE}\ngate = \"reset\"")),
    );
    let server = TcpServer::echo(&rig.topo.node, API).expect("server");
    rig.wait("api", "3 good probes", Duration::from_secs(5), |c| {
        c.probes_ok >= 3 && c.breaker.state == BreakerState::Closed
    });
    let baseline = rig.assert_connects(API, true, "healthy server");

    // Stop the server: the probes fail and the breaker opens.
    let stopped = Instant::now();
    server.stop();
    let (open, _) = rig.wait_state("api", BreakerState::Open, Duration::from_secs(5));
    let open_delay = stopped.elapsed();
    assert_transition(&open, 0, "closed", "open", "3 consecutive failures");
    assert!(open.probes_failed >= 3, "{open:#?}");
    // 3 probes 200 ms apart (about 0.7 s measured), with room for a loaded machine.
    assert!(
        open_delay < Duration::from_secs(2),
        "breaker opened {open_delay:?} after the server stopped"
    );

    // Open: the gate answers SYNs with RST at once — no waiting out SYN retransmits.
    let before = open.gate;
    let refusal = rig.assert_refused_fast(API, "open breaker");
    let after = rig.circuit("api");
    assert_eq!(
        after.gate.resets - before.resets,
        2,
        "both refusals are the gate's RSTs: {:?} → {:?}",
        before,
        after.gate
    );
    assert_eq!(after.gate.gated - before.gated, 2);
    assert_eq!(
        after.passive_failures, open.passive_failures,
        "no RST came from the node's stack"
    );

    // Half-open after the reset timeout; the trial probe fails (server still down): reopen.
    let (reopened, _) = rig.wait("api", "a failed trial", Duration::from_secs(6), |c| {
        c.transitions.len() >= 3 && c.breaker.state == BreakerState::Open
    });
    assert_transition(&reopened, 1, "open", "half_open", "reset timeout");
    assert_transition(&reopened, 2, "half_open", "open", "trial failed");
    let half_open_after = reopened.transitions[1].at_seconds - reopened.transitions[0].at_seconds;
    assert!(
        (1.9..3.0).contains(&half_open_after),
        "half-open {half_open_after:.2}s after opening, want the 2 s reset timeout"
    );

    // Restart the server: the next half-open's trials succeed and the breaker closes.
    let server = TcpServer::echo(&rig.topo.node, API).expect("server restarts");
    let mut seen = Vec::new();
    let (closed, _) = rig.wait(
        "api",
        "closed after a restart",
        Duration::from_secs(8),
        |c| {
            if seen.last() != Some(&c.breaker.state) {
                seen.push(c.breaker.state);
            }
            c.breaker.state == BreakerState::Closed
        },
    );
    assert_transition(&closed, 3, "open", "half_open", "reset timeout");
    assert_transition(&closed, 4, "half_open", "closed", "trials succeeded");
    let after_restart = rig.assert_connects(API, true, "closed again");
    println!(
        "api: connect {baseline:?} when healthy; breaker open {open_delay:?} after the server stopped; \
         refused by the gate in {refusal:?} (slowest of v4/v6); states seen after the restart {seen:?}; \
         connect {after_restart:?} after closing\n  {}",
        describe_transitions(&closed)
    );
    drop(server);
}

pub fn reset_gate_fails_fast_drop_gate_makes_clients_wait() {
    const FAST: u16 = 18082;
    const SLOW: u16 = 18083;
    let rig = Rig::start(
        "circ-gates",
        &[
            upstream("fast", FAST, &format!("{TCP_PROBE}\ngate = \"reset\"")),
            upstream("slow", SLOW, &format!("{TCP_PROBE}\ngate = \"drop\"")),
        ]
        .concat(),
    );
    let _fast = TcpServer::echo(&rig.topo.node, FAST).expect("server");
    let _slow = TcpServer::echo(&rig.topo.node, SLOW).expect("server");
    for name in ["fast", "slow"] {
        rig.wait(name, "a good probe", Duration::from_secs(5), |c| {
            c.probes_ok >= 1
        });
    }
    rig.assert_connects(FAST, true, "closed");
    // A connection established before the breaker opens keeps working through it.
    let (held, outcome, _) = rig.connect(false, SLOW, CONNECT_TIMEOUT);
    assert_eq!(outcome, Connect::Connected);
    let mut held = held.expect("stream");

    // One by its config name, one by its (unambiguous) port.
    for upstream in ["fast".to_owned(), SLOW.to_string()] {
        let msg = rig.ctl_text(&["circuit", "open", &upstream]);
        assert!(msg.contains("forced open"), "{msg}");
    }
    let fast = rig.circuit("fast");
    assert_eq!(fast.breaker.state, BreakerState::Open);
    assert!(
        fast.breaker.forced && fast.breaker.half_open_in_seconds.is_none(),
        "{:#?}",
        fast.breaker
    );

    // Servers are up, yet the gate refuses: reset → at once, drop → the client waits.
    let refusal = rig.assert_refused_fast(FAST, "forced open, gate = reset");
    let slow_before = rig.circuit("slow").gate;
    let (_, outcome, waited) = rig.connect(false, SLOW, CONNECT_TIMEOUT);
    assert_eq!(
        outcome,
        Connect::TimedOut,
        "gate = drop: the connect must time out, took {waited:?}"
    );
    assert!(waited >= CONNECT_TIMEOUT);
    let slow_after = rig.circuit("slow").gate;
    assert!(
        slow_after.gated > slow_before.gated,
        "the gate dropped the SYN: {slow_before:?} → {slow_after:?}"
    );
    assert_eq!(
        slow_after.resets, slow_before.resets,
        "gate = drop never sends RST"
    );
    echo_roundtrip(&mut held, b"still here", Duration::from_secs(2))
        .expect("an established flow passes the open gate");

    for (port, name) in [(FAST, "fast"), (SLOW, "slow")] {
        rig.ctl_text(&["circuit", "reset", name]);
        let c = rig.circuit(name);
        assert_eq!(c.breaker.state, BreakerState::Closed);
        assert_transition(&c, 1, "open", "closed", "manual reset");
        rig.assert_connects(port, true, "after a manual reset");
    }
    println!(
        "forced open: gate = reset refused in {refusal:?}; gate = drop left the client waiting {waited:?} (its timeout)"
    );
}

pub fn http_500_trips_the_http_breaker() {
    const WEB: u16 = 18084;
    let rig = Rig::start(
        "circ-http",
        &upstream(
            "web",
            WEB,
            "probe = \"http\"\npath = \"/healthz\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\ngate = \"reset\"",
        ),
    );
    let status = Arc::new(AtomicU16::new(200));
    let _server = TcpServer::http(&rig.topo.node, WEB, status.clone()).expect("server");
    rig.wait("web", "3 good probes", Duration::from_secs(5), |c| {
        c.probes_ok >= 3 && c.breaker.state == BreakerState::Closed
    });
    let get = |rig: &Rig, v6: bool| {
        let (s, outcome, _) = rig.connect(v6, WEB, CONNECT_TIMEOUT);
        assert_eq!(outcome, Connect::Connected);
        http_status(s.expect("stream"), "/", Duration::from_secs(2)).expect("HTTP answer")
    };
    assert_eq!(get(&rig, false), 200);

    status.store(500, Ordering::Relaxed);
    let flipped = Instant::now();
    let (open, _) = rig.wait_state("web", BreakerState::Open, Duration::from_secs(5));
    let open_delay = flipped.elapsed();
    assert_transition(&open, 0, "closed", "open", "3 consecutive failures");
    let err = open
        .last_probe
        .as_ref()
        .and_then(|p| p.error.clone())
        .unwrap_or_default();
    assert!(err.contains("500"), "last probe error {err:?}");
    let refusal = rig.assert_refused_fast(WEB, "HTTP 500");

    status.store(200, Ordering::Relaxed);
    let (closed, _) = rig.wait_state("web", BreakerState::Closed, Duration::from_secs(8));
    assert_transition(&closed, 1, "open", "half_open", "reset timeout");
    assert_transition(&closed, 2, "half_open", "closed", "trials succeeded");
    assert_eq!(get(&rig, true), 200);
    println!(
        "web: open {open_delay:?} after the server turned to 500; refused in {refusal:?}\n  {}",
        describe_transitions(&closed)
    );
}

// ---------------------------------------------------------------------------------------
// Bulkhead
// ---------------------------------------------------------------------------------------

pub fn bulkhead_sheds_past_max_connections() {
    const POOL: u16 = 18085;
    const K: usize = 4;
    // No probes: their connections would count against the cap for a moment.
    let rig = Rig::start(
        "circ-bulkhead",
        &upstream(
            "pool",
            POOL,
            &format!("probe = \"none\"\ngate = \"reset\"\nmax_connections = {K}"),
        ),
    );
    let server = TcpServer::echo(&rig.topo.node, POOL).expect("server");
    rig.wait("pool", "socket statistics", Duration::from_secs(5), |c| {
        c.established == Some(0) && c.max_connections == Some(K as u32)
    });

    let mut held = Vec::new();
    for i in 0..K {
        let (s, outcome, _) = rig.connect(i % 2 == 1, POOL, CONNECT_TIMEOUT);
        assert_eq!(outcome, Connect::Connected, "connection {i} of {K}");
        held.push(s.expect("stream"));
    }
    let (full, took) = rig.wait("pool", "shedding", Duration::from_secs(3), |c| {
        c.shedding == Some(Shedding::Connections)
    });
    assert_eq!(full.established, Some(K as u32), "{full:#?}");
    assert_eq!(server.open_connections(), K as u64);

    let refusal = rig.assert_refused_fast(POOL, "bulkhead full");
    let shed = rig.circuit("pool").gate;
    assert_eq!(shed.shed - full.gate.shed, 2, "{:?} → {shed:?}", full.gate);
    assert_eq!(shed.resets - full.gate.resets, 2);
    for (i, s) in held.iter_mut().enumerate() {
        echo_roundtrip(s, b"held", Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("held connection {i}: {e}"));
    }
    assert_eq!(
        rig.circuit("pool").breaker.state,
        BreakerState::Closed,
        "shedding is not a breaker failure"
    );

    drop(held);
    let (_, cleared) = rig.wait("pool", "room again", Duration::from_secs(3), |c| {
        c.shedding.is_none()
    });
    rig.assert_connects(POOL, true, "bulkhead has room");
    println!(
        "pool: shedding {took:?} after {K} connections; next connect refused in {refusal:?}; cleared {cleared:?} after closing them"
    );
}

// ---------------------------------------------------------------------------------------
// Chaos
// ---------------------------------------------------------------------------------------

/// Bounds on the count of `n` Bernoulli(`p`) trials at `sigmas` standard deviations.
fn binomial_bounds(n: u64, p: f64, sigmas: f64) -> (u64, u64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (
        ((mean - sigmas * sd).floor()) as u64,
        ((mean + sigmas * sd).ceil()) as u64,
    )
}

pub fn chaos_drops_about_half_and_expires() {
    const DNS: u16 = 15353;
    let rig = Rig::start(
        "circ-chaos",
        &[
            upstream("dns", DNS, "protocol = \"udp\"\nprobe = \"none\""),
            upstream("api", API, &format!("{TCP_PROBE}\ngate = \"reset\"")),
        ]
        .concat(),
    );
    let _server = TcpServer::echo(&rig.topo.node, API).expect("server");
    rig.wait("api", "a good probe", Duration::from_secs(5), |c| {
        c.probes_ok >= 1
    });
    let src = IpAddr::V4(rig.client().v4(1));
    let send = |n: u64| -> (u64, u64) {
        let sink = UdpSink::start(&rig.topo.node, DNS, 1).expect("sink");
        let flow = UdpFlow {
            src,
            dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), DNS),
            rate_pps: 5000.0,
            duration: Duration::from_secs(2),
            max_packets: n,
            payload_len: 32,
            cpu: None,
            progress: None,
        };
        let sent = run_flows(&rig.client().ns, &[flow], &Arc::new(AtomicBool::new(false)))
            .expect("flow")[0]
            .sent;
        let got = sink
            .finish(Duration::from_secs(2))
            .get(&src)
            .copied()
            .unwrap_or(0);
        (sent, got)
    };

    // Drop 50 % of the datagrams to the UDP upstream for 3 s.
    const N: u64 = 1000;
    let started = Instant::now();
    let msg = rig.ctl_text(&[
        "chaos",
        "start",
        "--upstream",
        "dns",
        "--drop",
        "0.5",
        "--for",
        "3s",
    ]);
    assert!(msg.contains("drop 50%"), "{msg}");
    let status = rig.status();
    assert!(
        status.chaos.iter().any(|c| c.target == "upstream:dns"
            && (c.drop_ratio - 0.5).abs() < 1e-9
            && c.expires_in_seconds > 2.0),
        "status does not show the chaos: {:?}",
        status.chaos
    );
    let human = rig.ctl_text(&["status"]);
    assert!(
        human.contains("CHAOS") && human.contains("upstream:dns"),
        "{human}"
    );
    let before = rig.circuit("dns").gate;
    let (sent, got) = send(N);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the datagrams took past the chaos window"
    );
    assert_eq!(sent, N);
    let dropped = sent - got;
    let (lo, hi) = binomial_bounds(N, 0.5, 4.5);
    assert!(
        (lo..=hi).contains(&dropped),
        "chaos at 50% dropped {dropped} of {N}, want {lo}..={hi} (4.5 sigma)"
    );
    let after = rig.circuit("dns").gate;
    assert_eq!(
        after.chaos_dropped - before.chaos_dropped,
        dropped,
        "the gate's count matches what went missing"
    );

    // It expires by itself: status clears and everything passes again.
    let (_, expired) = rig.wait("dns", "chaos expiry", Duration::from_secs(6), |c| {
        c.chaos.is_none()
    });
    assert!(rig.status().chaos.is_empty());
    let expired_at = started.elapsed();
    assert!(
        expired_at >= Duration::from_secs(3),
        "chaos ended after {expired_at:?}, before its 3 s"
    );
    let (sent2, got2) = send(300);
    assert_eq!(
        (sent2, got2),
        (300, 300),
        "after expiry every datagram arrives"
    );

    // Reset 50 % of new connections: refused at once (never a timeout), the rest connect.
    const M: usize = 200;
    rig.ctl_text(&[
        "chaos",
        "start",
        "--upstream",
        "api",
        "--reset",
        "0.5",
        "--for",
        "5s",
    ]);
    let before = rig.circuit("api").gate;
    let outcomes =
        connect_many(&rig.client().ns, service(false, API), M, CONNECT_TIMEOUT).expect("connects");
    let refused: Vec<Duration> = outcomes
        .iter()
        .filter(|(o, _)| *o == Connect::Refused)
        .map(|(_, d)| *d)
        .collect();
    let connected = outcomes
        .iter()
        .filter(|(o, _)| *o == Connect::Connected)
        .count();
    assert_eq!(
        refused.len() + connected,
        M,
        "every connect either connects or is refused: {outcomes:?}"
    );
    let (lo, hi) = binomial_bounds(M as u64, 0.5, 4.5);
    assert!(
        (lo..=hi).contains(&(refused.len() as u64)),
        "chaos at 50% reset {} of {M}, want {lo}..={hi}",
        refused.len()
    );
    let slowest = refused.iter().max().copied().unwrap_or_default();
    assert!(slowest < FAST_REFUSAL, "a chaos reset took {slowest:?}");
    let after = rig.circuit("api").gate;
    assert_eq!(after.chaos_reset - before.chaos_reset, refused.len() as u64);
    // Stopped by hand: at once.
    rig.ctl_text(&["chaos", "stop"]);
    assert!(rig.status().chaos.is_empty());
    let outcomes =
        connect_many(&rig.client().ns, service(true, API), 50, CONNECT_TIMEOUT).expect("connects");
    assert!(
        outcomes.iter().all(|(o, _)| *o == Connect::Connected),
        "after chaos stop: {outcomes:?}"
    );
    println!(
        "chaos drop 50%: {dropped}/{N} datagrams dropped (bounds {:?}); status cleared {expired:?} after the datagrams, \
         {expired_at:?} after the start; chaos reset 50%: {}/{M} connects refused (bounds {lo}..={hi}), slowest refusal {slowest:?}",
        binomial_bounds(N, 0.5, 4.5),
        refused.len()
    );
}

// ---------------------------------------------------------------------------------------
// The passive signal
// ---------------------------------------------------------------------------------------

pub fn refusals_seen_at_tc_egress_open_the_breaker_without_probes() {
    const QUIET: u16 = 18086;
    const QUIET_UDP: u16 = 15354;
    let rig = Rig::start(
        "circ-passive",
        &[
            upstream("quiet", QUIET, "probe = \"none\"\ngate = \"reset\""),
            upstream(
                "quietudp",
                QUIET_UDP,
                "protocol = \"udp\"\nprobe = \"none\"",
            ),
        ]
        .concat(),
    );
    // Nothing listens: the node's own stack answers every SYN with a RST and every datagram
    // with an ICMP port unreachable, which the TC egress program counts.
    let (c, _) = rig.wait_state("quiet", BreakerState::Closed, Duration::from_secs(5));
    assert_eq!(c.probes_ok + c.probes_failed, 0);
    let mut took = Vec::new();
    for i in 0..5 {
        let (_, outcome, t) = rig.connect(i % 2 == 1, QUIET, CONNECT_TIMEOUT);
        assert_eq!(outcome, Connect::Refused, "connect {i} to a closed port");
        took.push(t);
    }
    let (open, _) = rig.wait_state("quiet", BreakerState::Open, Duration::from_secs(2));
    assert_transition(&open, 0, "closed", "open", "3 consecutive failures");
    assert!(open.passive_failures >= 3, "{open:#?}");
    assert_eq!(open.probes_ok + open.probes_failed, 0, "no probe ran");
    // Every refusal came from the stack (seen at egress) or, once open, from the gate.
    assert_eq!(open.passive_failures + open.gate.resets, 5, "{open:#?}");
    let refusal = rig.assert_refused_fast(QUIET, "opened by the passive signal");

    // UDP: 5 datagrams to a closed port (within the kernel's ICMP burst of 6 per peer),
    // from two sources in turn: one source's refusals in a row count once.
    let host = rig.client();
    let src = IpAddr::V4(host.v4(2));
    let other = IpAddr::V4(host.v4(3));
    host.ns
        .run(move || -> std::io::Result<()> {
            let socks = [
                std::net::UdpSocket::bind(SocketAddr::new(src, 0))?,
                std::net::UdpSocket::bind(SocketAddr::new(other, 0))?,
            ];
            for i in 0..5 {
                socks[i % 2].send_to(b"anyone?", service(false, QUIET_UDP))?;
            }
            Ok(())
        })
        .expect("client thread")
        .expect("send datagrams");
    let (open_udp, _) = rig.wait_state("quietudp", BreakerState::Open, Duration::from_secs(2));
    assert_transition(&open_udp, 0, "closed", "open", "3 consecutive failures");
    assert!(open_udp.passive_failures >= 3, "{open_udp:#?}");
    // Open: datagrams to the port are dropped at the gate, before the stack sees them.
    let before = open_udp.gate.gated;
    let sink = UdpSink::start(&rig.topo.node, QUIET_UDP, 1).expect("sink");
    let flow = UdpFlow {
        src,
        dst: service(false, QUIET_UDP),
        rate_pps: 1000.0,
        duration: Duration::from_secs(1),
        max_packets: 20,
        payload_len: 16,
        cpu: None,
        progress: None,
    };
    run_flows(&host.ns, &[flow], &Arc::new(AtomicBool::new(false))).expect("flow");
    let got = sink
        .finish(Duration::from_secs(1))
        .get(&src)
        .copied()
        .unwrap_or(0);
    assert_eq!(got, 0, "an open UDP gate passed datagrams");
    assert_eq!(rig.circuit("quietudp").gate.gated - before, 20);
    println!(
        "quiet: kernel refusals took {took:?}; opened after {} passive failures, {} refusals by the gate; gate refusal {refusal:?}; \
         quietudp opened after {} ICMP port unreachables",
        open.passive_failures, open.gate.resets, open_udp.passive_failures
    );
}
