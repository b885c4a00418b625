//! Issue 13 item 3: blocklist feeds, served over HTTP by a tiny server inside the node's
//! namespace (198.18.255.1), enforced by the real daemon. On the main of 2026-12-04 there is
//! no `[[feeds]]` key at all: every case fails at config validation.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use traffic_daemon::feeds::FeedsReport;
use traffic_testkit::{
    netns::Netns,
    topo::SERVICE_V4,
    udp::{UdpFlow, UdpSink, run_flows},
};

use crate::{
    hostile_host::links::Rig,
    support::{poll, trafficctl},
};

const PORT: u16 = 9000;
const HTTP_PORT: u16 = 18080;

/// A one-file HTTP server: answers every request with the current body; stopped on drop.
struct FeedServer {
    body: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FeedServer {
    fn start(ns: &Netns, body: &str) -> Self {
        let body = Arc::new(Mutex::new(body.as_bytes().to_vec()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (b, s) = (body.clone(), stop.clone());
        let thread = ns
            .spawn(move || {
                let l = TcpListener::bind((SERVICE_V4, HTTP_PORT)).unwrap();
                l.set_nonblocking(true).unwrap();
                tx.send(()).unwrap();
                while !s.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((conn, _)) => answer(conn, &b.lock().unwrap().clone()),
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Self {
            body,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(&self, body: &str) {
        *self.body.lock().unwrap() = body.as_bytes().to_vec();
    }

    /// Close the listening socket: connections are refused from now on.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut conn: TcpStream, body: &[u8]) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16_384 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn url() -> String {
    format!("http://{SERVICE_V4}:{HTTP_PORT}/list.txt")
}

fn feeds(rig: &Rig) -> FeedsReport {
    let (code, out, err) = trafficctl(&["--socket", &rig.socket(), "--json", "feeds"]);
    assert_eq!(code, 0, "trafficctl feeds: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Ask for a refresh of `name` and wait until it has been tried (`ok` or `failed` count
/// one more) and its outcome is in force.
fn refresh(rig: &Rig, name: &str) -> bool {
    let before = feeds(rig);
    let f0 = before
        .feeds
        .iter()
        .find(|f| f.name == name)
        .unwrap()
        .clone();
    let (code, _, err) = trafficctl(&["--socket", &rig.socket(), "feeds", "refresh", name]);
    assert_eq!(code, 0, "refresh: {err}");
    poll("the refresh", Duration::from_secs(20), || {
        let r = feeds(rig);
        let f = r.feeds.iter().find(|f| f.name == name)?.clone();
        if f.refreshes_failed > f0.refreshes_failed {
            return Some(false);
        }
        // Tried and swapped: the generation flips when the list changed; give the swap
        // its turn by waiting for the status written after it.
        (f.refreshes_ok > f0.refreshes_ok).then_some(true)
    })
}

fn feed_config(name: &str, action: &str, rig: &Rig) -> String {
    format!(
        "[[feeds]]\nname = \"{name}\"\nsource = \"{}\"\n{action}\ncache = \"{}\"\ntimeout = \"3s\"\nmax_size = 4096\n",
        url(),
        rig.tmp.path(&format!("cache/{name}.list")).display()
    )
}

fn addr(rig: &Rig, i: u32) -> Ipv4Addr {
    rig.topo.hosts[0].v4(i)
}

/// Wait until the feed's swap is in force: `probe` (a source the new list drops) is dropped.
fn until_dropped(rig: &Rig, i: u32) {
    poll("the new list in force", Duration::from_secs(10), || {
        (rig.burst(i, 5) == 0).then_some(())
    });
}

/// A `deny` feed drops a listed source with reason `feed_deny` and passes an unlisted one;
/// a class feed moves a source into its class (its limits apply); precedence: the feed's
/// class replaces the rule's.
pub fn a_listed_source_is_dropped_and_a_class_feed_moves_a_source() {
    let rig = Rig::new("feeds-deny", "127.0.0.1:19301");
    let server = FeedServer::start(&rig.topo.node, "");
    let (a1, a3) = (addr(&rig, 1), addr(&rig, 3));
    // The deny feed over HTTP in Spamhaus format; the class feed a local FireHOL-style
    // file listing a3 by a covering /31.
    server.serve(&format!("; Spamhaus DROP\n{a1}/32 ; SBL1\n"));
    std::fs::write(rig.tmp.path("tight.txt"), format!("# FireHOL\n{a3}/31\n")).unwrap();
    let tail = format!(
        "{}\n[[feeds]]\nname = \"tight\"\nsource = \"{}\"\nclass = \"tight\"\n\n[classes.tight]\npackets = {{ rate = 1, per = \"1m\", burst = 5 }}\n",
        feed_config("drop", "action = \"deny\"", &rig),
        rig.tmp.path("tight.txt").display()
    );
    rig.write_config("", &tail);
    let mut d = rig.start();
    poll("both feeds loaded", Duration::from_secs(20), || {
        let r = feeds(&rig);
        (r.feeds.len() == 2 && r.feeds.iter().all(|f| f.refreshes_ok == 1)).then_some(())
    });
    until_dropped(&rig, 1);
    assert_eq!(
        rig.burst(1, 20),
        0,
        "listed source passed:\n{}",
        d.log_text()
    );
    assert_eq!(
        rig.burst(2, 30),
        20,
        "an unlisted premium source gets its burst"
    );
    assert_eq!(
        rig.burst(3, 30),
        5,
        "the class feed moved the source into `tight`"
    );
    let metrics = rig.metrics_text();
    // Every class's feed_deny series (at 0 where none was dropped), summed.
    let n: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("traffic_packets_total") && l.contains("reason=\"feed_deny\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(n >= 20.0, "{n} feed_deny packets:\n{metrics}");
    assert!(
        metrics.contains("traffic_feed_prefixes{feed=\"drop\"} 1"),
        "{metrics}"
    );
    let (code, table, _) = trafficctl(&["--socket", &rig.socket(), "feeds"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("drop") && table.contains("class:tight"),
        "{table}"
    );
    let status = d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}:\n{}", d.log_text());
}

/// Refreshes that change the list swap atomically: a source listed in both generations
/// (by a /28 in one, by its /32 in the other) never gets a packet through while the lists
/// alternate under traffic. Garbage, an oversize list and a vanished server each count a
/// failure and keep the last good list; a restart with the server down (and fresh maps)
/// enforces the on-disk copy.
pub fn refreshes_swap_atomically_and_failures_keep_the_last_good_list() {
    let rig = Rig::new("feeds-swap", "127.0.0.1:19302");
    let (a1, a4) = (addr(&rig, 1), addr(&rig, 4));
    let list_a = format!("{}/28\n", Ipv4Addr::from(u32::from(a1) & !0xf));
    let list_b = format!("{a1}\n{a4}\n2001:db8:1::/48\n");
    let mut server = FeedServer::start(&rig.topo.node, &list_a);
    rig.write_config("", &feed_config("swap", "action = \"deny\"", &rig));
    let mut d = rig.start();
    poll("first load", Duration::from_secs(20), || {
        (feeds(&rig).feeds.first()?.refreshes_ok == 1).then_some(())
    });
    until_dropped(&rig, 6);

    // Traffic from a1 throughout four swaps.
    let host = &rig.topo.hosts[0];
    let sink = UdpSink::start(&rig.topo.node, PORT, 1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flow = UdpFlow {
        src: a1.into(),
        dst: (SERVICE_V4, PORT).into(),
        rate_pps: 4000.0,
        duration: Duration::from_secs(20),
        max_packets: 80_000,
        payload_len: 32,
        cpu: None,
        progress: None,
    };
    let started = Instant::now();
    let sent = std::thread::scope(|s| {
        let sender = s.spawn(|| run_flows(&host.ns, &[flow], &stop).unwrap());
        for list in [&list_b, &list_a, &list_b, &list_a, &list_b] {
            server.serve(list);
            assert!(refresh(&rig, "swap"), "refresh failed:\n{}", d.log_text());
        }
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap()
    });
    let got = sink.finish(Duration::from_secs(2));
    assert!(
        sent[0].sent > 100,
        "sent {} in {:?}",
        sent[0].sent,
        started.elapsed()
    );
    assert_eq!(
        got.get(&a1.into()).copied().unwrap_or(0),
        0,
        "a source listed in both generations passed during a swap:\n{}",
        d.log_text()
    );
    // The last list (B) is in force: a4 dropped, a6 (only in A's /28) passes again.
    until_dropped(&rig, 4);
    assert_eq!(rig.burst(6, 5), 5);
    let r = feeds(&rig);
    assert_eq!(r.entries_v4, 2);
    assert_eq!(r.entries_v6, 1);

    // Failures keep list B.
    server.serve("<html><body>maintenance</body></html>\n");
    assert!(!refresh(&rig, "swap"), "garbage accepted");
    server.serve(&format!("{a1}\n").repeat(1000));
    assert!(!refresh(&rig, "swap"), "oversize accepted");
    server.stop();
    assert!(
        !refresh(&rig, "swap"),
        "a vanished server counted as a success"
    );
    let f = feeds(&rig).feeds[0].clone();
    assert_eq!(f.refreshes_failed, 3, "{f:?}");
    assert_eq!(f.prefixes, 3, "{f:?}");
    assert!(f.last_error.is_some());
    assert_eq!(rig.burst(4, 5), 0, "last good list lost after failures");
    let metrics = rig.metrics_text();
    assert!(
        metrics.contains("traffic_feed_refreshes_total{feed=\"swap\",outcome=\"failed\"} 3"),
        "{metrics}"
    );

    // Restart with the server down over fresh maps: only the disk copy can enforce.
    let status = d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}:\n{}", d.log_text());
    std::fs::remove_dir_all(&rig.pins.0).unwrap();
    let mut d = rig.start();
    poll("the disk copy", Duration::from_secs(20), || {
        let f = feeds(&rig).feeds.first()?.clone();
        (f.from_cache && f.prefixes == 3).then_some(())
    });
    until_dropped(&rig, 4);
    assert_eq!(rig.burst(1, 5), 0);
    assert_eq!(rig.burst(2, 5), 5);
    let status = d.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}:\n{}", d.log_text());
}

/// A million IPv4 prefixes load within bounds; prints the load time and the kernel memory
/// of the IPv4 trie (bpftool's `bytes_memlock`), the figures in the README.
pub fn a_million_prefixes_load_within_bounds() {
    let rig = Rig::new("feeds-1m", "127.0.0.1:19303");
    let a1 = addr(&rig, 1);
    let mut text = String::with_capacity(16 << 20);
    text.push_str(&format!("# a million prefixes\n{a1}\n"));
    // 100.64.0.0/10 (shared address space): data only, never configured anywhere.
    for i in 0..999_999u32 {
        let a = Ipv4Addr::from((100u32 << 24 | 64 << 16) + i * 3);
        text.push_str(&format!("{a}\n"));
    }
    let list = rig.tmp.path("million.txt");
    std::fs::write(&list, format!("{a1}\n")).unwrap();
    rig.write_config(
        "",
        &format!(
            "[[feeds]]\nname = \"million\"\nsource = \"{}\"\naction = \"deny\"\nrefresh = \"1h\"\n",
            list.display()
        ),
    );
    let mut d = rig.start();
    poll("the one-prefix list", Duration::from_secs(20), || {
        (feeds(&rig).entries_v4 == 1).then_some(())
    });
    // The kernel memory of the swap itself (other helpers' activity adds noise).
    let slab_before = unreclaimable_slab_kib();
    std::fs::write(&list, text).unwrap();
    let started = Instant::now();
    assert!(refresh(&rig, "million"));
    poll("a million prefixes", Duration::from_secs(180), || {
        (feeds(&rig).entries_v4 == 1_000_000).then_some(())
    });
    let load = started.elapsed();
    let slab = unreclaimable_slab_kib().saturating_sub(slab_before);
    let hwm = d.pid().map_or(0, peak_rss_kib);
    let pin = rig.pins.0.join(traffic_common::map_names::FEED_V4);
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(&pin)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let memlock = info["bytes_memlock"].as_u64().unwrap_or(0);
    let log = d.log_text();
    let load_ms = log
        .lines()
        .rev()
        .find(|l| l.contains("new generation in force"))
        .and_then(|l| l.split("load_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_owned();
    eprintln!(
        "1M IPv4 prefixes: ready {load:?} after the refresh request (map writes {load_ms} ms), IPv4 trie \
         bytes_memlock {memlock} ({} MiB), kernel unreclaimable slab +{} MiB over the swap (whole machine), \
         trafficd peak RSS {} MiB",
        memlock >> 20,
        slab >> 10,
        hwm >> 10
    );
    assert!(load < Duration::from_secs(120), "{load:?}");
    assert!(memlock > 0 && memlock < 256 << 20, "memlock {memlock}");
    assert_eq!(rig.burst(1, 5), 0, "listed source passed");
    assert_eq!(rig.burst(2, 5), 5, "unlisted source dropped");
    let status = d.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}:\n{}", d.log_text());
}

/// `SUnreclaim` of /proc/meminfo (where BPF map elements live), KiB.
fn unreclaimable_slab_kib() -> u64 {
    meminfo_field("/proc/meminfo", "SUnreclaim:")
}

/// `VmHWM` of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    meminfo_field(&format!("/proc/{pid}/status"), "VmHWM:")
}

fn meminfo_field(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const PROGRAM_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]
[classes.internal]
[classes.limited]
packets = { rate = 1, burst = 5 }
[classes.default]
packets = { rate = 1, burst = 1000 }
[[rules]]
cidr = "198.18.0.0/24"
action = "allow"
class = "internal"
[[rules]]
cidr = "198.18.66.0/24"
action = "deny"
[[rules]]
cidr = "198.18.1.0/24"
class = "limited"
"#;

/// The program's feed verdicts (BPF_PROG_TEST_RUN): both families, the precedence (a
/// config `allow` or `deny` rule wins, then a deny feed, then a class feed replaces the
/// rule's class), and a generation flip re-resolving cached classifications.
pub fn program_feed_verdicts_both_families_and_precedence() -> anyhow::Result<()> {
    use std::net::{IpAddr, Ipv6Addr};

    use crate::support::bpf::{Lab, NODE4, NODE6, Slot, XDP_DROP, XDP_PASS};
    use traffic_common::{GLOBAL_FEED_GEN1, GLOBAL_HAS_FEEDS, Reason, UNCLASSIFIED};
    use traffic_daemon::{
        dataplane::{Dataplane, feeds::Family},
        feeds::{
            generation::{Listing, merge_feeds, plan},
            parse::{self, Key},
        },
        plan::Write,
    };
    use traffic_testkit::packet::Frame;

    let mut lab = Lab::configured("feeds-program", PROGRAM_CONFIG)?;
    let (internal, limited, default) = (
        lab.class("internal"),
        lab.class("limited"),
        lab.class("default"),
    );
    let udp = |src: IpAddr| {
        let dst = match src {
            IpAddr::V4(_) => IpAddr::V4(NODE4),
            IpAddr::V6(_) => IpAddr::V6(NODE6),
        };
        Frame::ip(src, dst).udp(40000, 53).payload(b"query").build()
    };
    let ip4 = |a: [u8; 4]| IpAddr::V4(a.into());
    let ip6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
    let keys = |text: &str| parse::parse(text.as_bytes(), 100).unwrap().prefixes;
    let deny = keys("198.18.0.0/16\n2001:db8:66::/48\n");
    let class = keys("198.18.1.8/29\n2001:db8:1::/48\n");
    let deny_l = Listing {
        deny: true,
        class: None,
    };
    let class_l = Listing {
        deny: false,
        class: Some((1, internal as u16)),
    };
    let mut tries = lab.kernel.feed_tries()?;
    let mut active = 0usize;
    let mut current: [Vec<(Key, [u16; 2])>; 2] = [Vec::new(), Vec::new()];
    let mut swap_to =
        |lab: &mut Lab, lists: &[(&parse::Prefixes, Listing)], epoch: u32| -> anyhow::Result<()> {
            for (i, family) in [Family::V4, Family::V6].into_iter().enumerate() {
                let feeds: Vec<(&[Key], Listing)> = lists
                    .iter()
                    .map(|(p, l)| {
                        (
                            if i == 0 {
                                p.v4.as_slice()
                            } else {
                                p.v6.as_slice()
                            },
                            *l,
                        )
                    })
                    .collect();
                let s = plan(&current[i], &merge_feeds(&feeds), active);
                tries.update(family, &s.updates)?;
                current[i] = s.after;
                tries.delete(family, &s.deletes)?;
            }
            active = 1 - active;
            let mut g = lab.kernel.global()?;
            g.flags |= GLOBAL_HAS_FEEDS;
            g.flags = if active == 1 {
                g.flags | GLOBAL_FEED_GEN1
            } else {
                g.flags & !GLOBAL_FEED_GEN1
            };
            g.rules_gen = g.rules_gen.wrapping_add(epoch).max(1);
            lab.kernel.apply(&[Write::Global(g)])?;
            Ok(())
        };
    // Before any feed: the default class passes it.
    lab.expect(
        "unlisted",
        &udp(ip4([198, 18, 9, 1])),
        XDP_PASS,
        Slot::new(default, Reason::Pass),
    )?;
    swap_to(&mut lab, &[(&deny, deny_l), (&class, class_l)], 1)?;
    let cases = [
        (
            "deny feed, IPv4, default class",
            ip4([198, 18, 9, 1]),
            XDP_DROP,
            Slot::new(default, Reason::FeedDeny),
        ),
        (
            "deny feed, IPv6",
            ip6("2001:db8:66::5"),
            XDP_DROP,
            Slot::new(default, Reason::FeedDeny),
        ),
        (
            "an allow rule wins over a deny feed",
            ip4([198, 18, 0, 7]),
            XDP_PASS,
            Slot::new(internal, Reason::Allow),
        ),
        (
            "a deny rule stays a deny",
            ip4([198, 18, 66, 1]),
            XDP_DROP,
            Slot::new(UNCLASSIFIED, Reason::Deny),
        ),
        (
            "deny feed over a limit rule, counted in its class",
            ip4([198, 18, 1, 1]),
            XDP_DROP,
            Slot::new(limited, Reason::FeedDeny),
        ),
        (
            "deny before class, whatever the prefix lengths",
            ip4([198, 18, 1, 9]),
            XDP_DROP,
            Slot::new(limited, Reason::FeedDeny),
        ),
        (
            "class feed, IPv6: the rule-less source moves to the class",
            ip6("2001:db8:1::1"),
            XDP_PASS,
            Slot::new(internal, Reason::Pass),
        ),
        (
            "unlisted IPv6",
            ip6("2001:db8:9::1"),
            XDP_PASS,
            Slot::new(default, Reason::Pass),
        ),
    ];
    for (name, src, action, slot) in cases {
        lab.expect(name, &udp(src), action, slot)?;
    }
    // Next generation: only the class feed. A cached deny re-resolves at once.
    swap_to(&mut lab, &[(&class, class_l)], 2)?;
    lab.expect(
        "after the swap: no longer listed",
        &udp(ip4([198, 18, 9, 1])),
        XDP_PASS,
        Slot::new(default, Reason::Pass),
    )?;
    lab.expect(
        "after the swap: the class feed moves a limited source",
        &udp(ip4([198, 18, 1, 9])),
        XDP_PASS,
        Slot::new(internal, Reason::Pass),
    )?;
    lab.expect(
        "after the swap: deny feed gone",
        &udp(ip6("2001:db8:66::5")),
        XDP_PASS,
        Slot::new(default, Reason::Pass),
    )?;
    Ok(())
}
