//! Load profiles (`config/profiles/*.toml`): what the generator offers, to whom, for how
//! long. A profile is read like trafficd reads its config — serde with unknown keys refused,
//! then validation — and every problem names the file, line, column and key:
//!
//! ```text
//! config/profiles/peak.toml:12:9: classes.premium.share: must be between 0 and 1
//! ```
//!
//! The format, with every key (durations are "250ms", "2s", "1m"):
//!
//! ```toml
//! description = "one line for the live view"
//! rate = 4000            # operations per second at full ramp, all clients together;
//!                        # an operation is one UDP datagram or one TCP connection
//! duration = "30s"       # total, ramps included (1s–1h)
//! ramp_up = "3s"         # linear from 0 to `rate` (default 0s)
//! ramp_down = "3s"       # linear from `rate` to 0 at the end (default 0s)
//! think_time = "50ms"    # a TCP client's pause after each connection (default 0s)
//! ipv6 = 0.5             # share of each class's addresses that are IPv6 (default 0.5)
//! max_packets = 200000   # hard bound on datagrams (default: what the schedule needs + 5 %)
//! pauses = [{ at = "10s", for = "2s" }]   # the generator pauses and resumes (default none)
//!
//! [classes.premium]      # client classes: premium, basic, guest, attacker, internal, denied
//! share = 0.6            # of `rate`; the shares of all classes add up to 1
//! sources = 2            # addresses sending datagrams
//! tcp_clients = 2        # addresses opening TCP connections (default 2 when a TCP workload
//!                        # applies to the class, else 0); kept apart from the datagram
//!                        # sources so every bucket's arithmetic stays exact
//! heavy = { sources = 20, share = 0.6 }   # 20 of the sources carry 60 % of the datagrams
//!
//! [[workloads]]
//! kind = "udp"           # udp | tcp
//! share = 0.98           # of each class's operations (shares add up to 1)
//! port = 9000            # udp: destination port on the node (default 9000)
//! sizes = [64, 1200]     # udp: payload bytes, used in turn (default [64]); tcp echo: request
//! classes = ["guest"]    # which client classes run it (default: all)
//!
//! [[workloads]]
//! kind = "tcp"
//! share = 0.02
//! upstream = "web"       # an [[upstreams]] name of the daemon config
//! request = "http"       # http (GET `path`, 2xx/3xx is success) | echo | connect
//! path = "/"             # http only (default "/")
//! timeout = "1s"         # connect and answer timeout (default 1s)
//! max_in_flight = 8      # concurrent connections per class (default 8)
//!
//! [degrade]              # make an upstream misbehave during the run
//! upstream = "web"
//! mode = "down"          # down (stop listening) | error (answer 500) | slow | chaos
//! at = "8s"
//! for = "12s"
//! delay = "2s"           # slow: answer after this
//! drop = 0.5             # chaos: share of packets to the port dropped by the XDP gate…
//! reset = 0.5            # …and of new connections reset (POST /v1/chaos)
//! ```

use std::{collections::BTreeMap, fmt, ops::Range, path::Path, time::Duration};

use serde::Deserialize;
use toml::Spanned;
use traffic_daemon::config::syntax::{self, KeyStyle, Problems, Unlocated};

/// A client class of the generator: which source range a client sends from. The shipped
/// rules of `config/traffic.toml` put these ranges into the daemon classes named in
/// [`ClientClass::expected`]; the generator reads the real verdict from the config in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientClass {
    Premium,
    Basic,
    Guest,
    Attacker,
    Internal,
    Denied,
}

impl ClientClass {
    /// Every client class, in display order.
    pub const ALL: [ClientClass; 6] = [
        ClientClass::Premium,
        ClientClass::Basic,
        ClientClass::Guest,
        ClientClass::Attacker,
        ClientClass::Internal,
        ClientClass::Denied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientClass::Premium => "premium",
            ClientClass::Basic => "basic",
            ClientClass::Guest => "guest",
            ClientClass::Attacker => "attacker",
            ClientClass::Internal => "internal",
            ClientClass::Denied => "denied",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// What the shipped rules make of the class's range (for docs and messages).
    pub fn expected(self) -> &'static str {
        match self {
            ClientClass::Premium => "class premium",
            ClientClass::Basic => "class basic",
            ClientClass::Guest | ClientClass::Attacker => "class default (no rule)",
            ClientClass::Internal => "allow rule (class internal)",
            ClientClass::Denied => "deny rule",
        }
    }

