//! The port gate: a port rule's breaker (open, half-open trials), its bulkhead and its fault
//! injection. Established TCP flows always pass. Its per-source new-connection limit is
//! charged with the class limits, after admission (`limit::PortLimit`).

use traffic_common::{
    GLOBAL_HAS_PORTS, Gate, GlobalConfig, PORT_GATE_RESET, PORT_SHED, PortKey, PortRule, Reason,
    proto,
};
use traffic_ebpf::{parse::Ip, verdict::Refusal};

use crate::{bucket, chaos, clock::Clock, count::PortCounters, maps::TRF_PORTS};

/// The port rule of a packet's destination port, looked up in this invocation.
#[derive(Clone, Copy)]
pub struct PortRuleRef(*mut PortRule);

impl PortRuleRef {
    /// The rule.
    #[inline(always)]
    pub fn rule(&self) -> &PortRule {
        // SAFETY: a map value pointer from the lookup in `port_rule`, valid for this
        // invocation; the only field others change (`half_open_tat`) is read atomically.
        unsafe { &*self.0 }
    }

    /// The shared state of the half-open trial budget, charged atomically.
    #[inline(always)]
    fn half_open_tat(&self) -> *mut u64 {
        // SAFETY: as in `rule`; only the field's address is taken.
        unsafe { &raw mut (*self.0).half_open_tat }
    }
}

/// The port rule of the packet's destination port, when the program has port rules and the
/// L4 header was read.
#[inline(always)]
pub fn port_rule(cfg: &GlobalConfig, ip: &Ip) -> Option<PortRuleRef> {
    if cfg.flags & GLOBAL_HAS_PORTS == 0 || !ip.l4.known {
        return None;
    }
    let key = PortKey {
        port: ip.l4.dport,
        protocol: ip.l4.protocol,
        _pad: 0,
    };
    TRF_PORTS.get_ptr_mut(&key).map(PortRuleRef)
}

/// The port's gate.
#[inline(always)]
pub fn check(ip: &Ip, pr: PortRuleRef, clock: &mut Clock) -> Option<Refusal> {
    let rule = pr.rule();
    let stats = PortCounters::of(rule.slot);
    let new_tcp = ip.l4.is_new_tcp();
    let reset = rule.flags & PORT_GATE_RESET != 0;
    if new_tcp {
        stats.bump(|s| s.syns += 1);
    }
    if (new_tcp || ip.l4.protocol == proto::UDP) && breaker_refuses(pr, clock, stats) {
        stats.bump(|s| s.gated += 1);
        return Some(Refusal {
            reason: if reset && new_tcp {
                Reason::GateReset
            } else {
                Reason::Gate
            },
            reset: reset && new_tcp,
        });
    }
    if new_tcp && rule.flags & PORT_SHED != 0 {
        stats.bump(|s| s.shed += 1);
        return Some(Refusal {
            reason: Reason::Bulkhead,
            reset,
        });
    }
    chaos::inject(&rule.chaos, ip, clock, stats)
}

/// Whether the breaker refuses a new connection (or a datagram): always when open; when
/// half-open, unless it is one of the bounded trials per interval shared by all sources.
#[inline(always)]
fn breaker_refuses(pr: PortRuleRef, clock: &mut Clock, stats: PortCounters) -> bool {
    let rule = pr.rule();
    let gate = rule.gate;
    if gate == Gate::Open as u32 {
        return true;
    }
    if gate != Gate::HalfOpen as u32 {
        return false;
    }
    let trial = rule.half_open.interval != 0
        // SAFETY: a word of a port rule looked up in this invocation; only accessed
        // atomically.
        && unsafe {
            bucket::charge(
                pr.half_open_tat(),
                &rule.half_open,
                rule.half_open.interval,
                clock.now(),
            )
        };
    if trial {
        stats.bump(|s| s.trials += 1);
    }
    !trial
}
