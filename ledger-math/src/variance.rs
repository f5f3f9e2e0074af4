//! Solo or pooled: the luck a farm of a given hashrate lives with, in closed form.
//!
//! Blocks found solo in a period are Poisson with mean `λ = hashrate × t / (D × 2^32)`:
//!
//! - expected time to a block: `D × 2^32 / hashrate`;
//! - probability of no block in the period: `exp(−λ)`;
//! - solo revenue: `N × (subsidy + fees)`, `N ~ Poisson(λ)`: mean `λ × reward`, standard
//!   deviation `√λ × reward`, and percentiles from the Poisson distribution itself (computed
//!   term by term, not simulated);
//! - pooled (PPS or FPPS): the same mean less the pool's fee, paid steadily: no spread worth
//!   the name.

use std::num::NonZeroU64;

use bitcoin::Amount;
use mining_types::Difficulty;
use serde::Serialize;

use crate::units::{Bps, Hashrate, HASHES_PER_WORK};

/// A month, as pools and this report count it: 30 days, in seconds.
pub const MONTH_SECS: u64 = 30 * 86_400;

/// Above this many expected blocks per period the percentiles are not computed (they would
/// take a few seconds; the spread is then negligible anyway, √λ/λ < 0.003 %).
pub const MAX_EXPECTED_BLOCKS: f64 = 1e9;

/// The pooled scheme set against solo mining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PooledScheme {
    /// The pool pays the subsidy's worth of each share.
    Pps,
    /// The pool pays the subsidy and fees' worth.
    Fpps,
}

/// What the variance is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarianceInput {
    /// The farm's measured hashrate.
    pub hashrate: Hashrate,
    /// The network difficulty.
    pub network_difficulty: Difficulty,
    /// The block subsidy.
    pub subsidy: Amount,
    /// The fees a block carries, on average (recent templates).
    pub fees_per_block: Amount,
    /// The pool's fee.
    pub pool_fee: Bps,
    /// The pool's scheme.
    pub pooled: PooledScheme,
    /// The period, usually [`MONTH_SECS`].
    pub period_secs: NonZeroU64,
}

/// Why the variance cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum VarianceError {
    /// No hashrate: no block is ever expected.
    #[error("the hashrate is 0: no block would ever be found")]
    NoHashrate,
    /// Too many blocks per period to list percentiles.
    #[error(
        "{0} expected blocks per period is more than {MAX_EXPECTED_BLOCKS}: shorten the period"
    )]
    TooManyBlocks(f64),
}

/// The spread of revenue over the period, in satoshis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RevenueSpread {
    /// Mean.
    pub mean_sat: f64,
    /// Standard deviation.
    pub sd_sat: f64,
    /// 10th percentile: one period in ten earns no more than this.
    pub p10_sat: u64,
    /// Median.
    pub p50_sat: u64,
    /// 90th percentile: one period in ten earns more than this.
    pub p90_sat: u64,
}

/// Solo against pooled for one hashrate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Variance {
    /// The period, in seconds.
    pub period_secs: u64,
    /// Mean time between blocks, solo, in seconds.
    pub expected_secs_to_block: f64,
    /// λ: blocks expected in the period, solo.
    pub expected_blocks: f64,
    /// The chance of no block at all in the period, solo.
    pub p_no_block: f64,
    /// Blocks found solo in the period: 10th, 50th and 90th percentiles.
    pub solo_blocks_p10_p50_p90: [u64; 3],
    /// Solo revenue (every block's subsidy and fees, no pool fee).
    pub solo: RevenueSpread,
    /// Pooled revenue (PPS or FPPS, less the pool's fee).
    pub pooled: RevenueSpread,
}

/// Computes the solo and pooled spread of revenue for `input`.
///
/// # Errors
/// When the hashrate is zero, or so high for the period that more than
/// [`MAX_EXPECTED_BLOCKS`] blocks are expected.
pub fn variance(input: &VarianceInput) -> Result<Variance, VarianceError> {
    let rate = input.hashrate.get();
    if rate <= 0.0 {
        return Err(VarianceError::NoHashrate);
    }
    let block_secs = input.network_difficulty.get() * HASHES_PER_WORK / rate;
    let period = input.period_secs.get() as f64;
    let lambda = period / block_secs;
    // Also refuses NaN (which no comparison passes), should a subnormal difficulty make one.
    if lambda.is_nan() || lambda > MAX_EXPECTED_BLOCKS {
        return Err(VarianceError::TooManyBlocks(lambda));
    }
    let subsidy = input.subsidy.to_sat();
    let solo_reward = subsidy.saturating_add(input.fees_per_block.to_sat());
    let blocks = [0.1, 0.5, 0.9].map(|p| poisson_quantile(lambda, p));
    let [p10, p50, p90] = blocks.map(|k| k.saturating_mul(solo_reward));
    let solo = RevenueSpread {
        mean_sat: lambda * solo_reward as f64,
        sd_sat: lambda.sqrt() * solo_reward as f64,
        p10_sat: p10,
        p50_sat: p50,
        p90_sat: p90,
    };
    let pooled_reward = match input.pooled {
        PooledScheme::Pps => subsidy,
        PooledScheme::Fpps => solo_reward,
    };
    let pooled_mean = lambda * pooled_reward as f64 * input.pool_fee.kept_fraction();
    let steady = pooled_mean.round() as u64;
    Ok(Variance {
        period_secs: input.period_secs.get(),
        expected_secs_to_block: block_secs,
        expected_blocks: lambda,
        p_no_block: (-lambda).exp(),
        solo_blocks_p10_p50_p90: blocks,
        solo,
        pooled: RevenueSpread {
            mean_sat: pooled_mean,
            sd_sat: 0.0,
            p10_sat: steady,
            p50_sat: steady,
            p90_sat: steady,
        },
    })
}

