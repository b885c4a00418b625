//! `[pressure]` and `[throttle]`.

use std::{ops::Range, path::PathBuf};

use toml::Spanned;

use super::Check;
use crate::{
    config::raw::{RawPressure, RawThrottle},
    policy::throttle::ThrottleSettings,
    pressure::PressureSettings,
    setting::SettingError,
};

/// `[pressure]` and `[throttle]` over their defaults; the policy's own validation reports
/// at the key that set the value.
/// Long (about 100 lines) because it is a flat list of optional keys, each merged over its
/// default and remembered with its span; a split would only move the list.
pub(super) fn pressure_and_throttle(
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
