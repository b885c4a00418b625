//! trafficctl: talk to trafficd's admin API, or check a config file offline.
//!
//! Human tables by default, `-o json` (or `--json`) for scripts: the choice is made once,
//! in [`Cli::json`], which every command reads. Exit codes (see [`crate::exit`]): 0 ok,
//! 1 failure, 2 usage or invalid config, 3 daemon unreachable.

use std::{io::Write, path::PathBuf};

use clap::{CommandFactory as _, Parser, Subcommand};
use serde::Serialize;

use crate::{
    api::{
        Applied, Client, ClientError, Message,
        render::{render_status, render_throttle},
        report,
    },
    config::{self, Config},
    exit,
    policy::throttle::ThrottleStatus,
};

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

/// `trafficctl watch` filters (all must match).
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Source address or CIDR (IPv4 or IPv6).
    #[arg(long, value_name = "CIDR")]
    pub source: Option<String>,
    /// Class name.
    #[arg(long, value_name = "NAME")]
    pub class: Option<String>,
    /// Verdict reason (pass, deny, packet_rate, byte_rate, gate, …).
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// Destination port.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Drops only (and would-drops in monitor mode); the program then sends nothing else.
    #[arg(long)]
    pub drops: bool,
}

#[derive(Debug, Subcommand)]
pub enum CircuitOp {
    /// Open the breaker of UPSTREAM until reset.
    Open {
        /// The upstream's `name` in the config (as in `chaos start --upstream NAME`), or its
        /// port when exactly one upstream listens on it. A name wins over a port.
        #[arg(value_parser = upstream_ref)]
        upstream: String,
    },
    /// Close the breaker of UPSTREAM, clearing its history.
    Reset {
        /// The upstream's `name` in the config, or its port when exactly one upstream
        /// listens on it. A name wins over a port.
        #[arg(value_parser = upstream_ref)]
        upstream: String,
    },
}

/// An upstream named on the command line: what a config name may hold (letters, digits,
/// `_`, `-`; a port is digits), so it goes into the admin URL as it is.
fn upstream_ref(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not an upstream name (letters, digits, `_` and `-`) or a port"
        ))
    }
}

#[derive(Debug, Subcommand)]
pub enum ChaosOp {
    /// Start fault injection on an upstream or a class.
    Start {
        /// Upstream name.
        #[arg(long, conflicts_with = "class", required_unless_present = "class")]
        upstream: Option<String>,
        /// Class name.
        #[arg(long)]
        class: Option<String>,
        /// Fraction of packets to drop (0–1).
        #[arg(long, default_value_t = 0.0)]
        drop: f64,
        /// Fraction of new TCP connections to reset (0–1).
        #[arg(long, default_value_t = 0.0)]
        reset: f64,
        /// How long, e.g. 30s (at most 1h).
        #[arg(long = "for", default_value = "30s")]
        duration: String,
    },
    /// Stop every fault injection now.
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum FeedsOp {
    /// Refresh one feed (or every feed) now instead of at its next refresh.
    Refresh {
        /// Feed name (default: all).
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourceOp {
    /// Forget the source's buckets: its next packet starts with a full bucket.
    Reset {
        /// IPv4 or IPv6 address.
        addr: std::net::IpAddr,
    },
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

fn print<T: Serialize>(
    out: &mut dyn Write,
    json: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) {
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        let _ = write!(out, "{}", human(value));
    }
}

fn client_failure(err: &mut dyn Write, e: &ClientError) -> u8 {
    let _ = writeln!(err, "trafficctl: {e}");
    if e.is_unreachable() {
        exit::UNREACHABLE
    } else {
        exit::FAILURE
    }
}

/// What `check-config` reports for a valid file.
#[derive(Serialize)]
struct ConfigSummary<'a> {
    valid: bool,
    path: &'a std::path::Path,
    classes: usize,
    /// Kernel rule entries (a CIDR list counts one per CIDR).
    rules: usize,
    /// Files merged from the include directory, in the order read.
    included: &'a [PathBuf],
}

fn check_config(
    file: Option<&PathBuf>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let path = file
        .cloned()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    match Config::load(&path) {
        Ok(c) => {
            let summary = ConfigSummary {
                valid: true,
                path: &path,
                classes: c.classes.len(),
                rules: c.rules.len(),
                included: &c.included,
            };
            print(out, json, &summary, |o| {
                let mut text = format!(
                    "{}: valid ({} classes, {} rules)\n",
                    o.path.display(),
                    o.classes,
                    o.rules
                );
                for f in o.included {
                    text.push_str(&format!("  included {}\n", f.display()));
                }
                text
            });
            exit::OK
        }
        Err(e) => {
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"valid": false, "path": e.path, "problems": e.problems})
                );
            }
            let _ = writeln!(err, "{e}");
            exit::USAGE
        }
    }
}

/// Print a document the daemon answered, or say why there is none.
fn show<T: Serialize>(
    r: Result<T, ClientError>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
    human: impl FnOnce(&T) -> String,
) -> u8 {
    match r {
        Ok(v) => {
            print(out, json, &v, human);
            exit::OK
        }
        Err(e) => client_failure(err, &e),
    }
}

