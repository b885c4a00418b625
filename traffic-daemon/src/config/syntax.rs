//! What every TOML file of traffic shares: units (durations such as "500ms", "1s", "5m",
//! "1h", "1d"; byte sizes such as "1500", "64KB", "20MB", "1GiB") and error locations
//! (file, line, column, key → one message per problem).
//!
//! Two formats use it: the daemon's config (`config::raw`) and the load generator's profile
//! files. Both validate in the same three steps, which this module names:
//! 1. `toml::from_str` into raw structs whose fields are `toml::Spanned`; a syntax or type
//!    error becomes one [`Unlocated`] problem via [`toml_problem`];
//! 2. validation pushes every problem it finds, with its byte span and dotted key, into a
//!    [`Problems`] collector (so a user sees all problems at once, not one per run);
//! 3. [`parse_file`] turns the spans into lines and columns and returns a [`FileError`].
//!
//! Pure: nothing here touches the system except [`load`], which reads the file.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;
use toml::Spanned;

/// Parse a duration such as `250ms`, `1s`, `1.5s`, `5m`, `1h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m, h or d)"))?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a number followed by a unit"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m, h or d)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a valid duration"));
    }
    // Every key has its own, much smaller range; this bound only keeps the conversion (and
    // any arithmetic on the value before its range is checked) from overflowing.
    if secs > MAX_DURATION_SECS {
        return Err(format!("`{s}` is too long (at most 365d)"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is not a valid duration"))
}

/// Longest duration any file may write (365 days), checked before the key's own range.
pub const MAX_DURATION_SECS: f64 = 365.0 * 86_400.0;

/// Parse a byte size: a plain integer, or a number with B, KB, MB, GB (powers of 1000) or
/// KiB, MiB, GiB (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a byte size such as 1500, 64KB or 20MiB"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Render a duration the way the config file writes it.
#[allow(
    clippy::manual_is_multiple_of,
    reason = "traffic-lab still compiles this file on Rust 1.85 until it depends on the daemon"
)]
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let unit = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ]
    .into_iter()
    .find(|&(size, unit)| ms % size == 0 && (ms > 0 || unit == "s"));
    match unit {
        Some((size, unit)) => format!("{}{unit}", ms / size),
        None => format!("{ms}ms"),
    }
}

/// One thing wrong with a file, located.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file the problem is in when it is not the [`FileError`]'s own (an included file
    /// of the config's `conf.d/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// 1-based line, 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted key path, e.g. `classes.premium.packets[0].rate`.
    pub key: String,
    pub message: String,
}

/// A file that cannot be used, with every problem found. Displays one line per problem:
/// `path:line:column: key: message` (line and column left out for whole-file problems, the
/// key when there is none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl FileError {
    /// A file that could not be read at all.
    pub fn unreadable(path: &Path, e: &std::io::Error) -> Self {
        Self {
            path: path.to_owned(),
            problems: vec![Problem {
                file: None,
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }],
        }
    }
}

impl std::error::Error for FileError {}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", p.file.as_ref().unwrap_or(&self.path).display())?;
            if p.line > 0 {
                write!(f, ":{}:{}", p.line, p.column)?;
            }
            if !p.key.is_empty() {
                write!(f, ": {}", p.key)?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

/// A problem before it is located in the text: a byte span (none for the whole file) and
/// the key at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unlocated {
    pub span: Option<Range<usize>>,
    pub key: String,
    pub message: String,
}

impl Unlocated {
    /// Turn the span into a line and a column of `text`.
    pub fn locate(self, text: &str) -> Problem {
        let (line, column) = match self.span {
            Some(span) => line_col(text, span.start),
            None => (0, 0),
        };
        Problem {
            file: None,
            line,
            column,
            key: self.key,
            message: self.message,
        }
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// Collects problems while validating, with checks both formats use.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<Unlocated>,
}

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a problem at `span`.
    pub fn err(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(Unlocated {
            span: Some(span),
            key: key.into(),
            message: message.into(),
        });
    }

    /// Record a problem with the whole file (no line).
    pub fn err_file(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(Unlocated {
            span: None,
            key: key.into(),
            message: message.into(),
        });
    }

