//! From a class's configured limits and a multiplier to the kernel's [`ClassConfig`].
//!
//! Everything the XDP program would otherwise have to divide is computed here: GCRA
//! intervals (ns per packet, ns per byte × 2¹⁶), tolerances (burst × interval) and the
//! aggregation masks.

use traffic_common::{
    BYTE_INTERVAL_SHIFT, CLASS_ACTIVE, CLASS_ADMISSION, CLASS_BYTES, CLASS_MONITOR,
    CLOCK_TICK_MAX_NS, ClassConfig, Limit, MAX_BYTE_INTERVAL, MAX_PACKET_LIMITS,
    V4_MAPPED_PREFIX_BITS,
};

use crate::config::{ClassSpec, Mode, RateLimit};

const NS_PER_SEC: f64 = 1e9;
/// Smallest byte burst after scaling: one full Ethernet frame must always fit.
pub const MIN_BYTE_BURST: u64 = 1514;
/// What a frame adds to its interface's MTU: the Ethernet header and two VLAN tags.
pub const FRAME_OVERHEAD: u64 = 14 + 2 * 4;

/// The largest frame interfaces of these MTUs can deliver (never below [`MIN_BYTE_BURST`]).
pub fn largest_frame(mtus: impl IntoIterator<Item = u32>) -> u64 {
    mtus.into_iter()
        .map(|m| u64::from(m) + FRAME_OVERHEAD)
        .fold(MIN_BYTE_BURST, u64::max)
}

/// Raise a byte limit's tolerance to hold one frame of `max_frame` bytes, as the program
/// costs it: a frame costlier than the tolerance could never pass, however idle its source.
pub fn floor_byte_tolerance(l: &mut Limit, max_frame: u64) {
    if l.interval == 0 {
        return;
    }
    let cost = max_frame.saturating_mul(l.interval) >> BYTE_INTERVAL_SHIFT;
    l.tolerance = l.tolerance.max(cost);
}

/// A limit's rate and burst after scaling by `factor` (burst never below `min_burst`).
pub fn scaled(l: &RateLimit, factor: f64, min_burst: u64) -> RateLimit {
    RateLimit {
        rate_per_sec: l.rate_per_sec * factor,
        burst: ((l.burst as f64 * factor).round() as u64).max(min_burst),
    }
}

/// GCRA parameters of a packet limit (`rate` packets/s, `burst` packets). The tolerance is
/// at least one tick of the program's coarse clock ([`CLOCK_TICK_MAX_NS`]): a tick's refill
/// arrives at once and must fit, or the clock would cap the rate at `burst` per tick. Only
/// limits faster than `burst` per 10 ms are affected: they get a 10 ms burst instead.
pub fn packet_gcra(l: &RateLimit) -> Limit {
    let interval = (NS_PER_SEC / l.rate_per_sec)
        .round()
        .clamp(1.0, u64::MAX as f64) as u64;
    Limit {
        interval,
        tolerance: interval.saturating_mul(l.burst).max(CLOCK_TICK_MAX_NS),
    }
}

/// GCRA parameters of a byte limit (`rate` bytes/s, `burst` bytes).
pub fn byte_gcra(l: &RateLimit) -> Limit {
    let ns_per_byte = NS_PER_SEC / l.rate_per_sec;
    let interval = (ns_per_byte * f64::from(1u32 << BYTE_INTERVAL_SHIFT))
        .round()
        .clamp(1.0, MAX_BYTE_INTERVAL as f64) as u64;
    Limit {
        interval,
        // At least a tick of the coarse clock, as for packet limits.
        tolerance: ((ns_per_byte * l.burst as f64)
            .round()
            .clamp(0.0, u64::MAX as f64) as u64)
            .max(CLOCK_TICK_MAX_NS),
    }
}

/// The 16-byte address mask of an aggregation prefix, as the kernel applies it (two native
/// u64 words over the network-order address bytes).
pub fn prefix_mask(v4: bool, bits: u8) -> [u64; 2] {
    let total = if v4 {
        V4_MAPPED_PREFIX_BITS + u32::from(bits.min(32))
    } else {
        u32::from(bits.min(128))
    };
    traffic_common::prefix_mask_words(total)
}

