//! trafficctl: talk to trafficd's admin API, or check a config file offline.
//!
//! Human tables by default, `--json` for scripts. Exit codes (see [`crate::exit`]): 0 ok,
//! 1 failure, 2 usage or invalid config, 3 daemon unreachable.

use std::{io::Write, path::PathBuf};

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::{
    api::report::{self, CountersReport},
    api::{Applied, StatusReport},
    api::{Client, ClientError},
    config::{self, Config},
    exit,
};

/// Inspect and control trafficd.
#[derive(Debug, Parser)]
#[command(name = "trafficctl", version, about)]
pub struct Cli {
    /// Admin socket of the daemon.
    #[arg(
        long,
        env = "TRAFFIC_ADMIN_SOCKET",
        default_value = "/run/traffic/admin.sock",
        global = true
    )]
    pub socket: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Daemon, interfaces, classes and the last reload.
    Status,
    /// Packets and bytes per class and verdict reason.
    Counters,
    /// Validate a config file without touching the system (default: /etc/traffic/traffic.toml).
    CheckConfig {
        /// File to check.
        file: Option<PathBuf>,
    },
    /// Ask the daemon to re-read its config file.
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
}

#[derive(Debug, Subcommand)]
pub enum CircuitOp {
    /// Open the breaker of the upstream on PORT until reset.
    Open { port: u16 },
    /// Close the breaker of the upstream on PORT, clearing its history.
    Reset { port: u16 },
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
        Ok(c) => c,
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

/// Run a parsed command.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let client = Client::new(&cli.socket);
    match &cli.command {
        Command::CheckConfig { file } => {
            let path = file
                .clone()
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
            match Config::load(&path) {
                Ok(c) => {
                    #[derive(Serialize)]
                    struct Ok<'a> {
                        valid: bool,
                        path: &'a std::path::Path,
                        classes: usize,
                        rules: usize,
                    }
                    let ok = Ok {
                        valid: true,
                        path: &path,
                        classes: c.classes.len(),
                        rules: c.rules.len(),
                    };
                    print(out, cli.json, &ok, |o| {
                        format!(
                            "{}: valid ({} classes, {} rules)\n",
                            o.path.display(),
                            o.classes,
                            o.rules
                        )
                    });
                    exit::OK
                }
                Err(e) => {
                    if cli.json {
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
        Command::Status => match client.get::<StatusReport>("/v1/status") {
            Ok(s) => {
                print(out, cli.json, &s, render_status);
                exit::OK
            }
            Err(e) => client_failure(err, &e),
        },
        Command::Counters => match client.get::<CountersReport>("/v1/counters") {
            Ok(c) => {
                print(out, cli.json, &c, report::render_counters);
                exit::OK
            }
            Err(e) => client_failure(err, &e),
        },
        Command::Reload => match client.post::<Applied>("/v1/reload") {
            Ok(a) => {
                print(out, cli.json, &a, |a| {
                    format!("reloaded: {} map entries written\n", a.writes)
                });
                exit::OK
            }
            Err(ClientError::Api { message, .. }) => {
                let _ = writeln!(
                    err,
                    "trafficctl: reload refused, the running configuration stays:\n{message}"
                );
                exit::USAGE
            }
            Err(e) => client_failure(err, &e),
        },
        Command::Limits => match client.get::<report::LimitsReport>("/v1/limits") {
            Ok(l) => {
                print(out, cli.json, &l, report::render_limits);
                exit::OK
            }
            Err(e) => client_failure(err, &e),
        },
        Command::Sources { top } => {
            match client.get::<report::SourcesReport>(&format!("/v1/sources?top={top}")) {
                Ok(s) => {
                    print(out, cli.json, &s, report::render_sources);
                    exit::OK
                }
                Err(e) => client_failure(err, &e),
            }
        }
        Command::Circuits => match client.get::<crate::upstream::CircuitsReport>("/v1/circuits") {
            Ok(c) => {
                print(out, cli.json, &c, crate::upstream::render_circuits);
                exit::OK
            }
            Err(e) => client_failure(err, &e),
        },
        Command::Circuit { op } => {
            let path = match op {
                CircuitOp::Open { port } => format!("/v1/circuits/{port}/open"),
                CircuitOp::Reset { port } => format!("/v1/circuits/{port}/reset"),
            };
            message(
                out,
                err,
                cli.json,
                client.post::<crate::api::Message>(&path),
            )
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
            message(
                out,
                err,
                cli.json,
                client.post_json::<crate::api::Message, _>("/v1/chaos", &req),
            )
        }
        Command::Chaos { op: ChaosOp::Stop } => message(
            out,
            err,
            cli.json,
            client.delete::<crate::api::Message>("/v1/chaos"),
        ),
        Command::Throttle => {
            match client.get::<crate::policy::throttle::ThrottleStatus>("/v1/throttle") {
                Ok(t) => {
                    print(out, cli.json, &t, render_throttle);
                    exit::OK
                }
                Err(e) => client_failure(err, &e),
            }
        }
        Command::Source {
            op: SourceOp::Reset { addr },
        } => match client.post::<crate::api::ResetAnswer>(&format!("/v1/sources/{addr}/reset")) {
            Ok(a) => {
                print(out, cli.json, &a, |a| {
                    format!("{addr}: {} bucket(s) removed\n", a.removed)
                });
                exit::OK
            }
            Err(e) => client_failure(err, &e),
        },
    }
}

fn message(
    out: &mut dyn Write,
    err: &mut dyn Write,
    json: bool,
    r: Result<crate::api::Message, ClientError>,
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

/// The throttle section of `trafficctl status` and `trafficctl throttle`.
pub fn render_throttle(t: &crate::policy::throttle::ThrottleStatus) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "throttle level: {} for {:.0}s (rate ×{:.2}, {} transitions){}",
        t.level,
        t.time_in_level_seconds,
        t.multiplier,
        t.transitions,
        t.max_connections
            .map(|m| format!(", at most {m} connections per upstream"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "{:<8} {:>8} {:>9}  {:<28} RELEASE BELOW",
        "RESOURCE", "READING", "REACHES", "THRESHOLDS (low/med/high/crit)"
    );
    for r in &t.resources {
        let _ = writeln!(
            o,
            "{:<8} {:>8} {:>9}  {:<28} {}",
            r.resource.as_str(),
            r.ratio.map_or("-".to_owned(), |v| format!("{v:.3}")),
            r.reaches.as_str(),
            format!(
                "{:.2}/{:.2}/{:.2}/{:.2}",
                r.thresholds.low, r.thresholds.medium, r.thresholds.high, r.thresholds.critical
            ),
            r.release_below
                .map_or("-".to_owned(), |v| format!("{v:.2}")),
        );
    }
    o
}

/// The `trafficctl status` text.
pub fn render_status(s: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "trafficd {} (ABI {}), pid {}, up {}s",
        s.version, s.abi_version, s.pid, s.uptime_seconds
    );
    let _ = writeln!(o, "config:     {}", s.config_path.display());
    let _ = writeln!(
        o,
        "mode:       {:?}, on exit: {:?}{}",
        s.mode,
        s.on_exit,
        if s.adopted_pinned_state {
            ", state adopted from pins"
        } else {
            ""
        }
    );
    let ifaces: Vec<String> = s
        .interfaces
        .iter()
        .map(|i| format!("{} ({:?})", i.name, i.mode))
        .collect();
    let _ = writeln!(o, "interfaces: {}", ifaces.join(", "));
    let _ = writeln!(o, "rules:      {}", s.rules);
    let _ = writeln!(
        o,
        "reloads:    {} ok, {} failed{}",
        s.reload.succeeded,
        s.reload.failed,
        s.reload
            .last_error
            .as_ref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    );
    for c in &s.chaos {
        let _ = writeln!(
            o,
            "CHAOS:      {} drop {:.0}%, reset {:.0}%, expires in {:.0}s",
            c.target,
            c.drop_ratio * 100.0,
            c.reset_ratio * 100.0,
            c.expires_in_seconds
        );
    }
    if let Some(t) = &s.throttle {
        let _ = writeln!(o);
        o.push_str(&render_throttle(t));
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<14} {:>4} {:<8} {:<9} LIMITED",
        "CLASS", "SLOT", "MODE", "PRIORITY"
    );
    for c in &s.classes {
        let _ = writeln!(
            o,
            "{:<14} {:>4} {:<8} {:<9} {}",
            c.name,
            c.slot,
            format!("{:?}", c.mode).to_lowercase(),
            format!("{:?}", c.priority).to_lowercase(),
            if c.limited { "yes" } else { "no" }
        );
    }
    o
}
