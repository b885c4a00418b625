//! The port gate: a port rule's breaker (open, half-open trials), its bulkhead, its fault
//! injection and its per-source new-connection limit. Established TCP flows always pass.

use traffic_common::{
    ClassConfig, GLOBAL_HAS_PORTS, Gate, GlobalConfig, PORT_BUCKET, PORT_GATE_RESET, PORT_SHED,
    PortKey, PortRule, Reason, proto,
};
use traffic_ebpf::{parse::Ip, verdict::Refusal};

use crate::{
    bucket::{self, BPF_NOEXIST},
    chaos,
    clock::Clock,
    count::PortCounters,
    maps::{TRF_BUCKETS, TRF_PORTS},
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
    TRF_PORTS
        .get_ptr_mut(&key)
        .map(|p| PortRuleRef(p, cfg.gate_lease_until_ns))
}

/// Whether the daemon's lease on the gate state still runs: after it (the daemon stopped
/// or hung) open, half-open and shedding gates count as closed.
#[inline(always)]
fn gate_leased(pr: PortRuleRef, clock: &mut Clock) -> bool {
    clock.now() < pr.1
}

/// The port's gate.
#[inline(always)]
pub fn check(ip: &Ip, pr: PortRuleRef, cc: &ClassConfig, clock: &mut Clock) -> Option<Refusal> {
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
    if let Some(r) = chaos::inject(&rule.chaos, ip, clock, stats) {
        return Some(r);
    }
    if new_tcp && rule.syn_limit.interval != 0 && !new_connection_allowed(ip, rule, cc, clock) {
        stats.bump(|s| s.syn_limited += 1);
        return Some(Refusal {
            reason: Reason::PortRate,
            reset: false,
        });
    }
    None
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

/// The per-source new-connection limit of a port. A source that cannot be tracked is
/// refused: a full map never fails open.
#[inline(always)]
fn new_connection_allowed(ip: &Ip, rule: &PortRule, cc: &ClassConfig, clock: &mut Clock) -> bool {
    let key = bucket::bucket_key(
        bucket::masked(ip.src, if ip.v6 { &cc.mask_v6 } else { &cc.mask_v4 }),
        PORT_BUCKET | rule.slot,
    );
    let key = &key.0;
    let now = clock.now();
    let b = match TRF_BUCKETS.get_ptr_mut(key) {
        Some(b) => Some(b),
        None => {
            let fresh = bucket::fresh_bucket();
            let _ = TRF_BUCKETS.insert(key, &fresh, BPF_NOEXIST);
            TRF_BUCKETS.get_ptr_mut(key)
        }
    };
    match b {
        // SAFETY: a bucket looked up in this invocation; its words are only changed
        // atomically.
        Some(b) => unsafe {
            bucket::charge(
                &raw mut (*b).tat[0],
                &rule.syn_limit,
                rule.syn_limit.interval,
                now,
            )
        },
        None => false,
    }
}
