//! The daemon: a [`Core`] that owns the config and the dataplane and applies changes, and
//! [`run`], the event loop around it (signals, admin API, periodic summary).

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    admin,
    config::{Config, ConfigError, Mode, OnExit},
    dataplane::{AttachedMode, Dataplane, DataplaneError},
    notify,
    plan::{self, Desired, Slots},
    report::{self, CountersReport},
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

/// Outcome of the last reload.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReloadStatus {
    pub succeeded: u64,
    pub failed: u64,
    /// Unix time of the last attempt.
    pub last_attempt_unix: Option<u64>,
    /// Unix time of the last successful (re)load.
    pub last_success_unix: Option<u64>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// One interface the program is attached to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InterfaceStatus {
    pub name: String,
    pub mode: AttachedMode,
}

/// One class as configured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassStatus {
    pub name: String,
    pub slot: u32,
    pub mode: Mode,
    pub priority: crate::config::Priority,
    pub limited: bool,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub version: String,
    pub abi_version: u32,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub config_path: PathBuf,
    pub mode: Mode,
    pub on_exit: OnExit,
    pub adopted_pinned_state: bool,
    pub interfaces: Vec<InterfaceStatus>,
    pub classes: Vec<ClassStatus>,
    pub rules: usize,
    pub reload: ReloadStatus,
}

/// The result of applying a config: how many map entries were written.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Applied {
    pub writes: usize,
}

