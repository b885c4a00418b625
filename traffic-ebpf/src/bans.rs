//! Bans: looked up in [`TRF_BANS`] only when a source is (re)classified, cached with the
//! classification, and their expiry compared with the clock on every use, so a ban ends on
//! time whether or not the daemon runs.

use aya_ebpf::{btf_maps::lpm_trie::Key, helpers::bpf_ktime_get_coarse_ns};
use traffic_common::{Action, BAN_FORCE, words_addr};

use crate::maps::TRF_BANS;

/// The action [`crate::classify::rule_of`] returns for a banned source: outside the
/// [`Action`] discriminants, so no rule can carry it. A small constant on purpose: with
/// `u32::MAX` the comparisons came out wrong in the program (a BPF immediate is a
/// sign-extended 32-bit value), and a banned source was counted as `deny` or passed.
pub const BANNED: u32 = 0x100;

/// End of the ban covering a source whose rule action is `action` (kernel clock, ns), or 0
/// when no ban applies: none covers it, or an `allow` rule wins over a ban without
/// [`BAN_FORCE`].
#[inline(always)]
pub fn lookup(src: (u64, u64), action: u32) -> u64 {
    match TRF_BANS.get(&Key::new(128, words_addr(src.0, src.1))) {
        Some(b) if action != Action::Allow as u32 || b.flags & BAN_FORCE != 0 => b.until_ns,
        _ => 0,
    }
}

/// The action for a source with rule action `action` and cached ban end `until` (0: none):
/// [`BANNED`] while the ban lasts. The clock is read only for a source with a ban.
#[inline(always)]
pub fn apply(action: u32, until: u64) -> u32 {
    // SAFETY: helper without arguments.
    if until != 0 && unsafe { bpf_ktime_get_coarse_ns() } < until {
        BANNED
    } else {
        action
    }
}
