//! The argument groups of `trafficctl`'s subcommands (see [`super::Command`]).

use clap::Subcommand;

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
