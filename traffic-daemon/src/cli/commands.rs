//! What `trafficctl`'s commands do beyond one request and its table: printing, failures,
//! `check-config`, bans, reload, watch and the `/v1/suggest` request.

use std::{io::Write, path::PathBuf};

use serde::Serialize;

use super::{Command, WatchArgs};
use crate::{
    api::{Applied, Client, ClientError, Message},
    config::{self, Config},
    exit,
};

pub(super) fn print<T: Serialize>(
    out: &mut dyn Write,
    json: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) {
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        let _ = write!(out, "{}", human(value));
    }
}

pub(super) fn client_failure(err: &mut dyn Write, e: &ClientError) -> u8 {
    let _ = writeln!(err, "trafficctl: {e}");
    if e.is_unreachable() {
        exit::UNREACHABLE
    } else {
        exit::FAILURE
    }
}

/// What `check-config` reports for a valid file.
#[derive(Serialize)]
pub(super) struct ConfigSummary<'a> {
    valid: bool,
    path: &'a std::path::Path,
    classes: usize,
    /// Kernel rule entries (a CIDR list counts one per CIDR).
    rules: usize,
    /// Files merged from the include directory, in the order read.
    included: &'a [PathBuf],
}

pub(super) fn check_config(
    file: Option<&PathBuf>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let path = file
        .cloned()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    match Config::load(&path) {
        Ok(c) => {
            let summary = ConfigSummary {
                valid: true,
                path: &path,
                classes: c.classes.len(),
                rules: c.rules.len(),
                included: &c.included,
            };
            print(out, json, &summary, |o| {
                let mut text = format!(
                    "{}: valid ({} classes, {} rules)\n",
                    o.path.display(),
                    o.classes,
                    o.rules
                );
                for f in o.included {
                    text.push_str(&format!("  included {}\n", f.display()));
                }
                text
            });
            exit::OK
        }
        Err(e) => {
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"valid": false, "path": e.path, "problems": e.problems})
                );
            }
            let _ = writeln!(err, "{e}");
            exit::USAGE
        }
    }
}

/// Print a document the daemon answered, or say why there is none.
pub(super) fn show<T: Serialize>(
    r: Result<T, ClientError>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
    human: impl FnOnce(&T) -> String,
) -> u8 {
    match r {
        Ok(v) => {
            print(out, json, &v, human);
            exit::OK
        }
        Err(e) => client_failure(err, &e),
    }
}

/// The `/v1/suggest` request; a class name is sent only if it needs no escaping (class
/// names in the config are plain words).
pub(super) fn suggest_path(
    class: Option<&str>,
    quantile: f64,
    headroom: f64,
) -> Result<String, String> {
    let mut path = format!("/v1/suggest?quantile={quantile}&headroom={headroom}");
    if let Some(c) = class {
        if c.is_empty()
            || !c
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
        {
            return Err(format!("{c:?} is not a class name"));
        }
        path.push_str("&class=");
        path.push_str(c);
    }
    Ok(path)
}

/// `trafficctl ban | unban | bans`. A refused request (bad input, no such ban) is a usage
/// error (exit 2).
pub(super) fn bans(
    client: &Client,
    command: &Command,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    use crate::api::bans::{
        BanAnswer, BanRequest, BansReport, render_answer, render_bans, render_unban,
    };
    let now = crate::api::bans::unix_now_ms();
    let r = match command {
        Command::Ban {
            target,
            duration,
            reason,
            force,
            fleet,
        } => {
            let req = BanRequest {
                target: target.clone(),
                duration: duration.clone(),
                reason: reason.clone(),
                force: *force,
                fleet: *fleet,
            };
            client
                .post_json::<BanAnswer, _>("/v1/bans", &req)
                .map(|a| (render_answer(&a, now), serde_json::to_value(a)))
        }
        Command::Unban { target, fleet } => client
            .delete::<BanAnswer>(&format!(
                "/v1/bans?prefix={}{}",
                query_escape(target),
                if *fleet { "&fleet=true" } else { "" }
            ))
            .map(|a| (render_unban(&a, now), serde_json::to_value(a))),
        _ => client
            .get::<BansReport>("/v1/bans")
            .map(|r| (render_bans(&r), serde_json::to_value(r))),
    };
    match r {
        Ok((human, value)) => {
            if json {
                let v = value.unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                );
            } else {
                let _ = write!(out, "{human}");
            }
            exit::OK
        }
        Err(ClientError::Api { status, message }) if status == 400 || status == 404 => {
            let _ = writeln!(err, "trafficctl: {message}");
            exit::USAGE
        }
        Err(e) => client_failure(err, &e),
    }
}

