//! The fleet: several nodes sharing bans and one view through a Redis/Valkey server.
//!
//! Pure: key names, the wire forms of what nodes write (a ban, a heartbeat), their
//! validation (everything read from Redis is hostile: sizes, counts, strings and times are
//! bounded here before anything reaches the engine), and the reconciliation of the bans a
//! node holds with the fleet's set. The task that talks to Redis is
//! [`crate::serve::fleet`]; the credentials file is read by [`credentials`].
//!
//! Key design (every key under the namespace `NS`, in one hash tag `{NS}` so that a Redis
//! Cluster keeps them in one slot and the reconcile reads stay single-slot):
//! - `{NS}:bans` — hash, field = prefix (`203.0.113.0/24`), value = [`WireBan`] JSON;
//!   entries past their end are skipped by readers and deleted by the next writer;
//! - `{NS}:lifted` — hash, field = prefix, value = [`Tombstone`] JSON: a ban lifted with
//!   `unban --fleet`, so a node cut off meanwhile drops its own ban on reconnect instead of
//!   re-publishing it; a new ban of the prefix deletes it, readers delete it after
//!   [`MAX_DURATION`] (no ban it could stand for is still running);
//! - `{NS}:events` — pub/sub channel of [`Event`] JSON (a ban added or removed);
//! - `{NS}:node:NAME` — [`Heartbeat`] JSON with a TTL of three heartbeat intervals;
//! - `{NS}:nodes` — set of node names (a member whose key expired is dropped by readers);
//! - `{NS}:use:NAME` — hash of the sources node NAME shares its use of (fleet budgets,
//!   [`budget`]), field `CLASS ADDR/LEN`, value `EPOCH PACKETS BYTES`, expiring when the
//!   node stops writing it.

pub mod budget;
pub mod credentials;

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::bans::{Ban, MAX_DURATION, Origin, Prefix, validate_reason};
use crate::config::fleet::valid_name;

/// Largest value read from Redis that is parsed at all (a ban or heartbeat is far smaller).
pub const MAX_VALUE: usize = 4096;
/// Most nodes shown (and read) in the fleet view.
pub const MAX_NODES: usize = 256;
/// Most open breakers and top sources carried in one heartbeat.
pub const MAX_LIST: usize = 16;
/// Slack allowed between node clocks: a ban made "in the future" beyond it is refused.
pub const CLOCK_SKEW_MS: u64 = 60_000;

/// Redis key and channel names of one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    ns: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Self {
            ns: format!("{{{namespace}}}"),
        }
    }
    pub fn bans(&self) -> String {
        format!("{}:bans", self.ns)
    }
    pub fn events(&self) -> String {
        format!("{}:events", self.ns)
    }
    pub fn node(&self, name: &str) -> String {
        format!("{}:node:{name}", self.ns)
    }
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.ns)
    }
    /// Tombstones of bans lifted fleet-wide.
    pub fn lifted(&self) -> String {
        format!("{}:lifted", self.ns)
    }
    /// A node's use hash (fleet budgets, see [`budget`]).
    pub fn usage(&self, name: &str) -> String {
        format!("{}:use:{name}", self.ns)
    }
}

/// A ban as the fleet stores and sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBan {
    pub prefix: String,
    pub until_unix_ms: u64,
    pub reason: String,
    pub created_unix_ms: u64,
    /// The node that made it (it re-publishes it when Redis lost it).
    pub node: String,
}

impl WireBan {
    pub fn of(ban: &Ban, node: &str) -> Self {
        Self {
            prefix: ban.prefix.to_string(),
            until_unix_ms: ban.until_unix_ms,
            reason: ban.reason.clone(),
            created_unix_ms: ban.created_unix_ms,
            node: node.to_owned(),
        }
    }

