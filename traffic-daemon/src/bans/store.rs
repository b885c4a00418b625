//! The state file of the bans (`[bans] state_file`, shipped `/var/lib/traffic/bans.json`):
//! kept so bans survive a reboot (the pinned kernel map survives only a restart).
//!
//! Written atomically (a temp file in the same directory, fsync, rename), so a crash leaves
//! the old file or the new one. Read back as untrusted input: every ban is validated like
//! an operator's request, a bad entry is skipped and logged, and a file that does not parse
//! is logged, moved aside (`.corrupt`) and not used — never a failed start.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{Ban, MAX_BANS};

/// Version of the file's shape.
const VERSION: u32 = 1;
/// Largest file read back (a full book is about 12 MiB): anything larger is not ours.
const MAX_FILE_BYTES: u64 = 32 << 20;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    bans: Vec<Ban>,
}

/// What a load found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Valid bans not yet expired.
    pub bans: Vec<Ban>,
    /// The file existed and parsed (an empty book then means "no bans", not "unknown").
    pub found: bool,
    /// Entries skipped, each with why.
    pub skipped: Vec<String>,
    /// The file could not be used at all, and why (it was moved aside if it existed).
    pub error: Option<String>,
}

/// Read the state file at `path`; bans ended by `now_unix_ms` are dropped.
pub fn load(path: &Path, now_unix_ms: u64) -> Loaded {
    let mut out = Loaded::default();
    let text = match read_bounded(path) {
        Ok(Some(t)) => t,
        Ok(None) => return out,
        Err(e) => {
            out.error = Some(format!("{}: {e}", path.display()));
            return out;
        }
    };
    let file: File = match serde_json::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            let aside = aside_path(path);
            let moved = std::fs::rename(path, &aside).is_ok();
            out.error = Some(format!(
                "{}: not a valid ban state file ({e}){}",
                path.display(),
                if moved {
                    format!("; moved to {}", aside.display())
                } else {
                    String::new()
                }
            ));
            return out;
        }
    };
    if file.version != VERSION {
        out.error = Some(format!(
            "{}: version {} (this daemon reads {VERSION})",
            path.display(),
            file.version
        ));
        return out;
    }
    out.found = true;
    for b in file.bans {
        if out.bans.len() >= MAX_BANS {
            out.skipped
                .push(format!("{}: over {MAX_BANS} bans", b.prefix));
            continue;
        }
        match b.validate() {
            Err(e) => out.skipped.push(format!("{}: {e}", b.prefix)),
            Ok(()) if b.expired(now_unix_ms) => {}
            Ok(()) => out.bans.push(b),
        }
    }
    out
}

fn read_bounded(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read as _;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(Some(text))
}

fn aside_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".corrupt");
    PathBuf::from(p)
}

/// Write `bans` to `path` atomically (mode 0600; the directory is created if missing).
pub fn save<'a>(path: &Path, bans: impl Iterator<Item = &'a Ban>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = File {
        version: VERSION,
        bans: bans.cloned().collect(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the state file on its own thread, so the engine's lock is never held across
/// serialising up to 65,536 bans, a write and two fsyncs. Only the latest book matters:
/// a newer snapshot replaces one not yet written (memory: one pending book at most). Dropping
/// the writer writes what is pending, then joins the thread.
pub struct Writer {
    shared: std::sync::Arc<(std::sync::Mutex<Slot>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Slot {
    pending: Option<Vec<Ban>>,
    busy: bool,
    closing: bool,
}

impl Writer {
    /// A writer of `path`.
    pub fn start(path: PathBuf) -> std::io::Result<Self> {
        let shared = std::sync::Arc::new((
            std::sync::Mutex::new(Slot::default()),
            std::sync::Condvar::new(),
        ));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ban-state".into())
            .spawn(move || write_loop(&path, &s))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Ask for `bans` to be written (replacing a snapshot not written yet).
    pub fn save(&self, bans: Vec<Ban>) {
        let (lock, cv) = &*self.shared;
        let mut slot = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.pending = Some(bans);
        cv.notify_all();
    }

    /// Wait until everything asked for is written (tests; shutdown goes through `Drop`).
    pub fn flush(&self) {
        let (lock, cv) = &*self.shared;
        let mut slot = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while slot.pending.is_some() || slot.busy {
            slot = cv
                .wait(slot)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        lock.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .closing = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_loop(path: &Path, shared: &(std::sync::Mutex<Slot>, std::sync::Condvar)) {
    let (lock, cv) = shared;
    loop {
        let bans = {
            let mut slot = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if let Some(b) = slot.pending.take() {
                    slot.busy = true;
                    break b;
                }
                if slot.closing {
                    return;
                }
                slot = cv
                    .wait(slot)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        if let Err(e) = save(path, bans.iter()) {
            tracing::error!(file = %path.display(), error = %e, "cannot write the ban state file");
        }
        lock.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .busy = false;
        cv.notify_all();
    }
}
