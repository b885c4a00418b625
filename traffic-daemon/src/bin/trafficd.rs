//! trafficd: the traffic daemon. Parses flags, sets up logging, maps errors to exit codes;
//! everything else is `traffic_daemon::serve::runtime::run`.
use std::process::ExitCode;

use clap::Parser;
use traffic_daemon::{
    config::Config,
    dataplane::{
        Dataplane,
        kernel::{Kernel, LoadOptions},
    },
    exit, logging,
    serve::{
        fdbudget,
        instance::{self, InstanceLock},
        runtime::{self, DaemonError},
    },
    trafficd_cli::Args,
};

/// Lock the pin directory (kept in `lock` for the life of the process), then load: nothing
/// is removed, loaded or written before the lock is ours (see `serve::instance`).
fn open_kernel(
    c: &Config,
    fresh: bool,
    lock: &mut Option<InstanceLock>,
) -> Result<Box<dyn Dataplane>, DaemonError> {
    *lock = Some(
        InstanceLock::acquire(&c.daemon.pin_dir).map_err(|e| DaemonError::Other(e.to_string()))?,
    );
    if fresh {
        instance::clear_pins(&c.daemon.pin_dir).map_err(|e| {
            DaemonError::Other(format!("remove {}: {e}", c.daemon.pin_dir.display()))
        })?;
    }
    let mut k = Kernel::open(&LoadOptions {
        pin_dir: c.daemon.pin_dir.clone(),
        max_sources: c.daemon.max_sources,
    })?;
    k.track_local_addresses()?;
    Ok(Box::new(k))
}

/// SIGTERM or SIGINT. The handlers are installed when this is called (not when the future
/// is first polled), so a signal that arrives while the daemon starts is not lost.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log_format);
    if args.check {
        return match Config::load(&args.config) {
            Ok(c) => {
                println!("{}: valid", args.config.display());
                for f in &c.included {
                    println!("  included {}", f.display());
                }
                ExitCode::from(exit::OK)
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(exit::USAGE)
            }
        };
    }
    // Before any thread exists, so every thread sees it (see serve::fdbudget).
    match fdbudget::raise_soft_limit() {
        Ok(soft) => tracing::debug!(soft, "RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trafficd: cannot start runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let fresh = args.fresh;
    let result = rt.block_on(async move {
        let shutdown = shutdown_signal()
            .map_err(|e| DaemonError::Other(format!("cannot handle signals: {e}")))?;
        let mut lock = None;
        runtime::run(args.config, |c| open_kernel(c, fresh, &mut lock), shutdown).await
    });
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(DaemonError::Config(e)) => {
            tracing::error!("invalid configuration:\n{e}");
            ExitCode::from(exit::USAGE)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