    /// The ban a receiving node enforces, validated like operator input: family, prefix
    /// bounds, reason, an end in the future and at most [`MAX_DURATION`] away (plus clock
    /// skew). Never `force`: the receiving node's allow rules win over a fleet ban.
    pub fn to_ban(&self, now_unix_ms: u64) -> Result<Ban, String> {
        if !valid_name(&self.node) {
            return Err("invalid node name".into());
        }
        let prefix = Prefix::parse(&self.prefix).map_err(|e| e.to_string())?;
        let reason = validate_reason(&self.reason).map_err(|e| e.to_string())?;
        if self.until_unix_ms <= now_unix_ms {
            return Err("already ended".into());
        }
        let max = now_unix_ms
            .saturating_add(MAX_DURATION.as_millis() as u64)
            .saturating_add(CLOCK_SKEW_MS);
        if self.until_unix_ms > max {
            return Err("ends too far in the future".into());
        }
        Ok(Ban {
            prefix,
            until_unix_ms: self.until_unix_ms,
            reason,
            force: false,
            origin: Origin::Fleet,
            created_unix_ms: self.created_unix_ms.min(now_unix_ms + CLOCK_SKEW_MS),
        })
    }
}

/// A ban lifted fleet-wide, as the `lifted` hash keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub node: String,
    pub lifted_unix_ms: u64,
}

/// The bans this node shared that were lifted elsewhere after they were made (while this
/// node was cut off): dropped here, not re-published. A ban made after the lift stands.
pub fn lifted_since(own: &BTreeMap<Prefix, Ban>, lifted: &BTreeMap<Prefix, u64>) -> Vec<Prefix> {
    own.iter()
        .filter(|(p, b)| lifted.get(p).is_some_and(|&t| t >= b.created_unix_ms))
        .map(|(p, _)| *p)
        .collect()
}

/// A message on the events channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    Ban { ban: WireBan },
    Unban { prefix: String, node: String },
}

/// Parse a value read from Redis, refusing oversized ones before parsing.
pub fn parse_value<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() > MAX_VALUE {
        return Err(format!("{} bytes, at most {MAX_VALUE}", bytes.len()));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// One node as it describes itself every heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    pub version: String,
    pub seen_unix_ms: u64,
    /// Throttle level name (`NONE`, `LOW`, …).
    pub level: String,
    pub open_breakers: Vec<String>,
    pub bans: u64,
    pub fleet_bans: u64,
    pub top_sources: Vec<TopSource>,
}

/// A heavy source as one node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopSource {
    pub prefix: String,
    pub class: String,
    pub packets: u64,
    pub dropped: u64,
}

/// A short printable token (a version, level, class or upstream name) or `None`.
fn token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"\\".contains(&b))
}
const MAX_NAME_LEN: usize = 64;

impl Heartbeat {
    /// Check a heartbeat read from Redis: names printable and short, lists bounded, prefixes
    /// real prefixes, time not in the future beyond the skew.
    pub fn validate(mut self, now_unix_ms: u64) -> Result<Self, String> {
        if !valid_name(&self.node) {
            return Err("invalid node name".into());
        }
        if !token(&self.version) || !token(&self.level) {
            return Err("invalid version or level".into());
        }
        if self.seen_unix_ms > now_unix_ms + CLOCK_SKEW_MS {
            return Err("seen in the future".into());
        }
        if self.open_breakers.len() > MAX_LIST || self.top_sources.len() > MAX_LIST {
            return Err("list too long".into());
        }
        if !self.open_breakers.iter().all(|b| token(b)) {
            return Err("invalid breaker name".into());
        }
        for t in &self.top_sources {
            if !token(&t.class)
                || t.prefix.parse::<IpAddr>().is_err() && Prefix::parse(&t.prefix).is_err()
            {
                return Err("invalid top source".into());
            }
        }
        self.top_sources
            .sort_by_key(|t| std::cmp::Reverse(t.packets));
        Ok(self)
    }
}

/// What a reconciliation asks the engine and Redis to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Fleet bans to add or extend locally.
    pub apply: Vec<Ban>,
    /// Local fleet bans the fleet no longer has (unbanned or ended elsewhere).
    pub drop: Vec<Prefix>,
    /// This node's own shared bans missing from Redis (it restarted empty, or this node was
    /// cut off when it made them): written again.
    pub republish: Vec<Ban>,
    /// Fleet bans refused: over [`crate::config::fleet::FleetConfig::max_bans`].
    pub over_cap: usize,
}

