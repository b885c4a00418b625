//! The shipped Grafana dashboard (`config/grafana/traffic.json`): the structure Grafana
//! needs, every metric name a query uses exported by the daemon, and the queries evaluated
//! by promtool over synthetic series. The real-scrape check is the privileged case
//! `operator::metrics`.
#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::{collections::BTreeSet, path::Path, process::Command};

use traffic_testkit::dashboard::{self, Query, for_promtool};

fn load() -> Vec<Query> {
    let text = std::fs::read_to_string(dashboard::path()).unwrap();
    dashboard::queries(&text).unwrap()
}

/// Every `traffic_*` name the daemon's sources spell out (the families it can export).
fn exported_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs" || x == "txt") {
                let text = std::fs::read_to_string(&p).unwrap();
                names.extend(dashboard::metric_names(&text));
            }
        }
    }
    names
}

#[test]
fn the_dashboard_is_grafana_json_and_uses_only_exported_metrics() {
    let queries = load();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let exported = exported_names();
    for q in &queries {
        let names = dashboard::metric_names(&q.expr);
        assert!(!names.is_empty(), "{}: no traffic_* metric", q.panel);
        for n in names {
            assert!(exported.contains(&n), "{}: {n} is not exported", q.panel);
        }
    }
    // The panels the issue asks for.
    let text = std::fs::read_to_string(dashboard::path()).unwrap();
    for name in [
        "traffic_packets_total",
        "traffic_throttle_level",
        "traffic_pressure_ratio",
        "traffic_breaker_state",
        "traffic_breaker_transitions_total",
        "traffic_gate_connections_total",
        "traffic_bans_active",
        "traffic_feed_prefixes",
        "traffic_watch_events_total",
    ] {
        assert!(text.contains(name), "no panel shows {name}");
    }
}

/// promtool, or `None` after saying loudly why the check is skipped (a failure in CI).
fn promtool() -> Option<&'static str> {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "promtool is missing (Debian package prometheus, installed by `cargo xtask setup`)"
    );
    eprintln!("SKIPPED: promtool is missing: the dashboard's queries were not evaluated");
    None
}

fn query<'a>(queries: &'a [Query], panel: &str) -> &'a Query {
    queries
        .iter()
        .find(|q| q.panel.starts_with(panel))
        .unwrap_or_else(|| panic!("no panel {panel}"))
}

#[test]
fn every_query_parses_and_the_main_ones_evaluate_to_what_the_series_say() {
    let Some(promtool) = promtool() else { return };
    let queries = load();
    let dir = std::env::temp_dir().join(format!("traffic-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.yml"), dashboard::recording_rules(&queries)).unwrap();
    let check = Command::new(promtool)
        .args(["check", "rules"])
        .arg(dir.join("rules.yml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // Counters rising by 60 (drops) and 120 (passes) a minute: 1/s and 2/s.
    let cases = [
        (
            query(&queries, "Passed and dropped"),
            "          - labels: '{class=\"basic\", outcome=\"drop\"}'\n            value: 1\n          - labels: '{class=\"basic\", outcome=\"pass\"}'\n            value: 2\n",
        ),
        (
            query(&queries, "Dropped packets by reason"),
            "          - labels: '{reason=\"packet_rate\"}'\n            value: 1\n",
        ),
        (
            query(&queries, "Throttle level"),
            "          - labels: '{}'\n            value: 2\n",
        ),
        (
            query(&queries, "Open breakers"),
            "          - labels: '{upstream=\"web\"}'\n            value: 1\n",
        ),
        (
            query(&queries, "Gate: RSTs"),
            "          - labels: '{upstream=\"web\"}'\n            value: 0.5\n",
        ),
        (
            query(&queries, "Bans in force"),
            "          - labels: '{}'\n            value: 3\n",
        ),
    ];
    let mut t = String::from(
        "rule_files:\n  - rules.yml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
    );
    for (series, values) in [
        (
            "traffic_packets_total{instance=\"n1\",class=\"basic\",outcome=\"drop\",reason=\"packet_rate\"}",
            "0+60x10",
        ),
        (
            "traffic_packets_total{instance=\"n1\",class=\"basic\",outcome=\"pass\",reason=\"pass\"}",
            "0+120x10",
        ),
        ("traffic_throttle_level{instance=\"n1\"}", "2x10"),
        (
            "traffic_breaker_state{instance=\"n1\",upstream=\"web\",state=\"open\"}",
            "1x10",
        ),
        (
            "traffic_breaker_state{instance=\"n1\",upstream=\"web\",state=\"closed\"}",
            "0x10",
        ),
        (
            "traffic_gate_connections_total{instance=\"n1\",upstream=\"web\",action=\"reset_sent\"}",
            "0+30x10",
        ),
        ("traffic_bans_active{instance=\"n1\"}", "3x10"),
    ] {
        t.push_str(&format!(
            "      - series: '{series}'\n        values: '{values}'\n"
        ));
    }
    t.push_str("    promql_expr_test:\n");
    for (q, samples) in cases {
        t.push_str(&format!(
            "      - expr: '{}'\n        eval_time: 10m\n        exp_samples:\n{samples}",
            for_promtool(&q.expr).replace('\'', "''")
        ));
    }
    std::fs::write(dir.join("test.yml"), &t).unwrap();
    let run = Command::new(promtool)
        .args(["test", "rules", "test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        run.status.success(),
        "promtool test rules:\n{t}\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
