//! `[classes.*]` and the default class.

use std::ops::Range;

use toml::Spanned;

use super::{Check, class_index, prefix};
use crate::config::{
    ClassSpec, RateLimit,
    raw::{OneOrMany, Ordered, RawClass, RawDaemon},
};

/// The classes in file order.
/// About 90 lines: one pass over the classes checking each key in turn (name, stacked
/// packet limits, bytes, admission, overflow, aggregation); the steps share the class key.
/// `has_fleet`: the file has a `[fleet]` section (a class of `scope = "fleet"` needs one).
pub(super) fn classes(
    c: &mut Check,
    raw: Ordered<Spanned<RawClass>>,
    has_fleet: bool,
) -> Vec<ClassSpec> {
    // Without toml's `preserve_order` feature tables come sorted by key: restore file order.
    let mut raw_classes = raw.0;
    raw_classes.sort_by_key(|(_, class)| class.span().start);
    let mut classes = Vec::new();
    if let Some((_, extra)) = raw_classes.get(traffic_common::MAX_CLASSES as usize) {
        c.err(
            extra.span(),
            "classes",
            format!(
                "at most {} classes are supported",
                traffic_common::MAX_CLASSES
            ),
        );
    }
    for (name, spanned) in &raw_classes {
        let span = spanned.span();
        let rc = spanned.get_ref();
        let key = format!("classes.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            c.err(
                span.clone(),
                &key,
                "class names use letters, digits, `_` and `-`",
            );
        }
        if name.len() > traffic_common::MAX_CLASS_NAME {
            c.err(
                span.clone(),
                &key,
                format!(
                    "class names are at most {} bytes",
                    traffic_common::MAX_CLASS_NAME
                ),
            );
        }
        let packets: Vec<RateLimit> = match &rc.packets {
            None => Vec::new(),
            Some(OneOrMany(list)) => {
                if list.len() > traffic_common::MAX_PACKET_LIMITS {
                    c.err(
                        span.clone(),
                        format!("{key}.packets"),
                        format!(
                            "at most {} stacked packet limits",
                            traffic_common::MAX_PACKET_LIMITS
                        ),
                    );
                }
                list.iter()
                    .enumerate()
                    .filter_map(|(i, l)| c.limit(&format!("{key}.packets[{i}]"), l))
                    .collect()
            }
        };
        let bytes = rc
            .bytes
            .as_ref()
            .and_then(|b| c.byte_limit(&format!("{key}.bytes"), b));
        let admission = rc
            .admission
            .as_ref()
            .and_then(|l| c.limit(&format!("{key}.admission"), l));
        let overflow = rc
            .overflow
            .as_ref()
            .and_then(|l| c.limit(&format!("{key}.overflow"), l));
        if rc.overflow.is_some() && rc.admission.is_none() {
            c.err(
                span.clone(),
                format!("{key}.overflow"),
                "needs `admission`: only sources over the admission budget use the overflow bucket",
            );
        }
        classes.push(ClassSpec {
            name: name.clone(),
            priority: rc.priority,
            mode: rc.mode,
            packets,
            bytes,
            aggregate_v4: prefix(c, &rc.aggregate_v4, &format!("{key}.aggregate_v4"), 32, 32),
            aggregate_v6: prefix(c, &rc.aggregate_v6, &format!("{key}.aggregate_v6"), 128, 64),
            admission,
            overflow,
            offender: rc.offender.as_ref().and_then(|o| {
                crate::config::bans::offender(&mut c.problems, o, &format!("{key}.offender"))
            }),
            fleet: fleet_scope(c, rc, &key, has_fleet),
        });
    }
    classes
}

/// A class's `scope`: `"fleet"` needs a `[fleet]` section and a per-source limit to share.
fn fleet_scope(c: &mut Check, rc: &RawClass, key: &str, has_fleet: bool) -> bool {
    let key = format!("{key}.scope");
    let fleet = crate::config::bans::scope(&mut c.problems, rc.scope.as_ref(), &key);
    match (fleet, &rc.scope) {
        (Some(true), Some(s)) if !has_fleet => {
            c.err(s.span(), key, "\"fleet\" needs a [fleet] section");
            false
        }
        (Some(true), Some(s)) if rc.packets.is_none() && rc.bytes.is_none() => {
            c.err(
                s.span(),
                key,
                "\"fleet\" needs `packets` or `bytes` limits to share",
            );
            false
        }
        (f, _) => f.unwrap_or(false),
    }
}

/// `[daemon] default_class`, or the class named `default`.
pub(super) fn default_class(
    c: &mut Check,
    d: &RawDaemon,
    daemon_span: Range<usize>,
    classes: &[ClassSpec],
) -> usize {
    match &d.default_class {
        Some(n) => match class_index(classes, n.get_ref()) {
            Some(i) => i,
            None => {
                c.err(
                    n.span(),
                    "daemon.default_class",
                    format!("no class named `{}`", n.get_ref()),
                );
                0
            }
        },
        None => match class_index(classes, "default") {
            Some(i) => i,
            None => {
                c.err(
                    daemon_span.clone(),
                    "daemon.default_class",
                    "not set and there is no class named `default`",
                );
                0
            }
        },
    }
}
