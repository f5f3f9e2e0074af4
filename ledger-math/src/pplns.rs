//! Expected pay under PPLNS: a share of each block the pool finds.
//!
//! The window is counted in **work** (the sum of share difficulties), as pools define it: when
//! a block is found, the last N units of work submitted to the pool share its reward, each unit
//! equally. A share of difficulty 4096 weighs 4096 shares of difficulty 1, so a farm cannot
//! change its pay by changing its share difficulty. Several pools state N as a multiple of the
//! network difficulty ([`PplnsWindow::times_network_difficulty`]).
//!
//! For each block the pool found, the farm's part is its work inside the window over N:
//!
//! `Σ_blocks reward_b × min(1, farm_work[window_start_b, found_at_b) / N) × (1 − fee)`
//!
//! The window's start is where the pool's last N units of work began. The pool may report it;
//! otherwise [`PoolBlock::from_pool_hashrate`] derives it from the pool's hashrate. Work in the
//! ledger buckets cut by the window's edges is prorated by time.

use std::collections::BTreeMap;

use bitcoin::Amount;
use mining_types::Difficulty;
use serde::Serialize;

use crate::bucket::BucketSeries;
use crate::payout::{Expected, Model};
use crate::time::{Day, Timestamp};
use crate::units::{Bps, Hashrate, Work};

/// The size of a PPLNS window, in units of work. Above zero.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub struct PplnsWindow(Work);

/// A block the pool found, and where its PPLNS window began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolBlock {
    /// When the pool found it.
    pub found_at: Timestamp,
    /// What the pool shares out for it (subsidy and fees, before the pool's fee).
    pub reward: Amount,
    /// When the pool's last N units of work before the block began.
    pub window_start: Timestamp,
}

/// What PPLNS cannot compute.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PplnsError {
    /// The window is empty or not a number.
    #[error("a PPLNS window must be above 0 units of work, got {0}")]
    EmptyWindow(f64),
    /// The pool's hashrate is zero: its window would never fill.
    #[error("the pool's hashrate must be above 0 to place a PPLNS window")]
    NoPoolHashrate,
    /// A block's window starts at or after the block.
    #[error(
        "the PPLNS window of the block found at {found_at} starts at {window_start}, not before it"
    )]
    WindowAfterBlock {
        /// When the block was found.
        found_at: Timestamp,
        /// The window start given.
        window_start: Timestamp,
    },
}

impl PplnsWindow {
    /// A window of `n` units of work.
    ///
    /// # Errors
    /// When `n` is zero.
    pub fn new(n: Work) -> Result<Self, PplnsError> {
        if n.is_zero() {
            Err(PplnsError::EmptyWindow(n.get()))
        } else {
            Ok(PplnsWindow(n))
        }
    }

    /// A window of `factor × network difficulty` units of work (pools often use 2, some 8).
    ///
    /// # Errors
    /// When `factor` is not a positive finite number.
    pub fn times_network_difficulty(
        factor: f64,
        difficulty: Difficulty,
    ) -> Result<Self, PplnsError> {
        let n = Work::new(factor * difficulty.get()).map_err(|e| PplnsError::EmptyWindow(e.0))?;
        PplnsWindow::new(n)
    }

    /// The window size.
    pub fn work(self) -> Work {
        self.0
    }
}

impl PoolBlock {
    /// A block whose window start is derived from the pool's hashrate: the pool does N units
    /// of work in `N × 2^32 / hashrate` seconds (rounded to the nearest second).
    ///
    /// # Errors
    /// When the pool's hashrate is zero.
    pub fn from_pool_hashrate(
        found_at: Timestamp,
        reward: Amount,
        window: PplnsWindow,
        pool_hashrate: Hashrate,
    ) -> Result<Self, PplnsError> {
        let rate = pool_hashrate.work_per_sec();
        if rate <= 0.0 {
            return Err(PplnsError::NoPoolHashrate);
        }
        // `as` saturates; the window is at least one second so it always precedes the block.
        let secs = ((window.work().get() / rate).round() as i64).max(1);
        Ok(PoolBlock {
            found_at,
            reward,
            window_start: found_at.add_secs(-secs),
        })
    }
}

