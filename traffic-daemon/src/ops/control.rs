//! The periodic work: pressure samples move the throttle level; the control tick runs
//! breaker timeouts, the passive signal, bulkheads and chaos expiry; probes are handed out
//! and their results taken back.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::OpError;
use crate::config::ProbeKind;
use crate::{api::Applied, engine::Core};

/// Period of the control loop (breakers, passive signal, bulkheads, chaos expiry) while it
/// has any of them to run.
pub const CONTROL_TICK: Duration = Duration::from_millis(100);

/// Period of the control loop with nothing to control (no upstream, no class chaos: the
/// shipped config). What it still does is coarse: the tracked-source bitmap ages once a
/// minute, and an ended ban's entry is freed (the kernel stopped enforcing it on time). An
/// idle daemon wakes for it once a second instead of ten times.
pub const IDLE_CONTROL_TICK: Duration = Duration::from_secs(1);

impl Core {
    /// Sample the node's pressure and move the throttle level; a level change rewrites the
    /// limits at once.
    pub fn pressure_tick(
        &mut self,
    ) -> Result<Option<crate::policy::throttle::LevelChange>, OpError> {
        let now = self.now();
        let sample = match self.sampler.sample(now) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "pressure sample failed; level unchanged");
                return Ok(None);
            }
        };
        let ratios = sample.ratios();
        if self.baseline.settings().enabled {
            self.baseline.observe_pressure(&ratios);
        }
        let t = self.throttle.update(now, &ratios);
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

    /// One control tick: breaker timeouts, the passive signal, bulkheads, chaos expiry, then
    /// write whatever changed. `sockets`: the latest socket statistics of
    /// [`Core::socket_demand`]'s ports (sampled off the loop; `None` when there is no recent
    /// sample: the bulkheads then see no connections).
    ///
    /// Nothing to do without upstreams or class chaos (the shipped config): no map read, no
    /// plan, no diff, so an idle daemon costs a timer wake-up here, once a second
    /// ([`Core::control_period`]).
    pub fn control_tick(
        &mut self,
        sockets: Option<&[crate::sockdiag::PortSockets]>,
    ) -> Result<Applied, OpError> {
        let now = self.now();
        // Cheap (a clock read until an interval has passed), and needed with or without
        // upstreams: the bitmap fills under any flood.
        self.age_seen(now);
        if let Err(e) = self.expire_bans() {
            warn!(error = %e, "expiring bans failed; retried next tick");
        }
        if self.upstreams.is_empty() && self.class_chaos.is_empty() {
            return Ok(Applied { writes: 0 });
        }
        let now_ns = self.dp.now_ns();
        let egress = if self.upstreams.is_empty() {
            Vec::new()
        } else {
            self.dp.egress_stats().unwrap_or_default()
        };
        let sockets = sockets.unwrap_or_default();
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
        Ok(self.apply_desired()?)
    }

    /// The control loop's period now: [`CONTROL_TICK`] with upstreams or class chaos,
    /// [`IDLE_CONTROL_TICK`] without.
    pub fn control_period(&self) -> Duration {
        if self.upstreams.is_empty() && self.class_chaos.is_empty() {
            IDLE_CONTROL_TICK
        } else {
            CONTROL_TICK
        }
    }

    /// The ports whose sockets the bulkheads need (TCP upstreams with a connection cap or an
    /// accept-queue limit), and whether one of them is near its limit (sampled every control
    /// tick then; every second otherwise: see `serve::sockets`).
    pub fn socket_demand(&self) -> SocketDemand {
        let (mult, level_max) = self.level_bulkhead();
        let mut d = SocketDemand::default();
        for u in &self.upstreams {
            if u.spec.protocol != crate::config::Protocol::Tcp {
                continue;
            }
            let cap = u.cap(mult, level_max);
            let ratio = u.spec.accept_queue_ratio;
            if cap.is_none() && ratio <= 0.0 {
                continue;
            }
            d.ports.push(u.spec.port);
            // Near: half way to the cap or to the queue limit, or shedding already.
            let near = u.shedding.is_some()
                || u.sockets.as_ref().is_some_and(|s| {
                    cap.is_some_and(|c| u64::from(s.established) * 2 >= u64::from(c))
                        || (ratio > 0.0
                            && s.backlog > 0
                            && f64::from(s.accept_queue) * 2.0 >= ratio * f64::from(s.backlog))
                });
            d.urgent |= near;
        }
        d
    }

    /// The rate multiplier and connection cap of the current throttle level.
    pub fn level_bulkhead(&self) -> (f64, Option<u32>) {
        (self.throttle.multiplier(), self.throttle.max_connections())
    }

    /// Probes that are due now (each upstream marked as probing until its result is back).
    pub fn due_probes(&mut self) -> Vec<ProbeJob> {
        let now = self.now();
        let wall = Instant::now();
        let mut out = Vec::new();
        for u in &mut self.upstreams {
            if u.probe_due(wall, now) {
                u.probing = true;
                out.push(ProbeJob {
                    upstream: u.spec.name.clone(),
                    kind: u.spec.probe,
                    addr: std::net::SocketAddr::new(u.spec.address, u.spec.port),
                    path: u.spec.path.clone(),
                    timeout: u.spec.timeout,
                });
            }
        }
        out
    }

    /// A probe finished.
    pub fn probe_done(&mut self, name: &str, r: crate::policy::upstream::ProbeResult) {
        let now = self.now();
        if let Some(u) = self.upstreams.iter_mut().find(|u| u.spec.name == name) {
            u.probe_done(r, now);
        }
    }
}

/// What the socket sampler should watch ([`Core::socket_demand`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketDemand {
    pub ports: Vec<u16>,
    /// A bulkhead is near its limit: sample at the control tick's pace.
    pub urgent: bool,
}

/// One probe to run off the lock; its result goes back through [`Core::probe_done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeJob {
    /// Upstream name, to hand the result back.
    pub upstream: String,
    pub kind: ProbeKind,
    pub addr: std::net::SocketAddr,
    /// HTTP path for HTTP probes.
    pub path: String,
    pub timeout: Duration,
}
