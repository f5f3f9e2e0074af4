//! Rounding to the satoshi so that the parts add up: the largest-remainder method.
//!
//! Each part first gets the whole satoshis of its exact share (rounded down); the satoshis this
//! leaves over (fewer than the number of parts) go one each to the parts with the largest
//! fractional remainders. Ties go to the earlier part, so callers fix the order (customers by
//! name, days by date) and the result is the same on every run and every machine.
//!
//! The arithmetic is integer: weights are `u64`, products `u128`, so the result is exact.

/// Splits `total` in proportion to `weights`. `None` when every weight is zero.
///
/// The parts add up to `total` exactly. A zero weight gets nothing.
pub(crate) fn by_weights(total: u64, weights: &[u64]) -> Option<Vec<u64>> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        return None;
    }
    let total_wide = u128::from(total);
    // floor(total * w / sum) and its remainder; total * w < 2^128 since both are below 2^64.
    let exact: Vec<(u64, u128)> = weights
        .iter()
        .map(|&w| {
            let p = total_wide * u128::from(w);
            let part = u64::try_from(p / sum).expect("a part is at most the total");
            (part, p % sum)
        })
        .collect();
    let floors: Vec<u64> = exact.iter().map(|&(part, _)| part).collect();
    let remainders: Vec<u128> = exact.iter().map(|&(_, rem)| rem).collect();
    Some(hand_out(total, floors, &remainders))
}

/// Rounds non-negative reals (fractional satoshis) to whole ones that add up to the rounded
/// sum of the reals (half up).
///
/// Non-finite or negative values count as zero.
pub(crate) fn round_preserving_sum(values: &[f64]) -> Vec<u64> {
    let clean = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
    let total: f64 = values.iter().map(|&v| clean(v)).sum();
    // `as` saturates: an absurd expectation becomes u64::MAX rather than wrapping.
    let total = (total + 0.5).floor() as u64;
    let floors: Vec<u64> = values.iter().map(|&v| clean(v).floor() as u64).collect();
    // Fractions in units of 2^-52, so ties compare equal exactly as the reals do.
    let remainders: Vec<u128> = values
        .iter()
        .map(|&v| (clean(v).fract() * 4_503_599_627_370_496.0) as u128)
        .collect();
    hand_out(total, floors, &remainders)
}

