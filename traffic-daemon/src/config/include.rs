//! The include directory: `conf.d/*.toml` next to the main file (`/etc/traffic/conf.d/`
//! for `/etc/traffic/traffic.toml`), for long lists kept apart from the main file — rules
//! from a script, ports, upstreams, classes.
//!
//! - Files ending in `.toml` (not starting with `.`) are read in lexical (byte) order; other
//!   names are ignored, so editors' backups and `foo.toml.disabled` do not count.
//! - An included file may hold only [`INCLUDABLE`] tables. Arrays of tables (`[[rules]]`,
//!   `[[ports]]`, `[[upstreams]]`, `[[feeds]]`) are appended after the main file's, file by file; a class
//!   (`[classes.NAME]`) is defined whole in one file, and a name defined twice is an error.
//! - Each file is parsed on its own (so a file cannot continue a table of the one before)
//!   and then merged as a parsed tree whose positions are moved into one address space:
//!   every later problem, whichever file it is in, is reported with that file's path, line
//!   and key (an array index counted within that file: `rules[0]` is its first rule).
//! - Bounded: at most [`MAX_FILES`] included files, [`MAX_DIR_ENTRIES`] directory entries
//!   looked at, [`MAX_FILE_BYTES`] per file and [`MAX_TOTAL_BYTES`] in all. Only regular
//!   files (symlinks to them are followed); a directory, FIFO, device, dangling or looping
//!   symlink, an unreadable or non-UTF-8 file named `*.toml` is an error, not skipped: a
//!   file an operator meant to include must not silently go missing. Subdirectories are
//!   never entered.
//!
//! Reading the directory is [`read_dir`]; [`parse`] is pure (the texts come in), so the
//! merge is tested without files.

use std::{
    ffi::OsStr,
    io::Read as _,
    ops::Range,
    os::unix::{ffi::OsStrExt as _, fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{
    Config, ConfigError, raw,
    syntax::{self, KeyStyle, Problem, Unlocated},
    validate,
};

/// The include directory, relative to the main file's directory.
pub const DIR: &str = "conf.d";

/// Top-level tables an included file may hold, and how each merges. A new list-like key
/// (`[[feeds]]`, say) becomes includable by adding it here.
pub const INCLUDABLE: &[(&str, Merge)] = &[
    ("classes", Merge::ByName),
    ("rules", Merge::Append),
    ("ports", Merge::Append),
    ("upstreams", Merge::Append),
    ("feeds", Merge::Append),
];

/// How an included table merges into the main file's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// An array of tables (`[[rules]]`): the included elements follow the main file's.
    Append,
    /// A table of named tables (`[classes.NAME]`): each name defined in one file only.
    ByName,
}

/// Most included files.
pub const MAX_FILES: usize = 256;
/// Most directory entries looked at (of any name), so a directory of millions of files
/// does not stall a reload.
pub const MAX_DIR_ENTRIES: usize = 4096;
/// Largest included file.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Most bytes of all included files together.
pub const MAX_TOTAL_BYTES: u64 = 64 << 20;

/// An included file as read.
#[derive(Clone, Debug)]
pub struct Included {
    pub path: PathBuf,
    pub text: String,
}

/// Read and validate `path` and the files of its include directory.
pub(super) fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
    let dir = path.parent().unwrap_or(Path::new(".")).join(DIR);
    let included = read_dir(&dir).map_err(|problems| ConfigError {
        path: path.to_owned(),
        problems,
    })?;
    parse(path, &text, &included)
}

/// The `*.toml` files of `dir` in lexical order, read; none when `dir` does not exist.
/// Every file that cannot be used is a problem naming it.
pub fn read_dir(dir: &Path) -> Result<Vec<Included>, Vec<Problem>> {
    let whole = |file: &Path, message: String| Problem {
        file: Some(file.to_owned()),
        line: 0,
        column: 0,
        key: String::new(),
        message,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(vec![whole(dir, format!("cannot read the directory: {e}"))]),
    };
    let mut names = Vec::new();
    for (n, entry) in entries.enumerate() {
        if n == MAX_DIR_ENTRIES {
            return Err(vec![whole(
                dir,
                format!(
                    "more than {MAX_DIR_ENTRIES} entries; keep at most {MAX_FILES} .toml files here"
                ),
            )]);
        }
        let entry =
            entry.map_err(|e| vec![whole(dir, format!("cannot read the directory: {e}"))])?;
        let name = entry.file_name();
        if is_included_name(&name) {
            names.push(name);
        }
    }
    if names.len() > MAX_FILES {
        return Err(vec![whole(
            dir,
            format!("{} .toml files, at most {MAX_FILES}", names.len()),
        )]);
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut out = Vec::with_capacity(names.len());
    let mut problems = Vec::new();
    let mut total = 0u64;
    for name in names {
        let path = dir.join(&name);
        match read_one(&path, MAX_TOTAL_BYTES - total) {
            Ok(text) => {
                total += text.len() as u64;
                out.push(Included { path, text });
            }
            Err(m) => problems.push(whole(&path, m)),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `*.toml`, not hidden.
fn is_included_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.ends_with(b".toml") && !b.starts_with(b".")
}

/// One included file: a regular file (after symlinks) of at most [`MAX_FILE_BYTES`] and
/// `budget` bytes, in UTF-8.
fn read_one(path: &Path, budget: u64) -> Result<String, String> {
    // O_NONBLOCK: opening a FIFO named `x.toml` must not wait for a writer; the type is
    // checked on the opened file, so it cannot change between the check and the read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file (only files named *.toml are included)".to_owned());
    }
    let cap = MAX_FILE_BYTES.min(budget);
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(if cap < MAX_FILE_BYTES {
            format!("the included files exceed {MAX_TOTAL_BYTES} bytes together")
        } else {
            format!("larger than {MAX_FILE_BYTES} bytes")
        });
    }
    String::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())
}

