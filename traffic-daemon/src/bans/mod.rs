//! Bans with expiry: what an operator (or the offender detector, or a fleet task) asks to
//! ban, validated like operator input, and the book of bans in force.
//!
//! Pure: no clock, no file, no map. The engine's [`crate::ops`] (`ops/bans.rs`) writes the
//! book to the kernel's ban map ([`traffic_common::map_names::BANS`]) and to the state file
//! ([`store`]); the kernel enforces a ban's expiry itself, so a ban ends on time even while
//! the daemon is down.
//!
//! The API for other tasks (a fleet sync, say) is [`crate::engine::Core::add_ban`],
//! [`crate::engine::Core::remove_ban`] and [`crate::engine::Core::list_bans`], each taking or
//! giving a [`Ban`]; its [`Origin`] says who made it.

pub mod offender;
pub mod store;

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};
use traffic_common::{BAN_FORCE, BanEntry};

use crate::plan::{RuleKey, rule_key};

pub use crate::config::bans::{MAX_BANS, MAX_DURATION, MIN_DURATION};
/// Longest reason, in bytes.
pub const MAX_REASON: usize = 128;
/// Shortest IPv4 prefix a ban may cover (a /8 is 16M addresses): a shorter one bans a
/// good part of the Internet, the operator's own address likely included.
pub const MIN_PREFIX_V4: u8 = 8;
/// Shortest IPv6 prefix a ban may cover (a /16 is a regional registry's allocation).
pub const MIN_PREFIX_V6: u8 = 16;
/// Reason of a ban made without one.
pub const DEFAULT_REASON: &str = "manual";

/// Why a ban request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanError {
    #[error("invalid address or CIDR `{text}`: {why}")]
    Prefix { text: String, why: String },
    #[error("invalid ban duration `{text}`: {why}")]
    Duration { text: String, why: String },
    #[error("invalid reason: {0}")]
    Reason(String),
    #[error(
        "the ban list is full ({capacity} bans): unban some or wait for bans to expire; existing bans stay in force"
    )]
    Full { capacity: usize },
    #[error("no ban on {0}")]
    NotFound(String),
}

