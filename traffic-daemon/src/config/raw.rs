//! The file as written (serde, `deny_unknown_fields`), and its validation into [`Config`].

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{MapAccess, SeqAccess, Visitor},
};
use toml::Spanned;

use super::{
    AdminConfig, ClassSpec, Config, DaemonConfig, MetricsConfig, PortSpec, RateLimit, RuleSpec,
    UpstreamSpec,
    syntax::{self, KeyStyle, Problems, Unlocated},
};
use crate::{
    policy::{
        breaker::{Backoff, BreakerOverrides, BreakerSettings, Window},
        throttle::{Priority, PriorityMultipliers, Thresholds, ThrottleSettings},
    },
    pressure::{PerResource, PressureSettings, Signal},
    setting::SettingError,
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
    daemon: Spanned<RawDaemon>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    classes: Ordered<Spanned<RawClass>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    ports: Vec<Spanned<RawPort>>,
    breaker: Option<Spanned<RawBreaker>>,
    #[serde(default)]
    upstreams: Vec<Spanned<RawUpstream>>,
    pressure: Option<Spanned<RawPressure>>,
    throttle: Option<Spanned<RawThrottle>>,
}

/// A per-resource table where every resource is optional (the rest keep their default).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerResource<T> {
    cpu: Option<Spanned<T>>,
    memory: Option<Spanned<T>>,
    io: Option<Spanned<T>>,
}

impl<T: Clone> RawPerResource<T> {
    fn merge(
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
struct RawPerLevel<T> {
    low: Option<Spanned<T>>,
    medium: Option<Spanned<T>>,
    high: Option<Spanned<T>>,
    critical: Option<Spanned<T>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPressure {
    root: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    signal: Option<RawPerResource<Signal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    hysteresis: Option<Spanned<f64>>,
    min_dwell: Option<Spanned<String>>,
    thresholds: Option<RawPerResource<Thresholds>>,
    multipliers: Option<RawPerLevel<f64>>,
    max_connections: Option<RawPerLevel<i64>>,
    priority: Option<Spanned<PriorityMultipliers>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    port: Spanned<i64>,
    #[serde(default)]
    protocol: Protocol,
    class: Option<Spanned<String>>,
    new_connections: Option<RawLimit>,
}

/// A breaker window: an integer (last N outcomes) or a duration string.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a count of outcomes (integer) or a duration such as \"30s\""
)]
enum RawWindow {
    Count(i64),
    Time(String),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    window: Option<Spanned<RawWindow>>,
    error_threshold: Option<Spanned<f64>>,
    min_requests: Option<Spanned<i64>>,
    consecutive_failures: Option<Spanned<i64>>,
    reset_timeout: Option<Spanned<String>>,
    backoff: Option<Spanned<BackoffKind>>,
    backoff_factor: Option<Spanned<f64>>,
    backoff_cap: Option<Spanned<String>>,
    half_open_trials: Option<Spanned<i64>>,
    half_open_interval: Option<Spanned<String>>,
    success_threshold: Option<Spanned<i64>>,
    /// Only in the top-level `[breaker]`.
    #[serde(default)]
    groups: Ordered<Spanned<RawBreaker>>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BackoffKind {
    Immediate,
    Linear,
    Exponential,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: Spanned<String>,
    port: Spanned<i64>,
    #[serde(default)]
    protocol: Protocol,
    address: Option<Spanned<String>>,
    #[serde(default)]
    probe: ProbeKind,
    path: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    backoff: Option<Spanned<BackoffKind>>,
    backoff_factor: Option<Spanned<f64>>,
    backoff_cap: Option<Spanned<String>>,
    #[serde(default)]
    gate: GateAction,
    max_connections: Option<Spanned<i64>>,
    accept_queue_ratio: Option<Spanned<f64>>,
    passive: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    interfaces: Spanned<Vec<String>>,
    #[serde(default)]
    attach: AttachMode,
    #[serde(default)]
    mode: Mode,
    default_class: Option<Spanned<String>>,
    summary_interval: Option<Spanned<String>>,
    pin_dir: Option<Spanned<String>>,
    #[serde(default)]
    on_exit: OnExit,
    max_sources: Option<Spanned<i64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: Option<Spanned<String>>,
    socket_mode: Option<Spanned<String>>,
    socket_group: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    #[serde(default)]
    priority: Priority,
    mode: Option<Mode>,
    packets: Option<OneOrMany<RawLimit>>,
    bytes: Option<RawByteLimit>,
    aggregate_v4: Option<Spanned<i64>>,
    aggregate_v6: Option<Spanned<i64>>,
    admission: Option<RawLimit>,
    overflow: Option<RawLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    rate: Spanned<f64>,
    per: Option<Spanned<String>>,
    burst: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawByteLimit {
    rate: Spanned<Size>,
    per: Option<Spanned<String>>,
    burst: Option<Spanned<Size>>,
}

/// A byte size written as an integer or a string with a unit.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a byte size: an integer or a string such as \"20MB\""
)]
enum Size {
    Int(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    cidr: Spanned<String>,
    #[serde(default)]
    action: RuleAction,
    class: Option<Spanned<String>>,
}

/// A TOML table kept in document order.
pub(super) struct Ordered<T>(Vec<(String, T)>);

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
struct OneOrMany<T>(Vec<T>);

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

/// Parse the text into raw structs; a syntax or type error becomes one located problem.
pub(super) fn parse(text: &str) -> Result<RawConfig, Vec<Unlocated>> {
    toml::from_str::<RawConfig>(text)
        .map_err(|e| vec![syntax::toml_problem(text, &e, KeyStyle::Bare)])
}

/// Collects problems while validating: the shared checks of [`Problems`] plus the config's
/// rate and size checks.
struct Check {
    problems: Problems,
}

impl Check {
    fn err(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.problems.err(span, key, message);
    }

