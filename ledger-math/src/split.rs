//! The hosting farm's distributor: an amount received for a period, split among the customers
//! in proportion to their work, after the farm's hosting fee.
//!
//! 1. The hosting fee is `amount × rate`, rounded down (a customer never pays above the rate).
//! 2. The rest is split in proportion to each customer's work, to the satoshi, by the
//!    largest-remainder method: every customer gets the whole satoshis
//!    of their exact share, and the few left over go one each to the largest fractions; equal
//!    fractions go to the customer whose name sorts first.
//!
//! So `Σ parts + fee == amount`, always, and the same input gives the same rows on every run.
//! It computes a payment run; it never moves funds.

use std::collections::BTreeMap;

use bitcoin::Amount;
use serde::Serialize;

use crate::apportion;
use crate::customers::Customer;
use crate::units::{Bps, Work};

/// `2^63`: works are scaled so the largest becomes this, then split as exact integers.
const WEIGHT_SCALE: f64 = 9_223_372_036_854_775_808.0;

/// One customer's part, ready for a CSV or JSON payment run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitRow {
    /// The customer.
    pub customer: Customer,
    /// Their work in the period.
    pub work: Work,
    /// Their fraction of the farm's work.
    pub share: f64,
    /// What they are paid, in satoshis.
    pub amount_sat: u64,
    /// The same in BTC, with 8 decimals (`0.00012345`).
    pub amount_btc: String,
}

/// A split: the farm's fee and each customer's part.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    /// The amount received.
    pub amount_sat: u64,
    /// The hosting fee rate.
    pub hosting_fee_rate: Bps,
    /// The hosting fee kept by the farm.
    pub hosting_fee_sat: u64,
    /// The farm's work over all customers.
    pub total_work: Work,
    /// One row per customer, by name; customers with no work are listed with 0.
    pub rows: Vec<SplitRow>,
}

/// A split that cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// Nobody worked, so there is no proportion to split by.
    #[error("no customer has any work in the period: nothing to split the amount by")]
    NoWork,
}

/// Splits `amount` among `work` per customer, after `hosting_fee`.
///
/// # Errors
/// [`SplitError::NoWork`] when every customer's work is zero, or there are none.
pub fn split(
    amount: Amount,
    work: &BTreeMap<Customer, Work>,
    hosting_fee: Bps,
) -> Result<Split, SplitError> {
    let total_work: Work = work.values().copied().sum();
    let max = work.values().map(|w| w.get()).fold(0.0, f64::max);
    if max <= 0.0 {
        return Err(SplitError::NoWork);
    }
    let amount_sat = amount.to_sat();
    let fee = hosting_fee.fee_floor(amount_sat);
    let weights = integer_weights(work.values().copied(), max);
    let parts = apportion::by_weights(amount_sat - fee, &weights).ok_or(SplitError::NoWork)?;
    let rows = work
        .iter()
        .zip(parts)
        .map(|((customer, &w), sat)| SplitRow {
            customer: customer.clone(),
            work: w,
            share: w.get() / total_work.get(),
            amount_sat: sat,
            amount_btc: btc_text(sat),
        })
        .collect();
    Ok(Split {
        amount_sat,
        hosting_fee_rate: hosting_fee,
        hosting_fee_sat: fee,
        total_work,
        rows,
    })
}

/// The works as exact integers to split by.
///
/// Works that are all whole numbers (share difficulties usually are) are used as they are, so
/// equal fractions tie exactly. Otherwise each becomes its ratio to the largest work (correctly
/// rounded) times 2^63, which is exact; works below 2^-63 of the largest count as zero, their
/// exact share of any amount of bitcoin being far below a satoshi.
fn integer_weights(works: impl Iterator<Item = Work> + Clone, max: f64) -> Vec<u64> {
    if works.clone().all(|w| w.get().fract() == 0.0) && max < WEIGHT_SCALE {
        works.map(|w| w.get() as u64).collect()
    } else {
        works
            .map(|w| (w.get() / max * WEIGHT_SCALE) as u64)
            .collect()
    }
}

