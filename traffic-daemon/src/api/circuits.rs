//! `GET /v1/circuits`: upstreams, their breakers, bulkheads and gate counters.

use serde::{Deserialize, Serialize};
use traffic_common::PortStats;

use crate::{
    config::ProbeKind,
    policy::{
        breaker::BreakerSnapshot,
        upstream::{ChaosSetting, Histogram, ProbeResult, Shedding, TransitionRecord},
    },
};

/// `GET /v1/circuits`: one upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitReport {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub group: Option<String>,
    pub probe: ProbeKind,
    pub breaker: BreakerSnapshot,
    pub last_probe: Option<ProbeResult>,
    pub probes_ok: u64,
    pub probes_failed: u64,
    pub passive_successes: u64,
    pub passive_failures: u64,
    pub latency: Histogram,
    /// Durations of failed probes.
    #[serde(default)]
    pub failed_latency: Histogram,
    pub established: Option<u32>,
    pub accept_queue: Option<u32>,
    pub backlog: Option<u32>,
    /// Concurrency cap at the current throttle level.
    pub max_connections: Option<u32>,
    pub shedding: Option<Shedding>,
    pub chaos: Option<ChaosSetting>,
    pub gate: GateStats,
    pub transitions: Vec<TransitionRecord>,
}

/// What the XDP gate did on the upstream's port (from `PortStats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateStats {
    pub syns: u64,
    pub gated: u64,
    pub resets: u64,
    pub shed: u64,
    pub chaos_dropped: u64,
    pub chaos_reset: u64,
    pub syn_limited: u64,
    pub trials: u64,
}

impl From<PortStats> for GateStats {
    fn from(p: PortStats) -> Self {
        Self {
            syns: p.syns,
            gated: p.gated,
            resets: p.resets,
            shed: p.shed,
            chaos_dropped: p.chaos_dropped,
            chaos_reset: p.chaos_reset,
            syn_limited: p.syn_limited,
            trials: p.trials,
        }
    }
}

/// `GET /v1/circuits`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CircuitsReport {
    pub upstreams: Vec<CircuitReport>,
}
