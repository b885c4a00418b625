//! Issue 13, item 7: CIDR lists in rules, port ranges and lists in `[[ports]]`, and the
//! include directory. Each of these fails on the main before issue 13 (a list or range
//! refused as a type error; no `conf.d` read).

use std::path::{Path, PathBuf};

use super::{assert_err, cfg, err, matches, ok, rule};
use crate::config::{
    Config, PortSpec, Protocol, RuleAction,
    include::{self, Included},
};

// ---------------------------------------------------------------------------------------
// Lists and ranges
// ---------------------------------------------------------------------------------------

#[test]
fn a_rule_with_a_cidr_list_is_one_rule_per_cidr() {
    let text = cfg(
        "",
        "[[rules]]\ncidr = [\"198.18.0.0/24\", \"2001:db8::/48\"]\nclass = \"default\"\n\
         [[rules]]\ncidr = \"198.18.9.0/24\"\naction = \"deny\"\n",
    );
    let c = ok(&text);
    assert_eq!(
        c.rules,
        vec![
            rule("198.18.0.0/24", RuleAction::Limit, Some(0)),
            rule("2001:db8::/48", RuleAction::Limit, Some(0)),
            rule("198.18.9.0/24", RuleAction::Deny, None),
        ]
    );
}

#[test]
fn a_bad_list_element_is_named_by_its_index_line_and_column() {
    let text = cfg(
        "",
        "[[rules]]\ncidr = [\n  \"198.18.0.0/24\",\n  \"198.18.1.1/24\",\n]\nclass = \"default\"\n",
    );
    let e = err(&text);
    let line = super::line_of(&text, "198.18.1.1/24");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with(&format!("t.toml:{line}:3: rules[0].cidr[1]: ")) && e.contains("host bits"),
        "{e}"
    );
    // A wrong element type is a type error at the element.
    let text = cfg(
        "",
        "[[rules]]\ncidr = [\"198.18.0.0/24\", 5]\naction = \"allow\"\n",
    );
    assert!(err(&text).contains("cidr"), "{}", err(&text));
    assert_err(
        &cfg("", "[[rules]]\ncidr = []\naction = \"allow\"\n"),
        "cidr = []",
        "rules[0].cidr",
        "lists no CIDR",
    );
}

#[test]
fn the_same_prefix_twice_is_an_error_wherever_it_is_and_overlaps_are_not() {
    // In one list, in two rules, and as IPv4 and its IPv4-mapped IPv6 form.
    for (rules, key) in [
        (
            "[[rules]]\ncidr = [\"198.18.0.0/24\", \"198.18.0.0/24\"]\naction = \"allow\"\n",
            "rules[0].cidr[1]",
        ),
        (
            "[[rules]]\ncidr = [\"198.18.0.0/24\"]\naction = \"allow\"\n\
             [[rules]]\ncidr = [\"10.0.0.0/8\", \"::ffff:198.18.0.0/120\"]\naction = \"deny\"\n",
            "rules[1].cidr[1]",
        ),
    ] {
        let e = err(&cfg("", rules));
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.contains(&format!(": {key}: ")) && e.contains("already has a rule"),
            "{e}"
        );
    }
    // A narrower prefix inside a wider one: the longest prefix wins, not an error.
    let c = ok(&cfg(
        "",
        "[[rules]]\ncidr = [\"198.18.0.0/15\", \"198.18.5.0/24\"]\naction = \"allow\"\n",
    ));
    assert_eq!(c.rules.len(), 2);
}

fn port(port: u16, protocol: Protocol) -> PortSpec {
    PortSpec {
        port,
        protocol,
        class: None,
        new_connections: None,
    }
}

