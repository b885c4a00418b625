//! TC egress: count the replies the node sends from the ports that have port rules —
//! SYN-ACKs (accepted handshakes), RSTs (refused or aborted connections) and ICMP port
//! unreachables (datagrams nobody listened for). These are the passive signal that trips a
//! failing service's breaker faster than probes alone. Never changes a packet.

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use traffic_common::{EgressStats, GLOBAL_HAS_PORTS, PortKey, proto};

use traffic_ebpf::{
    frame::Frame,
    hdr::{TCP_ACK, TCP_RST, TCP_SYN},
    parse::{self, Parsed},
};

use crate::maps::{TRF_CONFIG, TRF_EGRESS, TRF_PORTS};

#[classifier]
pub fn traffic_egress(ctx: TcContext) -> i32 {
    count(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn stats(protocol: u8, port: u16) -> Option<*mut EgressStats> {
    let key = PortKey {
        port,
        protocol,
        _pad: 0,
    };
    let rule = TRF_PORTS.get_ptr(&key)?;
    // SAFETY: a value pointer from a lookup in this invocation.
    let slot = unsafe { (*rule).slot };
    TRF_EGRESS.get_ptr_mut(slot)
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
    if ip.l4.known && ip.l4.protocol == proto::TCP {
        let flags = ip.l4.tcp_flags;
        let Some(s) = stats(proto::TCP, ip.l4.sport) else {
            return;
        };
        if flags & TCP_RST != 0 {
            // SAFETY: per-CPU slot of this CPU; TC runs with migration disabled.
            unsafe { (*s).resets += 1 };
        } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
            // SAFETY: as above.
            unsafe { (*s).syn_acks += 1 };
        }
    } else if let Some(port) = parse::icmp_unreachable_port(&c, &ip)
        && let Some(s) = stats(proto::UDP, port)
    {
        // SAFETY: per-CPU slot of this CPU; TC runs with migration disabled.
        unsafe { (*s).unreachables += 1 };
    }
}
