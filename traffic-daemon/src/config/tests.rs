//! Tests of the configuration: the shipped file, the built-in defaults, every validation
//! error (with its line and key) and the accepted forms of limits, sizes and rules.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use super::*;
use crate::{
    policy::{
        breaker::{BreakerOverrides, BreakerSettings},
        throttle::ThrottleSettings,
    },
    pressure::PressureSettings,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn shipped_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/traffic.toml"
    ))
}

fn shipped_text() -> String {
    std::fs::read_to_string(shipped_path()).expect("config/traffic.toml is readable")
}

/// A small valid file: `[daemon]` with `interfaces = ["eth0"]` and `daemon_keys`, then
/// `[classes.default]` followed by `rest` (bare keys in `rest` belong to the default class).
fn cfg(daemon_keys: &str, rest: &str) -> String {
    format!("[daemon]\ninterfaces = [\"eth0\"]\n{daemon_keys}\n[classes.default]\n{rest}\n")
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("t.toml"), text)
}

#[track_caller]
fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("rejected:\n{e}\n--- text ---\n{text}"))
}

/// The rendered error of a file that must be rejected.
#[track_caller]
fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted but should be rejected:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// 1-based line of the first occurrence of `needle`.
#[track_caller]
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in:\n{text}"));
    text[..at].matches('\n').count() + 1
}

/// Whether one rendered problem is `t.toml:<line>:<col>: <key>: …<message>…`.
fn matches(problem: &str, line: usize, key: &str, message: &str) -> bool {
    let Some(rest) = problem.strip_prefix(&format!("t.toml:{line}:")) else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    rest.strip_prefix(&format!(": {key}: "))
        .is_some_and(|m| m.contains(message))
}

/// The file is rejected with exactly one problem, on the line of `at`, naming `key`, whose
/// message contains `message`.
#[track_caller]
fn assert_err(text: &str, at: &str, key: &str, message: &str) {
    let e = err(text);
    let line = line_of(text, at);
    assert_eq!(
        e.lines().count(),
        1,
        "expected exactly one problem, got:\n{e}\n--- text ---\n{text}"
    );
    assert!(
        matches(&e, line, key, message),
        "expected `t.toml:{line}:<col>: {key}: …{message}…`, got:\n{e}\n--- text ---\n{text}"
    );
}

fn rl(rate_per_sec: f64, burst: u64) -> RateLimit {
    RateLimit {
        rate_per_sec,
        burst,
    }
}

#[track_caller]
fn assert_rate(actual: &RateLimit, rate_per_sec: f64, burst: u64) {
    assert!(
        (actual.rate_per_sec - rate_per_sec).abs() < 1e-9 * rate_per_sec.max(1.0),
        "rate {} != {rate_per_sec}",
        actual.rate_per_sec
    );
    assert_eq!(actual.burst, burst);
}

fn rule(cidr: &str, action: RuleAction, class: Option<usize>) -> RuleSpec {
    let (addr, len) = cidr.split_once('/').expect("addr/len");
    RuleSpec {
        addr: addr.parse().expect("an address"),
        prefix_len: len.parse().expect("a prefix length"),
        action,
        class,
    }
}

fn class(name: &str, priority: Priority) -> ClassSpec {
    ClassSpec {
        name: name.to_owned(),
        priority,
        mode: None,
        packets: Vec::new(),
        bytes: None,
        aggregate_v4: 32,
        aggregate_v6: 64,
        admission: None,
        overflow: None,
        offender: None,
        fleet: false,
    }
}

/// The only class of a one-class file built with [`cfg`].
#[track_caller]
fn default_class_of(rest: &str) -> ClassSpec {
    let c = ok(&cfg("", rest));
    assert_eq!(c.classes.len(), 1);
    c.classes.into_iter().next().expect("one class")
}

// ---------------------------------------------------------------------------------------
// The shipped file and the built-in defaults
// ---------------------------------------------------------------------------------------

fn critical_group() -> BreakerOverrides {
    BreakerOverrides {
        error_threshold: Some(0.7),
        reset_timeout: Some(Duration::from_secs(15)),
        ..BreakerOverrides::default()
    }
}

fn non_critical_group() -> BreakerOverrides {
    BreakerOverrides {
        error_threshold: Some(0.5),
        reset_timeout: Some(Duration::from_secs(30)),
        ..BreakerOverrides::default()
    }
}

#[test]
fn shipped_config_parses_and_equals_documented_defaults() {
    let path = shipped_path();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));

    let (internal, premium, basic, default) = (0, 1, 2, 3);
    let expected = Config {
        source: path.clone(),
        daemon: DaemonConfig {
            interfaces: vec!["eth0".to_owned()],
            attach: AttachMode::Auto,
            mode: Mode::Enforce,
            default_class: default,
            summary_interval: Duration::from_secs(60),
            pin_dir: PathBuf::from("/sys/fs/bpf/traffic"),
            on_exit: OnExit::Detach,
            max_sources: 131_072,
        },
        admin: AdminConfig {
            socket: PathBuf::from("/run/traffic/admin.sock"),
            socket_mode: 0o660,
            socket_group: Some("traffic".to_owned()),
            control_group: Some("traffic-admin".to_owned()),
        },
        metrics: MetricsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 10187))),
        },
        classes: vec![
            class("internal", Priority::Critical),
            ClassSpec {
                packets: vec![rl(2000.0, 4000)],
                bytes: Some(rl(20_000_000.0, 4_000_000)),
                ..class("premium", Priority::High)
            },
            ClassSpec {
                packets: vec![rl(500.0, 1000)],
                bytes: Some(rl(5_000_000.0, 1_000_000)),
                ..class("basic", Priority::Normal)
            },
            ClassSpec {
                packets: vec![rl(100.0, 200)],
                bytes: Some(rl(1_000_000.0, 256_000)),
                admission: Some(rl(500.0, 1000)),
                overflow: Some(rl(2000.0, 4000)),
                ..class("default", Priority::Low)
            },
        ],
        rules: vec![
            rule("10.0.0.0/8", RuleAction::Allow, Some(internal)),
            rule("172.16.0.0/12", RuleAction::Allow, Some(internal)),
            rule("192.168.0.0/16", RuleAction::Allow, Some(internal)),
            rule("fd00::/8", RuleAction::Allow, Some(internal)),
            rule("198.18.0.0/24", RuleAction::Allow, Some(internal)),
            rule("2001:db8::/48", RuleAction::Allow, Some(internal)),
            rule("198.18.1.0/24", RuleAction::Limit, Some(premium)),
            rule("2001:db8:1::/48", RuleAction::Limit, Some(premium)),
            rule("198.18.2.0/24", RuleAction::Limit, Some(basic)),
            rule("2001:db8:2::/48", RuleAction::Limit, Some(basic)),
            rule("198.18.66.0/24", RuleAction::Deny, None),
            rule("2001:db8:66::/48", RuleAction::Deny, None),
        ],
        ports: vec![],
        breaker: BreakerSettings::default(),
        breaker_groups: vec![
            ("critical".to_owned(), critical_group()),
            ("non_critical".to_owned(), non_critical_group()),
        ],
        upstreams: vec![],
        pressure: PressureSettings::default(),
        throttle: ThrottleSettings::default(),
        baseline: crate::policy::baseline::BaselineSettings::default(),
        included: Vec::new(),
        bans: crate::config::bans::BansConfig::default(),
        feeds: vec![],
        fleet: None,
    };
    assert_eq!(config, expected);
    // The shipped file acts on no port: the examples are comments. config/demo.toml is the
    // same file with them in force (the demo runs services on those ports).
    let demo_path = path.with_file_name("demo.toml");
    let demo = Config::load(&demo_path).unwrap_or_else(|e| panic!("{e}"));
    let expected_demo = Config {
        source: demo_path.clone(),
        ports: vec![PortSpec {
            port: 22,
            protocol: Protocol::Tcp,
            class: None,
            new_connections: Some(RateLimit {
                rate_per_sec: 10.0 / 60.0,
                burst: 10,
            }),
        }],
        upstreams: vec![
            UpstreamSpec {
                name: "web".into(),
                port: 8080,
                protocol: Protocol::Tcp,
                address: "127.0.0.1".parse().unwrap(),
                probe: ProbeKind::Http,
                path: "/healthz".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                group: Some("critical".into()),
                breaker: BreakerSettings::default().resolve("critical", Some(&critical_group())),
                gate: GateAction::Reset,
                max_connections: Some(256),
                accept_queue_ratio: 0.9,
                passive: true,
            },
            UpstreamSpec {
                name: "api".into(),
                port: 8081,
                protocol: Protocol::Tcp,
                address: "127.0.0.1".parse().unwrap(),
                probe: ProbeKind::Tcp,
                path: "/".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                group: Some("non_critical".into()),
                breaker: BreakerSettings::default()
                    .resolve("non_critical", Some(&non_critical_group())),
                gate: GateAction::Reset,
                max_connections: Some(128),
                accept_queue_ratio: 0.9,
                passive: true,
            },
        ],
        ..expected.clone()
    };
    assert_eq!(demo, expected_demo);
    // The documented breaker groups are exactly the built-in presets.
    assert_eq!(Some(critical_group()), BreakerOverrides::preset("critical"));
    assert_eq!(
        Some(non_critical_group()),
        BreakerOverrides::preset("non_critical")
    );

    assert_eq!(config.class_index("default"), Some(default));
    assert!(!config.classes[internal].is_limited());
    assert!(config.classes[premium].is_limited());
    assert_eq!(config.rules[3].cidr(), "fd00::/8");
    assert_eq!(config.rules[10].cidr(), "198.18.66.0/24");
}