#[test]
fn ports_take_numbers_ranges_and_lists_one_entry_per_port() {
    let text = cfg(
        "",
        "[[ports]]\nport = [22, \"8000-8002\", \"9000\"]\n\
         [[ports]]\nport = \"8000-8001\"\nprotocol = \"udp\"\n\
         [[ports]]\nport = 53\n",
    );
    let c = ok(&text);
    let tcp = Protocol::Tcp;
    assert_eq!(
        c.ports,
        vec![
            port(22, tcp),
            port(8000, tcp),
            port(8001, tcp),
            port(8002, tcp),
            port(9000, tcp),
            port(8000, Protocol::Udp),
            port(8001, Protocol::Udp),
            port(53, tcp),
        ]
    );
}

#[test]
fn overlapping_ports_name_the_entry_that_had_the_port_first() {
    let text = cfg(
        "",
        "[[ports]]\nport = [22, \"8000-8099\"]\n[[ports]]\nport = [\"7990-8010\"]\n",
    );
    assert_err(
        &text,
        "\"7990-8010\"",
        "ports[1].port[0]",
        "tcp/8000 (in 7990-8010) already has a port rule (ports[0].port[1])",
    );
    assert_err(
        &cfg("", "[[ports]]\nport = [22, 22]\n"),
        "port =",
        "ports[0].port[1]",
        "tcp/22 already has a port rule (ports[0].port[0])",
    );
    for (bad, message) in [
        ("\"9-8\"", "runs backwards"),
        ("\"0-10\"", "between 1 and 65535"),
        ("70000", "between 1 and 65535"),
        ("[]", "lists no port"),
    ] {
        assert_err(
            &cfg("", &format!("[[ports]]\nport = {bad}\n")),
            "port =",
            "ports[0].port",
            message,
        );
    }
}

#[test]
fn a_range_counts_one_kernel_entry_per_port() {
    let limit = traffic_common::MAX_PORTS as usize;
    // Alone, a range of every port: one problem at the range, with the count.
    assert_err(
        &cfg("", "[[ports]]\nport = \"1-65535\"\n"),
        "port =",
        "ports[0].port",
        &format!(
            "at most {limit} port rules and upstreams together (the kernel's ports map holds {limit}; a range takes one per port); the configuration has 65535"
        ),
    );
    // A range that fits exactly, then one more port: the problem is at that port.
    let text = cfg(
        "",
        &format!(
            "[[ports]]\nport = \"1000-{}\"\n[[ports]]\nport = [5]\n",
            999 + limit
        ),
    );
    assert_err(
        &text,
        "port = [5]",
        "ports[1].port[0]",
        "the configuration has 257",
    );
    assert_eq!(
        ok(&cfg(
            "",
            &format!("[[ports]]\nport = \"1000-{}\"\n", 999 + limit)
        ))
        .ports
        .len(),
        limit
    );
}

#[test]
fn cidr_lists_count_one_kernel_entry_per_cidr() {
    let limit = traffic_common::RULES_ENTRIES as usize;
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
            .collect::<Vec<_>>()
            .join(",")
    };
    let fits = cfg(
        "",
        &format!("[[rules]]\ncidr = [{}]\naction = \"allow\"\n", list(limit)),
    );
    assert_eq!(ok(&fits).rules.len(), limit);
    let over = cfg(
        "",
        &format!(
            "[[rules]]\ncidr = [{}]\naction = \"allow\"\n",
            list(limit + 1)
        ),
    );
    let e = err(&over);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains(&format!(": rules[0].cidr[{limit}]: "))
            && e.contains(&format!("{} rules (one per CIDR of a list)", limit + 1))
            && e.contains(&format!("holds at most {limit}")),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------
// The include directory: the merge (pure)
// ---------------------------------------------------------------------------------------

const MAIN: &str = "[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\n\
    [[rules]]\ncidr = \"198.18.0.0/24\"\naction = \"allow\"\n";

fn inc(name: &str, text: &str) -> Included {
    Included {
        path: PathBuf::from(format!("conf.d/{name}")),
        text: text.to_owned(),
    }
}

fn merged(included: &[Included]) -> Result<Config, String> {
    include::parse(Path::new("t.toml"), MAIN, included).map_err(|e| e.to_string())
}

