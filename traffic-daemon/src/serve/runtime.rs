//! [`run`]: the event loop around the engine (signals, admin API, metrics, periodic
//! summary, pressure, control tick, probes).

use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use super::{
    Shared, admin,
    fdbudget::{self, Budget},
    listener::Limits,
    metrics, notify,
};
use crate::{
    config::{Config, ConfigError},
    dataplane::{Dataplane, DataplaneError},
    engine::{Core, EngineError},
};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("admin socket {path}: {source}")]
    Admin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl From<EngineError> for DaemonError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Config(e) => Self::Config(e),
            EngineError::Dataplane(e) => Self::Dataplane(e),
        }
    }
}

/// Run the daemon until `shutdown` resolves. `make_dataplane` opens the real (or fake)
/// dataplane once the config is known.
///
/// About 100 lines: start-up in order (config, dataplane, attach, listeners, readiness),
/// the one `select!` loop, and shutdown; each branch is one call into the engine.
pub async fn run<F>(
    config_path: PathBuf,
    make_dataplane: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError>
where
    F: FnOnce(&Config) -> Result<Box<dyn Dataplane>, DaemonError>,
{
    let config = Config::load(&config_path)?;
    let dp = make_dataplane(&config)?;
    let mut core = Core::new(config, dp)?;
    let bans_file = core.config.bans.state_file.clone();
    if let Err(e) = core.open_bans(&bans_file) {
        // Logged, not fatal: the pinned bans stay enforced by the kernel.
        tracing::error!(error = %e, "restoring the bans failed");
    }
    core.attach_all()?;
    // `[fleet]`: settings resolved (credentials read) before anything is served.
    let fleet = match &core.config.fleet {
        Some(f) => Some(super::fleet::Settings::resolve(f).map_err(DaemonError::Other)?),
        None => None,
    };
    let fleet = fleet.map(|s| {
        let (tx, rx, snap) = super::fleet::channel(&s);
        core.fleet = Some(snap.clone());
        (tx, (s, rx, snap))
    });
    let (fleet_tx, fleet_start) = fleet.unzip();
    let admin_cfg = core.config.admin.clone();
    let metrics_addr = core.config.metrics.listen;
    let mut periodic = Periodic::new(&core.config);
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        config_path,
        listeners: super::Listeners::default(),
        fleet: fleet_tx,
    });
    let budget = listener_budget();
    let watch_task = {
        let mut core = shared.lock();
        core.watch.set_max(super::watch::max_watchers(budget.admin));
        core.dp
            .take_watch_ring()
            .map(|ring| tokio::spawn(crate::watch::read(ring, core.watch.clone())))
    };
    let sockets = super::sockets::SocketWatch::start()
        .map_err(|e| DaemonError::Other(format!("cannot start the sock_diag thread: {e}")))?;

    // Before anything can report readiness: SIGHUP's default action would kill us.
    let mut hup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Other(e.to_string()))?;
    let admin_listener = admin::bind(&admin_cfg).map_err(|source| DaemonError::Admin {
        path: admin_cfg.socket.clone(),
        source,
    })?;
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        shared.clone(),
        Limits::with_cap(budget.admin),
    ));
    let metrics_task = match metrics_addr {
        Some(addr) => {
            let l = metrics::bind(addr).await.map_err(|e| {
                // Stops the daemon before READY: see `metrics::bind_failure`.
                DaemonError::Other(metrics::bind_failure(addr, &shared.config_path, &e))
            })?;
            info!(%addr, "metrics listening");
            Some(tokio::spawn(metrics::serve(
                l,
                shared.clone(),
                Limits::with_cap(budget.metrics),
            )))
        }
        None => None,
    };
    // Interface hot-plug: re-attach when an interface of the config returns.
    let links_task = tokio::spawn(super::links::watch(shared.clone()));
    let baseline_task = tokio::spawn(baseline(shared.clone()));
    let offenders_task = tokio::spawn(super::bans::offenders(shared.clone()));
    let feeds_task = tokio::spawn(crate::feeds::task::run(shared.clone()));
    let fleet_task = fleet_start
        .map(|(s, rx, snap)| tokio::spawn(super::fleet::run(s, shared.clone(), rx, snap)));
    notify::ready();
    info!(socket = %admin_cfg.socket.display(), "trafficd ready");

    periodic.summary.tick().await;
    let watchdog = notify::watchdog_interval();
    let mut watchdog_tick =
        tokio::time::interval(watchdog.unwrap_or(std::time::Duration::from_secs(3600)));
    // The control loop: breakers, passive signals, bulkheads and chaos, written to the maps.
    // The first tick at once: it takes the egress counters' first reading, the baseline of
    // the passive signal, before any client's refusal can be folded into it.
    let mut control = tokio::time::interval(shared.lock().control_period());
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (probe_tx, mut probe_rx) =
        tokio::sync::mpsc::channel::<(String, crate::policy::upstream::ProbeResult)>(64);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hup.recv() => {
                let _ = shared.reload();
            }
            _ = periodic.summary.tick() => shared.lock().log_summary(),
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify::watchdog(),
            _ = periodic.pressure.tick() => {
                if let Err(e) = shared.lock().pressure_tick() {
                    warn!(error = %e, "applying the throttle level failed");
                }
            }
            _ = control.tick() => {
                let (due, period) = {
                    let mut core = shared.lock();
                    sockets.want(core.socket_demand());
                    if let Err(e) = core.control_tick(sockets.latest().as_deref()) {
                        warn!(error = %e, "control tick failed");
                    }
                    if let Err(e) = core.sync_watch() {
                        warn!(error = %e, "setting the watch flags failed");
                    }
                    // A reload (SIGHUP or the admin API) may have changed the periods.
                    periodic.retune(&core.config);
                    (core.due_probes(), core.control_period())
                };
                // Upstreams or chaos came or went (a reload, the admin API).
                if control.period() != period {
                    control = control_interval(period);
                }
                for job in due {
                    let tx = probe_tx.clone();
                    tokio::spawn(async move {
                        let r = super::probe::probe(job.kind, job.addr, &job.path, job.timeout).await;
                        let _ = tx.send((job.upstream, r)).await;
                    });
                }
            }
            Some((name, r)) = probe_rx.recv() => {
                let mut core = shared.lock();
                core.probe_done(&name, r);
                // Apply a transition the probe caused right away, not at the next tick.
                if let Err(e) = core.apply_pending() {
                    warn!(error = %e, "applying a probe result failed");
                }
            }
        }
    }
    notify::stopping();
    info!("shutting down");
    sockets.stop();
    admin_task.abort();
    links_task.abort();
    baseline_task.abort();
    offenders_task.abort();
    feeds_task.abort();
    if let Some(t) = watch_task {
        t.abort();
    }
    if let Some(t) = fleet_task {
        t.abort();
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = std::fs::remove_file(&admin_cfg.socket);
    {
        let mut core = shared.lock();
        // Watch flags off before the program may be left running (`on_exit = "keep"`).
        core.watch.close();
        if let Err(e) = core.sync_watch() {
            warn!(error = %e, "clearing the watch flags failed");
        }
    }
    shared.lock().shutdown();
    Ok(())
}

