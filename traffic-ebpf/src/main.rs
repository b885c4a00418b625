//! The traffic XDP program: parse → classify → port gate → fault injection → class limits
//! → count. The stages are in their own modules; the order they run in, and the mapping of
//! the verdict to one action, are here.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics: the bpf target has no CAS atomics in core::sync::atomic"
)]

mod admission;
mod bans;
mod bucket;
mod chaos;
mod classify;
mod clock;
mod count;
mod credit;
mod debt;
mod egress;
mod feeds;
mod gate;
mod limit;
mod maps;
mod passive;
mod reply;
mod table;
mod tally;
mod watch;

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use traffic_common::{
    Action, BYTE_LIMIT_SLOT, CLASS_MONITOR, GLOBAL_MONITOR, MAX_CLASSES, PORT_CLASS_OVERRIDE,
    Reason, RescaleRequest, UNCLASSIFIED,
};
use traffic_ebpf::{
    frame::Frame,
    parse::{self, Ip, Parsed},
    rescale,
    verdict::{Fate, Verdict},
};

use crate::{clock::Clock, count::PortCounters};

// Inlined into the entry the macro generates: as a BPF-to-BPF call it cost ~8 ns a packet
// on a CPU whose kernel returns through a return thunk (AMD, SRSO "Safe RET").
#[xdp]
#[inline(always)]
pub fn traffic_xdp(ctx: XdpContext) -> u32 {
    // SAFETY: `data..data_end` of an XDP context is the frame, writable for the program's
    // run; the only other view of it (`reply`) is formed after this one's last use.
    let frame = unsafe { Frame::new(ctx.data(), ctx.data_end()) };
    let len = frame.len() as u64;
    let v = judge(&ctx, &frame, len);
    count::verdict(&v, len);
    let act = action(&v);
    watch::verdict(&ctx, &v, act, len);
    act
}

/// The XDP action of a verdict's fate.
#[inline(always)]
fn action(v: &Verdict) -> u32 {
    match v.fate() {
        Fate::Pass => xdp_action::XDP_PASS,
        Fate::Drop => xdp_action::XDP_DROP,
        Fate::Reply => xdp_action::XDP_TX,
    }
}

/// The verdict on a frame. A verdict with `reset` set means the RST was built in the frame.
#[inline(always)]
fn judge(ctx: &XdpContext, frame: &Frame, len: u64) -> Verdict {
    let ip = match parse::parse(frame) {
        Parsed::NonIp => return Verdict::new(UNCLASSIFIED, Reason::NonIp, false),
        Parsed::Malformed => {
            let monitor = classify::global_monitor().unwrap_or(true);
            return Verdict::new(UNCLASSIFIED, Reason::Malformed, monitor);
        }
        Parsed::Ip(ip) => ip,
    };
    let v = decide(frame, &ip, len);
    if v.wants_reply() && reply::tcp_reset(ctx, &ip) {
        count::reset(&ip);
        return v;
    }
    // No RST asked for, or none could be built (IPv4 options, IPv6 extension headers).
    v.without_reply()
}

