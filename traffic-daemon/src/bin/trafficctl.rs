//! trafficctl: see `traffic_daemon::cli`.
use std::process::ExitCode;

fn main() -> ExitCode {
    let code = traffic_daemon::cli::main_with(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    ExitCode::from(code)
}
