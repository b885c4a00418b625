//! `[fleet]`: the Redis/Valkey server several nodes share (see [`crate::fleet`]). Absent,
//! the daemon is on its own exactly as before.
//!
//! Nothing secret is in the TOML: the URL may not carry a user or password; those come from
//! `credentials_file`, read (and its permissions checked) when the daemon starts.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::syntax::Problems;

/// `[fleet]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) url: Spanned<String>,
    pub(super) credentials_file: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) node: Option<Spanned<String>>,
    pub(super) namespace: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) command_timeout: Option<Spanned<String>>,
    pub(super) heartbeat_interval: Option<Spanned<String>>,
    pub(super) sync_interval: Option<Spanned<String>>,
    pub(super) max_bans: Option<Spanned<i64>>,
    pub(super) budget_interval: Option<Spanned<String>>,
    pub(super) heavy_fraction: Option<Spanned<f64>>,
    pub(super) max_budget_sources: Option<Spanned<i64>>,
}

/// `[fleet]`, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetConfig {
    /// `redis://HOST[:PORT][/DB]`, `rediss://…` (TLS, rustls with the system's roots) or
    /// `unix:///PATH`.
    pub url: String,
    /// A file with `USER PASSWORD` (or only `PASSWORD`, for the `default` user) on its first
    /// line that is not a comment; owned by root or the daemon's user and not readable by
    /// group or others (checked at start, like ssh checks a private key).
    pub credentials_file: Option<PathBuf>,
    /// For `rediss://`: a PEM file of the CA(s) that signed the server's certificate (a home
    /// cloud's own CA), used instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// This node's name in the fleet; `None`: the host name, read at start.
    pub node: Option<String>,
    /// Prefix of every key and channel (`NAMESPACE:…`), so several fleets share a server.
    pub namespace: String,
    pub connect_timeout: Duration,
    /// Bound on every command's round trip.
    pub command_timeout: Duration,
    /// How often this node writes its heartbeat (its key lives 3 intervals).
    pub heartbeat_interval: Duration,
    /// How often the whole ban set is read back and reconciled (besides pub/sub).
    pub sync_interval: Duration,
    /// Most bans taken from the fleet at once; the rest are refused (and counted).
    pub max_bans: usize,
    /// Fleet budgets (`scope = "fleet"` classes): how often this node shares its heavy
    /// sources' use and debits its buckets by the other nodes' (the error bound scales
    /// with it).
    pub budget_interval: Duration,
    /// A source is shared when it used at least this fraction of its limit's refill over
    /// the last interval on this node (at most `1 / nodes` keeps a source spread thinly over
    /// every node within its limit).
    pub heavy_fraction: f64,
    /// Most sources this node shares per interval (and reads from each other node).
    pub max_budget_sources: usize,
}

/// Longest node name or namespace.
pub const MAX_NAME: usize = 64;

