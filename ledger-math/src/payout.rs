//! What the pool should have paid for a period: PPS and FPPS here, PPLNS in [`mod@crate::pplns`].
//!
//! Both per-share schemes pay each unit of work its expected value, the block reward divided by
//! the network difficulty, less the pool's fee, with the network of the bucket it was done in:
//!
//! - PPS:  `Σ work_i / D_i × subsidy_i × (1 − fee)`
//! - FPPS: `Σ work_i / D_i × (subsidy_i + template_fees_i) × (1 − fee)`
//!
//! Sums stay in real satoshis until the end; then the total is rounded half up and handed out
//! to the days by largest remainder (as the distributor splits), so the days add up to the total
//! and a day worth 0.4 sat is not lost to rounding.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bitcoin::Amount;
use serde::{Deserialize, Serialize};

use crate::apportion;
use crate::bucket::{Bucket, BucketSeries};
use crate::time::Day;
use crate::units::{Bps, Work};

/// A pool's payout scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// Pay per share: the subsidy only.
    Pps,
    /// Full pay per share: subsidy and fees.
    Fpps,
    /// Pay per last N shares: a share of each block the pool finds.
    Pplns,
}

impl Model {
    /// Every model, in the order reports list them.
    pub const ALL: [Model; 3] = [Model::Pps, Model::Fpps, Model::Pplns];
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Model::Pps => "pps",
            Model::Fpps => "fpps",
            Model::Pplns => "pplns",
        })
    }
}

/// A payout scheme name that is none of `pps`, `fpps`, `pplns`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown payout model {0:?}: expected pps, fpps or pplns")]
pub struct ModelError(pub String);

impl FromStr for Model {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pps" => Ok(Model::Pps),
            "fpps" | "pps+" => Ok(Model::Fpps),
            "pplns" => Ok(Model::Pplns),
            _ => Err(ModelError(s.to_owned())),
        }
    }
}

/// The expected pay for one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DayExpected {
    /// The day.
    pub day: Day,
    /// The farm's work credited to the day.
    pub work: Work,
    /// Expected pay in whole satoshis (the days add up to [`Expected::total_sat`]).
    pub expected_sat: u64,
    /// Expected pay before rounding, in satoshis.
    pub exact_sat: f64,
}

/// The expected pay for a period under one model, per day and in total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expected {
    /// The scheme.
    pub model: Model,
    /// The pool's fee it was computed with.
    pub pool_fee: Bps,
    /// The days with work (PPS, FPPS) or with blocks (PPLNS), in order.
    pub days: Vec<DayExpected>,
    /// The farm's work over the period.
    pub work: Work,
    /// The expected total, rounded half up to the satoshi.
    pub total_sat: u64,
    /// The expected total before rounding.
    pub exact_total_sat: f64,
}

impl Expected {
    /// Rounds per-day real amounts into a report (see the module docs for the rounding).
    pub(crate) fn from_days(
        model: Model,
        pool_fee: Bps,
        work: Work,
        days: &BTreeMap<Day, (Work, f64)>,
    ) -> Self {
        let exact: Vec<f64> = days.values().map(|&(_, sat)| sat).collect();
        let rounded = apportion::round_preserving_sum(&exact);
        let days: Vec<DayExpected> = days
            .iter()
            .zip(rounded)
            .map(|((&day, &(work, exact_sat)), expected_sat)| DayExpected {
                day,
                work,
                expected_sat,
                exact_sat,
            })
            .collect();
        Expected {
            model,
            pool_fee,
            total_sat: days.iter().map(|d| d.expected_sat).sum(),
            exact_total_sat: exact.iter().sum(),
            days,
            work,
        }
    }

    /// The expected total as an amount.
    pub fn total(&self) -> Amount {
        Amount::from_sat(self.total_sat)
    }
}

/// Expected pay under PPS: each unit of work is worth `subsidy / D` of its bucket, less the
/// pool's fee. Fees of the blocks are the pool's.
pub fn pps(series: &BucketSeries, pool_fee: Bps) -> Expected {
    per_share(series, pool_fee, Model::Pps, |b| b.network.subsidy)
}

/// Expected pay under FPPS: as [`pps`], with the fees of the templates mined in each bucket
/// added to the subsidy.
pub fn fpps(series: &BucketSeries, pool_fee: Bps) -> Expected {
    per_share(series, pool_fee, Model::Fpps, |b| {
        // Saturating: two amounts below u64::MAX sat each cannot meaningfully exceed it.
        Amount::from_sat(
            b.network
                .subsidy
                .to_sat()
                .saturating_add(b.network.template_fees.to_sat()),
        )
    })
}

