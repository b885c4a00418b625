//! The file as written (serde, `deny_unknown_fields`); `validate` turns it into a
//! [`Config`](super::Config).

use std::{fmt, ops::Range};

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{MapAccess, SeqAccess, Visitor},
};
use toml::Spanned;

use super::lists::{OneOrList, PortItem};
use crate::{
    policy::throttle::{Priority, PriorityMultipliers, Thresholds},
    pressure::{PerResource, Signal},
};

/// `[daemon] attach`: how the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Native (driver) mode where the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// Native mode only; fail if the driver lacks it.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// `enforce` drops; `monitor` counts would-drops and passes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Monitor,
}

/// `[daemon] on_exit`: what happens to enforcement when trafficd stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExit {
    /// Detach the program: traffic flows unfiltered until trafficd starts again.
    #[default]
    Detach,
    /// Keep the pinned program attached and enforcing with the last limits.
    Keep,
}

/// What a source rule does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    #[default]
    Limit,
    Allow,
    Deny,
}

/// Transport protocol of a port rule or upstream.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => traffic_common::proto::TCP,
            Protocol::Udp => traffic_common::proto::UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How an upstream is probed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// A TCP connect to the port.
    #[default]
    Tcp,
    /// An HTTP GET of `path`, expecting 2xx or 3xx.
    Http,
    /// No active probe: only the passive signal feeds the breaker.
    None,
}

/// What the gate does with a refused new connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateAction {
    /// Answer with a TCP RST (the client fails fast).
    #[default]
    Reset,
    /// Drop silently (the client retransmits its SYN until it times out).
    Drop,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) daemon: Spanned<RawDaemon>,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) classes: Ordered<Spanned<RawClass>>,
    #[serde(default)]
    pub(super) rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(super) ports: Vec<Spanned<RawPort>>,
    pub(super) breaker: Option<Spanned<RawBreaker>>,
    #[serde(default)]
    pub(super) upstreams: Vec<Spanned<RawUpstream>>,
    pub(super) pressure: Option<Spanned<RawPressure>>,
    pub(super) throttle: Option<Spanned<RawThrottle>>,
    pub(super) baseline: Option<Spanned<RawBaseline>>,
    pub(super) bans: Option<Spanned<super::bans::RawBans>>,
    #[serde(default)]
    pub(super) feeds: Vec<Spanned<super::feeds::RawFeed>>,
    pub(super) fleet: Option<Spanned<super::fleet::RawFleet>>,
}

/// `[baseline]`: what `trafficctl suggest` observes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBaseline {
    pub(super) enabled: Option<bool>,
    pub(super) window: Option<Spanned<String>>,
    pub(super) max_sources: Option<Spanned<i64>>,
}

/// A per-resource table where every resource is optional (the rest keep their default).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPerResource<T> {
    pub(super) cpu: Option<Spanned<T>>,
    pub(super) memory: Option<Spanned<T>>,
    pub(super) io: Option<Spanned<T>>,
}

impl<T: Clone> RawPerResource<T> {
    pub(super) fn merge(
        &self,
        into: &mut PerResource<T>,
        spans: &mut Vec<(String, Range<usize>)>,
        table: &str,
    ) {
        for (name, v, slot) in [
            ("cpu", &self.cpu, &mut into.cpu),
            ("memory", &self.memory, &mut into.memory),
            ("io", &self.io, &mut into.io),
        ] {
            if let Some(v) = v {
                *slot = v.get_ref().clone();
                spans.push((format!("{table}.{name}"), v.span()));
            }
        }
    }
}

