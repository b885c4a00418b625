//! GCRA arithmetic: whether a cost conforms to a limit, and what a frame costs. Pure; the
//! shared state these decide on is read and written atomically in the program's `limit.rs`.
//! No division and no wide multiplication: the daemon precomputes intervals and tolerances.

use traffic_common::{BYTE_INTERVAL_SHIFT, Limit};

/// The state a bucket at theoretical arrival time `tat` moves to when charged `cost` at
/// `now`: a bucket that has been idle (`tat` in the past) starts from `now`.
#[inline(always)]
pub fn charged(tat: u64, cost: u64, now: u64) -> u64 {
    let base = if tat > now { tat } else { now };
    base + cost
}

/// Whether a packet of `cost` would conform to `lim` given the state `tat` at `now`.
#[inline(always)]
pub fn conforms(tat: u64, lim: &Limit, cost: u64, now: u64) -> bool {
    charged(tat, cost, now) - now <= lim.tolerance
}

/// Cost of a frame of `len` bytes under a byte limit.
#[inline(always)]
pub fn byte_cost(len: u64, lim: &Limit) -> u64 {
    // len < 2^16 and interval <= MAX_BYTE_INTERVAL (2^47): the product fits in u64.
    (len * lim.interval) >> BYTE_INTERVAL_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 packets per second with a burst of 10: interval 100 ms, tolerance burst × interval
    /// (as the daemon computes it).
    fn ten_per_second() -> Limit {
        let interval = 100_000_000;
        Limit {
            interval,
            tolerance: 10 * interval,
        }
    }

    /// Charge packets back to back at `now`, as the program does; count the conforming ones.
    fn burst(tat: &mut u64, lim: &Limit, now: u64, n: u32) -> u32 {
        let mut passed = 0;
        for _ in 0..n {
            if conforms(*tat, lim, lim.interval, now) {
                *tat = charged(*tat, lim.interval, now);
                passed += 1;
            }
        }
        passed
    }

    #[test]
    fn a_fresh_bucket_allows_its_burst_and_no_more() {
        let lim = ten_per_second();
        let mut tat = 0;
        let now = 5_000_000_000;
        assert_eq!(burst(&mut tat, &lim, now, 100), 10);
    }

    #[test]
    fn refill_is_one_packet_per_interval() {
        let lim = ten_per_second();
        let mut tat = 0;
        let now = 5_000_000_000;
        burst(&mut tat, &lim, now, 10);
        assert_eq!(burst(&mut tat, &lim, now + lim.interval - 1, 5), 0);
        assert_eq!(burst(&mut tat, &lim, now + lim.interval, 5), 1);
        // A long idle period refills to the burst, never beyond it.
        assert_eq!(burst(&mut tat, &lim, now + 3_600_000_000_000, 100), 10);
    }

    #[test]
    fn idle_state_starts_from_now() {
        assert_eq!(charged(10, 5, 100), 105);
        assert_eq!(charged(200, 5, 100), 205);
    }

    #[test]
    fn byte_cost_scales_by_the_fixed_point_shift() {
        // 1 ns per byte in the 2^-16 fixed point the daemon uses.
        let lim = Limit {
            interval: 1 << BYTE_INTERVAL_SHIFT,
            tolerance: 0,
        };
        assert_eq!(byte_cost(1500, &lim), 1500);
        let half = Limit {
            interval: 1 << (BYTE_INTERVAL_SHIFT - 1),
            tolerance: 0,
        };
        assert_eq!(byte_cost(1501, &half), 750);
    }
}