fn per_share(
    series: &BucketSeries,
    pool_fee: Bps,
    model: Model,
    reward: impl Fn(&Bucket) -> Amount,
) -> Expected {
    let mut days: BTreeMap<Day, (Work, f64)> = BTreeMap::new();
    for b in series.buckets() {
        let blocks = b.work.expected_blocks(b.network.difficulty);
        let sat = blocks * reward(b).to_sat() as f64 * pool_fee.kept_fraction();
        // A bucket that straddles midnight is credited to the day it starts on: ledger buckets
        // divide a day evenly, so this only matters for odd bucket lengths.
        let day = days.entry(b.start.day()).or_insert((Work::ZERO, 0.0));
        day.0 += b.work;
        day.1 += sat;
    }
    Expected::from_days(model, pool_fee, series.total_work(), &days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::tests::bucket;

    const DAY: i64 = 86_400;

    fn two_days() -> BucketSeries {
        BucketSeries::new(vec![
            // Day 0: 10 work at D = 1000, subsidy 3.125 BTC, template fees 0.125 BTC.
            bucket(0, 60, 10.0, 1000.0, 312_500_000, 12_500_000),
            // Day 1: 30 work at D = 2000, subsidy 1.5625 BTC (after a halving), no fees.
            bucket(DAY, 60, 30.0, 2000.0, 156_250_000, 0),
        ])
        .unwrap()
    }

    #[test]
    fn pps_by_hand() {
        // Day 0: 10/1000 × 312 500 000 = 3 125 000 × 0.98 = 3 062 500.
        // Day 1: 30/2000 × 156 250 000 = 2 343 750 × 0.98 = 2 296 875.
        // Total 5 359 375; the template fees do not count.
        let e = pps(&two_days(), "2%".parse().unwrap());
        assert_eq!(e.model, Model::Pps);
        assert_eq!(
            e.days.iter().map(|d| d.expected_sat).collect::<Vec<_>>(),
            [3_062_500, 2_296_875]
        );
        assert_eq!(e.total_sat, 5_359_375);
        assert!((e.exact_total_sat - 5_359_375.0).abs() < 1e-6);
        assert_eq!(e.work.get(), 40.0);
        assert_eq!(e.days[1].day.to_string(), "1970-01-02");
    }

    #[test]
    fn fpps_by_hand() {
        // Day 0: 10/1000 × (312 500 000 + 12 500 000) = 3 250 000 × 0.98 = 3 185 000.
        // Day 1: no fees, as PPS: 2 296 875. Total 5 481 875.
        let e = fpps(&two_days(), "2%".parse().unwrap());
        assert_eq!(
            e.days.iter().map(|d| d.expected_sat).collect::<Vec<_>>(),
            [3_185_000, 2_296_875]
        );
        assert_eq!(e.total_sat, 5_481_875);
    }

    #[test]
    fn buckets_of_one_day_add_up_before_rounding() {
        // Three buckets of 1 work at D = 3 with a 100 sat subsidy: 33.33 sat each, on one
        // day: 100 sat exactly, not 3 × 33.
        let s = BucketSeries::new(
            (0..3)
                .map(|i| bucket(i * 60, 60, 1.0, 3.0, 100, 0))
                .collect(),
        )
        .unwrap();
        let e = pps(&s, Bps::ZERO);
        assert_eq!(e.days.len(), 1);
        assert_eq!(e.total_sat, 100);
    }

    #[test]
    fn days_round_by_largest_remainder_to_the_rounded_total() {
        // The same three buckets a day apart: 33.33 sat each day, 100 in all; the spare
        // satoshi goes to the earliest day: 34, 33, 33.
        let s = BucketSeries::new(
            (0..3)
                .map(|i| bucket(i * DAY, 60, 1.0, 3.0, 100, 0))
                .collect(),
        )
        .unwrap();
        let e = pps(&s, Bps::ZERO);
        assert_eq!(
            e.days.iter().map(|d| d.expected_sat).collect::<Vec<_>>(),
            [34, 33, 33]
        );
        assert_eq!(e.total_sat, 100);
    }

    #[test]
    fn a_full_fee_or_no_work_expects_nothing() {
        assert_eq!(pps(&two_days(), Bps::ALL).total_sat, 0);
        let empty = pps(&BucketSeries::default(), Bps::ZERO);
        assert!(empty.days.is_empty());
        assert_eq!(empty.total_sat, 0);
    }

    #[test]
    fn model_names_round_trip() {
        for m in Model::ALL {
            assert_eq!(m.to_string().parse::<Model>().unwrap(), m);
        }
        assert_eq!("PPS+".parse::<Model>().unwrap(), Model::Fpps);
        assert!("prop".parse::<Model>().is_err());
        assert_eq!(serde_json::to_string(&Model::Fpps).unwrap(), "\"fpps\"");
    }
}
