//! trafficctl: talk to trafficd's admin API, or check a config file offline.
//!
//! Human tables by default, `-o json` (or `--json`) for scripts: the choice is made once,
//! in [`Cli::json`], which every command reads. Exit codes (see [`crate::exit`]): 0 ok,
//! 1 failure, 2 usage or invalid config, 3 daemon unreachable.

use std::{io::Write, path::PathBuf};

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::{
    api::{
        Client,
        render::{render_status, render_throttle},
        report,
    },
    exit,
    policy::throttle::ThrottleStatus,
};

mod args;
mod commands;

pub use args::{ChaosOp, CircuitOp, FeedsOp, SourceOp, WatchArgs};
use commands::{bans, check_config, message, reload, show, suggest_path, watch};

/// trafficctl — inspect and control trafficd, the traffic daemon, through its admin socket;
/// check a config file offline.
///
/// Exit codes: 0 ok, 1 failure, 2 usage error, invalid config or refused reload, 3 daemon
/// unreachable (not running, or no permission on the socket: join the `traffic` group).
#[derive(Debug, Parser)]
#[command(name = "trafficctl", version)]
pub struct Cli {
    /// Admin socket of the daemon.
    #[arg(
        long,
        env = "TRAFFIC_ADMIN_SOCKET",
        default_value = "/run/traffic/admin.sock",
        global = true
    )]
    pub socket: PathBuf,
    /// Output format: `table` (for people, the default) or `json` (for scripts; one
    /// document per command, stable field names).
    #[arg(short = 'o', long, value_enum, global = true, value_name = "FORMAT")]
    pub output: Option<Output>,
    /// Same as `-o json` (kept for existing scripts; refused with `-o table`).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `-o FORMAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// JSON documents.
    Json,
}

impl Cli {
    /// Whether to print JSON: `-o json` or `--json`. The one place commands learn the
    /// output format.
    pub fn json(&self) -> bool {
        self.json || self.output == Some(Output::Json)
    }

    /// Fold `-o json` into the `json` field as well, so code that reads the field directly
    /// sees the same choice as [`Cli::json`].
    fn resolved(mut self) -> Self {
        self.json = self.json();
        self
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Daemon, interfaces, classes and the last reload.
    Status,
    /// Packets and bytes per class and verdict reason.
    Counters,
    /// Validate a config file and its include directory (`conf.d/*.toml` next to it)
    /// without touching the system (default: /etc/traffic/traffic.toml).
    CheckConfig {
        /// File to check.
        file: Option<PathBuf>,
    },
    /// Ask the daemon to re-read its config file and include directory.
    Reload,
    /// Effective limits per class (after priority and throttle), tracked sources.
    Limits,
    /// The busiest tracked sources.
    Sources {
        /// How many.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Operations on one source.
    Source {
        #[command(subcommand)]
        op: SourceOp,
    },
    /// Breakers, probes and bulkheads of the upstreams.
    Circuits,
    /// Force a breaker open, or reset it.
    Circuit {
        #[command(subcommand)]
        op: CircuitOp,
    },
    /// Fault injection (time-boxed: it always expires by itself).
    Chaos {
        #[command(subcommand)]
        op: ChaosOp,
    },
    /// Throttle level and each resource's reading against its thresholds.
    Throttle,
    /// Limits suggested from the rates observed so far (a TOML snippet to paste): per class
    /// a rate and burst at a quantile of the sources' rates times a headroom, and throttle
    /// thresholds above the pressure readings seen.
    Suggest {
        /// Only this class.
        #[arg(long)]
        class: Option<String>,
        /// Quantile of the sources' rates the limits sit on (0.5–1).
        #[arg(long, default_value_t = 0.999)]
        quantile: f64,
        /// Factor above that quantile (1–100).
        #[arg(long, default_value_t = 2.0)]
        headroom: f64,
    },
    /// Ban an address or CIDR until the ban expires (enforced in the kernel, even while
    /// trafficd is down; kept across restarts, reloads and reboots).
    Ban {
        /// IPv4 or IPv6 address, or CIDR (at most a /8 or a /16).
        target: String,
        /// How long, e.g. 90s, 30m, 1h, 7d (1s to 365d).
        #[arg(long = "for")]
        duration: String,
        /// Why (letters, digits, spaces and -_.,:;/()#@+=; at most 128 bytes).
        #[arg(long)]
        reason: Option<String>,
        /// Ban even sources that an `allow` rule lets through.
        #[arg(long)]
        force: bool,
        /// Ban on every node of the fleet (`[fleet]`), with the same expiry; the other
        /// nodes' allow rules still win there.
        #[arg(long)]
        fleet: bool,
    },
    /// Lift the ban on exactly this address or CIDR.
    Unban {
        /// IPv4 or IPv6 address, or CIDR, as banned.
        target: String,
        /// Lift it on every node of the fleet too.
        #[arg(long)]
        fleet: bool,
    },
    /// The bans in force, with the time each has left.
    Bans,
    /// Blocklist feeds: prefixes in force, last success and error, next refresh.
    Feeds {
        #[command(subcommand)]
        op: Option<FeedsOp>,
    },
    /// Live verdicts from the kernel, one line each (sampled: at most the program's budget
    /// per CPU per second); with --json one JSON object per line. Until Ctrl-C or until the
    /// daemon stops (exit 3).
    Watch(WatchArgs),
    /// The fleet (`[fleet]`): the nodes with their last heartbeat, version, throttle level,
    /// open breakers and bans, and the heaviest sources across the fleet.
    Fleet,
    /// Print the shell completion script for SHELL (bash, zsh, fish, …) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: crate::manual::Shell,
    },
    /// Write the man pages trafficd.8 and trafficctl.8 into DIR (used by the package build).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
}

/// Parse arguments and run; returns the exit code.
pub fn main_with(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) if c.json && c.output == Some(Output::Table) => {
            let _ = writeln!(
                err,
                "trafficctl: --json contradicts -o table; use one of them"
            );
            return exit::USAGE;
        }
        Ok(c) => c.resolved(),
        Err(e) => {
            if e.use_stderr() {
                let _ = write!(err, "{e}");
                return exit::USAGE;
            }
            let _ = write!(out, "{e}");
            return exit::OK;
        }
    };
    run(&cli, out, err)
}

