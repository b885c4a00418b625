//! Rescaling a GCRA word when its limit changes: the tokens left stay, capped at the new
//! burst, so a change never refills a bucket (and a loosened burst is not a gift). Pure
//! integer arithmetic without wide multiplication, for the rescale program; host-tested.

use traffic_common::Limit;

/// `x · num / den`, saturating at `u64::MAX`, without 128-bit arithmetic. `num / den` is
/// kept to 32 significant bits (relative error below 2⁻³¹).
#[inline(always)]
pub fn scale(x: u64, mut num: u64, mut den: u64) -> u64 {
    for _ in 0..32 {
        if (num | den) >> 32 == 0 {
            break;
        }
        num >>= 1;
        den >>= 1;
    }
    if den == 0 {
        return if x == 0 || num == 0 { 0 } else { u64::MAX };
    }
    // x = q·den + r with r < den < 2³², so r·num < 2⁶⁴. q·num in 32-bit halves (num < 2³²):
    // no widening multiply, which the bpf target cannot lower.
    let (q, r) = (x / den, x % den);
    let (hi, lo) = ((q >> 32) * num, (q & 0xffff_ffff) * num);
    if hi >> 32 != 0 {
        return u64::MAX;
    }
    (hi << 32).saturating_add(lo).saturating_add(r * num / den)
}

/// The state of a word charged under `old` that keeps its tokens under `new`, at `now`.
/// A limit no longer in use keeps its state (nothing reads it); a new one starts full.
#[inline(always)]
pub fn rescaled(tat: u64, old: &Limit, new: &Limit, now: u64) -> u64 {
    if new.interval == 0 {
        return tat;
    }
    if old.interval == 0 {
        return 0;
    }
    let debt = tat.saturating_sub(now);
    // The tokens left, as time under the old limit, then under the new one.
    let left = old.tolerance.saturating_sub(debt);
    let kept = scale(left, new.interval, old.interval).min(new.tolerance);
    let new_debt = new.tolerance - kept;
    if new_debt == 0 { 0 } else { now + new_debt }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn per_sec(rate: u64, burst: u64) -> Limit {
        let interval = 1_000_000_000 / rate;
        Limit {
            interval,
            tolerance: interval * burst,
        }
    }

    /// Tokens left in a word (whole units).
    fn tokens(tat: u64, l: &Limit, now: u64) -> u64 {
        l.tolerance.saturating_sub(tat.saturating_sub(now)) / l.interval
    }

    #[test]
    fn scale_is_exact_for_small_ratios_and_saturates() {
        assert_eq!(scale(1_000, 3, 2), 1_500);
        assert_eq!(scale(u64::MAX / 2, 4, 1), u64::MAX);
        assert_eq!(scale(0, u64::MAX, 1), 0);
        // Wide operands: 2⁴⁷-ns intervals, an hour of tolerance.
        let x = 3_600_000_000_000u64;
        let got = scale(x, 1 << 47, 1 << 46);
        assert_eq!(got, 2 * x);
        let got = scale(x, 3 << 40, 1 << 45);
        let want = (x as f64 * 3.0 / 32.0) as u64;
        assert!(got.abs_diff(want) <= want >> 30, "{got} vs {want}");
    }

    #[test]
    fn tokens_stay_across_a_change_and_never_grow() {
        let now = 1_000_000 * MS;
        let (a, b) = (per_sec(100, 100), per_sec(50, 40));
        // 30 tokens left under `a` (debt 70 intervals).
        let tat = now + 70 * a.interval;
        let down = rescaled(tat, &a, &b, now);
        assert_eq!(tokens(down, &b, now), 30, "tokens kept");
        // Back up: still 30, not the bigger burst.
        let up = rescaled(down, &b, &a, now);
        assert_eq!(tokens(up, &a, now), 30);
        // A full bucket under a smaller burst stays full, capped: 40 of 40.
        assert_eq!(tokens(rescaled(0, &a, &b, now), &b, now), 40);
        // A full bucket moving to a bigger burst keeps the old burst's tokens.
        assert_eq!(tokens(rescaled(0, &b, &a, now), &a, now), 40);
        // No change is no change.
        assert_eq!(rescaled(tat, &a, &a, now), tat);
        assert_eq!(rescaled(now - 5, &a, &a, now), 0);
    }

    #[test]
    fn unused_and_new_limits() {
        let a = per_sec(10, 10);
        let off = Limit::default();
        assert_eq!(rescaled(123, &a, &off, 100), 123);
        assert_eq!(rescaled(123, &off, &a, 100), 0);
    }
}