/// Classify an IP packet by its source and apply its port's gate and its class's limits.
#[inline(always)]
fn decide(frame: &Frame, ip: &Ip, len: u64) -> Verdict {
    let Some(cfg) = classify::global_config() else {
        // Loaded but not configured yet: pass everything.
        return Verdict::new(UNCLASSIFIED, Reason::Pass, false);
    };
    let global_monitor = cfg.flags & GLOBAL_MONITOR != 0;

    let Some((action, class, credit)) = classify::rule_of(ip.src, cfg) else {
        // The classification cache's lookup failed, which its masked index rules out.
        return Verdict::new(UNCLASSIFIED, Reason::Pass, false);
    };
    let row = if class < MAX_CLASSES {
        class
    } else {
        UNCLASSIFIED
    };
    if action == Action::Allow as u32 {
        return Verdict::new(row, Reason::Allow, false);
    }
    if action == Action::Deny as u32 || action == bans::BANNED || action == Action::FeedDeny as u32
    {
        let monitor = global_monitor
            || classify::class_config(class).is_some_and(|c| c.flags & CLASS_MONITOR != 0);
        let reason = if action == bans::BANNED {
            Reason::Banned
        } else if action == Action::Deny as u32 {
            Reason::Deny
        } else {
            Reason::FeedDeny
        };
        return Verdict::new(row, reason, monitor);
    }

    // A port rule may override the class.
    let port = gate::port_rule(cfg, frame, ip);
    let class = match port {
        Some(pr) if pr.rule().flags & PORT_CLASS_OVERRIDE != 0 => pr.rule().class,
        _ => class,
    };
    // A rule naming a missing class falls back to the default class.
    let (class, cc) = match classify::class_config(class) {
        Some(cc) => (class, cc),
        None => match classify::class_config(cfg.default_class) {
            Some(cc) => (cfg.default_class, cc),
            None => return Verdict::new(UNCLASSIFIED, Reason::Pass, false),
        },
    };
    let monitor = global_monitor || cc.flags & CLASS_MONITOR != 0;
    // A port the walk could not read may be a gated one: refused rather than let past every
    // port rule of its protocol (see `L4::hides_a_ruled_port`), when it is addressed to the
    // node (port rules never apply to traffic routed through it).
    if ip.l4.hides_a_ruled_port(cfg.flags) && gate::local_destination(frame, ip) {
        return Verdict::new(class, Reason::PortUnknown, monitor);
    }
    let mut clock = Clock::read();
    if let Some(pr) = port {
        if let Some(r) = gate::check(ip, pr, &mut clock) {
            let v = Verdict::new(class, r.reason, monitor).with_reset(r.reset);
            if v.wants_reply() && !gate::rst_allowed(pr, &mut clock) {
                // Over the port's RST budget: no reflector, a silent drop.
                return Verdict::new(class, Reason::RstBudget, monitor);
            }
            if v.monitored {
                // Passed on to the stack after all: its answer is the service's.
                passive::note_attempt(frame, ip, &mut clock);
            }
            return v;
        }
        passive::note_attempt(frame, ip, &mut clock);
    }
    if let Some(r) = chaos::inject(&cc.chaos, ip, &mut clock, PortCounters::NONE) {
        return Verdict::new(class, r.reason, monitor).with_reset(r.reset);
    }
    let syn = port
        .as_ref()
        .and_then(|pr| limit::PortLimit::of(ip, pr.rule()));
    // Credit only for a packet no port rule applies to: a port's own limits are charged
    // one packet at a time.
    let credit = (credit, port.is_none());
    let reason = limit::class_limits(ip, class, cc, len, syn, credit, &mut clock);
    Verdict::new(class, reason, monitor)
}

/// Compare-and-swap attempts per word before the rescale program reports contention.
const RESCALE_RETRIES: usize = 16;

/// The rescale program (`traffic_common::RESCALE_PROGRAM_NAME`): never attached; the daemon
/// runs it with BPF_PROG_TEST_RUN on a [`RescaleRequest`] to rescale one bucket where the
/// packets charge it, word by word with compare-and-swap, so nothing charged meanwhile is
/// lost. `XDP_PASS`: rescaled; `XDP_DROP`: no such bucket (never inserted); `XDP_TX`: a
/// word stayed contended through every attempt and was left as it was (asking again would
/// rescale the other words twice); `XDP_ABORTED`: not a request.
#[xdp]
pub fn traffic_rescale(ctx: XdpContext) -> u32 {
    // SAFETY: as in `traffic_xdp`; nothing else views this frame.
    let frame = unsafe { Frame::new(ctx.data(), ctx.data_end()) };
    let Some(raw) = frame.bytes::<{ size_of::<RescaleRequest>() }>(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: `raw` is `size_of::<RescaleRequest>()` readable bytes, read unaligned; the
    // type is plain data (every byte pattern is a value).
    let req: RescaleRequest = unsafe { core::ptr::read_unaligned(raw.as_ptr().cast()) };
    let addr = traffic_common::addr_words(&req.key.addr);
    let Some(table::Found { bucket: b, .. }) = table::find(addr, req.key.class) else {
        return xdp_action::XDP_DROP;
    };
    let now = Clock::unread().now();
    // SAFETY: a place expression on a bucket looked up in this invocation; nothing is read.
    let tat = unsafe { &raw mut (*b).tat }.cast::<u64>();
    let mut contended = false;
    for i in 0..=BYTE_LIMIT_SLOT {
        // SAFETY: i ≤ BYTE_LIMIT_SLOT, the last index of `tat`.
        let p = unsafe { tat.add(i) };
        let mut done = false;
        for _ in 0..RESCALE_RETRIES {
            // SAFETY: a live, aligned bucket word, changed by others only atomically.
            let cur = unsafe { bucket::load(p) };
            let next = rescale::rescaled(cur, &req.old[i], &req.new[i], now);
            if next == cur {
                done = true;
                break;
            }
            // SAFETY: as above. The returned old value is compared instead of the success
            // flag (see `bucket::charge`).
            let old = unsafe {
                atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                    p, cur, next,
                )
                .0
            };
            if old == cur {
                done = true;
                break;
            }
        }
        contended |= !done;
    }
    if contended {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_PASS
    }
}