/// The shipped file says "every value below is the built-in default unless its comment says
/// example: a file that only sets `daemon.interfaces` and the classes behaves the same".
#[test]
fn built_in_defaults_match_the_shipped_file() {
    let shipped = Config::load(&shipped_path()).unwrap_or_else(|e| panic!("{e}"));

    // The shipped text without any key documented as a default, nor [admin] / [metrics].
    let defaults = [
        "attach",
        "mode",
        "default_class",
        "summary_interval",
        "pin_dir",
        "on_exit",
        "max_sources",
        "socket",
        "socket_mode",
        "socket_group",
        "control_group",
        "enabled",
        "listen",
        "aggregate_v4",
        "aggregate_v6",
    ];
    let text = shipped_text();
    let mut removed = 0;
    let minimal: String = text
        .lines()
        .filter(|line| {
            let l = line.trim();
            let key = l.split('=').next().unwrap_or_default().trim();
            let drop = l == "[admin]"
                || l == "[metrics]"
                || l == "priority = \"normal\""
                || (!l.starts_with('#') && l.contains('=') && defaults.contains(&key));
            removed += usize::from(drop);
            !drop
        })
        .map(|l| format!("{l}\n"))
        .collect();
    // 7 daemon keys, 2 headers + 4 admin + 2 metrics keys, 6 aggregate lines, 1 priority,
    // baseline's `enabled` and `max_sources`.
    assert_eq!(removed, 24, "the shipped file changed shape:\n{minimal}");
    for key in ["max_sources", "socket_mode", "listen", "aggregate_v6 ="] {
        assert!(
            minimal
                .lines()
                .all(|l| l.starts_with('#') || !l.contains(key)),
            "{key} left in:\n{minimal}"
        );
    }

    let mut from_minimal = ok(&minimal);
    from_minimal.source = shipped.source.clone();
    assert_eq!(from_minimal, shipped);

    // And the smallest possible file has the same daemon, admin and metrics settings, apart
    // from the index of its (only) default class.
    let tiny = ok("[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\n");
    assert_eq!(
        tiny.daemon,
        DaemonConfig {
            default_class: 0,
            ..shipped.daemon.clone()
        }
    );
    assert_eq!(tiny.admin, shipped.admin);
    assert_eq!(tiny.metrics, shipped.metrics);
    assert_eq!(tiny.classes, vec![class("default", Priority::Normal)]);
    assert!(tiny.rules.is_empty());
    assert_eq!(tiny.source, PathBuf::from("t.toml"));
}

#[test]
fn loading_a_missing_file_is_a_whole_file_error_without_line() {
    let path = Path::new("/nonexistent/traffic.toml");
    let e = Config::load(path).expect_err("no such file");
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].line, 0);
    let shown = e.to_string();
    assert!(
        shown.starts_with("/nonexistent/traffic.toml: cannot read: "),
        "{shown}"
    );
}

// ---------------------------------------------------------------------------------------
// Syntax, unknown keys, types and enum values (serde)
// ---------------------------------------------------------------------------------------