    /// The short host (namespace) name of the class's clients.
    pub fn host(self) -> &'static str {
        match self {
            ClientClass::Premium => "prem",
            ClientClass::Basic => "basic",
            ClientClass::Guest => "guest",
            ClientClass::Attacker => "attk",
            ClientClass::Internal => "intl",
            ClientClass::Denied => "deny",
        }
    }

    /// IPv4 source range. The attacker's /17 sits in 198.19.128.0/17, clear of the
    /// topology's link nets (198.19.k.0/30 for small k) and of every shipped rule.
    pub fn v4_range(self) -> (std::net::Ipv4Addr, u8) {
        match self {
            ClientClass::Premium => ([198, 18, 1, 0].into(), 24),
            ClientClass::Basic => ([198, 18, 2, 0].into(), 24),
            ClientClass::Guest => ([198, 18, 200, 0].into(), 24),
            ClientClass::Attacker => ([198, 19, 128, 0].into(), 17),
            ClientClass::Internal => ([198, 18, 0, 0].into(), 24),
            ClientClass::Denied => ([198, 18, 66, 0].into(), 24),
        }
    }

    /// IPv6 source range (a /48: every source gets its own /64, so its own bucket).
    pub fn v6_range(self) -> (std::net::Ipv6Addr, u8) {
        let p = |x: u16| std::net::Ipv6Addr::new(0x2001, 0xdb8, x, 0, 0, 0, 0, 0);
        match self {
            ClientClass::Premium => (p(1), 48),
            ClientClass::Basic => (p(2), 48),
            ClientClass::Guest => (p(0x200), 48),
            ClientClass::Attacker => (p(0xbad), 48),
            // 2001:db8:0::/48 is the shipped allow rule; the node's service address
            // (2001:db8:ff::1) and the link nets (2001:db8:ffff:k::/64) lie outside it.
            ClientClass::Internal => (p(0), 48),
            ClientClass::Denied => (p(0x66), 48),
        }
    }

    /// IPv4 addresses the generator may use in the range (host numbers 10 … size−6).
    pub fn v4_capacity(self) -> u32 {
        let bits = 32 - u32::from(self.v4_range().1);
        (1u32 << bits).saturating_sub(16)
    }
}

impl fmt::Display for ClientClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// File stem, e.g. `normal`.
    pub name: String,
    pub description: String,
    /// Operations per second at full ramp.
    pub rate: f64,
    pub duration: Duration,
    pub ramp_up: Duration,
    pub ramp_down: Duration,
    pub think_time: Duration,
    /// Share of each class's addresses that are IPv6.
    pub ipv6: f64,
    /// Hard bound on datagrams sent.
    pub max_packets: u64,
    /// (at, for) in profile time.
    pub pauses: Vec<(Duration, Duration)>,
    /// Client classes in file order.
    pub classes: Vec<ClassMix>,
    pub workloads: Vec<Workload>,
    pub degrade: Option<Degrade>,
}

/// One client class of a profile.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassMix {
    pub class: ClientClass,
    /// Share of the profile's rate.
    pub share: f64,
    /// Addresses sending datagrams.
    pub sources: u32,
    /// Addresses opening TCP connections.
    pub tcp_clients: u32,
    /// (sources, share of the class's datagrams) of the heavy hitters.
    pub heavy: Option<(u32, f64)>,
}

/// What a TCP client does once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET path`; a 2xx/3xx answer is a success.
    Http { path: String },
    /// Send `size` bytes, expect them back.
    Echo { size: usize },
    /// Connect and close.
    Connect,
}

