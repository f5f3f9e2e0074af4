//! New tip → `mining.notify`: how long after one of the farm's nodes showed a new tip the clean
//! job on it was handed to every session (queued; each session writes it on its next wake). A
//! histogram of fixed buckets in atomics, written by the job publisher once per tip.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bitcoin::BlockHash;
use template_provider::figures::TipClock;

use super::asic::AtomicF64;

/// Upper bounds, seconds: from a node that tells us at once (ZMQ) to one polled slowly.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The histogram.
#[derive(Debug, Default)]
pub struct TipToNotify {
    /// Observations per bucket alone (the last one past every bound).
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum: AtomicF64,
    count: AtomicU64,
}

impl TipToNotify {
    /// One tip took `d`.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum.add(secs);
        self.count.fetch_add(1, Relaxed);
    }

    /// (sum, count, per-bucket counts with `+Inf` last), as the encoder takes them.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets = bounds
            .zip(&self.counts)
            .map(|(b, c)| (b, c.load(Relaxed)))
            .collect();
        (self.sum.get(), self.count.load(Relaxed), buckets)
    }
}

/// What the job publisher times its clean jobs with.
#[derive(Debug)]
pub struct NotifyTiming {
    /// When the farm's nodes first showed each tip.
    pub tips: TipClock,
    /// Where the times go.
    pub board: std::sync::Arc<super::Board>,
    /// The tip timed last: one observation per tip.
    pub last: Option<BlockHash>,
}

impl NotifyTiming {
    /// A clean job on `tip` was handed to every session now.
    pub fn clean_job_out(&mut self, tip: BlockHash) {
        if self.last == Some(tip) {
            return;
        }
        self.last = Some(tip);
        if let Some(seen) = self.tips.first_seen(&tip) {
            self.board.tip_to_notify.observe(seen.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = TipToNotify::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.0305).abs() < 1e-9, "{sum}");
        assert_eq!(buckets.len(), BUCKETS.len() + 1);
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[5], (0.05, 1));
        assert_eq!(*buckets.last().unwrap(), (f64::INFINITY, 1));
    }
}
