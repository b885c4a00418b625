//! Raw profile → [`Profile`]: one function per section of the file (timing, classes,
//! workloads, degrade), each recording every problem it finds in the shared [`Problems`]
//! collector of the daemon's config syntax, so a user sees all of them at once.

use std::{ops::Range, time::Duration};

use toml::Spanned;
use traffic_daemon::config::syntax::{Problems, Unlocated, format_duration};

use super::{
    ClassMix, ClientClass, Degrade, DegradeMode, Profile, Request, Workload, WorkloadKind,
    default_max_packets,
    raw::{RawClass, RawDegrade, RawProfile, RawWorkload},
    v4_count,
};

/// Largest datagram payload: no fragments over IPv6 on a 1500-byte link.
const MAX_SIZE: u32 = 1452;
/// Longest duration, ramp or pause a profile may ask for.
const HOUR: Duration = Duration::from_secs(3600);

/// The top-level timing keys, validated.
struct Timing {
    rate: f64,
    duration: Duration,
    ramp_up: Duration,
    ramp_down: Duration,
    think_time: Duration,
    ipv6: f64,
    pauses: Vec<(Duration, Duration)>,
}

pub(super) fn validate(name: String, raw: RawProfile) -> Result<Profile, Vec<Unlocated>> {
    let mut c = Problems::new();
    let t = timing(&mut c, &raw);
    let mut classes = classes(&mut c, &raw, t.ipv6);
    let workloads = workloads(&mut c, &raw, &classes);
    fill_tcp_clients(&mut c, &raw, &mut classes, &workloads);
    let degrade = raw
        .degrade
        .as_ref()
        .and_then(|d| degrade(&mut c, d.get_ref(), t.duration));
    let mut p = Profile {
        name,
        description: raw
            .description
            .as_ref()
            .map_or_else(String::new, |d| d.get_ref().clone()),
        rate: t.rate,
        duration: t.duration,
        ramp_up: t.ramp_up,
        ramp_down: t.ramp_down,
        think_time: t.think_time,
        ipv6: t.ipv6,
        max_packets: 0,
        pauses: t.pauses,
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
    c.finish(|| p)
}

/// `rate`, `duration`, the ramps, `think_time`, `ipv6` and `[[pauses]]`.
fn timing(c: &mut Problems, raw: &RawProfile) -> Timing {
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
        .duration_between(&raw.duration, "duration", Duration::from_secs(1), HOUR)
        .unwrap_or(Duration::from_secs(1));
    let mut optional = |v: &Option<Spanned<String>>, key: &str, max: Duration| {
        v.as_ref()
            .and_then(|v| c.duration_between(v, key, zero, max))
            .unwrap_or(zero)
    };
    let ramp_up = optional(&raw.ramp_up, "ramp_up", HOUR);
    let ramp_down = optional(&raw.ramp_down, "ramp_down", HOUR);
    let think_time = optional(&raw.think_time, "think_time", Duration::from_secs(60));
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
                format_duration(ramp_up + ramp_down),
                format_duration(duration)
            ),
        );
    }
    let ipv6 = raw.ipv6.as_ref().map_or(0.5, |v| c.fraction(v, "ipv6"));
    let mut pauses = Vec::new();
    for (i, p) in raw.pauses.iter().enumerate() {
        let p = p.get_ref();
        let at = c.duration_between(&p.at, &format!("pauses[{i}].at"), zero, duration);
        let length = c.duration_between(
            &p.length,
            &format!("pauses[{i}].for"),
            Duration::from_millis(100),
            Duration::from_secs(600),
        );
        if let (Some(at), Some(l)) = (at, length) {
            pauses.push((at, l));
        }
    }
    Timing {
        rate,
        duration,
        ramp_up,
        ramp_down,
        think_time,
        ipv6,
        pauses,
    }
}

