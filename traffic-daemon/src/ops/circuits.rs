//! Breakers by hand (`trafficctl circuit open|reset`) and the circuits report.

use super::OpError;
use crate::{engine::Core, policy::upstream::Upstream};

impl Core {
    fn upstream_by_port(&mut self, port: u16) -> Result<&mut Upstream, OpError> {
        self.upstreams
            .iter_mut()
            .find(|u| u.spec.port == port)
            .ok_or_else(|| OpError::NotFound(format!("no upstream on port {port}")))
    }

    /// `trafficctl circuit open PORT`.
    pub fn circuit_open(&mut self, port: u16) -> Result<String, OpError> {
        let now = self.now();
        let u = self.upstream_by_port(port)?;
        let t = u.breaker.force_open(now);
        u.note(&t);
        let msg = format!("{}: {t}", u.spec.name);
        self.apply_desired()?;
        Ok(msg)
    }

    /// `trafficctl circuit reset PORT`.
    pub fn circuit_reset(&mut self, port: u16) -> Result<String, OpError> {
        let now = self.now();
        let u = self.upstream_by_port(port)?;
        let t = u.breaker.reset(now);
        u.note(&t);
        let msg = format!("{}: {t}", u.spec.name);
        self.apply_desired()?;
        Ok(msg)
    }

    /// `GET /v1/circuits`.
    pub fn circuits(&self) -> Result<crate::api::circuits::CircuitsReport, OpError> {
        let now = self.now();
        let stats = self.dp.port_stats()?;
        let (mult, level_max) = self.level_bulkhead();
        let upstreams = self
            .upstreams
            .iter()
            .map(|u| crate::api::circuits::CircuitReport {
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
        Ok(crate::api::circuits::CircuitsReport { upstreams })
    }
}