/// A node name or namespace: 1–[`MAX_NAME`] bytes of `A-Za-z0-9._-` (it is part of Redis
/// keys and shows in tables and logs as is).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub(super) fn fleet(p: &mut Problems, raw: Option<&Spanned<RawFleet>>) -> Option<FleetConfig> {
    let r = raw?.get_ref();
    let url = r.url.get_ref().trim().to_owned();
    if let Some(m) = url_problems(&url) {
        p.err(r.url.span(), "fleet.url", m);
    }
    let name = |p: &mut Problems, v: &Option<Spanned<String>>, key: &str| {
        let v = v.as_ref()?;
        if valid_name(v.get_ref()) {
            Some(v.get_ref().clone())
        } else {
            p.err(
                v.span(),
                key,
                format!("must be 1–{MAX_NAME} characters of letters, digits, `.`, `_` and `-`"),
            );
            None
        }
    };
    let node = name(p, &r.node, "fleet.node");
    let namespace = name(p, &r.namespace, "fleet.namespace").unwrap_or_else(|| "traffic".into());
    let path = |p: &mut Problems, v: &Option<Spanned<String>>, key: &str| {
        let f = v.as_ref()?;
        let path = PathBuf::from(f.get_ref());
        if path.is_absolute() && !f.get_ref().split('/').any(|c| c == "..") {
            Some(path)
        } else {
            p.err(f.span(), key, "must be an absolute path without `..`");
            None
        }
    };
    let credentials_file = path(p, &r.credentials_file, "fleet.credentials_file");
    let ca_file = path(p, &r.ca_file, "fleet.ca_file");
    if let Some(f) = &r.ca_file
        && !url.starts_with("rediss://")
    {
        p.err(f.span(), "fleet.ca_file", "only with a rediss:// (TLS) url");
    }
    let ms = Duration::from_millis;
    let mut dur = |v: &Option<Spanned<String>>, key: &str, min, max, default| match v {
        Some(v) => p.duration_between(v, key, min, max).unwrap_or(default),
        None => default,
    };
    let connect_timeout = dur(
        &r.connect_timeout,
        "fleet.connect_timeout",
        ms(50),
        ms(30_000),
        ms(2000),
    );
    let command_timeout = dur(
        &r.command_timeout,
        "fleet.command_timeout",
        ms(10),
        ms(10_000),
        ms(500),
    );
    let heartbeat_interval = dur(
        &r.heartbeat_interval,
        "fleet.heartbeat_interval",
        ms(100),
        ms(60_000),
        ms(1000),
    );
    let sync_interval = dur(
        &r.sync_interval,
        "fleet.sync_interval",
        ms(1000),
        ms(3_600_000),
        ms(10_000),
    );
    let budget_interval = dur(
        &r.budget_interval,
        "fleet.budget_interval",
        ms(50),
        ms(10_000),
        ms(200),
    );
    let max_bans = match &r.max_bans {
        Some(m) if (1..=super::bans::MAX_BANS as i64).contains(m.get_ref()) => {
            *m.get_ref() as usize
        }
        Some(m) => {
            p.err(
                m.span(),
                "fleet.max_bans",
                format!("must be between 1 and {}", super::bans::MAX_BANS),
            );
            0
        }
        None => DEFAULT_MAX_BANS.min(super::bans::MAX_BANS),
    };
    let heavy_fraction = match &r.heavy_fraction {
        Some(v) if *v.get_ref() > 0.0 && *v.get_ref() <= 1.0 => *v.get_ref(),
        Some(v) => {
            p.err(
                v.span(),
                "fleet.heavy_fraction",
                "must be above 0 and at most 1",
            );
            DEFAULT_HEAVY_FRACTION
        }
        None => DEFAULT_HEAVY_FRACTION,
    };
    let most = traffic_common::FLEET_HOT_ENTRIES as i64;
    let max_budget_sources = match &r.max_budget_sources {
        Some(m) if (1..=most).contains(m.get_ref()) => *m.get_ref() as usize,
        Some(m) => {
            p.err(
                m.span(),
                "fleet.max_budget_sources",
                format!("must be between 1 and {most}"),
            );
            0
        }
        None => DEFAULT_MAX_BUDGET_SOURCES,
    };
    Some(FleetConfig {
        budget_interval,
        heavy_fraction,
        max_budget_sources,
        url,
        credentials_file,
        ca_file,
        node,
        namespace,
        connect_timeout,
        command_timeout,
        heartbeat_interval,
        sync_interval,
        max_bans,
    })
}

/// Default `[fleet] heavy_fraction`: a source under a quarter of its limit on each of up
/// to four nodes stays within its limit without being shared.
pub const DEFAULT_HEAVY_FRACTION: f64 = 0.25;
/// Default `[fleet] max_budget_sources`.
pub const DEFAULT_MAX_BUDGET_SOURCES: usize = 1024;

/// Default `[fleet] max_bans`.
pub const DEFAULT_MAX_BANS: usize = 10_000;

