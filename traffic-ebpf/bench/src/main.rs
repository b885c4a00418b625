//! Benchmark companions of the traffic program (the `traffic-ebpf-bench` object, embedded
//! by the benchmark harness `xtask/bench`, never by trafficd):
//!
//! - `floor_drop`: a bare XDP_DROP, the floor that program cost is measured against.
//! - `gen_flood`: the packet generator of the veth floods. Run with BPF_PROG_TEST_RUN and
//!   `BPF_F_TEST_XDP_LIVE_FRAMES` on one veth end, it rewrites the source of every frame
//!   (a flood over `flood_mask + 1` sources, optionally interleaved with legitimate sources
//!   sending at a steady rate) and returns XDP_TX, so the frames reach the peer, where the
//!   filter under test runs, as xdp_frames — the closest veth gets to a NIC's receive path.
//! - `spoof_tail`: the same rewrite for a plain test-run, then a tail call into slot 0 of
//!   `BENCH_JUMP`. Test-run repeats one frame; this makes every repeat a new source. With
//!   the traffic program in the slot, its mean time is "rewrite + tail call + traffic on a
//!   new source"; with `floor_drop` in the slot, it is the rewrite-and-dispatch baseline, so
//!   the difference is the traffic program's work on a new source, measured exactly like the
//!   known-source figures (test-run mean minus its floor in the same run). A tail call
//!   across objects works: the slot holds the program's fd, and both are plain XDP programs.
//!
//! The layout of the maps below is this crate's library, which the benchmark uses too.
//! Panic handler and licence come from `traffic-ebpf`'s library.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, PerCpuArray, ProgramArray},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use traffic_ebpf::{csum, frame::Frame};
use traffic_ebpf_bench::{
    FAMILY_V4, FAMILY_V6, GenConfig, GenState, LegitStat, MAX_LEGIT, MAX_LEGIT_LAG_NS,
    SOURCE_WORD_OFFSET, V4_CSUM_OFFSET, V4_UDP_CSUM_OFFSET, V6_UDP_CSUM_OFFSET, flood_pace,
};

#[btf_map]
static BENCH_CONFIG: Array<GenConfig, 1> = Array::new();

#[btf_map]
static BENCH_STATE: PerCpuArray<GenState, 1> = PerCpuArray::new();

#[btf_map]
static BENCH_LEGIT: Array<LegitStat, { MAX_LEGIT as usize }> = Array::new();

#[btf_map]
static BENCH_JUMP: ProgramArray<1> = ProgramArray::new();

#[xdp]
pub fn floor_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
pub fn gen_flood(ctx: XdpContext) -> u32 {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if ahead_of_schedule(now) {
        return xdp_action::XDP_DROP;
    }
    match rewrite(&ctx, Some(now)) {
        Some(()) => xdp_action::XDP_TX,
        // Not configured, or the template does not fit the configured layout: send nothing.
        None => xdp_action::XDP_DROP,
    }
}

#[xdp]
pub fn spoof_tail(ctx: XdpContext) -> u32 {
    if rewrite(&ctx, None).is_none() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: a tail call with this program's own context; on success it does not return.
    unsafe { BENCH_JUMP.tail_call(&ctx, 0) };
    // Empty slot: visible to the benchmark as XDP_ABORTED, never as a plausible verdict.
    xdp_action::XDP_ABORTED
}

/// Whether a paced flood's next frame is not due yet at `now` (then held back and counted);
/// else the frame goes and the next one is scheduled.
#[inline(always)]
fn ahead_of_schedule(now: u64) -> bool {
    let (Some(cfg), Some(st)) = (BENCH_CONFIG.get(0), BENCH_STATE.get_ptr_mut(0)) else {
        return false;
    };
    if cfg.flood_interval_ns == 0 {
        return false;
    }
    // SAFETY: per-CPU value of this CPU; XDP runs with migration disabled.
    let st = unsafe { &mut *st };
    match flood_pace(st.next_flood_ns, now, cfg.flood_interval_ns) {
        Some(next) => {
            st.next_flood_ns = next;
            false
        }
        None => {
            st.held += 1;
            true
        }
    }
}