/// Config + dataplane, with the bookkeeping to write only what changed.
pub struct Core {
    pub config: Config,
    pub slots: Slots,
    applied: Desired,
    dp: Box<dyn Dataplane>,
    started: Instant,
    interfaces: Vec<InterfaceStatus>,
    pub reload: ReloadStatus,
    sources_cache: Mutex<Option<(Instant, Vec<u64>)>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Core {
    /// Take over a dataplane (fresh or adopted from pins) and apply `config` to it.
    pub fn new(config: Config, dp: Box<dyn Dataplane>) -> Result<Self, DaemonError> {
        let current = dp.read_state()?;
        // Adopted maps carry the slot of every class name; keep them so buckets and
        // counters stay with their class across restarts.
        let slots = Slots::from_names(&current.names).assign(&config);
        let mut core = Self {
            config,
            slots,
            applied: current,
            dp,
            started: Instant::now(),
            interfaces: Vec::new(),
            reload: ReloadStatus::default(),
            sources_cache: Mutex::new(None),
        };
        let applied = core.apply_desired()?;
        info!(writes = applied.writes, adopted = core.dp.adopted(), "limits applied");
        core.reload.last_success_unix = Some(unix_now());
        Ok(core)
    }

    fn desired(&self) -> Desired {
        plan::desired(&self.config, &self.slots, |i| self.factor(i))
    }

    fn apply_desired(&mut self) -> Result<Applied, DaemonError> {
        let want = self.desired();
        let writes = plan::diff(Some(&self.applied), &want);
        self.dp.apply(&writes)?;
        self.applied = want;
        Ok(Applied {
            writes: writes.len(),
        })
    }

    /// Attach to every configured interface.
    pub fn attach_all(&mut self) -> Result<(), DaemonError> {
        for iface in self.config.daemon.interfaces.clone() {
            let keep = self.config.daemon.on_exit == OnExit::Keep;
            let mode = self.dp.attach(&iface, self.config.daemon.attach, keep)?;
            info!(interface = %iface, ?mode, "attached");
            self.interfaces.push(InterfaceStatus { name: iface, mode });
        }
        Ok(())
    }

    /// Apply a new, already validated config. Interface changes need a restart.
    pub fn apply_config(&mut self, new: Config) -> Result<Applied, DaemonError> {
        if new.daemon.interfaces != self.config.daemon.interfaces
            || new.daemon.pin_dir != self.config.daemon.pin_dir
            || new.daemon.max_sources != self.config.daemon.max_sources
            || new.admin != self.config.admin
            || new.metrics != self.config.metrics
        {
            warn!(
                "daemon.interfaces, daemon.pin_dir, daemon.max_sources, [admin] and [metrics] take effect on restart"
            );
        }
        let old = (self.config.clone(), self.slots.clone());
        self.slots = self.slots.assign(&new);
        self.config = new;
        match self.apply_desired() {
            Ok(a) => Ok(a),
            Err(e) => {
                // Keep the running config as the reference for the next attempt.
                (self.config, self.slots) = old;
                Err(e)
            }
        }
    }

    /// Re-read the config file and apply it; on any error the running config stays.
    pub fn reload_from(&mut self, path: &Path) -> Result<Applied, DaemonError> {
        self.reload.last_attempt_unix = Some(unix_now());
        let result = Config::load(path)
            .map_err(DaemonError::from)
            .and_then(|c| self.apply_config(c));
        match &result {
            Ok(a) => {
                self.reload.succeeded += 1;
                self.reload.last_success_unix = Some(unix_now());
                self.reload.last_error = None;
                info!(writes = a.writes, path = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                self.reload.failed += 1;
                self.reload.last_error = Some(e.to_string());
                error!(error = %e, "reload failed; keeping the running configuration");
            }
        }
        result
    }

    /// Current counters.
    pub fn counters(&self) -> Result<CountersReport, DaemonError> {
        Ok(report::counters_report(&self.dp.counters()?, &self.slots))
    }

    /// Tracked sources per class slot (walks the bucket map; cached for 5 s because a full
    /// map holds up to `max_sources` entries).
    pub fn tracked_sources(&self) -> Vec<u64> {
        let mut cache = self.sources_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, v)) = cache.as_ref()
            && at.elapsed() < std::time::Duration::from_secs(5)
        {
            return v.clone();
        }
        let mut per_slot = vec![0u64; traffic_common::MAX_CLASSES as usize];
        match self.dp.buckets() {
            Ok(b) => {
                for (k, _) in b {
                    if let Some(n) = per_slot.get_mut(k.class as usize) {
                        *n += 1;
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot walk the bucket map"),
        }
        *cache = Some((Instant::now(), per_slot.clone()));
        per_slot
    }

    /// Effective limits per class.
    pub fn limits(&self) -> Result<report::LimitsReport, DaemonError> {
        let stats = self.dp.class_stats()?;
        let sources = self.tracked_sources();
        let eff = |l: &crate::config::RateLimit, f: f64, min: u64| {
            let s = crate::policy::limits::scaled(l, f, min);
            report::EffectiveLimit {
                rate_per_sec: s.rate_per_sec,
                burst: s.burst,
            }
        };
        let classes = self
            .config
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let slot = self.slots.slot_of_index(&self.config, i) as usize;
                let f = self.factor(i);
                let st = stats.get(slot).copied().unwrap_or_default();
                report::ClassLimits {
                    class: c.name.clone(),
                    priority: c.priority,
                    mode: self.config.class_mode(i),
                    factor: f,
                    packets: c.packets.iter().map(|l| eff(l, f, 1)).collect(),
                    bytes: c
                        .bytes
                        .as_ref()
                        .map(|l| eff(l, f, crate::policy::limits::MIN_BYTE_BURST)),
                    aggregate_v4: c.aggregate_v4,
                    aggregate_v6: c.aggregate_v6,
                    admission: c.admission.as_ref().map(|l| eff(l, 1.0, 1)),
                    overflow: c.overflow.as_ref().map(|l| eff(l, f, 1)),
                    tracked_sources: sources.get(slot).copied().unwrap_or(0),
                    admitted: st.admitted,
                    overflowed: st.overflowed,
                    map_full: st.map_full,
                }
            })
            .collect();
        Ok(report::LimitsReport {
            level: "none".into(),
            classes,
        })
    }

    /// The `top` tracked sources by packets.
    pub fn top_sources(&self, top: usize) -> Result<report::SourcesReport, DaemonError> {
        let buckets = self.dp.buckets()?;
        let now = self.dp.now_ns();
        let tracked = buckets.len() as u64;
        let mut rows: Vec<_> = buckets
            .into_iter()
            .map(|(k, b)| {
                let slot = k.class;
                let name = self.slots.name_of(slot).unwrap_or("?").to_owned();
                let spec = self.config.classes.iter().find(|c| c.name == name);
                let cc = self.applied.classes.get(slot as usize).copied().unwrap_or_default();
                let ip = std::net::Ipv6Addr::from(k.addr);
                let prefix = match ip.to_ipv4_mapped() {
                    Some(v4) => format!("{v4}/{}", spec.map_or(32, |s| s.aggregate_v4)),
                    None => format!("{ip}/{}", spec.map_or(128, |s| s.aggregate_v6)),
                };
                let tokens = (cc.packet_limits > 0 && cc.packets[0].interval > 0).then(|| {
                    let l = cc.packets[0];
                    let debt = b.tat[0].saturating_sub(now);
                    l.tolerance.saturating_sub(debt) as f64 / l.interval as f64
                });
                report::SourceEntry {
                    class: name,
                    prefix,
                    packets: b.packets,
                    dropped: b.dropped,
                    tokens,
                }
            })
            .collect();
        rows.sort_by(|a, b| b.packets.cmp(&a.packets).then_with(|| a.prefix.cmp(&b.prefix)));
        rows.truncate(top);
        Ok(report::SourcesReport {
            tracked,
            sources: rows,
        })
    }

    /// Forget the buckets of `addr` in every class (its next packet starts a full bucket).
    /// Returns how many buckets were removed.
    pub fn reset_source(&mut self, addr: std::net::IpAddr) -> Result<usize, DaemonError> {
        let key_addr = match addr {
            std::net::IpAddr::V4(a) => traffic_common::v4_mapped(a.octets()),
            std::net::IpAddr::V6(a) => a.octets(),
        };
        let mut removed = 0;
        for (slot, cc) in self.applied.classes.iter().enumerate() {
            if cc.flags == 0 {
                continue;
            }
            let mask = if addr.is_ipv4() { cc.mask_v4 } else { cc.mask_v6 };
            let mut masked = [0u8; 16];
            for (i, w) in mask.iter().enumerate() {
                let word = u64::from_ne_bytes(key_addr[i * 8..i * 8 + 8].try_into().unwrap_or_default()) & w;
                masked[i * 8..i * 8 + 8].copy_from_slice(&word.to_ne_bytes());
            }
            let key = traffic_common::BucketKey {
                addr: masked,
                class: slot as u32,
            };
            if self.dp.remove_bucket(&key)? {
                removed += 1;
            }
        }
        info!(%addr, removed, "source reset");
        Ok(removed)
    }

    /// Multiplier for config class `index` (1.0 without pressure).
    pub fn factor(&self, _index: usize) -> f64 {
        1.0
    }

    /// The Prometheus exposition.
    pub fn metrics(&self) -> String {
        crate::metrics::render(self)
    }

    /// Status for the CLI.
    pub fn status(&self) -> StatusReport {
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            abi_version: traffic_common::ABI_VERSION,
            pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs(),
            config_path: self.config.source.clone(),
            mode: self.config.daemon.mode,
            on_exit: self.config.daemon.on_exit,
            adopted_pinned_state: self.dp.adopted(),
            interfaces: self.interfaces.clone(),
            classes: self
                .config
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| ClassStatus {
                    name: c.name.clone(),
                    slot: self.slots.slot_of_index(&self.config, i),
                    mode: self.config.class_mode(i),
                    priority: c.priority,
                    limited: c.is_limited(),
                })
                .collect(),
            rules: self.config.rules.len(),
            reload: self.reload.clone(),
        }
    }

    /// One log line per class with what passed and dropped since start.
    pub fn log_summary(&self) {
        match self.counters() {
            Ok(r) => {
                for c in r.classes {
                    info!(
                        class = %c.class,
                        passed = c.passed.packets,
                        dropped = c.dropped.packets,
                        would_drop = c.would_drop.packets,
                        "summary"
                    );
                }
            }
            Err(e) => warn!(error = %e, "cannot read counters"),
        }
    }

    /// Stop: detach, or pin the links and leave the program enforcing.
    pub fn shutdown(&mut self) {
        match self.config.daemon.on_exit {
            OnExit::Detach => {
                self.dp.detach_all();
                info!("detached; traffic is no longer filtered");
            }
            OnExit::Keep => match self.dp.keep_attached() {
                Ok(()) => info!("links pinned; the program keeps enforcing the last limits"),
                Err(e) => {
                    error!(error = %e, "cannot keep the program attached; detaching");
                    self.dp.detach_all();
                }
            },
        }
    }
}