/// The kernel's view of a class with its limits multiplied by `factor` (1.0 = base).
/// Admission budgets are not scaled: they bound map churn, not traffic.
pub fn class_config(spec: &ClassSpec, mode: Mode, factor: f64) -> ClassConfig {
    let mut c = ClassConfig {
        flags: CLASS_ACTIVE,
        mask_v4: prefix_mask(true, spec.aggregate_v4),
        mask_v6: prefix_mask(false, spec.aggregate_v6),
        ..ClassConfig::default()
    };
    if mode == Mode::Monitor {
        c.flags |= CLASS_MONITOR;
    }
    if spec.fleet {
        c.flags |= traffic_common::CLASS_FLEET;
    }
    for (slot, l) in c
        .packets
        .iter_mut()
        .zip(spec.packets.iter().take(MAX_PACKET_LIMITS))
    {
        *slot = packet_gcra(&scaled(l, factor, 1));
    }
    c.packet_limits = spec.packets.len().min(MAX_PACKET_LIMITS) as u32;
    if let Some(b) = &spec.bytes {
        c.flags |= CLASS_BYTES;
        c.bytes = byte_gcra(&scaled(b, factor, MIN_BYTE_BURST));
    }
    if let Some(a) = &spec.admission {
        c.flags |= CLASS_ADMISSION;
        c.admission = packet_gcra(a);
        if let Some(o) = &spec.overflow {
            c.overflow = packet_gcra(&scaled(o, factor, 1));
        }
    }
    c
}

/// The GCRA state that keeps a bucket's tokens when its limit changes from `old` to `new`:
/// the tokens left (capped at the new burst) stay, so a change never refills a bucket
/// (scaling up grants nothing retroactively; scaling down clamps to the new burst).
/// `unit_shift` is 0 for packet limits and [`BYTE_INTERVAL_SHIFT`] for byte limits.
pub fn rescale_tat(tat: u64, old: &Limit, new: &Limit, now: u64, unit_shift: u32) -> u64 {
    if new.interval == 0 {
        return tat;
    }
    if old.interval == 0 {
        // A limit that did not exist starts full.
        return 0;
    }
    let unit = |l: &Limit| l.interval as f64 / f64::from(1u32 << unit_shift);
    let debt = tat.saturating_sub(now) as f64;
    let tokens =
        ((old.tolerance as f64 - debt) / unit(old)).clamp(0.0, old.tolerance as f64 / unit(old));
    let new_burst = new.tolerance as f64 / unit(new);
    let kept = tokens.min(new_burst);
    let new_debt = (new.tolerance as f64 - kept * unit(new)).max(0.0);
    if new_debt <= 0.0 {
        0
    } else {
        now + new_debt.round() as u64
    }
}

