//! The port gate: a port rule's breaker (open, half-open trials), its bulkhead, its fault
//! injection and its per-source new-connection limit. Established TCP flows always pass.

use traffic_common::{
    ClassConfig, GLOBAL_HAS_PORTS, Gate, GlobalConfig, PORT_BUCKET, PORT_GATE_RESET, PORT_SHED,
    PortKey, PortRule, PortStats, Reason, proto,
};

use crate::{
    admission::BPF_NOEXIST,
    chaos, limit,
    maps::{TRF_BUCKETS, TRF_PORT_STATS, TRF_PORTS},
    parse::Ip,
    verdict::{Clock, Refusal},
};

/// The port rule of the packet's destination port, when the program has port rules and the
/// L4 header was read.
#[inline(always)]
pub fn port_rule(cfg: &GlobalConfig, ip: &Ip) -> Option<*mut PortRule> {
    if cfg.flags & GLOBAL_HAS_PORTS == 0 || !ip.l4.known {
        return None;
    }
    let key = PortKey {
        port: ip.l4.dport,
        protocol: ip.l4.protocol,
        _pad: 0,
    };
    TRF_PORTS.get_ptr_mut(&key)
}

/// Count one event in a port's statistics, if it has a slot.
macro_rules! bump {
    ($stats:expr, $field:ident) => {
        if let Some(s) = $stats {
            // SAFETY: per-CPU slot of this CPU; XDP runs with migration disabled.
            unsafe { (*s).$field += 1 };
        }
    };
}

/// The port's gate. `pr` is a port rule looked up in this invocation ([`port_rule`]).
#[inline(always)]
pub fn check(ip: &Ip, pr: *mut PortRule, cc: &ClassConfig, clock: &mut Clock) -> Option<Refusal> {
    // SAFETY: a value pointer from a lookup in this invocation.
    let rule = unsafe { &*pr };
    let stats = TRF_PORT_STATS.get_ptr_mut(rule.slot);
    let new_tcp = ip.l4.is_new_tcp();
    let reset = rule.flags & PORT_GATE_RESET != 0;
    if new_tcp {
        bump!(stats, syns);
    }
    if (new_tcp || ip.l4.protocol == proto::UDP) && breaker_refuses(pr, rule, clock, stats) {
        bump!(stats, gated);
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
        bump!(stats, shed);
        return Some(Refusal {
            reason: Reason::Bulkhead,
            reset,
        });
    }
    if let Some(r) = chaos::inject(&rule.chaos, ip, clock, stats) {
        return Some(r);
    }
    if new_tcp && rule.syn_limit.interval != 0 && !new_connection_allowed(ip, rule, cc, clock) {
        bump!(stats, syn_limited);
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
fn breaker_refuses(
    pr: *mut PortRule,
    rule: &PortRule,
    clock: &mut Clock,
    stats: Option<*mut PortStats>,
) -> bool {
    let gate = rule.gate;
    if gate == Gate::Open as u32 {
        return true;
    }
    if gate != Gate::HalfOpen as u32 {
        return false;
    }
    let trial = rule.half_open.interval != 0
        // SAFETY: `pr` is a port rule value looked up in this invocation; the field is only
        // accessed atomically.
        && unsafe {
            limit::charge(
                &raw mut (*pr).half_open_tat,
                &rule.half_open,
                rule.half_open.interval,
                clock.now(),
            )
        };
    if trial {
        bump!(stats, trials);
    }
    !trial
}

/// The per-source new-connection limit of a port. A source that cannot be tracked is
/// refused: a full map never fails open.
#[inline(always)]
fn new_connection_allowed(ip: &Ip, rule: &PortRule, cc: &ClassConfig, clock: &mut Clock) -> bool {
    let key = limit::bucket_key(
        limit::masked(ip.src, if ip.v6 { &cc.mask_v6 } else { &cc.mask_v4 }),
        PORT_BUCKET | rule.slot,
    );
    let key = &key.0;
    let now = clock.now();
    let b = match TRF_BUCKETS.get_ptr_mut(key) {
        Some(b) => Some(b),
        None => {
            let fresh = limit::fresh_bucket();
            let _ = TRF_BUCKETS.insert(key, &fresh, BPF_NOEXIST);
            TRF_BUCKETS.get_ptr_mut(key)
        }
    };
    match b {
        // SAFETY: a bucket looked up in this invocation; its words are only changed
        // atomically.
        Some(b) => unsafe {
            limit::charge(
                &raw mut (*b).tat[0],
                &rule.syn_limit,
                rule.syn_limit.interval,
                now,
            )
        },
        None => false,
    }
}
