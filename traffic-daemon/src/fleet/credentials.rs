//! `[fleet] credentials_file`: the ACL user and password, kept out of the TOML.
//!
//! Format: the first line that is neither blank nor a `#` comment holds `USER PASSWORD`,
//! or only `PASSWORD` (for Redis's `default` user). Like ssh with a private key, the file
//! is refused when group or others may read or write it, or when it is owned by someone
//! other than root or the daemon's own user: a password others can read is not a secret,
//! and one others can write lets them point the node at their own server's ACL.

use std::{fmt, os::unix::fs::MetadataExt, path::Path};

/// Longest credentials file read.
const MAX_LEN: u64 = 4096;

/// A user and password (the password is never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Read and check the file (see the module's text for the rules).
pub fn read(path: &Path) -> Result<Credentials, String> {
    let at = |m: String| format!("credentials file {}: {m}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| at(e.to_string()))?;
    check_mode(meta.mode(), meta.uid(), own_uid()).map_err(at)?;
    if meta.len() > MAX_LEN {
        return Err(at(format!("larger than {MAX_LEN} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    parse(&text).map_err(at)
}

#[allow(unsafe_code, reason = "a libc call; its SAFETY comment follows")]
fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The ownership and mode rules, apart for tests.
pub fn check_mode(mode: u32, owner: u32, me: u32) -> Result<(), String> {
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {:04o} lets group or others read or write it: chmod 600 (or 400)",
            mode & 0o7777
        ));
    }
    if owner != 0 && owner != me {
        return Err(format!(
            "owned by uid {owner}: must be owned by root or the daemon's user (uid {me})"
        ));
    }
    Ok(())
}

/// The first meaningful line as `USER PASSWORD` or `PASSWORD`.
pub fn parse(text: &str) -> Result<Credentials, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or("no `USER PASSWORD` line")?;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [p] => Ok(Credentials {
            user: None,
            password: (*p).to_owned(),
        }),
        [u, p] => Ok(Credentials {
            user: Some((*u).to_owned()),
            password: (*p).to_owned(),
        }),
        _ => Err("the line must be `USER PASSWORD` or `PASSWORD` (no spaces inside)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_modes() {
        let c = parse("# fleet\n\ntraffic s3cret\n").unwrap();
        assert_eq!(c.user.as_deref(), Some("traffic"));
        assert_eq!(c.password, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(parse("pw").unwrap().user, None);
        assert!(parse("# only\n").is_err());
        assert!(parse("a b c").is_err());
        assert!(check_mode(0o100600, 0, 0).is_ok());
        assert!(check_mode(0o100400, 1000, 1000).is_ok());
        assert!(
            check_mode(0o100640, 0, 0)
                .unwrap_err()
                .contains("chmod 600")
        );
        assert!(check_mode(0o100602, 0, 0).is_err());
        assert!(
            check_mode(0o100600, 1000, 0)
                .unwrap_err()
                .contains("uid 1000")
        );
    }
}