/// Tokens left in a bucket under `l` (for reports and tests).
pub fn tokens(tat: u64, l: &Limit, now: u64, unit_shift: u32) -> f64 {
    if l.interval == 0 {
        return 0.0;
    }
    let unit = l.interval as f64 / f64::from(1u32 << unit_shift);
    let debt = tat.saturating_sub(now) as f64;
    ((l.tolerance as f64 - debt) / unit).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Priority;

    fn rl(rate: f64, burst: u64) -> RateLimit {
        RateLimit {
            rate_per_sec: rate,
            burst,
        }
    }

    #[test]
    fn packet_intervals_and_tolerance() {
        let g = packet_gcra(&rl(100.0, 200));
        assert_eq!(g.interval, 10_000_000);
        assert_eq!(g.tolerance, 2_000_000_000);
        // 2000 per minute.
        let g = packet_gcra(&rl(2000.0 / 60.0, 2000));
        assert_eq!(g.interval, 30_000_000);
        assert_eq!(g.tolerance, 60_000_000_000);
    }

    #[test]
    fn byte_intervals_are_fixed_point() {
        // 1 MB/s: 1000 ns per byte.
        let g = byte_gcra(&rl(1e6, 4000));
        assert_eq!(g.interval, 1000 << 16);
        // 4 ms of burst, raised to one tick of the program's clock.
        assert_eq!(g.tolerance, CLOCK_TICK_MAX_NS);
        let g = byte_gcra(&rl(1e6, 40_000));
        assert_eq!(g.tolerance, 40_000_000);
        // A 1500-byte frame costs 1.5 ms, as the kernel computes it.
        assert_eq!((1500 * g.interval) >> BYTE_INTERVAL_SHIFT, 1_500_000);
        // Very slow rates clamp instead of overflowing the kernel's multiplication.
        assert_eq!(byte_gcra(&rl(0.01, 2000)).interval, MAX_BYTE_INTERVAL);
    }

    #[test]
    fn masks() {
        let m = prefix_mask(true, 24);
        let addr = traffic_common::v4_mapped([198, 18, 7, 9]);
        let hi = u64::from_ne_bytes(addr[..8].try_into().unwrap()) & m[0];
        let lo = u64::from_ne_bytes(addr[8..].try_into().unwrap()) & m[1];
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&hi.to_ne_bytes());
        out[8..].copy_from_slice(&lo.to_ne_bytes());
        assert_eq!(out, traffic_common::v4_mapped([198, 18, 7, 0]));
        assert_eq!(prefix_mask(false, 0), [0, 0]);
        assert_eq!(prefix_mask(false, 128), [u64::MAX, u64::MAX]);
        assert_eq!(prefix_mask(false, 64), [u64::MAX, 0]);
    }

    #[test]
    fn scaling_keeps_minimum_bursts() {
        let s = scaled(&rl(100.0, 200), 0.2, 1);
        assert_eq!(s.burst, 40);
        assert!((s.rate_per_sec - 20.0).abs() < 1e-9);
        assert_eq!(scaled(&rl(100.0, 2), 0.1, 1).burst, 1);
        assert_eq!(
            scaled(&rl(1e6, 2000), 0.1, MIN_BYTE_BURST).burst,
            MIN_BYTE_BURST
        );
    }

    #[test]
    fn rescale_never_refills() {
        let now = 1_000_000_000_000;
        let old = packet_gcra(&rl(100.0, 200));
        // Half-empty bucket: 100 tokens left.
        let tat = now + 100 * old.interval;
        assert!((tokens(tat, &old, now, 0) - 100.0).abs() < 1e-6);
        // Scaling up (rate ×2, burst ×2) keeps the 100 tokens: nothing granted.
        let up = packet_gcra(&rl(200.0, 400));
        let t_up = rescale_tat(tat, &old, &up, now, 0);
        assert!((tokens(t_up, &up, now, 0) - 100.0).abs() < 1e-6);
        // Scaling down (burst 40) clamps to the new burst.
        let down = packet_gcra(&rl(20.0, 40));
        let t_down = rescale_tat(tat, &old, &down, now, 0);
        assert!((tokens(t_down, &down, now, 0) - 40.0).abs() < 1e-6);
        // An empty bucket stays empty either way.
        let empty = now + old.tolerance;
        assert!(tokens(rescale_tat(empty, &old, &up, now, 0), &up, now, 0) < 1e-6);
        // A full bucket keeps its 200 tokens under the larger burst: no grant either.
        assert!((tokens(rescale_tat(0, &old, &up, now, 0), &up, now, 0) - 200.0).abs() < 1e-6);
        // And a full bucket under a smaller burst is full at the new burst.
        assert_eq!(rescale_tat(0, &old, &down, now, 0), 0);
        // Byte limits use the fixed-point unit.
        let bo = byte_gcra(&rl(1e6, 100_000));
        let bn = byte_gcra(&rl(2e6, 200_000));
        let bt = now + 50_000_000; // 50 ms of debt = 50,000 bytes used
        let kept = tokens(
            rescale_tat(bt, &bo, &bn, now, BYTE_INTERVAL_SHIFT),
            &bn,
            now,
            BYTE_INTERVAL_SHIFT,
        );
        assert!((kept - 50_000.0).abs() < 2.0, "{kept}");
    }

    #[test]
    fn class_config_flags() {
        let spec = ClassSpec {
            name: "x".into(),
            priority: Priority::Normal,
            mode: None,
            packets: vec![rl(50.0, 100), rl(2000.0 / 60.0, 2000)],
            bytes: Some(rl(1e6, 10_000)),
            aggregate_v4: 32,
            aggregate_v6: 64,
            admission: Some(rl(100.0, 100)),
            overflow: Some(rl(10.0, 10)),
            offender: None,
            fleet: false,
        };
        let c = class_config(&spec, Mode::Monitor, 1.0);
        assert_eq!(
            c.flags,
            CLASS_ACTIVE | CLASS_MONITOR | CLASS_BYTES | CLASS_ADMISSION
        );
        assert_eq!(c.packet_limits, 2);
        assert_eq!(c.packets[2], Limit::default());
        assert_eq!(c.overflow.interval, 100_000_000);
        let half = class_config(&spec, Mode::Enforce, 0.5);
        assert_eq!(half.packets[0].interval, 40_000_000);
        assert_eq!(half.admission, c.admission, "admission is not scaled");
    }
}
