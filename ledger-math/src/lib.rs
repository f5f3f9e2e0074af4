//! The farm's books as pure functions: what the pool should have paid (PPS, FPPS, PPLNS), how
//! that compares with what it did pay, how a hosting farm splits what it received among its
//! customers, and how much luck a farm of a given hashrate would live with solo.
//!
//! No I/O, no clock, no async: the ledger (storage, spool, CLI) reads the database and the
//! files, and hands this crate plain values. Every figure is reproducible from its inputs.
//!
//! # Units
//!
//! Invalid values are kept out by construction, as in `mining-types`:
//!
//! - [`Work`]: a sum of share difficulties, finite and `≥ 0`. `work / network difficulty` is
//!   the number of blocks it was expected to find; one unit stands for 2^32 hashes
//!   ([`HASHES_PER_WORK`], as the proxy measures hashrate).
//! - [`bitcoin::Amount`] for whole satoshis received, paid or split; expected earnings are real
//!   numbers (`f64` satoshis) until rounded once at the end.
//! - [`Bps`]: a fee rate in basis points, `0..=10_000`; `"2.5%"` or `"250bps"` in text.
//! - [`Hashrate`]: hashes per second; `"120T"`, `"120 TH/s"` in text.
//! - [`Timestamp`] (Unix seconds) and [`Day`] (a UTC day): reports group by UTC day.
//! - [`Customer`]: a checked customer name; [`CustomerMap`] maps worker names to customers.
//!
//! # The pieces
//!
//! | need | call | gives |
//! |---|---|---|
//! | the farm's work over time | [`BucketSeries::new`] of [`Bucket`]s (each with its [`NetworkAt`]) | the input of every model |
//! | PPS / FPPS expectation | [`pps`], [`fpps`] | [`Expected`]: per day and total |
//! | PPLNS expectation | [`pplns()`] with [`PoolBlock`]s and a [`PplnsWindow`] (see [`ledger_span`]) | [`PplnsExpected`] |
//! | the pool's payouts | [`parse_payouts_csv`] | [`Payout`]s |
//! | discrepancy report | [`audit()`] with [`Paid`] and an [`AuditPeriod`] | [`Discrepancy`] (`to_csv`, serde) |
//! | hosting split | [`CustomerMap::sum_work`], then [`split()`] | [`Split`] of [`SplitRow`]s (`to_csv`, serde) |
//! | solo vs pooled | [`variance()`] with a [`VarianceInput`] | [`Variance`] |
//! | worker to customer | [`CustomerMap::new`], [`CustomerMap::customer_of`] | [`Customer`] |
//!
//! Rounding to the satoshi always uses the largest-remainder method, so parts add up exactly:
//! the days of an expectation to its total, a split's rows plus the hosting fee to the amount.
//! Ties go to the earlier day or the customer whose name sorts first.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use bitcoin::Amount;
//! use ledger_math::*;
//! use mining_types::Difficulty;
//!
//! // One minute of the ledger: 10 units of work at network difficulty 1000, subsidy 3.125 BTC.
//! let minute = Bucket {
//!     start: "2026-11-29T12:00:00Z".parse()?,
//!     secs: NonZeroU32::new(60).unwrap(),
//!     work: Work::new(10.0)?,
//!     network: NetworkAt {
//!         difficulty: Difficulty::new(1000.0)?,
//!         subsidy: Amount::from_sat(312_500_000),
//!         template_fees: Amount::from_sat(12_500_000),
//!     },
//! };
//! let series = BucketSeries::new(vec![minute])?;
//! // 10 / 1000 × 3.125 BTC × (1 − 2%) = 3 062 500 sat.
//! let expected = pps(&series, "2%".parse()?);
//! assert_eq!(expected.total_sat, 3_062_500);
//!
//! // The pool's payouts, from its CSV export, against it.
//! let payouts = parse_payouts_csv("date,amount_btc\n2026-11-29,0.03\n")?;
//! let day = expected.days[0].day;
//! let paid = Paid::Payouts { payouts: &payouts, credit_lag_days: 0 };
//! let report = audit(&expected, &paid, AuditPeriod::new(day, day)?);
//! assert_eq!(report.total.diff_sat, Some(3_000_000 - 3_062_500));
//!
//! // What was received, split among the hosted customers after a 5% hosting fee.
//! let customers = CustomerMap::new(
//!     &[CustomerRule { pattern: "alice.*".into(), customer: "alice".into() }],
//!     "farm",
//! )?;
//! let work = customers.sum_work([("alice.rig1", Work::new(6.0)?), ("s19-07", Work::new(4.0)?)]);
//! let run = split(Amount::from_sat(3_000_000), &work, "5%".parse()?)?;
//! let paid: u64 = run.rows.iter().map(|r| r.amount_sat).sum();
//! assert_eq!(paid + run.hosting_fee_sat, 3_000_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod apportion;
pub mod audit;
pub mod bucket;
pub mod customers;
pub mod payout;
pub mod payouts_csv;
pub mod pplns;
pub mod split;
pub mod time;
pub mod units;
pub mod variance;

pub use audit::{
    audit, AuditPeriod, AuditPeriodError, AuditRow, Discrepancy, Paid, MAX_AUDIT_DAYS,
};
pub use bucket::{Bucket, BucketSeries, NetworkAt, OverlapError};
pub use customers::{
    Customer, CustomerError, CustomerMap, CustomerMapError, CustomerRule, PatternError,
    WorkerPattern,
};
pub use payout::{fpps, pps, DayExpected, Expected, Model, ModelError};
pub use payouts_csv::{parse_payouts_csv, Payout, PayoutCsvError};
pub use pplns::{
    ledger_span, pplns, BlockShare, PoolBlock, PplnsError, PplnsExpected, PplnsWindow,
};
pub use split::{btc_text, split, Split, SplitError, SplitRow};
pub use time::{Day, TimeError, Timestamp};
pub use units::{Bps, BpsError, Hashrate, HashrateError, Work, WorkError, HASHES_PER_WORK};
pub use variance::{
    poisson_cdf, poisson_quantile, variance, PooledScheme, RevenueSpread, Variance, VarianceError,
    VarianceInput, MONTH_SECS,
};
