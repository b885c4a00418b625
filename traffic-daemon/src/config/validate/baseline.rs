//! `[baseline]`: the observation behind `trafficctl suggest`.

use std::time::Duration;

use toml::Spanned;

use super::Check;
use crate::{config::raw::RawBaseline, policy::baseline::BaselineSettings};

/// The sustained window's bounds: shorter is no longer "sustained", longer outlives most
/// sources.
const WINDOW: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3600));
/// Live sources followed: each costs about 100 bytes of the daemon's memory.
const MAX_SOURCES: (i64, i64) = (16, 1_048_576);

pub(super) fn baseline(c: &mut Check, b: Option<&Spanned<RawBaseline>>) -> BaselineSettings {
    let mut out = BaselineSettings::default();
    let Some(b) = b else {
        return out;
    };
    let b = b.get_ref();
    if let Some(e) = b.enabled {
        out.enabled = e;
    }
    if let Some(w) = &b.window
        && let Some(d) = c.duration(w, "baseline.window")
    {
        if (WINDOW.0..=WINDOW.1).contains(&d) {
            out.window = d;
        } else {
            c.err(w.span(), "baseline.window", "must be between 5s and 1h");
        }
    }
    if let Some(m) = &b.max_sources {
        if (MAX_SOURCES.0..=MAX_SOURCES.1).contains(m.get_ref()) {
            out.max_sources = *m.get_ref() as u32;
        } else {
            c.err(
                m.span(),
                "baseline.max_sources",
                "must be between 16 and 1048576",
            );
        }
    }
    out
}