    /// A duration value, or a recorded problem.
    pub fn duration(&mut self, v: &Spanned<String>, key: &str) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Ok(d) => Some(d),
            Err(m) => {
                self.err(v.span(), key, m);
                None
            }
        }
    }

    /// A duration value within `min..=max`, or a recorded problem.
    pub fn duration_between(
        &mut self,
        v: &Spanned<String>,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let d = self.duration(v, key)?;
        if d < min || d > max {
            self.err(
                v.span(),
                key,
                format!(
                    "must be between {} and {}",
                    format_duration(min),
                    format_duration(max)
                ),
            );
            return None;
        }
        Some(d)
    }

    /// A byte-size string, or a recorded problem.
    pub fn bytes(&mut self, v: &Spanned<String>, key: &str) -> Option<u64> {
        match parse_bytes(v.get_ref()) {
            Ok(b) => Some(b),
            Err(m) => {
                self.err(v.span(), key, m);
                None
            }
        }
    }

    /// A fraction in 0..=1 (recorded as a problem otherwise; the value is returned as is so
    /// validation can go on).
    pub fn fraction(&mut self, v: &Spanned<f64>, key: &str) -> f64 {
        let x = *v.get_ref();
        if !(0.0..=1.0).contains(&x) || x.is_nan() {
            self.err(v.span(), key, "must be between 0 and 1");
        }
        x
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `value` when nothing was recorded, every problem otherwise.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<Unlocated>> {
        if self.list.is_empty() {
            Ok(value())
        } else {
            Err(self.list)
        }
    }

    pub fn into_vec(self) -> Vec<Unlocated> {
        self.list
    }
}

/// How a TOML syntax or type error names its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStyle {
    /// The bare key or table name at the error (the daemon config's messages, which its
    /// tests and operators' scripts know).
    Bare,
    /// The full dotted path: enclosing table, inline tables, array indices
    /// (`workloads[1].timeout`; the profile files, whose tables are deeper).
    Path,
}

/// One located-to-be problem for a `toml` error in `text`.
pub fn toml_problem(text: &str, e: &toml::de::Error, style: KeyStyle) -> Unlocated {
    toml_problem_at(text, e.message(), e.span(), style)
}

/// [`toml_problem`] for an error's message and span (a span into `text`), for errors whose
/// span had to be translated first (a config merged from several files).
pub fn toml_problem_at(
    text: &str,
    message: &str,
    span: Option<Range<usize>>,
    style: KeyStyle,
) -> Unlocated {
    let message = message.trim().to_owned();
    match style {
        KeyStyle::Bare => {
            // An empty span at 0 is the document itself (a missing top-level table): no key.
            let key = span
                .as_ref()
                .filter(|s| *s != &(0..0))
                .map(|s| bare_key_at(text, s.start))
                .unwrap_or_default();
            // Every problem names a key: where the bare key is not on the line (a broken
            // header, a missing top-level table), the path of what is at fault instead.
            let key = match span.as_ref() {
                _ if !key.is_empty() => key,
                // The document itself: the top-level key it misses.
                None | Some(Range { start: 0, end: 0 }) => message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.split('`').next())
                    .unwrap_or_default()
                    .to_owned(),
                Some(s) => key_path_at(text, s, &message),
            };
            Unlocated { span, key, message }
        }
        KeyStyle::Path => {
            let span = span.unwrap_or(0..0);
            let key = key_path_at(text, &span, &message);
            Unlocated {
                span: Some(span),
                key,
                message,
            }
        }
    }
}

/// Parse `text` (read from `path`, used in messages only) with `f` and locate its problems.
pub fn parse_file<T>(
    path: &Path,
    text: &str,
    f: impl FnOnce(&str) -> Result<T, Vec<Unlocated>>,
) -> Result<T, FileError> {
    f(text).map_err(|problems| FileError {
        path: path.to_owned(),
        problems: problems.into_iter().map(|p| p.locate(text)).collect(),
    })
}

/// Read `path` and [`parse_file`] it.
pub fn load<T>(
    path: &Path,
    f: impl FnOnce(&str) -> Result<T, Vec<Unlocated>>,
) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::unreadable(path, &e))?;
    parse_file(path, &text, f)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

