//! Hashrate estimates over 5 min, 1 h and 24 h, from work sampled at intervals.
//!
//! While younger than a window, the estimate over it is the plain average since the start; past
//! it, an exponential average with the window as its time constant (as `uptime`'s load
//! averages): bounded memory, whatever the window.

use serde::Serialize;

/// Hashes per unit of share difficulty.
pub const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;

/// The windows, in seconds.
pub const WINDOWS: [f64; 3] = [300.0, 3_600.0, 86_400.0];

/// Hashrate estimates, hashes per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Over about 5 minutes.
    pub h5m: f64,
    /// Over about an hour.
    pub h1h: f64,
    /// Over about a day.
    pub h24h: f64,
    /// Seconds sampled so far.
    #[serde(skip)]
    age: f64,
    #[serde(skip)]
    work_since_start: f64,
}

impl Rates {
    /// Takes in `work` (summed difficulty) done over the last `secs` seconds.
    pub fn update(&mut self, work: f64, secs: f64) {
        if secs <= 0.0 {
            return;
        }
        self.age += secs;
        self.work_since_start += work;
        let instant = work * HASHES_PER_DIFFICULTY / secs;
        let average = self.work_since_start * HASHES_PER_DIFFICULTY / self.age;
        for (rate, window) in [&mut self.h5m, &mut self.h1h, &mut self.h24h]
            .into_iter()
            .zip(WINDOWS)
        {
            *rate = if self.age <= window {
                average
            } else {
                *rate + (instant - *rate) * (1.0 - (-secs / window).exp())
            };
        }
    }

    /// Adds `other`'s estimates in (a worker's ASICs, the farm).
    pub fn add(&mut self, other: &Rates) {
        self.h5m += other.h5m;
        self.h1h += other.h1h;
        self.h24h += other.h24h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_miner_reads_its_rate_in_every_window() {
        let mut r = Rates::default();
        // Difficulty 1 every 10 s: 2^32 / 10 H/s.
        for _ in 0..10_000 {
            r.update(1.0, 10.0);
        }
        let want = HASHES_PER_DIFFICULTY / 10.0;
        for got in [r.h5m, r.h1h, r.h24h] {
            assert!((got - want).abs() / want < 1e-9, "{got} vs {want}");
        }
    }

    #[test]
    fn a_young_miner_reads_its_average_and_a_stopped_one_decays_fastest_in_5_minutes() {
        let mut r = Rates::default();
        r.update(3.0, 10.0);
        r.update(1.0, 10.0);
        let avg = 4.0 * HASHES_PER_DIFFICULTY / 20.0;
        assert_eq!((r.h5m, r.h1h, r.h24h), (avg, avg, avg));
        for _ in 0..60 {
            r.update(0.0, 10.0);
        }
        assert!(r.h5m < r.h1h && r.h1h <= r.h24h, "{r:?}");
        assert!(r.h5m < avg * 0.2, "{r:?}");
    }
}
