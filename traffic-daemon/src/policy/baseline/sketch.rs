//! A fixed-size log histogram of positive values (rates) with a bounded relative error, and
//! a linear one of ratios (pressure readings). Both are a few kilobytes whatever they count,
//! so a class's distribution costs the same for ten sources as for ten million.

/// Bins grow by this factor: a quantile read from the histogram is within ±1 % of the value
/// it stands for (the bin's geometric middle).
const GAMMA: f64 = 1.02;
/// Smallest value told apart from 0 (0.01 packets or bytes per second).
const MIN_VALUE: f64 = 0.01;
/// Bins of the log histogram: 0.01 · 1.02^1900 ≈ 2·10¹⁴ per second covers any rate of
/// packets or bytes a link carries.
const LOG_BINS: usize = 1900;
/// Bins of the ratio histogram: 0.001 wide over 0–1.
const RATIO_BINS: usize = 1001;

/// A log histogram: `zero` counts values below [`MIN_VALUE`], bin `i` those in
/// `[MIN·γ^i, MIN·γ^(i+1))`; values past the last bin go to the last.
#[derive(Clone, Debug)]
pub struct LogHistogram {
    zero: u64,
    bins: Vec<u32>,
    count: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self {
            zero: 0,
            bins: vec![0; LOG_BINS],
            count: 0,
        }
    }
}

impl LogHistogram {
    /// Count one value (negative and NaN values count as 0).
    pub fn record(&mut self, v: f64) {
        self.count += 1;
        if v.is_nan() || v < MIN_VALUE {
            self.zero += 1;
            return;
        }
        let i = ((v / MIN_VALUE).ln() / GAMMA.ln()).floor();
        let i = if i.is_finite() {
            (i as usize).min(LOG_BINS - 1)
        } else {
            LOG_BINS - 1
        };
        self.bins[i] = self.bins[i].saturating_add(1);
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        self.zero += other.zero;
        self.count += other.count;
        for (a, b) in self.bins.iter_mut().zip(&other.bins) {
            *a = a.saturating_add(*b);
        }
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at quantile `q` (0–1): the geometric middle of the bin holding the
    /// ⌈q·n⌉-th smallest value; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = self.zero;
        if seen >= rank {
            return Some(0.0);
        }
        for (i, &n) in self.bins.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(MIN_VALUE * GAMMA.powf(i as f64 + 0.5));
            }
        }
        Some(MIN_VALUE * GAMMA.powf(LOG_BINS as f64))
    }

    /// How many counted values exceed `v` (to within a bin).
    pub fn above(&self, v: f64) -> u64 {
        if v < MIN_VALUE {
            return self.count - self.zero;
        }
        let first = ((v / MIN_VALUE).ln() / GAMMA.ln()).floor() as usize + 1;
        self.bins.iter().skip(first).map(|&n| u64::from(n)).sum()
    }
}

/// A linear histogram of ratios 0–1 (pressure readings), 0.001 wide.
#[derive(Clone, Debug)]
pub struct RatioHistogram {
    bins: Vec<u32>,
    count: u64,
}

impl Default for RatioHistogram {
    fn default() -> Self {
        Self {
            bins: vec![0; RATIO_BINS],
            count: 0,
        }
    }
}

impl RatioHistogram {
    /// Count one reading (clamped to 0–1; NaN is not counted).
    pub fn record(&mut self, r: f64) {
        if r.is_nan() {
            return;
        }
        let i = ((r.clamp(0.0, 1.0) * 1000.0).round() as usize).min(RATIO_BINS - 1);
        self.bins[i] = self.bins[i].saturating_add(1);
        self.count += 1;
    }

    /// Readings counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The reading at quantile `q`; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &n) in self.bins.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(i as f64 / 1000.0);
            }
        }
        Some(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut h = LogHistogram::default();
        for i in 1..=10_000 {
            h.record(f64::from(i));
        }
        for (q, want) in [
            (0.5, 5000.0),
            (0.9, 9000.0),
            (0.999, 9990.0),
            (1.0, 10_000.0),
        ] {
            let got = h.quantile(q).unwrap();
            assert!((got / want - 1.0).abs() < 0.011, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn zero_huge_and_nan_values_are_counted_in_the_end_bins() {
        let mut h = LogHistogram::default();
        h.record(0.0);
        h.record(-5.0);
        h.record(f64::NAN);
        h.record(f64::INFINITY);
        h.record(1e300);
        assert_eq!(h.count(), 5);
        assert_eq!(h.quantile(0.5), Some(0.0));
        assert!(h.quantile(1.0).unwrap() > 1e14);
        assert_eq!(h.above(1e6), 2);
    }

    #[test]
    fn merge_adds_and_size_is_fixed() {
        let (mut a, mut b) = (LogHistogram::default(), LogHistogram::default());
        for i in 0..1000 {
            a.record(f64::from(i));
            b.record(f64::from(i) * 1e6);
        }
        a.merge(&b);
        assert_eq!(a.count(), 2000);
        assert_eq!(a.bins.len(), LOG_BINS);
        assert!(a.quantile(0.75).unwrap() > 1e8);
        assert!(a.above(2000.0) > 990 && a.above(2000.0) <= 1000);
    }

    #[test]
    fn empty_histograms_have_no_quantile() {
        assert_eq!(LogHistogram::default().quantile(0.5), None);
        assert_eq!(RatioHistogram::default().quantile(0.5), None);
    }

    #[test]
    fn ratios_clamp_and_read_back() {
        let mut h = RatioHistogram::default();
        for i in 0..=100 {
            h.record(f64::from(i) / 100.0);
        }
        h.record(7.0);
        h.record(f64::NAN);
        assert_eq!(h.count(), 102);
        assert_eq!(h.quantile(0.5), Some(0.5));
        assert_eq!(h.quantile(1.0), Some(1.0));
    }
}