    fn duration(&mut self, v: &Spanned<String>, key: &str) -> Option<std::time::Duration> {
        self.problems.duration(v, key)
    }

    fn size(&mut self, v: &Spanned<Size>, key: &str) -> Option<u64> {
        let parsed = match v.get_ref() {
            Size::Int(i) if *i >= 0 => Ok(*i as u64),
            Size::Int(_) => Err("must not be negative".to_owned()),
            Size::Text(s) => syntax::parse_bytes(s),
        };
        match parsed {
            Ok(b) => Some(b),
            Err(m) => {
                self.err(v.span(), key, m);
                None
            }
        }
    }

    /// rate/per/burst → units per second and a burst. The burst defaults to the count per
    /// window (so `{ rate = 2000, per = "1m" }` allows 2000 at once, refilling over a minute).
    fn rate(
        &mut self,
        key: &str,
        rate: (f64, Range<usize>),
        per: Option<&Spanned<String>>,
        burst: Option<(f64, Range<usize>)>,
    ) -> Option<RateLimit> {
        let per_secs = match per {
            Some(p) => {
                let d = self.duration(p, &format!("{key}.per"))?;
                if d < std::time::Duration::from_millis(1)
                    || d > std::time::Duration::from_secs(86_400 * 7)
                {
                    self.err(p.span(), format!("{key}.per"), "must be between 1ms and 7d");
                    return None;
                }
                d.as_secs_f64()
            }
            None => 1.0,
        };
        let (count, rspan) = rate;
        if !count.is_finite() || count <= 0.0 {
            self.err(rspan, format!("{key}.rate"), "must be greater than 0");
            return None;
        }
        let rate_per_sec = count / per_secs;
        if rate_per_sec > 1e9 {
            self.err(
                rspan,
                format!("{key}.rate"),
                "must be at most 1e9 per second",
            );
            return None;
        }
        if rate_per_sec < 1e-6 {
            self.err(
                rspan,
                format!("{key}.rate"),
                "is below one per 11 days; use a smaller `per`",
            );
            return None;
        }
        let burst = match burst {
            Some((b, bspan)) => {
                if !b.is_finite() || b < 1.0 || b.fract() != 0.0 || b > 1e12 {
                    self.err(
                        bspan,
                        format!("{key}.burst"),
                        "must be a whole number between 1 and 1e12",
                    );
                    return None;
                }
                b as u64
            }
            None => count.ceil().max(1.0) as u64,
        };
        Some(RateLimit {
            rate_per_sec,
            burst,
        })
    }

    fn limit(&mut self, key: &str, l: &RawLimit) -> Option<RateLimit> {
        self.rate(
            key,
            (*l.rate.get_ref(), l.rate.span()),
            l.per.as_ref(),
            l.burst.as_ref().map(|b| (*b.get_ref(), b.span())),
        )
    }

