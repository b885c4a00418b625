//! The port gate: a port rule's breaker (open, half-open trials), its bulkhead and its fault
//! injection. Established TCP flows always pass. Its per-source new-connection limit is
//! charged with the class limits, after admission (`limit::PortLimit`).

use traffic_common::{
    GLOBAL_HAS_PORTS, Gate, GlobalConfig, LOCAL_ADDRS_READY, PORT_GATE_RESET, PORT_SHED, PortKey,
    PortRule, Reason, proto, words_addr,
};
use traffic_ebpf::{flow, frame::Frame, parse::Ip, verdict::Refusal};

use crate::{
    bucket, chaos,
    clock::Clock,
    count::PortCounters,
    maps::{TRF_LOCAL, TRF_PORTS, TRF_RST_BUDGET},
};

/// The port rule of a packet's destination port, looked up in this invocation, and the
/// gate lease ([`GlobalConfig::gate_lease_until_ns`]) it is read under.
#[derive(Clone, Copy)]
pub struct PortRuleRef(*mut PortRule, u64);

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

/// The port rule of the packet's destination port, when the program has port rules, the
/// L4 header was read and the packet is addressed to the node itself: traffic routed
/// through the node to another host's port is not the node's upstream's business.
#[inline(always)]
pub fn port_rule(cfg: &GlobalConfig, f: &Frame, ip: &Ip) -> Option<PortRuleRef> {
    if cfg.flags & GLOBAL_HAS_PORTS == 0 || !ip.l4.known {
        return None;
    }
    let key = PortKey {
        port: ip.l4.dport,
        protocol: ip.l4.protocol,
        _pad: 0,
    };
    let rule = TRF_PORTS.get_ptr_mut(&key)?;
    local_destination(f, ip).then_some(PortRuleRef(rule, cfg.gate_lease_until_ns))
}

/// Whether the packet is addressed to one of the node's addresses; every destination is,
/// until the daemon has filled the set (and marked it with [`LOCAL_ADDRS_READY`]).
#[inline(always)]
pub fn local_destination(f: &Frame, ip: &Ip) -> bool {
    if TRF_LOCAL.get_ptr(&LOCAL_ADDRS_READY).is_none() {
        return true;
    }
    flow::dst(f, ip).is_some_and(|d| TRF_LOCAL.get_ptr(&words_addr(d.0, d.1)).is_some())
}

/// Whether the port's RST budget has room for one more RST; charged if so. A rule without
/// a budget (interval 0) is unlimited.
#[inline(always)]
pub fn rst_allowed(pr: PortRuleRef, clock: &mut Clock) -> bool {
    let rule = pr.rule();
    if rule.rst_budget.interval == 0 {
        return true;
    }
    let Some(tat) = TRF_RST_BUDGET.get_ptr_mut(rule.slot) else {
        return false;
    };
    // SAFETY: a word of an array looked up in this invocation; only accessed atomically.
    unsafe { bucket::charge(tat, &rule.rst_budget, rule.rst_budget.interval, clock.now()) }
}

/// Whether the daemon's lease on the gate state still runs: after it (the daemon stopped
/// or hung) open, half-open and shedding gates count as closed.
#[inline(always)]
fn gate_leased(pr: PortRuleRef, clock: &mut Clock) -> bool {
    clock.now() < pr.1
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
    if new_tcp && rule.flags & PORT_SHED != 0 && gate_leased(pr, clock) {
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
    if gate != Gate::Closed as u32 && !gate_leased(pr, clock) {
        return false;
    }
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
