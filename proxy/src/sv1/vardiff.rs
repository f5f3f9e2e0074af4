//! Per-connection difficulty: aim each miner, from a Bitaxe to an S21, at a steady share rate.
//!
//! The estimate is work-based: the difficulty-weighted shares over elapsed time give the
//! hashrate, so a change of difficulty in the middle of a window does not skew it.

use std::time::{Duration, Instant};

use crate::share::Difficulty;

/// Vardiff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VardiffConfig {
    /// Difficulty a connection starts at (before any suggestion).
    pub initial: Difficulty,
    /// The lowest difficulty any connection gets.
    pub min: Difficulty,
    /// The highest.
    pub max: Difficulty,
    /// Seconds between shares the miner should settle at.
    pub target_share_interval: Duration,
    /// How often the rate is re-estimated.
    pub retarget_interval: Duration,
}

/// Settings that never change, for a server without reloads (tests, fuzzing).
pub fn fixed(config: VardiffConfig) -> tokio::sync::watch::Receiver<VardiffConfig> {
    tokio::sync::watch::channel(config).1
}

/// Shares in a window that trigger an early retarget: a miner far too fast for its difficulty
/// (a big ASIC on the initial difficulty) is corrected within seconds, not a whole window.
const FAST_RETARGET_SHARES: u32 = 16;

/// Changes smaller than this factor are not worth a `set_difficulty`.
const HYSTERESIS: f64 = 1.4;

/// The state of one connection.
#[derive(Debug, Clone)]
pub struct Vardiff {
    config: VardiffConfig,
    /// The miner's own minimum, as it asked.
    asked_floor: Option<Difficulty>,
    /// The lowest difficulty: the configured one, or the miner's when higher.
    floor: Difficulty,
    window_start: Instant,
    window_work: f64,
    window_shares: u32,
}

impl Vardiff {
    /// A connection's state, its window starting `now`.
    pub fn new(config: VardiffConfig, now: Instant) -> Self {
        Vardiff {
            config,
            asked_floor: None,
            floor: config.min,
            window_start: now,
            window_work: 0.0,
            window_shares: 0,
        }
    }

    /// The miner's own minimum (`minimum-difficulty`), never below the configured one.
    pub fn set_floor(&mut self, floor: Difficulty) {
        self.asked_floor = Some(floor);
        self.floor = floor.clamp(self.config.min, self.config.max);
    }

    /// The settings in force.
    pub fn config(&self) -> &VardiffConfig {
        &self.config
    }

    /// Takes reloaded settings: new bounds (the miner's own minimum kept within them) and
    /// targets from the next share on. The window goes on; the caller re-bounds the current
    /// difficulty.
    pub fn reconfigure(&mut self, config: VardiffConfig) {
        self.config = config;
        self.floor = self
            .asked_floor
            .map_or(config.min, |f| f.clamp(config.min, config.max));
    }

    /// Keeps a difficulty within the floor and the configured maximum.
    pub fn bound(&self, d: Difficulty) -> Difficulty {
        d.clamp(self.floor, self.config.max)
    }

    /// Restarts the window, e.g. after a suggestion replaced the difficulty.
    pub fn reset(&mut self, now: Instant) {
        self.window_start = now;
        self.window_work = 0.0;
        self.window_shares = 0;
    }

    /// Records an accepted share at `difficulty`; returns a new difficulty when one is due.
    pub fn on_share(
        &mut self,
        now: Instant,
        difficulty: Difficulty,
        current: Difficulty,
    ) -> Option<Difficulty> {
        self.window_work += difficulty.get();
        self.window_shares += 1;
        let elapsed = now.saturating_duration_since(self.window_start);
        if self.window_shares >= FAST_RETARGET_SHARES || elapsed >= self.config.retarget_interval {
            return self.retarget(now, current);
        }
        None
    }