    fn byte_limit(&mut self, key: &str, l: &RawByteLimit) -> Option<RateLimit> {
        let rate = self.size(&l.rate, &format!("{key}.rate"))?;
        let burst = match &l.burst {
            Some(b) => Some((self.size(b, &format!("{key}.burst"))? as f64, b.span())),
            None => None,
        };
        let limit = self.rate(key, (rate as f64, l.rate.span()), l.per.as_ref(), burst)?;
        // The byte burst must hold at least one full-size frame or nothing large would pass.
        if limit.burst < 1514 {
            let span = l.burst.as_ref().map_or(l.rate.span(), |b| b.span());
            self.err(
                span,
                format!("{key}.burst"),
                "must be at least 1514 bytes (one full Ethernet frame)",
            );
            return None;
        }
        Some(limit)
    }
}

fn prefix(c: &mut Check, v: &Option<Spanned<i64>>, key: &str, max: u8, default: u8) -> u8 {
    match v {
        None => default,
        Some(s) if (0..=i64::from(max)).contains(s.get_ref()) => *s.get_ref() as u8,
        Some(s) => {
            c.err(
                s.span(),
                key,
                format!("must be a prefix length between 0 and {max}"),
            );
            default
        }
    }
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr =
        IpAddr::from_str(addr.trim()).map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("prefix length in `{s}` must be between 0 and {max}"))?,
        None => max,
    };
    let masked = mask_addr(addr, len);
    if masked != addr {
        return Err(format!(
            "`{s}` has host bits set; did you mean `{masked}/{len}`?"
        ));
    }
    Ok((addr, len))
}