/// A banned CIDR: an address with the host bits clear and a prefix length of its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// Parse `ADDR` (a single address: /32 or /128) or `ADDR/LEN`, refusing host bits,
    /// IPv4-mapped IPv6 (ban the IPv4 address instead: the kernel keys IPv4 that way, so
    /// the two would alias) and prefixes shorter than [`MIN_PREFIX_V4`] / [`MIN_PREFIX_V6`].
    pub fn parse(text: &str) -> Result<Self, BanError> {
        let bad = |why: String| BanError::Prefix {
            text: text.chars().take(64).collect(),
            why,
        };
        let (a, l) = match text.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| bad("not an IPv4 or IPv6 address".into()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| bad(format!("prefix length must be 0–{max}")))?,
        };
        let (min, family) = match addr {
            IpAddr::V4(_) => (MIN_PREFIX_V4, "IPv4"),
            IpAddr::V6(v6) => {
                if v6.to_ipv4_mapped().is_some() {
                    return Err(bad(
                        "IPv4-mapped IPv6 address: ban the IPv4 address itself".into()
                    ));
                }
                (MIN_PREFIX_V6, "IPv6")
            }
        };
        if len < min {
            return Err(bad(format!(
                "an {family} ban covers at most a /{min} (use a deny rule in the config for wider blocks)"
            )));
        }
        let p = Prefix { addr, len };
        let masked = p.masked();
        if masked != addr {
            return Err(bad(format!(
                "host bits are set: did you mean {masked}/{len}?"
            )));
        }
        Ok(p)
    }

    /// The address with the bits past the prefix cleared.
    fn masked(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = traffic_common::prefix_mask(u32::from(self.len));
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    /// The key in the kernel's ban map (the same scheme as the rules').
    pub fn key(&self) -> RuleKey {
        rule_key(self.addr, self.len)
    }

    /// The prefix of a kernel key (the inverse of [`Prefix::key`]).
    pub fn from_key((addr, bits): RuleKey) -> Option<Self> {
        let v6 = std::net::Ipv6Addr::from(addr);
        let p = match v6.to_ipv4_mapped() {
            Some(v4) if bits >= traffic_common::V4_MAPPED_PREFIX_BITS => Prefix {
                addr: IpAddr::V4(v4),
                len: u8::try_from(bits - traffic_common::V4_MAPPED_PREFIX_BITS).ok()?,
            },
            _ => Prefix {
                addr: IpAddr::V6(v6),
                len: u8::try_from(bits).ok().filter(|l| *l <= 128)?,
            },
        };
        Some(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = BanError;
    fn from_str(s: &str) -> Result<Self, BanError> {
        Self::parse(s)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Prefix::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Who made a ban.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `trafficctl ban` (or the admin API).
    #[default]
    Operator,
    /// The offender detector of a class ([`offender`]).
    Auto,
    /// Another node of the fleet.
    Fleet,
    /// Found in the kernel's pinned map without a record (the state file was missing or
    /// unreadable): kept, with its expiry, under reason `recovered`.
    Recovered,
}

/// One ban.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub prefix: Prefix,
    /// When it ends (Unix time, ms): wall-clock, so a ban survives a reboot (the kernel's
    /// clock starts again at 0) and reads the same on every node.
    pub until_unix_ms: u64,
    pub reason: String,
    /// Wins over an `allow` rule.
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub origin: Origin,
    /// When it was made (Unix time, ms).
    #[serde(default)]
    pub created_unix_ms: u64,
}

impl Ban {
    /// The kernel entry of this ban: its end moved to the kernel clock (`now_ns` there is
    /// `now_unix_ms` on the wall clock).
    pub fn entry(&self, now_unix_ms: u64, now_ns: u64) -> BanEntry {
        let left_ns = self
            .until_unix_ms
            .saturating_sub(now_unix_ms)
            .saturating_mul(1_000_000);
        BanEntry {
            // At least 1: 0 in the cache means "no ban"; an expired ban is 1 ns, long past.
            until_ns: now_ns.saturating_add(left_ns).max(1),
            reason_id: reason_id(&self.reason),
            flags: if self.force { BAN_FORCE } else { 0 },
        }
    }

    /// Whether the ban has ended at `now_unix_ms`.
    pub fn expired(&self, now_unix_ms: u64) -> bool {
        self.until_unix_ms <= now_unix_ms
    }

    /// Check a ban read from anywhere (the state file, a fleet peer) as operator input.
    pub fn validate(&self) -> Result<(), BanError> {
        validate_reason(&self.reason)?;
        Prefix::parse(&self.prefix.to_string())?;
        Ok(())
    }
}

/// A ban as asked for (CLI, admin API): text fields, validated by [`BanRequest::ban`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// `ADDR` or `ADDR/LEN`.
    pub target: String,
    /// How long, e.g. `1h`, `30m`, `7d` (1 s – 365 d).
    pub duration: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub force: bool,
    /// Share it with every node of the fleet (`[fleet]`; see [`crate::fleet`]).
    #[serde(default)]
    pub fleet: bool,
}

impl BanRequest {
    /// The ban this asks for at `now_unix_ms`, or why it is refused.
    pub fn ban(&self, now_unix_ms: u64, origin: Origin) -> Result<Ban, BanError> {
        let prefix = Prefix::parse(&self.target)?;
        let d = validate_duration(&self.duration)?;
        let reason = validate_reason(self.reason.as_deref().unwrap_or(DEFAULT_REASON))?;
        Ok(Ban {
            prefix,
            until_unix_ms: now_unix_ms.saturating_add(d.as_millis() as u64),
            reason,
            force: self.force,
            origin,
            created_unix_ms: now_unix_ms,
        })
    }
}

/// A ban duration: [`MIN_DURATION`] ..= [`MAX_DURATION`], with a unit.
pub fn validate_duration(text: &str) -> Result<Duration, BanError> {
    let bad = |why: String| BanError::Duration {
        text: text.chars().take(32).collect(),
        why,
    };
    let d = crate::config::syntax::parse_duration(text).map_err(bad)?;
    if d < MIN_DURATION || d > MAX_DURATION {
        return Err(bad("must be between 1s and 365d".into()));
    }
    Ok(d)
}

/// A reason: 1–[`MAX_REASON`] bytes of letters, digits, spaces and `-_.,:;/()#@+=`
/// (printable ASCII without quotes or backslashes: it appears in logs, tables and metric
/// labels as is). Surrounding spaces are trimmed.
pub fn validate_reason(text: &str) -> Result<String, BanError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(BanError::Reason("empty".into()));
    }
    if t.len() > MAX_REASON {
        return Err(BanError::Reason(format!(
            "{} bytes long, at most {MAX_REASON}",
            t.len()
        )));
    }
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " -_.,:;/()#@+=".contains(*c)))
    {
        return Err(BanError::Reason(format!(
            "character {c:?} not allowed (letters, digits, spaces and -_.,:;/()#@+= only)"
        )));
    }
    Ok(t.to_owned())
}

/// FNV-1a of a reason: the kernel entry's `reason_id`.
pub fn reason_id(reason: &str) -> u32 {
    fnv(0x811c_9dc5, reason.as_bytes())
}