/// `[classes.NAME]` in file order; their shares must add up to 1.
fn classes(c: &mut Problems, raw: &RawProfile, ipv6: f64) -> Vec<ClassMix> {
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
        let mix = class_mix(c, class, &key, rc.get_ref(), ipv6);
        share_sum += mix.share;
        classes.push(mix);
    }
    if classes.is_empty() && c.is_empty() {
        c.err(
            raw.classes.span(),
            "classes",
            "name at least one client class",
        );
    } else if (share_sum - 1.0).abs() > 1e-3 && c.is_empty() {
        c.err(
            raw.classes.span(),
            "classes",
            format!("the shares add up to {share_sum:.3}, not 1"),
        );
    }
    classes
}

/// One `[classes.NAME]`: share, sources (that fit the class's range), TCP clients, heavy
/// hitters.
fn class_mix(c: &mut Problems, class: ClientClass, key: &str, r: &RawClass, ipv6: f64) -> ClassMix {
    let share = c.fraction(&r.share, &format!("{key}.share"));
    let sources = match &r.sources {
        Some(s) => {
            let n = *s.get_ref();
            let v4 = v4_count(n, ipv6);
            let at = format!("{key}.sources");
            if n == 0 && share > 0.0 {
                c.err(s.span(), at, "must be at least 1 for a class with a share");
            } else if n > 100_000 {
                c.err(s.span(), at, "must be at most 100000");
            } else if v4 > class.v4_capacity() / 2 {
                c.err(
                    s.span(),
                    at,
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
    ClassMix {
        class,
        share,
        sources,
        tcp_clients,
        heavy,
    }
}

/// `[[workloads]]`; their shares must add up to 1.
fn workloads(c: &mut Problems, raw: &RawProfile, classes: &[ClassMix]) -> Vec<Workload> {
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
        let wclasses = workload_classes(c, &key, w, classes);
        let kind = match w.kind.get_ref().as_str() {
            "udp" => Some(udp_kind(c, &key, w)),
            "tcp" => Some(tcp_kind(c, &key, rw.span(), w)),
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
    } else if (wsum - 1.0).abs() > 1e-3 && c.is_empty() {
        c.err(
            raw.workloads.span(),
            "workloads",
            format!("the shares add up to {wsum:.3}, not 1"),
        );
    }
    workloads
}

/// A workload's `classes` (every class of the profile when not given).
fn workload_classes(
    c: &mut Problems,
    key: &str,
    w: &RawWorkload,
    classes: &[ClassMix],
) -> Vec<ClientClass> {
    let Some(list) = &w.classes else {
        return classes.iter().map(|m| m.class).collect();
    };
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

/// A problem for a key that only another kind or mode takes (`at` = "workloads[1].port").
fn only_for<T>(c: &mut Problems, v: Option<&Spanned<T>>, at: String, what: &str) {
    if let Some(v) = v {
        c.err(v.span(), at, format!("only for {what}"));
    }
}

/// `kind = "udp"`: port and sizes; none of the TCP keys.
fn udp_kind(c: &mut Problems, key: &str, w: &RawWorkload) -> WorkloadKind {
    let tcp = "kind = \"tcp\"";
    only_for(c, w.upstream.as_ref(), format!("{key}.upstream"), tcp);
    only_for(c, w.request.as_ref(), format!("{key}.request"), tcp);
    only_for(c, w.path.as_ref(), format!("{key}.path"), tcp);
    only_for(c, w.timeout.as_ref(), format!("{key}.timeout"), tcp);
    only_for(
        c,
        w.max_in_flight.as_ref(),
        format!("{key}.max_in_flight"),
        tcp,
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
    let sizes = sizes(c, w.sizes.as_ref(), key);
    WorkloadKind::Udp {
        port,
        sizes: if sizes.is_empty() { vec![64] } else { sizes },
    }
}

/// `kind = "tcp"`: upstream, request, timeout, connections in flight; no port.
fn tcp_kind(c: &mut Problems, key: &str, whole: Range<usize>, w: &RawWorkload) -> WorkloadKind {
    only_for(
        c,
        w.port.as_ref(),
        format!("{key}.port"),
        "kind = \"udp (name the upstream)\"",
    );
    let upstream = match &w.upstream {
        Some(u) if !u.get_ref().is_empty() => u.get_ref().clone(),
        Some(u) => {
            c.err(u.span(), format!("{key}.upstream"), "must name an upstream");
            String::new()
        }
        None => {
            c.err(
                whole.clone(),
                format!("{key}.upstream"),
                "a tcp workload needs `upstream` (an [[upstreams]] name of the daemon config)",
            );
            String::new()
        }
    };
    let sizes = sizes(c, w.sizes.as_ref(), key);
    let request = tcp_request(c, key, whole, w, &sizes);
    let timeout = w
        .timeout
        .as_ref()
        .and_then(|t| {
            c.duration_between(
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
    WorkloadKind::Tcp {
        upstream,
        request,
        timeout,
        max_in_flight,
    }
}

/// A TCP workload's `request` (http with its `path`, echo or connect).
fn tcp_request(
    c: &mut Problems,
    key: &str,
    whole: Range<usize>,
    w: &RawWorkload,
    sizes: &[usize],
) -> Request {
    let request = match w.request.as_ref().map(|r| (r.get_ref().as_str(), r.span())) {
        None | Some(("http", _)) => {
            let path = w
                .path
                .as_ref()
                .map_or_else(|| "/".to_owned(), |p| p.get_ref().clone());
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                let span = w.path.as_ref().map_or(whole, Spanned::span);
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
        only_for(
            c,
            w.path.as_ref(),
            format!("{key}.path"),
            "kind = \"tcp with request = \"http\"\"",
        );
    }
    request
}

/// A workload's datagram or echo `sizes`, each within 1..=[`MAX_SIZE`].
fn sizes(c: &mut Problems, v: Option<&Spanned<Vec<Spanned<u32>>>>, key: &str) -> Vec<usize> {
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

/// Classes without `tcp_clients` get 2 when a TCP workload includes them, else 0; a class
/// with a TCP workload and `tcp_clients = 0` is a problem.
fn fill_tcp_clients(
    c: &mut Problems,
    raw: &RawProfile,
    classes: &mut [ClassMix],
    workloads: &[Workload],
) {
    for m in classes {
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
}

/// `[degrade]`: which upstream, when, for how long, and how (within the profile).
fn degrade(c: &mut Problems, d: &RawDegrade, duration: Duration) -> Option<Degrade> {
    let at = c.duration_between(&d.at, "degrade.at", Duration::ZERO, duration);
    let length = c.duration_between(
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
                format_duration(a + l),
                format_duration(duration)
            ),
        );
    }
    let mode = degrade_mode(c, d);
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
}

/// `[degrade] mode` with the keys that mode takes (`delay` for slow, `drop` and `reset`
/// for chaos) and none of the others.
fn degrade_mode(c: &mut Problems, d: &RawDegrade) -> Option<DegradeMode> {
    let mode = |m: &str| format!("mode = \"{m}\"");
    match d.mode.get_ref().as_str() {
        "down" | "error" | "slow" if d.drop.is_some() || d.reset.is_some() => {
            let (v, k) = match &d.drop {
                Some(v) => (v, "drop"),
                None => (d.reset.as_ref()?, "reset"),
            };
            only_for(c, Some(v), format!("degrade.{k}"), &mode("chaos"));
            None
        }
        "down" | "error" if d.delay.is_some() => {
            only_for(c, d.delay.as_ref(), "degrade.delay".into(), &mode("slow"));
            None
        }
        "down" => Some(DegradeMode::Down),
        "error" => Some(DegradeMode::Error),
        "slow" => match &d.delay {
            Some(v) => c
                .duration_between(
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
            only_for(c, d.delay.as_ref(), "degrade.delay".into(), &mode("slow"));
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
    }
}