/// `addr` with every bit past `len` cleared.
pub fn mask_addr(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// Validate raw structs into a [`Config`], collecting every problem.
pub(super) fn validate(path: &Path, raw: RawConfig) -> Result<Config, Vec<Unlocated>> {
    let mut c = Check {
        problems: Problems::new(),
    };
    let daemon_span = raw.daemon.span();
    let d = raw.daemon.into_inner();

    // [daemon]
    let interfaces = d.interfaces.get_ref().clone();
    if interfaces.is_empty() {
        c.err(
            d.interfaces.span(),
            "daemon.interfaces",
            "must name at least one interface",
        );
    }
    let mut seen = HashSet::new();
    for name in &interfaces {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            c.err(
                d.interfaces.span(),
                "daemon.interfaces",
                format!("`{name}` is not a valid interface name"),
            );
        }
        if !seen.insert(name) {
            c.err(
                d.interfaces.span(),
                "daemon.interfaces",
                format!("`{name}` is listed twice"),
            );
        }
    }
    let summary_interval = match &d.summary_interval {
        Some(s) => match c.duration(s, "daemon.summary_interval") {
            Some(i) if i < std::time::Duration::from_secs(1) => {
                c.err(s.span(), "daemon.summary_interval", "must be at least 1s");
                i
            }
            Some(i) => i,
            None => std::time::Duration::default(),
        },
        None => std::time::Duration::from_secs(60),
    };
    let pin_dir = match &d.pin_dir {
        Some(p) if p.get_ref().starts_with("/sys/fs/bpf/") => PathBuf::from(p.get_ref()),
        Some(p) => {
            c.err(
                p.span(),
                "daemon.pin_dir",
                "must be a directory under /sys/fs/bpf/",
            );
            PathBuf::new()
        }
        None => PathBuf::from("/sys/fs/bpf/traffic"),
    };
    let max_sources = match &d.max_sources {
        None => traffic_common::BUCKETS_ENTRIES,
        Some(v) if (1024..=16_777_216).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            c.err(
                v.span(),
                "daemon.max_sources",
                "must be between 1024 and 16777216",
            );
            traffic_common::BUCKETS_ENTRIES
        }
    };

    // [admin]
    let socket = raw.admin.socket.as_ref().map_or_else(
        || PathBuf::from("/run/traffic/admin.sock"),
        |s| PathBuf::from(s.get_ref()),
    );
    if let Some(s) = &raw.admin.socket
        && !Path::new(s.get_ref()).is_absolute()
    {
        c.err(s.span(), "admin.socket", "must be an absolute path");
    }
    let socket_mode = match &raw.admin.socket_mode {
        None => 0o660,
        Some(m) => match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o777 => v,
            _ => {
                c.err(
                    m.span(),
                    "admin.socket_mode",
                    "must be octal permission bits such as \"0660\"",
                );
                0o660
            }
        },
    };
    let socket_group = match raw.admin.socket_group {
        Some(g) if g.is_empty() => None,
        Some(g) => Some(g),
        None => Some("traffic".to_owned()),
    };

    // [metrics]
    let listen = if raw.metrics.enabled == Some(false) {
        None
    } else {
        match &raw.metrics.listen {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9187))),
            Some(l) => match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    c.err(
                        l.span(),
                        "metrics.listen",
                        format!("`{}` is not an address:port", l.get_ref()),
                    );
                    None
                }
            },
        }
    };

    // [classes.*]
    // Without toml's `preserve_order` feature tables come sorted by key: restore file order.
    let mut raw_classes = raw.classes.0;
    raw_classes.sort_by_key(|(_, class)| class.span().start);
    let mut classes = Vec::new();
    if let Some((_, extra)) = raw_classes.get(traffic_common::MAX_CLASSES as usize) {
        c.err(
            extra.span(),
            "classes",
            format!(
                "at most {} classes are supported",
                traffic_common::MAX_CLASSES
            ),
        );
    }
    for (name, spanned) in &raw_classes {
        let span = spanned.span();
        let rc = spanned.get_ref();
        let key = format!("classes.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            c.err(
                span.clone(),
                &key,
                "class names use letters, digits, `_` and `-`",
            );
        }
        if name.len() > traffic_common::MAX_CLASS_NAME {
            c.err(
                span.clone(),
                &key,
                format!(
                    "class names are at most {} bytes",
                    traffic_common::MAX_CLASS_NAME
                ),
            );
        }
        let packets: Vec<RateLimit> = match &rc.packets {
            None => Vec::new(),
            Some(OneOrMany(list)) => {
                if list.len() > traffic_common::MAX_PACKET_LIMITS {
                    c.err(
                        span.clone(),
                        format!("{key}.packets"),
                        format!(
                            "at most {} stacked packet limits",
                            traffic_common::MAX_PACKET_LIMITS
                        ),
                    );
                }
                list.iter()
                    .enumerate()
                    .filter_map(|(i, l)| c.limit(&format!("{key}.packets[{i}]"), l))
                    .collect()
            }
        };
        let bytes = rc
            .bytes
            .as_ref()
            .and_then(|b| c.byte_limit(&format!("{key}.bytes"), b));
        let admission = rc
            .admission
            .as_ref()
            .and_then(|l| c.limit(&format!("{key}.admission"), l));
        let overflow = rc
            .overflow
            .as_ref()
            .and_then(|l| c.limit(&format!("{key}.overflow"), l));
        if rc.overflow.is_some() && rc.admission.is_none() {
            c.err(
                span.clone(),
                format!("{key}.overflow"),
                "needs `admission`: only sources over the admission budget use the overflow bucket",
            );
        }
        classes.push(ClassSpec {
            name: name.clone(),
            priority: rc.priority,
            mode: rc.mode,
            packets,
            bytes,
            aggregate_v4: prefix(
                &mut c,
                &rc.aggregate_v4,
                &format!("{key}.aggregate_v4"),
                32,
                32,
            ),
            aggregate_v6: prefix(
                &mut c,
                &rc.aggregate_v6,
                &format!("{key}.aggregate_v6"),
                128,
                64,
            ),
            admission,
            overflow,
        });
    }

    let class_index = |name: &str| classes.iter().position(|cl: &ClassSpec| cl.name == name);
    let default_class = match &d.default_class {
        Some(n) => match class_index(n.get_ref()) {
            Some(i) => i,
            None => {
                c.err(
                    n.span(),
                    "daemon.default_class",
                    format!("no class named `{}`", n.get_ref()),
                );
                0
            }
        },
        None => match class_index("default") {
            Some(i) => i,
            None => {
                c.err(
                    daemon_span.clone(),
                    "daemon.default_class",
                    "not set and there is no class named `default`",
                );
                0
            }
        },
    };

    // [[rules]]
    let mut rules = Vec::new();
    let mut seen_cidrs = HashSet::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let key = format!("rules[{i}]");
        let rr = r.get_ref();
        let (addr, prefix_len) = match parse_cidr(rr.cidr.get_ref()) {
            Ok(v) => v,
            Err(m) => {
                c.err(rr.cidr.span(), format!("{key}.cidr"), m);
                continue;
            }
        };
        // The kernel keys IPv4 rules as IPv4-mapped IPv6 (`::ffff:a.b.c.d`): one table.
        let canonical = match addr {
            IpAddr::V6(a) if prefix_len >= 96 => a
                .to_ipv4_mapped()
                .map_or((addr, prefix_len), |v4| (IpAddr::V4(v4), prefix_len - 96)),
            _ => (addr, prefix_len),
        };
        if !seen_cidrs.insert(canonical) {
            c.err(
                rr.cidr.span(),
                format!("{key}.cidr"),
                format!("`{}` already has a rule", rr.cidr.get_ref()),
            );
        }
        let class = match &rr.class {
            Some(n) => match class_index(n.get_ref()) {
                Some(ci) => Some(ci),
                None => {
                    c.err(
                        n.span(),
                        format!("{key}.class"),
                        format!("no class named `{}`", n.get_ref()),
                    );
                    None
                }
            },
            None => {
                if rr.action == RuleAction::Limit {
                    c.err(
                        r.span(),
                        format!("{key}.class"),
                        "a `limit` rule needs a class",
                    );
                }
                None
            }
        };
        rules.push(RuleSpec {
            addr,
            prefix_len,
            action: rr.action,
            class,
        });
    }

    // [[ports]]
    let mut ports: Vec<PortSpec> = Vec::new();
    for (i, p) in raw.ports.iter().enumerate() {
        let key = format!("ports[{i}]");
        let rp = p.get_ref();
        let Some(port) = port_number(&mut c, &rp.port, &format!("{key}.port")) else {
            continue;
        };
        if ports
            .iter()
            .any(|q| q.port == port && q.protocol == rp.protocol)
        {
            c.err(
                rp.port.span(),
                format!("{key}.port"),
                format!("{}/{port} already has a port rule", rp.protocol.as_str()),
            );
        }
        let class = rp
            .class
            .as_ref()
            .and_then(|n| match class_index(n.get_ref()) {
                Some(ci) => Some(ci),
                None => {
                    c.err(
                        n.span(),
                        format!("{key}.class"),
                        format!("no class named `{}`", n.get_ref()),
                    );
                    None
                }
            });
        let new_connections = rp
            .new_connections
            .as_ref()
            .and_then(|l| c.limit(&format!("{key}.new_connections"), l));
        if rp.new_connections.is_some() && rp.protocol == Protocol::Udp {
            c.err(
                p.span(),
                format!("{key}.new_connections"),
                "counts TCP SYNs: only for protocol = \"tcp\"",
            );
        }
        ports.push(PortSpec {
            port,
            protocol: rp.protocol,
            class,
            new_connections,
        });
    }

    // [breaker] and its groups
    let (breaker_defaults, groups) = match &raw.breaker {
        None => (BreakerSettings::default(), Vec::new()),
        Some(b) => {
            let base = breaker_overrides(&mut c, b.get_ref(), "breaker")
                .apply(&BreakerSettings::default());
            check_breaker(&mut c, &base, b.get_ref(), b.span(), "breaker");
            let mut groups = Vec::new();
            for (name, g) in &b.get_ref().groups.0 {
                let k = format!("breaker.groups.{name}");
                if !g.get_ref().groups.0.is_empty() {
                    c.err(g.span(), format!("{k}.groups"), "groups do not nest");
                }
                let o = breaker_overrides(&mut c, g.get_ref(), &k);
                check_breaker(
                    &mut c,
                    &base.resolve(name, Some(&o)),
                    g.get_ref(),
                    g.span(),
                    &k,
                );
                groups.push((name.clone(), o));
            }
            (base, groups)
        }
    };

    // [[upstreams]]
    let mut upstreams: Vec<UpstreamSpec> = Vec::new();
    for (i, u) in raw.upstreams.iter().enumerate() {
        let key = format!("upstreams[{i}]");
        let ru = u.get_ref();
        let name = ru.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            c.err(
                ru.name.span(),
                format!("{key}.name"),
                "upstream names use letters, digits, `_` and `-`",
            );
        }
        if upstreams.iter().any(|o| o.name == name) {
            c.err(
                ru.name.span(),
                format!("{key}.name"),
                format!("`{name}` is defined twice"),
            );
        }
        let Some(port) = port_number(&mut c, &ru.port, &format!("{key}.port")) else {
            continue;
        };
        if upstreams
            .iter()
            .any(|o| o.port == port && o.protocol == ru.protocol)
        {
            c.err(
                ru.port.span(),
                format!("{key}.port"),
                format!(
                    "{}/{port} already belongs to another upstream",
                    ru.protocol.as_str()
                ),
            );
        }
        let address = match &ru.address {
            None => std::net::IpAddr::from([127, 0, 0, 1]),
            Some(a) => match a.get_ref().parse() {
                Ok(ip) => ip,
                Err(_) => {
                    c.err(
                        a.span(),
                        format!("{key}.address"),
                        format!("`{}` is not an IP address", a.get_ref()),
                    );
                    continue;
                }
            },
        };
        if ru.probe != super::ProbeKind::None && ru.protocol == Protocol::Udp {
            c.err(u.span(), format!("{key}.probe"), "UDP upstreams cannot be probed: set probe = \"none\" (the passive ICMP signal still works)");
        }
        let path = match &ru.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                c.err(p.span(), format!("{key}.path"), "must start with `/`");
                String::new()
            }
            Some(p) => p.get_ref().clone(),
            None => "/".to_owned(),
        };
        if ru.path.is_some() && ru.probe != super::ProbeKind::Http {
            c.err(
                u.span(),
                format!("{key}.path"),
                "only used with probe = \"http\"",
            );
        }
        let interval = ru
            .interval
            .as_ref()
            .and_then(|v| c.duration(v, &format!("{key}.interval")))
            .unwrap_or(std::time::Duration::from_secs(1));
        let timeout = ru
            .timeout
            .as_ref()
            .and_then(|v| c.duration(v, &format!("{key}.timeout")))
            .unwrap_or(std::time::Duration::from_millis(500));
        if interval < std::time::Duration::from_millis(100) {
            c.err(
                ru.interval.as_ref().map_or(u.span(), |v| v.span()),
                format!("{key}.interval"),
                "must be at least 100ms",
            );
        }
        if timeout.is_zero() || timeout > interval {
            c.err(
                ru.timeout.as_ref().map_or(u.span(), |v| v.span()),
                format!("{key}.timeout"),
                "must be more than 0 and at most the interval",
            );
        }
        let group = ru.group.as_ref().map(|g| g.get_ref().clone());
        let group_overrides = match &ru.group {
            None => None,
            Some(g) => match groups.iter().find(|(n, _)| n == g.get_ref()) {
                Some((_, o)) => Some(*o),
                None if BreakerOverrides::preset(g.get_ref()).is_some() => None,
                None => {
                    c.err(g.span(), format!("{key}.group"), format!("no breaker group `{}` (define [breaker.groups.{}] or use critical / non_critical)", g.get_ref(), g.get_ref()));
                    None
                }
            },
        };
        let mut breaker =
            breaker_defaults.resolve(group.as_deref().unwrap_or(""), group_overrides.as_ref());
        let own = RawBreaker {
            backoff: ru.backoff.clone(),
            backoff_factor: ru.backoff_factor.clone(),
            backoff_cap: ru.backoff_cap.clone(),
            ..RawBreaker::default()
        };
        breaker = breaker_overrides(&mut c, &own, &key).apply(&breaker);
        check_breaker(&mut c, &breaker, &own, u.span(), &key);
        let max_connections = match &ru.max_connections {
            None => None,
            Some(m) if (1..=1_000_000).contains(m.get_ref()) => Some(*m.get_ref() as u32),
            Some(m) => {
                c.err(
                    m.span(),
                    format!("{key}.max_connections"),
                    "must be between 1 and 1000000",
                );
                None
            }
        };
        let accept_queue_ratio = match &ru.accept_queue_ratio {
            None => 0.9,
            Some(r) if (0.0..=1.0).contains(r.get_ref()) => *r.get_ref(),
            Some(r) => {
                c.err(
                    r.span(),
                    format!("{key}.accept_queue_ratio"),
                    "must be between 0 (off) and 1",
                );
                0.9
            }
        };
        upstreams.push(UpstreamSpec {
            name,
            port,
            protocol: ru.protocol,
            address,
            probe: ru.probe,
            path,
            interval,
            timeout,
            group,
            breaker,
            gate: ru.gate,
            max_connections,
            accept_queue_ratio,
            passive: ru.passive.unwrap_or(true),
        });
    }
    if ports.len() + upstreams.len() > traffic_common::MAX_PORTS as usize {
        c.err(
            0..0,
            "ports",
            format!(
                "at most {} port rules and upstreams together",
                traffic_common::MAX_PORTS
            ),
        );
    }

    let (pressure, throttle) =
        pressure_and_throttle(&mut c, raw.pressure.as_ref(), raw.throttle.as_ref());

    if !c.problems.is_empty() {
        return Err(c.problems.into_vec());
    }
    Ok(Config {
        source: path.to_owned(),
        daemon: DaemonConfig {
            interfaces,
            attach: d.attach,
            mode: d.mode,
            default_class,
            summary_interval,
            pin_dir,
            on_exit: d.on_exit,
            max_sources,
        },
        admin: AdminConfig {
            socket,
            socket_mode,
            socket_group,
        },
        metrics: MetricsConfig { listen },
        classes,
        rules,
        ports,
        breaker: breaker_defaults,
        breaker_groups: groups,
        upstreams,
        pressure,
        throttle,
    })
}

