//! One trafficd per pin directory: [`InstanceLock`], an exclusive `flock` on the pin directory
//! itself, taken before anything touches the pinned maps (a `--fresh` removal, the load, the
//! first write).
//!
//! Why the pin directory: it is what two instances would fight over (the maps, the pinned
//! links), it exists on every host trafficd runs on (bpffs), and two daemons with different
//! pin directories do not share state, so they need not exclude each other. The lock is held
//! by an open descriptor for the life of the process: a crash or `kill -9` releases it, so
//! there is no stale lock to clean up. `--fresh` therefore empties the directory
//! ([`clear_pins`]) instead of removing it: a removed directory would take the lock with it.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

/// Another process holds the pin directory.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another trafficd{} is running on {} (it holds the lock on that pin directory); stop it first, or give this one another daemon.pin_dir",
        holder.map(|p| format!(" (PID {p})")).unwrap_or_default(),
        dir.display()
    )]
    Held { dir: PathBuf, holder: Option<u32> },
    #[error("cannot lock the pin directory {}: {source}", dir.display())]
    Io { dir: PathBuf, source: io::Error },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _dir: File,
}

impl InstanceLock {
    /// Create `pin_dir` if missing and lock it, without waiting.
    pub fn acquire(pin_dir: &Path) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            dir: pin_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(pin_dir).map_err(io_err)?;
        // A directory opens read-only; flock needs no write access.
        let dir = File::open(pin_dir).map_err(io_err)?;
        #[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
        // SAFETY: flock(2) on a descriptor this function owns and keeps open.
        let r = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Self { _dir: dir });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err(e));
        }
        let holder = dir.metadata().ok().and_then(|m| {
            let locks = std::fs::read_to_string("/proc/locks").ok()?;
            flock_holder(&locks, m.dev(), m.ino())
        });
        Err(LockError::Held {
            dir: pin_dir.to_owned(),
            holder,
        })
    }
}

/// The PID holding an exclusive flock on the file (`dev`, `ino`), from the text of
/// `/proc/locks` (`N: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE START END`, the device in hex).
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "->" marks a waiter, which holds nothing: its line has one more field.
        if f.len() < 6 || f[1] != "FLOCK" || f[3] != "WRITE" {
            return None;
        }
        let mut id = f[5].split(':');
        let maj = u32::from_str_radix(id.next()?, 16).ok()?;
        let min = u32::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        (maj == major && min == minor && inode == ino)
            .then(|| f[4].parse().ok())
            .flatten()
    })
}

/// Remove every pin under `dir` but keep `dir` (and with it the lock on it): `--fresh`.
pub fn clear_pins(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_writer_of_a_flock_by_device_and_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 99 00:28:17 0 EOF\n\
                     2: FLOCK  ADVISORY  READ 98 00:28:17 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 4242 00:28:17 0 EOF\n\
                     3: -> FLOCK  ADVISORY  WRITE 4343 00:28:17 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 77 fe:01:17 0 EOF\n";
        assert_eq!(flock_holder(locks, libc::makedev(0, 0x28), 17), Some(4242));
        assert_eq!(flock_holder(locks, libc::makedev(0xfe, 1), 17), Some(77));
        assert_eq!(flock_holder(locks, libc::makedev(0, 0x28), 18), None);
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_and_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("trf-lock-{}", std::process::id()));
        let first = InstanceLock::acquire(&dir).unwrap();
        // flock locks belong to the open file description: a second open in this process
        // conflicts like another process would.
        match InstanceLock::acquire(&dir) {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(dir.join("pin"), b"").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        clear_pins(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        drop(first);
        let again = InstanceLock::acquire(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
