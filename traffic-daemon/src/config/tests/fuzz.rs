//! Property test over mutations of the shipped files (issue 12, item 8): whatever a line
//! becomes, the loader answers with located problems and never panics.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use crate::config::Config;

const SHIPPED: &str = include_str!("../../../../config/traffic.toml");
const DEMO: &str = include_str!("../../../../config/demo.toml");

/// Values that once broke a loader: overflowing, negative, fractional, non-finite, of the
/// wrong type, empty.
const HOSTILE: &[&str] = &[
    "\"100000000000000000000s\"",
    "\"99999999999999999999999999999999d\"",
    "\"18446744073709551616ms\"",
    "\"1e400s\"",
    "\"-1s\"",
    "\"0s\"",
    "\"0.0000001ms\"",
    "\"NaNs\"",
    "\"inf\"",
    "\"\"",
    "\"..\"",
    "\"/sys/fs/bpf/../..\"",
    "\"0777\"",
    "\"99999999999999999999GiB\"",
    "-1",
    "0",
    "9223372036854775807",
    "-9223372036854775808",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "0.5",
    "true",
    "[]",
    "{}",
    "[1, \"x\"]",
    "{ rate = 1e300, per = \"1ms\" }",
    "{ rate = 1, per = \"100000000000000000000s\", burst = 1e300 }",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// Replace the value of the n-th `key = value` line.
    Value(usize, usize),
    /// Drop the n-th line.
    Drop(usize),
    /// Write the n-th line twice.
    Duplicate(usize),
    /// Keep only the first n bytes (at a char boundary).
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0..HOSTILE.len()).prop_map(|(l, v)| Mutation::Value(l, v)),
        1 => any::<usize>().prop_map(Mutation::Drop),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let assignments: Vec<usize> = (0..lines.len())
        .filter(|&i| !lines[i].trim_start().starts_with('#') && lines[i].contains('='))
        .collect();
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    match *m {
        Mutation::Value(n, v) if !assignments.is_empty() => {
            let i = assignments[n % assignments.len()];
            let key = lines[i].split('=').next().unwrap_or("");
            out[i] = format!("{key}= {}", HOSTILE[v]);
        }
        Mutation::Drop(n) => {
            out.remove(n % lines.len());
        }
        Mutation::Duplicate(n) => {
            let i = n % lines.len();
            out.insert(i, lines[i].to_owned());
        }
        Mutation::Truncate(n) => {
            let mut cut = n % text.len();
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return text[..cut].to_owned();
        }
        Mutation::Value(..) => {}
    }
    out.join("\n") + "\n"
}

proptest! {
    // A fixed number of cases and no persistence file: fast (well under 10 s) and the
    // same work on every run.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x7aff_1c00),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_shipped_files_never_panic_and_every_problem_is_located(
        demo in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut text = if demo { DEMO } else { SHIPPED }.to_owned();
        for m in &mutations {
            text = apply(&text, m);
        }
        if let Err(e) = Config::parse(Path::new("t.toml"), &text) {
            prop_assert!(!e.problems.is_empty());
            for p in &e.problems {
                prop_assert!(p.line > 0, "no line: {p:?}\n--- text ---\n{text}");
                prop_assert!(!p.key.is_empty(), "no key: {p:?}\n--- text ---\n{text}");
            }
        }
    }
}

/// Truncations of both shipped files (a file cut short by a full disk or an editor crash):
/// every cut just before or after a character that carries structure, and every 16th byte
/// between. Each problem is located and names a key.
#[test]
fn every_truncation_of_the_shipped_files_is_located() {
    for text in [SHIPPED, DEMO] {
        let structural = |c: usize| {
            let near = |i: usize| text.as_bytes().get(i).copied().unwrap_or(b'\n');
            let is = |b: u8| b"[]={}\",\n#.".contains(&b);
            c.is_multiple_of(16) || is(near(c)) || c.checked_sub(1).is_some_and(|p| is(near(p)))
        };
        for cut in (0..text.len()).filter(|&c| text.is_char_boundary(c) && structural(c)) {
            let cut_text = &text[..cut];
            if let Err(e) = Config::parse(Path::new("t.toml"), cut_text) {
                assert!(!e.problems.is_empty());
                for p in &e.problems {
                    assert!(p.line > 0, "cut at {cut}: no line: {p:?}");
                    assert!(
                        !p.key.is_empty(),
                        "cut at {cut}: no key: {p:?}\n--- tail ---\n{}",
                        &cut_text[cut_text.len().saturating_sub(120)..]
                    );
                }
            }
        }
    }
}
