//! TC egress: count the replies the node sends from the ports that have port rules —
//! SYN-ACKs (accepted handshakes), RSTs refusing a SYN that arrived and ICMP port
//! unreachables for a datagram that arrived (see `passive.rs`). These are the passive
//! signal that trips a failing service's breaker faster than probes alone. Never changes a
//! packet.

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use traffic_common::{EgressStats, GLOBAL_HAS_PORTS, Gate, PortKey, proto, words_addr};

use traffic_ebpf::{
    flow,
    frame::Frame,
    hdr::{TCP_ACK, TCP_RST, TCP_SYN},
    parse::{self, Ip, Parsed},
};

use crate::{
    clock::Clock,
    maps::{TRF_CONFIG, TRF_EGRESS, TRF_PORTS},
    passive,
};

#[classifier]
pub fn traffic_egress(ctx: TcContext) -> i32 {
    count(&ctx);
    TC_ACT_OK
}

/// The statistics slot of a port rule, its index and whether its gate is half-open.
#[inline(always)]
fn stats(protocol: u8, port: u16) -> Option<(*mut EgressStats, u32, bool)> {
    let key = PortKey {
        port,
        protocol,
        _pad: 0,
    };
    let rule = TRF_PORTS.get_ptr(&key)?;
    // SAFETY: a value pointer from a lookup in this invocation.
    let (slot, gate) = unsafe { ((*rule).slot, (*rule).gate) };
    let half_open = gate == Gate::HalfOpen as u32;
    Some((TRF_EGRESS.get_ptr_mut(slot)?, slot, half_open))
}

#[inline(always)]
fn count(ctx: &TcContext) {
    match TRF_CONFIG.get(0) {
        Some(cfg) if cfg.flags & GLOBAL_HAS_PORTS != 0 => {}
        _ => return,
    }
    // SAFETY: `data..data_end` of a TC context is the packet; only read here.
    let c = unsafe { Frame::new(ctx.data(), ctx.data_end()) };
    let Parsed::Ip(ip) = parse::parse(&c) else {
        return;
    };
    let mut clock = Clock::unread();
    if ip.l4.known && ip.l4.protocol == proto::TCP {
        tcp(&c, &ip, &mut clock);
    } else if let Some(k) = flow::quoted_udp(&c, &ip)
        && let Some((s, slot, half_open)) = stats(proto::UDP, k.port)
    {
        if passive::refused_datagram(&k, clock.now()) {
            passive::vote(s, slot, &k.addr, true, half_open);
        } else {
            // SAFETY: per-CPU slot of this CPU; TC runs with migration disabled.
            unsafe { (*s).unverified += 1 };
        }
    }
}

/// A TCP segment leaving a port-rule port: a SYN-ACK accepts an attempt, a RST+ACK acking
/// a SYN that arrived refuses it; any other RST is only counted as unverified.
#[inline(always)]
fn tcp(c: &Frame, ip: &Ip, clock: &mut Clock) {
    let flags = ip.l4.tcp_flags;
    let is_rst = flags & TCP_RST != 0;
    let is_syn_ack = flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
    if !is_rst && !is_syn_ack {
        return;
    }
    let Some((s, slot, half_open)) = stats(proto::TCP, ip.l4.sport) else {
        return;
    };
    if is_syn_ack {
        // SAFETY: per-CPU slot of this CPU; TC runs with migration disabled.
        unsafe { (*s).syn_acks += 1 };
    }
    // Only a reply with ACK can answer a SYN (the stack's RST to a bare SYN acks it).
    let reply = if flags & TCP_ACK != 0 {
        match (flow::dst(c, ip), flow::tcp_seq_ack(c, ip)) {
            (Some(peer), Some((_, ack))) => Some((words_addr(peer.0, peer.1), ack)),
            _ => None,
        }
    } else {
        None
    };
    let (sport, dport) = (ip.l4.sport, ip.l4.dport);
    if is_syn_ack {
        if let Some((peer, ack)) = reply {
            passive::accepted(peer, dport, sport, ack, clock.now());
        }
        return;
    }
    let refused = match reply {
        Some((peer, ack)) => passive::refused_syn(peer, dport, sport, ack, clock.now()),
        None => false,
    };
    if let (true, Some((peer, _))) = (refused, reply) {
        passive::vote(s, slot, &peer, false, half_open);
    } else {
        // SAFETY: per-CPU slot of this CPU; TC runs with migration disabled.
        unsafe { (*s).unverified += 1 };
    }
}
