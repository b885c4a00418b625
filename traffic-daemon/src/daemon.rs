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

use std::{collections::BTreeMap, time::Duration};

use traffic_common::PortRule;

use crate::{policy::throttle::Throttle, pressure::Sampler};

use crate::{
    admin,
    config::{Config, ConfigError, Mode, OnExit},
    dataplane::{AttachedMode, Dataplane, DataplaneError},
    notify,
    plan::{self, Desired, Slots},
    report::{self, CountersReport},
    upstream::{ChaosSetting, Upstream},
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
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
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
    /// Fault injections in force.
    pub chaos: Vec<ChaosStatus>,
    /// Throttle level and readings.
    pub throttle: Option<crate::policy::throttle::ThrottleStatus>,
    /// Buckets rewritten by the last limit change.
    pub last_rescale_buckets: usize,
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
    /// Upstreams in config order.
    pub upstreams: Vec<Upstream>,
    /// Stable statistics slot per (port, protocol) port rule.
    port_slots: BTreeMap<(u16, u8), u32>,
    /// Fault injection on classes, by class name.
    class_chaos: BTreeMap<String, ChaosSetting>,
    /// Node pressure → throttle level.
    pub throttle: Throttle,
    sampler: Sampler,
    /// Buckets rewritten by the last rescale (limits changed: level or reload).
    pub last_rescale: usize,
    /// Total buckets rewritten by rescales.
    pub rescaled_total: u64,
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
        // Likewise port-rule slots, so gate statistics continue.
        let port_slots = current.ports.iter().map(|(k, r)| (*k, r.slot)).collect();
        let throttle = Throttle::new(config.throttle.clone(), Duration::ZERO);
        let sampler = Sampler::from_settings(&config.pressure);
        let mut core = Self {
            config,
            slots,
            applied: current,
            dp,
            started: Instant::now(),
            interfaces: Vec::new(),
            reload: ReloadStatus::default(),
            sources_cache: Mutex::new(None),
            upstreams: Vec::new(),
            port_slots,
            class_chaos: BTreeMap::new(),
            throttle,
            sampler,
            last_rescale: 0,
            rescaled_total: 0,
        };
        core.sync_upstreams();
        let applied = core.apply_desired()?;
        info!(
            writes = applied.writes,
            adopted = core.dp.adopted(),
            "limits applied"
        );
        info!(
            root = %core.sampler.root().display(),
            utilisation = if core.sampler.uses_sysinfo() { "sysinfo" } else { "files" },
            "pressure sampling"
        );
        core.reload.last_success_unix = Some(unix_now());
        Ok(core)
    }

    /// Monotonic time since start: the clock of the breakers.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Keep `upstreams` in step with the config: existing breakers keep their state.
    fn sync_upstreams(&mut self) {
        let now = self.now();
        let keys: Vec<(u16, u8)> = self
            .config
            .ports
            .iter()
            .map(|p| (p.port, p.protocol.number()))
            .chain(
                self.config
                    .upstreams
                    .iter()
                    .map(|u| (u.port, u.protocol.number())),
            )
            .collect();
        // Slots: keep the ones we have, give new rules the lowest free slot.
        self.port_slots.retain(|k, _| keys.contains(k));
        for k in &keys {
            if !self.port_slots.contains_key(k) {
                let used: std::collections::BTreeSet<u32> =
                    self.port_slots.values().copied().collect();
                let free = (0..traffic_common::MAX_PORTS)
                    .find(|s| !used.contains(s))
                    .unwrap_or(0);
                self.port_slots.insert(*k, free);
            }
        }
        let mut old: Vec<Upstream> = std::mem::take(&mut self.upstreams);
        for spec in self.config.upstreams.clone() {
            let slot = self.port_slots[&(spec.port, spec.protocol.number())];
            let u = match old.iter().position(|u| u.spec.name == spec.name) {
                Some(i) => {
                    let mut u = old.swap_remove(i);
                    u.slot = slot;
                    u.reconfigure(spec);
                    u
                }
                None => Upstream::new(spec, slot, now),
            };
            self.upstreams.push(u);
        }
    }

    /// The port rules the kernel should hold: `[[ports]]` merged with the upstreams' gates.
    fn port_rules(&self) -> BTreeMap<(u16, u8), PortRule> {
        let now_ns = self.dp.now_ns();
        let mut out: BTreeMap<(u16, u8), PortRule> = BTreeMap::new();
        for p in &self.config.ports {
            let key = (p.port, p.protocol.number());
            let rule = out.entry(key).or_default();
            rule.slot = self.port_slots.get(&key).copied().unwrap_or(0);
            if let Some(ci) = p.class {
                rule.flags |= traffic_common::PORT_CLASS_OVERRIDE;
                rule.class = self.slots.slot_of_index(&self.config, ci);
            }
            if let Some(l) = &p.new_connections {
                rule.syn_limit = crate::policy::limits::packet_gcra(l);
            }
        }
        for u in &self.upstreams {
            let key = (u.spec.port, u.spec.protocol.number());
            let rule = out.entry(key).or_default();
            rule.slot = self.port_slots.get(&key).copied().unwrap_or(0);
            u.apply_to(rule, now_ns);
        }
        out
    }

    fn desired(&self) -> Desired {
        let mut want = plan::desired(&self.config, &self.slots, |i| self.factor(i));
        let now_ns = self.dp.now_ns();
        for (name, c) in &self.class_chaos {
            if let Some(slot) = self.slots.slot_of(name)
                && c.active(now_ns)
            {
                want.classes[slot as usize].chaos = c.kernel();
            }
        }
        want.with_ports(self.port_rules())
    }

    fn apply_desired(&mut self) -> Result<Applied, DaemonError> {
        let want = self.desired();
        let writes = plan::diff(Some(&self.applied), &want);
        if writes.is_empty() {
            return Ok(Applied { writes: 0 });
        }
        // Classes whose limits change get their buckets rescaled so no token is granted:
        // loosened classes before the new limits are written (until then the old, tighter
        // limits see a smaller debt allowance), tightened ones after.
        let (loosened, tightened) = self.limit_changes(&want);
        let mut touched = self.rescale_buckets(&loosened, &want)?;
        self.dp.apply(&writes)?;
        touched += self.rescale_buckets(&tightened, &want)?;
        if !loosened.is_empty() || !tightened.is_empty() {
            self.last_rescale = touched;
            self.rescaled_total += touched as u64;
            info!(
                buckets = touched,
                "limits changed: buckets rescaled, none refilled"
            );
        }
        self.applied = want;
        Ok(Applied {
            writes: writes.len(),
        })
    }

    /// Slots of active classes whose limits change, split into loosened and tightened.
    fn limit_changes(&self, want: &Desired) -> (Vec<u32>, Vec<u32>) {
        let (mut loose, mut tight) = (Vec::new(), Vec::new());
        for (slot, (old, new)) in self.applied.classes.iter().zip(&want.classes).enumerate() {
            if old.flags == 0 || new.flags == 0 {
                continue;
            }
            if old.packets == new.packets && old.bytes == new.bytes {
                continue;
            }
            // Compare the first limit's rate (or the byte limit's): a larger interval is a
            // tighter limit.
            let (o, n) = if old.packet_limits > 0 && new.packet_limits > 0 {
                (old.packets[0].interval, new.packets[0].interval)
            } else {
                (old.bytes.interval, new.bytes.interval)
            };
            if n < o {
                loose.push(slot as u32);
            } else {
                tight.push(slot as u32);
            }
        }
        (loose, tight)
    }

    /// Rewrite the buckets of `slots` for the limits in `want`, keeping their tokens.
    fn rescale_buckets(&mut self, slots: &[u32], want: &Desired) -> Result<usize, DaemonError> {
        if slots.is_empty() {
            return Ok(0);
        }
        let now = self.dp.now_ns();
        let mut touched = 0;
        for (key, mut b) in self.dp.buckets()? {
            if !slots.contains(&key.class) {
                continue;
            }
            let old = &self.applied.classes[key.class as usize];
            let new = &want.classes[key.class as usize];
            let before = b;
            for i in 0..traffic_common::MAX_PACKET_LIMITS {
                b.tat[i] = crate::policy::limits::rescale_tat(
                    b.tat[i],
                    &old.packets[i],
                    &new.packets[i],
                    now,
                    0,
                );
            }
            let bi = traffic_common::BYTE_LIMIT_SLOT;
            b.tat[bi] = crate::policy::limits::rescale_tat(
                b.tat[bi],
                &old.bytes,
                &new.bytes,
                now,
                traffic_common::BYTE_INTERVAL_SHIFT,
            );
            if b != before {
                self.dp.set_bucket(&key, &b)?;
                touched += 1;
            }
        }
        Ok(touched)
    }

    /// Sample the node's pressure and move the throttle level; a level change rewrites the
    /// limits at once.
    pub fn pressure_tick(
        &mut self,
    ) -> Result<Option<crate::policy::throttle::Transition>, DaemonError> {
        let now = self.now();
        let sample = match self.sampler.sample(now) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "pressure sample failed; level unchanged");
                return Ok(None);
            }
        };
        let t = self.throttle.update(now, &sample.ratios());
        if let Some(t) = &t {
            if t.is_raise() {
                warn!("{t}");
            } else {
                info!("{t}");
            }
            let a = self.apply_desired()?;
            info!(writes = a.writes, level = %self.throttle.level(), "limits rewritten for the new level");
        }
        Ok(t)
    }

    /// The throttle's state.
    pub fn throttle_status(&self) -> crate::policy::throttle::ThrottleStatus {
        self.throttle.status(self.now())
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
        self.throttle.set_settings(new.throttle.clone());
        if new.pressure != self.config.pressure {
            self.sampler = Sampler::from_settings(&new.pressure);
        }
        self.config = new;
        self.sync_upstreams();
        match self.apply_desired() {
            Ok(a) => Ok(a),
            Err(e) => {
                // Keep the running config as the reference for the next attempt.
                (self.config, self.slots) = old;
                self.throttle.set_settings(self.config.throttle.clone());
                self.sync_upstreams();
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
            level: self.throttle.level().as_str().into(),
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
                let cc = self
                    .applied
                    .classes
                    .get(slot as usize)
                    .copied()
                    .unwrap_or_default();
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
        rows.sort_by(|a, b| {
            b.packets
                .cmp(&a.packets)
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
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
            let mask = if addr.is_ipv4() {
                cc.mask_v4
            } else {
                cc.mask_v6
            };
            let mut masked = [0u8; 16];
            for (i, w) in mask.iter().enumerate() {
                let word =
                    u64::from_ne_bytes(key_addr[i * 8..i * 8 + 8].try_into().unwrap_or_default())
                        & w;
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

    /// Multiplier for config class `index`: the level's multiplier weighted by the class's
    /// priority (1.0 at level NONE).
    pub fn factor(&self, index: usize) -> f64 {
        self.throttle
            .class_factor(self.config.classes[index].priority)
    }

    /// Write what changed since the last write (e.g. after a probe result).
    pub fn apply_pending(&mut self) -> Result<Applied, DaemonError> {
        self.apply_desired()
    }

    /// One control tick: breaker timeouts, the passive signal, bulkheads, chaos expiry, then
    /// write whatever changed.
    pub fn control_tick(&mut self) -> Result<Applied, DaemonError> {
        let now = self.now();
        let now_ns = self.dp.now_ns();
        let egress = self.dp.egress_stats().unwrap_or_default();
        let ports: Vec<u16> = self
            .upstreams
            .iter()
            .filter(|u| u.spec.protocol == crate::config::Protocol::Tcp)
            .map(|u| u.spec.port)
            .collect();
        let sockets = if ports.is_empty() {
            Vec::new()
        } else {
            crate::sockdiag::port_sockets(&ports).unwrap_or_else(|e| {
                warn!(error = %e, "sock_diag failed; bulkheads see no connections");
                Vec::new()
            })
        };
        let (mult, level_max) = self.level_bulkhead();
        for u in &mut self.upstreams {
            if let Some(t) = u.breaker.poll(now) {
                u.note(&t);
            }
            if let Some(e) = egress.get(u.slot as usize) {
                u.passive(*e, now);
            }
            let s = sockets.iter().find(|s| s.port == u.spec.port).cloned();
            let cap = u.cap(mult, level_max);
            u.bulkhead(s, cap);
            if u.chaos.is_some_and(|c| !c.active(now_ns)) {
                info!(upstream = %u.spec.name, "chaos expired");
                u.chaos = None;
            }
        }
        self.class_chaos.retain(|name, c| {
            let live = c.active(now_ns);
            if !live {
                info!(class = %name, "chaos expired");
            }
            live
        });
        self.apply_desired()
    }

    /// The rate multiplier and connection cap of the current throttle level.
    pub fn level_bulkhead(&self) -> (f64, Option<u32>) {
        (self.throttle.multiplier(), self.throttle.max_connections())
    }

    /// Probes that are due now: (upstream name, kind, address, path, timeout).
    pub fn due_probes(
        &mut self,
    ) -> Vec<(
        String,
        crate::config::ProbeKind,
        std::net::SocketAddr,
        String,
        Duration,
    )> {
        let now = self.now();
        let wall = Instant::now();
        let mut out = Vec::new();
        for u in &mut self.upstreams {
            if u.probe_due(wall, now) {
                u.probing = true;
                out.push((
                    u.spec.name.clone(),
                    u.spec.probe,
                    std::net::SocketAddr::new(u.spec.address, u.spec.port),
                    u.spec.path.clone(),
                    u.spec.timeout,
                ));
            }
        }
        out
    }

    /// A probe finished.
    pub fn probe_done(&mut self, name: &str, r: crate::upstream::ProbeResult) {
        let now = self.now();
        if let Some(u) = self.upstreams.iter_mut().find(|u| u.spec.name == name) {
            u.probe_done(r, now);
        }
    }

    fn upstream_by_port(&mut self, port: u16) -> Result<&mut Upstream, DaemonError> {
        self.upstreams
            .iter_mut()
            .find(|u| u.spec.port == port)
            .ok_or_else(|| DaemonError::NotFound(format!("no upstream on port {port}")))
    }

    /// `trafficctl circuit open PORT`.
    pub fn circuit_open(&mut self, port: u16) -> Result<String, DaemonError> {
        let now = self.now();
        let u = self.upstream_by_port(port)?;
        let t = u.breaker.force_open(now);
        u.note(&t);
        let msg = format!("{}: {t}", u.spec.name);
        self.apply_desired()?;
        Ok(msg)
    }

    /// `trafficctl circuit reset PORT`.
    pub fn circuit_reset(&mut self, port: u16) -> Result<String, DaemonError> {
        let now = self.now();
        let u = self.upstream_by_port(port)?;
        let t = u.breaker.reset(now);
        u.note(&t);
        let msg = format!("{}: {t}", u.spec.name);
        self.apply_desired()?;
        Ok(msg)
    }

    /// Start fault injection on an upstream or a class for `duration`.
    pub fn chaos_start(&mut self, req: &ChaosRequest) -> Result<String, DaemonError> {
        let bad = |m: &str| Err(DaemonError::BadRequest(m.to_owned()));
        if !(0.0..=1.0).contains(&req.drop) || !(0.0..=1.0).contains(&req.reset) {
            return bad("drop and reset are fractions between 0 and 1");
        }
        let duration = crate::config::syntax::parse_duration(&req.duration)
            .map_err(DaemonError::BadRequest)?;
        if duration.is_zero() || duration > Duration::from_secs(3600) {
            return bad("duration must be between 1ms and 1h: chaos always expires");
        }
        let setting = ChaosSetting {
            drop_ratio: req.drop,
            reset_ratio: req.reset,
            until_ns: self.dp.now_ns() + duration.as_nanos() as u64,
        };
        let what = match (&req.upstream, &req.class) {
            (Some(name), None) => {
                let u = self
                    .upstreams
                    .iter_mut()
                    .find(|u| &u.spec.name == name)
                    .ok_or_else(|| DaemonError::NotFound(format!("no upstream named {name}")))?;
                u.chaos = Some(setting);
                format!("upstream {name}")
            }
            (None, Some(class)) => {
                if self.config.class_index(class).is_none() {
                    return Err(DaemonError::NotFound(format!("no class named {class}")));
                }
                self.class_chaos.insert(class.clone(), setting);
                format!("class {class}")
            }
            _ => return bad("name exactly one of upstream or class"),
        };
        warn!(target_ = %what, drop = req.drop, reset = req.reset, ?duration, "chaos started");
        self.apply_desired()?;
        Ok(format!(
            "chaos on {what}: drop {:.0}%, reset {:.0}% of new connections, for {}",
            req.drop * 100.0,
            req.reset * 100.0,
            crate::config::syntax::format_duration(duration)
        ))
    }

    /// Stop every fault injection now.
    pub fn chaos_stop(&mut self) -> Result<String, DaemonError> {
        let n =
            self.class_chaos.len() + self.upstreams.iter().filter(|u| u.chaos.is_some()).count();
        self.class_chaos.clear();
        for u in &mut self.upstreams {
            u.chaos = None;
        }
        self.apply_desired()?;
        info!(stopped = n, "chaos stopped");
        Ok(format!("stopped {n} fault injection(s)"))
    }

    /// Fault injections in force, for status.
    pub fn chaos_status(&self) -> Vec<ChaosStatus> {
        let now_ns = self.dp.now_ns();
        let left = |c: &ChaosSetting| c.until_ns.saturating_sub(now_ns) as f64 / 1e9;
        self.upstreams
            .iter()
            .filter_map(|u| u.chaos.map(|c| (format!("upstream:{}", u.spec.name), c)))
            .chain(
                self.class_chaos
                    .iter()
                    .map(|(n, c)| (format!("class:{n}"), *c)),
            )
            .filter(|(_, c)| c.active(now_ns))
            .map(|(target, c)| ChaosStatus {
                target,
                drop_ratio: c.drop_ratio,
                reset_ratio: c.reset_ratio,
                expires_in_seconds: left(&c),
            })
            .collect()
    }

    /// `GET /v1/circuits`.
    pub fn circuits(&self) -> Result<crate::upstream::CircuitsReport, DaemonError> {
        let now = self.now();
        let stats = self.dp.port_stats()?;
        let (mult, level_max) = self.level_bulkhead();
        let upstreams = self
            .upstreams
            .iter()
            .map(|u| crate::upstream::CircuitReport {
                name: u.spec.name.clone(),
                port: u.spec.port,
                protocol: u.spec.protocol.as_str().to_owned(),
                group: u.spec.group.clone(),
                probe: u.spec.probe,
                breaker: u.breaker.snapshot(now),
                last_probe: u.last_probe.clone(),
                probes_ok: u.probes_ok,
                probes_failed: u.probes_failed,
                passive_successes: u.passive_successes,
                passive_failures: u.passive_failures,
                latency: u.latency.clone(),
                established: u.sockets.as_ref().map(|s| s.established),
                accept_queue: u.sockets.as_ref().map(|s| s.accept_queue),
                backlog: u.sockets.as_ref().map(|s| s.backlog),
                max_connections: u.cap(mult, level_max),
                shedding: u.shedding,
                chaos: u.chaos,
                gate: stats
                    .get(u.slot as usize)
                    .copied()
                    .unwrap_or_default()
                    .into(),
                transitions: u.transitions.iter().cloned().collect(),
            })
            .collect();
        Ok(crate::upstream::CircuitsReport { upstreams })
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
            chaos: self.chaos_status(),
            throttle: Some(self.throttle_status()),
            last_rescale_buckets: self.last_rescale,
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

/// `POST /v1/chaos`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChaosRequest {
    pub upstream: Option<String>,
    pub class: Option<String>,
    /// Fraction of packets dropped.
    #[serde(default)]
    pub drop: f64,
    /// Fraction of new TCP connections reset.
    #[serde(default)]
    pub reset: f64,
    /// How long, e.g. "30s" (at most 1h).
    pub duration: String,
}

/// A fault injection in force.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChaosStatus {
    pub target: String,
    pub drop_ratio: f64,
    pub reset_ratio: f64,
    pub expires_in_seconds: f64,
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

/// Period of the control loop (breakers, passive signal, bulkheads).
pub const CONTROL_TICK: Duration = Duration::from_millis(100);

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

    // Before anything can report readiness: SIGHUP's default action would kill us.
    let mut hup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Other(e.to_string()))?;
    let admin_listener = admin::bind(&admin_cfg).map_err(|source| DaemonError::Admin {
        path: admin_cfg.socket.clone(),
        source,
    })?;
    let admin_task = tokio::spawn(admin::serve(admin_listener, shared.clone()));
    let metrics_task = match metrics_addr {
        Some(addr) => {
            let l = crate::metrics::bind(addr).await.map_err(|e| {
                // Stops the daemon before READY: see `metrics::bind_failure`.
                DaemonError::Other(crate::metrics::bind_failure(addr, &shared.config_path, &e))
            })?;
            info!(%addr, "metrics listening");
            Some(tokio::spawn(crate::metrics::serve(l, shared.clone())))
        }
        None => None,
    };
    notify::ready();
    info!(socket = %admin_cfg.socket.display(), "trafficd ready");

    let mut summary = tokio::time::interval(summary_every);
    summary.tick().await;
    let watchdog = notify::watchdog_interval();
    let mut watchdog_tick =
        tokio::time::interval(watchdog.unwrap_or(std::time::Duration::from_secs(3600)));
    // The control loop: breakers, passive signals, bulkheads and chaos, written to the maps.
    let pressure_every = shared.lock().config.pressure.interval;
    let mut pressure = tokio::time::interval(pressure_every);
    pressure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut control = tokio::time::interval(CONTROL_TICK);
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (probe_tx, mut probe_rx) =
        tokio::sync::mpsc::channel::<(String, crate::upstream::ProbeResult)>(64);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hup.recv() => {
                let _ = shared.reload();
            }
            _ = summary.tick() => shared.lock().log_summary(),
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify::watchdog(),
            _ = pressure.tick() => {
                if let Err(e) = shared.lock().pressure_tick() {
                    warn!(error = %e, "applying the throttle level failed");
                }
            }
            _ = control.tick() => {
                let due = {
                    let mut core = shared.lock();
                    if let Err(e) = core.control_tick() {
                        warn!(error = %e, "control tick failed");
                    }
                    core.due_probes()
                };
                for (name, kind, addr, path, timeout) in due {
                    let tx = probe_tx.clone();
                    tokio::spawn(async move {
                        let r = crate::upstream::probe(kind, addr, &path, timeout).await;
                        let _ = tx.send((name, r)).await;
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