/// The farm's part of one block, as computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BlockShare {
    /// When the pool found the block.
    pub found_at: Timestamp,
    /// The block's reward before the pool's fee, in satoshis.
    pub reward_sat: u64,
    /// The start of its window.
    pub window_start: Timestamp,
    /// The farm's work inside the window.
    pub farm_work: Work,
    /// The farm's fraction of the window, at most 1.
    pub farm_fraction: f64,
    /// Whether the farm's work exceeded N, so the fraction was capped at 1: the window start
    /// (or the pool's hashrate it came from) is likely wrong.
    pub capped: bool,
    /// The farm's expected pay for the block after the pool's fee, before rounding.
    pub exact_sat: f64,
}

/// Expected PPLNS pay, with the farm's part of each block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PplnsExpected {
    /// Per day (the day each block was found) and in total.
    pub expected: Expected,
    /// Each block, in the order found.
    pub blocks: Vec<BlockShare>,
}

/// The span of ledger the blocks' windows need: from the earliest window start to the last
/// block. Load the buckets of this span (not just the report's period), or the windows of the
/// first blocks lack the work done before the period began.
pub fn ledger_span(blocks: &[PoolBlock]) -> Option<(Timestamp, Timestamp)> {
    let from = blocks.iter().map(|b| b.window_start).min()?;
    let to = blocks.iter().map(|b| b.found_at).max()?;
    Some((from, to))
}

