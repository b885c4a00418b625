//! The engine: [`Core`] holds the config, the kernel slots, what was last applied and the
//! dataplane, and applies changes (writing only what changed, rescaling buckets whose limits
//! move). Operations on it (admin commands, control ticks, reports) live in [`crate::ops`];
//! the event loop and the servers in [`crate::serve`].

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::{error, info, warn};
use traffic_common::{
    BYTE_LIMIT_SLOT, GATE_LEASE_NS, GATE_LEASE_RENEW_NS, MAX_PACKET_LIMITS, RescaleRequest,
};

use crate::{
    api::{Applied, InterfaceStatus, ReloadStatus},
    config::{Config, ConfigError, OnExit},
    dataplane::{Dataplane, DataplaneError, Rescaled},
    plan::{self, Desired, Slots},
    policy::throttle::Throttle,
    policy::upstream::{ChaosSetting, Upstream},
    pressure::Sampler,
};

/// Why applying a config failed: it is invalid, or the kernel refused a write.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

/// Config + dataplane, with the bookkeeping to write only what changed.
///
/// Fields are `pub(crate)` so the operations in [`crate::ops`] (each an `impl Core` block in
/// its own file) can reach them; nothing outside the crate sees them.
pub struct Core {
    pub(crate) config: Config,
    pub(crate) slots: Slots,
    pub(crate) applied: Desired,
    pub(crate) dp: Box<dyn Dataplane>,
    pub(crate) started: Instant,
    pub(crate) interfaces: Vec<InterfaceStatus>,
    pub(crate) reload: ReloadStatus,
    /// Tracked sources per slot and when they were counted (walking a full bucket map is
    /// slow; see `tracked_sources`).
    pub(crate) sources_cache: Option<(Instant, Vec<u64>)>,
    /// Upstreams in config order.
    pub(crate) upstreams: Vec<Upstream>,
    /// Stable statistics slot per (port, protocol) port rule.
    pub(crate) port_slots: BTreeMap<(u16, u8), u32>,
    /// Fault injection on classes, by class name.
    pub(crate) class_chaos: BTreeMap<String, ChaosSetting>,
    /// Node pressure → throttle level.
    pub(crate) throttle: Throttle,
    pub(crate) sampler: Sampler,
    /// Buckets rewritten by the last rescale (limits changed: level or reload).
    pub(crate) last_rescale: usize,
    /// Total buckets rewritten by rescales.
    pub(crate) rescaled_total: u64,
    /// When a generation of the tracked-source bitmap was last cleared ([`Core::now`]), and
    /// the generation to clear next.
    pub(crate) seen_aged_at: Option<Duration>,
    pub(crate) seen_next: u32,
    /// The largest frame the configured interfaces deliver (MTU + Ethernet + 2 VLAN tags),
    /// read at start and on reload: the floor of every byte burst.
    pub(crate) max_frame: u64,
    /// End of the gate lease written last (kernel clock); renewed by [`Core::apply_desired`].
    pub(crate) gate_lease_until_ns: u64,
    /// Per-class rates and pressure readings observed, for `trafficctl suggest`.
    pub(crate) baseline: crate::policy::baseline::Baseline,
    /// Bans: the book, the state file, the offender detector, the counts (`ops/bans.rs`).
    pub(crate) bans: crate::bans::BanState,
    /// Blocklist feeds: the generation in force and each feed's status.
    pub(crate) feeds: crate::feeds::FeedsState,
    /// The watchers of `trafficctl watch`: their presence sets the program's watch flags.
    pub watch: std::sync::Arc<crate::watch::Hub>,
    /// What the fleet task reports (`None`: no `[fleet]`); read by status and metrics.
    pub fleet: Option<crate::fleet::SharedSnapshot>,
    /// Automatic bans of `scope = "fleet"` classes, for the fleet task to share (bounded).
    pub(crate) fleet_outbox: Vec<crate::bans::Ban>,
}