impl Split {
    /// The rows as CSV with a header line (`customer,work,share,amount_sat,amount_btc`).
    ///
    /// # Errors
    /// Not in practice: writing to memory cannot fail, and every field is plain text.
    pub fn to_csv(&self) -> Result<String, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        for row in &self.rows {
            w.serialize(row)?;
        }
        let bytes = w.into_inner().map_err(csv::IntoInnerError::into_error)?;
        Ok(String::from_utf8(bytes).expect("every field written is UTF-8"))
    }
}

/// Satoshis as BTC with all 8 decimals, in integers so nothing is rounded.
pub fn btc_text(sat: u64) -> String {
    format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn work(list: &[(&str, f64)]) -> BTreeMap<Customer, Work> {
        list.iter()
            .map(|&(c, w)| (Customer::new(c).unwrap(), Work::new(w).unwrap()))
            .collect()
    }

    fn sats(s: &Split) -> Vec<(&str, u64)> {
        s.rows
            .iter()
            .map(|r| (r.customer.as_str(), r.amount_sat))
            .collect()
    }

    fn adds_up(s: &Split) -> bool {
        s.rows
            .iter()
            .map(|r| u128::from(r.amount_sat))
            .sum::<u128>()
            + u128::from(s.hosting_fee_sat)
            == u128::from(s.amount_sat)
    }

    #[test]
    fn one_sat_among_three() {
        // 1/3 sat each: floors 0, one left, equal fractions -> the first name, "alice".
        let s = split(
            Amount::from_sat(1),
            &work(&[("carol", 7.0), ("alice", 7.0), ("bob", 7.0)]),
            Bps::ZERO,
        )
        .unwrap();
        assert_eq!(sats(&s), [("alice", 1), ("bob", 0), ("carol", 0)]);
        assert!(adds_up(&s));
    }

    #[test]
    fn primes_with_a_hosting_fee() {
        // 1 000 003 sat (prime), fee 3% -> floor(30 000.09) = 30 000; 970 003 left.
        // Work 3 : 5 : 7 (sum 15): exact 194 000.6, 323 334.333.., 452 668.0666..
        // floors 194 000 + 323 334 + 452 668 = 970 002; one left -> largest fraction (0.6):
        // alice. Result 194 001, 323 334, 452 668; with the fee: 1 000 003.
        let s = split(
            Amount::from_sat(1_000_003),
            &work(&[("alice", 3.0), ("bob", 5.0), ("carol", 7.0)]),
            "3%".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(s.hosting_fee_sat, 30_000);
        assert_eq!(
            sats(&s),
            [("alice", 194_001), ("bob", 323_334), ("carol", 452_668)]
        );
        assert!(adds_up(&s));
        assert_eq!(s.rows[0].amount_btc, "0.00194001");
        assert!((s.rows[0].share - 0.2).abs() < 1e-15);
    }

    #[test]
    fn exact_ties_between_unequal_works_go_by_name() {
        // 10 sat in 1 : 3 -> 2.5 and 7.5: floors 2 + 7, one left, both fractions exactly 0.5
        // -> the first name: 3, 7. (Scaled weights would make 1/3 inexact and decide by noise.)
        let s = split(
            Amount::from_sat(10),
            &work(&[("zed", 3.0), ("amy", 1.0)]),
            Bps::ZERO,
        )
        .unwrap();
        assert_eq!(sats(&s), [("amy", 3), ("zed", 7)]);
        // The same with the names the other way round: the odd satoshi follows the name.
        let s = split(
            Amount::from_sat(10),
            &work(&[("zed", 1.0), ("amy", 3.0)]),
            Bps::ZERO,
        )
        .unwrap();
        assert_eq!(sats(&s), [("amy", 8), ("zed", 2)]);
    }

    #[test]
    fn zero_work_customers_get_nothing() {
        // 101 sat between two equal workers; idle customers listed with 0.
        let s = split(
            Amount::from_sat(101),
            &work(&[("a", 0.0), ("b", 2.5), ("c", 0.0), ("d", 2.5)]),
            Bps::ZERO,
        )
        .unwrap();
        // 50.5 each: b (first by name) gets the odd one.
        assert_eq!(sats(&s), [("a", 0), ("b", 51), ("c", 0), ("d", 50)]);
        assert_eq!(s.rows[0].share, 0.0);
    }

    #[test]
    fn all_zero_or_nobody_is_an_error() {
        assert_eq!(
            split(
                Amount::from_sat(5),
                &work(&[("a", 0.0), ("b", 0.0)]),
                Bps::ZERO
            ),
            Err(SplitError::NoWork)
        );
        assert_eq!(
            split(Amount::from_sat(5), &BTreeMap::new(), Bps::ZERO),
            Err(SplitError::NoWork)
        );
    }

    #[test]
    fn full_fee_and_zero_amount() {
        let w = work(&[("a", 1.0), ("b", 2.0)]);
        let s = split(Amount::from_sat(999), &w, Bps::ALL).unwrap();
        assert_eq!(
            (s.hosting_fee_sat, sats(&s)),
            (999, vec![("a", 0), ("b", 0)])
        );
        let s = split(Amount::ZERO, &w, "1%".parse().unwrap()).unwrap();
        assert_eq!((s.hosting_fee_sat, sats(&s)), (0, vec![("a", 0), ("b", 0)]));
    }

    #[test]
    fn tiny_and_huge_works_side_by_side() {
        // 1e-300 against 1e300: the tiny one's exact share is 0; 21 M BTC all to "big".
        let s = split(
            Amount::MAX_MONEY,
            &work(&[("big", 1e300), ("tiny", 1e-300)]),
            Bps::ZERO,
        )
        .unwrap();
        assert_eq!(sats(&s), [("big", Amount::MAX_MONEY.to_sat()), ("tiny", 0)]);
    }

    #[test]
    fn csv_rows_are_ready_for_a_payment_run() {
        let s = split(
            Amount::from_sat(150_000_000),
            &work(&[("alice", 1.0), ("bob", 2.0)]),
            Bps::ZERO,
        )
        .unwrap();
        assert_eq!(
            s.to_csv().unwrap(),
            "customer,work,share,amount_sat,amount_btc\n\
             alice,1.0,0.3333333333333333,50000000,0.50000000\n\
             bob,2.0,0.6666666666666666,100000000,1.00000000\n"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["rows"][1]["amount_sat"], 100_000_000);
        assert_eq!(json["hosting_fee_rate"], 0);
    }

    proptest! {
        #[test]
        fn parts_and_fee_add_up_to_the_amount(
            amount in 0u64..=2_100_000_000_000_000,
            fee in 0u16..=10_000,
            works in prop::collection::vec(prop_oneof![Just(0.0), 0.0f64..1e18, 1e-12f64..1.0], 1..30),
        ) {
            let map: BTreeMap<Customer, Work> = works
                .iter()
                .enumerate()
                .map(|(i, &w)| (Customer::new(&format!("c{i:02}")).unwrap(), Work::new(w).unwrap()))
                .collect();
            match split(Amount::from_sat(amount), &map, Bps::new(fee).unwrap()) {
                Ok(s) => {
                    prop_assert!(adds_up(&s));
                    for r in &s.rows {
                        if r.work.is_zero() { prop_assert_eq!(r.amount_sat, 0); }
                        // Within one satoshi of the exact proportional part.
                        let exact = (amount - s.hosting_fee_sat) as f64 * r.share;
                        prop_assert!((r.amount_sat as f64 - exact).abs() <= 1.0 + exact * 1e-9);
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e, SplitError::NoWork);
                    prop_assert!(works.iter().all(|&w| w == 0.0));
                }
            }
        }

        #[test]
        fn the_split_does_not_depend_on_input_order(
            amount in 0u64..1_000_000,
            works in prop::collection::vec(0u32..5, 1..12),
        ) {
            // A BTreeMap fixes the order by name; build it both ways round and compare.
            let named: Vec<(Customer, Work)> = works
                .iter()
                .enumerate()
                .map(|(i, &w)| (Customer::new(&format!("c{i:02}")).unwrap(), Work::new(f64::from(w)).unwrap()))
                .collect();
            let forward: BTreeMap<_, _> = named.iter().cloned().collect();
            let backward: BTreeMap<_, _> = named.iter().rev().cloned().collect();
            prop_assert_eq!(
                split(Amount::from_sat(amount), &forward, Bps::ZERO),
                split(Amount::from_sat(amount), &backward, Bps::ZERO)
            );
        }
    }
}
