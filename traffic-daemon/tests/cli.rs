//! trafficctl's contract with scripts and operators, through the real binary: exit codes
//! 0 ok, 1 failure, 2 usage or invalid config, 3 daemon unreachable, and a message that says
//! what to do when the daemon is not running.
//!
//! All of these run without root (unit layer). The permission test (a caller who may not use
//! the socket) needs root to run trafficctl as another user: it is a case of the privileged
//! binary (tests/privileged/cli.rs).
#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::path::PathBuf;

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("trf-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// trafficctl run with `args`: (exit code, stdout, stderr).
fn trafficctl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trafficctl"))
        .args(args)
        .output()
        .expect("run trafficctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const OK: i32 = 0;
const USAGE: i32 = 2;
const UNREACHABLE: i32 = 3;

/// Every command that talks to the daemon, with valid arguments.
const DAEMON_COMMANDS: &[&[&str]] = &[
    &["status"],
    &["counters"],
    &["sources", "--top", "5"],
    &["limits"],
    &["circuits"],
    &["circuit", "open", "web"],
    &["circuit", "reset", "8080"],
    &["source", "reset", "198.18.0.1"],
    &["reload"],
    &["throttle"],
];

#[test]
fn no_daemon_exits_3_and_says_how_to_start_it() {
    let tmp = TempDir::new("cli-absent");
    let socket = tmp.path("admin.sock");
    let socket = socket.to_str().unwrap();
    for cmd in DAEMON_COMMANDS {
        for format in [
            &[][..],
            &["--json"],
            &["-o", "json"],
            &["-o", "table"],
            &["-o", "json", "--json"],
        ] {
            let mut args = vec!["--socket", socket];
            args.extend_from_slice(format);
            args.extend_from_slice(cmd);
            let (code, out, err) = trafficctl(&args);
            assert_eq!(code, UNREACHABLE, "{args:?}: stdout {out:?} stderr {err:?}");
            assert!(
                err.contains("not running") && err.contains("systemctl start trafficd"),
                "{args:?}: {err:?}"
            );
            assert!(out.is_empty(), "{args:?} printed on stdout: {out:?}");
        }
    }
}

#[test]
fn a_socket_nobody_listens_on_is_unreachable() {
    // A stale socket file left by a crashed daemon: connection refused, still exit 3.
    let tmp = TempDir::new("cli-stale");
    let path = tmp.path("admin.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let (code, _, err) = trafficctl(&["--socket", path.to_str().unwrap(), "status"]);
    assert_eq!(code, UNREACHABLE, "{err}");
    assert!(err.contains("trafficd"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["circuit", "open", "web/x"],
        &["circuit", "open", ""],
        &["-o", "yaml", "status"],
        &["-o", "table", "--json", "status"],
        &["sources", "--top", "many"],
        &["source", "reset"],
        &["status", "--no-such-flag"],
        &[],
    ] {
        let (code, out, err) = trafficctl(args);
        assert_eq!(code, USAGE, "{args:?}: stdout {out:?} stderr {err:?}");
        assert!(!err.is_empty(), "{args:?}: a usage error says why");
    }
}

#[test]
fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["--version"], &["status", "--help"]] {
        let (code, out, _) = trafficctl(args);
        assert_eq!(code, OK, "{args:?}");
        assert!(!out.is_empty(), "{args:?} printed nothing");
    }
}

#[test]
fn check_config_exits_0_for_the_shipped_file_and_2_naming_file_line_and_key() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/traffic.toml");
    let (code, out, err) = trafficctl(&["check-config", shipped]);
    assert_eq!(code, OK, "{out} {err}");

    let tmp = TempDir::new("cli-badconfig");
    let bad = tmp.path("bad.toml");
    std::fs::write(
        &bad,
        "[daemon]\ninterfaces = [\"lo\"]\n[classes.default]\npackets = { rate = -5, burst = 10 }\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let (code, _, err) = trafficctl(&["check-config", bad]);
    assert_eq!(code, USAGE, "{err}");
    assert!(
        err.contains(&format!("{bad}:4:")) && err.contains("packets"),
        "the error names the file, line and key: {err}"
    );

    for format in [
        &["--json"][..],
        &["-o", "json"],
        &["check-config", "-o", "json"],
    ] {
        let mut args = format.to_vec();
        if args[0] != "check-config" {
            args.push("check-config");
        }
        args.push(bad);
        let (code, out, _) = trafficctl(&args);
        assert_eq!(code, USAGE, "{args:?}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["valid"], false, "{v}");
        assert_eq!(v["problems"][0]["line"], 4, "{v}");
    }
    let (code, out, _) = trafficctl(&["-o", "json", "check-config", shipped]);
    assert_eq!(code, OK);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true, "{v}");

    let missing = tmp.path("missing.toml");
    let (code, _, err) = trafficctl(&["check-config", missing.to_str().unwrap()]);
    assert_eq!(code, USAGE, "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}

/// Fails on the main before issue 13: `conf.d/` was not read.
#[test]
fn check_config_checks_the_include_directory_too() {
    let tmp = TempDir::new("cli-confd");
    let main = tmp.path("traffic.toml");
    std::fs::write(
        &main,
        "[daemon]\ninterfaces = [\"lo\"]\n[classes.default]\n[classes.web]\n",
    )
    .unwrap();
    std::fs::create_dir(tmp.path("conf.d")).unwrap();
    std::fs::write(
        tmp.path("conf.d/10-web.toml"),
        "[[rules]]\ncidr = [\"198.18.0.0/24\", \"2001:db8::/48\"]\nclass = \"web\"\n",
    )
    .unwrap();
    let main = main.to_str().unwrap();
    let (code, out, err) = trafficctl(&["check-config", main]);
    assert_eq!(code, OK, "{out} {err}");
    assert!(
        out.contains("2 rules") && out.contains("10-web.toml"),
        "{out}"
    );

    let bad = tmp.path("conf.d/20-bad.toml");
    std::fs::write(&bad, "[[ports]]\nport = [22, \"8000-7000\"]\n").unwrap();
    let (code, _, err) = trafficctl(&["check-config", main]);
    assert_eq!(code, USAGE, "{err}");
    assert!(
        err.starts_with(&format!("{}:2:13: ports[0].port[1]: ", bad.display())),
        "the error names the included file, line and key: {err}"
    );
    let (code, out, _) = trafficctl(&["-o", "json", "check-config", main]);
    assert_eq!(code, USAGE);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["problems"][0]["file"], bad.to_str().unwrap(), "{v}");
    assert_eq!(v["problems"][0]["line"], 2, "{v}");
}
