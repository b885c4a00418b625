//! `[daemon]`, `[admin]` and `[metrics]`.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use super::Check;
use crate::config::{
    AdminConfig, MetricsConfig,
    raw::{RawAdmin, RawDaemon, RawMetrics},
};

/// The `[daemon]` values validated here (the rest need the classes, or are enums serde
/// already checked).
pub(super) struct Daemon {
    pub interfaces: Vec<String>,
    pub summary_interval: Duration,
    pub pin_dir: PathBuf,
    pub max_sources: u32,
}

pub(super) fn daemon(c: &mut Check, d: &RawDaemon) -> Daemon {
    let interfaces = d.interfaces.get_ref().clone();
    if interfaces.is_empty() {
        c.err(
            d.interfaces.span(),
            "daemon.interfaces",
            "must name at least one interface",
        );
    }
    let mut seen = HashSet::new();
    for name in &interfaces {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            c.err(
                d.interfaces.span(),
                "daemon.interfaces",
                format!("`{name}` is not a valid interface name"),
            );
        }
        if !seen.insert(name) {
            c.err(
                d.interfaces.span(),
                "daemon.interfaces",
                format!("`{name}` is listed twice"),
            );
        }
    }
    let summary_interval = match &d.summary_interval {
        Some(s) => match c.duration(s, "daemon.summary_interval") {
            Some(i) if i < Duration::from_secs(1) => {
                c.err(s.span(), "daemon.summary_interval", "must be at least 1s");
                i
            }
            Some(i) if i > MAX_SUMMARY_INTERVAL => {
                c.err(s.span(), "daemon.summary_interval", "must be at most 1d");
                i
            }
            Some(i) => i,
            None => Duration::default(),
        },
        None => Duration::from_secs(60),
    };
    let pin_dir = match &d.pin_dir {
        Some(p) => match pin_dir_under_bpffs(p.get_ref()) {
            Ok(dir) => dir,
            Err(m) => {
                c.err(p.span(), "daemon.pin_dir", m);
                PathBuf::new()
            }
        },
        None => PathBuf::from("/sys/fs/bpf/traffic"),
    };
    let max_sources = match &d.max_sources {
        None => traffic_common::BUCKETS_ENTRIES,
        Some(v) if (1024..=16_777_216).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            c.err(
                v.span(),
                "daemon.max_sources",
                "must be between 1024 and 16777216",
            );
            traffic_common::BUCKETS_ENTRIES
        }
    };
    Daemon {
        interfaces,
        summary_interval,
        pin_dir,
        max_sources,
    }
}

/// Longest `daemon.summary_interval` (a day: longer would mean no summary at all).
const MAX_SUMMARY_INTERVAL: Duration = Duration::from_secs(86_400);

/// `pin_dir` canonicalised lexically (repeated and trailing `/` and `.` components
/// dropped), refused unless strictly under `/sys/fs/bpf/` and free of `..`: `--fresh`
/// removes this directory, so it must never name anything outside bpffs. Lexical, not
/// `fs::canonicalize`: validation reads no file system (the directory need not exist yet).
fn pin_dir_under_bpffs(text: &str) -> Result<PathBuf, String> {
    let under = "must be a directory under /sys/fs/bpf/";
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(under.to_owned());
    }
    let mut clean = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                return Err(format!("{under} (`..` is not allowed)"));
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    let bpffs = Path::new("/sys/fs/bpf");
    if !clean.starts_with(bpffs) || clean == bpffs {
        return Err(under.to_owned());
    }
    Ok(clean)
}

pub(super) fn admin(c: &mut Check, admin: &RawAdmin) -> AdminConfig {
    let socket = admin.socket.as_ref().map_or_else(
        || PathBuf::from("/run/traffic/admin.sock"),
        |s| PathBuf::from(s.get_ref()),
    );
    if let Some(s) = &admin.socket
        && !Path::new(s.get_ref()).is_absolute()
    {
        c.err(s.span(), "admin.socket", "must be an absolute path");
    }
    let socket_mode = match &admin.socket_mode {
        None => 0o660,
        Some(m) => match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o777 && v & 0o002 != 0 => {
                c.err(
                    m.span(),
                    "admin.socket_mode",
                    "must not be world-writable (o+w): anyone could then drive the daemon",
                );
                0o660
            }
            Ok(v) if v <= 0o777 => v,
            _ => {
                c.err(
                    m.span(),
                    "admin.socket_mode",
                    "must be octal permission bits such as \"0660\"",
                );
                0o660
            }
        },
    };
    let socket_group = match admin.socket_group.clone() {
        Some(g) if g.is_empty() => None,
        Some(g) => Some(g),
        None => Some("traffic".to_owned()),
    };
    let control_group = match admin.control_group.clone() {
        Some(g) if g.is_empty() => None,
        Some(g) => Some(g),
        None => Some("traffic-admin".to_owned()),
    };
    AdminConfig {
        socket,
        socket_mode,
        socket_group,
        control_group,
    }
}

pub(super) fn metrics(c: &mut Check, m: &RawMetrics) -> MetricsConfig {
    let listen = if m.enabled == Some(false) {
        None
    } else {
        match &m.listen {
            None => Some(SocketAddr::from((
                [127, 0, 0, 1],
                crate::config::DEFAULT_METRICS_PORT,
            ))),
            Some(l) => match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    c.err(
                        l.span(),
                        "metrics.listen",
                        format!("`{}` is not an address:port", l.get_ref()),
                    );
                    None
                }
            },
        }
    };
    MetricsConfig { listen }
}
