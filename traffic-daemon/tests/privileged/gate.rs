//! Gate tests: the per-port rules of the XDP program — circuit gates (closed, open, half-open),
//! the bulkhead, the per-source new-connection limit, the class override, fault injection and
//! monitor mode — run with BPF_PROG_TEST_RUN on crafted frames, and the TCP RST+ACK the gate
//! builds in place checked byte by byte. The TC egress program (the breakers' passive
//! signal) is run the same way on replies leaving from rule ports.
//!
//! Every case is a frame, the action it must get, the one counter slot (row, reason,
//! monitored) that must move by exactly one packet and the frame's bytes, and the exact
//! change of the port statistics ([`PortStats`]) per rule slot; nothing else may move.
//!
//! Port rules are written straight into the maps (the daemon's breakers fill them in
//! production), with the global "has ports" flag set as `plan::Desired::with_ports` does.
//!
//! The harness is the shared one (`support::bpf::Lab`): the daemon's `Kernel` on the test's
//! own pinned maps; `Kernel::test_run_out` returns the frame the program left (the RST) and
//! `Kernel::test_run_egress` runs the TC egress program.
//!
//! Privileged and stateful: run one at a time through `cargo xtask test`, or
//!
//! ```text
//! cargo test -p traffic-daemon --test privileged -- gate::
//! ```
//!
//! Limits and budgets use intervals of 10 s, so nothing refills while a test runs.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::support::bpf::{
    Lab, NODE4, NODE6, SOURCES, Slot, XDP_DROP, XDP_PASS, XDP_TX, verdict_problems,
};
use anyhow::{Context as _, Result, bail, ensure};
use traffic_common::{
    Counter, EgressStats, GLOBAL_HAS_PORTS, Gate, Limit, PORT_BUCKET, PORT_CLASS_OVERRIDE,
    PORT_GATE_RESET, PORT_SHED, PortRule, PortStats, Reason, proto,
};
use traffic_daemon::{
    dataplane::Dataplane as _,
    plan::{Desired, Write, diff},
};
use traffic_testkit::packet::{
    Ext, Frame, Transport, internet_checksum, ip_proto, l4_checksum, tcp_flags,
};

const TC_ACT_OK: u32 = 0;

/// Two clients of each family (different /64s, the default IPv6 aggregation).
const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 5, 1);
const B4: Ipv4Addr = Ipv4Addr::new(198, 18, 6, 1);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 1);
const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 6, 0, 0, 0, 0, 1);

/// Client port of every crafted connection.
const CPORT: u16 = 40000;
/// Ports with rules in the tests (and one without).
const WEB: u16 = 8080;
const TLS: u16 = 8443;
const SSH: u16 = 2222;
const DNS: u16 = 5353;
const OTHER: u16 = 8081;

/// One second, in the kernel's nanoseconds.
const SEC: u64 = 1_000_000_000;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// What one run did.
struct Run {
    action: u32,
    out: Vec<u8>,
    /// Counter slots that moved, with by how much.
    moved: Vec<(usize, Counter)>,
    /// Port statistics slots that moved, with by how much.
    stats: Vec<(u32, PortStats)>,
}

fn stats_delta(a: &PortStats, b: &PortStats) -> PortStats {
    PortStats {
        syns: b.syns.wrapping_sub(a.syns),
        gated: b.gated.wrapping_sub(a.gated),
        resets: b.resets.wrapping_sub(a.resets),
        shed: b.shed.wrapping_sub(a.shed),
        chaos_dropped: b.chaos_dropped.wrapping_sub(a.chaos_dropped),
        chaos_reset: b.chaos_reset.wrapping_sub(a.chaos_reset),
        syn_limited: b.syn_limited.wrapping_sub(a.syn_limited),
        trials: b.trials.wrapping_sub(a.trials),
    }
}

/// The program on its own pinned maps, configured from config text.
fn gate_lab(test: &str, config: &str) -> Result<Lab> {
    Lab::build(test, SOURCES, config, |d, _| d)
}

impl Lab {
    /// What the lab last wrote.
    fn applied(&self) -> &Desired {
        self.applied.as_ref().expect("the lab is configured")
    }

    /// Replace the port rules (and the global flag with them), rewriting every rule as the
    /// daemon does on a gate change: kernel-owned state (the half-open budget) starts over.
    fn set_ports(&mut self, rules: &[(u16, u8, PortRule)]) -> Result<()> {
        let ports: BTreeMap<(u16, u8), PortRule> =
            rules.iter().map(|(p, pr, r)| ((*p, *pr), *r)).collect();
        let applied = self.applied().clone();
        let want = applied.clone().with_ports(ports);
        let mut writes = diff(Some(&applied), &want);
        writes.extend(want.ports.iter().map(|(k, r)| Write::Port(*k, *r)));
        self.kernel.apply(&writes).context("write port rules")?;
        self.applied = Some(want);
        Ok(())
    }

    /// The kernel clock.
    fn now_ns(&self) -> u64 {
        self.kernel.now_ns()
    }

    /// Run one frame: action, output frame, counters and port statistics that moved.
    fn run_ports(&self, frame: &[u8]) -> Result<Run> {
        let s0 = self.kernel.port_stats()?;
        let (action, out, moved) = self.run_out(frame)?;
        let s1 = self.kernel.port_stats()?;
        let stats = s0
            .iter()
            .zip(&s1)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| (i as u32, stats_delta(a, b)))
            .collect();
        Ok(Run {
            action,
            out,
            moved,
            stats,
        })
    }

    /// Run a frame; fail unless it got `action`, moved exactly `slot` by one packet and the
    /// frame's bytes, and changed the port statistics by exactly `stats`. The output frame.
    fn expect_ports(
        &self,
        name: &str,
        frame: &[u8],
        action: u32,
        slot: Slot,
        stats: &[(u32, PortStats)],
    ) -> Result<Vec<u8>> {
        let run = self.run_ports(frame)?;
        let mut wrong = verdict_problems(frame.len(), run.action, &run.moved, action, slot);
        let mut want_stats: Vec<(u32, PortStats)> = stats.to_vec();
        want_stats.sort_by_key(|(s, _)| *s);
        if run.stats != want_stats {
            wrong.push(format!(
                "port stats moved {:?}, want {:?}",
                run.stats, want_stats
            ));
        }
        if !wrong.is_empty() {
            bail!("{name}: {}", wrong.join("; "));
        }
        Ok(run.out)
    }
}

