//! The flags of `trafficd`, in the library so `trafficctl manpages` can render trafficd(8)
//! from the same definition the daemon parses.

use std::path::PathBuf;

use clap::Parser;

use crate::{config, logging::LogFormat};

/// trafficd — the traffic daemon: enforces per-source rate limits with an XDP program,
/// tightens them under the node's CPU, memory and IO pressure, and runs circuit breakers
/// for the node's own upstream ports.
///
/// Normally started by systemd (trafficd.service). Logs go to stderr: the filter is
/// TRAFFIC_LOG (default `info`), the format --log-format or TRAFFIC_LOG_FORMAT. Exit
/// codes: 0 stopped cleanly, 1 runtime failure, 2 invalid configuration.
#[derive(Debug, Parser)]
#[command(name = "trafficd", version)]
pub struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate the configuration and exit (0 valid, 2 invalid).
    #[arg(long)]
    pub check: bool,
    /// Forget pinned state (buckets, counters, links) from earlier runs before starting.
    #[arg(long)]
    pub fresh: bool,
    /// Log format: text, or json for log shippers.
    #[arg(long, value_enum, env = crate::logging::FORMAT_VAR, default_value = "text")]
    pub log_format: LogFormat,
}
