//! The farm's hashrate minute by minute, for a day: bounded, whatever the uptime.

use std::collections::VecDeque;

use serde::Serialize;

use super::rates::HASHES_PER_DIFFICULTY;

/// Minutes kept.
pub const MINUTES: usize = 24 * 60;

/// One minute of the farm's work.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Unix seconds at the minute's start.
    pub at: u64,
    /// Hashes per second over the minute.
    pub hashrate: f64,
}

/// Work per minute, oldest first.
#[derive(Debug, Default)]
pub struct History {
    minutes: VecDeque<(u64, f64)>,
}

impl History {
    /// Adds `work` (summed difficulty) done just before `unix`.
    pub fn add(&mut self, unix: u64, work: f64) {
        let minute = unix - unix % 60;
        match self.minutes.back_mut() {
            Some((m, w)) if *m == minute => *w += work,
            _ => {
                if self.minutes.len() >= MINUTES {
                    self.minutes.pop_front();
                }
                self.minutes.push_back((minute, work));
            }
        }
    }

    /// The minutes kept, each as a hashrate.
    pub fn points(&self) -> Vec<Point> {
        self.minutes
            .iter()
            .map(|&(at, work)| Point {
                at,
                hashrate: work * HASHES_PER_DIFFICULTY / 60.0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_adds_up_per_minute_and_a_day_is_kept() {
        let mut h = History::default();
        h.add(120, 1.0);
        h.add(150, 2.0);
        h.add(185, 6.0);
        let p = h.points();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].at, 120);
        assert_eq!(p[0].hashrate, 3.0 * HASHES_PER_DIFFICULTY / 60.0);
        for m in 0..MINUTES as u64 + 10 {
            h.add(1_000_000 + m * 60, 1.0);
        }
        assert_eq!(h.points().len(), MINUTES);
    }
}