/// Expected pay under PPLNS for the blocks the pool found, given the farm's work over time.
///
/// The days of the result are the days the blocks were found; the work of a day is the farm's
/// work in the windows of that day's blocks.
///
/// # Errors
/// When a block's window does not start before it.
pub fn pplns(
    series: &BucketSeries,
    blocks: &[PoolBlock],
    window: PplnsWindow,
    pool_fee: Bps,
) -> Result<PplnsExpected, PplnsError> {
    let mut shares = Vec::with_capacity(blocks.len());
    for b in blocks {
        if b.window_start >= b.found_at {
            return Err(PplnsError::WindowAfterBlock {
                found_at: b.found_at,
                window_start: b.window_start,
            });
        }
        let farm_work = series.work_between(b.window_start, b.found_at);
        let raw = farm_work.get() / window.work().get();
        let farm_fraction = raw.min(1.0);
        shares.push(BlockShare {
            found_at: b.found_at,
            reward_sat: b.reward.to_sat(),
            window_start: b.window_start,
            farm_work,
            farm_fraction,
            capped: raw > 1.0,
            exact_sat: b.reward.to_sat() as f64 * farm_fraction * pool_fee.kept_fraction(),
        });
    }
    shares.sort_by_key(|s| s.found_at);
    let mut days: BTreeMap<Day, (Work, f64)> = BTreeMap::new();
    for s in &shares {
        let day = days.entry(s.found_at.day()).or_insert((Work::ZERO, 0.0));
        day.0 += s.farm_work;
        day.1 += s.exact_sat;
    }
    let expected = Expected::from_days(Model::Pplns, pool_fee, series.total_work(), &days);
    Ok(PplnsExpected {
        expected,
        blocks: shares,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::tests::bucket;
    use crate::units::HASHES_PER_WORK;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix(secs)
    }

    /// Buckets [0,60) with 60 work, [60,120) with 120, [120,180) with 30.
    fn series() -> BucketSeries {
        BucketSeries::new(vec![
            bucket(0, 60, 60.0, 1.0, 0, 0),
            bucket(60, 60, 120.0, 1.0, 0, 0),
            bucket(120, 60, 30.0, 1.0, 0, 0),
        ])
        .unwrap()
    }

    fn window(n: f64) -> PplnsWindow {
        PplnsWindow::new(Work::new(n).unwrap()).unwrap()
    }

    #[test]
    fn windows_crossing_bucket_edges_by_hand() {
        // Block A at 150, window from 30, N = 1000: the farm's work is half of the first
        // bucket (30) + all of the second (120) + half of the third (15) = 165 -> 0.165.
        // 320 000 000 × 0.165 = 52 800 000, × 0.99 (1% fee) = 52 272 000.
        // Block B at 180, window from 150: the last half of the third bucket, 15 -> 0.015.
        // 100 000 000 × 0.015 = 1 500 000, × 0.99 = 1 485 000. Total 53 757 000.
        let blocks = [
            PoolBlock {
                found_at: t(180),
                reward: Amount::from_sat(100_000_000),
                window_start: t(150),
            },
            PoolBlock {
                found_at: t(150),
                reward: Amount::from_sat(320_000_000),
                window_start: t(30),
            },
        ];
        let r = pplns(&series(), &blocks, window(1000.0), "1%".parse().unwrap()).unwrap();
        assert_eq!(
            r.blocks[0].found_at,
            t(150),
            "blocks come out in time order"
        );
        assert_eq!(r.blocks[0].farm_work.get(), 165.0);
        assert!((r.blocks[0].farm_fraction - 0.165).abs() < 1e-15);
        assert_eq!(r.blocks[1].farm_work.get(), 15.0);
        assert!(!r.blocks[0].capped);
        assert_eq!(r.expected.total_sat, 53_757_000);
        assert_eq!(r.expected.days.len(), 1);
        assert_eq!(r.expected.days[0].work.get(), 180.0);
        assert_eq!(r.expected.model, Model::Pplns);
    }

    #[test]
    fn window_from_the_pools_hashrate() {
        // N = 900 work; the pool does 10 work/s (10 × 2^32 H/s), so its window is 90 s: a
        // block at 150 has its window from 60. The farm did 120 (second bucket) + 15 (half of
        // the third) = 135 there: 135 / 900 = 0.15 of 200 000 000 = 30 000 000, no fee.
        let pool = Hashrate::new(10.0 * HASHES_PER_WORK).unwrap();
        let b = PoolBlock::from_pool_hashrate(
            t(150),
            Amount::from_sat(200_000_000),
            window(900.0),
            pool,
        )
        .unwrap();
        assert_eq!(b.window_start, t(60));
        let r = pplns(&series(), &[b], window(900.0), Bps::ZERO).unwrap();
        assert_eq!(r.expected.total_sat, 30_000_000);
        let none = Hashrate::new(0.0).unwrap();
        assert_eq!(
            PoolBlock::from_pool_hashrate(t(150), Amount::ZERO, window(900.0), none),
            Err(PplnsError::NoPoolHashrate)
        );
    }

    #[test]
    fn more_farm_work_than_the_window_is_capped_and_flagged() {
        // The farm did 210 work in [0, 180) but N = 100: the farm cannot own more than the
        // whole window, so it gets the whole reward (1000 sat) and the block is flagged.
        let b = PoolBlock {
            found_at: t(180),
            reward: Amount::from_sat(1000),
            window_start: t(0),
        };
        let r = pplns(&series(), &[b], window(100.0), Bps::ZERO).unwrap();
        assert!(r.blocks[0].capped);
        assert_eq!(r.blocks[0].farm_fraction, 1.0);
        assert_eq!(r.expected.total_sat, 1000);
    }

    #[test]
    fn blocks_on_different_days_and_outside_the_ledger() {
        // A block a day later whose window holds no recorded work pays nothing, but its day is
        // listed; the windows' span tells the caller what to load.
        let blocks = [
            PoolBlock {
                found_at: t(120),
                reward: Amount::from_sat(1_000_000),
                window_start: t(60),
            },
            PoolBlock {
                found_at: t(86_500),
                reward: Amount::from_sat(1_000_000),
                window_start: t(86_400),
            },
        ];
        // First: 120 work of N = 1000 -> 0.12 × 1 000 000 = 120 000.
        let r = pplns(&series(), &blocks, window(1000.0), Bps::ZERO).unwrap();
        let per_day: Vec<u64> = r.expected.days.iter().map(|d| d.expected_sat).collect();
        assert_eq!(per_day, [120_000, 0]);
        assert_eq!(ledger_span(&blocks), Some((t(60), t(86_500))));
        assert_eq!(ledger_span(&[]), None);
    }

    #[test]
    fn bad_windows_are_refused() {
        assert!(PplnsWindow::new(Work::ZERO).is_err());
        assert!(PplnsWindow::times_network_difficulty(-2.0, Difficulty::ONE).is_err());
        let two_d =
            PplnsWindow::times_network_difficulty(2.0, Difficulty::new(1e12).unwrap()).unwrap();
        assert_eq!(two_d.work().get(), 2e12);
        let b = PoolBlock {
            found_at: t(100),
            reward: Amount::ONE_BTC,
            window_start: t(100),
        };
        assert!(matches!(
            pplns(&series(), &[b], window(1.0), Bps::ZERO),
            Err(PplnsError::WindowAfterBlock { .. })
        ));
    }
}