#[test]
fn included_tables_are_appended_after_the_main_files_in_order() {
    let c = merged(&[
        inc(
            "a.toml",
            "[classes.clients]\npackets = { rate = 10 }\n\
             [[rules]]\ncidr = [\"198.18.1.0/24\", \"198.18.2.0/24\"]\nclass = \"clients\"\n",
        ),
        inc(
            "b.toml",
            "[[rules]]\ncidr = \"198.18.3.0/24\"\nclass = \"clients\"\n\
             [[ports]]\nport = \"8000-8001\"\nclass = \"default\"\n\
             [[upstreams]]\nname = \"web\"\nport = 8080\n",
        ),
    ])
    .unwrap();
    let cidrs: Vec<String> = c.rules.iter().map(|r| r.cidr()).collect();
    assert_eq!(
        cidrs,
        [
            "198.18.0.0/24",
            "198.18.1.0/24",
            "198.18.2.0/24",
            "198.18.3.0/24"
        ]
    );
    assert_eq!(c.class_index("clients"), Some(1));
    assert_eq!(c.rules[3].class, Some(1));
    assert_eq!(c.ports.len(), 2);
    assert_eq!(c.upstreams[0].name, "web");
    assert_eq!(
        c.included,
        [
            PathBuf::from("conf.d/a.toml"),
            PathBuf::from("conf.d/b.toml")
        ]
    );
}

#[test]
fn a_problem_in_an_included_file_names_that_file_its_line_and_its_own_index() {
    let b = "# generated\n[[rules]]\ncidr = \"198.18.3.0/24\"\naction = \"allow\"\n\
             [[rules]]\ncidr = [\"198.18.4.0/24\", \"198.18.0.0/24\"]\naction = \"allow\"\n";
    let e = merged(&[
        inc(
            "a.toml",
            "[[rules]]\ncidr = \"198.18.1.0/24\"\naction = \"allow\"\n",
        ),
        inc("b.toml", b),
    ])
    .unwrap_err();
    // The second rule of b.toml (rules[3] merged), its second CIDR: a duplicate of the main
    // file's rule.
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("conf.d/b.toml:6:26: rules[1].cidr[1]: `198.18.0.0/24` already has a rule"),
        "{e}"
    );
    // A validation problem and a type problem, each in its own file.
    let e = merged(&[
        inc(
            "a.toml",
            "[[rules]]\ncidr = \"198.18.1.0/24\"\nclass = \"nope\"\n",
        ),
        inc("b.toml", "\n[[ports]]\nport = 22\nrate = 5\n"),
    ])
    .unwrap_err();
    assert!(
        e.starts_with("conf.d/b.toml:4:1: rate: unknown field `rate`"),
        "{e}"
    );
    let e = merged(&[inc(
        "a.toml",
        "[[rules]]\ncidr = \"198.18.1.0/24\"\nclass = \"nope\"\n",
    )])
    .unwrap_err();
    assert!(
        e.starts_with("conf.d/a.toml:3:9: rules[0].class: no class named `nope`"),
        "{e}"
    );
}