/// `[pressure]` and `[throttle]` over their defaults; the policy's own validation reports
/// at the key that set the value.
fn pressure_and_throttle(
    c: &mut Check,
    p: Option<&Spanned<RawPressure>>,
    t: Option<&Spanned<RawThrottle>>,
) -> (PressureSettings, ThrottleSettings) {
    let mut spans: Vec<(String, Range<usize>)> = Vec::new();
    let mut pressure = PressureSettings::default();
    let mut fallback = 0..0;
    if let Some(p) = p {
        fallback = p.span();
        let rp = p.get_ref();
        if let Some(r) = &rp.root {
            pressure.root = PathBuf::from(r.get_ref());
            spans.push(("pressure.root".into(), r.span()));
        }
        if let Some(i) = &rp.interval
            && let Some(d) = c.duration(i, "pressure.interval")
        {
            pressure.interval = d;
            spans.push(("pressure.interval".into(), i.span()));
        }
        if let Some(sig) = &rp.signal {
            sig.merge(&mut pressure.signal, &mut spans, "pressure.signal");
        }
    }
    let mut throttle = ThrottleSettings::default();
    if let Some(t) = t {
        let rt = t.get_ref();
        if let Some(h) = &rt.hysteresis {
            throttle.hysteresis = *h.get_ref();
            spans.push(("throttle.hysteresis".into(), h.span()));
        }
        if let Some(d) = &rt.min_dwell
            && let Some(v) = c.duration(d, "throttle.min_dwell")
        {
            throttle.min_dwell = v;
            spans.push(("throttle.min_dwell".into(), d.span()));
        }
        if let Some(th) = &rt.thresholds {
            th.merge(&mut throttle.thresholds, &mut spans, "throttle.thresholds");
        }
        if let Some(m) = &rt.multipliers {
            for (name, v, slot) in [
                ("low", &m.low, &mut throttle.multipliers.low),
                ("medium", &m.medium, &mut throttle.multipliers.medium),
                ("high", &m.high, &mut throttle.multipliers.high),
                ("critical", &m.critical, &mut throttle.multipliers.critical),
            ] {
                if let Some(v) = v {
                    *slot = *v.get_ref();
                    spans.push((format!("throttle.multipliers.{name}"), v.span()));
                }
            }
        }
        if let Some(m) = &rt.max_connections {
            for (name, v, slot) in [
                ("low", &m.low, &mut throttle.max_connections.low),
                ("medium", &m.medium, &mut throttle.max_connections.medium),
                ("high", &m.high, &mut throttle.max_connections.high),
                (
                    "critical",
                    &m.critical,
                    &mut throttle.max_connections.critical,
                ),
            ] {
                if let Some(v) = v {
                    match u32::try_from(*v.get_ref()) {
                        Ok(n) => *slot = Some(n),
                        Err(_) => c.err(
                            v.span(),
                            format!("throttle.max_connections.{name}"),
                            "must be a whole number ≥ 1",
                        ),
                    }
                    spans.push((format!("throttle.max_connections.{name}"), v.span()));
                }
            }
        }
        if let Some(pr) = &rt.priority {
            throttle.priority = *pr.get_ref();
            spans.push(("throttle.priority".into(), pr.span()));
        }
        if fallback == (0..0) {
            fallback = t.span();
        }
    }
    let mut report = |errors: Vec<SettingError>| {
        for e in errors {
            // The most specific key we have a span for.
            let span = spans
                .iter()
                .filter(|(k, _)| {
                    e.key == *k
                        || e.key.starts_with(&format!("{k}."))
                        || k.starts_with(&format!("{}.", e.key))
                })
                .max_by_key(|(k, _)| k.len())
                .map_or(fallback.clone(), |(_, s)| s.clone());
            c.err(span, e.key, e.message);
        }
    };
    if let Err(e) = pressure.validate() {
        report(e);
    }
    if let Err(e) = throttle.validate() {
        report(e);
    }
    (pressure, throttle)
}

