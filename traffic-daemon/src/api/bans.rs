//! `/v1/bans`: the wire types and the table of `trafficctl bans`.

use serde::{Deserialize, Serialize};

pub use crate::bans::{Ban, BanRequest};

/// `GET /v1/bans`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BansReport {
    /// Unix time (ms) the report was made: `remaining` is counted from it.
    pub now_unix_ms: u64,
    pub capacity: usize,
    pub bans: Vec<Ban>,
}

/// `POST /v1/bans` and `DELETE /v1/bans?prefix=…` answer with the ban made or removed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BanAnswer {
    pub ban: Ban,
    /// For `POST`: whether it replaced a ban on the same prefix.
    #[serde(default)]
    pub replaced: bool,
}

/// Wall-clock time in ms (the CLI's "now" for a ban's remaining time).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds as `1d2h`, `3h4m`, `5m6s`, `7s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The table of `trafficctl bans`.
pub fn render_bans(r: &BansReport) -> String {
    use std::fmt::Write as _;
    if r.bans.is_empty() {
        return "no bans\n".into();
    }
    let mut out = format!(
        "{:<44} {:>9} {:<9} {:<5} REASON\n",
        "PREFIX", "REMAINING", "ORIGIN", "FORCE"
    );
    for b in &r.bans {
        let left = b.until_unix_ms.saturating_sub(r.now_unix_ms).div_ceil(1000);
        let origin = serde_json::to_value(b.origin)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:<9} {:<5} {}",
            b.prefix.to_string(),
            human_duration(left),
            origin,
            if b.force { "yes" } else { "no" },
            b.reason
        );
    }
    let _ = writeln!(out, "{} of {} bans", r.bans.len(), r.capacity);
    out
}

/// One line for `trafficctl ban`.
pub fn render_answer(a: &BanAnswer, now_unix_ms: u64) -> String {
    let left = a
        .ban
        .until_unix_ms
        .saturating_sub(now_unix_ms)
        .div_ceil(1000);
    let force = if a.ban.force {
        ", over allow rules"
    } else {
        ""
    };
    let replaced = if a.replaced {
        "; replaced the earlier ban"
    } else {
        ""
    };
    format!(
        "banned {} for {}{force} ({}){replaced}\n",
        a.ban.prefix,
        human_duration(left),
        a.ban.reason
    )
}

/// One line for `trafficctl unban`.
pub fn render_unban(a: &BanAnswer, now_unix_ms: u64) -> String {
    let left = a
        .ban
        .until_unix_ms
        .saturating_sub(now_unix_ms)
        .div_ceil(1000);
    format!(
        "unbanned {} ({}; {} were left)\n",
        a.ban.prefix,
        a.ban.reason,
        human_duration(left)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bans::{Origin, Prefix};

    #[test]
    fn the_table_shows_prefix_remaining_origin_and_reason() {
        let r = BansReport {
            now_unix_ms: 1_000_000,
            capacity: 65_536,
            bans: vec![Ban {
                prefix: Prefix::parse("2001:db8::/64").unwrap(),
                until_unix_ms: 1_000_000 + 3_600_000,
                reason: "ssh brute force".into(),
                force: true,
                origin: Origin::Auto,
                created_unix_ms: 1_000_000,
            }],
        };
        let t = render_bans(&r);
        assert!(t.contains("2001:db8::/64"), "{t}");
        assert!(t.contains("1h0m"), "{t}");
        assert!(t.contains("auto"), "{t}");
        assert!(t.contains("yes"), "{t}");
        assert!(t.contains("ssh brute force"), "{t}");
        assert!(t.contains("1 of 65536 bans"), "{t}");
        assert_eq!(render_bans(&BansReport { bans: vec![], ..r }), "no bans\n");
        assert_eq!(human_duration(90_061), "1d1h");
        assert_eq!(human_duration(61), "1m1s");
    }
}