/// Run a parsed command.
///
/// About 100 lines: one `match` arm per command, each a single call (a request and its
/// renderer); splitting it would only scatter the command table.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let client = Client::new(&cli.socket);
    let json = cli.json();
    match &cli.command {
        Command::CheckConfig { file } => check_config(file.as_ref(), json, out, err),
        Command::Status => show(client.get("/v1/status"), json, out, err, render_status),
        Command::Counters => show(
            client.get("/v1/counters"),
            json,
            out,
            err,
            report::render_counters,
        ),
        Command::Reload => reload(&client, json, out, err),
        Command::Limits => show(
            client.get("/v1/limits"),
            json,
            out,
            err,
            report::render_limits,
        ),
        Command::Sources { top } => show(
            client.get(&format!("/v1/sources?top={top}")),
            json,
            out,
            err,
            report::render_sources,
        ),
        Command::Circuits => show(
            client.get("/v1/circuits"),
            json,
            out,
            err,
            crate::api::render::render_circuits,
        ),
        Command::Circuit { op } => {
            let path = match op {
                CircuitOp::Open { upstream } => format!("/v1/circuits/{upstream}/open"),
                CircuitOp::Reset { upstream } => format!("/v1/circuits/{upstream}/reset"),
            };
            message(out, err, json, client.post(&path))
        }
        Command::Chaos {
            op:
                ChaosOp::Start {
                    upstream,
                    class,
                    drop,
                    reset,
                    duration,
                },
        } => {
            let req = crate::api::ChaosRequest {
                upstream: upstream.clone(),
                class: class.clone(),
                drop: *drop,
                reset: *reset,
                duration: duration.clone(),
            };
            message(out, err, json, client.post_json("/v1/chaos", &req))
        }
        Command::Chaos { op: ChaosOp::Stop } => message(out, err, json, client.delete("/v1/chaos")),
        Command::Fleet => show(
            client.get::<crate::api::fleet::FleetSnapshot>("/v1/fleet"),
            json,
            out,
            err,
            |s| crate::api::fleet::render_fleet(s, crate::api::bans::unix_now_ms()),
        ),
        Command::Throttle => show(
            client.get::<ThrottleStatus>("/v1/throttle"),
            json,
            out,
            err,
            render_throttle,
        ),
        Command::Suggest {
            class,
            quantile,
            headroom,
        } => match suggest_path(class.as_deref(), *quantile, *headroom) {
            Ok(path) => show(
                client.get::<crate::policy::baseline::suggest::SuggestReport>(&path),
                json,
                out,
                err,
                crate::policy::baseline::suggest::render_toml,
            ),
            Err(m) => {
                let _ = writeln!(err, "trafficctl: {m}");
                exit::USAGE
            }
        },
        Command::Feeds { op: None } => show(
            client.get("/v1/feeds"),
            json,
            out,
            err,
            crate::feeds::render::render_feeds,
        ),
        Command::Feeds {
            op: Some(FeedsOp::Refresh { name }),
        } => {
            let path = match name {
                Some(n) => format!("/v1/feeds/refresh?name={n}"),
                None => "/v1/feeds/refresh".to_owned(),
            };
            message(out, err, json, client.post(&path))
        }
        Command::Watch(args) => watch(&client, args, json, out, err),
        Command::Completions { shell } => {
            match crate::manual::write_completions(*shell, Cli::command(), out) {
                Ok(()) => exit::OK,
                Err(_) => exit::FAILURE,
            }
        }
        Command::Manpages { dir } => match crate::manual::write_man_pages(
            dir,
            [crate::trafficd_cli::Args::command(), Cli::command()],
        ) {
            Ok(files) => {
                for f in files {
                    let _ = writeln!(out, "{}", f.display());
                }
                exit::OK
            }
            Err(e) => {
                let _ = writeln!(err, "trafficctl: write man pages to {}: {e}", dir.display());
                exit::FAILURE
            }
        },
        Command::Ban { .. } | Command::Unban { .. } | Command::Bans => {
            bans(&client, &cli.command, json, out, err)
        }
        Command::Source {
            op: SourceOp::Reset { addr },
        } => show(
            client.post::<crate::api::ResetAnswer>(&format!("/v1/sources/{addr}/reset")),
            json,
            out,
            err,
            |a| format!("{addr}: {} bucket(s) removed\n", a.removed),
        ),
    }
}

