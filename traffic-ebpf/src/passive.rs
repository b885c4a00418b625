//! The passive breaker signal, both halves: the XDP program remembers each attempt (a TCP
//! SYN, a UDP datagram) to a port-rule port; the TC egress program counts a RST or ICMP
//! port unreachable as a refusal only when it answers one of them — a RST+ACK acking the
//! SYN's sequence + 1, an unreachable quoting the datagram — and consumes the attempt, so
//! a bare ACK, RST or FIN flood (each answered by the stack with a RST) is no refusal, and
//! one SYN is at most one. Consecutive refusals of one peer (/32 or /64) count once.

use traffic_common::{
    Addr, EgressStats, FLOW_ANSWER_NS, FLOW_ANSWERED, FLOW_ANSWERED_NS, FLOW_PENDING, FlowKey,
    FlowSeen, proto, words_addr,
};
use traffic_ebpf::{flow, frame::Frame, parse::Ip};

use crate::{
    clock::Clock,
    maps::{TRF_FAIL_SRC, TRF_FLOWS},
};

/// Remember an attempt that reached a port-rule port (XDP, after the gate let it through).
/// A SYN keeps the first sequence number of its 4-tuple while the attempt is live: a later
/// SYN on the same 4-tuple (which a half-open or established socket answers with a RST
/// acking *its* sequence) cannot pose as a refused attempt.
#[inline(always)]
pub fn note_attempt(f: &Frame, ip: &Ip, clock: &mut Clock) {
    let udp = ip.l4.protocol == proto::UDP && ip.l4.known;
    if !udp && !ip.l4.is_new_tcp() {
        return;
    }
    let seq = if udp {
        0
    } else {
        match flow::tcp_seq_ack(f, ip) {
            Some((seq, _)) => seq,
            None => return,
        }
    };
    let k = flow::key(
        words_addr(ip.src.0, ip.src.1),
        ip.l4.sport,
        ip.l4.dport,
        ip.l4.protocol,
    );
    let now = clock.now();
    if let Some(e) = TRF_FLOWS.get_ptr_mut(&k) {
        // SAFETY: a value of this invocation's lookup; a racing writer can at worst make one
        // attempt's entry that of another attempt of the same 4-tuple.
        let e = unsafe { &mut *e };
        let age = now.saturating_sub(e.at_ns);
        // A UDP flow refreshes its entry at most once a second (not a shared write per
        // datagram), well inside the answer window.
        let live = if e.state == FLOW_ANSWERED {
            age < FLOW_ANSWERED_NS
        } else if udp {
            age < FLOW_ANSWER_NS / 3
        } else {
            age < FLOW_ANSWER_NS
        };
        if !live {
            e.at_ns = now;
            e.seq = seq;
            e.state = FLOW_PENDING;
        }
        return;
    }
    let fresh = FlowSeen {
        at_ns: now,
        seq,
        state: FLOW_PENDING,
    };
    let _ = TRF_FLOWS.insert(&k, &fresh, 0);
}

/// A pending attempt of `k` still inside the answer window, if any.
#[inline(always)]
fn pending(k: &FlowKey, now: u64) -> Option<*mut FlowSeen> {
    let e = TRF_FLOWS.get_ptr_mut(k)?;
    // SAFETY: a value of this invocation's lookup, read only here.
    let (state, at) = unsafe { ((*e).state, (*e).at_ns) };
    (state == FLOW_PENDING && now.saturating_sub(at) <= FLOW_ANSWER_NS).then_some(e)
}

/// A SYN-ACK left port `port` for `peer`: the attempt was accepted, and its entry now
/// guards the 4-tuple (see [`note_attempt`]).
#[inline(always)]
pub fn accepted(peer: Addr, peer_port: u16, port: u16, ack: u32, now: u64) {
    let k = flow::key(peer, peer_port, port, proto::TCP);
    if let Some(e) = pending(&k, now) {
        // SAFETY: as in `pending`; a racing reader sees either state.
        unsafe {
            if (*e).seq.wrapping_add(1) == ack {
                (*e).state = FLOW_ANSWERED;
                (*e).at_ns = now;
            }
        }
    }
}

/// Whether a RST+ACK (`ack`) leaving `port` for `peer` refuses a SYN that arrived; the
/// attempt is consumed.
#[inline(always)]
pub fn refused_syn(peer: Addr, peer_port: u16, port: u16, ack: u32, now: u64) -> bool {
    let k = flow::key(peer, peer_port, port, proto::TCP);
    let Some(e) = pending(&k, now) else {
        return false;
    };
    // SAFETY: as in `pending`.
    if unsafe { (*e).seq }.wrapping_add(1) != ack {
        return false;
    }
    let _ = TRF_FLOWS.remove(&k);
    true
}

/// Whether an ICMP port unreachable quoting `k` refuses a datagram that arrived; the
/// attempt is consumed.
#[inline(always)]
pub fn refused_datagram(k: &FlowKey, now: u64) -> bool {
    if pending(k, now).is_none() {
        return false;
    }
    let _ = TRF_FLOWS.remove(k);
    true
}

/// Count a refusal of `peer` on port slot `slot`: as a vote when the port's last refusal
/// came from another peer, as a repeat otherwise. While the gate is half-open every refusal
/// is a vote: only the kernel's bounded trials reach the service then, and a failed trial
/// can only keep a breaker open, never open a closed one.
#[inline(always)]
pub fn vote(s: *mut EgressStats, slot: u32, peer: &Addr, udp: bool, half_open: bool) {
    let voter = flow::voter(peer);
    let new = match TRF_FAIL_SRC.get_ptr_mut(slot) {
        // SAFETY: a value of this invocation's lookup. Two CPUs racing on it can at worst
        // count one extra vote or repeat.
        Some(last) => unsafe {
            let same = (*last).prefix == voter;
            (*last).prefix = voter;
            !same || half_open
        },
        None => true,
    };
    // SAFETY: `s` is this CPU's per-CPU slot; TC runs with migration disabled.
    unsafe {
        if !new {
            (*s).repeated += 1;
        } else if udp {
            (*s).unreachables += 1;
        } else {
            (*s).resets += 1;
        }
    }
}