/// `ln(n!)`: summed exactly below 256, Stirling's series (error below 1e-17) above.
fn ln_factorial(n: u64) -> f64 {
    if n < 256 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    let series = 1.0 / (12.0 * x) - 1.0 / (360.0 * x.powi(3)) + 1.0 / (1260.0 * x.powi(5));
    x * x.ln() - x + 0.5 * (std::f64::consts::TAU * x).ln() + series
}

/// `P(N = k)` for `N ~ Poisson(λ)`, through logarithms so large λ does not underflow `e^−λ`.
fn poisson_pmf(lambda: f64, k: u64) -> f64 {
    (-lambda + k as f64 * lambda.ln() - ln_factorial(k)).exp()
}

/// Where to start summing: below `λ − 37√λ` the terms add up to less than 1e-290.
fn first_term(lambda: f64) -> u64 {
    (lambda - 37.0 * lambda.sqrt()).max(0.0) as u64
}

/// Past `λ + 40√λ + 50` the remaining mass is below 1e-300.
fn last_term(lambda: f64) -> u64 {
    (lambda + 40.0 * lambda.sqrt() + 50.0) as u64
}

/// `P(N ≤ k)` for `N ~ Poisson(λ)`.
///
/// # Panics
/// When `λ` is negative, not finite or above [`MAX_EXPECTED_BLOCKS`].
pub fn poisson_cdf(lambda: f64, k: u64) -> f64 {
    assert!(
        (0.0..=MAX_EXPECTED_BLOCKS).contains(&lambda),
        "λ out of range: {lambda}"
    );
    if lambda == 0.0 || k >= last_term(lambda) {
        return 1.0;
    }
    let sum: f64 = (first_term(lambda)..=k)
        .map(|i| poisson_pmf(lambda, i))
        .sum();
    sum.min(1.0)
}

