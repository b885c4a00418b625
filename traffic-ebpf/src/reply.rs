//! Answering a refused connection with a TCP RST+ACK: shrink the SYN to its headers, rewrite
//! them in place (`traffic_ebpf::rst`) and send the frame back with XDP_TX.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use traffic_ebpf::{frame::Frame, parse::Ip, rst};

/// The frame of `ctx` as it is now (it changes with `bpf_xdp_adjust_tail`).
#[inline(always)]
fn frame(ctx: &XdpContext) -> Frame {
    // SAFETY: `data..data_end` of an XDP context is the frame, writable for the program's
    // run; the program holds no other reference into it while the view is used.
    unsafe { Frame::new(ctx.data(), ctx.data_end()) }
}

/// Turn a TCP SYN into a RST+ACK back to its sender. Returns false (and leaves the decision
/// to drop) for headers this does not rewrite: IPv4 options or IPv6 extension headers.
#[inline(always)]
pub fn tcp_reset(ctx: &XdpContext, ip: &Ip) -> bool {
    let Some((seq, syn_data)) = rst::syn_extent(&frame(ctx), ip) else {
        return false;
    };
    // Shrink the frame to the headers of the reply.
    let want = rst::reply_len(ip);
    let have = ctx.data_end() - ctx.data();
    if have > want {
        let delta = (have - want) as i32;
        // SAFETY: helper call on our own context; a negative delta shrinks the tail.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -delta) } != 0 {
            return false;
        }
    }
    rst::rewrite(&frame(ctx), ip, seq, syn_data).is_some()
}
