//! What the stages hand back: the verdict on a packet, a refusal decided before the class
//! limits, and the clock they share. No decisions here; the order of the stages is in
//! `main.rs`.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use traffic_common::Reason;

/// The verdict on one packet.
pub struct Verdict {
    /// Counter row: the class id, or [`traffic_common::UNCLASSIFIED`].
    pub row: u32,
    pub reason: Reason,
    /// A drop reason that is not enforced because the class or program is in monitor mode.
    pub monitored: bool,
    /// Refuse with a TCP RST (sent back with XDP_TX) instead of a silent drop.
    pub reset: bool,
}

impl Verdict {
    #[inline(always)]
    pub const fn new(row: u32, reason: Reason, monitored: bool) -> Self {
        Self {
            row,
            reason,
            monitored: monitored && reason.is_drop(),
            reset: false,
        }
    }

    #[inline(always)]
    pub const fn with_reset(mut self, reset: bool) -> Self {
        self.reset = reset && self.reason.is_drop();
        self
    }
}

/// A drop decided before the class limits: its reason and whether to answer with RST.
pub struct Refusal {
    pub reason: Reason,
    pub reset: bool,
}

/// The kernel clock, read at most once per packet.
///
/// The coarse clock (CLOCK_MONOTONIC as of the last tick) costs a few loads; the fine one
/// reads the TSC: ~10 ns on bare metal, 35–45 ns in the VMs we measured — a quarter of a
/// known source's verdict. GCRA needs no finer resolution than its shortest tolerance, and
/// the daemon keeps every tolerance ≥ [`traffic_common::CLOCK_TICK_MAX_NS`]: refill then
/// arrives a tick at a time and the long-run rate stays exact.
pub struct Clock(u64);

impl Clock {
    /// A clock not read yet.
    #[inline(always)]
    pub const fn unread() -> Self {
        Self(0)
    }

    #[inline(always)]
    pub fn now(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: helper without arguments.
            self.0 = unsafe { bpf_ktime_get_coarse_ns() };
        }
        self.0
    }
}
