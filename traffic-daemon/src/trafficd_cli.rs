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
    /// Forget pinned state (buckets, counters, links) from earlier runs before starting;
    /// refused, like any start, while another trafficd holds the pin directory.
    #[arg(long)]
    pub fresh: bool,
    /// Log format: text, or json for log shippers.
    #[arg(long, value_enum, env = crate::logging::FORMAT_VAR, default_value = "text")]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use crate::config::{Mode, OnExit, Priority};

    /// Each binary's --help says what it is (not the crate's description).
    #[test]
    fn help_describes_each_binary() {
        let d = super::Args::command().render_help().to_string();
        assert!(d.starts_with("trafficd — the traffic daemon"), "{d}");
        assert!(d.contains("TRAFFIC_LOG"), "{d}");
        let c = crate::cli::Cli::command().render_help().to_string();
        assert!(
            c.starts_with("trafficctl — inspect and control trafficd"),
            "{c}"
        );
        assert!(c.contains("completions"), "{c}");
        assert!(
            !c.contains("manpages"),
            "the package-build command is hidden: {c}"
        );
    }

    /// `trafficctl status` prints the words of the config file.
    #[test]
    fn status_uses_config_words() {
        use crate::api::render::config_word;
        assert_eq!(config_word(&Mode::Enforce), "enforce");
        assert_eq!(config_word(&Mode::Monitor), "monitor");
        assert_eq!(config_word(&OnExit::Detach), "detach");
        assert_eq!(config_word(&OnExit::Keep), "keep");
        assert_eq!(config_word(&Priority::Critical), "critical");
    }
}
