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
    let phase = Phase::now();
    let mut periodic = Periodic::new(&core.config, phase);
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
    let baseline_task = tokio::spawn(baseline(shared.clone(), phase));
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
    let mut control = phase.interval(shared.lock().control_period());
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
                    periodic.retune(&core.config, phase);
                    (core.due_probes(), core.control_period())
                };
                // Upstreams or chaos came or went (a reload, the admin API).
                if control.period() != period {
                    control = phase.next_interval(period);
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

/// The phase the daemon's periodic timers share: every tick falls a whole number of periods
/// after the start. On an idle node the jobs of one second — the control tick, the pressure
/// sample, the baseline — then wake the daemon once, together, instead of each at its own
/// instant. A tick that comes late (a busy runtime) is skipped to the next boundary, which
/// keeps the phase; none is made up in a burst.
#[derive(Clone, Copy, Debug)]
struct Phase(tokio::time::Instant);

impl Phase {
    fn now() -> Self {
        Self(tokio::time::Instant::now())
    }

    /// Ticks on the phase's boundaries of `period`; the first at once.
    fn interval(self, period: Duration) -> tokio::time::Interval {
        skipping(tokio::time::interval_at(self.0, period))
    }

    /// Ticks on the phase's boundaries of `period`; the first at the next boundary after
    /// now (for a timer restarted with a new period: its tick just ran).
    fn next_interval(self, period: Duration) -> tokio::time::Interval {
        skipping(tokio::time::interval_at(
            self.next_boundary(tokio::time::Instant::now(), period),
            period,
        ))
    }

    /// The first boundary of `period` strictly after `now`.
    fn next_boundary(self, now: tokio::time::Instant, period: Duration) -> tokio::time::Instant {
        let period_ns = period.as_nanos().max(1);
        let since = now.saturating_duration_since(self.0).as_nanos();
        let n = since / period_ns + 1;
        self.0 + Duration::from_nanos(u64::try_from(n * period_ns).unwrap_or(u64::MAX))
    }
}

fn skipping(mut i: tokio::time::Interval) -> tokio::time::Interval {
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    i
}

/// The baseline's readings, one a second on the daemon's [`Phase`], each walk off the
/// control loop.
async fn baseline(shared: Arc<Shared>, phase: Phase) {
    let mut tick = phase.interval(std::time::Duration::from_secs(1));
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
    fn new(config: &Config, phase: Phase) -> Self {
        Self {
            summary: phase.interval(config.daemon.summary_interval),
            pressure: phase.interval(config.pressure.interval),
        }
    }

    /// Restart an interval whose period the config changed (its next tick is one new
    /// period away). Returns whether anything changed.
    fn retune(&mut self, config: &Config, phase: Phase) -> bool {
        let mut changed = false;
        let summary = config.daemon.summary_interval;
        if self.summary.period() != summary {
            info!(every = ?summary, "summary interval changed");
            self.summary = phase.next_interval(summary);
            changed = true;
        }
        let pressure = config.pressure.interval;
        if self.pressure.period() != pressure {
            info!(every = ?pressure, "pressure sampling interval changed");
            self.pressure = phase.next_interval(pressure);
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
        let phase = Phase::now();
        let mut p = Periodic::new(&before, phase);
        assert!(!p.retune(&before, phase), "same config, same periods");
        let text = format!(
            "{}summary_interval = \"7s\"\n[pressure]\ninterval = \"3s\"\n",
            CONFIG.replace("[classes.default]\n", "")
        ) + "[classes.default]\n";
        let after = Config::parse(Path::new("t.toml"), &text).unwrap();
        assert!(p.retune(&after, phase));
        assert_eq!(p.summary.period(), Duration::from_secs(7));
        assert_eq!(p.pressure.period(), Duration::from_secs(3));
        assert!(!p.retune(&after, phase));
    }

    #[tokio::test(start_paused = true)]
    async fn timers_of_one_phase_tick_together_wherever_they_started() {
        let phase = Phase::now();
        let t0 = tokio::time::Instant::now();
        let s = Duration::from_secs(1);
        let mut control = phase.interval(s);
        tokio::time::advance(Duration::from_millis(370)).await;
        let mut pressure = phase.interval(s);
        tokio::time::advance(Duration::from_millis(250)).await;
        let mut baseline = phase.interval(s);
        // Each one's first tick at once (the control loop's first reading must not wait)...
        for t in [&mut control, &mut pressure, &mut baseline] {
            t.tick().await;
        }
        // ...then all of them on the same boundaries.
        for k in 1..=3 {
            for t in [&mut control, &mut pressure, &mut baseline] {
                assert_eq!(t.tick().await, t0 + s * k);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_timer_keeps_the_phase() {
        let phase = Phase::now();
        let t0 = tokio::time::Instant::now();
        tokio::time::advance(Duration::from_millis(1250)).await;
        let mut fast = phase.next_interval(Duration::from_millis(100));
        assert_eq!(fast.tick().await, t0 + Duration::from_millis(1300));
        let mut slow = phase.next_interval(Duration::from_secs(1));
        assert_eq!(slow.tick().await, t0 + Duration::from_secs(2));
        // Exactly on a boundary: the next one, not this one (a tick just ran).
        assert_eq!(
            phase.next_boundary(t0 + Duration::from_secs(3), Duration::from_secs(1)),
            t0 + Duration::from_secs(4)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_tick_is_skipped_to_the_next_boundary() {
        let phase = Phase::now();
        let t0 = tokio::time::Instant::now();
        let mut t = phase.interval(Duration::from_secs(1));
        t.tick().await;
        // A runtime busy for 2.4 s: one late tick at once, then back on the boundaries.
        tokio::time::advance(Duration::from_millis(2400)).await;
        t.tick().await;
        assert_eq!(t.tick().await, t0 + Duration::from_secs(3));
    }
}
