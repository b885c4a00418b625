//! Cases: see the table in main.rs.
//!
//! Frames that once slipped past a rule: a SYN whose port the header walk cannot read (issue
//! 17 item 4), a cached classification that outlived a reload (item 8); and frames a rule
//! refused for ever: a full-size frame larger than the byte burst (item 7). Run with
//! BPF_PROG_TEST_RUN on crafted frames, on the test's own pinned maps (`support::bpf::Lab`).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result, ensure};
use traffic_common::{Gate, PORT_GATE_RESET, PortRule, Reason, proto};
use traffic_daemon::{
    config::Config,
    dataplane::Dataplane as _,
    plan::{Live, desired, desired_live, diff},
    policy::limits::largest_frame,
};
use traffic_testkit::packet::{Ext, Frame, ip_proto, tcp_flags};

use crate::support::bpf::{Lab, NODE4, NODE6, SOURCES, Slot, XDP_DROP, XDP_PASS, XDP_TX};

const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 1);
const CPORT: u16 = 40000;
const WEB: u16 = 8080;
const DNS: u16 = 5353;

const CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]

[classes.default]
packets = { rate = 1, burst = 1000 }
"#;

/// Replace the port rules as the daemon does (`Desired::with_ports` keeps the global flags
/// in step), every rule rewritten.
fn set_ports(lab: &mut Lab, rules: &[(u16, u8, PortRule)]) -> Result<()> {
    let ports: BTreeMap<(u16, u8), PortRule> =
        rules.iter().map(|(p, pr, r)| ((*p, *pr), *r)).collect();
    let applied = lab.applied.clone().context("the lab is configured")?;
    let want = applied.clone().with_ports(ports);
    let mut writes = diff(Some(&applied), &want);
    writes.extend(
        want.ports
            .iter()
            .map(|(k, r)| traffic_daemon::plan::Write::Port(*k, *r)),
    );
    lab.kernel.apply(&writes).context("write port rules")?;
    lab.applied = Some(want);
    Ok(())
}

fn open_gate(slot: u32, flags: u32) -> PortRule {
    PortRule {
        flags,
        gate: Gate::Open as u32,
        slot,
        ..PortRule::default()
    }
}

fn syn4() -> Frame {
    Frame::ipv4(SRC4, NODE4)
        .tcp(CPORT, WEB)
        .tcp_flags(tcp_flags::SYN)
}

fn syn6() -> Frame {
    Frame::ipv6(SRC6, NODE6)
        .tcp(CPORT, WEB)
        .tcp_flags(tcp_flags::SYN)
}

/// The SYN behind eight (empty, 8-byte) destination-options headers: past the walk.
fn syn_behind_eight_headers() -> Vec<u8> {
    (0..8)
        .fold(syn6(), |f, _| f.ext(Ext::DestOpts(Vec::new())))
        .build()
}

/// The SYN behind one 760-byte destination-options header (PadN options): past the
/// deepest offset the program reads.
fn syn_behind_a_760_byte_header() -> Vec<u8> {
    let mut opts = Vec::new();
    for n in [253u8, 253, 246] {
        opts.extend_from_slice(&[1, n]);
        opts.extend(std::iter::repeat_n(0, usize::from(n)));
    }
    let f = syn6().ext(Ext::DestOpts(opts)).build();
    assert_eq!(f.len(), 14 + 40 + 760 + 20, "one 760-byte header");
    f
}

/// The TCP header of the SYN, as bytes (what a fragmenter splits).
fn syn_tcp_bytes() -> Vec<u8> {
    syn4().build()[14 + 20..].to_vec()
}

/// An IPv4 first fragment with the first 8 bytes of the SYN's TCP header (ports and
/// sequence number; the flags are in the next fragment).
fn tiny_first_fragment() -> Vec<u8> {
    Frame::ipv4(SRC4, NODE4)
        .ip_protocol(ip_proto::TCP)
        .payload(&syn_tcp_bytes()[..8])
        .fragment(0, true)
        .build()
}

