//! Breakers by hand (`trafficctl circuit open|reset`) and the circuits report.

use super::OpError;
use crate::{engine::Core, policy::upstream::Upstream};

impl Core {
    /// The upstream `name` refers to: its config name, or else its port when exactly one
    /// upstream listens on that port (TCP and UDP upstreams may share a number).
    fn upstream_named(&mut self, name: &str) -> Result<&mut Upstream, OpError> {
        let i = upstream_index(&self.upstreams, name)?;
        Ok(&mut self.upstreams[i])
    }

    /// `trafficctl circuit open UPSTREAM`.
    pub fn circuit_open(&mut self, upstream: &str) -> Result<String, OpError> {
        let now = self.now();
        let u = self.upstream_named(upstream)?;
        let t = u.breaker.force_open(now);
        u.note(&t);
        let msg = format!("{}: {t}", u.spec.name);
        self.apply_desired()?;
        Ok(msg)
    }

    /// `trafficctl circuit reset UPSTREAM`.
    pub fn circuit_reset(&mut self, upstream: &str) -> Result<String, OpError> {
        let now = self.now();
        let u = self.upstream_named(upstream)?;
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
                failed_latency: u.failed_latency.clone(),
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

/// Index of the upstream `name` refers to (see [`Core::circuit_open`]); a clear error naming
/// the upstreams there are otherwise.
fn upstream_index(upstreams: &[Upstream], name: &str) -> Result<usize, OpError> {
    if let Some(i) = upstreams.iter().position(|u| u.spec.name == name) {
        return Ok(i);
    }
    let known = || {
        let names: Vec<String> = upstreams
            .iter()
            .map(|u| {
                format!(
                    "{} ({}/{})",
                    u.spec.name,
                    u.spec.protocol.as_str(),
                    u.spec.port
                )
            })
            .collect();
        if names.is_empty() {
            "no upstreams are configured".to_owned()
        } else {
            format!("upstreams: {}", names.join(", "))
        }
    };
    let Ok(port) = name.parse::<u16>() else {
        return Err(OpError::NotFound(format!(
            "no upstream named `{name}`; {}",
            known()
        )));
    };
    let on_port: Vec<usize> = (0..upstreams.len())
        .filter(|&i| upstreams[i].spec.port == port)
        .collect();
    match on_port.as_slice() {
        [i] => Ok(*i),
        [] => Err(OpError::NotFound(format!(
            "no upstream named `{name}` or on port {port}; {}",
            known()
        ))),
        _ => Err(OpError::Invalid(format!(
            "port {port} is ambiguous: {}; name the upstream instead",
            on_port
                .iter()
                .map(|&i| format!(
                    "{} ({})",
                    upstreams[i].spec.name,
                    upstreams[i].spec.protocol.as_str()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use std::path::Path;

    use crate::{config::Config, dataplane::fake::Fake, engine::Core, ops::OpError};

    /// Fails on the main before issue 13: `circuit open` took only a port number.
    #[test]
    fn circuits_are_named_like_in_chaos_and_a_unique_port_still_works() {
        let text = "[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\n\
            [[upstreams]]\nname = \"web\"\nport = 8080\n\
            [[upstreams]]\nname = \"dns\"\nport = 53\nprobe = \"none\"\n\
            [[upstreams]]\nname = \"dns-udp\"\nport = 53\nprotocol = \"udp\"\nprobe = \"none\"\n";
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        let mut core = Core::new(config, Box::new(Fake::default())).unwrap();
        assert!(core.circuit_open("web").unwrap().starts_with("web: "));
        assert!(core.circuit_reset("web").unwrap().starts_with("web: "));
        assert!(core.circuit_open("8080").unwrap().starts_with("web: "));
        assert!(
            core.circuit_open("dns-udp")
                .unwrap()
                .starts_with("dns-udp: ")
        );
        match core.circuit_open("53") {
            Err(OpError::Invalid(m)) => {
                assert!(
                    m.contains("ambiguous") && m.contains("dns-udp (udp)"),
                    "{m}"
                );
            }
            other => panic!("expected an ambiguous port, got {other:?}"),
        }
        for unknown in ["nope", "9999", "70000"] {
            match core.circuit_reset(unknown) {
                Err(OpError::NotFound(m)) => {
                    assert!(m.contains(unknown) && m.contains("web (tcp/8080)"), "{m}");
                }
                other => panic!("{unknown}: expected NotFound, got {other:?}"),
            }
        }
    }
}
