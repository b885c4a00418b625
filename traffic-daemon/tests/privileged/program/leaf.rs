//! Issue 16: the last-leaf-rule shortcut of classification (see `classify.rs` in the
//! program) never hides a rule.

use anyhow::Result;
use traffic_common::Reason;
use traffic_daemon::dataplane::Dataplane as _;

use super::{case, udp_from, v6};
use crate::support::bpf::{Lab, Slot, XDP_PASS};

/// The leaf rules of [`LEAF_CONFIG`]: `outer` has a nested rule, `wide` has none.
const LEAF_CONFIG: &str = r#"
[daemon]
interfaces = ["lo"]

[classes.wide]
packets = { rate = 1000, burst = 1000 }

[classes.outer]
packets = { rate = 1000, burst = 1000 }

[classes.internal]

[classes.default]
packets = { rate = 1000, burst = 1000 }

[[rules]]
cidr = "2001:db8:8000::/33"
class = "wide"

[[rules]]
cidr = "2001:db8:4000::/34"
class = "outer"

[[rules]]
cidr = "2001:db8:4000:1::/64"
action = "allow"
class = "internal"
"#;

/// Issue 16: a new source inside the leaf rule a CPU matched last is classified without
/// the LPM lookup. The shortcut must never hide a rule: a rule with another inside it is
/// no leaf (its nested rule still wins right after it matched), a source outside the leaf
/// goes to the trie, and a reload that nests a rule inside the cached leaf takes effect at
/// once (the rule generation changes).
pub fn the_last_leaf_rule_never_hides_a_nested_rule() -> Result<()> {
    let mut lab = Lab::configured("leaf", LEAF_CONFIG)?;
    let (wide, outer, internal, default) = (
        lab.class("wide"),
        lab.class("outer"),
        lab.class("internal"),
        lab.class("default"),
    );
    let leaves: Vec<bool> = lab
        .applied
        .as_ref()
        .expect("configured")
        .rules
        .values()
        .map(|r| r.mask != [0, 0])
        .collect();
    // Keys in order: the /34 (not a leaf), its nested /64 (a leaf), the /33 (a leaf).
    assert_eq!(leaves, [false, true, true], "leaf marks of the rules");
    let src = |s: &str| udp_from(v6(s).into()).build();
    let cases = [
        case(
            "wide, first",
            src("2001:db8:8000::1"),
            XDP_PASS,
            Slot::new(wide, Reason::Pass),
        ),
        case(
            "wide, a new source",
            src("2001:db8:9234:5::1"),
            XDP_PASS,
            Slot::new(wide, Reason::Pass),
        ),
        case(
            "outer, outside the nested rule",
            src("2001:db8:4000:2::1"),
            XDP_PASS,
            Slot::new(outer, Reason::Pass),
        ),
        case(
            "the nested rule right after outer",
            src("2001:db8:4000:1::7"),
            XDP_PASS,
            Slot::new(internal, Reason::Allow),
        ),
        case(
            "outer again, a new source",
            src("2001:db8:4000:3::1"),
            XDP_PASS,
            Slot::new(outer, Reason::Pass),
        ),
        case(
            "wide again",
            src("2001:db8:a000::9"),
            XDP_PASS,
            Slot::new(wide, Reason::Pass),
        ),
        case(
            "no rule, right after a leaf",
            src("2001:db8:1::1"),
            XDP_PASS,
            Slot::new(default, Reason::Pass),
        ),
        case(
            "wide once more",
            src("2001:db8:8000:1::1"),
            XDP_PASS,
            Slot::new(wide, Reason::Pass),
        ),
    ];
    lab.table(&cases)?;

    // A reload nests an allow rule inside the cached leaf: its first source is allowed.
    let text = format!(
        "{LEAF_CONFIG}\n[[rules]]\ncidr = \"2001:db8:8000:77::/64\"\naction = \"allow\"\nclass = \"internal\"\n"
    );
    let config = traffic_daemon::config::Config::parse(std::path::Path::new("t.toml"), &text)?;
    let want = traffic_daemon::plan::desired(&config, &lab.slots, |_| 1.0);
    let old = lab.applied.take();
    lab.kernel
        .apply(&traffic_daemon::plan::diff(old.as_ref(), &want))?;
    lab.table(&[
        case(
            "nested after the reload",
            src("2001:db8:8000:77::1"),
            XDP_PASS,
            Slot::new(internal, Reason::Allow),
        ),
        case(
            "wide, no longer a leaf",
            src("2001:db8:8000:78::1"),
            XDP_PASS,
            Slot::new(wide, Reason::Pass),
        ),
    ])?;
    Ok(())
}
