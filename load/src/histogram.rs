//! A lock-free log-linear histogram of microsecond values (about 3 % resolution), cheap enough
//! to record every submit latency of every connection into one shared instance.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two: 2^5 = 32, so a bucket is at most 1/32 of its value wide.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Values below this are counted exactly.
const LINEAR: u64 = 2 * SUB as u64;
const BUCKETS: usize = LINEAR as usize + (63 - SUB_BITS as usize) * SUB;

/// Concurrent histogram of durations, in microseconds.
#[derive(Debug)]
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = msb - SUB_BITS;
    let sub = ((v >> shift) as usize) - SUB; // 0..SUB
    LINEAR as usize + (msb - SUB_BITS - 1) as usize * SUB + sub
}

/// The middle of bucket `i`, in microseconds.
fn value_of(i: usize) -> f64 {
    if i < LINEAR as usize {
        return i as f64;
    }
    let j = i - LINEAR as usize;
    let msb = (j / SUB) as u32 + SUB_BITS + 1;
    let sub = (j % SUB) as u64;
    let shift = msb - SUB_BITS;
    let low = (SUB as u64 + sub) << shift;
    low as f64 + ((1u64 << shift) as f64) / 2.0
}

/// Percentiles of a histogram or a sample set, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_us(&self, us: u64) {
        self.counts[index(us)].fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        self.sum.fetch_add(us, Relaxed);
        self.max.fetch_max(us, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// The value below which `q` (0..=1) of the samples fall, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                return value_of(i).min(self.max.load(Relaxed) as f64);
            }
        }
        self.max.load(Relaxed) as f64
    }

    pub fn summary(&self) -> Summary {
        let count = self.count();
        if count == 0 {
            return Summary::default();
        }
        let min_i = self
            .counts
            .iter()
            .position(|c| c.load(Relaxed) > 0)
            .unwrap_or(0);
        Summary {
            count,
            min_ms: value_of(min_i) / 1000.0,
            mean_ms: self.sum.load(Relaxed) as f64 / count as f64 / 1000.0,
            p50_ms: self.quantile_us(0.50) / 1000.0,
            p90_ms: self.quantile_us(0.90) / 1000.0,
            p99_ms: self.quantile_us(0.99) / 1000.0,
            max_ms: self.max.load(Relaxed) as f64 / 1000.0,
        }
    }
}

/// Exact percentiles of a small sample set (milliseconds, may be negative).
pub fn summarize_ms(samples: &mut [f64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let at = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Summary {
        count: n as u64,
        min_ms: samples[0],
        mean_ms: samples.iter().sum::<f64>() / n as f64,
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: samples[n - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(7).chain([u64::MAX / 2, u64::MAX]) {
            let i = index(v);
            assert!(i >= last, "{v}");
            assert!(i < BUCKETS);
            last = i;
            if v > 0 && v < 1 << 40 {
                let err = (value_of(i) - v as f64).abs() / v as f64;
                assert!(err <= 1.0 / SUB as f64, "{v}: {}", value_of(i));
            }
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for us in 1..=1000 {
            h.record_us(us);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.02, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.04, "{s:?}");
        assert_eq!(s.max_ms, 1.0);
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize_ms(&mut v);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
    }
}