/// One file of the merged configuration: where its text starts in the merged address space.
struct Source<'a> {
    /// `None` for the main file (its problems carry no file of their own).
    path: Option<&'a Path>,
    text: &'a str,
    base: usize,
}

/// The files of one configuration and how merged positions map back to them.
struct Sources<'a> {
    files: Vec<Source<'a>>,
    /// For each array table: the index of each file's first element in the merged array.
    starts: Vec<(&'static str, Vec<usize>)>,
}

impl Sources<'_> {
    /// The file holding merged position `offset`.
    fn file_at(&self, offset: usize) -> usize {
        self.files
            .partition_point(|f| f.base <= offset)
            .saturating_sub(1)
    }

    /// A problem with a merged span → a problem in its own file, its line, and its key
    /// with the array index counted within that file.
    fn locate(&self, u: Unlocated) -> Problem {
        let Some(span) = u.span.clone() else {
            return u.locate(self.files[0].text);
        };
        let k = self.file_at(span.start);
        let f = &self.files[k];
        let local = span.start - f.base..span.end.saturating_sub(f.base);
        let key = self.local_key(k, &u.key);
        let mut p = Unlocated {
            span: Some(local),
            key,
            message: u.message,
        }
        .locate(f.text);
        p.file = f.path.map(Path::to_owned);
        p
    }

    /// `rules[12].cidr` of the merged arrays → `rules[2].cidr` in file `k`.
    fn local_key(&self, k: usize, key: &str) -> String {
        for (name, starts) in &self.starts {
            let Some(rest) = key.strip_prefix(name).and_then(|r| r.strip_prefix('[')) else {
                continue;
            };
            let Some((n, tail)) = rest.split_once(']') else {
                continue;
            };
            if let Ok(n) = n.parse::<usize>() {
                let local = n.saturating_sub(starts.get(k).copied().unwrap_or(0));
                return format!("{name}[{local}]{tail}");
            }
        }
        key.to_owned()
    }
}

/// Validate the main file's `text` (read from `path`) merged with `included`.
pub fn parse(path: &Path, text: &str, included: &[Included]) -> Result<Config, ConfigError> {
    let mut files = vec![Source {
        path: None,
        text,
        base: 0,
    }];
    for inc in included {
        let prev = files.last().map_or(0, |f| f.base + f.text.len());
        files.push(Source {
            path: Some(&inc.path),
            text: &inc.text,
            // +1: a position at the end of one file is never the start of the next.
            base: prev + 1,
        });
    }
    let mut sources = Sources {
        files,
        starts: Vec::new(),
    };
    let fail = |problems: Vec<Problem>| ConfigError {
        path: path.to_owned(),
        problems,
    };
    let merged = merge(&mut sources).map_err(&fail)?;
    let raw = raw::from_table(merged).map_err(|e| {
        let span = e.span();
        let problem = match span {
            // The document itself (a missing top-level table): the main file's.
            None | Some(Range { start: 0, end: 0 }) => {
                syntax::toml_problem_at(text, e.message(), span, KeyStyle::Bare).locate(text)
            }
            Some(span) => {
                let f = &sources.files[sources.file_at(span.start)];
                let local = span.start - f.base..span.end.saturating_sub(f.base);
                let mut u =
                    syntax::toml_problem_at(f.text, e.message(), Some(local), KeyStyle::Bare);
                u.span = u.span.map(|s| s.start + f.base..s.end + f.base);
                sources.locate(u)
            }
        };
        fail(vec![problem])
    })?;
    let mut config = validate::validate(path, raw)
        .map_err(|list| fail(list.into_iter().map(|u| sources.locate(u)).collect()))?;
    config.included = included.iter().map(|i| i.path.clone()).collect();
    Ok(config)
}