#[test]
fn toml_syntax_error_is_located() {
    let text = cfg("mode = enforce", "");
    assert_err(
        &text,
        "mode = enforce",
        "mode",
        "string values must be quoted",
    );

    let text = "[daemon]\ninterfaces = [\"eth0\"]\n[classes.default\npriority = \"low\"\n";
    let e = err(text);
    assert!(e.starts_with("t.toml:3:"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");

    let text = cfg("", "priority = \"low\"\npriority = \"high\"");
    let e = err(&text);
    assert!(
        e.starts_with(&format!(
            "t.toml:{}:",
            line_of(&text, "priority = \"high\"")
        )),
        "{e}"
    );
    assert!(e.contains("duplicate key"), "{e}");
}

#[test]
fn unknown_top_level_key_is_rejected_at_its_line() {
    let text = cfg("", "[limits]\nrate = 5");
    assert_err(
        &text,
        "[limits]",
        "limits",
        "unknown field `limits`, expected one of `daemon`, `admin`, `metrics`, `classes`, `rules`",
    );
}

#[test]
fn unknown_key_in_daemon_admin_or_metrics_is_rejected() {
    let text = cfg("interface_mode = \"xdp\"", "");
    assert_err(
        &text,
        "interface_mode",
        "interface_mode",
        "unknown field `interface_mode`",
    );

    let text = cfg("", "[admin]\nsocket_owner = \"root\"");
    assert_err(&text, "socket_owner", "socket_owner", "unknown field");

    let text = cfg("", "[metrics]\nport = 9187");
    assert_err(
        &text,
        "port =",
        "port",
        "unknown field `port`, expected `enabled` or `listen`",
    );
}

#[test]
fn unknown_key_in_a_class_points_at_its_line() {
    let text = "[daemon]\ninterfaces = [\"eth0\"]\n\n\
                [classes.premium]\npriority = \"high\"\npackets = { rate = 100 }\n\n\
                [classes.default]\npriority = \"low\"\nburst = 10\naggregate_v4 = 24\n";
    assert_err(
        text,
        "burst = 10",
        "burst",
        "unknown field `burst`, expected one of `priority`, `mode`, `packets`, `bytes`, \
         `aggregate_v4`, `aggregate_v6`, `admission`, `overflow`",
    );
}

#[test]
fn unknown_key_in_a_limit_table_is_rejected() {
    let text = cfg("", "packets = [{ rate = 5 }, { rate = 10, brust = 20 }]");
    assert_err(
        &text,
        "packets",
        "brust",
        "unknown field `brust`, expected one of `rate`, `per`, `burst`",
    );

    let text = cfg("", "bytes = { rate = \"1MB\", size = 3 }");
    assert_err(&text, "bytes", "size", "unknown field `size`");
}

#[test]
fn unknown_key_in_a_rule_is_rejected() {
    let text = cfg(
        "",
        "[[rules]]\ncidr = \"10.0.0.0/8\"\nclass = \"default\"\nprefix = 8",
    );
    assert_err(
        &text,
        "prefix = 8",
        "prefix",
        "unknown field `prefix`, expected one of `cidr`, `action`, `class`",
    );
}

#[test]
fn wrong_type_names_the_key_not_the_value() {
    let text = cfg("", "packets = { rate = \"fast\" }");
    assert_err(
        &text,
        "packets",
        "rate",
        "invalid type: string \"fast\", expected f64",
    );

    let text = cfg("max_sources = true", "");
    assert_err(
        &text,
        "max_sources",
        "max_sources",
        "invalid type: boolean `true`, expected i64",
    );

    let text = "[daemon]\ninterfaces = \"eth0\"\n[classes.default]\n";
    assert_err(
        text,
        "interfaces",
        "interfaces",
        "invalid type: string \"eth0\", expected a sequence",
    );

    let text = cfg("", "aggregate_v4 = \"24\"");
    assert_err(&text, "aggregate_v4", "aggregate_v4", "expected i64");

    let text = cfg("", "[admin]\nsocket_mode = 0o660");
    assert_err(
        &text,
        "socket_mode",
        "socket_mode",
        "invalid type: integer `432`, expected a string",
    );

    let text = cfg("", "[metrics]\nenabled = \"yes\"");
    assert_err(&text, "enabled", "enabled", "expected a boolean");
}

#[test]
fn byte_size_of_wrong_type_says_what_is_expected() {
    for bad in ["true", "1.5e6", "[1]"] {
        let text = cfg("", &format!("bytes = {{ rate = {bad} }}"));
        assert_err(
            &text,
            "bytes",
            "rate",
            "expected a byte size: an integer or a string such as \"20MB\"",
        );
    }
}

#[test]
fn packets_of_wrong_shape_is_rejected() {
    let text = cfg("", "packets = 100");
    assert_err(
        &text,
        "packets",
        "packets",
        "expected a limit table or an array of limit tables",
    );
    let text = cfg("", "packets = { per = \"1s\" }");
    assert_err(&text, "packets", "packets", "missing field `rate`");
}

#[test]
fn missing_daemon_table_or_interfaces_is_rejected() {
    let e = err("[classes.default]\n");
    // Before issue 12 this problem had no key; every problem now names one.
    assert_eq!(e, "t.toml:1:1: daemon: missing field `daemon`");

    let text = "[classes.default]\n\n[daemon]\nattach = \"auto\"\n";
    assert_err(text, "[daemon]", "daemon", "missing field `interfaces`");
}

#[test]
fn invalid_enum_values_list_the_expected_variants() {
    let cases = [
        (
            cfg("mode = \"block\"", ""),
            "mode = ",
            "mode",
            "unknown variant `block`, expected `enforce` or `monitor`",
        ),
        (
            cfg("attach = \"offload\"", ""),
            "attach",
            "attach",
            "unknown variant `offload`, expected one of `auto`, `native`, `generic`",
        ),
        (
            cfg("on_exit = \"stay\"", ""),
            "on_exit",
            "on_exit",
            "unknown variant `stay`, expected `detach` or `keep`",
        ),
        (
            cfg("", "priority = \"urgent\""),
            "priority",
            "priority",
            "unknown variant `urgent`, expected one of `critical`, `high`, `normal`, `low`",
        ),
        (
            cfg("", "mode = \"off\""),
            "mode = \"off\"",
            "mode",
            "unknown variant `off`, expected `enforce` or `monitor`",
        ),
        (
            cfg(
                "",
                "[[rules]]\ncidr = \"10.0.0.0/8\"\naction = \"drop\"\nclass = \"default\"",
            ),
            "action",
            "action",
            "unknown variant `drop`, expected one of `limit`, `allow`, `deny`",
        ),
    ];
    for (text, at, key, message) in cases {
        assert_err(&text, at, key, message);
    }
}

#[test]
fn enum_values_are_case_sensitive() {
    let text = cfg("mode = \"Monitor\"", "");
    assert_err(&text, "mode =", "mode", "unknown variant `Monitor`");
}

// ---------------------------------------------------------------------------------------
// [daemon]
// ---------------------------------------------------------------------------------------

#[test]
fn empty_interfaces_is_rejected() {
    let text = "[daemon]\ninterfaces = []\n[classes.default]\n";
    assert_err(
        text,
        "interfaces",
        "daemon.interfaces",
        "must name at least one interface",
    );
}

#[test]
fn duplicate_interface_is_rejected() {
    let text = "[daemon]\ninterfaces = [\"eth0\", \"eth1\", \"eth0\"]\n[classes.default]\n";
    assert_err(
        text,
        "interfaces",
        "daemon.interfaces",
        "`eth0` is listed twice",
    );
}

#[test]
fn bad_interface_names_are_rejected() {
    for bad in ["", "a-name-of-16-chr", "eth/0", "eth 0"] {
        let text = format!("[daemon]\ninterfaces = [\"{bad}\"]\n[classes.default]\n");
        assert_err(
            &text,
            "interfaces",
            "daemon.interfaces",
            &format!("`{bad}` is not a valid interface name"),
        );
    }
    // 15 bytes (IFNAMSIZ - 1) is the longest valid name.
    let c = ok("[daemon]\ninterfaces = [\"a-name-of-15chr\", \"bond0.100\"]\n[classes.default]\n");
    assert_eq!(c.daemon.interfaces, ["a-name-of-15chr", "bond0.100"]);
}

#[test]
fn summary_interval_with_bad_unit_is_one_problem() {
    let text = cfg("summary_interval = \"5x\"", "");
    assert_err(
        &text,
        "summary_interval",
        "daemon.summary_interval",
        "unknown duration unit `x`",
    );
    let text = cfg("summary_interval = \"60\"", "");
    assert_err(
        &text,
        "summary_interval",
        "daemon.summary_interval",
        "has no unit",
    );
}

#[test]
fn summary_interval_below_one_second_is_rejected() {
    for bad in ["500ms", "0s", "0.999s"] {
        let text = cfg(&format!("summary_interval = \"{bad}\""), "");
        assert_err(
            &text,
            "summary_interval",
            "daemon.summary_interval",
            "must be at least 1s",
        );
    }
    let c = ok(&cfg("summary_interval = \"1s\"", ""));
    assert_eq!(c.daemon.summary_interval, Duration::from_secs(1));
    let c = ok(&cfg("summary_interval = \"5m\"", ""));
    assert_eq!(c.daemon.summary_interval, Duration::from_secs(300));
}

#[test]
fn pin_dir_outside_bpffs_is_rejected() {
    for bad in ["/tmp/traffic", "/sys/fs/bpf", "sys/fs/bpf/traffic"] {
        let text = cfg(&format!("pin_dir = \"{bad}\""), "");
        assert_err(
            &text,
            "pin_dir",
            "daemon.pin_dir",
            "must be a directory under /sys/fs/bpf/",
        );
    }
    let c = ok(&cfg("pin_dir = \"/sys/fs/bpf/other\"", ""));
    assert_eq!(c.daemon.pin_dir, PathBuf::from("/sys/fs/bpf/other"));
}

#[test]
fn max_sources_out_of_range_is_rejected() {
    for bad in ["0", "-1", "1023", "16777217"] {
        let text = cfg(&format!("max_sources = {bad}"), "");
        assert_err(
            &text,
            "max_sources",
            "daemon.max_sources",
            "must be between 1024 and 16777216",
        );
    }
    for (good, n) in [
        ("1024", 1024),
        ("16777216", 16_777_216),
        ("1_000_000", 1_000_000),
    ] {
        assert_eq!(
            ok(&cfg(&format!("max_sources = {good}"), ""))
                .daemon
                .max_sources,
            n
        );
    }
}

#[test]
fn non_default_daemon_values_are_taken() {
    let c = ok(&cfg(
        "attach = \"generic\"\nmode = \"monitor\"\non_exit = \"keep\"",
        "",
    ));
    assert_eq!(c.daemon.attach, AttachMode::Generic);
    assert_eq!(c.daemon.mode, Mode::Monitor);
    assert_eq!(c.daemon.on_exit, OnExit::Keep);
    assert_eq!(
        ok(&cfg("attach = \"native\"", "")).daemon.attach,
        AttachMode::Native
    );
}

// ---------------------------------------------------------------------------------------
// [admin] and [metrics]
// ---------------------------------------------------------------------------------------

#[test]
fn relative_admin_socket_is_rejected() {
    let text = cfg("", "[admin]\nsocket = \"run/admin.sock\"");
    assert_err(
        &text,
        "socket =",
        "admin.socket",
        "must be an absolute path",
    );
}

#[test]
fn admin_socket_mode_must_be_octal_permission_bits() {
    for bad in ["rw-rw----", "0999", "1777", "", "0x1b0", "-660"] {
        let text = cfg("", &format!("[admin]\nsocket_mode = \"{bad}\""));
        assert_err(
            &text,
            "socket_mode",
            "admin.socket_mode",
            "must be octal permission bits such as \"0660\"",
        );
    }
    // "0777" was accepted here before issue 12; world-writable modes are now refused
    // (`admin_socket_mode_must_not_be_world_writable`).
    for (good, bits) in [
        ("0600", 0o600),
        ("600", 0o600),
        ("0o640", 0o640),
        ("0775", 0o775),
    ] {
        let c = ok(&cfg("", &format!("[admin]\nsocket_mode = \"{good}\"")));
        assert_eq!(c.admin.socket_mode, bits, "{good}");
    }
}

#[test]
fn admin_socket_group_empty_means_none() {
    let c = ok(&cfg("", "[admin]\nsocket_group = \"\""));
    assert_eq!(c.admin.socket_group, None);
    let c = ok(&cfg("", "[admin]\nsocket_group = \"adm\""));
    assert_eq!(c.admin.socket_group.as_deref(), Some("adm"));
    let c = ok(&cfg("", "[admin]\nsocket = \"/run/t.sock\""));
    assert_eq!(c.admin.socket, PathBuf::from("/run/t.sock"));
    assert_eq!(c.admin.socket_group.as_deref(), Some("traffic"));
    assert_eq!(c.admin.control_group.as_deref(), Some("traffic-admin"));
    let c = ok(&cfg("", "[admin]\ncontrol_group = \"\""));
    assert_eq!(c.admin.control_group, None);
}

#[test]
fn metrics_listen_that_is_not_an_address_is_rejected() {
    for bad in ["localhost:9187", "127.0.0.1", ":9187", "127.0.0.1:99999"] {
        let text = cfg("", &format!("[metrics]\nlisten = \"{bad}\""));
        assert_err(
            &text,
            "listen",
            "metrics.listen",
            &format!("`{bad}` is not an address:port"),
        );
    }
}

#[test]
fn metrics_disabled_gives_no_listener() {
    let c = ok(&cfg("", "[metrics]\nenabled = false"));
    assert_eq!(c.metrics.listen, None);
    let c = ok(&cfg(
        "",
        "[metrics]\nenabled = false\nlisten = \"0.0.0.0:9100\"",
    ));
    assert_eq!(c.metrics.listen, None);
    let c = ok(&cfg("", "[metrics]\nlisten = \"[::1]:9100\""));
    assert_eq!(c.metrics.listen, "[::1]:9100".parse().ok());
    let c = ok(&cfg("", "[metrics]\nenabled = true"));
    assert_eq!(c.metrics.listen, "127.0.0.1:10187".parse().ok());
}

// ---------------------------------------------------------------------------------------
// Classes
// ---------------------------------------------------------------------------------------

#[test]
fn more_than_16_classes_is_rejected_at_the_17th() {
    let mut text = cfg("", "");
    for i in 1..16 {
        text.push_str(&format!("[classes.c{i}]\n"));
    }
    let c = ok(&text);
    assert_eq!(c.classes.len(), 16);

    text.push_str("[classes.one_too_many]\n");
    assert_err(
        &text,
        "[classes.one_too_many]",
        "classes",
        "at most 16 classes are supported",
    );
}

#[test]
fn class_names_with_bad_characters_are_rejected() {
    for bad in ["two words", "a.b", "", "ünï", "x/y"] {
        let text = cfg("", &format!("[classes.\"{bad}\"]"));
        assert_err(
            &text,
            &format!("[classes.\"{bad}\"]"),
            &format!("classes.{bad}"),
            "class names use letters, digits, `_` and `-`",
        );
    }
    let c = ok(&cfg("", "[classes.Gold-2_b]"));
    assert_eq!(c.classes[1].name, "Gold-2_b");
}

#[test]
fn class_name_longer_than_31_bytes_is_rejected() {
    let name = "a".repeat(32);
    let text = cfg("", &format!("[classes.{name}]"));
    assert_err(
        &text,
        &format!("[classes.{name}]"),
        &format!("classes.{name}"),
        "class names are at most 31 bytes",
    );
    let name = "a".repeat(31);
    assert_eq!(
        ok(&cfg("", &format!("[classes.{name}]"))).classes[1].name,
        name
    );
}

#[test]
fn more_than_3_stacked_packet_limits_are_rejected() {
    let text = cfg(
        "",
        "packets = [{ rate = 1 }, { rate = 2 }, { rate = 3 }, { rate = 4 }]",
    );
    assert_err(
        &text,
        "[classes.default]",
        "classes.default.packets",
        "at most 3 stacked packet limits",
    );
}

#[test]
fn packet_rate_must_be_positive() {
    for bad in ["0", "-5", "0.0", "nan", "-inf"] {
        let text = cfg("", &format!("packets = {{ rate = {bad} }}"));
        assert_err(
            &text,
            "packets",
            "classes.default.packets[0].rate",
            "must be greater than 0",
        );
    }
    // The index names the offending limit of a stack.
    let text = cfg("", "packets = [{ rate = 10 }, { rate = 0, per = \"1m\" }]");
    assert_err(
        &text,
        "packets",
        "classes.default.packets[1].rate",
        "must be greater than 0",
    );
}

#[test]
fn packet_rate_above_1e9_per_second_is_rejected() {
    for bad in [
        "{ rate = 1_000_000_001 }",
        "{ rate = 2e9 }",
        "{ rate = 2e9, burst = 10 }",
    ] {
        let text = cfg("", &format!("packets = {bad}"));
        assert_err(
            &text,
            "packets",
            "classes.default.packets[0].rate",
            "must be at most 1e9 per second",
        );
    }
    assert_eq!(
        default_class_of("packets = { rate = 1e9 }").packets,
        vec![rl(1e9, 1_000_000_000)]
    );
}

#[test]
fn packet_rate_limits_are_checked_per_second() {
    // 1e9 per second is the limit, whatever the window.
    let c = default_class_of("packets = { rate = 60_000_000_000, per = \"1m\" }");
    assert_rate(&c.packets[0], 1e9, 60_000_000_000);
    let text = cfg("", "packets = { rate = 2_000_000, per = \"1ms\" }");
    assert_err(
        &text,
        "packets",
        "classes.default.packets[0].rate",
        "must be at most 1e9 per second",
    );
    let text = cfg("", "packets = { rate = 0.1, per = \"7d\" }");
    assert_err(
        &text,
        "packets",
        "classes.default.packets[0].rate",
        "is below one per 11 days",
    );
}

#[test]
fn burst_must_be_a_whole_number_of_at_least_1() {
    for bad in ["1.5", "0", "-1", "2e12", "inf"] {
        let text = cfg("", &format!("packets = {{ rate = 10, burst = {bad} }}"));
        assert_err(
            &text,
            "packets",
            "classes.default.packets[0].burst",
            "must be a whole number between 1 and 1e12",
        );
    }
    let text = cfg("", "admission = { rate = 10, burst = 0.5 }");
    assert_err(
        &text,
        "admission",
        "classes.default.admission.burst",
        "must be a whole number",
    );
    assert_eq!(
        default_class_of("packets = { rate = 10, burst = 1e12 }").packets[0].burst,
        1_000_000_000_000
    );
}

#[test]
fn per_must_be_between_1ms_and_7_days() {
    for bad in ["0s", "0ms", "0.5ms", "8d", "169h", "7.001d"] {
        let text = cfg("", &format!("packets = {{ rate = 10, per = \"{bad}\" }}"));
        assert_err(
            &text,
            "packets",
            "classes.default.packets[0].per",
            "must be between 1ms and 7d",
        );
    }
    for (bad, message) in [
        ("1 fortnight", "unknown duration unit"),
        ("60", "has no unit"),
    ] {
        let text = cfg("", &format!("packets = {{ rate = 10, per = \"{bad}\" }}"));
        assert_err(&text, "packets", "classes.default.packets[0].per", message);
    }
    assert_rate(
        &default_class_of("packets = { rate = 7, per = \"7d\" }").packets[0],
        7.0 / 604_800.0,
        7,
    );
    assert_rate(
        &default_class_of("packets = { rate = 1, per = \"1ms\" }").packets[0],
        1000.0,
        1,
    );
}

#[test]
fn byte_sizes_with_bad_units_are_rejected() {
    for (bad, message) in [
        ("\"20Mb\"", "unknown size unit `Mb`"),
        ("\"20 mbit\"", "unknown size unit `mbit`"),
        ("\"lots\"", "is not a byte size"),
        ("-5", "must not be negative"),
    ] {
        let text = cfg("", &format!("bytes = {{ rate = {bad} }}"));
        assert_err(&text, "bytes", "classes.default.bytes.rate", message);
    }
    let text = cfg("", "bytes = { rate = \"1MB\", burst = \"2XB\" }");
    assert_err(
        &text,
        "bytes",
        "classes.default.bytes.burst",
        "unknown size unit `XB`",
    );
    let text = cfg("", "bytes = { rate = 0 }");
    assert_err(
        &text,
        "bytes",
        "classes.default.bytes.rate",
        "must be greater than 0",
    );
}

#[test]
fn byte_burst_below_one_full_frame_is_rejected() {
    let text = cfg("", "bytes = { rate = \"1MB\",\n  burst = 1500 }");
    assert_err(
        &text,
        "burst = 1500",
        "classes.default.bytes.burst",
        "must be at least 1514 bytes",
    );
    // Without a burst, the burst is the rate's count: too small here, reported at the rate.
    let text = cfg("", "bytes = { rate = \"1KB\" }");
    assert_err(
        &text,
        "bytes",
        "classes.default.bytes.burst",
        "must be at least 1514 bytes",
    );
    let c = default_class_of("bytes = { rate = \"1MB\", burst = 1514 }");
    assert_eq!(c.bytes, Some(rl(1e6, 1514)));
}

#[test]
fn byte_rate_above_1e9_per_second_is_rejected() {
    let text = cfg("", "bytes = { rate = \"2GB\" }");
    assert_err(
        &text,
        "bytes",
        "classes.default.bytes.rate",
        "must be at most 1e9 per second",
    );
}

#[test]
fn aggregate_prefixes_out_of_range_are_rejected() {
    for (key, bad, max) in [
        ("aggregate_v4", "33", 32),
        ("aggregate_v4", "-1", 32),
        ("aggregate_v6", "129", 128),
        ("aggregate_v6", "-1", 128),
    ] {
        let text = cfg("", &format!("{key} = {bad}"));
        assert_err(
            &text,
            key,
            &format!("classes.default.{key}"),
            &format!("must be a prefix length between 0 and {max}"),
        );
    }
    let c = default_class_of("aggregate_v4 = 0\naggregate_v6 = 128");
    assert_eq!((c.aggregate_v4, c.aggregate_v6), (0, 128));
    let c = default_class_of("aggregate_v4 = 24\naggregate_v6 = 48");
    assert_eq!((c.aggregate_v4, c.aggregate_v6), (24, 48));
}

#[test]
fn overflow_without_admission_is_rejected() {
    let text = cfg("", "packets = { rate = 10 }\noverflow = { rate = 1000 }");
    assert_err(
        &text,
        "[classes.default]",
        "classes.default.overflow",
        "needs `admission`",
    );
}

#[test]
fn admission_and_overflow_are_parsed_as_packet_limits() {
    let c = default_class_of(
        "packets = { rate = 10 }\n\
         admission = { rate = 600, per = \"1m\" }\n\
         overflow = { rate = 1000, burst = 2000 }",
    );
    assert_rate(c.admission.as_ref().expect("admission"), 10.0, 600);
    assert_eq!(c.overflow, Some(rl(1000.0, 2000)));
    // Admission alone is fine: sources over the budget just get no bucket of their own.
    let c = default_class_of("admission = { rate = 5 }");
    assert_eq!(c.admission, Some(rl(5.0, 5)));
    assert_eq!(c.overflow, None);
}

#[test]
fn unknown_default_class_is_rejected() {
    let text = cfg("default_class = \"gold\"", "");
    assert_err(
        &text,
        "default_class",
        "daemon.default_class",
        "no class named `gold`",
    );
}

#[test]
fn missing_default_class_is_rejected_at_the_daemon_table() {
    let text = "# header\n[daemon]\ninterfaces = [\"eth0\"]\n[classes.basic]\n";
    assert_err(
        text,
        "[daemon]",
        "daemon.default_class",
        "not set and there is no class named `default`",
    );
    let text = "[daemon]\ninterfaces = [\"eth0\"]\n";
    assert_err(
        text,
        "[daemon]",
        "daemon.default_class",
        "there is no class named `default`",
    );
}

#[test]
fn default_class_may_name_any_class() {
    let c = ok(
        "[daemon]\ninterfaces = [\"eth0\"]\ndefault_class = \"rest\"\n\
                [classes.gold]\n[classes.rest]\n",
    );
    assert_eq!(c.daemon.default_class, 1);
    assert_eq!(c.classes[c.daemon.default_class].name, "rest");
}

#[test]
fn classes_keep_file_order() {
    let c = ok(&format!(
        "{}[classes.zeta]\n[classes.alpha]\n[classes.mid]\n",
        cfg("", "")
    ));
    let names: Vec<_> = c.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["default", "zeta", "alpha", "mid"]);
    assert_eq!(c.class_index("alpha"), Some(2));
    assert_eq!(c.class_index("nope"), None);
}

#[test]
fn stacked_packet_limits_as_an_array() {
    let c = default_class_of(
        "packets = [{ rate = 50, burst = 100 }, { rate = 2000, per = \"1m\" }, \
         { rate = 50000, per = \"1h\" }]",
    );
    assert_eq!(c.packets.len(), 3);
    assert_rate(&c.packets[0], 50.0, 100);
    assert_rate(&c.packets[1], 2000.0 / 60.0, 2000);
    assert_rate(&c.packets[2], 50_000.0 / 3600.0, 50_000);
    assert!((c.packets[1].rate_per_sec - 33.333_333).abs() < 1e-5);
    assert!((c.packets[2].rate_per_sec - 13.888_888).abs() < 1e-5);
    // A one-element array is the same as a single table.
    assert_eq!(
        default_class_of("packets = [{ rate = 50, burst = 100 }]").packets,
        default_class_of("packets = { rate = 50, burst = 100 }").packets
    );
}

#[test]
fn per_defaults_to_1s_and_burst_to_the_count() {
    let c = default_class_of("packets = { rate = 100 }");
    assert_eq!(c.packets, vec![rl(100.0, 100)]);
    let c = default_class_of("packets = { rate = 2000, per = \"1m\" }");
    assert_rate(&c.packets[0], 2000.0 / 60.0, 2000);
    // A fractional count rounds the default burst up.
    let c = default_class_of("packets = { rate = 0.5 }");
    assert_eq!(c.packets, vec![rl(0.5, 1)]);
    let c = default_class_of("packets = { rate = 2.5, per = \"500ms\" }");
    assert_eq!(c.packets, vec![rl(5.0, 3)]);
    let c = default_class_of("bytes = { rate = \"2MB\" }");
    assert_eq!(c.bytes, Some(rl(2e6, 2_000_000)));
}

#[test]
fn byte_sizes_as_integers_and_strings() {
    for (written, bytes) in [
        ("1536", 1536),
        ("\"1536\"", 1536),
        ("\"1536B\"", 1536),
        ("\"1.5 KiB\"", 1536),
        ("\"64KB\"", 64_000),
        ("\"64kB\"", 64_000),
        ("\"20MB\"", 20_000_000),
        ("\"2MiB\"", 2 * 1024 * 1024),
        ("\"1GB\"", 1_000_000_000),
    ] {
        let c = default_class_of(&format!("bytes = {{ rate = {written} }}"));
        assert_eq!(c.bytes, Some(rl(bytes as f64, bytes)), "{written}");
    }
    let c = default_class_of("bytes = { rate = \"1GiB\", per = \"1m\", burst = \"1MiB\" }");
    assert_rate(
        c.bytes.as_ref().expect("bytes"),
        (1u64 << 30) as f64 / 60.0,
        1 << 20,
    );
}

#[test]
fn class_without_limits_is_not_limited() {
    let c = default_class_of("priority = \"critical\"");
    assert!(!c.is_limited());
    assert!(c.packets.is_empty());
    assert_eq!(c.bytes, None);
    assert!(default_class_of("bytes = { rate = \"1MB\" }").is_limited());
    assert!(default_class_of("packets = { rate = 1 }").is_limited());
    // Admission alone limits no traffic.
    assert!(!default_class_of("admission = { rate = 1 }").is_limited());
}

#[test]
fn class_mode_overrides_daemon_mode() {
    let c = ok("[daemon]\ninterfaces = [\"eth0\"]\nmode = \"monitor\"\n\
                [classes.default]\n\
                [classes.strict]\nmode = \"enforce\"\n\
                [classes.trial]\nmode = \"monitor\"\n");
    assert_eq!(c.classes[0].mode, None);
    assert_eq!(c.classes[1].mode, Some(Mode::Enforce));
    assert_eq!(c.class_mode(0), Mode::Monitor);
    assert_eq!(c.class_mode(1), Mode::Enforce);
    assert_eq!(c.class_mode(2), Mode::Monitor);

    let c = ok(&format!(
        "{}[classes.trial]\nmode = \"monitor\"\n",
        cfg("", "")
    ));
    assert_eq!(c.class_mode(0), Mode::Enforce);
    assert_eq!(c.class_mode(1), Mode::Monitor);
}

// ---------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------

#[test]
fn invalid_rule_cidr_is_rejected() {
    for bad in [
        "10.0.0.300/8",
        "example.com",
        "",
        "10.0.0/8",
        "fe80::1%eth0",
    ] {
        let text = cfg(
            "",
            &format!(
                "[[rules]]\ncidr = \"10.0.0.0/8\"\nclass = \"default\"\n\
                 [[rules]]\ncidr = \"{bad}\"\nclass = \"default\""
            ),
        );
        assert_err(
            &text,
            &format!("cidr = \"{bad}\""),
            "rules[1].cidr",
            &format!("`{bad}` is not an IP address or CIDR"),
        );
    }
}

#[test]
fn rule_cidr_with_host_bits_suggests_the_masked_prefix() {
    for (bad, masked) in [
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("192.168.1.1/24", "192.168.1.0/24"),
        ("2001:db8::1/32", "2001:db8::/32"),
        ("::1/0", "::/0"),
    ] {
        let text = cfg(
            "",
            &format!("[[rules]]\ncidr = \"{bad}\"\naction = \"deny\""),
        );
        assert_err(
            &text,
            "cidr",
            "rules[0].cidr",
            &format!("`{bad}` has host bits set; did you mean `{masked}`?"),
        );
    }
}

#[test]
fn rule_prefix_length_out_of_range_is_rejected() {
    for (bad, max) in [
        ("10.0.0.0/33", 32),
        ("10.0.0.0/-1", 32),
        ("10.0.0.0/x", 32),
        ("10.0.0.0/", 32),
        ("10.0.0.0/8/8", 32),
        ("2001:db8::/129", 128),
        ("2001:db8::/300", 128),
    ] {
        let text = cfg(
            "",
            &format!("[[rules]]\ncidr = \"{bad}\"\naction = \"deny\""),
        );
        assert_err(
            &text,
            "cidr",
            "rules[0].cidr",
            &format!("prefix length in `{bad}` must be between 0 and {max}"),
        );
    }
}

#[test]
fn duplicate_rule_cidr_is_rejected() {
    for (first, second) in [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.0/8", "10.0.0.0/08"),
        ("2001:db8::/32", "2001:0db8:0::/32"),
        ("192.0.2.7", "192.0.2.7/32"),
        // IPv4 rules live in the IPv4-mapped IPv6 space of the same kernel table.
        ("10.0.0.0/8", "::ffff:10.0.0.0/104"),
        ("0.0.0.0/0", "::ffff:0:0/96"),
    ] {
        let text = cfg(
            "",
            &format!(
                "[[rules]]\ncidr = \"{first}\"\naction = \"allow\"\n\
                 [[rules]]\ncidr = \"{second}\" # second\naction = \"deny\""
            ),
        );
        assert_err(
            &text,
            "# second",
            "rules[1].cidr",
            &format!("`{second}` already has a rule"),
        );
    }
}

#[test]
fn rule_naming_an_unknown_class_is_rejected() {
    let text = cfg(
        "",
        "[[rules]]\ncidr = \"10.0.0.0/8\"\naction = \"allow\"\nclass = \"gold\"",
    );
    assert_err(
        &text,
        "class = \"gold\"",
        "rules[0].class",
        "no class named `gold`",
    );
}

#[test]
fn limit_rule_without_class_is_rejected() {
    for action in ["", "action = \"limit\"\n"] {
        let text = cfg(
            "",
            &format!(
                "[[rules]]\ncidr = \"10.0.0.0/8\"\nclass = \"default\"\n[[rules]] # second\n{action}cidr = \"10.1.0.0/16\""
            ),
        );
        assert_err(
            &text,
            "# second",
            "rules[1].class",
            "a `limit` rule needs a class",
        );
    }
}

#[test]
fn rules_keep_order_and_accept_ipv6_hosts_and_catch_alls() {
    let c = ok(&cfg(
        "",
        "[classes.six]\n\
         [[rules]]\ncidr = \"2001:db8:abcd::/48\"\nclass = \"six\"\n\
         [[rules]]\ncidr = \"2001:db8::42\"\naction = \"deny\"\n\
         [[rules]]\ncidr = \"192.0.2.9\"\naction = \"allow\"\n\
         [[rules]]\ncidr = \"::/0\"\nclass = \"default\"\n\
         [[rules]]\ncidr = \"0.0.0.0/0\"\naction = \"deny\"\nclass = \"six\"\n\
         [[rules]]\ncidr = \" fe80::/10 \"\naction = \"allow\"\n",
    ));
    assert_eq!(
        c.rules,
        vec![
            rule("2001:db8:abcd::/48", RuleAction::Limit, Some(1)),
            rule("2001:db8::42/128", RuleAction::Deny, None),
            rule("192.0.2.9/32", RuleAction::Allow, None),
            rule("::/0", RuleAction::Limit, Some(0)),
            rule("0.0.0.0/0", RuleAction::Deny, Some(1)),
            rule("fe80::/10", RuleAction::Allow, None),
        ]
    );
    assert!(matches!(c.rules[0].addr, IpAddr::V6(_)));
    assert_eq!(c.rules[1].cidr(), "2001:db8::42/128");
}

// ---------------------------------------------------------------------------------------
// Several problems at once
// ---------------------------------------------------------------------------------------

#[test]
fn every_problem_of_a_file_is_reported() {
    let text = "[daemon]\n\
                interfaces = [\"eth0\", \"eth0\"]\n\
                summary_interval = \"100ms\"\n\
                pin_dir = \"/tmp/x\"\n\
                default_class = \"gold\"\n\
                [admin]\n\
                socket = \"admin.sock\"\n\
                [metrics]\n\
                listen = \"nowhere\"\n\
                [classes.premium]\n\
                packets = [{ rate = 0 }, { rate = 10, burst = 0.5 }]\n\
                bytes = { rate = \"1KB\" }\n\
                aggregate_v4 = 40\n\
                [classes.\"bad name\"]\n\
                overflow = { rate = 10 }\n\
                [[rules]]\n\
                cidr = \"10.0.0.1/8\"\n\
                class = \"premium\"\n\
                [[rules]]\n\
                cidr = \"10.1.0.0/16\"\n\
                class = \"silver\"\n\
                [[rules]]\n\
                cidr = \"10.1.0.0/16\"\n\
                action = \"deny\"\n";
    let e = parse(text).expect_err("many problems");
    let shown = e.to_string();
    let expected = [
        ("interfaces", "daemon.interfaces", "`eth0` is listed twice"),
        (
            "summary_interval",
            "daemon.summary_interval",
            "must be at least 1s",
        ),
        ("pin_dir", "daemon.pin_dir", "under /sys/fs/bpf/"),
        ("socket =", "admin.socket", "absolute"),
        (
            "listen",
            "metrics.listen",
            "`nowhere` is not an address:port",
        ),
        (
            "packets",
            "classes.premium.packets[0].rate",
            "greater than 0",
        ),
        (
            "packets",
            "classes.premium.packets[1].burst",
            "whole number",
        ),
        (
            "bytes",
            "classes.premium.bytes.burst",
            "at least 1514 bytes",
        ),
        (
            "aggregate_v4",
            "classes.premium.aggregate_v4",
            "between 0 and 32",
        ),
        (
            "[classes.\"bad name\"]",
            "classes.bad name",
            "class names use",
        ),
        (
            "[classes.\"bad name\"]",
            "classes.bad name.overflow",
            "needs `admission`",
        ),
        (
            "default_class",
            "daemon.default_class",
            "no class named `gold`",
        ),
        ("10.0.0.1/8", "rules[0].cidr", "did you mean `10.0.0.0/8`?"),
        ("silver", "rules[1].class", "no class named `silver`"),
        (
            "action = \"deny\"",
            "rules[2].cidr",
            "`10.1.0.0/16` already has a rule",
        ),
    ];
    for (at, key, message) in expected {
        // The last rule's cidr is on the line before its action.
        let line = line_of(text, at) - usize::from(at == "action = \"deny\"");
        assert!(
            shown.lines().any(|l| matches(l, line, key, message)),
            "missing `t.toml:{line}:…: {key}: …{message}…` in:\n{shown}"
        );
    }
    assert_eq!(e.problems.len(), expected.len(), "{shown}");
    assert!(e.problems.iter().all(|p| p.line > 0 && p.column > 0));
    assert_eq!(e.path, PathBuf::from("t.toml"));
}

#[test]
fn problem_columns_point_at_the_value() {
    let text = cfg("", "packets = { rate = 0 }");
    let e = parse(&text).expect_err("rate = 0");
    assert_eq!(e.problems.len(), 1);
    let p = &e.problems[0];
    assert_eq!(p.line, line_of(&text, "packets"));
    assert_eq!(p.column, "packets = { rate = ".len() + 1);
    assert_eq!(p.key, "classes.default.packets[0].rate");
    assert_eq!(p.message, "must be greater than 0");
}

// ---------------------------------------------------------------------------------------
// Hostile input (issue 12): bounded durations, map capacities, socket mode, pin_dir.
// Each of these fails on the main before issue 12 (a panic, or the file accepted).
// ---------------------------------------------------------------------------------------

mod conventions;
mod fuzz;

const HUGE: &str = "100000000000000000000s";

#[test]
fn huge_summary_interval_is_an_error_not_a_panic() {
    let text = cfg(&format!("summary_interval = \"{HUGE}\""), "");
    assert_err(
        &text,
        "summary_interval",
        "daemon.summary_interval",
        "is too long",
    );
    for long in ["2d", "86401s"] {
        let text = cfg(&format!("summary_interval = \"{long}\""), "");
        assert_err(
            &text,
            "summary_interval",
            "daemon.summary_interval",
            "must be at most 1d",
        );
    }
    let c = ok(&cfg("summary_interval = \"1d\"", ""));
    assert_eq!(c.daemon.summary_interval, Duration::from_secs(86_400));
}

/// Every duration key, given a value that overflowed `Duration` (or is merely far too
/// long), is one located problem naming that key.
#[test]
fn every_duration_key_is_bounded() {
    let upstream = |k: &str, v: &str| {
        format!("[[upstreams]]\nname = \"web\"\nport = 8080\nprobe = \"tcp\"\n{k} = \"{v}\"\n")
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            cfg("", "packets = { rate = 10, per = \"@\" }"),
            "per",
            "classes.default.packets[0].per",
        ),
        (
            cfg("", "[pressure]\ninterval = \"@\""),
            "interval",
            "pressure.interval",
        ),
        (
            cfg("", "[throttle]\nmin_dwell = \"@\""),
            "min_dwell",
            "throttle.min_dwell",
        ),
        (
            cfg("", "[breaker]\nwindow = \"@\""),
            "window",
            "breaker.window",
        ),
        (
            cfg("", "[breaker]\nreset_timeout = \"@\""),
            "reset_timeout",
            "breaker.reset_timeout",
        ),
        (
            cfg("", "[breaker]\nbackoff_cap = \"@\""),
            "backoff_cap",
            "breaker.backoff_cap",
        ),
        (
            cfg("", "[breaker]\nhalf_open_interval = \"@\""),
            "half_open_interval",
            "breaker.half_open_interval",
        ),
        (
            cfg("", "[breaker.groups.g]\nreset_timeout = \"@\""),
            "reset_timeout",
            "breaker.groups.g.reset_timeout",
        ),
        (
            cfg("", &upstream("interval", "@")),
            "interval",
            "upstreams[0].interval",
        ),
        (
            cfg("", &upstream("backoff_cap", "@")),
            "backoff_cap",
            "upstreams[0].backoff_cap",
        ),
    ];
    for (template, at, key) in &cases {
        for value in [HUGE, "99999999999999999999999999999999d", "400d", "2000h"] {
            let text = template.replace('@', value);
            let e = err(&text);
            let line = line_of(&text, at);
            assert!(
                e.lines().any(|p| matches(p, line, key, "")),
                "{key} = {value}: expected a problem at line {line} naming {key}, got:\n{e}"
            );
        }
    }
    // The probe timeout is at most the interval; the interval at most an hour.
    let text = cfg("", &upstream("interval", "2h"));
    assert_err(
        &text,
        "interval",
        "upstreams[0].interval",
        "must be at most 1h",
    );
    let text = cfg("", &upstream("timeout", HUGE));
    assert_err(&text, "timeout", "upstreams[0].timeout", "is too long");
    let c = ok(&cfg("", &upstream("interval", "1h")));
    assert_eq!(c.upstreams[0].interval, Duration::from_secs(3600));
}

