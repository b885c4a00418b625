//! What the stages hand back: the verdict on a packet and a refusal decided before the
//! class limits; and the one mapping of a verdict to what happens to the frame. Pure, so
//! the monitor and reset rules are tested on the host; the order of the stages is in the
//! program's `main.rs`.

use traffic_common::Reason;

/// The verdict on one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Counter row: the class id, or [`traffic_common::UNCLASSIFIED`].
    pub row: u32,
    pub reason: Reason,
    /// A drop reason that is not enforced because the class or program is in monitor mode.
    pub monitored: bool,
    /// Refuse with a TCP RST (sent back with XDP_TX) instead of a silent drop.
    pub reset: bool,
}

/// What happens to the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// On to the stack.
    Pass,
    /// Dropped.
    Drop,
    /// Rewritten into a RST and sent back out of the interface.
    Reply,
}

impl Verdict {
    /// A verdict; `monitored` only sticks to a drop reason.
    #[inline(always)]
    pub const fn new(row: u32, reason: Reason, monitored: bool) -> Self {
        Self {
            row,
            reason,
            monitored: monitored && reason.is_drop(),
            reset: false,
        }
    }

    /// Ask for a RST; only a drop can be answered with one.
    #[inline(always)]
    pub const fn with_reset(mut self, reset: bool) -> Self {
        self.reset = reset && self.reason.is_drop();
        self
    }

    /// Whether a RST should be built: asked for, and enforced (not monitored).
    #[inline(always)]
    pub const fn wants_reply(&self) -> bool {
        self.reset && !self.monitored
    }

    /// No RST was sent (none asked, monitored, or the headers could not be rewritten): a
    /// gate reset that was to be sent becomes a silent gate drop, counted as one.
    #[inline(always)]
    pub fn without_reply(mut self) -> Self {
        if self.wants_reply() && self.reason == Reason::GateReset {
            self.reason = Reason::Gate;
        }
        self.reset = false;
        self
    }

    /// The one mapping of a verdict to the frame's fate. `reset` set means the RST was
    /// built in the frame.
    #[inline(always)]
    pub fn fate(&self) -> Fate {
        if self.reset {
            Fate::Reply
        } else if !self.reason.is_drop() || self.monitored {
            Fate::Pass
        } else {
            Fate::Drop
        }
    }
}

/// A drop decided before the class limits: its reason and whether to answer with RST.
pub struct Refusal {
    pub reason: Reason,
    pub reset: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_mode_only_marks_drops_and_passes_them() {
        let v = Verdict::new(3, Reason::PacketRate, true);
        assert!(v.monitored);
        assert_eq!(v.fate(), Fate::Pass);
        let v = Verdict::new(3, Reason::Pass, true);
        assert!(!v.monitored);
        assert_eq!(v.fate(), Fate::Pass);
        assert_eq!(
            Verdict::new(3, Reason::PacketRate, false).fate(),
            Fate::Drop
        );
        assert_eq!(Verdict::new(3, Reason::Allow, false).fate(), Fate::Pass);
    }

    #[test]
    fn only_a_drop_asks_for_a_reset() {
        assert!(!Verdict::new(1, Reason::Pass, false).with_reset(true).reset);
        let v = Verdict::new(1, Reason::GateReset, false).with_reset(true);
        assert!(v.wants_reply());
        assert_eq!(v.fate(), Fate::Reply);
    }

    #[test]
    fn a_reset_not_sent_is_a_counted_gate_drop() {
        let v = Verdict::new(1, Reason::GateReset, false)
            .with_reset(true)
            .without_reply();
        assert_eq!(
            (v.reason, v.reset, v.fate()),
            (Reason::Gate, false, Fate::Drop)
        );
        // Chaos resets keep their reason.
        let v = Verdict::new(1, Reason::Chaos, false)
            .with_reset(true)
            .without_reply();
        assert_eq!((v.reason, v.fate()), (Reason::Chaos, Fate::Drop));
    }

    #[test]
    fn a_monitored_reset_is_neither_sent_nor_renamed() {
        let v = Verdict::new(1, Reason::GateReset, true).with_reset(true);
        assert!(!v.wants_reply());
        let v = v.without_reply();
        assert_eq!((v.reason, v.fate()), (Reason::GateReset, Fate::Pass));
    }
}
