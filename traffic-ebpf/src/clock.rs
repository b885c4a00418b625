//! The kernel clock the stages share, read at most once per packet.

use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns};

use crate::maps::TRF_CLOCK;

/// The kernel clock, read at most once per packet.
///
/// The coarse clock (CLOCK_MONOTONIC as of the last tick) is what GCRA runs on: the fine one
/// reads the TSC, ~10 ns on bare metal and 35–45 ns in the VMs we measured. GCRA needs no
/// finer resolution than its shortest tolerance, and the daemon keeps every tolerance ≥
/// [`traffic_common::CLOCK_TICK_MAX_NS`]: refill then arrives a tick at a time and the
/// long-run rate stays exact.
///
/// Even the coarse clock's helper is a call, and on a CPU whose kernel returns through a
/// return thunk (AMD with the SRSO "Safe RET" mitigation) a call into the kernel and back
/// cost 10–30 ns of a known source's 60–75, depending on the hour (measured, suite
/// `variant`). The coarse clock only
/// moves at a tick, when `jiffies` moves too, and the verifier inlines `bpf_jiffies64` to
/// one load; so [`Clock::read`] keeps this CPU's last reading with its jiffy
/// ([`traffic_common::ClockCopy`]) and calls the helper once per jiffy.
pub struct Clock(u64);

impl Clock {
    /// A clock not read yet: [`Clock::now`] calls the helper.
    #[inline(always)]
    pub const fn unread() -> Self {
        Self(0)
    }

    /// The clock, read now: this CPU's copy while `jiffies` has not moved since it was
    /// taken, else the helper's reading (then kept with the new jiffy).
    ///
    /// The tick writes `jiffies` before the clock: a reading in between is the old tick's.
    /// It is kept only once the clock has moved past the copy, so a busy CPU never keeps a
    /// tick-old reading for the tick (it calls the helper until the clock moves, a few µs).
    /// Only a CPU that was idle for two ticks or more and wakes in that window keeps one:
    /// its clock then lags the coarse clock by one tick until the next jiffy, which can
    /// only delay refill (stricter), or once let a full bucket hold one tick's refill more.
    #[inline(always)]
    pub fn read() -> Self {
        // SAFETY: helper without arguments; the verifier inlines it to a load of `jiffies`.
        let jiffies = unsafe { bpf_jiffies64() };
        let Some(p) = TRF_CLOCK.get_ptr_mut(0) else {
            return Self::unread();
        };
        // SAFETY: this CPU's value; XDP runs with migration disabled.
        let copy = unsafe { &mut *p };
        if copy.jiffies == jiffies && copy.ns != 0 {
            return Self(copy.ns);
        }
        // SAFETY: helper without arguments.
        let ns = unsafe { bpf_ktime_get_coarse_ns() };
        if ns != copy.ns {
            copy.jiffies = jiffies;
            copy.ns = ns;
        }
        Self(ns)
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