/// The bare key or table name starting at `offset`. When `offset` is on a value (wrong
/// type, unknown variant), the key it is assigned to on that line.
pub fn bare_key_at(text: &str, offset: usize) -> String {
    let is_key = |c: char| is_key_char(c) || c == '.';
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |nl| nl + 1);
    let rest = text[offset..].trim_start_matches(['[', ' ']);
    let token: String = rest.chars().take_while(|&c| is_key(c)).collect();
    let after = rest[token.len()..].trim_start();
    let header = after.starts_with(']')
        && text[line_start..offset]
            .trim_matches(['[', ' ', '\t'])
            .is_empty();
    if !token.is_empty() && (after.starts_with('=') || header) {
        return token;
    }
    match text[line_start..offset].rfind('=') {
        Some(eq) => {
            let lhs = text[line_start..line_start + eq].trim_end();
            lhs[lhs.trim_end_matches(is_key).len()..].to_owned()
        }
        None => String::new(),
    }
}

/// The dotted path of the table whose body holds `offset`: `classes.premium`,
/// `workloads[1]`, or "" at the top level.
pub fn table_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |nl| nl + 1);
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['));
    let Some(h) = header else {
        return String::new();
    };
    if let Some(name) = h.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
        let name = name.trim();
        let n = text[..line_start]
            .lines()
            .filter(|l| {
                l.trim()
                    .strip_prefix("[[")
                    .and_then(|x| x.split("]]").next())
                    .is_some_and(|x| x.trim() == name)
            })
            .count();
        format!("{name}[{}]", n.saturating_sub(1))
    } else {
        h.trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim()
            .replace(' ', "")
    }
}

/// The trailing run of key characters (and dots) of `s`.
fn trailing_key(s: &str) -> &str {
    &s[s.trim_end_matches(|c: char| is_key_char(c) || c == '.')
        .len()..]
}

/// The key path of the problem at `span`: the table it is in, the inline table around it
/// if any, and the key on that line (or the missing field the message names).
///
/// About 90 lines: one backward scan over the text (table header, enclosing inline tables,
/// the key on the line) that has to keep its position between the steps.
pub fn key_path_at(text: &str, span: &Range<usize>, message: &str) -> String {
    let offset = span.start.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |nl| nl + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let col = offset - line_start;
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next());
    // A header line: `[classes.premuim]` or `[[workloadz]]`.
    if line.trim_start().starts_with('[') {
        let inner = line.trim().trim_start_matches('[');
        let name = inner.split(']').next().unwrap_or("").trim().to_owned();
        if let Some(m) = missing {
            let table = if line.trim_start().starts_with("[[") {
                table_at(text, line_end.min(text.len()))
            } else {
                name
            };
            return join(&table, m);
        }
        // A header with no name yet (`[` at a cut): the header as written is the key.
        if name.is_empty() {
            return line.trim().to_owned();
        }
        return name;
    }
    let table = if span.start == 0 && span.end == 0 {
        String::new()
    } else {
        table_at(text, offset)
    };
    let before = &line[..col.min(line.len())];
    // Inline table: the key before the unclosed `{` left of the offset.
    if let Some(brace) = before.rfind('{').filter(|&b| !before[b..].contains('}')) {
        let lhs = before[..brace].trim_end().trim_end_matches('=').trim_end();
        let k = trailing_key(lhs);
        let prefix = if k.is_empty() {
            table.clone()
        } else {
            join(&table, k)
        };
        // The key at the offset inside the braces.
        let rest = &line[col.min(line.len())..];
        let token: String = rest.chars().take_while(|&c| is_key_char(c)).collect();
        if let Some(m) = missing {
            return join(&prefix, m);
        }
        if !token.is_empty() && rest[token.len()..].trim_start().starts_with('=') {
            return join(&prefix, &token);
        }
        let inner = &before[brace + 1..];
        if let Some(eq) = inner.rfind('=') {
            let k = inner[..eq].trim_end();
            let k = &k[k.trim_end_matches(is_key_char).len()..];
            return join(&prefix, k);
        }
        return prefix;
    }
    if let Some(m) = missing {
        return join(&table, m);
    }
    // `key = value` on this line: the key, whether the offset is on it or on the value.
    let key: String = line
        .trim_start()
        .chars()
        .take_while(|&c| is_key_char(c) || c == '.')
        .collect();
    if !key.is_empty() && line.trim_start()[key.len()..].trim_start().starts_with('=') {
        // An array element: `sizes = [64, "x"]` → sizes[1].
        let after_eq = line.find('=').map_or(0, |i| i + 1);
        if col > after_eq {
            let value = &line[after_eq..col];
            if value.trim_start().starts_with('[') && !value.contains(']') {
                let idx = value.matches(',').count();
                return join(&table, &format!("{key}[{idx}]"));
            }
        }
        return join(&table, &key);
    }
    table
}

