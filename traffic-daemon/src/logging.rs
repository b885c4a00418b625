//! trafficd's log output on stderr, made for the journal and for log shippers.
//!
//! - **Filter**: `TRAFFIC_LOG` (tracing `EnvFilter` syntax, e.g. `debug` or
//!   `info,traffic_daemon::upstream=debug`); default `info`.
//! - **Format**: `text` (default) or `json` (one JSON object a line, for log shippers):
//!   `trafficd --log-format json` or `TRAFFIC_LOG_FORMAT=json`.
//! - **Priorities**: when stderr is the journal (systemd sets `$JOURNAL_STREAM` to its
//!   device and inode), every line starts with the syslog priority in the `<N>` form that
//!   `sd-daemon(3)` defines, so `journalctl -p warning -u trafficd` shows warnings and errors.
//!   Every line of a multi-line message carries it, so a config error's file:line:key lines
//!   keep their priority. The journal adds its own timestamps, so none are written there.
//! - **Colour**: ANSI escapes only when stderr is a terminal.

use std::{fmt, io::IsTerminal as _};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// The variable holding the log filter.
pub const FILTER_VAR: &str = "TRAFFIC_LOG";
/// The variable holding the log format (`text` or `json`); the `--log-format` flag wins.
pub const FORMAT_VAR: &str = "TRAFFIC_LOG_FORMAT";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line (`timestamp`, `level`, `fields`, …).
    Json,
}

/// The syslog priority of a tracing level (`sd-daemon(3)`: `<3>` err … `<7>` debug).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether stderr is the journal stream systemd connected (`$JOURNAL_STREAM` = `dev:ino` of
/// stderr). Inherited by a child whose stderr was redirected, the variable alone would lie.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    want.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// Prefix every line of `text` with `<N>`.
pub fn prefix_lines(prio: u8, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        out.push('<');
        out.push(char::from(b'0' + prio % 10));
        out.push('>');
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// An event format that puts the `<N>` priority in front of every line of `inner`'s output.
struct JournalPrefix<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut buf = String::new();
        self.0.format_event(ctx, Writer::new(&mut buf), event)?;
        writer.write_str(&prefix_lines(priority(*event.metadata().level()), &buf))
    }
}

/// Install the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    use tracing_subscriber::fmt::format as fmt_format;
    let filter = EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let ansi = !journal && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // Four concrete types: the formatter's type differs per branch.
    match (format, journal) {
        (LogFormat::Text, false) => builder.event_format(fmt_format().with_target(false)).init(),
        (LogFormat::Text, true) => builder
            .event_format(JournalPrefix(
                fmt_format().with_target(false).without_time(),
            ))
            .init(),
        (LogFormat::Json, false) => builder.event_format(fmt_format().json()).init(),
        (LogFormat::Json, true) => builder
            .event_format(JournalPrefix(fmt_format().json().without_time()))
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
    }

    #[test]
    fn every_line_is_prefixed() {
        assert_eq!(
            prefix_lines(4, "reload refused:\nt.toml:3:1: x: bad\n"),
            "<4>reload refused:\n<4>t.toml:3:1: x: bad\n"
        );
        assert_eq!(prefix_lines(6, "one"), "<6>one\n");
    }

    #[test]
    fn journal_needs_the_matching_stream() {
        // Only checkable without a journal: setting the variable would race other tests.
        if std::env::var_os("JOURNAL_STREAM").is_none() {
            assert!(!stderr_is_journal());
        }
    }
}