/// One row of a gate table: description, input frame, the action it must get, the one
/// counter slot it must move and the exact change of the port statistics per rule slot.
struct Row {
    name: String,
    frame: Vec<u8>,
    action: u32,
    slot: Slot,
    stats: Vec<(u32, PortStats)>,
}

fn row(
    name: impl Into<String>,
    frame: Vec<u8>,
    action: u32,
    slot: Slot,
    stats: &[(u32, PortStats)],
) -> Row {
    Row {
        name: name.into(),
        frame,
        action,
        slot,
        stats: stats.to_vec(),
    }
}

impl Lab {
    /// Run the rows in order on the lab's shared state; stop at the first that goes wrong.
    fn rows(&self, rows: &[Row]) -> Result<()> {
        for r in rows {
            self.expect_ports(&r.name, &r.frame, r.action, r.slot, &r.stats)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Frames, rules, statistics
// ---------------------------------------------------------------------------------------

fn node_of(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => IpAddr::V4(NODE4),
        IpAddr::V6(_) => IpAddr::V6(NODE6),
    }
}

/// A TCP segment from `src` to the node with `flags`.
fn tcp(src: IpAddr, dport: u16, flags: u8) -> Frame {
    Frame::ip(src, node_of(src))
        .tcp(CPORT, dport)
        .tcp_flags(flags)
}

/// A new connection: SYN without ACK.
fn syn(src: IpAddr, dport: u16) -> Vec<u8> {
    tcp(src, dport, tcp_flags::SYN).build()
}

/// A segment of an established flow.
fn ack(src: IpAddr, dport: u16) -> Vec<u8> {
    tcp(src, dport, tcp_flags::ACK)
        .payload(b"GET / HTTP/1.1\r\n")
        .build()
}

fn udp(src: IpAddr, dport: u16) -> Vec<u8> {
    Frame::ip(src, node_of(src))
        .udp(CPORT, dport)
        .payload(b"query")
        .build()
}

fn with_seq(mut f: Frame, seq: u32) -> Frame {
    if let Transport::Tcp(t) = f.transport_mut() {
        t.seq = seq;
    }
    f
}

fn with_tcp_options(mut f: Frame, options: &[u8]) -> Frame {
    if let Transport::Tcp(t) = f.transport_mut() {
        t.options = options.to_vec();
    }
    f
}

/// A port rule in `slot` with a gate and flags.
fn rule(slot: u32, gate: Gate, flags: u32) -> PortRule {
    PortRule {
        flags,
        gate: gate as u32,
        slot,
        ..PortRule::default()
    }
}

/// `n` per interval of 10 s, all available at once.
fn budget(n: u64) -> Limit {
    Limit {
        interval: 10 * SEC,
        tolerance: n * 10 * SEC,
    }
}

/// The kernel's encoding of a ratio of 1.
const ALWAYS: u32 = u32::MAX;

fn ps() -> PortStats {
    PortStats::default()
}

/// PortStats of one new connection refused by the gate.
fn gated(reset: bool) -> PortStats {
    PortStats {
        syns: 1,
        gated: 1,
        resets: u64::from(reset),
        ..ps()
    }
}

fn seen_syn() -> PortStats {
    PortStats { syns: 1, ..ps() }
}

fn clients() -> [IpAddr; 2] {
    [IpAddr::V4(A4), IpAddr::V6(A6)]
}

const CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]

[classes.default]
packets = { rate = 1, burst = 1000 }

[classes.other]
packets = { rate = 1, burst = 1000 }
"#;

fn monitor_config() -> String {
    CONFIG.replace("[daemon]\n", "[daemon]\nmode = \"monitor\"\n")
}

// ---------------------------------------------------------------------------------------
// Gates
// ---------------------------------------------------------------------------------------

pub fn closed_gate_passes_everything() -> Result<()> {
    let mut lab = gate_lab("gate-closed", CONFIG)?;
    lab.set_ports(&[
        (WEB, proto::TCP, rule(0, Gate::Closed, PORT_GATE_RESET)),
        (DNS, proto::UDP, rule(1, Gate::Closed, 0)),
    ])?;
    let pass = Slot::new(lab.class("default"), Reason::Pass);
    let rows: Vec<Row> = clients()
        .into_iter()
        .flat_map(|src| {
            [
                row(
                    format!("{src} SYN"),
                    syn(src, WEB),
                    XDP_PASS,
                    pass,
                    &[(0, seen_syn())],
                ),
                row(format!("{src} ACK"), ack(src, WEB), XDP_PASS, pass, &[]),
                row(format!("{src} UDP"), udp(src, DNS), XDP_PASS, pass, &[]),
                row(
                    format!("{src} SYN elsewhere"),
                    syn(src, OTHER),
                    XDP_PASS,
                    pass,
                    &[],
                ),
            ]
        })
        .collect();
    lab.rows(&rows)
}

pub fn open_gate_refuses_new_connections_only() -> Result<()> {
    let mut lab = gate_lab("gate-open", CONFIG)?;
    lab.set_ports(&[
        (WEB, proto::TCP, rule(0, Gate::Open, 0)),
        (TLS, proto::TCP, rule(1, Gate::Open, PORT_GATE_RESET)),
        (DNS, proto::UDP, rule(2, Gate::Open, PORT_GATE_RESET)),
    ])?;
    let d = lab.class("default");
    let pass = Slot::new(d, Reason::Pass);
    let gate = Slot::new(d, Reason::Gate);
    let mut rows = Vec::new();
    for src in clients() {
        rows.push(row(
            format!("{src} SYN, drop gate"),
            syn(src, WEB),
            XDP_DROP,
            gate,
            &[(0, gated(false))],
        ));
        let reset = Slot::new(d, Reason::GateReset);
        rows.push(row(
            format!("{src} SYN, reset gate"),
            syn(src, TLS),
            XDP_TX,
            reset,
            &[(1, gated(true))],
        ));
        // Established flows and everything else that is not a new connection pass.
        for (what, flags) in [
            ("ACK", tcp_flags::ACK),
            ("SYN+ACK", tcp_flags::SYN | tcp_flags::ACK),
            ("RST", tcp_flags::RST),
            ("FIN+ACK", tcp_flags::FIN | tcp_flags::ACK),
            ("PSH+ACK", tcp_flags::PSH | tcp_flags::ACK),
        ] {
            for port in [WEB, TLS] {
                let f = tcp(src, port, flags).build();
                rows.push(row(
                    format!("{src} {what} to {port}"),
                    f,
                    XDP_PASS,
                    pass,
                    &[],
                ));
            }
        }
        let udp_gated = PortStats { gated: 1, ..ps() };
        rows.extend([
            // UDP to an open UDP port is refused, and never with a RST.
            row(
                format!("{src} UDP"),
                udp(src, DNS),
                XDP_DROP,
                gate,
                &[(2, udp_gated)],
            ),
            // The rules are per (port, protocol): UDP to the TCP ports and TCP to the UDP
            // port pass.
            row(
                format!("{src} UDP to a TCP rule"),
                udp(src, TLS),
                XDP_PASS,
                pass,
                &[],
            ),
            row(
                format!("{src} SYN to a UDP rule"),
                syn(src, DNS),
                XDP_PASS,
                pass,
                &[],
            ),
            row(
                format!("{src} SYN elsewhere"),
                syn(src, OTHER),
                XDP_PASS,
                pass,
                &[],
            ),
        ]);
    }
    lab.rows(&rows)?;
    // Without the global flag the port table is not consulted at all.
    let mut g = lab.applied().global;
    g.flags &= !GLOBAL_HAS_PORTS;
    lab.kernel.apply(&[Write::Global(g)])?;
    lab.expect_ports(
        "SYN without the has-ports flag",
        &syn(IpAddr::V4(A4), WEB),
        XDP_PASS,
        pass,
        &[],
    )?;
    Ok(())
}

pub fn half_open_admits_its_budget_then_gates() -> Result<()> {
    let mut lab = gate_lab("gate-half", CONFIG)?;
    let half = |n: u64| PortRule {
        half_open: budget(n),
        ..rule(0, Gate::HalfOpen, PORT_GATE_RESET)
    };
    lab.set_ports(&[(WEB, proto::TCP, half(3))])?;
    let d = lab.class("default");
    let pass = Slot::new(d, Reason::Pass);
    let trial = PortStats {
        syns: 1,
        trials: 1,
        ..ps()
    };
    // The budget is shared by all sources of both families.
    let sources = [
        IpAddr::V4(A4),
        IpAddr::V6(A6),
        IpAddr::V4(B4),
        IpAddr::V6(B6),
    ];
    for round in 0..2 {
        for (i, src) in sources.iter().enumerate() {
            let name = format!("round {round}: SYN {i} from {src}");
            if i < 3 {
                lab.expect_ports(&name, &syn(*src, WEB), XDP_PASS, pass, &[(0, trial)])?;
            } else {
                lab.expect_ports(
                    &name,
                    &syn(*src, WEB),
                    XDP_TX,
                    Slot::new(d, Reason::GateReset),
                    &[(0, gated(true))],
                )?;
            }
        }
        lab.expect_ports(
            &format!("round {round}: ACK"),
            &ack(IpAddr::V4(B4), WEB),
            XDP_PASS,
            pass,
            &[],
        )?;
        // The daemon rewrites the rule on every gate change: the budget starts over.
        lab.set_ports(&[(WEB, proto::TCP, half(3))])?;
    }
    // A half-open rule without a budget admits nothing.
    lab.set_ports(&[(
        WEB,
        proto::TCP,
        PortRule {
            half_open: Limit::default(),
            ..rule(0, Gate::HalfOpen, 0)
        },
    )])?;
    lab.expect_ports(
        "no budget",
        &syn(IpAddr::V4(A4), WEB),
        XDP_DROP,
        Slot::new(d, Reason::Gate),
        &[(0, gated(false))],
    )?;
    // Closed again: everything passes.
    lab.set_ports(&[(WEB, proto::TCP, rule(0, Gate::Closed, PORT_GATE_RESET))])?;
    for _ in 0..5 {
        lab.expect_ports(
            "closed",
            &syn(IpAddr::V4(A4), WEB),
            XDP_PASS,
            pass,
            &[(0, seen_syn())],
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Bulkhead, per-source limit, class override
// ---------------------------------------------------------------------------------------

pub fn bulkhead_sheds_new_connections_only() -> Result<()> {
    let mut lab = gate_lab("gate-shed", CONFIG)?;
    lab.set_ports(&[
        (WEB, proto::TCP, rule(0, Gate::Closed, PORT_SHED)),
        (
            TLS,
            proto::TCP,
            rule(1, Gate::Closed, PORT_SHED | PORT_GATE_RESET),
        ),
        (SSH, proto::TCP, rule(2, Gate::Open, PORT_SHED)),
    ])?;
    let d = lab.class("default");
    let pass = Slot::new(d, Reason::Pass);
    let shed = |reset: bool| PortStats {
        syns: 1,
        shed: 1,
        resets: u64::from(reset),
        ..ps()
    };
    let (bulkhead, gate) = (Slot::new(d, Reason::Bulkhead), Slot::new(d, Reason::Gate));
    let rows: Vec<Row> = clients()
        .into_iter()
        .flat_map(|src| {
            [
                row(
                    format!("{src} SYN shed"),
                    syn(src, WEB),
                    XDP_DROP,
                    bulkhead,
                    &[(0, shed(false))],
                ),
                row(
                    format!("{src} SYN shed with RST"),
                    syn(src, TLS),
                    XDP_TX,
                    bulkhead,
                    &[(1, shed(true))],
                ),
                row(format!("{src} ACK"), ack(src, WEB), XDP_PASS, pass, &[]),
                row(format!("{src} ACK"), ack(src, TLS), XDP_PASS, pass, &[]),
                // An open gate refuses before the bulkhead sheds.
                row(
                    format!("{src} SYN open and shed"),
                    syn(src, SSH),
                    XDP_DROP,
                    gate,
                    &[(2, gated(false))],
                ),
            ]
        })
        .collect();
    lab.rows(&rows)
}

pub fn per_source_new_connection_limit() -> Result<()> {
    let mut lab = gate_lab("gate-synlimit", CONFIG)?;
    // PORT_GATE_RESET set on purpose: a source over its limit is dropped, never answered.
    lab.set_ports(&[(
        SSH,
        proto::TCP,
        PortRule {
            syn_limit: budget(3),
            ..rule(0, Gate::Closed, PORT_GATE_RESET)
        },
    )])?;
    let d = lab.class("default");
    let pass = Slot::new(d, Reason::Pass);
    let limited = PortStats {
        syns: 1,
        syn_limited: 1,
        ..ps()
    };
    let over = Slot::new(d, Reason::PortRate);
    let mut rows = Vec::new();
    for (a, b) in [
        (IpAddr::V4(A4), IpAddr::V4(B4)),
        (IpAddr::V6(A6), IpAddr::V6(B6)),
    ] {
        for i in 0..3 {
            rows.push(row(
                format!("{a} SYN {i}"),
                syn(a, SSH),
                XDP_PASS,
                pass,
                &[(0, seen_syn())],
            ));
        }
        for i in 3..5 {
            rows.push(row(
                format!("{a} SYN {i}"),
                syn(a, SSH),
                XDP_DROP,
                over,
                &[(0, limited)],
            ));
        }
        rows.extend([
            row(format!("{a} ACK"), ack(a, SSH), XDP_PASS, pass, &[]),
            row(
                format!("{a} SYN to another port"),
                syn(a, OTHER),
                XDP_PASS,
                pass,
                &[],
            ),
            row(
                format!("{b} SYN"),
                syn(b, SSH),
                XDP_PASS,
                pass,
                &[(0, seen_syn())],
            ),
        ]);
    }
    lab.rows(&rows)?;
    // The limit lives in its own buckets, apart from the class's.
    let port_buckets = lab
        .kernel
        .buckets()?
        .into_iter()
        .filter(|(k, _)| k.class == PORT_BUCKET)
        .count();
    ensure!(
        port_buckets == 4,
        "want 4 per-port buckets (A4, B4, A6, B6), found {port_buckets}"
    );
    Ok(())
}

pub fn class_override_counts_in_the_overriding_class() -> Result<()> {
    let mut lab = gate_lab("gate-override", CONFIG)?;
    let (d, o) = (lab.class("default"), lab.class("other"));
    lab.set_ports(&[
        (
            WEB,
            proto::TCP,
            PortRule {
                class: o,
                ..rule(0, Gate::Closed, PORT_CLASS_OVERRIDE)
            },
        ),
        (
            TLS,
            proto::TCP,
            PortRule {
                class: o,
                ..rule(1, Gate::Open, PORT_CLASS_OVERRIDE)
            },
        ),
        // A slot with no class falls back to the default class.
        (
            SSH,
            proto::TCP,
            PortRule {
                class: 9,
                ..rule(2, Gate::Closed, PORT_CLASS_OVERRIDE)
            },
        ),
    ])?;
    let (d_pass, o_pass) = (Slot::new(d, Reason::Pass), Slot::new(o, Reason::Pass));
    let o_gate = Slot::new(o, Reason::Gate);
    let rows: Vec<Row> = clients()
        .into_iter()
        .flat_map(|src| {
            [
                row(
                    format!("{src} SYN"),
                    syn(src, WEB),
                    XDP_PASS,
                    o_pass,
                    &[(0, seen_syn())],
                ),
                row(format!("{src} ACK"), ack(src, WEB), XDP_PASS, o_pass, &[]),
                row(
                    format!("{src} UDP to the port"),
                    udp(src, WEB),
                    XDP_PASS,
                    d_pass,
                    &[],
                ),
                row(
                    format!("{src} SYN elsewhere"),
                    syn(src, OTHER),
                    XDP_PASS,
                    d_pass,
                    &[],
                ),
                row(
                    format!("{src} SYN gated"),
                    syn(src, TLS),
                    XDP_DROP,
                    o_gate,
                    &[(1, gated(false))],
                ),
                row(
                    format!("{src} SYN, override to an empty slot"),
                    syn(src, SSH),
                    XDP_PASS,
                    d_pass,
                    &[(2, seen_syn())],
                ),
            ]
        })
        .collect();
    lab.rows(&rows)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Fault injection and monitor mode
// ---------------------------------------------------------------------------------------

pub fn chaos_resets_drops_and_expires() -> Result<()> {
    let mut lab = gate_lab("gate-chaos", CONFIG)?;
    let d = lab.class("default");
    let pass = Slot::new(d, Reason::Pass);
    let chaos_rules = |drop: u32, reset: u32, until_ns: u64| {
        let c = traffic_common::Chaos {
            drop_ratio: drop,
            reset_ratio: reset,
            until_ns,
        };
        vec![
            (
                WEB,
                proto::TCP,
                PortRule {
                    chaos: c,
                    ..rule(0, Gate::Closed, 0)
                },
            ),
            (
                DNS,
                proto::UDP,
                PortRule {
                    chaos: c,
                    ..rule(1, Gate::Closed, 0)
                },
            ),
        ]
    };
    let later = lab.now_ns() + 60 * SEC;

    // Every new connection reset; nothing else touched.
    let r = chaos_rules(0, ALWAYS, later);
    lab.set_ports(&r)?;
    let chaos_reset = PortStats {
        syns: 1,
        chaos_reset: 1,
        resets: 1,
        ..ps()
    };
    for src in clients() {
        for i in 0..10 {
            lab.expect_ports(
                &format!("{src} SYN {i}, reset 100%"),
                &syn(src, WEB),
                XDP_TX,
                Slot::new(d, Reason::Chaos),
                &[(0, chaos_reset)],
            )?;
        }
        lab.expect_ports(
            &format!("{src} ACK, reset 100%"),
            &ack(src, WEB),
            XDP_PASS,
            pass,
            &[],
        )?;
        lab.expect_ports(
            &format!("{src} UDP, reset 100%"),
            &udp(src, DNS),
            XDP_PASS,
            pass,
            &[],
        )?;
    }

    // Every packet to the ports dropped.
    let r = chaos_rules(ALWAYS, 0, later);
    lab.set_ports(&r)?;
    let dropped = PortStats {
        chaos_dropped: 1,
        ..ps()
    };
    for src in clients() {
        let chaos = Slot::new(d, Reason::Chaos);
        for i in 0..10 {
            lab.expect_ports(
                &format!("{src} SYN {i}, drop 100%"),
                &syn(src, WEB),
                XDP_DROP,
                chaos,
                &[(0, PortStats { syns: 1, ..dropped })],
            )?;
            lab.expect_ports(
                &format!("{src} ACK {i}, drop 100%"),
                &ack(src, WEB),
                XDP_DROP,
                chaos,
                &[(0, dropped)],
            )?;
            lab.expect_ports(
                &format!("{src} UDP {i}, drop 100%"),
                &udp(src, DNS),
                XDP_DROP,
                chaos,
                &[(1, dropped)],
            )?;
        }
        lab.expect_ports(
            &format!("{src} SYN elsewhere, drop 100%"),
            &syn(src, OTHER),
            XDP_PASS,
            pass,
            &[],
        )?;
    }

    // A deadline in the past (or none) switches it off in the kernel, daemon or not. The
    // program reads the coarse clock (up to one tick behind), hence a past of 50 ms.
    for (what, until) in [("expired", lab.now_ns() - 50_000_000), ("no deadline", 0)] {
        let r = chaos_rules(ALWAYS, ALWAYS, until);
        lab.set_ports(&r)?;
        for src in clients() {
            lab.expect_ports(
                &format!("{src} SYN, {what}"),
                &syn(src, WEB),
                XDP_PASS,
                pass,
                &[(0, seen_syn())],
            )?;
            lab.expect_ports(
                &format!("{src} UDP, {what}"),
                &udp(src, DNS),
                XDP_PASS,
                pass,
                &[],
            )?;
        }
    }

    // Chaos on a class: every packet of the class dropped, port rule or not.
    let mut cc = lab.applied().classes[d as usize];
    cc.chaos = traffic_common::Chaos {
        drop_ratio: ALWAYS,
        reset_ratio: 0,
        until_ns: later,
    };
    lab.kernel.apply(&[Write::Class(d, cc)])?;
    for src in clients() {
        lab.expect_ports(
            &format!("{src} SYN, class chaos"),
            &syn(src, OTHER),
            XDP_DROP,
            Slot::new(d, Reason::Chaos),
            &[],
        )?;
        lab.expect_ports(
            &format!("{src} UDP, class chaos"),
            &udp(src, OTHER),
            XDP_DROP,
            Slot::new(d, Reason::Chaos),
            &[],
        )?;
    }
    Ok(())
}

pub fn monitor_mode_passes_gated_connections_and_counts_them() -> Result<()> {
    let mut lab = gate_lab("gate-monitor", &monitor_config())?;
    lab.set_ports(&[
        (WEB, proto::TCP, rule(0, Gate::Open, PORT_GATE_RESET)),
        (
            TLS,
            proto::TCP,
            rule(1, Gate::Closed, PORT_SHED | PORT_GATE_RESET),
        ),
        (
            SSH,
            proto::TCP,
            PortRule {
                syn_limit: budget(1),
                ..rule(2, Gate::Closed, 0)
            },
        ),
        (DNS, proto::UDP, rule(3, Gate::Open, 0)),
    ])?;
    let d = lab.class("default");
    let pass = Slot::new(d, Reason::Pass);
    let m = |reason| Slot::monitored(d, reason);
    let shed = PortStats {
        syns: 1,
        shed: 1,
        ..ps()
    };
    let limited = PortStats {
        syns: 1,
        syn_limited: 1,
        ..ps()
    };
    let udp_gated = PortStats { gated: 1, ..ps() };
    let rows: Vec<Row> = clients()
        .into_iter()
        .flat_map(|src| {
            [
                // Would have been reset: passes, counted in the monitor twin, no RST sent.
                row(
                    format!("{src} SYN, open"),
                    syn(src, WEB),
                    XDP_PASS,
                    m(Reason::GateReset),
                    &[(0, gated(false))],
                ),
                row(
                    format!("{src} SYN, shed"),
                    syn(src, TLS),
                    XDP_PASS,
                    m(Reason::Bulkhead),
                    &[(1, shed)],
                ),
                row(
                    format!("{src} SYN 1, limited"),
                    syn(src, SSH),
                    XDP_PASS,
                    pass,
                    &[(2, seen_syn())],
                ),
                row(
                    format!("{src} SYN 2, limited"),
                    syn(src, SSH),
                    XDP_PASS,
                    m(Reason::PortRate),
                    &[(2, limited)],
                ),
                row(
                    format!("{src} UDP, open"),
                    udp(src, DNS),
                    XDP_PASS,
                    m(Reason::Gate),
                    &[(3, udp_gated)],
                ),
                row(
                    format!("{src} ACK, open"),
                    ack(src, WEB),
                    XDP_PASS,
                    pass,
                    &[],
                ),
            ]
        })
        .collect();
    lab.rows(&rows)
}

/// Monitor mode should count what enforcing would do: a half-open gate admits its budget
/// and only the connections past it are would-be refusals.
pub fn monitor_mode_half_open_counts_like_enforce() -> Result<()> {
    let mut lab = gate_lab("gate-monitor-half", &monitor_config())?;
    lab.set_ports(&[(
        WEB,
        proto::TCP,
        PortRule {
            half_open: budget(2),
            ..rule(0, Gate::HalfOpen, 0)
        },
    )])?;
    let d = lab.class("default");
    let src = IpAddr::V4(A4);
    for i in 0..2 {
        lab.expect_ports(
            &format!("trial {i}"),
            &syn(src, WEB),
            XDP_PASS,
            Slot::new(d, Reason::Pass),
            &[(
                0,
                PortStats {
                    syns: 1,
                    trials: 1,
                    ..ps()
                },
            )],
        )?;
    }
    lab.expect_ports(
        "past the budget",
        &syn(src, WEB),
        XDP_PASS,
        Slot::monitored(d, Reason::Gate),
        &[(0, gated(false))],
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The RST itself
// ---------------------------------------------------------------------------------------

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Everything wrong with `rst` as the answer to `syn` (a frame whose L3 header starts at
/// `l3`).
fn reset_problems(syn: &[u8], rst: &[u8], l3: usize) -> Vec<String> {
    let mut p = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            p.push(what);
        }
    };
    let v6 = syn[l3] >> 4 == 6;
    let l3_len = if v6 { 40 } else { 20 };
    let l4 = l3 + l3_len;
    // What the SYN said.
    let (src, dst, ip_payload) = if v6 {
        let s: [u8; 16] = syn[l3 + 8..l3 + 24].try_into().unwrap_or_default();
        let d: [u8; 16] = syn[l3 + 24..l3 + 40].try_into().unwrap_or_default();
        (
            IpAddr::from(s),
            IpAddr::from(d),
            usize::from(be16(syn, l3 + 4)),
        )
    } else {
        let s: [u8; 4] = syn[l3 + 12..l3 + 16].try_into().unwrap_or_default();
        let d: [u8; 4] = syn[l3 + 16..l3 + 20].try_into().unwrap_or_default();
        (
            IpAddr::from(s),
            IpAddr::from(d),
            usize::from(be16(syn, l3 + 2)) - 20,
        )
    };
    let syn_seq = be32(syn, l4 + 4);
    let syn_doff = usize::from(syn[l4 + 12] >> 4) * 4;
    let syn_data = (ip_payload - syn_doff) as u32;

    check(
        rst.len() == l4 + 20,
        format!(
            "frame length {}, want L2 {l3} + L3 {l3_len} + 20",
            rst.len()
        ),
    );
    if rst.len() < l4 + 20 {
        return p;
    }
    check(
        rst[0..6] == syn[6..12],
        "destination MAC is not the SYN's source".into(),
    );
    check(
        rst[6..12] == syn[0..6],
        "source MAC is not the SYN's destination".into(),
    );
    check(
        rst[12..l3] == syn[12..l3],
        "VLAN tags / ethertype changed".into(),
    );
    let (rsrc, rdst) = if v6 {
        check(rst[l3] >> 4 == 6, "IP version".into());
        check(
            be16(rst, l3 + 4) == 20,
            format!("IPv6 payload length {}, want 20", be16(rst, l3 + 4)),
        );
        check(
            rst[l3 + 6] == ip_proto::TCP,
            format!("next header {}", rst[l3 + 6]),
        );
        check(
            rst[l3 + 7] == 64,
            format!("hop limit {}, want 64", rst[l3 + 7]),
        );
        let s: [u8; 16] = rst[l3 + 8..l3 + 24].try_into().unwrap_or_default();
        let d: [u8; 16] = rst[l3 + 24..l3 + 40].try_into().unwrap_or_default();
        (IpAddr::from(s), IpAddr::from(d))
    } else {
        check(
            rst[l3] == 0x45,
            format!("version/IHL {:#x}, want 0x45", rst[l3]),
        );
        check(
            be16(rst, l3 + 2) == 40,
            format!("IPv4 total length {}, want 40", be16(rst, l3 + 2)),
        );
        check(rst[l3 + 8] == 64, format!("TTL {}, want 64", rst[l3 + 8]));
        check(
            rst[l3 + 9] == ip_proto::TCP,
            format!("protocol {}", rst[l3 + 9]),
        );
        check(
            be16(rst, l3 + 6) & 0x3fff == 0,
            "fragment offset / MF set".into(),
        );
        check(
            internet_checksum(&rst[l3..l3 + 20]) == 0,
            format!("IPv4 header checksum {:#06x} is wrong", be16(rst, l3 + 10)),
        );
        let s: [u8; 4] = rst[l3 + 12..l3 + 16].try_into().unwrap_or_default();
        let d: [u8; 4] = rst[l3 + 16..l3 + 20].try_into().unwrap_or_default();
        (IpAddr::from(s), IpAddr::from(d))
    };
    check(
        rsrc == dst && rdst == src,
        format!("addresses {rsrc} → {rdst}, want {dst} → {src}"),
    );
    let t = &rst[l4..l4 + 20];
    check(
        be16(t, 0) == be16(syn, l4 + 2) && be16(t, 2) == be16(syn, l4),
        "ports not swapped".into(),
    );
    check(be32(t, 4) == 0, format!("seq {}, want 0", be32(t, 4)));
    let want_ack = syn_seq.wrapping_add(1).wrapping_add(syn_data);
    check(
        be32(t, 8) == want_ack,
        format!(
            "ack {}, want {want_ack} (SYN seq {syn_seq} + 1 + {syn_data} data)",
            be32(t, 8)
        ),
    );
    check(
        t[12] >> 4 == 5,
        format!("data offset {}, want 5", t[12] >> 4),
    );
    check(
        t[13] == tcp_flags::RST | tcp_flags::ACK,
        format!("flags {:#04x}, want RST|ACK", t[13]),
    );
    check(
        l4_checksum(rsrc, rdst, ip_proto::TCP, t) == 0,
        format!("TCP checksum {:#06x} is wrong", be16(t, 16)),
    );
    p
}

pub fn reset_is_a_well_formed_rst_ack() -> Result<()> {
    let mut lab = gate_lab("gate-rst", CONFIG)?;
    lab.set_ports(&[(TLS, proto::TCP, rule(0, Gate::Open, PORT_GATE_RESET))])?;
    let d = lab.class("default");
    // MSS, SACK permitted, timestamps, NOP, window scale: what Linux puts in a SYN.
    let options = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    let mut problems = Vec::new();
    let mut cases = 0;
    for src in [IpAddr::V4(A4), IpAddr::V6(A6)] {
        for (tags, tagged) in [("untagged", 0), ("VLAN", 1), ("QinQ", 2)] {
            let base = |f: Frame| match tagged {
                0 => f,
                1 => f.vlan(100),
                _ => f.qinq(200, 100),
            };
            let mut variants: Vec<(&str, Frame, Option<usize>)> = vec![
                (
                    "plain",
                    with_seq(tcp(src, TLS, tcp_flags::SYN), 0x0102_0304),
                    None,
                ),
                (
                    "with options",
                    with_tcp_options(
                        with_seq(tcp(src, TLS, tcp_flags::SYN), 0xffff_fff0),
                        &options,
                    ),
                    None,
                ),
                (
                    "with data (fast open)",
                    with_seq(tcp(src, TLS, tcp_flags::SYN), 1000).payload(b"hello"),
                    None,
                ),
                (
                    "seq wraps",
                    with_seq(tcp(src, TLS, tcp_flags::SYN), u32::MAX),
                    None,
                ),
                (
                    "with ECN flags",
                    with_seq(tcp(src, TLS, tcp_flags::SYN | 0x40 | 0x80), 7),
                    None,
                ),
            ];
            if src.is_ipv4() {
                // A 54-byte SYN padded by the sender to Ethernet's minimum of 60.
                variants.push((
                    "Ethernet-padded",
                    with_seq(tcp(src, TLS, tcp_flags::SYN), 42),
                    Some(60 + 4 * tagged),
                ));
            }
            for (what, frame, pad) in variants {
                let frame = base(frame);
                let l3 = frame.layout().l3;
                let mut bytes = frame.build();
                if let Some(n) = pad {
                    bytes.resize(n, 0);
                }
                let name = format!("{src} {tags} SYN {what}");
                cases += 1;
                match lab.expect_ports(
                    &name,
                    &bytes,
                    XDP_TX,
                    Slot::new(d, Reason::GateReset),
                    &[(0, gated(true))],
                ) {
                    Ok(out) => {
                        let p = reset_problems(&bytes, &out, l3);
                        if !p.is_empty() {
                            problems.push(format!("{name}: {}", p.join("; ")));
                        }
                    }
                    Err(e) => problems.push(format!("{e:#}")),
                }
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "{} of {cases} RSTs are wrong:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    println!("{cases} RST+ACK replies checked");
    Ok(())
}

/// Headers the reply is not built for fall back to a silent drop: counted as a plain gate
/// drop (no RST was sent), never XDP_TX of a half-rewritten frame.
pub fn reset_falls_back_to_drop_for_ip_options_and_extension_headers() -> Result<()> {
    let mut lab = gate_lab("gate-rst-fallback", CONFIG)?;
    lab.set_ports(&[
        (TLS, proto::TCP, rule(0, Gate::Open, PORT_GATE_RESET)),
        (
            WEB,
            proto::TCP,
            rule(1, Gate::Closed, PORT_SHED | PORT_GATE_RESET),
        ),
    ])?;
    let d = lab.class("default");
    let with_options = |port: u16| {
        // Router alert (4 bytes).
        tcp(IpAddr::V4(A4), port, tcp_flags::SYN)
            .ipv4_options(&[148, 4, 0, 0])
            .build()
    };
    let with_ext = |port: u16| {
        tcp(IpAddr::V6(A6), port, tcp_flags::SYN)
            .ext(Ext::routing())
            .build()
    };
    // The frames do reach the gate: a closed port lets them through.
    let mut problems = Vec::new();
    for (what, frame) in [
        ("IPv4 options", with_options(TLS)),
        ("IPv6 routing header", with_ext(TLS)),
    ] {
        if let Err(e) = lab.expect_ports(
            &format!("{what}, open gate"),
            &frame,
            XDP_DROP,
            Slot::new(d, Reason::Gate),
            &[(0, gated(false))],
        ) {
            problems.push(format!("{e:#}"));
        }
    }
    for (what, frame) in [
        ("IPv4 options", with_options(WEB)),
        ("IPv6 routing header", with_ext(WEB)),
    ] {
        if let Err(e) = lab.expect_ports(
            &format!("{what}, shed"),
            &frame,
            XDP_DROP,
            Slot::new(d, Reason::Bulkhead),
            &[(
                1,
                PortStats {
                    syns: 1,
                    shed: 1,
                    ..ps()
                },
            )],
        ) {
            problems.push(format!("{e:#}"));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// TC egress: the passive signal
// ---------------------------------------------------------------------------------------

/// A frame leaving the node towards a client.
fn reply(dst: IpAddr, sport: u16, flags: u8) -> Vec<u8> {
    Frame::ip(node_of(dst), dst)
        .tcp(sport, CPORT)
        .tcp_flags(flags)
        .build()
}

/// An ICMP(v6) port unreachable from the node about a UDP datagram `client → node:dport`.
fn unreachable(client: IpAddr, dport: u16, inner_proto: u8) -> Vec<u8> {
    let inner = Frame::ip(client, node_of(client));
    let inner = if inner_proto == ip_proto::UDP {
        inner.udp(CPORT, dport).payload(b"query")
    } else {
        inner.tcp(CPORT, dport).tcp_flags(tcp_flags::SYN)
    };
    let quoted = inner.build()[14..].to_vec();
    let (protocol, kind, code) = if client.is_ipv4() {
        (1, 3, 3)
    } else {
        (ip_proto::ICMPV6, 1, 4)
    };
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    Frame::ip(node_of(client), client)
        .ip_protocol(protocol)
        .payload(&icmp)
        .build()
}

/// A reply leaving the node towards a client, acknowledging `ack`.
fn reply_acking(dst: IpAddr, sport: u16, flags: u8, ack: u32) -> Vec<u8> {
    let mut f = Frame::ip(node_of(dst), dst)
        .tcp(sport, CPORT)
        .tcp_flags(flags);
    if let Transport::Tcp(t) = f.transport_mut() {
        t.ack = ack;
    }
    f.build()
}

fn egress_delta(a: &EgressStats, b: &EgressStats) -> EgressStats {
    EgressStats {
        syn_acks: b.syn_acks - a.syn_acks,
        resets: b.resets - a.resets,
        unreachables: b.unreachables - a.unreachables,
        repeated: b.repeated - a.repeated,
        unverified: b.unverified - a.unverified,
        _reserved: 0,
    }
}

/// The egress statistics of one event.
#[derive(Clone, Copy)]
enum Seen {
    SynAck,
    Reset,
    Unreachable,
    Repeated,
    Unverified,
}

fn seen(what: Seen) -> EgressStats {
    let mut e = EgressStats::default();
    match what {
        Seen::SynAck => e.syn_acks = 1,
        Seen::Reset => e.resets = 1,
        Seen::Unreachable => e.unreachables = 1,
        Seen::Repeated => e.repeated = 1,
        Seen::Unverified => e.unverified = 1,
    }
    e
}

/// Only a reply to an attempt the XDP program saw is a refusal, once, and one peer's
/// refusals in a row are one vote (issue 17): the RSTs the stack sends for bare ACKs, RSTs
/// or FINs, or for a second SYN on an accepted 4-tuple, are counted as unverified.
pub fn egress_counts_replies_from_rule_ports() -> Result<()> {
    let mut lab = gate_lab("gate-egress", CONFIG)?;
    lab.set_ports(&[
        (WEB, proto::TCP, rule(0, Gate::Closed, 0)),
        (DNS, proto::UDP, rule(1, Gate::Closed, 0)),
    ])?;
    let run = |lab: &Lab, name: &str, frame: &[u8], want: &[(usize, EgressStats)]| -> Result<()> {
        let before = lab.kernel.egress_stats()?;
        let code = lab.kernel.test_run_egress(frame)?;
        let after = lab.kernel.egress_stats()?;
        ensure!(
            code == TC_ACT_OK,
            "{name}: TC program returned {code}, want TC_ACT_OK"
        );
        let moved: Vec<(usize, EgressStats)> = before
            .iter()
            .zip(&after)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| (i, egress_delta(a, b)))
            .collect();
        ensure!(
            moved == want,
            "{name}: egress stats moved {moved:?}, want {want:?}"
        );
        Ok(())
    };
    let arrive = |lab: &Lab, frame: &[u8]| -> Result<()> {
        let (action, _, _) = lab.run_out(frame)?;
        ensure!(action == XDP_PASS, "the attempt must pass a closed gate");
        Ok(())
    };
    let rst_ack = tcp_flags::RST | tcp_flags::ACK;
    let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
    for client in clients() {
        let c = client;
        let at = |what| vec![(0, seen(what))];
        run(
            &lab,
            &format!("{c} SYN-ACK"),
            &reply(c, WEB, syn_ack),
            &at(Seen::SynAck),
        )?;
        for flags in [tcp_flags::RST, rst_ack] {
            run(
                &lab,
                &format!("{c} RST (flags {flags:#x}) without a SYN"),
                &reply(c, WEB, flags),
                &at(Seen::Unverified),
            )?;
        }
        run(
            &lab,
            &format!("{c} ACK"),
            &reply(c, WEB, tcp_flags::ACK),
            &[],
        )?;
        run(
            &lab,
            &format!("{c} RST from another port"),
            &reply(c, OTHER, tcp_flags::RST),
            &[],
        )?;
        // A refused SYN: one vote; the same RST again answers nothing.
        arrive(&lab, &with_seq(tcp(c, WEB, tcp_flags::SYN), 1000).build())?;
        run(
            &lab,
            &format!("{c} RST+ACK with the wrong ack"),
            &reply_acking(c, WEB, rst_ack, 1000),
            &at(Seen::Unverified),
        )?;
        let refusal = reply_acking(c, WEB, rst_ack, 1001);
        run(
            &lab,
            &format!("{c} RST+ACK refusing a SYN"),
            &refusal,
            &at(Seen::Reset),
        )?;
        run(
            &lab,
            &format!("{c} the same RST again"),
            &refusal,
            &at(Seen::Unverified),
        )?;
        // The same peer refused again: a repeat, not a vote.
        arrive(&lab, &with_seq(tcp(c, WEB, tcp_flags::SYN), 2000).build())?;
        run(
            &lab,
            &format!("{c} second refusal in a row"),
            &reply_acking(c, WEB, rst_ack, 2001),
            &at(Seen::Repeated),
        )?;
        // An accepted SYN guards its 4-tuple: a second, in-window SYN's RST is no refusal.
        arrive(&lab, &with_seq(tcp(c, WEB, tcp_flags::SYN), 3000).build())?;
        run(
            &lab,
            &format!("{c} SYN-ACK accepting"),
            &reply_acking(c, WEB, syn_ack, 3001),
            &at(Seen::SynAck),
        )?;
        arrive(&lab, &with_seq(tcp(c, WEB, tcp_flags::SYN), 3500).build())?;
        run(
            &lab,
            &format!("{c} RST for a second SYN on an accepted 4-tuple"),
            &reply_acking(c, WEB, rst_ack, 3501),
            &at(Seen::Unverified),
        )?;
        let unreach = unreachable(c, DNS, ip_proto::UDP);
        run(
            &lab,
            &format!("{c} port unreachable without a datagram"),
            &unreach,
            &[(1, seen(Seen::Unverified))],
        )?;
        arrive(&lab, &udp(c, DNS))?;
        run(
            &lab,
            &format!("{c} port unreachable"),
            &unreach,
            &[(1, seen(Seen::Unreachable))],
        )?;
        run(
            &lab,
            &format!("{c} unreachable for another port"),
            &unreachable(c, OTHER, ip_proto::UDP),
            &[],
        )?;
        run(
            &lab,
            &format!("{c} unreachable about TCP"),
            &unreachable(c, DNS, ip_proto::TCP),
            &[],
        )?;
    }
    // Half-open: every refused trial is a vote, even from the same peer.
    let half_open = PortRule {
        half_open: budget(10),
        ..rule(0, Gate::HalfOpen, 0)
    };
    lab.set_ports(&[(WEB, proto::TCP, half_open)])?;
    // (Another client port: the accepted attempt above still guards CPORT's 4-tuple.)
    let c = IpAddr::V4(A4);
    for seq in [5000, 6000] {
        let trial = Frame::ip(c, node_of(c))
            .tcp(CPORT + 1, WEB)
            .tcp_flags(tcp_flags::SYN);
        arrive(&lab, &with_seq(trial, seq).build())?;
        let mut refusal = Frame::ip(node_of(c), c)
            .tcp(WEB, CPORT + 1)
            .tcp_flags(rst_ack);
        if let Transport::Tcp(t) = refusal.transport_mut() {
            t.ack = seq + 1;
        }
        run(
            &lab,
            &format!("{c} refused trial (seq {seq})"),
            &refusal.build(),
            &[(0, seen(Seen::Reset))],
        )?;
    }
    // Nothing is counted while the port table is empty.
    lab.set_ports(&[])?;
    run(
        &lab,
        "RST without port rules",
        &reply(IpAddr::V4(A4), WEB, tcp_flags::RST),
        &[],
    )?;
    Ok(())
}

pub fn rst_checker_accepts_a_correct_rst_and_rejects_a_wrong_ack() -> Result<()> {
    // Guard against a checker that passes anything: a hand-made RST must pass it, a broken
    // one must not. Needs no kernel, but lives here with the checker.
    let syn_frame = with_seq(tcp(IpAddr::V4(A4), TLS, tcp_flags::SYN), 99);
    let syn_bytes = syn_frame.build();
    let mut rst = Frame::ipv4(NODE4, A4)
        .macs(syn_frame.dst_mac, syn_frame.src_mac)
        .tcp(TLS, CPORT)
        .tcp_flags(tcp_flags::RST | tcp_flags::ACK)
        .ttl(64);
    if let Transport::Tcp(t) = rst.transport_mut() {
        t.seq = 0;
        t.ack = 100;
        t.window = 0;
    }
    rst.ipv4_mut().dont_fragment = true;
    let good = rst.build();
    let p = reset_problems(&syn_bytes, &good, 14);
    ensure!(p.is_empty(), "a correct RST fails the checker: {p:?}");
    let mut bad = good.clone();
    bad[14 + 20 + 8] ^= 1; // ack number
    ensure!(
        !reset_problems(&syn_bytes, &bad, 14).is_empty(),
        "a wrong ack passes the checker"
    );
    Ok(())
}