/// The rest of that SYN: a non-first fragment at offset 8 bytes.
fn second_fragment4() -> Vec<u8> {
    Frame::ipv4(SRC4, NODE4)
        .ip_protocol(ip_proto::TCP)
        .payload(&syn_tcp_bytes()[8..])
        .fragment(1, false)
        .build()
}

/// An IPv6 non-first fragment of a TCP segment.
fn second_fragment6() -> Vec<u8> {
    Frame::ipv6(SRC6, NODE6)
        .ip_protocol(ip_proto::TCP)
        .payload(&syn_tcp_bytes()[8..])
        .fragment(1, false)
        .build()
}

/// Issue 17 item 4: with the web gate open, a SYN to 8080 is refused however its headers
/// are laid out: behind eight IPv6 extension headers, behind one 760-byte destination
/// options header, or as an IPv4 first fragment with 8 bytes of TCP header, its port is
/// unreadable and it is dropped as `port_unknown` (on main it passed). A non-first fragment
/// still passes on its source's limits: it carries no port, and without its first fragment
/// (judged with its port) the stack cannot reassemble it. Without a TCP rule nothing is
/// refused for an unreadable TCP port.
pub fn unreadable_ports_do_not_dodge_an_open_gate() -> Result<()> {
    let mut lab = Lab::build("hostile-frames-ports", SOURCES, CONFIG, |d, _| d)?;
    set_ports(
        &mut lab,
        &[(WEB, proto::TCP, open_gate(0, PORT_GATE_RESET))],
    )?;
    let class = lab.class("default");
    let (pass, unknown) = (
        Slot::new(class, Reason::Pass),
        Slot::new(class, Reason::PortUnknown),
    );
    let reset = Slot::new(class, Reason::GateReset);
    lab.expect("plain IPv4 SYN", &syn4().build(), XDP_TX, reset)?;
    lab.expect("plain IPv6 SYN", &syn6().build(), XDP_TX, reset)?;
    let hidden = [
        (
            "SYN behind eight extension headers",
            syn_behind_eight_headers(),
        ),
        (
            "SYN behind a 760-byte header",
            syn_behind_a_760_byte_header(),
        ),
        ("IPv4 first fragment, 8 bytes of TCP", tiny_first_fragment()),
    ];
    for (name, f) in &hidden {
        lab.expect(name, f, XDP_DROP, unknown)?;
    }
    lab.expect(
        "IPv4 non-first fragment",
        &second_fragment4(),
        XDP_PASS,
        pass,
    )?;
    lab.expect(
        "IPv6 non-first fragment",
        &second_fragment6(),
        XDP_PASS,
        pass,
    )?;

    // A UDP rule only: an unreadable TCP port dodges nothing; an unfinished walk (the
    // protocol itself unknown) still may.
    set_ports(&mut lab, &[(DNS, proto::UDP, open_gate(1, 0))])?;
    lab.expect(
        "tiny TCP fragment, UDP rules only",
        &tiny_first_fragment(),
        XDP_PASS,
        pass,
    )?;
    lab.expect(
        "760-byte header (TCP named), UDP rules only",
        &syn_behind_a_760_byte_header(),
        XDP_PASS,
        pass,
    )?;
    lab.expect(
        "eight headers (protocol unknown), UDP rules only",
        &syn_behind_eight_headers(),
        XDP_DROP,
        unknown,
    )?;
    // No port rules: limited by source as before.
    set_ports(&mut lab, &[])?;
    for (name, f) in &hidden {
        lab.expect(&format!("{name}, no port rules"), f, XDP_PASS, pass)?;
    }
    Ok(())
}

