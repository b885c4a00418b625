//! The traffic XDP program: parse → classify → limit → count, one action chosen in one place.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod egress;
mod gcra;
mod maps;
mod parse;
mod reply;
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
    let (mut verdict, ip) = match parse::parse(&cursor) {
        Parsed::NonIp => (Verdict::new(UNCLASSIFIED, Reason::NonIp, false), None),
        Parsed::Malformed => (
            Verdict::new(
                UNCLASSIFIED,
                Reason::Malformed,
                verdict::global_monitor().unwrap_or(true),
            ),
            None,
        ),
        Parsed::Ip(ip) => (verdict::decide(&ip, len), Some(ip)),
    };
    if verdict.reset && !verdict.monitored {
        if let Some(ip) = &ip
            && reply::tcp_reset(&ctx, ip)
        {
            count(&verdict, len);
            count_reset(ip);
            return xdp_action::XDP_TX;
        }
        // No RST could be built (IPv4 options, IPv6 extension headers): a silent drop,
        // counted as one.
        verdict.reset = false;
        if verdict.reason == Reason::GateReset {
            verdict.reason = Reason::Gate;
        }
    }
    count(&verdict, len);
    if !verdict.reason.is_drop() || verdict.monitored {
        return xdp_action::XDP_PASS;
    }
    xdp_action::XDP_DROP
}

/// Count a RST sent by the gate in its port's statistics.
#[inline(always)]
fn count_reset(ip: &parse::Ip) {
    let key = traffic_common::PortKey {
        port: ip.l4.dport,
        protocol: ip.l4.protocol,
        _pad: 0,
    };
    if let Some(rule) = maps::TRF_PORTS.get_ptr(&key) {
        // SAFETY: value pointer from this lookup; per-CPU stats slot of this CPU.
        unsafe {
            if let Some(s) = maps::TRF_PORT_STATS.get_ptr_mut((*rule).slot) {
                (*s).resets += 1;
            }
        }
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