/// A per-level table where every level is optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPerLevel<T> {
    pub(super) low: Option<Spanned<T>>,
    pub(super) medium: Option<Spanned<T>>,
    pub(super) high: Option<Spanned<T>>,
    pub(super) critical: Option<Spanned<T>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPressure {
    pub(super) root: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) signal: Option<RawPerResource<Signal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThrottle {
    pub(super) hysteresis: Option<Spanned<f64>>,
    pub(super) min_dwell: Option<Spanned<String>>,
    pub(super) thresholds: Option<RawPerResource<Thresholds>>,
    pub(super) multipliers: Option<RawPerLevel<f64>>,
    pub(super) max_connections: Option<RawPerLevel<i64>>,
    pub(super) priority: Option<Spanned<PriorityMultipliers>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPort {
    /// A port, a range "LOW-HIGH", or a list of both (see `lists`).
    pub(super) port: Spanned<OneOrList<PortItem>>,
    #[serde(default)]
    pub(super) protocol: Protocol,
    pub(super) class: Option<Spanned<String>>,
    pub(super) new_connections: Option<RawLimit>,
}

/// A breaker window: an integer (last N outcomes) or a duration string.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a count of outcomes (integer) or a duration such as \"30s\""
)]
pub(super) enum RawWindow {
    Count(i64),
    Time(String),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    pub(super) window: Option<Spanned<RawWindow>>,
    pub(super) error_threshold: Option<Spanned<f64>>,
    pub(super) min_requests: Option<Spanned<i64>>,
    pub(super) consecutive_failures: Option<Spanned<i64>>,
    pub(super) reset_timeout: Option<Spanned<String>>,
    pub(super) backoff: Option<Spanned<BackoffKind>>,
    pub(super) backoff_factor: Option<Spanned<f64>>,
    pub(super) backoff_cap: Option<Spanned<String>>,
    pub(super) half_open_trials: Option<Spanned<i64>>,
    pub(super) half_open_interval: Option<Spanned<String>>,
    pub(super) success_threshold: Option<Spanned<i64>>,
    /// Only in the top-level `[breaker]`.
    #[serde(default)]
    pub(super) groups: Ordered<Spanned<RawBreaker>>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum BackoffKind {
    Immediate,
    Linear,
    Exponential,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Spanned<String>,
    pub(super) port: Spanned<i64>,
    #[serde(default)]
    pub(super) protocol: Protocol,
    pub(super) address: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) probe: ProbeKind,
    pub(super) path: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) group: Option<Spanned<String>>,
    pub(super) backoff: Option<Spanned<BackoffKind>>,
    pub(super) backoff_factor: Option<Spanned<f64>>,
    pub(super) backoff_cap: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) gate: GateAction,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) accept_queue_ratio: Option<Spanned<f64>>,
    pub(super) passive: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) interfaces: Spanned<Vec<String>>,
    #[serde(default)]
    pub(super) attach: AttachMode,
    #[serde(default)]
    pub(super) mode: Mode,
    pub(super) default_class: Option<Spanned<String>>,
    pub(super) summary_interval: Option<Spanned<String>>,
    pub(super) pin_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) on_exit: OnExit,
    pub(super) max_sources: Option<Spanned<i64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) socket: Option<Spanned<String>>,
    pub(super) socket_mode: Option<Spanned<String>>,
    pub(super) socket_group: Option<String>,
    pub(super) control_group: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClass {
    #[serde(default)]
    pub(super) priority: Priority,
    pub(super) mode: Option<Mode>,
    pub(super) packets: Option<OneOrMany<RawLimit>>,
    pub(super) bytes: Option<RawByteLimit>,
    pub(super) aggregate_v4: Option<Spanned<i64>>,
    pub(super) aggregate_v6: Option<Spanned<i64>>,
    pub(super) admission: Option<RawLimit>,
    pub(super) overflow: Option<RawLimit>,
    pub(super) offender: Option<Spanned<super::bans::RawOffender>>,
    pub(super) scope: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimit {
    pub(super) rate: Spanned<f64>,
    pub(super) per: Option<Spanned<String>>,
    pub(super) burst: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawByteLimit {
    pub(super) rate: Spanned<Size>,
    pub(super) per: Option<Spanned<String>>,
    pub(super) burst: Option<Spanned<Size>>,
}

/// A byte size written as an integer or a string with a unit.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a byte size: an integer or a string such as \"20MB\""
)]
pub(super) enum Size {
    Int(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    /// A CIDR or a list of them (see `lists`).
    pub(super) cidr: Spanned<OneOrList<String>>,
    #[serde(default)]
    pub(super) action: RuleAction,
    pub(super) class: Option<Spanned<String>>,
}

/// A TOML table kept in document order.
pub(super) struct Ordered<T>(pub(super) Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// One inline table or an array of them (`packets = { … }` or `packets = [{ … }, { … }]`).
pub(super) struct OneOrMany<T>(pub(super) Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a limit table or an array of limit tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|one| OneOrMany(vec![one]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The raw structs of a parsed (and possibly merged, see `include`) document; a type error
/// is located by the caller, who knows which file its span is in.
pub(super) fn from_table(
    table: Spanned<toml::de::DeTable<'_>>,
) -> Result<RawConfig, toml::de::Error> {
    RawConfig::deserialize(toml::de::Deserializer::from(table))
}
