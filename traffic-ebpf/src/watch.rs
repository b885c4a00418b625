//! `trafficctl watch`: a sampled event per verdict through the ring buffer, only while the
//! daemon sets [`GLOBAL_WATCH`] (someone is watching). Off, a packet pays one test of a
//! word of the (already hot) global entry. On, each CPU sends at most the budget per second
//! ([`WatchState::take`]) and counts what it did not send; the frame is parsed again here
//! rather than carried through every stage, so the verdict path is unchanged.
//!
//! The verifier walks this code once per path through the stages, each with its verdict
//! as constants: inlined as is, that multiplied past its 1M-instruction limit. So the
//! verdict is first parked in map memory ([`WatchState::scratch`]) and read back: from
//! there on it is one unknown value on every path, and the walks merge.

use aya_ebpf::{bindings::xdp_md, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use traffic_common::{
    FATE_REPLY, GLOBAL_WATCH, GLOBAL_WATCH_DROPS, Reason, WatchEvent, WatchState, pack_verdict,
    unpack_verdict, v4_mapped, words_addr,
};
use traffic_ebpf::{
    frame::Frame,
    parse::{self, Parsed},
    verdict::Verdict,
};

use crate::maps::{TRF_CONFIG, TRF_WATCH, TRF_WATCH_ST};

/// Send the verdict on a frame of `len` bytes, and the XDP action it got, to the
/// watchers, if any.
#[inline(always)]
pub fn verdict(ctx: &XdpContext, v: &Verdict, action: u32, len: u64) {
    let Some(cfg) = TRF_CONFIG.get(0) else {
        return;
    };
    if cfg.flags & GLOBAL_WATCH == 0 {
        return;
    }
    let Some(st) = TRF_WATCH_ST.get_ptr_mut(0) else {
        return;
    };
    let packed = pack_verdict(v.row, v.reason as u32, action, v.monitored, len);
    // SAFETY: this CPU's per-CPU value; XDP runs with migration disabled, so nothing else
    // touches it meanwhile. Volatile, so the value really goes through memory.
    let packed = unsafe {
        let p = &raw mut (*st).scratch;
        core::ptr::write_volatile(p, packed);
        core::ptr::read_volatile(p)
    };
    let flags_budget = u64::from(cfg.flags) << 32 | u64::from(cfg.watch_budget);
    send(ctx.ctx, st, packed, flags_budget);
}

/// The watch path proper, a function of its own (a BPF-to-BPF call): inlined, its code
/// cost every packet about 8 ns with the flag off (register pressure on the verdict path,
/// measured with the testrun bench); called, the flag-off path is the test above alone.
/// `flags_budget`: the global flags in the high word, the budget in the low one.
#[inline(never)]
fn send(ctx: *mut xdp_md, st: *mut WatchState, packed: u64, flags_budget: u64) {
    let (flags, budget) = ((flags_budget >> 32) as u32, flags_budget as u32);
    let ctx = XdpContext::new(ctx);
    // SAFETY: this CPU's per-CPU value (see `verdict`).
    let st = unsafe { &mut *st };
    let mut ev = WatchEvent::default();
    unpack_verdict(packed, &mut ev);
    // The kernel-side pre-filter: every watcher asked for drops only.
    if flags & GLOBAL_WATCH_DROPS != 0 && u32::from(ev.reason) < Reason::FIRST_DROP {
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !st.take(now, budget) {
        return;
    }
    ev.at_ns = now;
    ev.ifindex = ctx.ingress_ifindex() as u32;
    // A view of its own: building a RST may have resized the frame, which invalidates
    // every pointer into it taken before (the verifier forgets them).
    // SAFETY: `data..data_end` of the XDP context, as in `traffic_xdp`; nothing writes the
    // frame any more.
    let frame = unsafe { Frame::new(ctx.data(), ctx.data_end()) };
    who(&frame, ev.fate == FATE_REPLY, &mut ev);
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
