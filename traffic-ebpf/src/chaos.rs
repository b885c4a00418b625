//! Fault injection: drop a fraction of packets and reset a fraction of new connections until
//! a deadline, for a class or a port.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use traffic_common::{Chaos, Reason};
use traffic_ebpf::{parse::Ip, verdict::Refusal};

use crate::{clock::Clock, count::PortCounters};

/// The refusal `c` injects for this packet, if any; counted in the port's `stats`.
#[inline(always)]
pub fn inject(c: &Chaos, ip: &Ip, clock: &mut Clock, stats: PortCounters) -> Option<Refusal> {
    if c.until_ns == 0 || (c.drop_ratio == 0 && c.reset_ratio == 0) || clock.now() >= c.until_ns {
        return None;
    }
    // SAFETY: helper without arguments.
    let roll = unsafe { bpf_get_prandom_u32() };
    if ip.l4.is_new_tcp() && roll < c.reset_ratio {
        stats.bump(|s| s.chaos_reset += 1);
        return Some(Refusal {
            reason: Reason::Chaos,
            reset: true,
        });
    }
    // An independent roll for drops, so the two fractions do not overlap.
    // SAFETY: helper without arguments.
    let roll = unsafe { bpf_get_prandom_u32() };
    if roll < c.drop_ratio {
        stats.bump(|s| s.chaos_dropped += 1);
        return Some(Refusal {
            reason: Reason::Chaos,
            reset: false,
        });
    }
    None
}
