//! The daemon's admin API as the generator reads it, through the daemon's one client
//! ([`traffic_daemon::api::client`]): requests with a JSON body, and the
//! few fields of `/v1/status`, `/v1/limits`, `/v1/circuits` and `/v1/counters` the demo
//! follows, read from `serde_json::Value`.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::Value;
use traffic_daemon::api::{Client, Message};

/// The admin API client the generator uses on `socket` (10 s read timeout).
fn client(socket: &Path) -> Client {
    Client::new(socket).with_timeout(Duration::from_secs(10))
}

/// GET a JSON document (2xx only).
pub fn get_json(socket: &Path, path: &str) -> Result<Value> {
    client(socket)
        .get(path)
        .with_context(|| format!("GET {path}"))
}

/// `POST /v1/chaos` on an upstream for `duration`; returns the daemon's message.
pub fn chaos(
    socket: &Path,
    upstream: &str,
    drop: f64,
    reset: f64,
    duration: Duration,
) -> Result<String> {
    let body = serde_json::json!({
        "upstream": upstream,
        "drop": drop,
        "reset": reset,
        "duration": format!("{}ms", duration.as_millis().max(1)),
    });
    let answer: Message = client(socket)
        .post_json("/v1/chaos", &body)
        .context("POST /v1/chaos")?;
    Ok(answer.message)
}

/// `DELETE /v1/chaos`.
pub fn chaos_stop(socket: &Path) -> Result<()> {
    let _: Value = client(socket)
        .delete("/v1/chaos")
        .context("DELETE /v1/chaos")?;
    Ok(())
}

/// One token bucket as `/v1/limits` reports it (after the throttle factor).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Bucket {
    pub rate_per_sec: f64,
    pub burst: f64,
}

impl Bucket {
    fn from(v: &Value) -> Option<Self> {
        Some(Self {
            rate_per_sec: v["rate_per_sec"].as_f64()?,
            burst: v["burst"].as_f64()?,
        })
    }
}

/// A daemon class's limits in force.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ClassLimits {
    pub factor: f64,
    /// Stacked packet limits (all must allow).
    pub packets: Vec<Bucket>,
    pub bytes: Option<Bucket>,
    pub aggregate_v4: u8,
    pub aggregate_v6: u8,
    pub admission: Option<Bucket>,
    pub overflow: Option<Bucket>,
}

/// `/v1/limits`: level and per-class limits.
pub fn limits(v: &Value) -> (String, BTreeMap<String, ClassLimits>) {
    let mut out = BTreeMap::new();
    for c in v["classes"].as_array().into_iter().flatten() {
        let Some(name) = c["class"].as_str() else {
            continue;
        };
        out.insert(
            name.to_owned(),
            ClassLimits {
                factor: c["factor"].as_f64().unwrap_or(1.0),
                packets: c["packets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Bucket::from)
                    .collect(),
                bytes: Bucket::from(&c["bytes"]),
                aggregate_v4: c["aggregate_v4"].as_u64().unwrap_or(32) as u8,
                aggregate_v6: c["aggregate_v6"].as_u64().unwrap_or(64) as u8,
                admission: Bucket::from(&c["admission"]),
                overflow: Bucket::from(&c["overflow"]),
            },
        );
    }
    (v["level"].as_str().unwrap_or("?").to_owned(), out)
}

/// Throttle level and the CPU reading from `/v1/status`.
pub fn throttle(v: &Value) -> (String, Option<f64>) {
    let t = &v["throttle"];
    let level = t["level"].as_str().unwrap_or("none").to_owned();
    let cpu = t["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["resource"] == "cpu")
        .and_then(|r| r["ratio"].as_f64());
    (level, cpu)
}

/// One upstream in `/v1/circuits`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Circuit {
    pub name: String,
    pub port: u16,
    pub state: String,
    /// Gate counters: SYNs seen, refused by an open breaker, answered with RST, shed.
    pub syns: u64,
    pub gated: u64,
    pub resets: u64,
    pub shed: u64,
    /// (at seconds since the daemon started, from, to, reason)
    pub transitions: Vec<(f64, String, String, String)>,
}

/// `/v1/circuits`.
pub fn circuits(v: &Value) -> Vec<Circuit> {
    v["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| Circuit {
            name: u["name"].as_str().unwrap_or("?").to_owned(),
            port: u["port"].as_u64().unwrap_or(0) as u16,
            state: u["breaker"]["state"].as_str().unwrap_or("?").to_owned(),
            syns: u["gate"]["syns"].as_u64().unwrap_or(0),
            gated: u["gate"]["gated"].as_u64().unwrap_or(0),
            resets: u["gate"]["resets"].as_u64().unwrap_or(0),
            shed: u["gate"]["shed"].as_u64().unwrap_or(0),
            transitions: u["transitions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let s = |k: &str| t[k].as_str().unwrap_or("?").to_owned();
                    (
                        t["at_seconds"].as_f64().unwrap_or(0.0),
                        s("from"),
                        s("to"),
                        s("reason"),
                    )
                })
                .collect(),
        })
        .collect()
}

/// `/v1/counters`: (passed, dropped) packets per daemon class; deny-rule drops of sources
/// without a class are reported under "denied".
pub fn counters(v: &Value) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for c in v["classes"].as_array().into_iter().flatten() {
        let name = c["class"].as_str().unwrap_or("?").to_owned();
        let passed = c["passed"]["packets"].as_u64().unwrap_or(0);
        let mut dropped = c["dropped"]["packets"].as_u64().unwrap_or(0);
        if name == "unclassified" {
            for r in c["reasons"].as_array().into_iter().flatten() {
                if r["reason"] == "deny" {
                    let n = r["packets"].as_u64().unwrap_or(0);
                    let e: &mut (u64, u64) = out.entry("denied".to_owned()).or_default();
                    e.1 += n;
                    dropped -= n.min(dropped);
                }
            }
        }
        let e = out.entry(name).or_default();
        e.0 += passed;
        e.1 += dropped;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use super::*;

    #[test]
    fn reads_limits_status_and_circuits() {
        let l: Value = serde_json::from_str(
            r#"{"level":"high","classes":[{"class":"premium","factor":0.6,"packets":[{"rate_per_sec":1200.0,"burst":2400}],
            "bytes":{"rate_per_sec":1.2e7,"burst":2400000},"aggregate_v4":32,"aggregate_v6":64,"admission":null,"overflow":null}]}"#,
        )
        .unwrap();
        let (level, m) = limits(&l);
        assert_eq!(level, "high");
        assert_eq!(
            m["premium"].packets,
            vec![Bucket {
                rate_per_sec: 1200.0,
                burst: 2400.0
            }]
        );
        assert!(m["premium"].admission.is_none());
        let s: Value = serde_json::from_str(
            r#"{"throttle":{"level":"low","resources":[{"resource":"cpu","ratio":0.61}]}}"#,
        )
        .unwrap();
        assert_eq!(throttle(&s), ("low".to_owned(), Some(0.61)));
        let c: Value = serde_json::from_str(
            r#"{"upstreams":[{"name":"web","port":8080,"breaker":{"state":"open"},"gate":{"syns":9,"gated":4,"resets":4,"shed":0},
            "transitions":[{"at_seconds":12.5,"from":"closed","to":"open","reason":"5 consecutive failures"}]}]}"#,
        )
        .unwrap();
        let c = circuits(&c);
        assert_eq!(c[0].state, "open");
        assert_eq!(c[0].resets, 4);
        assert_eq!(c[0].transitions[0].2, "open");
    }
}
