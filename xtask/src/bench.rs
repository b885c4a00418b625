//! `cargo xtask bench`: the data-plane benchmark.
//!
//! The measuring lives in the `traffic-bench` crate (`xtask/bench`; it needs aya, which
//! xtask does not depend on); the generator programs are the `traffic-ebpf-bench` eBPF object
//! (`traffic-ebpf/bench`), which that crate builds and embeds; the peers' rule sets, the
//! flood namespaces and the statistics are in `traffic_loadgen::{peers, flood, stats}`. This
//! command builds and runs it (release) with the pinned toolchain, as root, then reads the
//! JSON it wrote back and prints the verdict on every target in one place.
//!
//! Suites (see `xtask/bench/src/main.rs` for how each figure is measured):
//! - `testrun`: program cost through BPF_PROG_TEST_RUN, against a bare XDP_DROP floor;
//! - `veth`: receive CPU per packet under a veth flood: no filter, XDP_DROP, traffic,
//!   an nftables meter, iptables hashlimit;
//! - `accuracy`: legitimate sources and the overflow bucket under a flood from 2²⁰
//!   spoofed sources;
//! - `idle`: the release trafficd with the shipped config, idle: CPU time and RSS, and RSS
//!   with 3,000 metrics connections held;
//! - `aging`: the spoofed-flood cost after 10⁶ and 10⁸ sources, tracked-source bitmap aged
//!   and not (issue 17 item 9);
//! - `scale`: known-source cost with 16,384 rules and 65,536 live sources, and one source
//!   hammered from every CPU (issue 16 item 2).
//!
//! Bounded: every flood is bounded in frames and seconds and runs inside namespaces the
//! run creates and deletes; a full run takes a few minutes once built, `--quick` well under
//! one.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::{toolchains::Toolchains, util};

/// The bench's suites, in the order it runs them (also the JSON file names).
const SUITES: [&str; 6] = ["testrun", "veth", "accuracy", "idle", "aging", "scale"];

/// What to run.
pub struct Options {
    /// A short smoke run: fewer repetitions and repeats, shorter floods.
    pub quick: bool,
    /// Only these suites (comma-separated).
    pub only: Option<String>,
    /// Repetitions per figure (default 5, `--quick` 2).
    pub reps: Option<usize>,
    /// Run only suite `variant`: this tree's program against this eBPF object (another
    /// build of it), interleaved.
    pub variant: Option<PathBuf>,
}

/// Build and run the benchmark; print the targets' verdicts from the JSON it wrote.
pub fn run(tc: &Toolchains, opts: &Options) -> Result<()> {
    if !util::is_root() {
        bail!(
            "the benchmark loads XDP programs, creates network namespaces and reads kernel \
             threads' CPU time: run `sudo cargo xtask bench`"
        );
    }
    let suites: Vec<&str> = match (&opts.only, &opts.variant) {
        (Some(_), Some(_)) => bail!("--variant runs its own suite only: drop --only"),
        (None, Some(_)) => vec!["variant"],
        (Some(list), None) => {
            let v: Vec<&str> = list.split(',').map(str::trim).collect();
            if let Some(bad) = v.iter().find(|s| !SUITES.contains(s)) {
                bail!("unknown suite `{bad}` (suites: {})", SUITES.join(", "));
            }
            v
        }
        (None, None) => SUITES.to_vec(),
    };
    if opts.reps == Some(0) {
        bail!("--reps must be at least 1");
    }
    let dir = json_dir();
    // Stale results must not pass for this run's.
    for s in &suites {
        let _ = std::fs::remove_file(dir.join(format!("{s}.json")));
    }
    if suites.contains(&"idle") {
        // The idle suite runs the release trafficd next to the bench binary.
        let mut b = util::cargo(tc);
        b.args([
            "build",
            "--release",
            "-p",
            "traffic-daemon",
            "--bin",
            "trafficd",
        ]);
        util::run(&mut b).context("building trafficd for the idle suite")?;
    }
    let mut c = util::cargo(tc);
    c.args(["run", "--release", "-p", "traffic-bench", "--"]);
    if opts.quick {
        c.arg("--quick");
    }
    if let Some(n) = opts.reps {
        c.args(["--reps", &n.to_string()]);
    }
    c.arg("--only").arg(suites.join(","));
    if let Some(object) = &opts.variant {
        let object = std::fs::canonicalize(object)
            .with_context(|| format!("the variant object {}", object.display()))?;
        c.arg("--variant").arg(object);
    }
    c.arg("--json-dir").arg(&dir);
    util::run(&mut c).context("the data-plane benchmark failed")?;

    println!("\n== bench: targets ==");
    let mut missed = 0;
    for s in &suites {
        let path = dir.join(format!("{s}.json"));
        let report = read_targets(&path)
            .with_context(|| format!("the benchmark wrote no {}", path.display()))?;
        for t in &report.targets {
            let verdict = match (t.met, t.met_every_rep) {
                (true, true) => "met",
                (true, false) => "met on the median (not every repetition)",
                (false, _) => {
                    missed += 1;
                    "MISSED"
                }
            };
            let median = t.median.map_or("-".to_owned(), figure);
            println!("{s:>9}: {verdict}: {} (median {median})", t.name);
        }
        println!("{s:>9}: {}", path.display());
    }
    if opts.quick {
        println!("(quick run: smoke figures only; judge targets on a full run)");
    }
    if missed > 0 {
        println!("{missed} target(s) missed; the figures are in the JSON files above");
    }
    Ok(())
}

/// A median as the verdict line shows it: three decimals below 10 (0.037 % of a core must
/// not print as 0.0), one above.
fn figure(m: f64) -> String {
    if m.abs() < 10.0 {
        format!("{m:.3}")
    } else {
        format!("{m:.1}")
    }
}

/// The part of a suite's JSON report (`traffic_loadgen::stats::BenchReport`) this command reads:
/// xtask builds on the machine's stable, so it does not link the load generator.
#[derive(Deserialize)]
struct Targets {
    targets: Vec<TargetVerdict>,
}

/// One target of a report: its name, median, and whether it was met.
#[derive(Deserialize)]
struct TargetVerdict {
    name: String,
    median: Option<f64>,
    met: bool,
    met_every_rep: bool,
}

fn read_targets(path: &std::path::Path) -> Result<Targets> {
    let text = std::fs::read_to_string(path)?;
    Ok(serde_json::from_str(&text)?)
}

/// `<target>/bench`, where the JSON files go.
fn json_dir() -> PathBuf {
    util::target_dir().join("bench")
}
