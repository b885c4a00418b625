//! `trafficctl feeds` as a table.

use std::fmt::Write;

use super::state::FeedsReport;

/// One row per feed; times relative to now.
pub fn render_feeds(r: &FeedsReport) -> String {
    let now = crate::engine::unix_now();
    let mut s = String::new();
    if r.feeds.is_empty() {
        return "no feeds configured\n".to_owned();
    }
    let _ = writeln!(
        s,
        "{:<20} {:<14} {:>9} {:>13} {:>13}  {:<40} LAST ERROR",
        "FEED", "ACTION", "PREFIXES", "LAST SUCCESS", "NEXT REFRESH", "SOURCE"
    );
    for f in &r.feeds {
        let ago = |t: Option<u64>| match t {
            Some(t) => format!("{}s ago", now.saturating_sub(t)),
            None if f.from_cache => "disk copy".to_owned(),
            None => "never".to_owned(),
        };
        let next = f
            .next_refresh_unix
            .map_or("-".to_owned(), |t| format!("in {}s", t.saturating_sub(now)));
        let _ = writeln!(
            s,
            "{:<20} {:<14} {:>9} {:>13} {:>13}  {:<40} {}",
            f.name,
            f.action,
            f.prefixes,
            ago(f.last_success_unix),
            next,
            f.source,
            f.last_error.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        s,
        "\nentries in force: {} IPv4, {} IPv6 (generation {})",
        r.entries_v4, r.entries_v6, r.active_generation
    );
    s
}