#[test]
fn an_included_file_holds_only_lists_and_classes_each_defined_once() {
    for (text, expected) in [
        (
            "[daemon]\nmode = \"monitor\"\n",
            "conf.d/x.toml:1:2: daemon: may not appear in an included file (only classes, rules, ports, upstreams, feeds)",
        ),
        (
            "\n[classes.default]\npackets = { rate = 5 }\n",
            "conf.d/x.toml:2:10: classes.default: is already defined (the main file, line 3)",
        ),
        (
            "rules = 5\n",
            "conf.d/x.toml:1:9: rules: must be an array of tables ([[rules]])",
        ),
        ("[[rules]\n", "conf.d/x.toml:1:"),
    ] {
        let e = merged(&[inc("x.toml", text)]).unwrap_err();
        assert!(e.starts_with(expected), "{text:?}: {e}");
    }
    // A class defined in two included files: the second names the first.
    let e = merged(&[
        inc("a.toml", "[classes.web]\n"),
        inc("b.toml", "[classes.web]\n"),
    ])
    .unwrap_err();
    assert!(
        e.starts_with(
            "conf.d/b.toml:1:10: classes.web: is already defined (conf.d/a.toml, line 1)"
        ),
        "{e}"
    );
    // Problems of several files at once, each located.
    let e = merged(&[inc("a.toml", "[daemon]\n"), inc("b.toml", "[metrics]\n")]).unwrap_err();
    assert_eq!(e.lines().count(), 2, "{e}");
    // The main file's problems keep their plain location.
    let e = include::parse(
        Path::new("t.toml"),
        &format!("{MAIN}[[rules]]\ncidr = \"nope\"\naction = \"allow\"\n"),
        &[inc("a.toml", "[classes.web]\n")],
    )
    .unwrap_err()
    .to_string();
    assert!(matches(&e, 8, "rules[1].cidr", "not an IP address"), "{e}");
}

#[test]
fn problems_in_json_carry_the_included_file() {
    let e = include::parse(Path::new("t.toml"), MAIN, &[inc("a.toml", "[daemon]\n")])
        .map(|_| ())
        .unwrap_err();
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["problems"][0]["file"], "conf.d/a.toml", "{v}");
    assert_eq!(v["problems"][0]["line"], 1, "{v}");
    let main_only = include::parse(Path::new("t.toml"), "[daemon]\n", &[]).unwrap_err();
    let v = serde_json::to_value(&main_only).unwrap();
    assert!(v["problems"][0].get("file").is_none(), "{v}");
}

