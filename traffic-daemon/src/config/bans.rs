//! `[bans]` and `[classes.NAME.offender]`: raw keys and their validation (see
//! [`crate::bans`]).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::syntax::Problems;

/// Default `[bans] state_file`: under the unit's `StateDirectory=traffic`.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/traffic/bans.json";

/// `[bans]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBans {
    pub(super) state_file: Option<Spanned<String>>,
}

/// `[classes.NAME.offender]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOffender {
    pub(super) drop_ratio: Spanned<f64>,
    pub(super) window: Option<Spanned<String>>,
    pub(super) min_packets: Option<Spanned<i64>>,
    pub(super) ban_for: Option<Spanned<String>>,
}

/// `[bans]`
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BansConfig {
    /// Where the bans are kept across reboots (absolute path). Read at start; a change
    /// takes effect at the next start.
    pub state_file: PathBuf,
}

impl Default for BansConfig {
    fn default() -> Self {
        Self {
            state_file: PathBuf::from(DEFAULT_STATE_FILE),
        }
    }
}

/// `[classes.NAME.offender]`: a source of the class dropped for at least `drop_ratio` of
/// its packets over `window` (and at least `min_packets` packets) is banned for `ban_for`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OffenderSettings {
    pub drop_ratio: f64,
    pub window: Duration,
    pub min_packets: u64,
    pub ban_for: Duration,
}

/// Shortest offender window: the detector reads the counters every few seconds
/// ([`crate::bans::offender::WALK_INTERVAL`]).
const MIN_WINDOW: Duration = Duration::from_secs(10);
const MAX_WINDOW: Duration = Duration::from_secs(3600);

pub(super) fn bans(p: &mut Problems, raw: Option<&Spanned<RawBans>>) -> BansConfig {
    let mut out = BansConfig::default();
    if let Some(f) = raw.and_then(|r| r.get_ref().state_file.as_ref()) {
        let path = PathBuf::from(f.get_ref());
        if !path.is_absolute() || f.get_ref().split('/').any(|c| c == "..") {
            p.err(
                f.span(),
                "bans.state_file",
                "must be an absolute path without `..`",
            );
        } else {
            out.state_file = path;
        }
    }
    out
}

pub(super) fn offender(
    p: &mut Problems,
    raw: &Spanned<RawOffender>,
    key: &str,
) -> Option<OffenderSettings> {
    let r = raw.get_ref();
    let ratio = *r.drop_ratio.get_ref();
    if !(ratio > 0.0 && ratio <= 1.0) {
        p.err(
            r.drop_ratio.span(),
            format!("{key}.drop_ratio"),
            "must be above 0 and at most 1",
        );
    }
    let window = match &r.window {
        Some(w) => p.duration_between(w, &format!("{key}.window"), MIN_WINDOW, MAX_WINDOW)?,
        None => Duration::from_secs(30),
    };
    let ban_for = match &r.ban_for {
        Some(b) => p.duration_between(
            b,
            &format!("{key}.ban_for"),
            crate::bans::MIN_DURATION,
            crate::bans::MAX_DURATION,
        )?,
        None => Duration::from_secs(600),
    };
    let min_packets = match &r.min_packets {
        Some(m) if (1..=1_000_000_000).contains(m.get_ref()) => *m.get_ref() as u64,
        Some(m) => {
            p.err(
                m.span(),
                format!("{key}.min_packets"),
                "must be between 1 and 1000000000",
            );
            return None;
        }
        None => 100,
    };
    Some(OffenderSettings {
        drop_ratio: ratio,
        window,
        min_packets,
        ban_for,
    })
}
