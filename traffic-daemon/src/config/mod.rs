//! Configuration: TOML → raw structs (serde, `deny_unknown_fields`) → validated [`Config`]
//! with units, ranges and cross-field checks.
//!
//! Every error names the file, the line and column, and the key at fault. Nothing here
//! touches the system beyond reading the file: `trafficctl check-config` and `trafficd` share
//! this code, and a reload validates the new file completely before anything is applied.

pub mod bans;
pub mod feeds;
pub mod fleet;
pub mod include;
mod lists;
mod raw;
pub mod syntax;
mod validate;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

/// Class priority lives with the throttle that weighs it; re-exported as a config word.
pub use crate::policy::throttle::Priority;
pub use raw::{AttachMode, GateAction, Mode, OnExit, ProbeKind, Protocol, RuleAction};

use crate::policy::breaker::{BreakerOverrides, BreakerSettings};

/// Default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/traffic/traffic.toml";

/// Default port of the metrics listener (`[metrics] listen`, on 127.0.0.1). Outside
/// 9100–9999, the range of Prometheus's default port allocations (fully taken; 9187, the
/// old default, is postgres_exporter's), so it does not collide with an exporter's default.
pub const DEFAULT_METRICS_PORT: u16 = 10187;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// File it was read from (for messages).
    pub source: PathBuf,
    pub daemon: DaemonConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    /// Classes in file order. Kernel slot ids are assigned by the daemon (stable across
    /// reloads), not by position here.
    pub classes: Vec<ClassSpec>,
    /// Source rules in file order.
    pub rules: Vec<RuleSpec>,
    /// Per-port rules.
    pub ports: Vec<PortSpec>,
    /// Breaker defaults (`[breaker]`).
    pub breaker: BreakerSettings,
    /// Breaker groups (`[breaker.groups.NAME]`), as overrides of the defaults.
    pub breaker_groups: Vec<(String, BreakerOverrides)>,
    /// The node's upstream services, each with a breaker and a bulkhead.
    pub upstreams: Vec<UpstreamSpec>,
    /// `[pressure]`: what is sampled, where from, how often.
    pub pressure: crate::pressure::PressureSettings,
    /// `[throttle]`: levels, thresholds, multipliers, connection caps, priorities.
    pub throttle: crate::policy::throttle::ThrottleSettings,
    /// `[baseline]`: the observation behind `trafficctl suggest`.
    pub baseline: crate::policy::baseline::BaselineSettings,
    /// Files merged from the include directory (`conf.d/*.toml`), in the order read.
    pub included: Vec<PathBuf>,
    /// `[bans]`: where bans are kept across reboots.
    pub bans: bans::BansConfig,
    /// `[[feeds]]`: blocklists, in file order.
    pub feeds: Vec<feeds::FeedSpec>,
    /// `[fleet]`: the Redis/Valkey server shared with other nodes; `None`: on its own.
    pub fleet: Option<fleet::FleetConfig>,
}

/// `[[ports]]`: a rule for traffic to one local port.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortSpec {
    pub port: u16,
    pub protocol: Protocol,
    /// Class (index into [`Config::classes`]) used for traffic to this port, whatever the
    /// source's class.
    pub class: Option<usize>,
    /// Per-source limit on new TCP connections.
    pub new_connections: Option<RateLimit>,
}

/// `[[upstreams]]`: a local service with a breaker and a bulkhead.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpstreamSpec {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    /// Address probes connect to.
    pub address: IpAddr,
    pub probe: ProbeKind,
    /// HTTP path for `probe = "http"`.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub group: Option<String>,
    /// Resolved breaker settings (defaults ← group ← upstream).
    #[serde(skip)]
    pub breaker: BreakerSettings,
    pub gate: GateAction,
    /// Bulkhead: concurrent connections at throttle level NONE (scaled down under pressure).
    pub max_connections: Option<u32>,
    /// Bulkhead backpressure: shed new connections when the accept queue reaches this
    /// fraction of the listen backlog (0 = off).
    pub accept_queue_ratio: f64,
    /// Use the passive (TC egress) signal besides the probes.
    pub passive: bool,
}

/// `[daemon]`
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DaemonConfig {
    pub interfaces: Vec<String>,
    pub attach: AttachMode,
    pub mode: Mode,
    /// Index into [`Config::classes`].
    pub default_class: usize,
    pub summary_interval: Duration,
    pub pin_dir: PathBuf,
    pub on_exit: OnExit,
    /// Capacity of the bucket map (tracked sources across all classes).
    pub max_sources: u32,
}

/// `[admin]`
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdminConfig {
    pub socket: PathBuf,
    /// Permission bits of the socket file.
    pub socket_mode: u32,
    /// Group owning the socket; missing groups are reported at start-up, not here.
    pub socket_group: Option<String>,
    /// Group whose members may change things (POST and DELETE routes: reload, circuit
    /// open/reset, source reset, chaos); the socket's group may only read. Root always may.
    /// `None`: root only. Checked by SO_PEERCRED / SO_PEERGROUPS.
    pub control_group: Option<String>,
}

/// `[metrics]`
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricsConfig {
    /// Prometheus listener; `None` disables it.
    pub listen: Option<SocketAddr>,
}

/// One token-bucket limit: `rate` units per second with a burst of `burst` units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RateLimit {
    /// Units per second.
    pub rate_per_sec: f64,
    /// Bucket depth in units.
    pub burst: u64,
}

/// A class of sources with its base limits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassSpec {
    pub name: String,
    pub priority: Priority,
    /// Per-class mode; `None` follows `[daemon] mode`.
    pub mode: Option<Mode>,
    /// Stacked packet limits (all must allow a packet). Empty = no packet limit.
    pub packets: Vec<RateLimit>,
    /// Byte limit on frame lengths.
    pub bytes: Option<RateLimit>,
    /// Aggregation prefix for IPv4 sources (bits, 0–32).
    pub aggregate_v4: u8,
    /// Aggregation prefix for IPv6 sources (bits, 0–128).
    pub aggregate_v6: u8,
    /// Budget of new tracked sources; `None` = every new source gets a bucket.
    pub admission: Option<RateLimit>,
    /// Packet limit of the shared bucket for sources over the admission budget.
    pub overflow: Option<RateLimit>,
    /// `[classes.NAME.offender]`: automatic bans of persistent offenders.
    pub offender: Option<bans::OffenderSettings>,
    /// `scope = "fleet"`: the per-source limits hold for a source's traffic over every
    /// node of the fleet together (`[fleet]`'s budget sync); `false`: per node.
    pub fleet: bool,
}

impl ClassSpec {
    /// Whether the class limits anything at all.
    pub fn is_limited(&self) -> bool {
        !self.packets.is_empty() || self.bytes.is_some()
    }
}

/// A source rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleSpec {
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub action: RuleAction,
    /// Index into [`Config::classes`].
    pub class: Option<usize>,
}

impl RuleSpec {
    /// The rule's CIDR as text.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.addr, self.prefix_len)
    }
}

impl Config {
    /// Read and validate a config file and the files of its include directory
    /// (`conf.d/*.toml` next to it, see [`include`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        include::load(path)
    }

    /// Validate config text read from `path` (used in messages only), without includes.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        include::parse(path, text, &[])
    }

    /// Index of a class by name.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.name == name)
    }

    /// The effective mode of a class.
    pub fn class_mode(&self, class: usize) -> Mode {
        self.classes[class].mode.unwrap_or(self.daemon.mode)
    }
}

/// A config file that cannot be used, with every problem found (file, line, column, key).
pub type ConfigError = syntax::FileError;
pub use syntax::Problem;

#[cfg(test)]
mod tests;
