//! trafficctl's answer to a caller who may not use the admin socket. Needs root to run
//! trafficctl as another user, hence here and not with the other CLI contract tests
//! (tests/cli.rs, unit layer).

use std::{os::unix::fs::PermissionsExt as _, os::unix::process::CommandExt as _};

use crate::support::TempDir;

/// trafficctl's exit code for "daemon unreachable".
const UNREACHABLE: i32 = 3;

pub fn a_caller_without_access_to_the_socket_is_told_so() {
    let tmp = TempDir::new("cli-perm");
    // The directory is the caller's to enter; the socket is root's, mode 0660, as shipped.
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = tmp.path("admin.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    // A copy of the binary the other user can execute wherever the build tree lives.
    let exe = tmp.path("trafficctl");
    std::fs::copy(env!("CARGO_BIN_EXE_trafficctl"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = std::process::Command::new(&exe)
        .args(["--socket", path.to_str().unwrap(), "status"])
        .uid(65534) // nobody
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(UNREACHABLE), "{err}");
    assert!(
        err.contains("permission denied") && err.contains("group"),
        "the message says what to do: {err}"
    );
}