#[derive(Clone, Debug, PartialEq)]
pub enum WorkloadKind {
    Udp {
        port: u16,
        sizes: Vec<usize>,
    },
    Tcp {
        upstream: String,
        request: Request,
        timeout: Duration,
        max_in_flight: u32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub share: f64,
    /// Client classes that run it (all of the profile's when the file names none).
    pub classes: Vec<ClientClass>,
}

impl Workload {
    pub fn is_udp(&self) -> bool {
        matches!(self.kind, WorkloadKind::Udp { .. })
    }
}

/// How an upstream misbehaves.
#[derive(Clone, Debug, PartialEq)]
pub enum DegradeMode {
    /// Stop listening: connects are refused by the node's stack (RST) until the breaker
    /// opens, then by the XDP gate.
    Down,
    /// Answer every request (and the health check) with 500.
    Error,
    /// Answer after a delay.
    Slow(Duration),
    /// Fault injection in the daemon (`POST /v1/chaos`).
    Chaos { drop: f64, reset: f64 },
}

impl DegradeMode {
    pub fn describe(&self) -> String {
        match self {
            DegradeMode::Down => "stops listening".into(),
            DegradeMode::Error => "answers 500".into(),
            DegradeMode::Slow(d) => format!("answers after {}", fmt_duration(*d)),
            DegradeMode::Chaos { drop, reset } => {
                format!(
                    "chaos: {:.0} % of packets dropped, {:.0} % of new connections reset",
                    drop * 100.0,
                    reset * 100.0
                )
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Degrade {
    pub upstream: String,
    pub mode: DegradeMode,
    pub at: Duration,
    pub length: Duration,
}

impl Profile {
    /// Read and validate a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        syntax::load(path, |text| Self::parse_text(path, text))
    }

    /// Validate profile text read from `path` (the file stem names the profile).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ProfileError> {
        syntax::parse_file(path, text, |text| Self::parse_text(path, text))
    }

    fn parse_text(path: &Path, text: &str) -> Result<Self, Vec<Unlocated>> {
        let name = path.file_stem().map_or_else(
            || "profile".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        );
        let raw = toml::from_str::<RawProfile>(text)
            .map_err(|e| vec![syntax::toml_problem(text, &e, KeyStyle::Path)])?;
        validate(name, raw)
    }

    /// Operations offered per second at profile time `t` (ramps, no pauses).
    pub fn rate_at(&self, t: Duration) -> f64 {
        let (t, d) = (t.as_secs_f64(), self.duration.as_secs_f64());
        if t < 0.0 || t >= d {
            return 0.0;
        }
        let up = self.ramp_up.as_secs_f64();
        let down = self.ramp_down.as_secs_f64();
        let mut f = 1.0f64;
        if up > 0.0 && t < up {
            f = f.min(t / up);
        }
        if down > 0.0 && t > d - down {
            f = f.min((d - t) / down);
        }
        self.rate * f.clamp(0.0, 1.0)
    }

    /// Operations offered from profile time 0 to `t` (the integral of [`Self::rate_at`]).
    pub fn ops_until(&self, t: Duration) -> f64 {
        let d = self.duration.as_secs_f64();
        let t = t.as_secs_f64().clamp(0.0, d);
        let up = self.ramp_up.as_secs_f64().min(d);
        let down = self.ramp_down.as_secs_f64().min(d - up);
        let plateau_end = d - down;
        let r = self.rate;
        let mut ops = 0.0;
        // Ramp up: r·t²/(2·up).
        if up > 0.0 {
            let x = t.min(up);
            ops += r * x * x / (2.0 * up);
        }
        if t > up {
            ops += r * (t.min(plateau_end) - up).max(0.0);
        }
        if t > plateau_end && down > 0.0 {
            let x = t - plateau_end;
            ops += r * (x - x * x / (2.0 * down));
        }
        ops
    }

    /// The same profile over another total duration: the ramps stay, the plateau changes;
    /// pauses and the degradation beyond the new end are dropped; the packet bound follows.
    pub fn with_duration(&self, duration: Duration) -> Profile {
        let mut p = self.clone();
        p.duration = duration.max(p.ramp_up + p.ramp_down);
        p.pauses.retain(|(at, _)| *at < p.duration);
        if p.degrade
            .as_ref()
            .is_some_and(|d| d.at + d.length > p.duration)
        {
            p.degrade = None;
        }
        p.max_packets = default_max_packets(&p);
        p
    }

    /// The class mix of one client class.
    pub fn class(&self, c: ClientClass) -> Option<&ClassMix> {
        self.classes.iter().find(|m| m.class == c)
    }

    /// Workloads a class runs, with their share of the class's operations (renormalised).
    pub fn workloads_of(&self, c: ClientClass) -> Vec<(&Workload, f64)> {
        let all: Vec<&Workload> = self
            .workloads
            .iter()
            .filter(|w| w.classes.contains(&c))
            .collect();
        let total: f64 = all.iter().map(|w| w.share).sum();
        if total <= 0.0 {
            return Vec::new();
        }
        all.into_iter().map(|w| (w, w.share / total)).collect()
    }
}

/// Datagrams the schedule sends, +5 %.
fn default_max_packets(p: &Profile) -> u64 {
    let ops = p.ops_until(p.duration);
    let udp: f64 = p
        .classes
        .iter()
        .map(|c| {
            c.share
                * p.workloads_of(c.class)
                    .iter()
                    .filter(|(w, _)| w.is_udp())
                    .map(|(_, s)| s)
                    .sum::<f64>()
        })
        .sum();
    (ops * udp * 1.05).ceil() as u64 + 1000
}

/// Profiles shipped in `dir` (file stems, sorted).
pub fn list(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "toml"))
                .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))?
        })
        .collect();
    out.sort();
    out
}