/// Parse every file and merge the included trees into the main one (positions moved to
/// the merged address space). A syntax error or a table an included file may not hold is a
/// problem of that file.
fn merge<'a>(sources: &mut Sources<'a>) -> Result<Spanned<DeTable<'a>>, Vec<Problem>> {
    let main_text = sources.files[0].text;
    let mut root = DeTable::parse(main_text)
        .map_err(|e| vec![syntax::toml_problem(main_text, &e, KeyStyle::Bare).locate(main_text)])?;
    let arrays = INCLUDABLE
        .iter()
        .filter(|(_, how)| *how == Merge::Append)
        .map(|(name, _)| *name);
    let len_of = |t: &DeTable<'_>, name: &str| match t.get(name).map(Spanned::get_ref) {
        Some(DeValue::Array(a)) => a.len(),
        _ => 0,
    };
    let mut starts: Vec<(&'static str, Vec<usize>)> = arrays.map(|n| (n, vec![0])).collect();
    let mut problems = Vec::new();
    for k in 1..sources.files.len() {
        for (name, s) in &mut starts {
            s.push(len_of(root.get_ref(), name));
        }
        let f = &sources.files[k];
        let table = match DeTable::parse(f.text) {
            Ok(t) => t,
            Err(e) => {
                let mut p = syntax::toml_problem(f.text, &e, KeyStyle::Bare).locate(f.text);
                p.file = f.path.map(Path::to_owned);
                problems.push(p);
                continue;
            }
        };
        let mut table = shift_table(table.into_inner(), f.base);
        for (key, value) in std::mem::take(&mut table) {
            if let Err(u) = merge_one(root.get_mut(), key, value, sources) {
                problems.push(sources.locate(u));
            }
        }
    }
    sources.starts = starts;
    if problems.is_empty() {
        Ok(root)
    } else {
        Err(problems)
    }
}

/// Merge one top-level entry of an included file into the main tree.
fn merge_one<'a>(
    root: &mut DeTable<'a>,
    key: Spanned<std::borrow::Cow<'a, str>>,
    value: Spanned<DeValue<'a>>,
    sources: &Sources<'_>,
) -> Result<(), Unlocated> {
    let name = key.get_ref().to_string();
    let err = |span: Range<usize>, key: &str, message: String| Unlocated {
        span: Some(span),
        key: key.to_owned(),
        message,
    };
    let Some(&(_, how)) = INCLUDABLE.iter().find(|(n, _)| *n == name) else {
        return Err(err(
            key.span(),
            &name,
            format!(
                "may not appear in an included file (only {}); set it in the main file",
                INCLUDABLE
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let want_table = how == Merge::ByName;
    let value_span = value.span();
    match (root.get_mut(name.as_str()), value.into_inner()) {
        (None, v) => {
            if want_table != matches!(v, DeValue::Table(_)) {
                return Err(err(value_span, &name, shape(&name)));
            }
            root.insert(key, Spanned::new(value_span, v));
        }
        (Some(existing), DeValue::Array(items)) if !want_table => {
            let existing_span = existing.span();
            let DeValue::Array(into) = existing.get_mut() else {
                return Err(err(existing_span, &name, shape(&name)));
            };
            for item in items {
                into.push(item);
            }
        }
        (Some(existing), DeValue::Table(named)) if want_table => {
            let existing_span = existing.span();
            let DeValue::Table(into) = existing.get_mut() else {
                return Err(err(existing_span, &name, shape(&name)));
            };
            for (class, body) in named {
                if let Some((first, _)) = into.get_key_value(class.get_ref().as_ref()) {
                    let f = &sources.files[sources.file_at(first.span().start)];
                    let (line, _) = syntax::line_col(f.text, first.span().start - f.base);
                    let at = f
                        .path
                        .map_or("the main file".to_owned(), |p| p.display().to_string());
                    return Err(err(
                        class.span(),
                        &format!("{name}.{}", class.get_ref()),
                        format!("is already defined ({at}, line {line})"),
                    ));
                }
                into.insert(class, body);
            }
        }
        _ => return Err(err(value_span, &name, shape(&name))),
    }
    Ok(())
}

fn shape(name: &str) -> String {
    if INCLUDABLE.contains(&(name, Merge::ByName)) {
        format!("must be a table of named tables ([{name}.NAME])")
    } else {
        format!("must be an array of tables ([[{name}]])")
    }
}

/// `v` with every position (its own, and those of everything in it) moved by `by`.
fn shift(v: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = v.span();
    let inner = match v.into_inner() {
        DeValue::Array(mut a) => {
            for item in a.iter_mut() {
                let taken = std::mem::replace(item, Spanned::new(0..0, DeValue::Boolean(false)));
                *item = shift(taken, by);
            }
            DeValue::Array(a)
        }
        DeValue::Table(t) => DeValue::Table(shift_table(t, by)),
        other => other,
    };
    Spanned::new(span.start + by..span.end + by, inner)
}

fn shift_table(t: DeTable<'_>, by: usize) -> DeTable<'_> {
    let mut out = DeTable::new();
    for (k, v) in t {
        let ks = k.span();
        out.insert(
            Spanned::new(ks.start + by..ks.end + by, k.into_inner()),
            shift(v, by),
        );
    }
    out
}