/// State shared by the event loop and the admin API.
pub struct Shared {
    pub core: Mutex<Core>,
    pub config_path: PathBuf,
}

impl Shared {
    /// Lock the core; a panic in another holder does not make the daemon unusable.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reload from the config path (SIGHUP and the admin API share this).
    pub fn reload(&self) -> Result<Applied, DaemonError> {
        notify::reloading();
        let r = self.lock().reload_from(&self.config_path);
        notify::ready();
        r
    }
}

/// Run the daemon until `shutdown` resolves. `make_dataplane` opens the real (or fake)
/// dataplane once the config is known.
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
    core.attach_all()?;
    let admin_cfg = core.config.admin.clone();
    let metrics_addr = core.config.metrics.listen;
    let summary_every = core.config.daemon.summary_interval;
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        config_path,
    });

    let admin_listener = admin::bind(&admin_cfg).map_err(|source| DaemonError::Admin {
        path: admin_cfg.socket.clone(),
        source,
    })?;
    let admin_task = tokio::spawn(admin::serve(admin_listener, shared.clone()));
    let metrics_task = match metrics_addr {
        Some(addr) => {
            let l = crate::metrics::bind(addr)
                .await
                .map_err(|e| DaemonError::Other(format!("metrics listener {addr}: {e}")))?;
            info!(%addr, "metrics listening");
            Some(tokio::spawn(crate::metrics::serve(l, shared.clone())))
        }
        None => None,
    };
    notify::ready();
    info!(socket = %admin_cfg.socket.display(), "trafficd ready");

    let mut hup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Other(e.to_string()))?;
    let mut summary = tokio::time::interval(summary_every);
    summary.tick().await;
    let watchdog = notify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(std::time::Duration::from_secs(3600)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hup.recv() => {
                let _ = shared.reload();
            }
            _ = summary.tick() => shared.lock().log_summary(),
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify::watchdog(),
        }
    }
    notify::stopping();
    info!("shutting down");
    admin_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = std::fs::remove_file(&admin_cfg.socket);
    shared.lock().shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::fake::Fake;

    const CONFIG: &str = r#"