/// Percent-encode what a query value cannot hold as is (an address or CIDR needs none of
/// it; anything else the daemon refuses with a clear message).
pub(super) fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'.' | b':' | b'/' | b'-' | b'_' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `trafficctl reload`: a refused config is a usage error (exit 2), with the daemon's
/// problems listed.
pub(super) fn reload(client: &Client, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match client.post::<Applied>("/v1/reload") {
        Ok(a) => {
            print(out, json, &a, |a| {
                format!("reloaded: {} map entries written\n", a.writes)
            });
            exit::OK
        }
        // 403: not allowed to reload (the admin socket's control group), not a bad file.
        Err(ClientError::Api { status, message }) if status != 403 => {
            let _ = writeln!(
                err,
                "trafficctl: reload refused, the running configuration stays:\n{message}"
            );
            exit::USAGE
        }
        Err(e) => client_failure(err, &e),
    }
}

/// `trafficctl watch`: print each verdict as it comes. The daemon ending the stream is
/// "unreachable" (exit 3), like a daemon that is not there; a refused filter is a usage
/// error (exit 2).
pub(super) fn watch(
    client: &Client,
    args: &WatchArgs,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let q = crate::api::watch::WatchQuery {
        source: args.source.clone(),
        class: args.class.clone(),
        reason: args.reason.clone(),
        port: args.port,
        drops: Some(args.drops),
    };
    if let Err(m) = crate::api::watch::WatchFilter::parse(&q) {
        let _ = writeln!(err, "trafficctl: {m}");
        return exit::USAGE;
    }
    if !json {
        let _ = write!(out, "{}", crate::api::watch::HEADER);
        let _ = out.flush();
    }
    // Between two heartbeats at most a few seconds pass: 30 s of silence is a hung daemon.
    let client = client
        .clone()
        .with_timeout(std::time::Duration::from_secs(30));
    let r = client.stream_lines(&format!("/v1/watch{}", q.to_query_string()), |line| {
        let text = if json {
            format!("{line}\n")
        } else {
            match serde_json::from_str::<crate::api::watch::VerdictLine>(line) {
                Ok(v) => v.render(),
                Err(_) => format!("{line}\n"),
            }
        };
        // A closed stdout (`| head`) ends the watch.
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_ok()
    });
    match r {
        Ok(true) => exit::OK,
        Ok(false) => {
            let _ = writeln!(
                err,
                "trafficctl: trafficd ended the watch (stopped or restarting)"
            );
            exit::UNREACHABLE
        }
        Err(ClientError::Api {
            status: 400,
            message,
        }) => {
            let _ = writeln!(err, "trafficctl: {message}");
            exit::USAGE
        }
        Err(e) => client_failure(err, &e),
    }
}

pub(super) fn message(
    out: &mut dyn Write,
    err: &mut dyn Write,
    json: bool,
    r: Result<Message, ClientError>,
) -> u8 {
    match r {
        Ok(m) => {
            print(out, json, &m, |m| format!("{}\n", m.message));
            exit::OK
        }
        Err(ClientError::Api { status, message }) if status == 400 || status == 404 => {
            let _ = writeln!(err, "trafficctl: {message}");
            exit::USAGE
        }
        Err(e) => client_failure(err, &e),
    }
}