/// Reconcile: `remote` is the fleet's set (validated, this node's own entries included),
/// `local` the node's book, `own` the bans this node shared and still holds.
///
/// A local ban made here (operator, automatic) is never replaced by a fleet one on the same
/// prefix, whatever its end; a fleet ban is replaced when the fleet's end differs, so the
/// same ban read twice (pub/sub and a reconcile, or after a partition) changes nothing.
pub fn reconcile(
    remote: &BTreeMap<Prefix, (Ban, String)>,
    local: &[Ban],
    own: &BTreeMap<Prefix, Ban>,
    self_node: &str,
    cap: usize,
) -> Plan {
    let mut plan = Plan::default();
    let by_prefix: BTreeMap<Prefix, &Ban> = local.iter().map(|b| (b.prefix, b)).collect();
    let mut fleet_count = local.iter().filter(|b| b.origin == Origin::Fleet).count();
    for (p, (ban, node)) in remote {
        if node == self_node || own.contains_key(p) {
            continue;
        }
        match by_prefix.get(p) {
            Some(l) if l.origin != Origin::Fleet => {}
            Some(l) if l.until_unix_ms == ban.until_unix_ms => {}
            Some(_) => plan.apply.push(ban.clone()),
            None if fleet_count >= cap => plan.over_cap += 1,
            None => {
                fleet_count += 1;
                plan.apply.push(ban.clone());
            }
        }
    }
    for l in local.iter().filter(|b| b.origin == Origin::Fleet) {
        if !remote.contains_key(&l.prefix) {
            plan.drop.push(l.prefix);
        }
    }
    for (p, b) in own {
        let theirs = remote.get(p);
        if theirs.is_none_or(|(r, _)| r.until_unix_ms < b.until_unix_ms) {
            plan.republish.push(b.clone());
        }
    }
    plan
}

/// What the fleet task reports (the view, the status line and the metrics read it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetSnapshot {
    pub node: String,
    pub url: String,
    pub connected: bool,
    /// Why it is not connected (the last error), if it is not.
    pub error: Option<String>,
    /// Last successful exchange with Redis (Unix ms; 0: never).
    pub last_sync_unix_ms: u64,
    pub bans_received: u64,
    pub bans_sent: u64,
    pub bans_refused: u64,
    pub budget_corrections: u64,
    /// Sources of fleet classes whose use this node shares now.
    #[serde(default)]
    pub budget_shared: u64,
    /// Entries of other nodes' use refused.
    #[serde(default)]
    pub budget_refused: u64,
    pub reconnects: u64,
    /// Bans this node shares (made here with `--fleet`), still in force.
    pub own_bans: u64,
    /// The nodes whose heartbeat is alive, this one included, by name.
    pub nodes: Vec<Heartbeat>,
}

impl FleetSnapshot {
    /// Seconds since the last successful exchange (`None`: never).
    pub fn lag_seconds(&self, now_unix_ms: u64) -> Option<f64> {
        (self.last_sync_unix_ms > 0)
            .then(|| now_unix_ms.saturating_sub(self.last_sync_unix_ms) as f64 / 1000.0)
    }
}

/// The snapshot as the fleet task writes it and the engine reads it.
pub type SharedSnapshot = std::sync::Arc<std::sync::Mutex<FleetSnapshot>>;

/// The fleet part of `trafficctl status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub node: String,
    pub connected: bool,
    pub error: Option<String>,
    pub lag_seconds: Option<f64>,
    pub nodes: usize,
}

/// Read the shared snapshot for the status report.
pub fn status(s: &SharedSnapshot) -> FleetStatus {
    let s = s.lock().unwrap_or_else(|e| e.into_inner());
    FleetStatus {
        node: s.node.clone(),
        connected: s.connected,
        error: s.error.clone(),
        lag_seconds: s.lag_seconds(crate::api::bans::unix_now_ms()),
        nodes: s.nodes.len(),
    }
}

/// `connected as n1 (3 nodes)` or `DISCONNECTED as n1: why`.
pub fn status_line(f: &FleetStatus) -> String {
    if f.connected {
        format!("connected as {} ({} nodes)", f.node, f.nodes)
    } else {
        format!(
            "DISCONNECTED as {}: {} (enforcing locally; reconnecting)",
            f.node,
            f.error.as_deref().unwrap_or("not connected yet")
        )
    }
}

#[cfg(test)]
mod tests;

/// Automatic bans waiting for the fleet task, at most (older ones are dropped, logged).
pub const MAX_OUTBOX: usize = 1024;