[daemon]
interfaces = ["veth0", "veth1"]
[classes.default]
packets = { rate = 100, burst = 200 }
[classes.premium]
packets = { rate = 1000 }
[[rules]]
cidr = "198.18.1.0/24"
class = "premium"
"#;

    fn core(text: &str) -> Core {
        let c = Config::parse(Path::new("t.toml"), text).unwrap();
        Core::new(c, Box::new(Fake::default())).unwrap()
    }

    #[test]
    fn new_applies_and_attaches() {
        let mut c = core(CONFIG);
        c.attach_all().unwrap();
        let s = c.status();
        assert_eq!(s.interfaces.len(), 2);
        assert_eq!(s.classes.len(), 2);
        assert_eq!(s.rules, 1);
        assert!(c.counters().unwrap().class("premium").is_some());
    }

    #[test]
    fn reload_with_bad_file_keeps_running_config() {
        let dir = std::env::temp_dir().join(format!("trf-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("traffic.toml");
        std::fs::write(&path, CONFIG).unwrap();
        let mut c = core(CONFIG);
        std::fs::write(&path, CONFIG.replace("rate = 1000", "rate = -5")).unwrap();
        let err = c.reload_from(&path).unwrap_err().to_string();
        assert!(err.contains("classes.premium.packets[0].rate"), "{err}");
        assert_eq!(c.reload.failed, 1);
        assert_eq!(c.config.classes[1].packets[0].rate_per_sec, 1000.0);
        std::fs::write(&path, CONFIG.replace("rate = 1000", "rate = 2000")).unwrap();
        let ok = c.reload_from(&path).unwrap();
        assert_eq!(ok.writes, 1, "only the premium class changed");
        assert_eq!(c.reload.succeeded, 1);
        assert!(c.reload.last_error.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shutdown_follows_on_exit() {
        let mut c = core(CONFIG);
        c.attach_all().unwrap();
        c.shutdown();
        let mut k = core(&CONFIG.replace("[daemon]", "[daemon]\non_exit = \"keep\""));
        k.attach_all().unwrap();
        k.shutdown();
        assert_eq!(k.status().on_exit, OnExit::Keep);
    }
}
