//! The traffic XDP program: parse → classify → limit → count, one action chosen in one place.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod gcra;
mod maps;
mod parse;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use traffic_common::{Reason, UNCLASSIFIED, counter_index};

use crate::{
    maps::TRF_COUNTERS,
    parse::{Cursor, Parsed},
    verdict::Verdict,
};

#[xdp]
pub fn traffic_xdp(ctx: XdpContext) -> u32 {
    let cursor = Cursor::new(ctx.data(), ctx.data_end());
    let len = cursor.len() as u64;
    let verdict = match parse::parse(&cursor) {
        Parsed::NonIp => Verdict {
            row: UNCLASSIFIED,
            reason: Reason::NonIp,
            monitored: false,
        },
        Parsed::Malformed => Verdict {
            row: UNCLASSIFIED,
            reason: Reason::Malformed,
            monitored: verdict::global_monitor().unwrap_or(true),
        },
        Parsed::Ip(ip) => verdict::decide(&ip, len),
    };
    count(&verdict, len);
    if verdict.reason.is_drop() && !verdict.monitored {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[inline(always)]
fn count(v: &Verdict, len: u64) {
    let idx = counter_index(v.row, v.reason as u32, v.monitored);
    if let Some(c) = TRF_COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot of this CPU; XDP runs with migration disabled.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
