//! The kernel clock the stages share, read at most once per packet.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

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
