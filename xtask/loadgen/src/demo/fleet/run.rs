//! The fleet story: the load, a line a second, the report, the chart, the check.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Which node the attacker floods now (0: none).
static ATTACKER_AT: AtomicUsize = AtomicUsize::new(0);
const ATTACK_PPS: f64 = 400.0;
const CLIENT_SECS: f64 = 36.0;

/// What the main loop saw of the ban.
#[derive(Default)]
struct BanSeen {
    /// Seconds into the run when node k listed it.
    at: [Option<f64>; 3],
}

pub fn run(bin_dir: &Path, check: bool) -> Result<()> {
    super::super::install_interrupt_handler();
    ensure!(
        traffic_testkit::is_root(),
        "the demo creates network namespaces and loads XDP: run it as root"
    );
    let tag = unique_tag();
    let tmp = std::env::temp_dir().join(format!("traffic-demo-fleet-{tag}"));
    std::fs::create_dir_all(&tmp)?;
    println!("==> redis-server and three nodes (namespaces trf{tag}-redis, trf*-node)");
    let built = build(bin_dir, &tag, &tmp);
    let result = built.and_then(|(redis, nodes)| {
        let r = story(&nodes);
        drop(nodes);
        drop(redis);
        r
    });
    if result.is_err() {
        eprintln!("(logs kept in {})", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    println!("==> daemons, redis-server, namespaces, links and pins removed");
    let (seen, client_total, t_client, attacker_after) = result?;
    let allowed = RATE * t_client + BURST;
    let bound = allowed + 2.0 * (BURST + 2.0 * RATE * INTERVAL);
    let spread = match seen.at {
        [Some(a), Some(b), Some(c)] => Some(((b - a).max(c - a)) * 1000.0),
        _ => None,
    };
    println!("\n==> report\n");
    println!(
        "  client (fleet-wide {RATE}/s, burst {BURST}), {RATE}/s to each of 3 nodes for {t_client:.0} s:"
    );
    println!(
        "    passed {client_total} in all; rate·t + burst = {allowed:.0}; bound with 3 nodes and a {:.0} ms sync = {bound:.0} (each node on its own would pass about {allowed:.0}: {:.0} in all)",
        INTERVAL * 1000.0,
        3.0 * allowed
    );
    match spread {
        Some(ms) => println!(
            "  attacker: banned on node1 at {:.1} s by its offender rule; on node2 and node3 {ms:.0} ms later; passed {attacker_after} after rotating",
            seen.at[0].unwrap_or(0.0)
        ),
        None => println!(
            "  attacker: the ban did not reach every node: {:?}",
            seen.at
        ),
    }
    if check {
        ensure!(!interrupted(), "interrupted");
        ensure!(
            spread.is_some_and(|ms| ms <= 1000.0),
            "the ban did not reach both other nodes within a second: {:?}",
            seen.at
        );
        ensure!(
            attacker_after == 0,
            "the attacker passed {attacker_after} after the ban"
        );
        ensure!(
            (client_total as f64) <= bound && (client_total as f64) >= 0.8 * RATE * t_client,
            "the client passed {client_total}, outside 80 % of rate·t … {bound:.0}"
        );
        println!("\n==> check passed");
    }
    Ok(())
}

/// Run the load; returns what was seen of the ban, the client's total, its sending time and
/// what the attacker passed on nodes 2 and 3.
fn story(nodes: &[Node]) -> Result<(BanSeen, u64, f64, u64)> {
    let sinks = nodes
        .iter()
        .map(|n| UdpSink::start(&n.topo.node, PORT, 1))
        .collect::<Result<Vec<_>>>()?;
    let client = IpAddr::V4(nodes[0].topo.hosts[0].v4(CLIENT));
    let attacker = IpAddr::V4(nodes[0].topo.hosts[0].v4(ATTACKER));
    let prefix = format!("{attacker}/32");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flood = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut seen = BanSeen::default();
    let mut timeline: Vec<Second> = Vec::new();
    let mut marks: Vec<Mark> = Vec::new();
    let mut last: Vec<BTreeMap<IpAddr, u64>> = vec![BTreeMap::new(); 3];
    let (mut client_total, mut attacker_after) = (0u64, 0u64);
    std::thread::scope(|s| -> Result<()> {
        for n in nodes {
            let (host, stop) = (&n.topo.hosts[0], stop.clone());
            s.spawn(move || run_flows(&host.ns, &[flow(client, RATE, CLIENT_SECS)], &stop));
        }
        let (stop2, flood) = (stop.clone(), stop_flood.clone());
        s.spawn(move || attack(nodes, attacker, &stop2, &flood));
        let mut next = start + Duration::from_secs(1);
        while start.elapsed() < RUN && !interrupted() {
            let t = start.elapsed().as_secs_f64();
            for (k, n) in nodes.iter().enumerate() {
                if seen.at[k].is_none()
                    && (k > 0 || ATTACKER_AT.load(Ordering::Relaxed) > 0)
                    && banned(n, &prefix)
                {
                    seen.at[k] = Some(t);
                    marks.push(Mark {
                        t,
                        kind: "note",
                        label: format!("banned on node{}", k + 1),
                    });
                    if k == 0 {
                        stop_flood.store(true, Ordering::Relaxed);
                    }
                }
            }
            if Instant::now() >= next {
                let sec = sample(&sinks, &mut last, client, attacker, t, &mut timeline);
                client_total += sec.0;
                attacker_after += sec.1;
                next += Duration::from_secs(1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    for (k, sink) in sinks.into_iter().enumerate() {
        let got = sink.finish(Duration::from_secs(2));
        let prev = &last[k];
        let d = |a: IpAddr| got.get(&a).copied().unwrap_or(0) - prev.get(&a).copied().unwrap_or(0);
        client_total += d(client);
        if k > 0 {
            attacker_after += d(attacker);
        }
    }
    write_chart(&timeline, &marks)?;
    Ok((
        seen,
        client_total,
        CLIENT_SECS.min(RUN.as_secs_f64()),
        attacker_after,
    ))
}

/// The attacker: node 1 until it is banned there (or 15 s), then 4 s on node 2 and node 3.
fn attack(nodes: &[Node], src: IpAddr, stop: &Arc<AtomicBool>, flood: &Arc<AtomicBool>) {
    std::thread::sleep(Duration::from_secs(3));
    let plan = [(0usize, 15.0), (1, 4.0), (2, 4.0)];
    for (k, secs) in plan {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        ATTACKER_AT.store(k + 1, Ordering::Relaxed);
        let host = &nodes[k].topo.hosts[0];
        let until = if k == 0 { flood.clone() } else { stop.clone() };
        let _ = run_flows(&host.ns, &[flow(src, ATTACK_PPS, secs)], &until);
        ATTACKER_AT.store(0, Ordering::Relaxed);
        if k == 0 {
            // A moment for the operator to see it: then it tries the next nodes.
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// One second: counts per node from the sinks, a line printed, a point of the chart.
/// Returns the client's passes and the attacker's on nodes 2 and 3 in the second.
fn sample(
    sinks: &[UdpSink],
    last: &mut [BTreeMap<IpAddr, u64>],
    client: IpAddr,
    attacker: IpAddr,
    t: f64,
    timeline: &mut Vec<Second>,
) -> (u64, u64) {
    let mut sec = Second {
        t,
        dt: 1.0,
        phase: "fleet".into(),
        level: "none".into(),
        ..Second::default()
    };
    let at = ATTACKER_AT.load(Ordering::Relaxed);
    let (mut total, mut after) = (0u64, 0u64);
    let mut line = format!("{t:5.1}s  client");
    for (k, sink) in sinks.iter().enumerate() {
        let now = sink.snapshot();
        let d =
            |a: IpAddr| now.get(&a).copied().unwrap_or(0) - last[k].get(&a).copied().unwrap_or(0);
        let (c, a) = (d(client), d(attacker));
        total += c;
        if k > 0 {
            after += a;
        }
        line.push_str(&format!(" n{} {c:3}", k + 1));
        let offered = if t <= CLIENT_SECS { RATE as u64 } else { 0 };
        sec.classes.insert(
            format!("client@node{}", k + 1),
            ClassSecond {
                offered,
                passed: c,
                dropped: offered.saturating_sub(c),
                allowed: 0,
            },
        );
        let a_off = if at == k + 1 { ATTACK_PPS as u64 } else { 0 };
        sec.classes.insert(
            format!("attacker@node{}", k + 1),
            ClassSecond {
                offered: a_off,
                passed: a,
                dropped: a_off.saturating_sub(a),
                allowed: 0,
            },
        );
        last[k] = now.into_iter().collect();
    }
    let offered = if t <= CLIENT_SECS { 3 * RATE as u64 } else { 0 };
    sec.classes.insert(
        "client (fleet)".into(),
        ClassSecond {
            offered,
            passed: total,
            dropped: offered.saturating_sub(total),
            allowed: if t <= CLIENT_SECS { RATE as u64 } else { 0 },
        },
    );
    println!(
        "{line} = {total:3}/s (fleet limit {RATE}/s)  attacker {}",
        if at == 0 {
            "idle".to_owned()
        } else {
            format!("flooding node{at}")
        }
    );
    timeline.push(sec);
    (total, after)
}

fn write_chart(timeline: &[Second], marks: &[Mark]) -> Result<()> {
    let dir = crate::target_dir().join("demo");
    std::fs::create_dir_all(&dir)?;
    let mut panels = vec!["client (fleet)".to_owned()];
    panels.extend((1..=3).map(|k| format!("client@node{k}")));
    panels.extend((1..=3).map(|k| format!("attacker@node{k}")));
    let svg = chart::svg(
        "demo --fleet: three nodes, one budget, one ban",
        &format!(
            "client 198.18.1.11 sends {RATE}/s to each node, held to {RATE}/s fleet-wide (allowed line); attacker floods node1, is banned, tries node2 and node3"
        ),
        timeline,
        marks,
        &panels,
        &[],
    );
    let svg_path = dir.join("fleet.svg");
    std::fs::write(&svg_path, svg)?;
    let json_path = dir.join("fleet.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&serde_json::json!({
            "rate": RATE, "burst": BURST, "budget_interval": INTERVAL,
            "timeline": timeline,
            "marks": marks.iter().map(|m| serde_json::json!({"t": m.t, "label": m.label})).collect::<Vec<_>>(),
        }))?,
    )?;
    println!(
        "\n==> chart {}\n    data  {}",
        svg_path.display(),
        json_path.display()
    );
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}