/// The control loop's interval after a change of period: its first tick one period from
/// now (a tick just ran).
fn control_interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// The baseline's readings, one a second, each walk off the control loop.
async fn baseline(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        super::walks::observe_baseline(&shared).await;
    }
}

/// The listeners' caps under the soft descriptor limit in force (trafficd raised it to the
/// hard limit before the runtime started).
fn listener_budget() -> Budget {
    let soft = fdbudget::soft_limit().unwrap_or(1024);
    let budget = Budget::for_soft_limit(soft);
    if budget.is_short() {
        warn!(
            soft_limit = soft,
            reserved = fdbudget::RESERVED,
            metrics = budget.metrics,
            admin = budget.admin,
            "few file descriptors: the listeners get fewer connections (raise LimitNOFILE)"
        );
    } else {
        info!(
            soft_limit = soft,
            metrics = budget.metrics,
            admin = budget.admin,
            "listener connection caps"
        );
    }
    budget
}

/// The loop's periods that the config sets (`daemon.summary_interval`,
/// `pressure.interval`). Checked on every control tick, so a reload changes them within
/// a control tick ([`crate::ops::IDLE_CONTROL_TICK`] at most) wherever it came from.
struct Periodic {
    summary: tokio::time::Interval,
    pressure: tokio::time::Interval,
}

impl Periodic {
    fn new(config: &Config) -> Self {
        let mut pressure = tokio::time::interval(config.pressure.interval);
        pressure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            summary: tokio::time::interval(config.daemon.summary_interval),
            pressure,
        }
    }

    /// Restart an interval whose period the config changed (its next tick is one new
    /// period away). Returns whether anything changed.
    fn retune(&mut self, config: &Config) -> bool {
        let mut changed = false;
        let summary = config.daemon.summary_interval;
        if self.summary.period() != summary {
            info!(every = ?summary, "summary interval changed");
            self.summary = tokio::time::interval_at(tokio::time::Instant::now() + summary, summary);
            changed = true;
        }
        let pressure = config.pressure.interval;
        if self.pressure.period() != pressure {
            info!(every = ?pressure, "pressure sampling interval changed");
            self.pressure =
                tokio::time::interval_at(tokio::time::Instant::now() + pressure, pressure);
            self.pressure
                .set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;

    const CONFIG: &str = "[daemon]\ninterfaces = [\"veth0\"]\n[classes.default]\n";

    #[tokio::test]
    async fn reload_retunes_summary_and_pressure_intervals() {
        let before = Config::parse(Path::new("t.toml"), CONFIG).unwrap();
        let mut p = Periodic::new(&before);
        assert!(!p.retune(&before), "same config, same periods");
        let text = format!(
            "{}summary_interval = \"7s\"\n[pressure]\ninterval = \"3s\"\n",
            CONFIG.replace("[classes.default]\n", "")
        ) + "[classes.default]\n";
        let after = Config::parse(Path::new("t.toml"), &text).unwrap();
        assert!(p.retune(&after));
        assert_eq!(p.summary.period(), Duration::from_secs(7));
        assert_eq!(p.pressure.period(), Duration::from_secs(3));
        assert!(!p.retune(&after));
    }
}
