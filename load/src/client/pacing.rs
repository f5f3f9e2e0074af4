//! When shares are due: the driver's [`Pace`], and each connection's schedule under it.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::Mode;

/// When shares are due. Changed by the driver; every connection follows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub active: bool,
    /// Unlimited: keep `window` submits in flight on every connection.
    pub closed_loop: bool,
    /// Time between bursts on one connection.
    pub period: Duration,
    /// Shares per burst.
    pub batch: u32,
    pub start: Instant,
}

impl Pace {
    pub fn idle() -> Pace {
        Pace {
            active: false,
            closed_loop: false,
            period: Duration::from_secs(3600),
            batch: 0,
            start: Instant::now(),
        }
    }

    /// `rate` shares per second spread over `connections`; `rate` 0 is closed loop.
    pub fn shares(rate: f64, connections: usize) -> Pace {
        if rate <= 0.0 {
            return Pace {
                active: true,
                closed_loop: true,
                period: Duration::from_secs(3600),
                batch: 0,
                start: Instant::now(),
            };
        }
        let per_conn = rate / connections.max(1) as f64;
        // Timers tick in milliseconds: below 5 ms a period, send bursts instead.
        let batch = (per_conn * 0.005).ceil().max(1.0);
        Pace {
            active: true,
            closed_loop: false,
            period: Duration::from_secs_f64(batch / per_conn),
            batch: batch as u32,
            start: Instant::now(),
        }
    }
}

impl Conn {
    pub(super) fn schedule(&mut self) {
        if !self.pace.active || self.pace.closed_loop || self.shared.config.mode != Mode::Shares {
            self.next_due = None;
            return;
        }
        // Spread connections evenly over one period.
        let phase = self.pace.period.mul_f64(f64::from(self.idx % 997) / 997.0);
        self.next_due = Some(self.pace.start.max(Instant::now()) + phase);
    }

    pub(super) fn on_due(&mut self) {
        let Some(due) = self.next_due else { return };
        let now = Instant::now();
        // Far behind (the tool or the server is saturated): skip ahead instead of bursting.
        let mut next = due + self.pace.period;
        if now > next + Duration::from_secs(1) {
            next = now + self.pace.period;
        }
        self.next_due = Some(next);
        for _ in 0..self.pace.batch {
            if self.pending.len() >= self.shared.config.window {
                self.shared.stats.window_full.fetch_add(1, Relaxed);
                continue;
            }
            if !self.submit_one() {
                break;
            }
        }
    }
}
