//! `[breaker]` with its groups, and `[[upstreams]]`.

use std::ops::Range;

use toml::Spanned;

use super::{Check, count, port_number};
use crate::{
    config::{
        Protocol, UpstreamSpec,
        raw::{BackoffKind, RawBreaker, RawUpstream, RawWindow},
        syntax,
    },
    policy::breaker::{Backoff, BreakerOverrides, BreakerSettings, Window},
};

/// Longest probe interval (the timeout is at most the interval): an hour between probes
/// already means the breaker learns nothing from them.
const MAX_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Breaker groups as overrides of the defaults, by name.
pub(super) type Groups = Vec<(String, BreakerOverrides)>;

/// `[breaker]` over the built-in defaults, and its groups.
pub(super) fn breaker(
    c: &mut Check,
    raw: Option<&Spanned<RawBreaker>>,
) -> (BreakerSettings, Groups) {
    match raw {
        None => (BreakerSettings::default(), Vec::new()),
        Some(b) => {
            let base =
                breaker_overrides(c, b.get_ref(), "breaker").apply(&BreakerSettings::default());
            check_breaker(c, &base, b.get_ref(), b.span(), "breaker");
            let mut groups = Vec::new();
            for (name, g) in &b.get_ref().groups.0 {
                let k = format!("breaker.groups.{name}");
                if !g.get_ref().groups.0.is_empty() {
                    c.err(g.span(), format!("{k}.groups"), "groups do not nest");
                }
                let o = breaker_overrides(c, g.get_ref(), &k);
                check_breaker(c, &base.resolve(name, Some(&o)), g.get_ref(), g.span(), &k);
                groups.push((name.clone(), o));
            }
            (base, groups)
        }
    }
}

pub(super) fn upstreams(
    c: &mut Check,
    raw: &[Spanned<RawUpstream>],
    breaker_defaults: &BreakerSettings,
    groups: &Groups,
) -> Vec<UpstreamSpec> {
    let mut upstreams: Vec<UpstreamSpec> = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        if let Some(spec) = upstream(c, i, u, &upstreams, breaker_defaults, groups) {
            upstreams.push(spec);
        }
    }
    upstreams
}

/// `[[upstreams]]` number `i`; `None` when it cannot be used at all (no port, no address).
/// Long because it is a flat list of independent key checks, each a few lines; splitting it
/// would only move the list.
fn upstream(
    c: &mut Check,
    i: usize,
    u: &Spanned<RawUpstream>,
    existing: &[UpstreamSpec],
    breaker_defaults: &BreakerSettings,
    groups: &Groups,
) -> Option<UpstreamSpec> {
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
    if existing.iter().any(|o| o.name == name) {
        c.err(
            ru.name.span(),
            format!("{key}.name"),
            format!("`{name}` is defined twice"),
        );
    }
    let port = port_number(c, &ru.port, &format!("{key}.port"))?;
    if existing
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
                return None;
            }
        },
    };
    if ru.probe != crate::config::ProbeKind::None && ru.protocol == Protocol::Udp {
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
    if ru.path.is_some() && ru.probe != crate::config::ProbeKind::Http {
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
    } else if interval > MAX_PROBE_INTERVAL {
        c.err(
            ru.interval.as_ref().map_or(u.span(), |v| v.span()),
            format!("{key}.interval"),
            "must be at most 1h",
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
    breaker = breaker_overrides(c, &own, &key).apply(&breaker);
    check_breaker(c, &breaker, &own, u.span(), &key);
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
    Some(UpstreamSpec {
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
    })
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
