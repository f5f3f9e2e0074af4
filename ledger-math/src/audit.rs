//! The discrepancy report: what the pool should have paid (one [`Expected`] per model) against
//! what it did pay, per UTC day and in total.
//!
//! Differences are `paid − expected`: negative means the pool paid less than the model says.
//! The relative difference is that over the expected amount (none when nothing was expected).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::payout::{Expected, Model};
use crate::payouts_csv::Payout;
use crate::time::Day;
use crate::units::Bps;

/// The longest period a report lists day by day (ten years).
pub const MAX_AUDIT_DAYS: i64 = 3660;

/// What the pool paid for the period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Paid<'a> {
    /// One amount for the whole period, as the operator entered it: compared in total only.
    Total(bitcoin::Amount),
    /// The pool's payouts (from its CSV), compared day by day.
    Payouts {
        /// The payouts; those credited outside the period are left out and counted.
        payouts: &'a [Payout],
        /// Days between the work and the payout dated for it: a payout dated day D pays for
        /// day D − lag (pools that settle a day's PPS the next morning have a lag of 1).
        credit_lag_days: i64,
    },
}

/// The UTC days a report covers, first and last included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPeriod {
    first: Day,
    last: Day,
}

/// A period that cannot be reported on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditPeriodError {
    /// The last day is before the first.
    #[error("the period ends ({last}) before it starts ({first})")]
    Reversed {
        /// The first day given.
        first: Day,
        /// The last day given.
        last: Day,
    },
    /// More days than a report lists.
    #[error("a period of {0} days is too long for a day-by-day report (at most {MAX_AUDIT_DAYS})")]
    TooLong(i64),
}

impl AuditPeriod {
    /// The days from `first` to `last`, both included.
    ///
    /// # Errors
    /// When `last` is before `first`, or the period is longer than [`MAX_AUDIT_DAYS`].
    pub fn new(first: Day, last: Day) -> Result<Self, AuditPeriodError> {
        let days = last.days_since_epoch() - first.days_since_epoch() + 1;
        if days < 1 {
            Err(AuditPeriodError::Reversed { first, last })
        } else if days > MAX_AUDIT_DAYS {
            Err(AuditPeriodError::TooLong(days))
        } else {
            Ok(AuditPeriod { first, last })
        }
    }

    /// The first day.
    pub fn first(self) -> Day {
        self.first
    }

    /// The last day (included).
    pub fn last(self) -> Day {
        self.last
    }

    fn contains(self, d: Day) -> bool {
        self.first <= d && d <= self.last
    }

    fn days(self) -> impl Iterator<Item = Day> {
        let n = self.last.days_since_epoch() - self.first.days_since_epoch();
        (0..=n).map(move |i| self.first.plus_days(i))
    }
}

/// One line of the report: a day, or the total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AuditRow {
    /// The day; `None` on the total line.
    pub day: Option<Day>,
    /// What the model expected, in satoshis.
    pub expected_sat: u64,
    /// What was paid; `None` per day when only a total was entered.
    pub paid_sat: Option<u64>,
    /// `paid − expected`, in satoshis.
    pub diff_sat: Option<i64>,
    /// `(paid − expected) / expected`; `None` when nothing was expected or paid is unknown.
    pub diff_rel: Option<f64>,
}

impl AuditRow {
    fn new(day: Option<Day>, expected_sat: u64, paid_sat: Option<u64>) -> Self {
        let diff = paid_sat.map(|p| i128::from(p) - i128::from(expected_sat));
        AuditRow {
            day,
            expected_sat,
            paid_sat,
            // Amounts of bitcoin are far inside i64; clamp rather than wrap all the same.
            diff_sat: diff.map(|d| d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64),
            diff_rel: diff
                .filter(|_| expected_sat > 0)
                .map(|d| d as f64 / expected_sat as f64),
        }
    }
}

/// The report for one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discrepancy {
    /// The model the expectation comes from.
    pub model: Model,
    /// The pool fee it assumed.
    pub pool_fee: Bps,
    /// Every day of the period, in order.
    pub days: Vec<AuditRow>,
    /// The whole period.
    pub total: AuditRow,
    /// Payouts credited to days outside the period, left out of the comparison.
    pub payouts_outside_period: usize,
}