#[cfg(test)]
mod manual_tests {
    use clap::CommandFactory as _;

    use crate::{
        cli::Cli,
        manual::{Shell, write_completions, write_man_pages},
        trafficd_cli::Args,
    };

    #[test]
    fn man_pages_name_their_commands() {
        let dir = std::env::temp_dir().join(format!("trf-man-{}", std::process::id()));
        let files = write_man_pages(&dir, [Args::command(), Cli::command()]).unwrap();
        assert_eq!(files.len(), 2);
        let d = std::fs::read_to_string(dir.join("trafficd.8")).unwrap();
        assert!(d.contains(".TH trafficd 8"), "{d}");
        assert!(d.contains("\\-\\-log\\-format"), "{d}");
        let c = std::fs::read_to_string(dir.join("trafficctl.8")).unwrap();
        assert!(c.contains(".TH trafficctl 8"), "{c}");
        assert!(c.contains("check\\-config"), "{c}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Fails on the main before issue 13: there was no `-o`. Commands that read the `json`
    /// field (rather than [`Cli::json`]) see `-o json` too.
    #[test]
    fn output_format_is_chosen_once_whichever_flag_names_it() {
        use clap::Parser as _;
        for (args, json) in [
            (&["trafficctl", "status"][..], false),
            (&["trafficctl", "-o", "table", "status"], false),
            (&["trafficctl", "status", "-o", "json"], true),
            (&["trafficctl", "--output=json", "counters"], true),
            (&["trafficctl", "--json", "limits"], true),
        ] {
            let cli = Cli::try_parse_from(args).unwrap().resolved();
            assert_eq!((cli.json(), cli.json), (json, json), "{args:?}");
        }
    }

    #[test]
    fn completions_for_every_shell() {
        for (shell, marker) in [
            (Shell::Bash, "complete -F"),
            (Shell::Zsh, "#compdef trafficctl"),
            (Shell::Fish, "complete -c trafficctl"),
        ] {
            let mut out = Vec::new();
            write_completions(shell, Cli::command(), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(marker), "{shell}: {text}");
            assert!(text.contains("check-config"), "{shell}");
        }
    }
}
