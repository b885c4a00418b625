//! `trafficctl watch`: a sampled event per verdict through the ring buffer, only while the
//! daemon sets [`GLOBAL_WATCH`] (someone is watching). Off, a packet pays one test of a
//! word of the (already hot) global entry. On, each CPU sends at most the budget per second
//! ([`WatchState::take`]) and counts what it did not send; the frame is parsed again here
//! rather than carried through every stage, so the verdict path is unchanged.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use traffic_common::{
    FATE_DROP, FATE_PASS, FATE_REPLY, GLOBAL_WATCH, GLOBAL_WATCH_DROPS, WatchEvent, v4_mapped,
    words_addr,
};
use traffic_ebpf::{
    frame::Frame,
    parse::{self, Parsed},
    verdict::{Fate, Verdict},
};

use crate::maps::{TRF_CONFIG, TRF_WATCH, TRF_WATCH_ST};

/// Send the verdict on a frame of `len` bytes to the watchers, if any.
#[inline(always)]
pub fn verdict(ctx: &XdpContext, frame: &Frame, v: &Verdict, len: u64) {
    let Some(cfg) = TRF_CONFIG.get(0) else {
        return;
    };
    if cfg.flags & GLOBAL_WATCH == 0 {
        return;
    }
    // The kernel-side pre-filter: every watcher asked for drops only.
    if cfg.flags & GLOBAL_WATCH_DROPS != 0 && !v.reason.is_drop() {
        return;
    }
    send(ctx, frame, v, len, cfg.watch_budget);
}

#[inline(always)]
fn send(ctx: &XdpContext, frame: &Frame, v: &Verdict, len: u64, budget: u32) {
    let Some(st) = TRF_WATCH_ST.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's per-CPU value; XDP runs with migration disabled, so nothing else
    // touches it meanwhile.
    let st = unsafe { &mut *st };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !st.take(now, budget) {
        return;
    }
    let fate = match v.fate() {
        Fate::Pass => FATE_PASS,
        Fate::Drop => FATE_DROP,
        Fate::Reply => FATE_REPLY,
    };
    let mut ev = WatchEvent {
        at_ns: now,
        ifindex: ctx.ingress_ifindex() as u32,
        len: len as u32,
        reason: v.reason as u8,
        row: v.row as u8,
        fate,
        monitored: u8::from(v.monitored),
        ..WatchEvent::default()
    };
    who(frame, fate == FATE_REPLY, &mut ev);
    if TRF_WATCH.output(&ev, 0).is_ok() {
        st.sent += 1;
    } else {
        st.lost();
    }
}

/// The sender and the port it addressed. A frame rewritten into a RST has its addresses
/// and ports swapped: the peer is then its destination, the port its source port.
#[inline(always)]
fn who(frame: &Frame, swapped: bool, ev: &mut WatchEvent) {
    let Parsed::Ip(ip) = parse::parse(frame) else {
        return;
    };
    ev.protocol = ip.l4.protocol;
    if !swapped {
        ev.addr = words_addr(ip.src.0, ip.src.1);
        ev.dport = ip.l4.dport;
        return;
    }
    ev.dport = ip.l4.sport;
    if ip.v6 {
        if let Some(a) = frame.read::<16>(ip.l3_off + 24) {
            ev.addr = a;
        }
    } else if let Some(a) = frame.read::<4>(ip.l3_off + 16) {
        ev.addr = v4_mapped(a);
    }
}
