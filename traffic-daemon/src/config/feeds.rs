//! `[[feeds]]`: blocklists imported from a local file or an HTTP(S) URL (raw form and the
//! validated [`FeedSpec`]; the checks are in `validate::feeds`).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::Size;

/// Default directory of the on-disk copies of downloaded feeds (`cache`).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/traffic/feeds";
/// Default `max_prefixes` of a feed.
pub const DEFAULT_MAX_PREFIXES: u32 = 1_000_000;
/// Default `max_size` of a feed (bytes downloaded or read).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Largest `max_size` accepted.
pub const MAX_BYTES: u64 = 1 << 30;
/// Default `timeout` of a download.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest `refresh` of a URL feed (be kind to list maintainers).
pub const MIN_URL_REFRESH: Duration = Duration::from_secs(60);
/// Shortest `refresh` of a file feed (a local re-read is cheap).
pub const MIN_FILE_REFRESH: Duration = Duration::from_secs(1);
/// Longest `refresh`.
pub const MAX_REFRESH: Duration = Duration::from_secs(7 * 86_400);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeed {
    pub(super) name: Spanned<String>,
    pub(super) source: Spanned<String>,
    pub(super) refresh: Option<Spanned<String>>,
    pub(super) action: Option<Spanned<RawFeedAction>>,
    pub(super) class: Option<Spanned<String>>,
    pub(super) max_prefixes: Option<Spanned<i64>>,
    pub(super) max_size: Option<Spanned<Size>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) cache: Option<Spanned<String>>,
}

/// `action = "deny"` or `action = { class = "NAME" }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawFeedAction {
    Word(String),
    Class { class: String },
}

/// Where a feed comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedSource {
    /// A local file, re-read at each refresh.
    File(PathBuf),
    /// An `http://` or `https://` URL, downloaded at each refresh.
    Url(String),
}

impl std::fmt::Display for FeedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Url(u) => f.write_str(u),
        }
    }
}

/// What a feed does with the sources it lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedAction {
    /// Drop them ([`traffic_common::Reason::FeedDeny`]).
    Deny,
    /// Put them in this class (index into [`super::Config::classes`]).
    Class(usize),
}

/// A validated `[[feeds]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeedSpec {
    pub name: String,
    pub source: FeedSource,
    pub refresh: Duration,
    pub action: FeedAction,
    /// A feed listing more prefixes is refused as a whole.
    pub max_prefixes: u32,
    /// A feed larger than this (bytes) is refused as a whole.
    pub max_bytes: u64,
    /// Whole-download deadline (connect, headers and body).
    pub timeout: Duration,
    /// On-disk copy of the last good download (URL feeds): used at start before the first
    /// download, and when every download fails.
    pub cache: PathBuf,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[daemon]\ninterfaces = [\"veth0\"]\n[classes.default]\n[classes.suspect]\n";

    fn parse(feeds: &str) -> Result<Config, String> {
        Config::parse(Path::new("t.toml"), &format!("{BASE}{feeds}")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_three_action_forms_and_the_defaults() {
        let c = parse(
            "[[feeds]]\nname = \"drop\"\nsource = \"https://example.invalid/drop.txt\"\naction = \"deny\"\n\
             [[feeds]]\nname = \"a\"\nsource = \"/etc/traffic/a.txt\"\naction = { class = \"suspect\" }\n\
             [[feeds]]\nname = \"b\"\nsource = \"/etc/traffic/b.txt\"\nclass = \"suspect\"\nrefresh = \"5s\"\n\
             max_prefixes = 10\nmax_size = \"1MiB\"\ncache = \"/tmp/b.list\"\n",
        )
        .unwrap();
        let [drop, a, b] = &c.feeds[..] else {
            panic!("{:?}", c.feeds)
        };
        assert_eq!(drop.action, FeedAction::Deny);
        assert_eq!(drop.refresh, Duration::from_secs(3600));
        assert_eq!(drop.max_prefixes, DEFAULT_MAX_PREFIXES);
        assert_eq!(drop.max_bytes, DEFAULT_MAX_BYTES);
        assert_eq!(
            drop.cache,
            PathBuf::from("/var/lib/traffic/feeds/drop.list")
        );
        assert_eq!(a.action, FeedAction::Class(1));
        assert_eq!(a.source, FeedSource::File("/etc/traffic/a.txt".into()));
        assert_eq!(a.refresh, Duration::from_secs(60));
        assert_eq!(
            (b.refresh, b.max_prefixes, b.max_bytes),
            (Duration::from_secs(5), 10, 1 << 20)
        );
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let cases = [
            (
                "[[feeds]]\nname = \"x\"\nsource = \"/a\"\n",
                "feeds[0].action",
            ),
            (
                "[[feeds]]\nname = \"x\"\nsource = \"/a\"\naction = \"deny\"\nclass = \"suspect\"\n",
                "feeds[0].class",
            ),
            (
                "[[feeds]]\nname = \"x\"\nsource = \"/a\"\nclass = \"nope\"\n",
                "feeds[0].class",
            ),
            (
                "[[feeds]]\nname = \"x\"\nsource = \"/a\"\naction = \"allow\"\n",
                "feeds[0].action",
            ),
            (
                "[[feeds]]\nname = \"x\"\nsource = \"a.txt\"\naction = \"deny\"\n",
                "feeds[0].source",
            ),
            (
                "[[feeds]]\nname = \"x\"\nsource = \"http://h/a\"\naction = \"deny\"\nrefresh = \"10s\"\n",
                "feeds[0].refresh",
            ),
            (
                "[[feeds]]\nname = \"x\"\nsource = \"/a\"\naction = \"deny\"\nmax_prefixes = 3000000\n",
                "feeds[0].max_prefixes",
            ),
            (
                "[[feeds]]\nname = \"a b\"\nsource = \"/a\"\naction = \"deny\"\n",
                "feeds[0].name",
            ),
            (
                "[[feeds]]\nname = \"x\"\nsource = \"/a\"\naction = \"deny\"\n[[feeds]]\nname = \"x\"\nsource = \"/b\"\naction = \"deny\"\n",
                "feeds[1].name",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).expect_err(text);
            assert!(
                e.contains(&format!(": {key}: ")) && e.contains("t.toml:"),
                "{key}: {e}"
            );
        }
    }
}