/// Adds the satoshis `total - Σ floors` one each to the largest remainders (ties: lower index).
///
/// When the floors already exceed the total (only possible for [`round_preserving_sum`] through
/// float rounding in the sum), the surplus is taken back from the smallest remainders, so the
/// parts still add up to `total`.
fn hand_out(total: u64, mut parts: Vec<u64>, remainders: &[u128]) -> Vec<u64> {
    let mut order: Vec<usize> = (0..parts.len()).collect();
    // Stable sort: equal remainders keep index order.
    order.sort_by(|&a, &b| remainders[b].cmp(&remainders[a]));
    let assigned: u128 = parts.iter().map(|&p| u128::from(p)).sum();
    let total_wide = u128::from(total);
    if assigned <= total_wide {
        let mut left = total_wide - assigned;
        // `left` is below the number of parts for a true proportional split; loop anyway so a
        // float-rounded total can never leave satoshis out.
        while left > 0 {
            for &i in &order {
                if left == 0 {
                    break;
                }
                parts[i] += 1;
                left -= 1;
            }
        }
    } else {
        let mut surplus = assigned - total_wide;
        while surplus > 0 {
            for &i in order.iter().rev() {
                if surplus > 0 && parts[i] > 0 {
                    parts[i] -= 1;
                    surplus -= 1;
                }
            }
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_sat_among_three_equal_goes_to_the_first() {
        // 1 * 1/3 = 0.333.. each: floors 0, 0, 0; one satoshi left, all remainders equal, so
        // it goes to index 0.
        assert_eq!(by_weights(1, &[5, 5, 5]).unwrap(), vec![1, 0, 0]);
        // 2 sat: 0.666.. each, the first two get one.
        assert_eq!(by_weights(2, &[5, 5, 5]).unwrap(), vec![1, 1, 0]);
    }

    #[test]
    fn primes_split_by_largest_remainder() {
        // 101 sat in 2:3:5 (sum 10): exact 20.2, 30.3, 50.5 -> floors 20, 30, 50 (100), one
        // left; the largest remainder is 0.5 (index 2) -> 20, 30, 51.
        assert_eq!(by_weights(101, &[2, 3, 5]).unwrap(), vec![20, 30, 51]);
        // 7 sat in 3:3:1 (sum 7): exactly 3, 3, 1.
        assert_eq!(by_weights(7, &[3, 3, 1]).unwrap(), vec![3, 3, 1]);
        // 13 sat in 1:1:1:1:1 (sum 5): 2.6 each -> floors 2 (10), three left to indices 0..3.
        assert_eq!(by_weights(13, &[1; 5]).unwrap(), vec![3, 3, 3, 2, 2]);
    }

    #[test]
    fn zero_weights_get_nothing_and_all_zero_is_none() {
        // 10 sat in 0:1:0:1 -> 5 each for the weighted ones.
        assert_eq!(by_weights(10, &[0, 1, 0, 1]).unwrap(), vec![0, 5, 0, 5]);
        // 11 sat: 5.5 each, the earlier weighted one gets the odd satoshi.
        assert_eq!(by_weights(11, &[0, 1, 0, 1]).unwrap(), vec![0, 6, 0, 5]);
        assert_eq!(by_weights(10, &[0, 0]), None);
        assert_eq!(by_weights(10, &[]), None);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let parts = by_weights(u64::MAX, &[u64::MAX, u64::MAX, 1]).unwrap();
        assert_eq!(
            parts.iter().map(|&p| u128::from(p)).sum::<u128>(),
            u128::from(u64::MAX)
        );
    }

    #[test]
    fn rounding_days_keeps_the_rounded_total() {
        // 0.4 + 0.4 + 0.4 = 1.2 -> total 1; floors 0, 0, 0; the first day gets it.
        assert_eq!(round_preserving_sum(&[0.4, 0.4, 0.4]), vec![1, 0, 0]);
        // 1.5 + 2.25 = 3.75 -> 4; floors 1 + 2 = 3; the larger remainder (0.5) gets the rest.
        assert_eq!(round_preserving_sum(&[1.5, 2.25]), vec![2, 2]);
        assert_eq!(round_preserving_sum(&[f64::NAN, -3.0, 2.0]), vec![0, 0, 2]);
        assert_eq!(round_preserving_sum(&[]), Vec::<u64>::new());
    }

    proptest! {
        #[test]
        fn parts_always_add_up(total in any::<u64>(), weights in prop::collection::vec(any::<u64>(), 1..40)) {
            if let Some(parts) = by_weights(total, &weights) {
                prop_assert_eq!(parts.iter().map(|&p| u128::from(p)).sum::<u128>(), u128::from(total));
                for (p, w) in parts.iter().zip(&weights) {
                    if *w == 0 { prop_assert_eq!(*p, 0); }
                }
            } else {
                prop_assert!(weights.iter().all(|&w| w == 0));
            }
        }

        #[test]
        fn each_part_is_within_one_sat_of_exact(total in 0u64..=2_100_000_000_000_000, weights in prop::collection::vec(0u64..1_000_000, 1..20)) {
            if let Some(parts) = by_weights(total, &weights) {
                let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
                for (p, w) in parts.iter().zip(&weights) {
                    let floor = u128::from(total) * u128::from(*w) / sum;
                    prop_assert!(u128::from(*p) == floor || u128::from(*p) == floor + 1);
                }
            }
        }

        #[test]
        fn rounded_days_add_up_to_the_rounded_total(values in prop::collection::vec(0.0f64..1e12, 0..50)) {
            let parts = round_preserving_sum(&values);
            let expected = (values.iter().sum::<f64>() + 0.5).floor() as u64;
            prop_assert_eq!(parts.iter().sum::<u64>(), expected);
        }
    }
}