/// Pick the next source (a flood source, or a legitimate one when its turn is due — only
/// with a clock, i.e. in the generator) and write it into the frame.
#[inline(always)]
fn rewrite(ctx: &XdpContext, now: Option<u64>) -> Option<()> {
    let cfg = BENCH_CONFIG.get(0)?;
    let st = BENCH_STATE.get_ptr_mut(0)?;
    // SAFETY: per-CPU value of this CPU; XDP runs with migration disabled.
    let st = unsafe { &mut *st };
    let mut word = None;
    if let Some(now) = now {
        if st.first_ns == 0 {
            st.first_ns = now;
        }
        st.last_ns = now;
        if cfg.legit_count != 0 && now >= st.next_legit_ns {
            word = legit(cfg, st, now);
        }
    }
    let word = match word {
        Some(w) => w,
        None => {
            let w = cfg.flood_base + (st.seq & cfg.flood_mask);
            st.seq += 1;
            w
        }
    };
    write_source(ctx, cfg.family, word as u32)
}

/// The legitimate source whose turn it is; schedules the next one.
#[inline(always)]
fn legit(cfg: &GenConfig, st: &mut GenState, now: u64) -> Option<u64> {
    let i = if st.legit_next < cfg.legit_count {
        st.legit_next
    } else {
        0
    };
    let stat = BENCH_LEGIT.get_ptr_mut(i as u32)?;
    // SAFETY: array value from this lookup; only the generator (one CPU) writes it.
    let stat = unsafe { &mut *stat };
    stat.sent += 1;
    if stat.first_ns == 0 {
        stat.first_ns = now;
    }
    stat.last_ns = now;
    st.legit_next = if i + 1 >= cfg.legit_count { 0 } else { i + 1 };
    // A steady schedule; after a long stall (preemption) skip ahead rather than burst.
    let due = if st.next_legit_ns + MAX_LEGIT_LAG_NS < now {
        now
    } else {
        st.next_legit_ns
    };
    st.next_legit_ns = due + cfg.legit_interval_ns;
    st.legit_sent += 1;
    Some(cfg.legit_base + i)
}

/// Replace the source word and patch the checksums that cover it.
#[inline(always)]
fn write_source(ctx: &XdpContext, family: u64, word: u32) -> Option<()> {
    // SAFETY: `data..data_end` of an XDP context is the frame, writable for the program's
    // run; nothing else holds a reference into it.
    let f = unsafe { Frame::new(ctx.data(), ctx.data_end()) };
    let (ip_csum, udp_csum) = if family == FAMILY_V4 {
        (Some(V4_CSUM_OFFSET), V4_UDP_CSUM_OFFSET)
    } else if family == FAMILY_V6 {
        (None, V6_UDP_CSUM_OFFSET)
    } else {
        return None;
    };
    // The last field touched first: a frame too short for the layout is left unchanged.
    let udp = f.bytes_mut::<2>(udp_csum)?;
    let src = f.bytes_mut::<4>(SOURCE_WORD_OFFSET)?;
    let old = u32::from_be_bytes(*src);
    *src = word.to_be_bytes();
    if let Some(off) = ip_csum {
        patch(f.bytes_mut::<2>(off)?, old, word, false);
    }
    patch(udp, old, word, true);
    Some(())
}

/// Patch the checksum `at` for a covered word changing from `old` to `new`. A UDP checksum
/// of 0 means "none" over IPv4 and stays 0; a computed 0 is sent as 0xffff.
#[inline(always)]
fn patch(at: &mut [u8; 2], old: u32, new: u32, udp: bool) {
    let sum = u16::from_be_bytes(*at);
    if udp && sum == 0 {
        return;
    }
    let mut updated = csum::replace4(sum, old, new);
    if udp && updated == 0 {
        updated = 0xffff;
    }
    *at = updated.to_be_bytes();
}