#[test]
fn more_rules_than_the_kernel_map_holds_are_refused() {
    let limit = traffic_common::RULES_ENTRIES as usize;
    let rules = |n: usize| {
        let mut text = cfg("", "");
        for i in 0..n {
            let (a, b) = (i / 256, i % 256);
            text.push_str(&format!(
                "[[rules]]\ncidr = \"10.{a}.{b}.0/24\"\naction = \"allow\"\n"
            ));
        }
        text
    };
    let at_limit = rules(limit);
    assert_eq!(ok(&at_limit).rules.len(), limit);
    let over = rules(limit + 1);
    let e = err(&over);
    // The first rule that does not fit is the last `[[rules]]`.
    let line = over[..over.rfind("[[rules]]").unwrap()]
        .matches('\n')
        .count()
        + 1;
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        matches(
            &e,
            line,
            &format!("rules[{limit}]"),
            &format!("holds at most {limit}")
        ),
        "{e}"
    );
}

#[test]
fn a_full_rule_table_leaves_no_room_for_the_implicit_ipv4_rule() {
    // An IPv6 rule covering ::ffff:0:0/96 without an IPv4 /0 makes the plan add one rule.
    let limit = traffic_common::RULES_ENTRIES as usize;
    let rules = |n: usize, first: &str| {
        let mut text = cfg("", "");
        text.push_str(&format!(
            "[[rules]]\ncidr = \"{first}\"\naction = \"allow\"\n"
        ));
        for i in 1..n {
            let (a, b) = (i / 256, i % 256);
            text.push_str(&format!(
                "[[rules]]\ncidr = \"10.{a}.{b}.0/24\"\naction = \"allow\"\n"
            ));
        }
        text
    };
    let e = err(&rules(limit, "::/0"));
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(&format!("rules[{}]", limit - 1)), "{e}");
    assert!(e.contains("implicit IPv4 rule"), "{e}");
    // One fewer fits with the implicit rule; an IPv6 rule that misses the block needs none;
    // an explicit IPv4 /0 replaces the implicit one.
    assert_eq!(ok(&rules(limit - 1, "::/0")).rules.len(), limit - 1);
    assert_eq!(ok(&rules(limit, "2001:db8::/32")).rules.len(), limit);
    let mut with_v4_default = rules(limit - 1, "::/0");
    with_v4_default.push_str("[[rules]]\ncidr = \"0.0.0.0/0\"\naction = \"allow\"\n");
    assert_eq!(ok(&with_v4_default).rules.len(), limit);
}