/// Load profile `name` from `dir`, naming the available ones when it does not exist.
pub fn find(dir: &Path, name: &str) -> anyhow::Result<Profile> {
    let path = dir.join(format!("{name}.toml"));
    if !path.exists() {
        anyhow::bail!(
            "no profile `{name}` in {} (available: {})",
            dir.display(),
            list(dir).join(", ")
        );
    }
    Ok(Profile::load(&path)?)
}

/// Format a duration the way profiles write them.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// One thing wrong with a profile (the daemon config's type).
pub use syntax::Problem;
/// A profile that cannot be used, with every problem found.
pub type ProfileError = syntax::FileError;

// ---------------------------------------------------------------------------------------
// Raw file

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    description: Option<Spanned<String>>,
    rate: Spanned<f64>,
    duration: Spanned<String>,
    ramp_up: Option<Spanned<String>>,
    ramp_down: Option<Spanned<String>>,
    think_time: Option<Spanned<String>>,
    ipv6: Option<Spanned<f64>>,
    max_packets: Option<Spanned<u64>>,
    #[serde(default)]
    pauses: Vec<Spanned<RawPause>>,
    classes: Spanned<BTreeMap<Spanned<String>, Spanned<RawClass>>>,
    workloads: Spanned<Vec<Spanned<RawWorkload>>>,
    degrade: Option<Spanned<RawDegrade>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPause {
    at: Spanned<String>,
    #[serde(rename = "for")]
    length: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    share: Spanned<f64>,
    sources: Option<Spanned<u32>>,
    tcp_clients: Option<Spanned<u32>>,
    heavy: Option<Spanned<RawHeavy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeavy {
    sources: Spanned<u32>,
    share: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    kind: Spanned<String>,
    share: Spanned<f64>,
    port: Option<Spanned<u16>>,
    sizes: Option<Spanned<Vec<Spanned<u32>>>>,
    classes: Option<Spanned<Vec<Spanned<String>>>>,
    upstream: Option<Spanned<String>>,
    request: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_in_flight: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDegrade {
    upstream: Spanned<String>,
    mode: Spanned<String>,
    at: Spanned<String>,
    #[serde(rename = "for")]
    length: Spanned<String>,
    delay: Option<Spanned<String>>,
    drop: Option<Spanned<f64>>,
    reset: Option<Spanned<f64>>,
}

/// The shared [`Problems`] collector, with the profile's duration bounds (written the
/// way profiles write durations).
struct Check {
    problems: Problems,
}

impl Check {
    fn err(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.problems.err(span, key, message);
    }

    fn duration(
        &mut self,
        v: &Spanned<String>,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let d = self.problems.duration(v, key)?;
        if d < min || d > max {
            self.err(
                v.span(),
                key,
                format!(
                    "must be between {} and {}",
                    fmt_duration(min),
                    fmt_duration(max)
                ),
            );
            return None;
        }
        Some(d)
    }

    fn fraction(&mut self, v: &Spanned<f64>, key: &str) -> f64 {
        self.problems.fraction(v, key)
    }
}

const MAX_SIZE: u32 = 1452; // no fragments over IPv6 on a 1500-byte link

fn validate(name: String, raw: RawProfile) -> Result<Profile, Vec<Unlocated>> {
    let mut c = Check {
        problems: Problems::new(),
    };
    let zero = Duration::ZERO;
    let rate = *raw.rate.get_ref();
    if !(rate > 0.0 && rate <= 200_000.0) {
        c.err(
            raw.rate.span(),
            "rate",
            "must be more than 0 and at most 200000 operations per second",
        );
    }
    let duration = c
        .duration(
            &raw.duration,
            "duration",
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )
        .unwrap_or(Duration::from_secs(1));
    let ramp_up = raw
        .ramp_up
        .as_ref()
        .and_then(|v| c.duration(v, "ramp_up", zero, Duration::from_secs(3600)))
        .unwrap_or(zero);
    let ramp_down = raw
        .ramp_down
        .as_ref()
        .and_then(|v| c.duration(v, "ramp_down", zero, Duration::from_secs(3600)))
        .unwrap_or(zero);
    if ramp_up + ramp_down > duration {
        let span = raw
            .ramp_down
            .as_ref()
            .or(raw.ramp_up.as_ref())
            .map_or(raw.duration.span(), Spanned::span);
        let key = if raw.ramp_down.is_some() {
            "ramp_down"
        } else {
            "ramp_up"
        };
        c.err(
            span,
            key,
            format!(
                "ramp_up + ramp_down ({}) is longer than duration ({})",
                fmt_duration(ramp_up + ramp_down),
                fmt_duration(duration)
            ),
        );
    }
    let think_time = raw
        .think_time
        .as_ref()
        .and_then(|v| c.duration(v, "think_time", zero, Duration::from_secs(60)))
        .unwrap_or(zero);
    let ipv6 = raw.ipv6.as_ref().map_or(0.5, |v| c.fraction(v, "ipv6"));
    let mut pauses = Vec::new();
    for (i, p) in raw.pauses.iter().enumerate() {
        let at = c.duration(&p.get_ref().at, &format!("pauses[{i}].at"), zero, duration);
        let length = c.duration(
            &p.get_ref().length,
            &format!("pauses[{i}].for"),
            Duration::from_millis(100),
            Duration::from_secs(600),
        );
        if let (Some(at), Some(l)) = (at, length) {
            pauses.push((at, l));
        }
    }

    // Classes, in file order.
    let mut raw_classes: Vec<(&Spanned<String>, &Spanned<RawClass>)> =
        raw.classes.get_ref().iter().collect();
    raw_classes.sort_by_key(|(k, _)| k.span().start);
    let mut classes = Vec::new();
    let mut share_sum = 0.0;
    for (k, rc) in raw_classes {
        let key = format!("classes.{}", k.get_ref());
        let Some(class) = ClientClass::from_name(k.get_ref()) else {
            let names: Vec<&str> = ClientClass::ALL.iter().map(|c| c.as_str()).collect();
            c.err(
                k.span(),
                key,
                format!(
                    "unknown client class `{}` (use {})",
                    k.get_ref(),
                    names.join(", ")
                ),
            );
            continue;
        };
        let r = rc.get_ref();
        let share = c.fraction(&r.share, &format!("{key}.share"));
        share_sum += share;
        let sources = match &r.sources {
            Some(s) => {
                let n = *s.get_ref();
                let v4 = v4_count(n, ipv6);
                if n == 0 && share > 0.0 {
                    c.err(
                        s.span(),
                        format!("{key}.sources"),
                        "must be at least 1 for a class with a share",
                    );
                } else if n > 100_000 {
                    c.err(s.span(), format!("{key}.sources"), "must be at most 100000");
                } else if v4 > class.v4_capacity() / 2 {
                    c.err(
                        s.span(),
                        format!("{key}.sources"),
                        format!(
                            "{v4} IPv4 sources do not fit in {}/{} (at most {})",
                            class.v4_range().0,
                            class.v4_range().1,
                            class.v4_capacity() / 2
                        ),
                    );
                }
                n
            }
            None => 1,
        };
        let tcp_clients = match &r.tcp_clients {
            Some(s) if *s.get_ref() > 64 => {
                c.err(s.span(), format!("{key}.tcp_clients"), "must be at most 64");
                64
            }
            Some(s) => *s.get_ref(),
            None => u32::MAX, // filled in once the workloads are known
        };
        let heavy = r.heavy.as_ref().map(|h| {
            let h = h.get_ref();
            let n = *h.sources.get_ref();
            if n == 0 || n >= sources {
                c.err(
                    h.sources.span(),
                    format!("{key}.heavy.sources"),
                    format!(
                        "must be between 1 and sources − 1 ({})",
                        sources.saturating_sub(1)
                    ),
                );
            }
            let s = c.fraction(&h.share, &format!("{key}.heavy.share"));
            (n, s)
        });
        classes.push(ClassMix {
            class,
            share,
            sources,
            tcp_clients,
            heavy,
        });
    }
    if classes.is_empty() && c.problems.is_empty() {
        c.err(
            raw.classes.span(),
            "classes",
            "name at least one client class",
        );
    } else if (share_sum - 1.0).abs() > 1e-3 && c.problems.is_empty() {
        c.err(
            raw.classes.span(),
            "classes",
            format!("the shares add up to {share_sum:.3}, not 1"),
        );
    }

    // Workloads.
    let mut workloads = Vec::new();
    let mut wsum = 0.0;
    for (i, rw) in raw.workloads.get_ref().iter().enumerate() {
        let key = format!("workloads[{i}]");
        let w = rw.get_ref();
        let share = *w.share.get_ref();
        if !(share > 0.0 && share <= 1.0) {
            c.err(
                w.share.span(),
                format!("{key}.share"),
                "must be more than 0 and at most 1",
            );
        }
        wsum += share;
        let wclasses = match &w.classes {
            None => classes.iter().map(|m| m.class).collect(),
            Some(list) => {
                let mut out = Vec::new();
                for (j, n) in list.get_ref().iter().enumerate() {
                    match ClientClass::from_name(n.get_ref()) {
                        Some(cc) if classes.iter().any(|m| m.class == cc) => out.push(cc),
                        Some(_) => c.err(
                            n.span(),
                            format!("{key}.classes[{j}]"),
                            format!("`{}` is not in [classes]", n.get_ref()),
                        ),
                        None => c.err(
                            n.span(),
                            format!("{key}.classes[{j}]"),
                            format!("unknown client class `{}`", n.get_ref()),
                        ),
                    }
                }
                out
            }
        };
        let only = |c: &mut Check, v: Option<Range<usize>>, k: &str, kind: &str| {
            if let Some(span) = v {
                c.err(
                    span,
                    format!("{key}.{k}"),
                    format!("only for kind = \"{kind}\""),
                );
            }
        };
        let kind = match w.kind.get_ref().as_str() {
            "udp" => {
                only(
                    &mut c,
                    w.upstream.as_ref().map(Spanned::span),
                    "upstream",
                    "tcp",
                );
                only(
                    &mut c,
                    w.request.as_ref().map(Spanned::span),
                    "request",
                    "tcp",
                );
                only(&mut c, w.path.as_ref().map(Spanned::span), "path", "tcp");
                only(
                    &mut c,
                    w.timeout.as_ref().map(Spanned::span),
                    "timeout",
                    "tcp",
                );
                only(
                    &mut c,
                    w.max_in_flight.as_ref().map(Spanned::span),
                    "max_in_flight",
                    "tcp",
                );
                let port = w.port.as_ref().map_or(9000, |p| {
                    if *p.get_ref() == 0 {
                        c.err(
                            p.span(),
                            format!("{key}.port"),
                            "must be between 1 and 65535",
                        );
                    }
                    *p.get_ref()
                });
                let sizes = sizes(&mut c, w.sizes.as_ref(), &key);
                Some(WorkloadKind::Udp {
                    port,
                    sizes: if sizes.is_empty() { vec![64] } else { sizes },
                })
            }
            "tcp" => {
                only(
                    &mut c,
                    w.port.as_ref().map(Spanned::span),
                    "port",
                    "udp (name the upstream)",
                );
                let upstream = match &w.upstream {
                    Some(u) if !u.get_ref().is_empty() => u.get_ref().clone(),
                    Some(u) => {
                        c.err(u.span(), format!("{key}.upstream"), "must name an upstream");
                        String::new()
                    }
                    None => {
                        c.err(rw.span(), format!("{key}.upstream"), "a tcp workload needs `upstream` (an [[upstreams]] name of the daemon config)");
                        String::new()
                    }
                };
                let sizes = sizes(&mut c, w.sizes.as_ref(), &key);
                let request = match w.request.as_ref().map(|r| (r.get_ref().as_str(), r.span())) {
                    None | Some(("http", _)) => {
                        let path = w
                            .path
                            .as_ref()
                            .map_or_else(|| "/".to_owned(), |p| p.get_ref().clone());
                        if !path.starts_with('/') || path.contains(char::is_whitespace) {
                            let span = w.path.as_ref().map_or(rw.span(), Spanned::span);
                            c.err(
                                span,
                                format!("{key}.path"),
                                "must start with / and contain no spaces",
                            );
                        }
                        Request::Http { path }
                    }
                    Some(("echo", _)) => Request::Echo {
                        size: sizes.first().copied().unwrap_or(64),
                    },
                    Some(("connect", _)) => Request::Connect,
                    Some((other, span)) => {
                        c.err(
                            span,
                            format!("{key}.request"),
                            format!("unknown request `{other}` (use http, echo or connect)"),
                        );
                        Request::Connect
                    }
                };
                if !matches!(request, Request::Http { .. }) {
                    only(
                        &mut c,
                        w.path.as_ref().map(Spanned::span),
                        "path",
                        "tcp with request = \"http\"",
                    );
                }
                let timeout = w
                    .timeout
                    .as_ref()
                    .and_then(|t| {
                        c.duration(
                            t,
                            &format!("{key}.timeout"),
                            Duration::from_millis(10),
                            Duration::from_secs(10),
                        )
                    })
                    .unwrap_or(Duration::from_secs(1));
                let max_in_flight = w.max_in_flight.as_ref().map_or(8, |m| {
                    if !(1..=256).contains(m.get_ref()) {
                        c.err(
                            m.span(),
                            format!("{key}.max_in_flight"),
                            "must be between 1 and 256",
                        );
                    }
                    *m.get_ref()
                });
                Some(WorkloadKind::Tcp {
                    upstream,
                    request,
                    timeout,
                    max_in_flight,
                })
            }
            other => {
                c.err(
                    w.kind.span(),
                    format!("{key}.kind"),
                    format!("unknown kind `{other}` (use udp or tcp)"),
                );
                None
            }
        };
        if let Some(kind) = kind {
            workloads.push(Workload {
                kind,
                share,
                classes: wclasses,
            });
        }
    }
    if raw.workloads.get_ref().is_empty() {
        c.err(
            raw.workloads.span(),
            "workloads",
            "name at least one workload",
        );
    } else if (wsum - 1.0).abs() > 1e-3 && c.problems.is_empty() {
        c.err(
            raw.workloads.span(),
            "workloads",
            format!("the shares add up to {wsum:.3}, not 1"),
        );
    }
    for m in &mut classes {
        let has_tcp = workloads
            .iter()
            .any(|w| !w.is_udp() && w.classes.contains(&m.class));
        if m.tcp_clients == u32::MAX {
            m.tcp_clients = if has_tcp { 2 } else { 0 };
        } else if has_tcp && m.tcp_clients == 0 {
            let span = raw
                .classes
                .get_ref()
                .iter()
                .find(|(k, _)| k.get_ref() == m.class.as_str())
                .map_or(raw.classes.span(), |(_, v)| v.span());
            c.err(
                span,
                format!("classes.{}.tcp_clients", m.class),
                "a class running a tcp workload needs at least one TCP client",
            );
        }
    }

    let degrade = raw.degrade.as_ref().and_then(|d| {
        let d = d.get_ref();
        let at = c.duration(&d.at, "degrade.at", zero, duration);
        let length = c.duration(
            &d.length,
            "degrade.for",
            Duration::from_millis(100),
            duration,
        );
        if let (Some(a), Some(l)) = (at, length)
            && a + l > duration
        {
            c.err(
                d.length.span(),
                "degrade.for",
                format!(
                    "ends at {} after the profile ({})",
                    fmt_duration(a + l),
                    fmt_duration(duration)
                ),
            );
        }
        let extra = |c: &mut Check, v: Option<Range<usize>>, k: &str, mode: &str| {
            if let Some(span) = v {
                c.err(
                    span,
                    format!("degrade.{k}"),
                    format!("only for mode = \"{mode}\""),
                );
            }
        };
        let mode = match d.mode.get_ref().as_str() {
            "down" | "error" | "slow" if d.drop.is_some() || d.reset.is_some() => {
                extra(
                    &mut c,
                    d.drop.as_ref().or(d.reset.as_ref()).map(Spanned::span),
                    if d.drop.is_some() { "drop" } else { "reset" },
                    "chaos",
                );
                None
            }
            "down" | "error" if d.delay.is_some() => {
                extra(&mut c, d.delay.as_ref().map(Spanned::span), "delay", "slow");
                None
            }
            "down" => Some(DegradeMode::Down),
            "error" => Some(DegradeMode::Error),
            "slow" => match &d.delay {
                Some(v) => c
                    .duration(
                        v,
                        "degrade.delay",
                        Duration::from_millis(1),
                        Duration::from_secs(60),
                    )
                    .map(DegradeMode::Slow),
                None => {
                    c.err(
                        d.mode.span(),
                        "degrade.delay",
                        "mode = \"slow\" needs `delay`",
                    );
                    None
                }
            },
            "chaos" => {
                extra(&mut c, d.delay.as_ref().map(Spanned::span), "delay", "slow");
                let drop = d
                    .drop
                    .as_ref()
                    .map_or(0.0, |v| c.fraction(v, "degrade.drop"));
                let reset = d
                    .reset
                    .as_ref()
                    .map_or(0.0, |v| c.fraction(v, "degrade.reset"));
                if drop == 0.0 && reset == 0.0 {
                    c.err(
                        d.mode.span(),
                        "degrade.mode",
                        "chaos needs `drop` or `reset` above 0",
                    );
                }
                Some(DegradeMode::Chaos { drop, reset })
            }
            other => {
                c.err(
                    d.mode.span(),
                    "degrade.mode",
                    format!("unknown mode `{other}` (use down, error, slow or chaos)"),
                );
                None
            }
        };
        if d.upstream.get_ref().is_empty() {
            c.err(
                d.upstream.span(),
                "degrade.upstream",
                "must name an upstream",
            );
        }
        Some(Degrade {
            upstream: d.upstream.get_ref().clone(),
            mode: mode?,
            at: at?,
            length: length?,
        })
    });

    let mut p = Profile {
        name,
        description: raw.description.map_or_else(String::new, |d| d.into_inner()),
        rate,
        duration,
        ramp_up,
        ramp_down,
        think_time,
        ipv6,
        max_packets: 0,
        pauses,
        classes,
        workloads,
        degrade,
    };
    p.max_packets = match &raw.max_packets {
        Some(m) if *m.get_ref() == 0 => {
            c.err(m.span(), "max_packets", "must be at least 1");
            0
        }
        Some(m) => *m.get_ref(),
        None => default_max_packets(&p),
    };
    if c.problems.is_empty() {
        Ok(p)
    } else {
        Err(c.problems.into_vec())
    }
}

fn sizes(c: &mut Check, v: Option<&Spanned<Vec<Spanned<u32>>>>, key: &str) -> Vec<usize> {
    let Some(v) = v else { return Vec::new() };
    if v.get_ref().is_empty() {
        c.err(v.span(), format!("{key}.sizes"), "name at least one size");
    }
    v.get_ref()
        .iter()
        .enumerate()
        .map(|(j, s)| {
            if !(1..=MAX_SIZE).contains(s.get_ref()) {
                c.err(
                    s.span(),
                    format!("{key}.sizes[{j}]"),
                    format!("must be between 1 and {MAX_SIZE} bytes (no fragments)"),
                );
            }
            *s.get_ref() as usize
        })
        .collect()
}

/// How many of `n` sources are IPv4 with a share `ipv6` of IPv6 (at least one of each
/// family when n ≥ 2 and the share is strictly between 0 and 1).
pub fn v4_count(n: u32, ipv6: f64) -> u32 {
    let mut v6 = (f64::from(n) * ipv6).round() as u32;
    if n >= 2 && ipv6 > 0.0 && ipv6 < 1.0 {
        v6 = v6.clamp(1, n - 1);
    }
    n - v6.min(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    const GOOD: &str = r#"
description = "t"
rate = 1000
duration = "10s"
ramp_up = "2s"
ramp_down = "2s"

[classes.premium]
share = 0.5
sources = 2

[classes.guest]
share = 0.5
sources = 4
heavy = { sources = 1, share = 0.5 }

[[workloads]]
kind = "udp"
share = 0.9
sizes = [64, 512]

[[workloads]]
kind = "tcp"
share = 0.1
upstream = "web"
"#;

    fn errors(text: &str) -> Vec<String> {
        match Profile::parse(Path::new("t.toml"), text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn parses_and_integrates_the_ramps() {
        let p = Profile::parse(Path::new("x/good.toml"), GOOD).unwrap();
        assert_eq!(p.name, "good");
        assert_eq!(p.classes[0].class, ClientClass::Premium);
        assert_eq!(p.classes[1].heavy, Some((1, 0.5)));
        assert_eq!(p.classes[0].tcp_clients, 2);
        // 2 s ramps of 1000/s: 1000 + 6000 + 1000.
        assert!((p.ops_until(p.duration) - 8000.0).abs() < 1e-6);
        assert!((p.ops_until(Duration::from_secs(1)) - 250.0).abs() < 1e-6);
        assert!((p.rate_at(Duration::from_secs(1)) - 500.0).abs() < 1e-6);
        assert!((p.rate_at(Duration::from_secs(9)) - 500.0).abs() < 1e-6);
        let w = p.workloads_of(ClientClass::Guest);
        assert_eq!(w.len(), 2);
        assert!(p.max_packets >= 7200);
    }

    #[test]
    fn errors_name_line_and_key() {
        let bad = GOOD.replace("share = 0.5\nsources = 2", "share = 1.5\nsources = 2");
        let e = errors(&bad);
        assert!(
            e.iter().any(
                |l| l.starts_with("t.toml:9:9: classes.premium.share: must be between 0 and 1")
            ),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("sources = 2", "sorces = 2"));
        assert!(
            e[0].starts_with("t.toml:10:1: classes.premium.sorces: unknown field"),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("heavy = { sources = 1", "heavy = { sourcez = 1"));
        assert!(
            e[0].starts_with("t.toml:15:11: classes.guest.heavy.sourcez: unknown field"),
            "{e:?}"
        );
        let e = errors(&GOOD.replace(
            "upstream = \"web\"",
            "upstream = \"web\"\ntimeout = \"5 parsecs\"",
        ));
        assert!(
            e[0].starts_with("t.toml:26:11: workloads[1].timeout: unknown duration unit"),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("sizes = [64, 512]", "sizes = [64, 9000]"));
        assert!(
            e[0].starts_with("t.toml:20:14: workloads[0].sizes[1]: must be between 1 and 1452"),
            "{e:?}"
        );
        let e = errors(&GOOD.replace("rate = 1000\n", ""));
        assert!(e[0].contains(": rate: missing field `rate`"), "{e:?}");
        let e = errors(&GOOD.replace("[classes.guest]", "[classes.visitor]"));
        assert!(
            e[0].starts_with("t.toml:12:10: classes.visitor: unknown client class"),
            "{e:?}"
        );
    }
}
