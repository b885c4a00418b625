//! Issue 13 item 2: bans with expiry, driven through the real daemon and real traffic in
//! namespaces. Cases: see the table in main.rs.
//!
//! On main before the ban work none of this existed: `trafficctl ban` was an unknown
//! command (exit 2) and nothing dropped a source with reason `banned`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use traffic_daemon::api::bans::BansReport;
use traffic_testkit::{
    topo::{SERVICE_V4, SERVICE_V6},
    udp::{UdpFlow, UdpSink, run_flows},
};

use crate::hostile_host::links::Rig;
use crate::support::{poll, trafficctl};

const PORT: u16 = 9000;

/// The rig's config (one host "prem" in 198.18.1.0/24 and 2001:db8:1::/64, class premium
/// of 20 packets then 1/min; the default class 1000/s) with the ban state file in the
/// rig's temp dir, `admin` in `[admin]` and `tail` at the end.
fn write_config(rig: &Rig, extra_daemon: &str, admin: &str, tail: &str) {
    let text = format!(
        r#"
[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"
{extra_daemon}
[admin]
socket = "{socket}"
{admin}
[metrics]
listen = "{metrics}"
[bans]
state_file = "{state}"
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
[[rules]]
cidr = "2001:db8:1::/64"
class = "premium"
{tail}
"#,
        iface = rig.iface(),
        pins = rig.pins.0.display(),
        socket = rig.socket(),
        metrics = rig.metrics,
        state = rig.tmp.path("state/bans.json").display(),
    );
    std::fs::write(rig.config_path(), text).unwrap();
}

fn ctl(rig: &Rig, args: &[&str]) -> (i32, String, String) {
    let socket = rig.socket();
    let mut all = vec!["--socket", &socket];
    all.extend_from_slice(args);
    trafficctl(&all)
}

fn ok(rig: &Rig, args: &[&str]) -> String {
    let (code, out, err) = ctl(rig, args);
    assert_eq!(code, 0, "trafficctl {args:?}: {out}{err}");
    out
}

fn bans(rig: &Rig) -> BansReport {
    serde_json::from_str(&ok(rig, &["--json", "bans"])).unwrap()
}

/// Send `n` datagrams from the host's address `i` (IPv6 with `v6`); how many arrived.
fn burst(rig: &Rig, v6: bool, i: u32, n: u64) -> u64 {
    if !v6 {
        return rig.burst(i, n);
    }
    let host = &rig.topo.hosts[0];
    let src = IpAddr::V6(host.v6(i));
    let sink = UdpSink::start(&rig.topo.node, PORT, 1).expect("sink");
    let flow = UdpFlow {
        src,
        dst: SocketAddr::new(IpAddr::V6(SERVICE_V6), PORT),
        rate_pps: 20_000.0,
        duration: Duration::from_secs(5),
        max_packets: n,
        payload_len: 32,
        cpu: None,
        progress: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sent = run_flows(&host.ns, &[flow], &stop).expect("flow");
    assert_eq!(sent[0].sent, n);
    sink.finish(Duration::from_secs(2))
        .get(&src)
        .copied()
        .unwrap_or(0)
}

/// `traffic_packets_total` with reason `banned`, summed over classes and outcomes.
fn banned_packets(rig: &Rig) -> u64 {
    rig.metrics_text()
        .lines()
        .filter(|l| l.starts_with("traffic_packets_total{") && l.contains("reason=\"banned\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A banned /32 and a banned IPv6 /64 are dropped with reason `banned` while a neighbour
/// passes; `bans` lists them; `unban` lifts one at once.
pub fn a_banned_address_and_an_ipv6_prefix_are_dropped_until_unbanned() {
    let rig = Rig::new("ban-basic", "127.0.0.1:19201");
    write_config(&rig, "", "", "");
    let _d = rig.start();
    let v4 = rig.topo.hosts[0].v4(1).to_string();
    let out = ok(
        &rig,
        &["ban", &v4, "--for", "1h", "--reason", "ssh brute force"],
    );
    assert!(out.contains(&format!("banned {v4}/32 for")), "{out}");
    ok(&rig, &["ban", "2001:db8:1::/64", "--for", "30m"]);
    assert_eq!(burst(&rig, false, 1, 10), 0, "the banned address");
    assert_eq!(burst(&rig, false, 2, 10), 10, "its neighbour");
    assert_eq!(burst(&rig, true, 1, 10), 0, "an address of the banned /64");
    assert!(banned_packets(&rig) >= 20, "counted as banned");

    let table = ok(&rig, &["bans"]);
    assert!(
        table.contains(&format!("{v4}/32")) && table.contains("ssh brute force"),
        "{table}"
    );
    assert!(table.contains("2001:db8:1::/64"), "{table}");
    let r = bans(&rig);
    assert_eq!(r.bans.len(), 2);
    let m = rig.metrics_text();
    assert!(m.contains("traffic_bans_active 2"), "{m}");
    assert!(
        m.contains("traffic_bans_total{reason=\"ssh brute force\"} 1"),
        "{m}"
    );

    ok(&rig, &["unban", &v4]);
    assert_eq!(burst(&rig, false, 1, 10), 10, "unbanned: passes at once");
    assert_eq!(burst(&rig, true, 1, 10), 0, "the other ban stays");
    let (code, _, err) = ctl(&rig, &["unban", &v4]);
    assert_eq!(code, 2, "no such ban: {err}");
    assert!(err.contains("no ban on"), "{err}");
}

/// With `on_exit = "keep"` and the daemon killed (-9), a ban ends on time: the kernel
/// compares its end with the clock.
pub fn a_ban_ends_on_time_with_the_daemon_killed() {
    let rig = Rig::new("ban-expiry", "127.0.0.1:19202");
    write_config(&rig, "on_exit = \"keep\"", "", "");
    let mut d = rig.start();
    let v4 = rig.topo.hosts[0].v4(1).to_string();
    ok(&rig, &["ban", &v4, "--for", "4s"]);
    let banned = Instant::now();
    assert_eq!(burst(&rig, false, 1, 5), 0, "banned");
    d.kill9().unwrap();
    assert!(rig.topo.xdp_attached(&rig.iface()).unwrap(), "keep");
    assert_eq!(
        burst(&rig, false, 1, 5),
        0,
        "still banned without the daemon"
    );
    poll(
        "the ban to end without the daemon",
        Duration::from_secs(10),
        || (burst(&rig, false, 1, 1) == 1).then_some(()),
    );
    let took = banned.elapsed();
    assert!(
        took >= Duration::from_millis(3_500),
        "the ban ended {took:?} after it was made, before its 4 s"
    );
    drop(d);
    traffic_daemon::dataplane::kernel::Kernel::remove_pins(&rig.pins.0).unwrap();
}

/// An `allow` rule wins over a ban, unless the ban has `--force`.
pub fn an_allow_rule_wins_unless_the_ban_is_forced() {
    let rig = Rig::new("ban-allow", "127.0.0.1:19203");
    let host = rig.topo.hosts[0].v4(5).to_string();
    write_config(
        &rig,
        "",
        "",
        &format!("[[rules]]\ncidr = \"{host}/32\"\naction = \"allow\"\n"),
    );
    let _d = rig.start();
    ok(&rig, &["ban", &host, "--for", "1h"]);
    assert_eq!(burst(&rig, false, 5, 30), 30, "allowed despite the ban");
    let out = ok(&rig, &["ban", &host, "--for", "1h", "--force"]);
    assert!(
        out.contains("over allow rules") && out.contains("replaced"),
        "{out}"
    );
    assert_eq!(burst(&rig, false, 5, 10), 0, "a forced ban wins");
}

/// Bans survive a reload, a restart (pinned map adopted) and a reboot (pins gone: the
/// state file restores them).
pub fn bans_survive_a_reload_a_restart_and_lost_pins() {
    let rig = Rig::new("ban-persist", "127.0.0.1:19204");
    write_config(&rig, "", "", "");
    let mut d = rig.start();
    let v4 = rig.topo.hosts[0].v4(1).to_string();
    ok(&rig, &["ban", &v4, "--for", "1h", "--reason", "scanner"]);
    ok(&rig, &["ban", "2001:db8:1::/64", "--for", "1h"]);
    ok(&rig, &["reload"]);
    assert_eq!(burst(&rig, false, 1, 5), 0, "after a reload");
    d.terminate(Duration::from_secs(10)).unwrap();
    drop(d);

    let d = rig.start();
    assert_eq!(bans(&rig).bans.len(), 2, "after a restart");
    assert_eq!(burst(&rig, false, 1, 5), 0, "after a restart");
    drop(d);

    traffic_daemon::dataplane::kernel::Kernel::remove_pins(&rig.pins.0).unwrap();
    let _d = rig.start();
    let r = bans(&rig);
    assert_eq!(r.bans.len(), 2, "from the state file: {r:?}");
    assert!(r.bans.iter().any(|b| b.reason == "scanner"), "{r:?}");
    assert_eq!(burst(&rig, false, 1, 5), 0, "after the pins were lost");
    assert_eq!(burst(&rig, true, 1, 5), 0, "the IPv6 ban too");
    assert_eq!(burst(&rig, false, 2, 5), 5, "a neighbour passes");
    drop(_d);

    // A corrupt state file: logged and set aside, never a failed start; the pinned bans
    // are kept (as `recovered`) and written back.
    let state = rig.tmp.path("state/bans.json");
    std::fs::write(&state, "{ not json").unwrap();
    let _d = rig.start();
    let r = bans(&rig);
    assert_eq!(r.bans.len(), 2, "recovered from the pins: {r:?}");
    assert!(
        r.bans
            .iter()
            .all(|b| b.origin == traffic_daemon::bans::Origin::Recovered),
        "{r:?}"
    );
    assert_eq!(burst(&rig, false, 1, 5), 0, "still banned");
    let log = std::fs::read_to_string(rig.tmp.path("trafficd.log")).unwrap();
    assert!(log.contains("ban state file not used"), "{log}");
    assert!(rig.tmp.path("state/bans.json.corrupt").exists());
    poll(
        "the recovered bans written back",
        Duration::from_secs(5),
        || {
            let text = std::fs::read_to_string(&state).ok()?;
            text.contains("recovered").then_some(())
        },
    );
}

/// A source flooding its class (dropped for ≥ 90 % of its packets over the window) is
/// banned automatically; a well-behaved one sending as many packets is not.
pub fn an_automatic_ban_fires_for_a_flooder_and_not_a_good_source() {
    let rig = Rig::new("ban-auto", "127.0.0.1:19205");
    let good = rig.topo.hosts[0].v4(2);
    let offender = "drop_ratio = 0.9\nwindow = \"10s\"\nmin_packets = 100\nban_for = \"1m\"\n";
    write_config(
        &rig,
        "",
        "",
        &format!(
            "[[rules]]\ncidr = \"{good}/32\"\nclass = \"default\"\n\
             [classes.premium.offender]\n{offender}[classes.default.offender]\n{offender}"
        ),
    );
    let _d = rig.start();
    let host = &rig.topo.hosts[0];
    let flow = |src: IpAddr| UdpFlow {
        src,
        dst: SocketAddr::new(IpAddr::V4(SERVICE_V4), PORT),
        rate_pps: 100.0,
        duration: Duration::from_secs(25),
        max_packets: 2_500,
        payload_len: 32,
        cpu: None,
        progress: None,
    };
    let flooder = IpAddr::V4(host.v4(1));
    let stop = Arc::new(AtomicBool::new(false));
    let sink = UdpSink::start(&rig.topo.node, PORT, 2).expect("sink");
    let flows = [flow(flooder), flow(IpAddr::V4(good))];
    let found = std::thread::scope(|scope| {
        let sender = scope.spawn(|| run_flows(&host.ns, &flows, &stop));
        let found = poll(
            "an automatic ban of the flooder",
            Duration::from_secs(30),
            || {
                bans(&rig)
                    .bans
                    .into_iter()
                    .find(|b| b.prefix.addr == flooder)
            },
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap().unwrap();
        found
    });
    let got = sink.finish(Duration::from_secs(2));
    assert_eq!(found.reason, "offender in class premium");
    assert_eq!(found.prefix.len, 32);
    let r = bans(&rig);
    assert_eq!(r.bans.len(), 1, "only the flooder: {r:?}");
    assert!(
        got.get(&IpAddr::V4(good)).copied().unwrap_or(0) >= 1000,
        "{got:?}"
    );
    let m = rig.metrics_text();
    assert!(
        m.contains("traffic_auto_bans_total{class=\"premium\"} 1"),
        "{m}"
    );
    let log = std::fs::read_to_string(rig.tmp.path("trafficd.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("persistent offender"))
        .unwrap_or_else(|| panic!("no log line: {log}"));
    assert!(
        line.contains(&flooder.to_string()) && line.contains("premium") && line.contains("ratio"),
        "{line}"
    );
    assert!(!line.contains("uid"), "{line}");
}

/// A client that may read the socket but is not root or in the control group cannot ban
/// or unban (403), and reads the list.
pub fn a_client_without_control_access_cannot_ban() {
    use std::os::unix::fs::PermissionsExt as _;
    let rig = Rig::new("ban-authz", "127.0.0.1:19206");
    std::fs::set_permissions(&rig.tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_config(
        &rig,
        "",
        "socket_group = \"nogroup\"\ncontrol_group = \"adm\"",
        "",
    );
    let _d = rig.start();
    let exe = rig.tmp.path("trafficctl");
    std::fs::copy(env!("CARGO_BIN_EXE_trafficctl"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
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
    };
    let v4 = rig.topo.hosts[0].v4(1).to_string();
    let (code, out) = as_nobody(&["ban", &v4, "--for", "1h"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("403") && out.contains("`adm`"), "{out}");
    ok(&rig, &["ban", &v4, "--for", "1h"]);
    let (code, out) = as_nobody(&["unban", &v4]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("403"), "{out}");
    let (code, out) = as_nobody(&["bans"]);
    assert_eq!(code, 0, "a reader reads: {out}");
    assert_eq!(bans(&rig).bans.len(), 1);
    assert_eq!(burst(&rig, false, 1, 5), 0, "the operator's ban stands");
}

/// Absurd requests are refused with a message that says what is wrong (exit 2), and
/// nothing is banned.
pub fn absurd_bans_are_refused_clearly() {
    let rig = Rig::new("ban-absurd", "127.0.0.1:19207");
    write_config(&rig, "", "", "");
    let _d = rig.start();
    let reason = "x".repeat(10 * 1024);
    for (args, says) in [
        (vec!["ban", "0.0.0.0/0", "--for", "1h"], "at most a /8"),
        (vec!["ban", "::/0", "--for", "1h"], "at most a /16"),
        (vec!["ban", "198.18.1.1", "--for", "3650d"], "at most 365d"),
        (
            vec!["ban", "198.18.1.1", "--for", "0s"],
            "between 1s and 365d",
        ),
        (
            vec!["ban", "198.18.1.1", "--for", "1h", "--reason", &reason],
            "at most 128",
        ),
        (
            vec!["ban", "198.18.1.1", "--for", "1h", "--reason", "a\u{7}b"],
            "not allowed",
        ),
        (
            vec!["ban", "::ffff:198.18.1.1", "--for", "1h"],
            "IPv4-mapped",
        ),
        (vec!["ban", "198.18.1.1/24", "--for", "1h"], "198.18.1.0/24"),
        (vec!["ban", "198.18.1.1/40", "--for", "1h"], "0–32"),
        (
            vec!["ban", "not-an-address", "--for", "1h"],
            "not an IPv4 or IPv6",
        ),
    ] {
        let (code, out, err) = ctl(&rig, &args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(bans(&rig).bans.is_empty());
}

/// The program on crafted frames (BPF_PROG_TEST_RUN): a banned source is dropped with
/// reason `banned` on every packet (the first one classifies it, the next ones hit the
/// classification cache), an ended ban drops nothing, an `allow` rule wins unless the ban
/// is forced.
pub fn the_program_drops_a_banned_source_on_every_packet_until_its_end() -> anyhow::Result<()> {
    use crate::support::bpf::{Lab, NODE4, Slot, XDP_DROP, XDP_PASS};
    use traffic_common::{BAN_FORCE, BanEntry, Reason};
    use traffic_daemon::{bans::Prefix, dataplane::Dataplane as _};
    use traffic_testkit::packet::Frame;

    let mut lab = Lab::configured(
        "ban-program",
        "[daemon]\ninterfaces = [\"lo\"]\n[classes.default]\npackets = { rate = 1000 }\n\
         [[rules]]\ncidr = \"198.18.5.0/24\"\naction = \"allow\"\n",
    )?;
    let default = lab.class("default");
    let frame = |a: [u8; 4]| {
        Frame::ip(IpAddr::V4(a.into()), IpAddr::V4(NODE4))
            .udp(40000, 53)
            .build()
    };
    let now = lab.kernel.now_ns();
    let ban = |p: &str, until_ns: u64, flags: u32| {
        (
            Prefix::parse(p).unwrap().key(),
            BanEntry {
                until_ns,
                reason_id: 1,
                flags,
            },
        )
    };
    let (k, e) = ban("198.18.4.0/24", now + 60_000_000_000, 0);
    lab.kernel.set_ban(&k, &e)?;
    // Ended by the program's clock too: the coarse clock it reads lags the fine one the
    // daemon reads by up to a tick, so "1 ns ago" could still be ahead of it.
    let (k, e) = ban(
        "198.18.6.1/32",
        now.saturating_sub(2 * traffic_common::CLOCK_TICK_MAX_NS),
        0,
    );
    lab.kernel.set_ban(&k, &e)?;
    let (k, e) = ban("198.18.5.1/32", now + 60_000_000_000, 0);
    lab.kernel.set_ban(&k, &e)?;
    let (k, e) = ban("198.18.5.2/32", now + 60_000_000_000, BAN_FORCE);
    lab.kernel.set_ban(&k, &e)?;
    // What the daemon writes after the ban map: bans in force, and a new rule generation.
    has_bans(&mut lab.kernel)?;
    for i in 0..3 {
        lab.expect(
            &format!("banned, packet {i}"),
            &frame([198, 18, 4, 9]),
            XDP_DROP,
            Slot::new(default, Reason::Banned),
        )?;
        lab.expect(
            &format!("ended ban, packet {i}"),
            &frame([198, 18, 6, 1]),
            XDP_PASS,
            Slot::new(default, Reason::Pass),
        )?;
        lab.expect(
            &format!("allow wins, packet {i}"),
            &frame([198, 18, 5, 1]),
            XDP_PASS,
            Slot::new(traffic_common::UNCLASSIFIED, Reason::Allow),
        )?;
        lab.expect(
            &format!("forced ban wins, packet {i}"),
            &frame([198, 18, 5, 2]),
            XDP_DROP,
            Slot::new(traffic_common::UNCLASSIFIED, Reason::Banned),
        )?;
    }
    drop(lab);

    // Monitor mode: counted as a would-drop, passed.
    let mut lab = Lab::configured(
        "ban-monitor",
        "[daemon]\ninterfaces = [\"lo\"]\nmode = \"monitor\"\n[classes.default]\n",
    )?;
    let now = lab.kernel.now_ns();
    let (k, e) = ban("198.18.4.0/24", now + 60_000_000_000, 0);
    lab.kernel.set_ban(&k, &e)?;
    has_bans(&mut lab.kernel)?;
    lab.expect(
        "banned in monitor mode",
        &frame([198, 18, 4, 9]),
        XDP_PASS,
        Slot::monitored(lab.class("default"), Reason::Banned),
    )?;
    Ok(())
}

/// Mark the program's config as having bans (a new rule generation with it), as the daemon
/// does after writing the ban map.
fn has_bans(kernel: &mut impl traffic_daemon::dataplane::Dataplane) -> anyhow::Result<()> {
    let mut g = kernel.global()?;
    g.flags |= traffic_common::GLOBAL_HAS_BANS;
    g.rules_gen = g.rules_gen.wrapping_add(1).max(1);
    kernel.apply(&[traffic_daemon::plan::Write::Global(g)])?;
    Ok(())
}
