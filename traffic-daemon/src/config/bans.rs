//! `[bans]` and `[classes.NAME.offender]`: raw keys and their validation (see
//! [`crate::bans`]).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::syntax::Problems;

/// Shortest ban: anything shorter is a typo (a bare number is refused anyway).
pub const MIN_DURATION: Duration = Duration::from_secs(1);
/// Longest ban: a year. A permanent block is a `deny` rule in the config, where it is
/// reviewed with the rest of the policy.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);
/// Most bans in force at once: the kernel map's capacity.
pub const MAX_BANS: usize = traffic_common::BANS_ENTRIES as usize;

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
    /// `"node"` (default) or `"fleet"`: share the automatic bans with the fleet.
    pub(super) scope: Option<Spanned<String>>,
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
    /// `scope = "fleet"`: the automatic bans are shared with every node (`[fleet]`).
    pub fleet: bool,
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
        Some(b) => p.duration_between(b, &format!("{key}.ban_for"), MIN_DURATION, MAX_DURATION)?,
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
    let fleet = scope(p, r.scope.as_ref(), &format!("{key}.scope"))?;
    Some(OffenderSettings {
        fleet,
        drop_ratio: ratio,
        window,
        min_packets,
        ban_for,
    })
}

/// A `scope` key: `"node"` (or absent) is `false`, `"fleet"` is `true`; anything else is a
/// problem (`None`).
pub(super) fn scope(p: &mut Problems, v: Option<&Spanned<String>>, key: &str) -> Option<bool> {
    match v.map(|s| s.get_ref().as_str()) {
        None | Some("node") => Some(false),
        Some("fleet") => Some(true),
        Some(_) => {
            p.err(v?.span(), key, "must be \"node\" or \"fleet\"");
            None
        }
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
    fn offender_settings_and_the_state_file_are_read_with_defaults() {
        let c = parse("[classes.default.offender]\ndrop_ratio = 0.9\n").unwrap();
        assert_eq!(
            c.classes[0].offender,
            Some(OffenderSettings {
                fleet: false,
                drop_ratio: 0.9,
                window: Duration::from_secs(30),
                min_packets: 100,
                ban_for: Duration::from_secs(600),
            })
        );
        assert_eq!(c.bans, BansConfig::default());
        let c = parse("[bans]\nstate_file = \"/srv/bans.json\"\n").unwrap();
        assert_eq!(c.bans.state_file, PathBuf::from("/srv/bans.json"));
    }

    #[test]
    fn bad_offender_settings_and_state_files_name_their_key() {
        for (tail, key) in [
            (
                "[classes.default.offender]\ndrop_ratio = 1.5\n",
                "offender.drop_ratio",
            ),
            (
                "[classes.default.offender]\ndrop_ratio = 0\n",
                "offender.drop_ratio",
            ),
            (
                "[classes.default.offender]\ndrop_ratio = 0.9\nwindow = \"1s\"\n",
                "offender.window",
            ),
            (
                "[classes.default.offender]\ndrop_ratio = 0.9\nban_for = \"3650d\"\n",
                "offender.ban_for",
            ),
            (
                "[classes.default.offender]\ndrop_ratio = 0.9\nmin_packets = 0\n",
                "offender.min_packets",
            ),
            ("[classes.default.offender]\nratio = 0.9\n", "ratio"),
            ("[bans]\nstate_file = \"bans.json\"\n", "bans.state_file"),
            (
                "[bans]\nstate_file = \"/var/lib/../etc/x\"\n",
                "bans.state_file",
            ),
        ] {
            let e = parse(tail).unwrap_err();
            assert!(e.contains(key), "{tail}: {e}");
        }
    }
}
