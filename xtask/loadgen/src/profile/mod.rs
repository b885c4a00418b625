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

use std::{fmt, path::Path, time::Duration};

use traffic_daemon::config::syntax::{self, KeyStyle, Unlocated, format_duration};

mod raw;
mod validate;

use raw::RawProfile;
use validate::validate;

/// A client class of the generator: which source range a client sends from. The shipped
/// rules of `config/demo.toml` put these ranges into the daemon classes named in
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
            DegradeMode::Slow(d) => format!("answers after {}", format_duration(*d)),
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

// ---------------------------------------------------------------------------------------
// Errors

/// One thing wrong with a profile (the daemon config's type).
pub use syntax::Problem;
/// A profile that cannot be used, with every problem found.
pub type ProfileError = syntax::FileError;

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
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
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
