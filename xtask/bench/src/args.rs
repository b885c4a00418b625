//! Flags, and how much each suite measures.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Suite {
    TestRun,
    Veth,
    Accuracy,
    /// trafficd itself, idle: CPU time and memory (`idle.rs`).
    Idle,
    /// Spoofed-flood cost against the tracked-source bitmap's age (`aging.rs`).
    Aging,
    /// Many rules and live sources; one source from every CPU (`scale.rs`).
    Scale,
    /// This tree's program against another build of it (`variant.rs`; only with
    /// `--variant OBJECT`, never in the default set).
    Variant,
}

impl Suite {
    pub(crate) const ALL: [Suite; 6] = [
        Suite::TestRun,
        Suite::Veth,
        Suite::Accuracy,
        Suite::Idle,
        Suite::Aging,
        Suite::Scale,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Suite::TestRun => "testrun",
            Suite::Veth => "veth",
            Suite::Accuracy => "accuracy",
            Suite::Idle => "idle",
            Suite::Aging => "aging",
            Suite::Scale => "scale",
            Suite::Variant => "variant",
        }
    }
}

/// How much to measure.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    pub(crate) reps: usize,
    /// Test-run repeats per variant and repetition.
    pub(crate) repeat: u32,
    /// Veth flood: frames and time bound per variant and repetition.
    pub(crate) veth_frames: u64,
    pub(crate) veth_time: Duration,
    /// Accuracy: flood duration and frame bound per repetition.
    pub(crate) accuracy_time: Duration,
    pub(crate) accuracy_frames: u64,
}

impl Plan {
    pub(crate) fn new(quick: bool, reps: Option<usize>) -> Plan {
        if quick {
            Plan {
                quick,
                reps: reps.unwrap_or(2),
                repeat: 100_000,
                veth_frames: 2_000_000,
                veth_time: Duration::from_secs(2),
                accuracy_time: Duration::from_secs(2),
                accuracy_frames: 40_000_000,
            }
        } else {
            Plan {
                quick,
                reps: reps.unwrap_or(5),
                repeat: 1_000_000,
                veth_frames: 6_000_000,
                veth_time: Duration::from_secs(3),
                accuracy_time: Duration::from_secs(10),
                accuracy_frames: 200_000_000,
            }
        }
    }
}

pub(crate) struct Args {
    pub(crate) plan: Plan,
    pub(crate) json_dir: PathBuf,
    pub(crate) suites: Vec<Suite>,
    /// The eBPF object of suite `variant`.
    pub(crate) variant: Option<PathBuf>,
}

fn usage() -> &'static str {
    "usage: traffic-bench [--quick] [--reps N] [--json-dir DIR] [--only testrun,veth,accuracy,idle,aging,scale,variant] [--variant OBJECT]"
}

pub(crate) fn parse_args() -> Result<Args> {
    let mut quick = false;
    let mut reps = None;
    let mut json_dir = None;
    let mut suites = None;
    let mut variant = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--reps" => {
                let n: usize = it.next().context(usage())?.parse().context("--reps N")?;
                ensure!(n >= 1, "--reps must be at least 1");
                reps = Some(n);
            }
            "--variant" => variant = Some(PathBuf::from(it.next().context(usage())?)),
            "--json-dir" => json_dir = Some(PathBuf::from(it.next().context(usage())?)),
            "--only" => {
                let list = it.next().context(usage())?;
                suites = Some(
                    list.split(',')
                        .map(|s| {
                            Suite::ALL
                                .into_iter()
                                .chain([Suite::Variant])
                                .find(|x| x.name() == s.trim())
                                .with_context(|| format!("unknown suite `{s}`; {}", usage()))
                        })
                        .collect::<Result<Vec<_>>>()?,
                );
            }
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`; {}", usage()),
        }
    }
    // `--variant` alone runs that suite only; the suite without an object is an error.
    let suites = match (suites, &variant) {
        (Some(s), None) if s.contains(&Suite::Variant) => {
            bail!("suite `variant` needs --variant OBJECT; {}", usage())
        }
        (Some(s), _) => s,
        (None, Some(_)) => vec![Suite::Variant],
        (None, None) => Suite::ALL.to_vec(),
    };
    let json_dir = match json_dir {
        Some(d) => d,
        None => target_dir()?.join("bench"),
    };
    Ok(Args {
        plan: Plan::new(quick, reps),
        json_dir,
        suites,
        variant,
    })
}

/// `CARGO_TARGET_DIR`, or the target directory this binary was built in
/// (`<target>/<profile>/traffic-bench`).
fn target_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("locate the bench binary")?;
    exe.ancestors()
        .nth(2)
        .map(Path::to_owned)
        .context("bench binary is not inside a cargo target directory")
}