// ---------------------------------------------------------------------------------------
// The include directory: reading it (files, hostile entries)
// ---------------------------------------------------------------------------------------

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("trf-conv-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join(include::DIR)).unwrap();
        Self(p)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn conf_d(&self) -> PathBuf {
        self.0.join(include::DIR)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_reads_conf_d_in_lexical_order_and_ignores_other_names() {
    let s = Scratch::new("order");
    let main = s.write("traffic.toml", MAIN);
    s.write(
        "conf.d/2-b.toml",
        "[[rules]]\ncidr = \"198.18.2.0/24\"\naction = \"allow\"\n",
    );
    s.write(
        "conf.d/10-a.toml",
        "[[rules]]\ncidr = \"198.18.1.0/24\"\naction = \"allow\"\n",
    );
    for ignored in ["notes.txt", ".hidden.toml", "x.toml.disabled", "x.toml~"] {
        s.write(&format!("conf.d/{ignored}"), "not toml at all [[[");
    }
    std::fs::create_dir(s.conf_d().join("sub")).unwrap();
    s.write("conf.d/sub/deeper.toml", "[daemon]\n");
    let c = Config::load(&main).unwrap_or_else(|e| panic!("{e}"));
    let cidrs: Vec<String> = c.rules.iter().map(|r| r.cidr()).collect();
    // Byte order: "10-a" before "2-b".
    assert_eq!(cidrs, ["198.18.0.0/24", "198.18.1.0/24", "198.18.2.0/24"]);
    assert_eq!(c.included.len(), 2);
    // No conf.d at all: just the main file.
    std::fs::remove_dir_all(s.conf_d()).unwrap();
    assert!(Config::load(&main).unwrap().included.is_empty());
}

#[test]
fn a_bad_included_file_is_refused_naming_it() {
    let s = Scratch::new("bad");
    let main = s.write("traffic.toml", MAIN);
    let bad = s.write("conf.d/50-bad.toml", "\n\n[[ports]]\nport = \"9-8\"\n");
    let e = Config::load(&main).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:4:8: ports[0].port: ", bad.display())),
        "{e}"
    );
}

#[test]
fn hostile_entries_are_errors_naming_the_file_never_a_hang() {
    let s = Scratch::new("hostile");
    let d = s.conf_d();
    std::fs::create_dir(d.join("dir.toml")).unwrap();
    std::os::unix::fs::symlink("loop.toml", d.join("loop.toml")).unwrap();
    std::os::unix::fs::symlink("nowhere", d.join("dangling.toml")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(d.join("fifo.toml"))
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(d.join("latin1.toml"), b"# caf\xe9\n").unwrap();
    let problems = include::read_dir(&d).unwrap_err();
    let mut named: Vec<String> = problems
        .iter()
        .map(|p| {
            let f = p.file.as_ref().unwrap();
            format!(
                "{}: {}",
                f.file_name().unwrap().to_string_lossy(),
                p.message
            )
        })
        .collect();
    named.sort();
    assert_eq!(named.len(), 5, "{named:#?}");
    assert!(
        named[0].starts_with("dangling.toml: cannot read"),
        "{named:#?}"
    );
    assert!(
        named[1].starts_with("dir.toml: is not a regular file"),
        "{named:#?}"
    );
    assert!(
        named[2].starts_with("fifo.toml: is not a regular file"),
        "{named:#?}"
    );
    assert!(
        named[3].starts_with("latin1.toml: is not UTF-8"),
        "{named:#?}"
    );
    assert!(named[4].starts_with("loop.toml: cannot read"), "{named:#?}");
}

#[test]
fn too_many_files_or_entries_are_refused_before_reading_them() {
    let s = Scratch::new("many");
    let d = s.conf_d();
    for i in 0..=include::MAX_FILES {
        std::fs::write(d.join(format!("{i:04}.toml")), "").unwrap();
    }
    let p = include::read_dir(&d).unwrap_err();
    assert!(
        p[0].message
            .contains(&format!("at most {}", include::MAX_FILES)),
        "{p:?}"
    );
    for i in 0..include::MAX_DIR_ENTRIES {
        std::fs::write(d.join(format!("{i:05}.txt")), "").unwrap();
    }
    let p = include::read_dir(&d).unwrap_err();
    assert!(p[0].message.contains("entries"), "{p:?}");
}

#[test]
fn an_oversized_included_file_is_refused() {
    let s = Scratch::new("big");
    let d = s.conf_d();
    let f = std::fs::File::create(d.join("big.toml")).unwrap();
    f.set_len(include::MAX_FILE_BYTES + 1).unwrap();
    let p = include::read_dir(&d).unwrap_err();
    assert!(p[0].message.contains("larger than"), "{p:?}");
}

/// Every truncation of an included file (the shipped classes and rules, moved to conf.d) is
/// accepted or refused with problems located inside the file they name: never a panic, a
/// line past the end of a file, or a problem blamed on the wrong file.
#[test]
fn every_truncation_of_an_included_file_is_located_in_its_own_file() {
    let shipped = std::fs::read_to_string(super::shipped_path()).unwrap();
    let tail = &shipped[shipped.find("[classes.internal]").unwrap()..];
    let main = "[daemon]\ninterfaces = [\"eth0\"]\n\n[[rules]]\ncidr = \"203.0.113.0/24\"\naction = \"deny\"\n";
    let lines = |t: &str| t.lines().count().max(1);
    let mut refused = 0;
    for cut in (0..=tail.len()).filter(|&i| tail.is_char_boundary(i)) {
        let text = &tail[..cut];
        let Err(e) = include::parse(Path::new("t.toml"), main, &[inc("z.toml", text)]) else {
            continue;
        };
        refused += 1;
        for p in &e.problems {
            let (name, max) = match &p.file {
                Some(f) => (f.display().to_string(), lines(text)),
                None => ("t.toml".to_owned(), lines(main)),
            };
            assert!(
                p.file
                    .as_deref()
                    .is_none_or(|f| f == Path::new("conf.d/z.toml")),
                "cut {cut}: {e}"
            );
            assert!(
                p.line <= max,
                "cut {cut}: {name}:{} past its end: {e}",
                p.line
            );
            assert!(!p.key.is_empty() || p.line == 0, "cut {cut}: no key: {e}");
        }
    }
    assert!(refused > 0);
}