/// Issue 17 item 8: a reload that changes only `daemon.default_class` moves an active
/// source (one the per-CPU classification cache holds) to the new default class at once.
/// On main the cache's generation hashed the rules only, so the source stayed in the old
/// class. The runs are on one CPU (a thread pinned for the case), so the second run hits
/// the entry the first one cached.
pub fn a_new_default_class_moves_active_sources_at_once() -> Result<()> {
    std::thread::spawn(|| {
        traffic_testkit::netns::pin_to_cpu(0);
        new_default_class_on_one_cpu()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the pinned thread panicked"))?
}

fn new_default_class_on_one_cpu() -> Result<()> {
    let text = |default: &str| {
        format!(
            "[daemon]\ninterfaces = [\"lo\"]\ndefault_class = \"{default}\"\n\
             [classes.old]\n[classes.new]\n"
        )
    };
    let mut lab = Lab::configured("hostile-frames-default", &text("old"))?;
    let (old, new) = (lab.class("old"), lab.class("new"));
    let frames = [
        Frame::ipv4(SRC4, NODE4).udp(CPORT, DNS).build(),
        Frame::ipv6(SRC6, NODE6).udp(CPORT, DNS).build(),
    ];
    for f in &frames {
        for i in 0..3 {
            lab.expect(
                &format!("before, run {i}"),
                f,
                XDP_PASS,
                Slot::new(old, Reason::Pass),
            )?;
        }
    }
    let config = Config::parse(Path::new("t.toml"), &text("new")).context("new config")?;
    let slots = lab.slots.assign(&config);
    ensure!(slots.slot_of("new") == Some(new), "slots are stable");
    let want = desired(&config, &slots, |_| 1.0);
    lab.kernel
        .apply(&diff(lab.applied.as_ref(), &want))
        .context("reload")?;
    lab.applied = Some(want);
    for f in &frames {
        lab.expect(
            "after the reload",
            f,
            XDP_PASS,
            Slot::new(new, Reason::Pass),
        )?;
    }
    Ok(())
}

/// Issue 17 item 7: a class with a small byte rate and the smallest burst the config takes
/// (1514 bytes) passes one full-size frame of its interface, then refuses the next: a
/// QinQ-tagged 1522-byte frame at MTU 1500, and a 3422-byte frame at MTU 3400 (the largest
/// BPF_PROG_TEST_RUN takes without fragments; the floor is the same arithmetic for 9000).
/// On main both were refused for ever (byte_rate), the burst holding 1514 bytes.
pub fn full_size_frames_fit_the_byte_burst() -> Result<()> {
    let text = "[daemon]\ninterfaces = [\"lo\"]\n\
                [classes.default]\nbytes = { rate = \"1KB\", burst = 1514 }\n";
    let config = Config::parse(Path::new("t.toml"), text).context("test config")?;
    for (mtu, tag) in [(1500u32, "qinq"), (3400, "jumbo")] {
        let plan = |_: traffic_daemon::plan::Desired, slots: &traffic_daemon::plan::Slots| {
            desired_live(
                &config,
                slots,
                |_| 1.0,
                &Live {
                    port_slots: &BTreeMap::new(),
                    upstreams: &[],
                    class_chaos: &BTreeMap::new(),
                    now_ns: 0,
                    max_frame: largest_frame([mtu]),
                    gate_lease_until_ns: u64::MAX,
                    watch_flags: 0,
                },
            )
        };
        let lab = Lab::build(&format!("hostile-frames-{tag}"), SOURCES, text, plan)?;
        let class = lab.class("default");
        let len = mtu as usize + 14 + 8;
        let frame = Frame::ipv4(SRC4, NODE4)
            .qinq(10, 20)
            .udp(CPORT, DNS)
            .pad_to(len)
            .build();
        ensure!(frame.len() == len, "a {len}-byte frame");
        lab.expect(
            &format!("{len}-byte frame at MTU {mtu}"),
            &frame,
            XDP_PASS,
            Slot::new(class, Reason::Pass),
        )?;
        lab.expect(
            &format!("a second {len}-byte frame: the burst is spent"),
            &frame,
            XDP_DROP,
            Slot::new(class, Reason::ByteRate),
        )?;
    }
    Ok(())
}
