//! Issue 13 items 5 and 6: a real scrape of a daemon with a feed, an offender class and a
//! ban holds every metric the shipped Grafana dashboard queries (the fleet's need a
//! `[fleet]` and a Redis: `fleet::` checks those), the series with a known label set are
//! there at 0 before any traffic, and promtool accepts the exposition.

use std::{collections::BTreeSet, io::Write as _, process::Command, time::Duration};

use traffic_testkit::dashboard;

use crate::hostile_host::links::Rig;
use crate::support::{poll, trafficctl};

fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .flat_map(dashboard::metric_names)
        .collect()
}

pub fn a_real_scrape_holds_every_metric_of_the_dashboard() {
    let rig = Rig::new("dash", "127.0.0.1:19301");
    let list = rig.tmp.path("list.txt");
    std::fs::write(&list, "# test list\n198.18.1.200/32\n2001:db8:7::/48\n").unwrap();
    // The rig's config, with the pressure read (the throttle's panels) and an upstream (the
    // breaker's, gate's and bulkhead's).
    let text = format!(
        r#"
[daemon]
interfaces = ["{iface}"]
pin_dir = "{pins}"
[admin]
socket = "{socket}"
socket_group = ""
[metrics]
listen = "{metrics}"
[pressure.signal]
cpu = "auto"
memory = "auto"
io = "auto"
[classes.default]
packets = {{ rate = 1000 }}
[classes.premium]
packets = {{ rate = 1, per = "1m", burst = 20 }}
[[rules]]
cidr = "198.18.1.0/24"
class = "premium"
[[upstreams]]
name = "web"
port = 8080
probe = "none"
max_connections = 100
[bans]
state_file = "{state}"
[classes.premium.offender]
drop_ratio = 0.9
[[feeds]]
name = "local"
source = "{list}"
action = "deny"
"#,
        iface = rig.iface(),
        pins = rig.pins.0.display(),
        socket = rig.socket(),
        metrics = rig.metrics,
        state = rig.tmp.path("bans.json").display(),
        list = list.display(),
    );
    std::fs::write(rig.config_path(), text).unwrap();
    let _d = rig.start();

    // Before any traffic: the drop series are there, at 0.
    let first = rig.metrics_text();
    assert!(
        first.contains(
            "traffic_packets_total{class=\"premium\",outcome=\"drop\",reason=\"packet_rate\"} 0"
        ),
        "no zero drop series:\n{first}"
    );
    assert!(first.contains("process_resident_memory_bytes"), "{first}");
    assert!(first.contains("traffic_start_time_seconds"), "{first}");

    let socket = rig.socket();
    let (code, _, err) = trafficctl(&[
        "--socket",
        &socket,
        "ban",
        "198.18.1.77",
        "--for",
        "1h",
        "--reason",
        "dashboard test",
    ]);
    assert_eq!(code, 0, "ban: {err}");
    // A breaker transition (forced open, then reset) for the transitions panel.
    for op in ["open", "reset"] {
        let (code, _, err) = trafficctl(&["--socket", &socket, "circuit", op, "web"]);
        assert_eq!(code, 0, "circuit {op}: {err}");
    }
    let text = poll(
        "the feed's prefixes and the ban in the scrape",
        Duration::from_secs(10),
        || {
            let t = rig.metrics_text();
            (t.contains("traffic_feed_prefixes{feed=\"local\"} 2")
                && t.contains("traffic_bans_total")
                && t.contains("traffic_upstream_connections{"))
            .then_some(t)
        },
    );

    let scraped = scraped_names(&text);
    let queries = dashboard::queries(&std::fs::read_to_string(dashboard::path()).unwrap()).unwrap();
    let mut missing = BTreeSet::new();
    for q in &queries {
        for n in dashboard::metric_names(&q.expr) {
            if !scraped.contains(&n) && !n.starts_with("traffic_fleet_") {
                missing.insert(format!("{n} ({})", q.panel));
            }
        }
    }
    assert!(missing.is_empty(), "not in the scrape: {missing:?}\n{text}");

    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