    /// Called periodically: lowers the difficulty of a miner that has gone quiet.
    pub fn on_tick(&mut self, now: Instant, current: Difficulty) -> Option<Difficulty> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= self.config.retarget_interval {
            return self.retarget(now, current);
        }
        None
    }

    fn retarget(&mut self, now: Instant, current: Difficulty) -> Option<Difficulty> {
        let elapsed = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64()
            .max(0.001);
        let wanted = if self.window_shares == 0 {
            // No share in a whole window: at least halve, more the longer the silence.
            let windows = elapsed / self.config.retarget_interval.as_secs_f64().max(0.001);
            current.scaled(0.5f64.powf(windows.max(1.0)))
        } else {
            // work/elapsed = difficulty per second the miner does; times the interval we want.
            let per_sec = self.window_work / elapsed;
            match Difficulty::new(per_sec * self.config.target_share_interval.as_secs_f64()) {
                Ok(d) => d,
                Err(_) => current,
            }
        };
        self.reset(now);
        let next = self.bound(wanted);
        let ratio = next.get() / current.get();
        (!(1.0 / HYSTERESIS..=HYSTERESIS).contains(&ratio)).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VardiffConfig {
        VardiffConfig {
            initial: Difficulty::new(1.0).unwrap(),
            min: Difficulty::new(0.001).unwrap(),
            max: Difficulty::new(1e12).unwrap(),
            target_share_interval: Duration::from_secs(10),
            retarget_interval: Duration::from_secs(60),
        }
    }

    /// A miner doing `hashrate` difficulty-1 units per second, sampled at its current difficulty.
    fn simulate(hashrate_d1_per_sec: f64, rounds: usize) -> f64 {
        let start = Instant::now();
        let mut v = Vardiff::new(config(), start);
        let mut d = config().initial;
        let mut now = start;
        for _ in 0..rounds {
            // Expected time for one share at difficulty d.
            let dt = Duration::from_secs_f64(d.get() / hashrate_d1_per_sec);
            now += dt;
            if let Some(nd) = v.on_share(now, d, d) {
                d = nd;
            }
        }
        d.get()
    }

    #[test]
    fn settles_big_and_small_miners_near_the_target_rate() {
        // S21-class: ~200 TH/s = 200e12 / 2^32 diff-1 per second.
        for hashrate in [
            200e12 / 4_294_967_296.0,
            1e12 / 4_294_967_296.0,
            5e6 / 4_294_967_296.0,
        ] {
            let d = simulate(hashrate, 400);
            let interval = d / hashrate;
            assert!(
                (10.0 / HYSTERESIS / 1.01..=10.0 * HYSTERESIS * 1.01).contains(&interval),
                "hashrate {hashrate}: interval {interval}s at difficulty {d}"
            );
        }
    }

    #[test]
    fn quiet_miner_is_lowered_and_floor_holds() {
        let start = Instant::now();
        let mut v = Vardiff::new(config(), start);
        let d = Difficulty::new(0.002).unwrap();
        let next = v
            .on_tick(start + Duration::from_secs(61), d)
            .expect("lowered");
        assert_eq!(
            next,
            Difficulty::new(0.001).unwrap(),
            "clamped at the floor"
        );
        assert_eq!(v.on_tick(start + Duration::from_secs(62), next), None);
    }

    #[test]
    fn reloaded_bounds_apply_and_keep_the_miners_minimum() {
        let mut v = Vardiff::new(config(), Instant::now());
        v.set_floor(Difficulty::new(500.0).unwrap());
        let d = |x: f64| Difficulty::new(x).unwrap();
        v.reconfigure(VardiffConfig {
            min: d(1000.0),
            max: d(1e6),
            ..config()
        });
        assert_eq!(
            v.bound(d(1.0)),
            d(1000.0),
            "the new minimum is above the miner's"
        );
        assert_eq!(v.bound(d(1e9)), d(1e6), "the new maximum holds");
        v.reconfigure(config());
        assert_eq!(v.bound(d(1.0)), d(500.0), "the miner's own minimum again");
        assert_eq!(v.config().max, d(1e12));
    }

    #[test]
    fn miner_minimum_is_respected() {
        let mut v = Vardiff::new(config(), Instant::now());
        v.set_floor(Difficulty::new(500.0).unwrap());
        assert_eq!(v.bound(Difficulty::new(1.0).unwrap()).get(), 500.0);
        assert_eq!(v.bound(Difficulty::new(1e15).unwrap()).get(), 1e12);
    }
}
