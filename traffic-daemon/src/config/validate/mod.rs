//! Validation of the raw file into a [`Config`], one section per file, every problem
//! collected (a user sees all of them at once). Sections are checked in file order, so
//! problems come out in that order.

mod baseline;
mod classes;
mod daemon;
mod feeds;
mod pressure;
mod rules;
mod upstreams;

use std::{net::IpAddr, ops::Range, path::Path, str::FromStr};

use toml::Spanned;

use super::{
    ClassSpec, Config, DaemonConfig, RateLimit,
    raw::{RawByteLimit, RawConfig, RawLimit, RawUpstream, Size},
    syntax::{self, Problems, Unlocated},
};

/// Validate every section; the [`Config`] when nothing is wrong.
pub(super) fn validate(path: &Path, raw: RawConfig) -> Result<Config, Vec<Unlocated>> {
    let mut c = Check {
        problems: Problems::new(),
    };
    let daemon_span = raw.daemon.span();
    let d = raw.daemon.into_inner();
    let daemon = daemon::daemon(&mut c, &d);
    let admin = daemon::admin(&mut c, &raw.admin);
    let metrics = daemon::metrics(&mut c, &raw.metrics);
    let classes = classes::classes(&mut c, raw.classes, raw.fleet.is_some());
    let default_class = classes::default_class(&mut c, &d, daemon_span, &classes);
    let rules = rules::rules(&mut c, &raw.rules, &classes);
    let ports = rules::ports(&mut c, &raw.ports, &classes);
    let (breaker_defaults, groups) = upstreams::breaker(&mut c, raw.breaker.as_ref());
    let upstreams = upstreams::upstreams(&mut c, &raw.upstreams, &breaker_defaults, &groups);
    ports_fit(&mut c, &ports, &raw.upstreams, upstreams.len());
    let ports = ports.specs;

    let bans = super::bans::bans(&mut c.problems, raw.bans.as_ref());
    let fleet = super::fleet::fleet(&mut c.problems, raw.fleet.as_ref());
    let (pressure, throttle) =
        pressure::pressure_and_throttle(&mut c, raw.pressure.as_ref(), raw.throttle.as_ref());
    let baseline = baseline::baseline(&mut c, raw.baseline.as_ref());
    let feeds = feeds::feeds(&mut c, &raw.feeds, &classes);

    if !c.problems.is_empty() {
        return Err(c.problems.into_vec());
    }
    Ok(Config {
        source: path.to_owned(),
        daemon: DaemonConfig {
            interfaces: daemon.interfaces,
            attach: d.attach,
            mode: d.mode,
            default_class,
            summary_interval: daemon.summary_interval,
            pin_dir: daemon.pin_dir,
            on_exit: d.on_exit,
            max_sources: daemon.max_sources,
        },
        admin,
        metrics,
        classes,
        rules,
        ports,
        breaker: breaker_defaults,
        breaker_groups: groups,
        upstreams,
        pressure,
        throttle,
        baseline,
        included: Vec::new(),
        bans,
        feeds,
        fleet,
    })
}

/// Port rules and upstreams share the kernel's ports map: refuse more than it holds, at
/// the first entry that does not fit (upstreams come after the port rules, and a port range
/// takes one entry per port).
fn ports_fit(
    c: &mut Check,
    ports: &rules::Ports,
    raw_upstreams: &[Spanned<RawUpstream>],
    upstreams: usize,
) {
    let limit = traffic_common::MAX_PORTS as usize;
    let used = ports.entries + upstreams;
    if used <= limit {
        return;
    }
    let (span, key) = match &ports.first_over {
        Some((span, key)) => (span.clone(), key.clone()),
        None => {
            let i = (limit - ports.entries).min(raw_upstreams.len().saturating_sub(1));
            let span = raw_upstreams.get(i).map_or(0..0, Spanned::span);
            (span, format!("upstreams[{i}]"))
        }
    };
    c.err(
        span,
        key,
        format!(
            "at most {limit} port rules and upstreams together (the kernel's ports map \
             holds {limit}; a range takes one per port); the configuration has {used}"
        ),
    );
}

fn class_index(classes: &[ClassSpec], name: &str) -> Option<usize> {
    classes.iter().position(|cl| cl.name == name)
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
            IpAddr::V6((u128::from(a) & traffic_common::prefix_mask(u32::from(len))).into())
        }
    }
}

/// Validate raw structs into a [`Config`], collecting every problem.
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