/// Sets `expected` against `paid` over `period`.
///
/// Expected days outside the period are left out, so compute the expectation for the same
/// period (PPLNS: the blocks found in it).
pub fn audit(expected: &Expected, paid: &Paid<'_>, period: AuditPeriod) -> Discrepancy {
    let expected_by_day: BTreeMap<Day, u64> = expected
        .days
        .iter()
        .filter(|d| period.contains(d.day))
        .map(|d| (d.day, d.expected_sat))
        .collect();
    let (paid_by_day, outside) = match *paid {
        Paid::Total(_) => (None, 0),
        Paid::Payouts {
            payouts,
            credit_lag_days,
        } => {
            let mut by_day: BTreeMap<Day, u64> = BTreeMap::new();
            let mut outside = 0;
            for p in payouts {
                let day = p.at.day().plus_days(-credit_lag_days);
                if period.contains(day) {
                    let sum = by_day.entry(day).or_insert(0);
                    *sum = sum.saturating_add(p.amount.to_sat());
                } else {
                    outside += 1;
                }
            }
            (Some(by_day), outside)
        }
    };
    let days: Vec<AuditRow> = period
        .days()
        .map(|day| {
            let exp = expected_by_day.get(&day).copied().unwrap_or(0);
            let paid = paid_by_day
                .as_ref()
                .map(|m| m.get(&day).copied().unwrap_or(0));
            AuditRow::new(Some(day), exp, paid)
        })
        .collect();
    let expected_total = days
        .iter()
        .fold(0u64, |acc, r| acc.saturating_add(r.expected_sat));
    let paid_total = match *paid {
        Paid::Total(amount) => amount.to_sat(),
        Paid::Payouts { .. } => days
            .iter()
            .filter_map(|r| r.paid_sat)
            .fold(0u64, u64::saturating_add),
    };
    Discrepancy {
        model: expected.model,
        pool_fee: expected.pool_fee,
        days,
        total: AuditRow::new(None, expected_total, Some(paid_total)),
        payouts_outside_period: outside,
    }
}