/// How often a generation of the tracked-source bitmap (`TRF_SEEN`) is cleared, the two in
/// turn: a key not seen for two intervals has lost its bit, a source seen at least once per
/// interval never does. The bitmap then holds the keys inserted or used in the last two
/// minutes at most, however long the node has been churning: under a flood that is the
/// admission budget's inserts over two intervals (shipped 500/s: 60,000 of 2²⁰ bits, ≤ 6 %
/// of flood packets pay the table lookup), where without aging it fills up within hours.
pub const SEEN_AGE_INTERVAL: Duration = Duration::from_secs(60);

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
/// The gate lease to write at `now`: the current one while less than a renewal period of
/// it has passed, else a full lease from now.
fn next_gate_lease(current: u64, now: u64) -> u64 {
    if current < now.saturating_add(GATE_LEASE_NS - GATE_LEASE_RENEW_NS) {
        now.saturating_add(GATE_LEASE_NS)
    } else {
        current
    }
}

impl Core {
    /// Take over a dataplane (fresh or adopted from pins) and apply `config` to it.
    pub fn new(config: Config, dp: Box<dyn Dataplane>) -> Result<Self, EngineError> {
        let current = dp.read_state()?;
        // Adopted maps carry the slot of every class name; keep them so buckets and
        // counters stay with their class across restarts.
        let slots = Slots::from_names(&current.names).assign(&config);
        // Likewise port-rule slots, so gate statistics continue.
        let port_slots = current.ports.iter().map(|(k, r)| (*k, r.slot)).collect();
        let feeds = crate::feeds::FeedsState::adopt(&current.global);
        let throttle = Throttle::new(config.throttle.clone(), Duration::ZERO);
        let sampler = Sampler::from_settings(&config.pressure);
        let baseline = crate::policy::baseline::Baseline::new(config.baseline.clone());
        let mut core = Self {
            config,
            slots,
            applied: current,
            dp,
            started: Instant::now(),
            interfaces: Vec::new(),
            reload: ReloadStatus::default(),
            sources_cache: None,
            upstreams: Vec::new(),
            port_slots,
            class_chaos: BTreeMap::new(),
            throttle,
            sampler,
            last_rescale: 0,
            rescaled_total: 0,
            seen_aged_at: None,
            seen_next: 0,
            max_frame: crate::policy::limits::MIN_BYTE_BURST,
            gate_lease_until_ns: 0,
            baseline,
            bans: crate::bans::BanState::default(),
            feeds,
            watch: std::sync::Arc::new(crate::watch::Hub::new(crate::watch::MAX_WATCHERS)),
            fleet: None,
            fleet_outbox: Vec::new(),
        };
        core.max_frame = core.largest_frame();
        // At start (a restart adopts the bitmap with the buckets it describes): the first
        // generation is cleared at once, the second one interval later.
        core.age_seen(core.now());
        core.sync_upstreams();
        let applied = core.apply_desired()?;
        info!(
            writes = applied.writes,
            adopted = core.dp.adopted(),
            "limits applied"
        );
        info!(
            root = %core.sampler.root().display(),
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

    /// What the maps should hold now: the config, the throttle factors, the upstreams'
    /// gates and the chaos in force (all planned in [`plan`]).
    fn desired(&self) -> Desired {
        let mut want = plan::desired_live(
            &self.config,
            &self.slots,
            |i| self.factor(i),
            &plan::Live {
                port_slots: &self.port_slots,
                upstreams: &self.upstreams,
                class_chaos: &self.class_chaos,
                now_ns: self.dp.now_ns(),
                max_frame: self.max_frame,
                gate_lease_until_ns: self.gate_lease_until_ns,
                watch_flags: self.watch.flags(),
            },
        );
        // Bans and feeds are resolved on a classification miss: a change of either is a new
        // rule generation.
        self.feeds.overlay(&mut want.global);
        plan::with_bans(want, self.bans.book.digest())
    }

    pub(crate) fn apply_desired(&mut self) -> Result<Applied, EngineError> {
        self.renew_gate_lease();
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
        if let Err(e) = self.dp.apply(&writes) {
            self.resync_from_kernel();
            return Err(e.into());
        }
        let tighter = self.rescale_buckets(&tightened, &want);
        self.applied = want;
        touched += tighter?;
        if !loosened.is_empty() || !tightened.is_empty() {
            self.last_rescale = touched;
            self.rescaled_total += touched as u64;
            info!(
                buckets = touched,
                "limits changed: buckets rescaled, none refilled"
            );
        }
        Ok(Applied {
            writes: writes.len(),
        })
    }

    /// Push the gate lease forward once a renewal period of it has passed (the control
    /// loop applies every tick, so the global entry is rewritten about once per
    /// [`GATE_LEASE_RENEW_NS`], not every tick).
    fn renew_gate_lease(&mut self) {
        self.gate_lease_until_ns = next_gate_lease(self.gate_lease_until_ns, self.dp.now_ns());
    }

    /// After a failed write the kernel holds part of the change: take what it holds as the
    /// reference, so the next diff (the caller's roll-back, or the next tick) removes the
    /// half-written and orphan entries instead of trusting a state that is not there.
    fn resync_from_kernel(&mut self) {
        match self.dp.read_state() {
            Ok(now) => self.applied = now,
            Err(e) => {
                // Unknown: a full rewrite next time (diff against nothing writes everything
                // but cannot remove orphans; the next successful read will).
                error!(error = %e, "cannot read the maps back after a failed write");
            }
        }
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

    /// Rescale the buckets of `slots` to the limits in `want`, keeping their tokens. The walk
    /// only collects keys; each bucket is then rescaled in the kernel where packets charge
    /// it (compare-and-swap per word: nothing charged meanwhile is refunded, the counters
    /// are not written, an evicted key is not re-inserted).
    fn rescale_buckets(&mut self, slots: &[u32], want: &Desired) -> Result<usize, EngineError> {
        if slots.is_empty() {
            return Ok(0);
        }
        let (mut touched, mut contended) = (0, 0);
        for (key, _) in self.dp.buckets()? {
            if !slots.contains(&key.class) {
                continue;
            }
            let (old, new) = (
                &self.applied.classes[key.class as usize],
                &want.classes[key.class as usize],
            );
            let mut req = RescaleRequest {
                key,
                ..RescaleRequest::default()
            };
            req.old[..MAX_PACKET_LIMITS].copy_from_slice(&old.packets);
            req.new[..MAX_PACKET_LIMITS].copy_from_slice(&new.packets);
            req.old[BYTE_LIMIT_SLOT] = old.bytes;
            req.new[BYTE_LIMIT_SLOT] = new.bytes;
            match self.dp.rescale_bucket(&req)? {
                Rescaled::Done => touched += 1,
                Rescaled::Missing => {}
                Rescaled::Contended => contended += 1,
            }
        }
        if contended > 0 {
            warn!(
                buckets = contended,
                "limits changed: some bucket words stayed contended and kept their state"
            );
        }
        Ok(touched)
    }

    /// Clear the next generation of the tracked-source bitmap once [`SEEN_AGE_INTERVAL`]
    /// has passed since the last (at once the first time). `now` is [`Core::now`].
    pub(crate) fn age_seen(&mut self, now: Duration) {
        if self
            .seen_aged_at
            .is_some_and(|t| now.saturating_sub(t) < SEEN_AGE_INTERVAL)
        {
            return;
        }
        if let Err(e) = self.dp.age_seen(self.seen_next) {
            warn!(error = %e, "cannot age the tracked-source bitmap");
        }
        self.seen_aged_at = Some(now);
        self.seen_next ^= 1;
    }

    /// The largest frame the configured interfaces deliver now (an MTU that cannot be read,
    /// e.g. an interface not there yet, is left out with a warning).
    fn largest_frame(&self) -> u64 {
        let mtus = self.config.daemon.interfaces.iter().filter_map(|i| {
            let mtu = self.dp.mtu(i);
            if mtu.is_none() {
                warn!(interface = %i, "cannot read the MTU; byte bursts not floored for it");
            }
            mtu
        });
        crate::policy::limits::largest_frame(mtus)
    }

    /// Attach to every configured interface that exists. A missing one is reported
    /// (warning, status, metric) and attached when it appears ([`Core::sync_links`]);
    /// start-up fails only when none exists, or when attaching to one that exists fails.
    pub fn attach_all(&mut self) -> Result<(), EngineError> {
        self.interfaces = self
            .config
            .daemon
            .interfaces
            .iter()
            .map(|name| InterfaceStatus {
                name: name.clone(),
                mode: None,
                attached: false,
                ifindex: None,
            })
            .collect();
        for i in 0..self.interfaces.len() {
            if self.dp.ifindex(&self.interfaces[i].name).is_none() {
                warn!(interface = %self.interfaces[i].name,
                    "interface missing: not filtered until it appears, then attached");
                continue;
            }
            self.attach_one(i)?;
        }
        if !self.interfaces.iter().any(|s| s.attached) {
            return Err(DataplaneError::Attach {
                iface: self.config.daemon.interfaces.join(", "),
                detail: "none of daemon.interfaces exists; refusing to start unfiltered".into(),
            }
            .into());
        }
        Ok(())
    }

    /// Re-check every configured interface against the one attached to: one that vanished
    /// or was replaced (new index) has lost its links and is marked detached, with a
    /// warning; one that exists and is not attached is attached. Called on every link
    /// event; cheap (one `if_nametoindex` per interface) when nothing changed.
    pub fn sync_links(&mut self) {
        for i in 0..self.interfaces.len() {
            let name = self.interfaces[i].name.clone();
            let now = self.dp.ifindex(&name);
            let st = &mut self.interfaces[i];
            if st.attached && st.ifindex != now {
                warn!(interface = %name, "interface went away or was replaced: its XDP and TC links are gone and traffic on it is not filtered until it returns");
                (st.attached, st.mode, st.ifindex) = (false, None, None);
                self.dp.detach(&name);
            }
            if !self.interfaces[i].attached && now.is_some() {
                match self.attach_one(i) {
                    Ok(()) => info!(interface = %name, "interface returned: attached again"),
                    Err(e) => {
                        warn!(interface = %name, error = %e, "attaching to a returned interface failed; it stays unfiltered")
                    }
                }
            }
        }
    }

    /// Attach to interface `i` of the status list (clearing any leftover links first).
    fn attach_one(&mut self, i: usize) -> Result<(), EngineError> {
        let name = self.interfaces[i].name.clone();
        let keep = self.config.daemon.on_exit == OnExit::Keep;
        self.dp.detach(&name);
        let before = self.dp.ifindex(&name);
        let mode = self.dp.attach(&name, self.config.daemon.attach, keep)?;
        if self.dp.ifindex(&name) != before {
            // Replaced while we attached: the next link event attaches to the new one.
            self.dp.detach(&name);
            return Ok(());
        }
        info!(interface = %name, ?mode, "attached");
        self.interfaces[i] = InterfaceStatus {
            name,
            mode: Some(mode),
            attached: true,
            ifindex: before,
        };
        Ok(())
    }

    /// Apply a new, already validated config. Interface changes need a restart.
    pub fn apply_config(&mut self, new: Config) -> Result<Applied, EngineError> {
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
        // An MTU raised since start takes effect on reload (interfaces do not change).
        self.max_frame = self.largest_frame();
        self.slots = self.slots.assign(&new);
        self.throttle.set_settings(new.throttle.clone());
        self.baseline.set_settings(new.baseline.clone());
        if new.pressure != self.config.pressure {
            self.sampler = Sampler::from_settings(&new.pressure);
        }
        let feeds_changed = new.feeds != self.config.feeds;
        self.config = new;
        self.sync_upstreams();
        match self.apply_desired() {
            Ok(a) => {
                if feeds_changed {
                    // The feed task sleeps until a feed is due: have it read the new list.
                    self.feeds.wake.notify_one();
                }
                Ok(a)
            }
            Err(e) => {
                // Keep the running config, and put it back in the kernel: the failed apply
                // may have written part of the new one (the diff starts from what the
                // kernel holds, so half-written and orphan rules are removed).
                (self.config, self.slots) = old;
                self.throttle.set_settings(self.config.throttle.clone());
                self.sync_upstreams();
                match self.apply_desired() {
                    Ok(a) => warn!(
                        writes = a.writes,
                        "apply failed; the running config was restored in the kernel"
                    ),
                    Err(e2) => {
                        error!(error = %e2, "apply failed and restoring the running config failed too; retried on the next change")
                    }
                }
                Err(e)
            }
        }
    }

    /// Multiplier for config class `index`: the level's multiplier weighted by the class's
    /// priority (1.0 at level NONE).
    pub fn factor(&self, index: usize) -> f64 {
        self.throttle
            .class_factor(self.config.classes[index].priority)
    }

    /// Write what changed since the last write (e.g. after a probe result).
    pub fn apply_pending(&mut self) -> Result<Applied, EngineError> {
        self.apply_desired()
    }

    /// Stop: detach, or pin the links and leave the program enforcing.
    pub fn shutdown(&mut self) {
        // The last ban change reaches the state file before the process exits.
        if let Some(w) = &self.bans.writer {
            w.flush();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::fake::Fake;
    use std::path::Path;

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
    fn the_tracked_source_bitmap_ages_one_generation_per_interval() {
        let mut c = core(CONFIG);
        // (generation to clear next, when the last was cleared)
        let state = |c: &Core| (c.seen_next, c.seen_aged_at);
        let start = c.seen_aged_at.expect("generation 0 is cleared at start");
        assert_eq!(state(&c), (1, Some(start)));
        c.age_seen(start + SEEN_AGE_INTERVAL / 2);
        assert_eq!(state(&c), (1, Some(start)), "not before the interval");
        let t1 = start + SEEN_AGE_INTERVAL;
        c.age_seen(t1);
        assert_eq!(state(&c), (0, Some(t1)), "generation 1 after one interval");
        c.age_seen(t1 + SEEN_AGE_INTERVAL * 3 / 2);
        assert_eq!(
            state(&c),
            (1, Some(t1 + SEEN_AGE_INTERVAL * 3 / 2)),
            "then generation 0 again"
        );
    }

    #[test]
    fn missing_interface_at_start_is_attached_when_it_appears() {
        let c = Config::parse(Path::new("t.toml"), CONFIG).unwrap();
        let fake = Fake::default();
        let links = fake.ifindexes.clone();
        links.lock().unwrap().insert("veth1".into(), None);
        let mut c = Core::new(c, Box::new(fake.clone())).unwrap();
        c.attach_all().unwrap();
        let s = c.status();
        assert!(s.interfaces[0].attached);
        assert!(!s.interfaces[1].attached && s.interfaces[1].mode.is_none());
        links.lock().unwrap().insert("veth1".into(), Some(3));
        c.sync_links();
        assert!(c.status().interfaces[1].attached);
        // Nothing there: refused.
        let fake = Fake::default();
        fake.ifindexes
            .lock()
            .unwrap()
            .extend([("veth0".to_owned(), None), ("veth1".to_owned(), None)]);
        let cfg = Config::parse(Path::new("t.toml"), CONFIG).unwrap();
        let mut none = Core::new(cfg, Box::new(fake)).unwrap();
        let err = none.attach_all().unwrap_err().to_string();
        assert!(err.contains("none of daemon.interfaces exists"), "{err}");
    }

    #[test]
    fn a_replaced_interface_is_reported_detached_then_attached_again() {
        let fake = Fake::default();
        let links = fake.ifindexes.clone();
        let cfg = Config::parse(Path::new("t.toml"), CONFIG).unwrap();
        let mut c = Core::new(cfg, Box::new(fake)).unwrap();
        c.attach_all().unwrap();
        links.lock().unwrap().insert("veth1".into(), None);
        c.sync_links();
        let st = &c.status().interfaces[1];
        assert!(!st.attached && st.mode.is_none() && st.ifindex.is_none());
        assert!(c.status().interfaces[0].attached, "the other one stays");
        links.lock().unwrap().insert("veth1".into(), Some(7));
        c.sync_links();
        let st = &c.status().interfaces[1];
        assert!(st.attached && st.ifindex == Some(7));
        // Replaced between two events (same name, new index): attached to the new one.
        links.lock().unwrap().insert("veth1".into(), Some(8));
        c.sync_links();
        let st = &c.status().interfaces[1];
        assert!(st.attached && st.ifindex == Some(8));
    }

    /// `n` rules of /64s under `2001:db8:<base>::/48` in the premium class.
    fn with_rules(base: u16, n: u16) -> String {
        let mut text = CONFIG.to_owned();
        for i in 0..n {
            text += &format!(
                "[[rules]]\ncidr = \"2001:db8:{base:x}:{i:x}::/64\"\nclass = \"premium\"\n"
            );
        }
        text
    }

    #[test]
    fn a_failed_apply_restores_the_old_rules_and_removes_what_it_half_wrote() {
        let fake = Fake::default();
        let capacity = fake.rule_capacity.clone();
        let cfg = Config::parse(Path::new("t.toml"), &with_rules(0xaaaa, 10)).unwrap();
        let mut c = Core::new(cfg, Box::new(fake)).unwrap();
        let old = c.dp.read_state().unwrap().rules;
        assert_eq!(old.len(), 11);
        // The map fills up midway through the swap (e.g. entries the daemon did not know of).
        capacity.store(14, std::sync::atomic::Ordering::Relaxed);
        let new = Config::parse(Path::new("t.toml"), &with_rules(0xbbbb, 10)).unwrap();
        let err = c.apply_config(new.clone()).unwrap_err().to_string();
        assert!(err.contains("full"), "{err}");
        assert_eq!(
            c.dp.read_state().unwrap().rules,
            old,
            "old rules back, no leftovers"
        );
        assert_eq!(c.applied.rules, old, "the daemon's view matches the kernel");
        assert_eq!(c.config.rules.len(), 11, "the running config stays");
        // With room, the same swap goes through and leaves exactly the new rules.
        capacity.store(0, std::sync::atomic::Ordering::Relaxed);
        c.apply_config(new).unwrap();
        let now = c.dp.read_state().unwrap().rules;
        assert_eq!(now.len(), 11);
        assert!(
            now.keys().all(|k| !old.contains_key(k) || k.1 == 120),
            "orphans left"
        );
    }

    #[test]
    fn a_control_tick_without_upstreams_still_ages_the_bitmap() {
        let mut c = core(CONFIG);
        assert!(c.upstreams.is_empty());
        // As if never aged: the next tick's age_seen clears a generation at once.
        c.seen_aged_at = None;
        let next = c.seen_next;
        c.control_tick(None).unwrap();
        assert_ne!(c.seen_next, next, "the tick aged the bitmap");
    }

    #[test]
    fn the_gate_lease_is_renewed_about_once_a_renewal_period() {
        let mut c = core(CONFIG);
        let first = c.applied.global.gate_lease_until_ns;
        assert_eq!(first, 1_000_000_000 + GATE_LEASE_NS, "written at start");
        assert_eq!(
            c.apply_pending().unwrap().writes,
            0,
            "same clock, no rewrite"
        );
        let s = 1_000_000_000;
        assert_eq!(next_gate_lease(first, s + GATE_LEASE_RENEW_NS - 1), first);
        assert_eq!(
            next_gate_lease(first, s + GATE_LEASE_RENEW_NS + 1),
            s + GATE_LEASE_RENEW_NS + 1 + GATE_LEASE_NS
        );
        assert_eq!(next_gate_lease(0, u64::MAX - 3), u64::MAX, "saturates");
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

    /// Issue 17 item 7: a 1 KB/s byte limit with the smallest burst (1514) on a 9000-MTU
    /// interface still lets one idle source's jumbo frame (VLAN-tagged twice) through.
    #[test]
    fn byte_bursts_hold_the_largest_frame_of_the_interfaces() {
        let text = CONFIG.replace(
            "packets = { rate = 100, burst = 200 }",
            "bytes = { rate = \"1KB\", burst = 1514 }",
        );
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        let mut fake = Fake::default();
        fake.mtus.insert("veth0".into(), 1500);
        fake.mtus.insert("veth1".into(), 9000);
        let jumbo_core = Core::new(c, Box::new(fake)).unwrap();
        assert_eq!(jumbo_core.max_frame, 9000 + 14 + 8);
        let slot = jumbo_core.slots.slot_of("default").unwrap() as usize;
        let bytes = jumbo_core.applied.classes[slot].bytes;
        let cost = (jumbo_core.max_frame * bytes.interval) >> traffic_common::BYTE_INTERVAL_SHIFT;
        assert!(
            cost <= bytes.tolerance,
            "a {}-byte frame costs {cost} ns, the burst holds {} ns",
            jumbo_core.max_frame,
            bytes.tolerance
        );
        // Unknown MTUs (the fake's default) leave the configured floor.
        let plain = core(&text);
        assert_eq!(plain.max_frame, crate::policy::limits::MIN_BYTE_BURST);
    }

    #[test]
    fn the_mtu_of_loopback_is_read() {
        let sys = std::fs::read_to_string("/sys/class/net/lo/mtu").unwrap();
        assert_eq!(
            crate::dataplane::interface_mtu("lo"),
            Some(sys.trim().parse().unwrap())
        );
        assert_eq!(crate::dataplane::interface_mtu("no-such-if0"), None);
        assert_eq!(crate::dataplane::interface_mtu(""), None);
    }
}