/// Why a fleet URL is refused, if it is.
fn url_problems(url: &str) -> Option<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some("must start with redis://, rediss:// or unix://".into());
    };
    if !matches!(scheme, "redis" | "rediss" | "unix") {
        return Some(format!(
            "scheme `{scheme}` not supported: use redis://, rediss:// (TLS) or unix://"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') || rest.contains("password=") || rest.contains("pass=") {
        return Some(
            "must not carry a user or password: put them in `credentials_file` (kept out of the TOML)"
                .into(),
        );
    }
    if scheme == "unix" && !rest.starts_with('/') {
        return Some("unix:// takes an absolute socket path (unix:///run/redis.sock)".into());
    }
    if scheme != "unix" && authority.is_empty() {
        return Some("names no host".into());
    }
    use redis::IntoConnectionInfo;
    match url.into_connection_info() {
        Ok(_) => None,
        Err(e) => Some(format!("not a usable Redis URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(tail: &str) -> Result<Config, String> {
        let text = format!("[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\n{tail}");
        Config::parse(Path::new("t.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_section_means_no_fleet() {
        assert_eq!(parse("").unwrap().fleet, None);
    }

    #[test]
    fn defaults_and_explicit_values_are_read() {
        let c = parse("[fleet]\nurl = \"redis://198.18.0.1:6379\"\n").unwrap();
        let f = c.fleet.unwrap();
        assert_eq!(f.namespace, "traffic");
        assert_eq!(f.node, None);
        assert_eq!(f.command_timeout, Duration::from_millis(500));
        assert_eq!(f.max_bans, DEFAULT_MAX_BANS);
        let c = parse(
            "[fleet]\nurl = \"rediss://r.example:6380/2\"\nnode = \"n-1\"\nnamespace = \"home\"\n\
             credentials_file = \"/etc/traffic/fleet.credentials\"\nsync_interval = \"5s\"\nmax_bans = 50\n",
        )
        .unwrap();
        let f = c.fleet.unwrap();
        assert_eq!(f.node.as_deref(), Some("n-1"));
        assert_eq!(f.sync_interval, Duration::from_secs(5));
        assert_eq!(f.max_bans, 50);
        assert!(parse("[fleet]\nurl = \"unix:///run/redis/redis.sock\"\n").is_ok());
        let c = parse("[fleet]\nurl = \"rediss://h:6380\"\nca_file = \"/etc/traffic/ca.pem\"\n")
            .unwrap();
        assert_eq!(
            c.fleet.unwrap().ca_file,
            Some(PathBuf::from("/etc/traffic/ca.pem"))
        );
    }

    #[test]
    fn an_offender_rule_may_share_its_bans_with_the_fleet() {
        let off = |scope: &str| {
            parse(&format!(
                "[classes.default.offender]\ndrop_ratio = 0.9\n{scope}\n"
            ))
            .map(|c| c.classes[0].offender.unwrap().fleet)
        };
        assert_eq!(off(""), Ok(false));
        assert_eq!(off("scope = \"node\""), Ok(false));
        assert_eq!(off("scope = \"fleet\""), Ok(true));
        assert!(
            off("scope = \"world\"")
                .unwrap_err()
                .contains("offender.scope")
        );
    }

    #[test]
    fn a_class_may_hold_its_sources_to_a_fleet_wide_budget() {
        let fleet = "[fleet]\nurl = \"redis://h\"\n";
        let class = |scope: &str, f: &str| {
            let text = format!(
                "[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\npackets = {{ rate = 10 }}\n{scope}\n{f}"
            );
            Config::parse(Path::new("t.toml"), &text)
                .map(|c| c.classes[0].fleet)
                .map_err(|e| e.to_string())
        };
        assert_eq!(class("", fleet), Ok(false));
        assert_eq!(class("scope = \"fleet\"", fleet), Ok(true));
        let e = class("scope = \"fleet\"", "").unwrap_err();
        assert!(
            e.contains("classes.default.scope") && e.contains("[fleet]"),
            "{e}"
        );
        assert!(class("scope = \"cluster\"", fleet).is_err());
        let e = parse("scope = \"fleet\"\n[fleet]\nurl = \"redis://h\"\n").unwrap_err();
        assert!(e.contains("limits to share"), "{e}");
        let f = parse("[fleet]\nurl = \"redis://h\"\n")
            .unwrap()
            .fleet
            .unwrap();
        assert_eq!(f.budget_interval, Duration::from_millis(200));
        assert_eq!(f.heavy_fraction, DEFAULT_HEAVY_FRACTION);
        assert_eq!(f.max_budget_sources, DEFAULT_MAX_BUDGET_SOURCES);
    }

    #[test]
    fn secrets_bad_schemes_and_bad_names_are_refused() {
        for (tail, needle) in [
            ("url = \"redis://u:secret@h:6379\"", "credentials_file"),
            ("url = \"http://h\"", "not supported"),
            ("url = \"h:6379\"", "must start with"),
            ("url = \"unix://rel.sock\"", "absolute"),
            ("url = \"redis://h\"\nnode = \"a b\"", "fleet.node"),
            ("url = \"redis://h\"\nnamespace = \"\"", "fleet.namespace"),
            (
                "url = \"redis://h\"\ncredentials_file = \"rel\"",
                "absolute path",
            ),
            ("url = \"redis://h\"\nmax_bans = 0", "fleet.max_bans"),
            (
                "url = \"redis://h\"\nbudget_interval = \"1ms\"",
                "fleet.budget_interval",
            ),
            (
                "url = \"redis://h\"\nheavy_fraction = 0.0",
                "fleet.heavy_fraction",
            ),
            (
                "url = \"redis://h\"\nmax_budget_sources = 100000",
                "fleet.max_budget_sources",
            ),
            (
                "url = \"redis://h\"\nca_file = \"/etc/ca.pem\"",
                "only with a rediss://",
            ),
            (
                "url = \"redis://h\"\ncommand_timeout = \"1h\"",
                "fleet.command_timeout",
            ),
            ("url = \"redis://h\"\npassword = \"x\"", "unknown field"),
        ] {
            let e = parse(&format!("[fleet]\n{tail}\n")).unwrap_err();
            assert!(e.contains(needle), "{tail}: {e}");
        }
    }
}