/// The `/v1/suggest` request; a class name is sent only if it needs no escaping (class
/// names in the config are plain words).
fn suggest_path(class: Option<&str>, quantile: f64, headroom: f64) -> Result<String, String> {
    let mut path = format!("/v1/suggest?quantile={quantile}&headroom={headroom}");
    if let Some(c) = class {
        if c.is_empty()
            || !c
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
        {
            return Err(format!("{c:?} is not a class name"));
        }
        path.push_str("&class=");
        path.push_str(c);
    }
    Ok(path)
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

/// `trafficctl ban | unban | bans`. A refused request (bad input, no such ban) is a usage
/// error (exit 2).
fn bans(
    client: &Client,
    command: &Command,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    use crate::api::bans::{
        BanAnswer, BanRequest, BansReport, render_answer, render_bans, render_unban,
    };
    let now = crate::api::bans::unix_now_ms();
    let r = match command {
        Command::Ban {
            target,
            duration,
            reason,
            force,
            fleet,
        } => {
            let req = BanRequest {
                target: target.clone(),
                duration: duration.clone(),
                reason: reason.clone(),
                force: *force,
                fleet: *fleet,
            };
            client
                .post_json::<BanAnswer, _>("/v1/bans", &req)
                .map(|a| (render_answer(&a, now), serde_json::to_value(a)))
        }
        Command::Unban { target, fleet } => client
            .delete::<BanAnswer>(&format!(
                "/v1/bans?prefix={}{}",
                query_escape(target),
                if *fleet { "&fleet=true" } else { "" }
            ))
            .map(|a| (render_unban(&a, now), serde_json::to_value(a))),
        _ => client
            .get::<BansReport>("/v1/bans")
            .map(|r| (render_bans(&r), serde_json::to_value(r))),
    };
    match r {
        Ok((human, value)) => {
            if json {
                let v = value.unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                );
            } else {
                let _ = write!(out, "{human}");
            }
            exit::OK
        }
        Err(ClientError::Api { status, message }) if status == 400 || status == 404 => {
            let _ = writeln!(err, "trafficctl: {message}");
            exit::USAGE
        }
        Err(e) => client_failure(err, &e),
    }
}

/// Percent-encode what a query value cannot hold as is (an address or CIDR needs none of
/// it; anything else the daemon refuses with a clear message).
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'.' | b':' | b'/' | b'-' | b'_' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `trafficctl reload`: a refused config is a usage error (exit 2), with the daemon's
/// problems listed.
fn reload(client: &Client, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match client.post::<Applied>("/v1/reload") {
        Ok(a) => {
            print(out, json, &a, |a| {
                format!("reloaded: {} map entries written\n", a.writes)
            });
            exit::OK
        }
        // 403: not allowed to reload (the admin socket's control group), not a bad file.
        Err(ClientError::Api { status, message }) if status != 403 => {
            let _ = writeln!(
                err,
                "trafficctl: reload refused, the running configuration stays:\n{message}"
            );
            exit::USAGE
        }
        Err(e) => client_failure(err, &e),
    }
}

/// `trafficctl watch`: print each verdict as it comes. The daemon ending the stream is
/// "unreachable" (exit 3), like a daemon that is not there; a refused filter is a usage
/// error (exit 2).
fn watch(
    client: &Client,
    args: &WatchArgs,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let q = crate::api::watch::WatchQuery {
        source: args.source.clone(),
        class: args.class.clone(),
        reason: args.reason.clone(),
        port: args.port,
        drops: Some(args.drops),
    };
    if let Err(m) = crate::api::watch::WatchFilter::parse(&q) {
        let _ = writeln!(err, "trafficctl: {m}");
        return exit::USAGE;
    }
    if !json {
        let _ = write!(out, "{}", crate::api::watch::HEADER);
        let _ = out.flush();
    }
    // Between two heartbeats at most a few seconds pass: 30 s of silence is a hung daemon.
    let client = client
        .clone()
        .with_timeout(std::time::Duration::from_secs(30));
    let r = client.stream_lines(&format!("/v1/watch{}", q.to_query_string()), |line| {
        let text = if json {
            format!("{line}\n")
        } else {
            match serde_json::from_str::<crate::api::watch::VerdictLine>(line) {
                Ok(v) => v.render(),
                Err(_) => format!("{line}\n"),
            }
        };
        // A closed stdout (`| head`) ends the watch.
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_ok()
    });
    match r {
        Ok(true) => exit::OK,
        Ok(false) => {
            let _ = writeln!(
                err,
                "trafficctl: trafficd ended the watch (stopped or restarting)"
            );
            exit::UNREACHABLE
        }
        Err(ClientError::Api {
            status: 400,
            message,
        }) => {
            let _ = writeln!(err, "trafficctl: {message}");
            exit::USAGE
        }
        Err(e) => client_failure(err, &e),
    }
}

fn message(
    out: &mut dyn Write,
    err: &mut dyn Write,
    json: bool,
    r: Result<Message, ClientError>,
) -> u8 {
    match r {
        Ok(m) => {
            print(out, json, &m, |m| format!("{}\n", m.message));
            exit::OK
        }
        Err(ClientError::Api { status, message }) if status == 400 || status == 404 => {
            let _ = writeln!(err, "trafficctl: {message}");
            exit::USAGE
        }
        Err(e) => client_failure(err, &e),
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
