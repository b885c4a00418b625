//! Counting verdicts: every packet in its (row, reason, monitored) counter, and each RST the
//! gate sent in its port's statistics.

use traffic_common::{PortKey, counter_index};
use traffic_ebpf::parse::Ip;

use crate::{
    maps::{TRF_COUNTERS, TRF_PORT_STATS, TRF_PORTS},
    verdict::Verdict,
};

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
    if let Some(s) = TRF_PORT_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU stats slot of this CPU; XDP runs with migration disabled.
        unsafe { (*s).resets += 1 };
    }
}