#[test]
fn more_ports_than_the_kernel_map_holds_name_the_first_that_does_not_fit() {
    let limit = traffic_common::MAX_PORTS as usize;
    let mut text = cfg("", "");
    for i in 0..=limit {
        text.push_str(&format!("[[ports]]\nport = {}\n", 1000 + i));
    }
    let e = err(&text);
    let line = text[..text.rfind("[[ports]]").unwrap()]
        .matches('\n')
        .count()
        + 1;
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        matches(
            &e,
            line,
            &format!("ports[{limit}]"),
            &format!("at most {limit} port rules and upstreams together")
        ),
        "{e}"
    );
}

#[test]
fn admin_socket_mode_must_not_be_world_writable() {
    for bad in ["0777", "0662", "0666", "002", "0o772"] {
        let text = cfg("", &format!("[admin]\nsocket_mode = \"{bad}\""));
        assert_err(
            &text,
            "socket_mode",
            "admin.socket_mode",
            "must not be world-writable",
        );
    }
    let c = ok(&cfg("", "[admin]\nsocket_mode = \"0664\""));
    assert_eq!(c.admin.socket_mode, 0o664);
}

#[test]
fn pin_dir_is_canonicalised_and_strictly_under_bpffs() {
    for bad in [
        "/sys/fs/bpf/../../etc",
        "/sys/fs/bpf/traffic/../..",
        "/sys/fs/bpf/..",
        "/sys/fs/bpf/a/../b",
    ] {
        let text = cfg(&format!("pin_dir = \"{bad}\""), "");
        assert_err(&text, "pin_dir", "daemon.pin_dir", "`..` is not allowed");
    }
    for bad in [
        "/sys/fs/bpf/",
        "/sys/fs/bpf/.",
        "/sys/fs/bpf//",
        "/sys/fs/bpfx/t",
    ] {
        let text = cfg(&format!("pin_dir = \"{bad}\""), "");
        assert_err(
            &text,
            "pin_dir",
            "daemon.pin_dir",
            "must be a directory under /sys/fs/bpf/",
        );
    }
    let c = ok(&cfg("pin_dir = \"/sys/fs/bpf//a/./b/\"", ""));
    assert_eq!(c.daemon.pin_dir, PathBuf::from("/sys/fs/bpf/a/b"));
}
