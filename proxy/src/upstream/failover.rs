//! Which upstream to try, and when. Pure: no I/O, no clock of its own.
//!
//! Upstreams are in order of preference and solo comes last. After a failure the farm mines solo
//! at once while the upstreams after the failed one are tried; the failed one and those before
//! it wait for the regular probe of preferred upstreams. An upstream that fails again before
//! taking a single job, or within [`RECOVERED_AFTER`] retry intervals of taking over (a pool
//! that flaps), is backed off (once, twice, then four times the retry interval), so miners are
//! not flipped between it and solo every few seconds.

use std::ops::Range;
use std::time::{Duration, Instant};

/// An upstream that mined this many retry intervals before failing had recovered: its next
/// failure is waited out like a first one.
pub const RECOVERED_AFTER: u32 = 2;

/// The failover state of every upstream.
#[derive(Debug, Clone)]
pub struct Failover {
    retry: Duration,
    upstreams: Vec<Backoff>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Backoff {
    /// Failures in a row without the upstream mining for [`RECOVERED_AFTER`] retry intervals.
    failures: u32,
    /// Not tried again before this.
    until: Option<Instant>,
}

impl Failover {
    /// `n` upstreams, preferred ones probed every `retry`.
    pub fn new(n: usize, retry: Duration) -> Self {
        Failover {
            retry,
            upstreams: vec![Backoff::default(); n],
        }
    }

    /// How many upstreams there are.
    pub fn len(&self) -> usize {
        self.upstreams.len()
    }

    /// Whether there is none (solo only).
    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// The upstreams of `range` that may be tried at `now`, in order of preference.
    pub fn eligible(&self, range: Range<usize>, now: Instant) -> Vec<usize> {
        range
            .filter(|&i| {
                self.upstreams
                    .get(i)
                    .is_some_and(|b| b.until.is_none_or(|t| t <= now))
            })
            .collect()
    }

    /// Upstream `index` failed at `now`, after mining on it for `mined` (`None`: it took no
    /// job). Returns how long it is left alone, and the upstreams to try at once (those after
    /// it).
    pub fn failed(
        &mut self,
        index: usize,
        mined: Option<Duration>,
        now: Instant,
    ) -> (Duration, Range<usize>) {
        let n = self.upstreams.len();
        let recovered = mined.is_some_and(|d| d >= self.retry * RECOVERED_AFTER);
        let Some(b) = self.upstreams.get_mut(index) else {
            return (self.retry, n..n);
        };
        b.failures = if recovered { 1 } else { b.failures + 1 };
        let wait = self.retry * (1 << (b.failures - 1).min(2));
        b.until = Some(now + wait);
        (wait, (index + 1).min(n)..n)
    }

    /// The upstreams worth probing while mining on `current` (`None`: solo): every one
    /// preferred over it.
    pub fn preferred_over(&self, current: Option<usize>) -> Range<usize> {
        0..current.unwrap_or(self.upstreams.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(30);

    #[test]
    fn a_pool_that_never_works_is_tried_less_and_less_often() {
        let now = Instant::now();
        let mut f = Failover::new(2, RETRY);
        let waits: Vec<Duration> = (0..4).map(|_| f.failed(0, None, now).0).collect();
        assert_eq!(waits, [RETRY, RETRY * 2, RETRY * 4, RETRY * 4]);
        // A pool that mined a while before failing starts over.
        assert_eq!(f.failed(0, Some(RETRY * 2), now).0, RETRY);
    }

    #[test]
    fn a_pool_that_fails_soon_after_each_return_is_backed_off_too() {
        let now = Instant::now();
        let mut f = Failover::new(1, RETRY);
        let flaps = [
            RETRY * 10,
            RETRY / 10,
            RETRY,
            RETRY * 2 - Duration::from_millis(1),
        ];
        let waits: Vec<Duration> = flaps.iter().map(|&m| f.failed(0, Some(m), now).0).collect();
        assert_eq!(
            waits,
            [RETRY, RETRY * 2, RETRY * 4, RETRY * 4],
            "it took a job each time, and failed within two retry intervals"
        );
        assert_eq!(
            f.failed(0, Some(RETRY * 2), now).0,
            RETRY,
            "it held: starts over"
        );
    }

    #[test]
    fn after_a_failure_the_next_pools_are_tried_and_the_failed_one_waits() {
        let now = Instant::now();
        let mut f = Failover::new(3, RETRY);
        let (_, next) = f.failed(0, Some(RETRY * 2), now);
        assert_eq!(next, 1..3);
        assert_eq!(f.eligible(0..3, now), vec![1, 2]);
        assert_eq!(f.eligible(0..3, now + RETRY), vec![0, 1, 2]);
        let (_, next) = f.failed(2, Some(RETRY * 2), now);
        assert!(
            next.is_empty(),
            "the last pool failed: solo until the probe"
        );
    }

    #[test]
    fn only_preferred_pools_are_probed() {
        let f = Failover::new(3, RETRY);
        assert_eq!(f.preferred_over(Some(2)), 0..2);
        assert_eq!(f.preferred_over(Some(0)), 0..0);
        assert_eq!(f.preferred_over(None), 0..3, "solo: every pool");
    }
}