fn fnv(mut h: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The bans in force, by prefix, with a digest of their contents kept up to date in O(1)
/// per change (the XOR of each ban's hash): mixed into the rule generation
/// ([`crate::plan::Live::bans_digest`]), so the program's classification cache is refilled
/// whenever a ban is added, changed or removed, and not when nothing changed.
#[derive(Clone, Debug, Default)]
pub struct BanBook {
    bans: BTreeMap<Prefix, Ban>,
    digest: u32,
    /// The earliest end, kept so the control tick's check is one comparison; recomputed
    /// (one pass) only after the ban holding it went.
    earliest: Option<u64>,
    earliest_stale: bool,
}

impl BanBook {
    /// Add or replace the ban on `ban.prefix`; returns the ban it replaced. Refused when
    /// the book is full ([`MAX_BANS`]) and the prefix is new: existing bans stay.
    pub fn insert(&mut self, ban: Ban) -> Result<Option<Ban>, BanError> {
        if self.bans.len() >= MAX_BANS && !self.bans.contains_key(&ban.prefix) {
            return Err(BanError::Full { capacity: MAX_BANS });
        }
        self.digest ^= ban_hash(&ban);
        self.earliest = Some(
            self.earliest
                .map_or(ban.until_unix_ms, |e| e.min(ban.until_unix_ms)),
        );
        let old = self.bans.insert(ban.prefix, ban);
        if let Some(o) = &old {
            self.digest ^= ban_hash(o);
            self.forget_end(o.until_unix_ms);
        }
        Ok(old)
    }

    /// Remove the ban on `prefix`.
    pub fn remove(&mut self, prefix: &Prefix) -> Option<Ban> {
        let old = self.bans.remove(prefix)?;
        self.digest ^= ban_hash(&old);
        self.forget_end(old.until_unix_ms);
        Some(old)
    }

    fn forget_end(&mut self, until: u64) {
        if self.earliest == Some(until) {
            self.earliest_stale = true;
        }
    }

    pub fn get(&self, prefix: &Prefix) -> Option<&Ban> {
        self.bans.get(prefix)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Ban> {
        self.bans.values()
    }

    pub fn len(&self) -> usize {
        self.bans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Prefixes of the bans ended at `now_unix_ms`.
    pub fn expired(&self, now_unix_ms: u64) -> Vec<Prefix> {
        self.bans
            .values()
            .filter(|b| b.expired(now_unix_ms))
            .map(|b| b.prefix)
            .collect()
    }

    /// The earliest end of a ban, if any.
    pub fn next_expiry(&mut self) -> Option<u64> {
        if self.earliest_stale {
            self.earliest = self.bans.values().map(|b| b.until_unix_ms).min();
            self.earliest_stale = false;
        }
        self.earliest
    }

    /// Digest of the contents (0 when empty).
    pub fn digest(&self) -> u32 {
        self.digest
    }
}

/// Hash of what the kernel sees of a ban (prefix, end, force).
fn ban_hash(b: &Ban) -> u32 {
    let (addr, bits) = b.prefix.key();
    let mut h = fnv(0x811c_9dc5, &addr);
    h = fnv(h, &bits.to_le_bytes());
    h = fnv(h, &b.until_unix_ms.to_le_bytes());
    fnv(h, &[u8::from(b.force)])
}

/// Most distinct reason labels in `traffic_bans_total`; later reasons count as `other`.
pub const MAX_REASON_LABELS: usize = 32;

/// The engine's ban state: the book, where it is kept, the detector and the counts.
#[derive(Debug, Default)]
pub struct BanState {
    pub book: BanBook,
    /// The state file's writer; `None` until [`crate::engine::Core::open_bans`] (unit tests
    /// of the engine keep bans in memory only).
    pub writer: Option<store::Writer>,
    pub detector: offender::Detector,
    /// Bans made, by reason label (bounded by [`MAX_REASON_LABELS`]).
    pub made: BTreeMap<String, u64>,
    /// Automatic bans made, by class name.
    pub auto: BTreeMap<String, u64>,
    /// The bans' clock in tests (Unix ms); `None`: the wall clock.
    pub fixed_now_ms: Option<u64>,
}

impl BanState {
    /// Count a ban made with `reason`.
    pub fn count(&mut self, reason: &str) {
        let label = if self.made.contains_key(reason) || self.made.len() < MAX_REASON_LABELS - 1 {
            reason
        } else {
            "other"
        };
        *self.made.entry(label.to_owned()).or_default() += 1;
    }

    /// What the metrics show.
    pub fn snapshot(&self) -> BansSnapshot {
        BansSnapshot {
            active: self.book.len() as u64,
            made: self.made.clone(),
            auto: self.auto.clone(),
        }
    }
}

/// The ban metrics at one scrape (rendered by `serve::bans`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BansSnapshot {
    /// `traffic_bans_active`.
    pub active: u64,
    /// `traffic_bans_total{reason}`.
    pub made: BTreeMap<String, u64>,
    /// `traffic_auto_bans_total{class}`.
    pub auto: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests;
