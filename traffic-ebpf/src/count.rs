//! Counting: every packet in its (row, reason, monitored) counter; the gate's events (and
//! each RST it sent) in its port's statistics.

use traffic_common::{PortKey, PortStats, counter_index};
use traffic_ebpf::{parse::Ip, verdict::Verdict};

use crate::maps::{TRF_COUNTERS, TRF_PORT_STATS, TRF_PORTS};

/// Count a packet of `len` bytes under its verdict.
#[inline(always)]
pub fn verdict(v: &Verdict, len: u64) {
    let idx = counter_index(v.row, v.reason as u32, v.monitored);
    if let Some(c) = TRF_COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot of this CPU; XDP runs with migration disabled.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

/// Count a RST sent by the gate in its port's statistics.
#[inline(always)]
pub fn reset(ip: &Ip) {
    let key = PortKey {
        port: ip.l4.dport,
        protocol: ip.l4.protocol,
        _pad: 0,
    };
    let Some(rule) = TRF_PORTS.get_ptr(&key) else {
        return;
    };
    // SAFETY: a value pointer from the lookup above.
    let slot = unsafe { (*rule).slot };
    PortCounters::of(slot).bump(|s| s.resets += 1);
}

/// A port's per-CPU statistics slot, looked up in this invocation; none when the slot is
/// out of range (or for a class, which has no port statistics).
#[derive(Clone, Copy)]
pub struct PortCounters(Option<*mut PortStats>);

impl PortCounters {
    /// No statistics to count in.
    pub const NONE: Self = Self(None);

    /// The statistics of port slot `slot`.
    #[inline(always)]
    pub fn of(slot: u32) -> Self {
        Self(TRF_PORT_STATS.get_ptr_mut(slot))
    }

    /// Count one event.
    #[inline(always)]
    pub fn bump(self, count: impl FnOnce(&mut PortStats)) {
        if let Some(s) = self.0 {
            // SAFETY: this CPU's per-CPU value, looked up in `of` during this invocation;
            // XDP runs with migration disabled, so nothing else touches it meanwhile.
            count(unsafe { &mut *s });
        }
    }
}