fn port_number(c: &mut Check, v: &Spanned<i64>, key: &str) -> Option<u16> {
    match u16::try_from(*v.get_ref()) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            c.err(v.span(), key, "must be a port between 1 and 65535");
            None
        }
    }
}

fn count(c: &mut Check, v: &Option<Spanned<i64>>, key: &str) -> Option<u32> {
    let v = v.as_ref()?;
    match u32::try_from(*v.get_ref()) {
        Ok(n) => Some(n),
        Err(_) => {
            c.err(v.span(), key, "must be a whole number ≥ 0");
            None
        }
    }
}

/// The settings a breaker table sets, as overrides of what it inherits.
fn breaker_overrides(c: &mut Check, b: &RawBreaker, table: &str) -> BreakerOverrides {
    let dur = |c: &mut Check, v: &Option<Spanned<String>>, k: &str| {
        v.as_ref()
            .and_then(|v| c.duration(v, &format!("{table}.{k}")))
    };
    let window = b.window.as_ref().and_then(|w| match w.get_ref() {
        RawWindow::Count(n)
            if (1..=i64::from(crate::policy::breaker::MAX_COUNT_WINDOW)).contains(n) =>
        {
            Some(Window::Count(*n as u32))
        }
        RawWindow::Count(_) => {
            c.err(
                w.span(),
                format!("{table}.window"),
                format!(
                    "a count window holds 1 to {} outcomes",
                    crate::policy::breaker::MAX_COUNT_WINDOW
                ),
            );
            None
        }
        RawWindow::Time(t) => match syntax::parse_duration(t) {
            Ok(d) => Some(Window::Time(d)),
            Err(m) => {
                c.err(w.span(), format!("{table}.window"), m);
                None
            }
        },
    });
    let reset_timeout = dur(c, &b.reset_timeout, "reset_timeout");
    let cap = dur(c, &b.backoff_cap, "backoff_cap");
    let backoff = match b.backoff.as_ref().map(|s| *s.get_ref()) {
        Some(BackoffKind::Immediate) => Some(Backoff::Immediate),
        Some(BackoffKind::Linear) => Some(Backoff::Linear),
        Some(BackoffKind::Exponential) => Some(Backoff::Exponential {
            factor: b.backoff_factor.as_ref().map_or(2.0, |f| *f.get_ref()),
            cap: cap.unwrap_or(std::time::Duration::from_secs(300)),
        }),
        None => {
            if b.backoff_factor.is_some() || b.backoff_cap.is_some() {
                // Factor or cap alone refine an inherited exponential backoff.
                Some(Backoff::Exponential {
                    factor: b.backoff_factor.as_ref().map_or(2.0, |f| *f.get_ref()),
                    cap: cap.unwrap_or(std::time::Duration::from_secs(300)),
                })
            } else {
                None
            }
        }
    };
    BreakerOverrides {
        window,
        error_threshold: b.error_threshold.as_ref().map(|v| *v.get_ref()),
        min_requests: count(c, &b.min_requests, &format!("{table}.min_requests")),
        consecutive_failures: count(
            c,
            &b.consecutive_failures,
            &format!("{table}.consecutive_failures"),
        ),
        reset_timeout,
        backoff,
        half_open_trials: count(c, &b.half_open_trials, &format!("{table}.half_open_trials")),
        half_open_interval: dur(c, &b.half_open_interval, "half_open_interval"),
        success_threshold: count(
            c,
            &b.success_threshold,
            &format!("{table}.success_threshold"),
        ),
    }
}

