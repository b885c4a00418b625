//! `trafficctl watch`: the verdict events the program sends through [`map_names::WATCH`]
//! while the daemon asks for them ([`GLOBAL_WATCH`]), and the per-CPU budget that bounds
//! them ([`map_names::WATCH_STATE`]).
//!
//! Off by default: with the flag clear the program pays one test of a word it has already
//! loaded. On, each CPU sends at most [`GlobalConfig::watch_budget`] events per second;
//! what it does not send (over budget, or the ring full) it counts.

use bytemuck::{Pod, Zeroable};

// The contract's constants and types are one vocabulary, split only by file.
use crate::*;

/// [`GlobalConfig::flags`]: send verdict events (someone is watching). A high bit, away
/// from the `GLOBAL_HAS_*` family.
pub const GLOBAL_WATCH: u32 = 1 << 16;
/// [`GlobalConfig::flags`]: with [`GLOBAL_WATCH`], send only drops (and would-drops in
/// monitor mode): every watcher asked for drops only, so passes need not cost a slot of
/// the budget.
pub const GLOBAL_WATCH_DROPS: u32 = 1 << 17;

/// Bytes of [`map_names::WATCH`] (a power of two and a multiple of the page size): 6,553
/// events of [`WatchEvent`]'s 40 bytes (+ 8 of ring header each) — several seconds of the
/// default budget on a few CPUs, so a reader that wakes late loses nothing.
pub const WATCH_RING_BYTES: u32 = 256 * 1024;
/// `max_entries` of [`map_names::WATCH_STATE`] (one budget per CPU).
pub const WATCH_STATE_ENTRIES: u32 = 1;
/// Events per second per CPU when the daemon sets no other budget.
pub const WATCH_BUDGET_DEFAULT: u32 = 1000;
/// The budget's window: one second.
pub const WATCH_WINDOW_NS: u64 = 1_000_000_000;

/// Pack a verdict for [`WatchState::scratch`]: the counter row, the reason, the XDP action
/// (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3), the monitored flag and the frame length.
#[inline(always)]
pub const fn pack_verdict(row: u32, reason: u32, action: u32, monitored: bool, len: u64) -> u64 {
    (row as u64 & 0xff)
        | (reason as u64 & 0xff) << 8
        | (action as u64 & 0xff) << 16
        | (monitored as u64) << 24
        | (len & 0xffff_ffff) << 32
}

/// The fields of [`pack_verdict`] into an event (the action as a `FATE_*`).
#[inline(always)]
pub fn unpack_verdict(packed: u64, ev: &mut WatchEvent) {
    ev.row = packed as u8;
    ev.reason = (packed >> 8) as u8;
    ev.fate = match (packed >> 16) as u8 {
        1 => FATE_DROP,
        3 => FATE_REPLY,
        _ => FATE_PASS,
    };
    ev.monitored = (packed >> 24) as u8 & 1;
    ev.len = (packed >> 32) as u32;
}

/// [`WatchEvent::fate`]: passed to the stack.
pub const FATE_PASS: u8 = 0;
/// [`WatchEvent::fate`]: dropped.
pub const FATE_DROP: u8 = 1;
/// [`WatchEvent::fate`]: answered with a TCP RST (sent back out of the interface).
pub const FATE_REPLY: u8 = 2;

/// One verdict, as sent through [`map_names::WATCH`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WatchEvent {
    /// When (kernel clock, CLOCK_MONOTONIC, ns; coarse: one tick).
    pub at_ns: u64,
    /// The packet's source ([`Addr`]); all zero when the frame has none (non-IP, malformed).
    pub addr: Addr,
    /// Interface it arrived on.
    pub ifindex: u32,
    /// Frame length, bytes.
    pub len: u32,
    /// Destination port, host order; 0 when unknown.
    pub dport: u16,
    /// IP protocol; 0 when unknown.
    pub protocol: u8,
    /// A [`Reason`] discriminant.
    pub reason: u8,
    /// Counter row: the class id, or [`UNCLASSIFIED`].
    pub row: u8,
    /// `FATE_*`: what happened to the frame.
    pub fate: u8,
    /// 1: a drop not enforced (monitor mode): the frame passed.
    pub monitored: u8,
    /// Explicit padding.
    pub _pad: u8,
}

/// Value of [`map_names::WATCH_STATE`] (per CPU): the budget's window and what was sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WatchState {
    /// Start of the current window (kernel clock, ns).
    pub window_ns: u64,
    /// Events taken from the budget in the current window.
    pub in_window: u64,
    /// Events sent, ever.
    pub sent: u64,
    /// Events not sent, ever: over the budget, or the ring was full.
    pub suppressed: u64,
    /// Scratch: the verdict being sent, parked here by the program (see its `watch.rs`).
    pub scratch: u64,
}

impl WatchState {
    /// Take one event from the budget at `now_ns`: whether it may be sent. A window older
    /// than [`WATCH_WINDOW_NS`] starts a new one. Counts a refusal in `suppressed`; the
    /// caller counts the send ([`WatchState::sent`]) or a full ring ([`WatchState::lost`]).
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, budget: u32) -> bool {
        if now_ns.wrapping_sub(self.window_ns) >= WATCH_WINDOW_NS {
            self.window_ns = now_ns;
            self.in_window = 0;
        }
        if self.in_window >= budget as u64 {
            self.suppressed += 1;
            return false;
        }
        self.in_window += 1;
        true
    }

    /// An event the budget allowed but the ring could not take.
    #[inline(always)]
    pub fn lost(&mut self) {
        self.suppressed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_its_count_per_window_then_suppresses() {
        let mut s = WatchState::default();
        let t0 = 5 * WATCH_WINDOW_NS;
        let sent = (0..10).filter(|i| s.take(t0 + i, 3)).count();
        assert_eq!((sent, s.suppressed), (3, 7));
        // Still the same window just before its end.
        assert!(!s.take(t0 + WATCH_WINDOW_NS - 1, 3));
        // A new window refills the budget.
        assert!(s.take(t0 + WATCH_WINDOW_NS, 3));
        assert_eq!(s.in_window, 1);
        assert_eq!(s.suppressed, 8);
    }

    #[test]
    fn a_zero_budget_sends_nothing_and_a_full_ring_is_counted() {
        let mut s = WatchState::default();
        assert!(!s.take(WATCH_WINDOW_NS, 0));
        assert!(s.take(WATCH_WINDOW_NS, 1));
        s.lost();
        assert_eq!(s.suppressed, 2);
    }

    #[test]
    fn a_packed_verdict_unpacks_to_its_fields() {
        let mut ev = WatchEvent::default();
        unpack_verdict(
            pack_verdict(UNCLASSIFIED, Reason::GateReset as u32, 3, false, 1514),
            &mut ev,
        );
        assert_eq!(
            (ev.row, ev.reason, ev.fate, ev.monitored, ev.len),
            (16, 10, FATE_REPLY, 0, 1514)
        );
        unpack_verdict(
            pack_verdict(3, Reason::PacketRate as u32, 2, true, 60),
            &mut ev,
        );
        assert_eq!(
            (ev.row, ev.fate, ev.monitored, ev.len),
            (3, FATE_PASS, 1, 60)
        );
        unpack_verdict(pack_verdict(0, Reason::Deny as u32, 1, false, 0), &mut ev);
        assert_eq!(ev.fate, FATE_DROP);
    }

    #[test]
    fn the_ring_is_a_power_of_two_of_pages() {
        assert!(WATCH_RING_BYTES.is_power_of_two());
        assert_eq!(WATCH_RING_BYTES % 4096, 0);
    }
}
