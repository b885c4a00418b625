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