/// `table.key`, either side possibly empty.
pub fn join(table: &str, key: &str) -> String {
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => table.to_owned(),
        _ => format!("{table}.{key}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, ms) in [
            ("250ms", 250),
            ("1s", 1000),
            ("1.5s", 1500),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
        for bad in ["", "5", "s", "1y", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad} should fail");
        }
    }

    /// Fails on the main before issue 12: `Duration::from_secs_f64` panicked on overflow.
    #[test]
    fn huge_durations_are_errors_not_panics() {
        for huge in [
            "100000000000000000000s",
            "1e400s",
            "99999999999999999999999999999999d",
            "366d",
            "18446744073709551616ms",
        ] {
            assert!(parse_duration(huge).is_err(), "{huge} should fail");
        }
        assert_eq!(
            parse_duration("365d").unwrap(),
            Duration::from_secs(365 * 86_400)
        );
    }

    #[test]
    fn sizes() {
        for (s, b) in [
            ("1500", 1500),
            ("64KB", 64_000),
            ("20MB", 20_000_000),
            ("1GiB", 1 << 30),
            ("1.5 KiB", 1536),
        ] {
            assert_eq!(parse_bytes(s).unwrap(), b, "{s}");
        }
        for bad in ["", "MB", "12XB", "-5"] {
            assert!(parse_bytes(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in ["250ms", "1s", "5m", "1h", "1d", "90s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only deserialized, to provoke errors")]
    struct Doc {
        every: Spanned<String>,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only deserialized, to provoke errors")]
    struct Item {
        name: String,
        limit: Option<Lim>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only deserialized, to provoke errors")]
    struct Lim {
        rate: u32,
    }

    fn check(text: &str, style: KeyStyle) -> String {
        let r = parse_file(Path::new("f.toml"), text, |t| {
            let doc = toml::from_str::<Doc>(t).map_err(|e| vec![toml_problem(t, &e, style)])?;
            let mut p = Problems::new();
            p.duration_between(
                &doc.every,
                "every",
                Duration::from_secs(1),
                Duration::from_secs(3600),
            );
            p.finish(|| ())
        });
        r.unwrap_err().to_string()
    }

    #[test]
    fn locates_problems_with_both_key_styles() {
        let text = "every = \"5ms\"\n";
        assert_eq!(
            check(text, KeyStyle::Bare),
            "f.toml:1:9: every: must be between 1s and 1h"
        );
        let text = "every = \"1s\"\n[[items]]\nname = \"a\"\n[[items]]\nname = \"b\"\nlimit = { rat = 5 }\n";
        assert!(
            check(text, KeyStyle::Path)
                .starts_with("f.toml:6:11: items[1].limit.rat: unknown field"),
            "{}",
            check(text, KeyStyle::Path)
        );
        assert!(
            check(text, KeyStyle::Bare).starts_with("f.toml:6:11: rat: unknown field"),
            "{}",
            check(text, KeyStyle::Bare)
        );
        let e = check("", KeyStyle::Bare);
        // Before issue 12 the bare style left this key out; every problem now names one.
        assert!(
            e.starts_with("f.toml:1:1: every: missing field `every`"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_file_has_no_line() {
        let e = load(Path::new("/nonexistent/x.toml"), |_| Ok(())).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/x.toml: cannot read:"),
            "{e}"
        );
    }
}
