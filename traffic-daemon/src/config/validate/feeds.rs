//! `[[feeds]]`.

use std::{collections::HashSet, path::PathBuf};

use toml::Spanned;

use super::{Check, class_index};
use crate::config::{
    ClassSpec,
    feeds::{
        DEFAULT_CACHE_DIR, DEFAULT_MAX_BYTES, DEFAULT_MAX_PREFIXES, DEFAULT_TIMEOUT, FeedAction,
        FeedSource, FeedSpec, MAX_BYTES, MAX_REFRESH, MIN_FILE_REFRESH, MIN_URL_REFRESH, RawFeed,
        RawFeedAction,
    },
};

pub(super) fn feeds(
    c: &mut Check,
    raw: &[Spanned<RawFeed>],
    classes: &[ClassSpec],
) -> Vec<FeedSpec> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("feeds[{i}]");
        if let Some(f) = feed(c, &key, r, classes) {
            if !names.insert(f.name.clone()) {
                c.err(
                    r.get_ref().name.span(),
                    format!("{key}.name"),
                    format!("another feed is named `{}`", f.name),
                );
            }
            out.push(f);
        }
    }
    out
}

fn feed(c: &mut Check, key: &str, r: &Spanned<RawFeed>, classes: &[ClassSpec]) -> Option<FeedSpec> {
    let rf = r.get_ref();
    let name = rf.name.get_ref().clone();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
    if !name_ok {
        c.err(
            rf.name.span(),
            format!("{key}.name"),
            "must be 1–64 characters of letters, digits, `-`, `_` or `.`",
        );
    }
    let text = rf.source.get_ref();
    let source = if text.starts_with("http://") || text.starts_with("https://") {
        FeedSource::Url(text.clone())
    } else if text.starts_with('/') {
        FeedSource::File(PathBuf::from(text))
    } else {
        c.err(
            rf.source.span(),
            format!("{key}.source"),
            "must be an absolute file path or an http:// or https:// URL",
        );
        return None;
    };
    let (min, default) = match source {
        FeedSource::File(_) => (MIN_FILE_REFRESH, std::time::Duration::from_secs(60)),
        FeedSource::Url(_) => (MIN_URL_REFRESH, std::time::Duration::from_secs(3600)),
    };
    let refresh = match &rf.refresh {
        Some(v) => {
            let d = c.duration(v, &format!("{key}.refresh"))?;
            if d < min || d > MAX_REFRESH {
                c.err(
                    v.span(),
                    format!("{key}.refresh"),
                    format!(
                        "must be between {}s and {}s for this source",
                        min.as_secs(),
                        MAX_REFRESH.as_secs()
                    ),
                );
                return None;
            }
            d
        }
        None => default,
    };
    let action = action(c, key, r, classes)?;
    let (max_prefixes, max_bytes, timeout) = bounds(c, key, rf)?;
    let cache = match &rf.cache {
        Some(v) if v.get_ref().starts_with('/') => PathBuf::from(v.get_ref()),
        Some(v) => {
            c.err(v.span(), format!("{key}.cache"), "must be an absolute path");
            return None;
        }
        None => PathBuf::from(DEFAULT_CACHE_DIR).join(format!("{name}.list")),
    };
    name_ok.then_some(FeedSpec {
        name,
        source,
        refresh,
        action,
        max_prefixes,
        max_bytes,
        timeout,
        cache,
    })
}

/// `max_prefixes`, `max_size` and `timeout`, with their defaults.
fn bounds(c: &mut Check, key: &str, rf: &RawFeed) -> Option<(u32, u64, std::time::Duration)> {
    let max_prefixes = match &rf.max_prefixes {
        Some(v) => {
            let cap = i64::from(traffic_common::MAX_FEED_PREFIXES);
            if !(1..=cap).contains(v.get_ref()) {
                c.err(
                    v.span(),
                    format!("{key}.max_prefixes"),
                    format!("must be between 1 and {cap}"),
                );
                return None;
            }
            *v.get_ref() as u32
        }
        None => DEFAULT_MAX_PREFIXES,
    };
    let max_bytes = match &rf.max_size {
        Some(v) => {
            let b = c.size(v, &format!("{key}.max_size"))?;
            if b == 0 || b > MAX_BYTES {
                c.err(
                    v.span(),
                    format!("{key}.max_size"),
                    "must be between 1 byte and 1 GiB",
                );
                return None;
            }
            b
        }
        None => DEFAULT_MAX_BYTES,
    };
    let timeout = match &rf.timeout {
        Some(v) => {
            let d = c.duration(v, &format!("{key}.timeout"))?;
            if d.is_zero() || d.as_secs() > 600 {
                c.err(
                    v.span(),
                    format!("{key}.timeout"),
                    "must be between 1ms and 10m",
                );
                return None;
            }
            d
        }
        None => DEFAULT_TIMEOUT,
    };
    Some((max_prefixes, max_bytes, timeout))
}

/// `action = "deny"`, `action = { class = "NAME" }` or `class = "NAME"`: exactly one.
fn action(
    c: &mut Check,
    key: &str,
    r: &Spanned<RawFeed>,
    classes: &[ClassSpec],
) -> Option<FeedAction> {
    let rf = r.get_ref();
    let class = |c: &mut Check, name: &str, span| match class_index(classes, name) {
        Some(ci) => Some(FeedAction::Class(ci)),
        None => {
            c.err(
                span,
                format!("{key}.class"),
                format!("no class named `{name}`"),
            );
            None
        }
    };
    match (&rf.action, &rf.class) {
        (Some(_), Some(cl)) => {
            c.err(
                cl.span(),
                format!("{key}.class"),
                "give either `action` or `class`, not both",
            );
            None
        }
        (None, None) => {
            c.err(
                r.span(),
                format!("{key}.action"),
                "a feed needs `action = \"deny\"` or a `class`",
            );
            None
        }
        (None, Some(cl)) => class(c, cl.get_ref(), cl.span()),
        (Some(a), None) => match a.get_ref() {
            RawFeedAction::Word(w) if w == "deny" => Some(FeedAction::Deny),
            RawFeedAction::Word(_) => {
                c.err(
                    a.span(),
                    format!("{key}.action"),
                    "must be \"deny\" or { class = \"NAME\" }",
                );
                None
            }
            RawFeedAction::Class { class: n } => class(c, n, a.span()),
        },
    }
}