impl Discrepancy {
    /// The report as CSV: `model,day,expected_sat,paid_sat,diff_sat,diff_rel`, the days then a
    /// `total` line; unknown values are empty.
    ///
    /// # Errors
    /// Not in practice: writing to memory cannot fail.
    pub fn to_csv(&self) -> Result<String, csv::Error> {
        let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
        w.write_record([
            "model",
            "day",
            "expected_sat",
            "paid_sat",
            "diff_sat",
            "diff_rel",
        ])?;
        for row in self.days.iter().chain([&self.total]) {
            let day = row
                .day
                .map_or_else(|| "total".to_owned(), |d| d.to_string());
            let opt = |v: Option<String>| v.unwrap_or_default();
            w.write_record([
                self.model.to_string(),
                day,
                row.expected_sat.to_string(),
                opt(row.paid_sat.map(|p| p.to_string())),
                opt(row.diff_sat.map(|d| d.to_string())),
                opt(row.diff_rel.map(|r| format!("{r:.6}"))),
            ])?;
        }
        let bytes = w.into_inner().map_err(csv::IntoInnerError::into_error)?;
        Ok(String::from_utf8(bytes).expect("every field written is UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::Amount;

    use super::*;
    use crate::bucket::tests::bucket;
    use crate::bucket::BucketSeries;
    use crate::payout::pps;
    use crate::time::Timestamp;

    const DAY: i64 = 86_400;

    /// PPS, no fee: day 0 expects 1000 sat, day 1 nothing, day 2 3000 sat
    /// (work 10 and 30 at D = 100 with a 10 000 sat subsidy: 10/100 × 10 000 = 1000).
    fn expected() -> Expected {
        let s = BucketSeries::new(vec![
            bucket(0, 60, 10.0, 100.0, 10_000, 0),
            bucket(2 * DAY, 60, 30.0, 100.0, 10_000, 0),
        ])
        .unwrap();
        pps(&s, Bps::ZERO)
    }

    fn period(first: i64, last: i64) -> AuditPeriod {
        AuditPeriod::new(
            Timestamp::from_unix(first * DAY).day(),
            Timestamp::from_unix(last * DAY).day(),
        )
        .unwrap()
    }

    fn payout(secs: i64, sat: u64) -> Payout {
        Payout {
            at: Timestamp::from_unix(secs),
            amount: Amount::from_sat(sat),
        }
    }

    #[test]
    fn payouts_per_day_with_a_lag() {
        // Paid the next morning (lag 1): 900 on day 1 pays day 0 (-100, -10%); two payouts on
        // day 3 pay day 2: 1500 + 1500 = 3000 (even); one on day 5 is outside the period.
        // Total: expected 4000, paid 3900: -100, -2.5%.
        let payouts = [
            payout(DAY + 3600, 900),
            payout(3 * DAY, 1500),
            payout(3 * DAY + 60, 1500),
            payout(5 * DAY, 7),
        ];
        let r = audit(
            &expected(),
            &Paid::Payouts {
                payouts: &payouts,
                credit_lag_days: 1,
            },
            period(0, 2),
        );
        let by_day: Vec<(u64, Option<u64>, Option<i64>)> = r
            .days
            .iter()
            .map(|d| (d.expected_sat, d.paid_sat, d.diff_sat))
            .collect();
        assert_eq!(
            by_day,
            [
                (1000, Some(900), Some(-100)),
                (0, Some(0), Some(0)),
                (3000, Some(3000), Some(0))
            ]
        );
        assert_eq!(r.days[0].diff_rel, Some(-0.1));
        assert_eq!(
            r.days[1].diff_rel, None,
            "nothing expected: no relative difference"
        );
        assert_eq!(
            (r.total.expected_sat, r.total.paid_sat, r.total.diff_sat),
            (4000, Some(3900), Some(-100))
        );
        assert_eq!(r.total.diff_rel, Some(-0.025));
        assert_eq!(r.payouts_outside_period, 1);
    }

    #[test]
    fn an_entered_total_compares_in_total_only() {
        // Entered 4200 against 4000 expected: +200, +5%.
        let r = audit(
            &expected(),
            &Paid::Total(Amount::from_sat(4200)),
            period(0, 2),
        );
        assert!(r
            .days
            .iter()
            .all(|d| d.paid_sat.is_none() && d.diff_rel.is_none()));
        assert_eq!(r.total.diff_sat, Some(200));
        assert_eq!(r.total.diff_rel, Some(0.05));
    }

    #[test]
    fn expected_days_outside_the_period_are_left_out() {
        // Period day 1..=2 only: expected 3000.
        let r = audit(
            &expected(),
            &Paid::Total(Amount::from_sat(3000)),
            period(1, 2),
        );
        assert_eq!(r.days.len(), 2);
        assert_eq!(r.total.expected_sat, 3000);
        assert_eq!(r.total.diff_sat, Some(0));
    }

    #[test]
    fn csv_form() {
        let payouts = [payout(0, 1000)];
        let r = audit(
            &expected(),
            &Paid::Payouts {
                payouts: &payouts,
                credit_lag_days: 0,
            },
            period(0, 1),
        );
        assert_eq!(
            r.to_csv().unwrap(),
            "model,day,expected_sat,paid_sat,diff_sat,diff_rel\n\
             pps,1970-01-01,1000,1000,0,0.000000\n\
             pps,1970-01-02,0,0,0,\n\
             pps,total,1000,1000,0,0.000000\n"
        );
        let r = audit(&expected(), &Paid::Total(Amount::from_sat(1)), period(0, 0));
        assert!(r
            .to_csv()
            .unwrap()
            .ends_with("pps,1970-01-01,1000,,,\npps,total,1000,1,-999,-0.999000\n"));
    }

    #[test]
    fn bad_periods_are_refused() {
        let d = |n: i64| Timestamp::from_unix(n * DAY).day();
        assert!(matches!(
            AuditPeriod::new(d(2), d(1)),
            Err(AuditPeriodError::Reversed { .. })
        ));
        assert!(matches!(
            AuditPeriod::new(d(0), d(MAX_AUDIT_DAYS)),
            Err(AuditPeriodError::TooLong(_))
        ));
        assert!(AuditPeriod::new(d(0), d(MAX_AUDIT_DAYS - 1)).is_ok());
    }
}