/// Report the breaker policy's own validation errors at the key that set the value (or the
/// table when it was inherited).
fn check_breaker(
    c: &mut Check,
    s: &BreakerSettings,
    b: &RawBreaker,
    table_span: Range<usize>,
    table: &str,
) {
    if let Err(errors) = s.validate() {
        for e in errors {
            let span = match e.key.as_str() {
                "window" => b.window.as_ref().map(|v| v.span()),
                "error_threshold" => b.error_threshold.as_ref().map(|v| v.span()),
                "min_requests" => b.min_requests.as_ref().map(|v| v.span()),
                "consecutive_failures" => b.consecutive_failures.as_ref().map(|v| v.span()),
                "reset_timeout" => b.reset_timeout.as_ref().map(|v| v.span()),
                "backoff_factor" => b.backoff_factor.as_ref().map(|v| v.span()),
                "backoff_cap" => b.backoff_cap.as_ref().map(|v| v.span()),
                "half_open_trials" => b.half_open_trials.as_ref().map(|v| v.span()),
                "half_open_interval" => b.half_open_interval.as_ref().map(|v| v.span()),
                "success_threshold" => b.success_threshold.as_ref().map(|v| v.span()),
                _ => None,
            };
            c.err(
                span.unwrap_or(table_span.clone()),
                format!("{table}.{}", e.key),
                e.message,
            );
        }
    }
}