/// The smallest `k` with `P(N ≤ k) ≥ p` for `N ~ Poisson(λ)`: the `p`-quantile.
///
/// Exact up to the rounding of the terms (relative 1e-12 at λ = 10^4), found by summing the
/// probabilities from the first that is not negligible.
///
/// # Panics
/// When `p` is not in `(0, 1)` or `λ` is negative, not finite or above
/// [`MAX_EXPECTED_BLOCKS`]: callers pass constants and a checked λ.
pub fn poisson_quantile(lambda: f64, p: f64) -> u64 {
    assert!(
        p > 0.0 && p < 1.0,
        "a quantile is strictly between 0 and 1, got {p}"
    );
    assert!(
        (0.0..=MAX_EXPECTED_BLOCKS).contains(&lambda),
        "λ out of range: {lambda}"
    );
    if lambda == 0.0 {
        return 0;
    }
    let last = last_term(lambda);
    let mut cdf = 0.0;
    for k in first_term(lambda)..=last {
        cdf += poisson_pmf(lambda, k);
        if cdf >= p {
            return k;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(hashrate: f64, d: f64) -> VarianceInput {
        VarianceInput {
            hashrate: Hashrate::new(hashrate).unwrap(),
            network_difficulty: Difficulty::new(d).unwrap(),
            subsidy: Amount::from_sat(312_500_000),
            fees_per_block: Amount::from_sat(10_000_000),
            pool_fee: "2%".parse().unwrap(),
            pooled: PooledScheme::Fpps,
            period_secs: NonZeroU64::new(MONTH_SECS).unwrap(),
        }
    }

    #[test]
    fn one_block_a_day_by_hand() {
        // 2^32 H/s is 1 unit of work a second; at D = 86 400 a block takes 86 400 s (a day),
        // so λ = 30 a month; P(no block) = e^-30 = 9.3576e-14.
        // Solo reward 322 500 000: mean 30 × 322 500 000 = 9 675 000 000, sd √30 × that
        // = 1 766 405 247.95. Pooled FPPS: 9 675 000 000 × 0.98 = 9 481 500 000, steady.
        let v = variance(&input(HASHES_PER_WORK, 86_400.0)).unwrap();
        assert_eq!(v.expected_secs_to_block, 86_400.0);
        assert!((v.expected_blocks - 30.0).abs() < 1e-12);
        assert!((v.p_no_block / 9.357_622_968_840_175e-14 - 1.0).abs() < 1e-9);
        assert!((v.solo.mean_sat - 9_675_000_000.0).abs() < 1e-3);
        assert!((v.solo.sd_sat - 1_766_405_247.95).abs() < 0.01);
        assert_eq!(v.pooled.p50_sat, 9_481_500_000);
        assert_eq!(v.pooled.sd_sat, 0.0);
        // Poisson(30) percentiles (checked against the naive sum below): 23, 30, 37 blocks.
        assert_eq!(v.solo_blocks_p10_p50_p90, [23, 30, 37]);
        assert_eq!(v.solo.p90_sat, 37 * 322_500_000);
    }

    #[test]
    fn a_small_farm_mostly_finds_nothing() {
        // λ = 1: P(0) = e^-1 = 0.3679, P(≤1) = 2/e = 0.7358, P(≤2) = 2.5/e = 0.9197.
        // P10 = 0 (0.3679 ≥ 0.1), P50 = 1 (0.3679 < 0.5 ≤ 0.7358), P90 = 2 (0.7358 < 0.9 ≤ 0.9197).
        assert_eq!([0.1, 0.5, 0.9].map(|p| poisson_quantile(1.0, p)), [0, 1, 2]);
        // λ = 0.1: P(0) = e^-0.1 = 0.9048 ≥ 0.9: every percentile up to P90 is no block.
        assert_eq!([0.1, 0.5, 0.9].map(|p| poisson_quantile(0.1, p)), [0, 0, 0]);
        assert!((poisson_cdf(1.0, 2) - 2.5 / std::f64::consts::E).abs() < 1e-15);
        // PPS ignores the fees: λ × 312 500 000 × 0.98 (λ = 1: hashrate 2^32 / (30 × 86 400)).
        let mut i = input(HASHES_PER_WORK / f64::from(30 * 86_400), 1.0);
        i.pooled = PooledScheme::Pps;
        let v = variance(&i).unwrap();
        assert!((v.expected_blocks - 1.0).abs() < 1e-12);
        assert_eq!(v.pooled.p50_sat, 306_250_000);
        assert_eq!(v.solo.p10_sat, 0);
    }

    #[test]
    fn quantiles_match_a_naive_sum() {
        // Independent check for λ where e^-λ λ^k / k! is computable directly in f64.
        for lambda in [0.5f64, 3.0, 12.5, 30.0, 100.0] {
            for p in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99] {
                let (mut term, mut cdf, mut k) = ((-lambda).exp(), 0.0, 0u64);
                loop {
                    cdf += term;
                    if cdf >= p {
                        break;
                    }
                    k += 1;
                    term *= lambda / k as f64;
                }
                assert_eq!(poisson_quantile(lambda, p), k, "λ={lambda} p={p}");
            }
        }
    }

    #[test]
    fn large_lambda_stays_near_the_normal_approximation() {
        // λ = 5000 (a large share of the network over a month), where e^-λ underflows f64.
        // The median is within [λ − ln 2, λ + 1/3], so 5000; the normal approximation puts
        // P10 near λ − 1.2816 √λ = 4909.4 and P90 near 5090.6. Summed exactly in 60-digit
        // decimals (Python's decimal module, e^-5000 × 5000^k / k! term by term): 4909 and 5091.
        let lambda = 5000.0;
        assert_eq!(
            [0.1, 0.5, 0.9].map(|p| poisson_quantile(lambda, p)),
            [4909, 5000, 5091]
        );
        assert!((poisson_cdf(lambda, 7_000) - 1.0).abs() < 1e-12);
        assert_eq!(poisson_cdf(lambda, u64::MAX), 1.0);
        // e^-5000 underflows; the log form does not lose the terms near the mean.
        assert!(poisson_cdf(lambda, 5000) > 0.5);
    }

    #[test]
    fn ln_factorial_joins_smoothly() {
        // Exact sum and Stirling agree where they meet.
        let exact: f64 = (2..=300u64).map(|i| (i as f64).ln()).sum();
        assert!((ln_factorial(300) - exact).abs() < 1e-9);
    }

    #[test]
    fn refuses_what_it_cannot_compute() {
        assert_eq!(variance(&input(0.0, 1.0)), Err(VarianceError::NoHashrate));
        assert!(matches!(
            variance(&input(1e30, 1.0)),
            Err(VarianceError::TooManyBlocks(_))
        ));
    }
}
