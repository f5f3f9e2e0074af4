//! The farm's work over time, as the ledger hands it over: one [`Bucket`] per time slot.

use std::num::NonZeroU32;

use bitcoin::Amount;
use mining_types::Difficulty;

use crate::time::Timestamp;
use crate::units::Work;

/// The network as it was during a bucket: what one block was worth, and how hard it was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkAt {
    /// The network (block) difficulty in force.
    pub difficulty: Difficulty,
    /// The block subsidy in force (`mining_types::block_subsidy` at the height mined on).
    pub subsidy: Amount,
    /// The fees of the templates mined in the bucket (their average when several were): what a
    /// block would have carried beside the subsidy. FPPS uses it; PPS ignores it.
    pub template_fees: Amount,
}

/// The farm's validated work in one time slot `[start, start + secs)`.
///
/// The work is the farm's total, all workers and all gateways summed: the payout models look at
/// the farm as the pool sees it, one account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The start of the slot.
    pub start: Timestamp,
    /// Its length (1 minute in the ledger by default).
    pub secs: NonZeroU32,
    /// The work accepted in the slot.
    pub work: Work,
    /// The network difficulty, subsidy and template fees of the slot.
    pub network: NetworkAt,
}

impl Bucket {
    /// The end of the slot (exclusive).
    pub fn end(&self) -> Timestamp {
        self.start.add_secs(i64::from(self.secs.get()))
    }

    /// The part of this bucket's work done in `[from, to)`, taking the work as spread evenly
    /// over the slot (the finest the ledger knows).
    pub fn work_between(&self, from: Timestamp, to: Timestamp) -> Work {
        let lo = from.max(self.start).unix();
        let hi = to.min(self.end()).unix();
        if hi <= lo {
            return Work::ZERO;
        }
        let overlap = (hi - lo) as f64 / f64::from(self.secs.get());
        Work::new(self.work.get() * overlap.min(1.0)).unwrap_or(Work::ZERO)
    }
}

/// Buckets in time order, none overlapping another: the input of every payout model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BucketSeries(Vec<Bucket>);

/// Buckets that cannot form a series.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("buckets starting at {first} and {second} overlap: sum the work of one slot into one bucket before computing payouts")]
pub struct OverlapError {
    /// The start of the earlier bucket.
    pub first: Timestamp,
    /// The start of the one that overlaps it.
    pub second: Timestamp,
}

impl BucketSeries {
    /// Sorts the buckets by start and checks that none overlaps the next. Gaps are fine (no
    /// work was recorded then).
    ///
    /// # Errors
    /// When two buckets overlap, such as the same minute given twice (two gateways' rows not
    /// yet summed): counting it twice would double the expected pay.
    pub fn new(mut buckets: Vec<Bucket>) -> Result<Self, OverlapError> {
        buckets.sort_by_key(|b| b.start);
        for pair in buckets.windows(2) {
            if let [a, b] = pair {
                if b.start < a.end() {
                    return Err(OverlapError {
                        first: a.start,
                        second: b.start,
                    });
                }
            }
        }
        Ok(BucketSeries(buckets))
    }

    /// The buckets, in time order.
    pub fn buckets(&self) -> &[Bucket] {
        &self.0
    }

    /// The farm's total work over the series.
    pub fn total_work(&self) -> Work {
        self.0.iter().map(|b| b.work).sum()
    }

    /// The farm's work in `[from, to)`, prorating the buckets cut by either edge.
    pub fn work_between(&self, from: Timestamp, to: Timestamp) -> Work {
        // Buckets are sorted and disjoint, so those ending after `from` start at this index.
        let first = self.0.partition_point(|b| b.end() <= from);
        self.0
            .iter()
            .skip(first)
            .take_while(|b| b.start < to)
            .map(|b| b.work_between(from, to))
            .sum()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A bucket for tests: `work` in `[start, start + secs)` at difficulty `d`, subsidy and
    /// fees in satoshis.
    pub(crate) fn bucket(
        start: i64,
        secs: u32,
        work: f64,
        d: f64,
        subsidy: u64,
        fees: u64,
    ) -> Bucket {
        Bucket {
            start: Timestamp::from_unix(start),
            secs: NonZeroU32::new(secs).expect("tests use slots of at least 1 s"),
            work: Work::new(work).expect("tests use valid work"),
            network: NetworkAt {
                difficulty: Difficulty::new(d).expect("tests use valid difficulty"),
                subsidy: Amount::from_sat(subsidy),
                template_fees: Amount::from_sat(fees),
            },
        }
    }

    #[test]
    fn series_sorts_and_refuses_overlaps() {
        let s = BucketSeries::new(vec![
            bucket(120, 60, 1.0, 1.0, 0, 0),
            bucket(0, 60, 2.0, 1.0, 0, 0),
        ])
        .unwrap();
        assert_eq!(s.buckets()[0].start.unix(), 0);
        assert_eq!(s.total_work().get(), 3.0);
        let err = BucketSeries::new(vec![
            bucket(0, 60, 1.0, 1.0, 0, 0),
            bucket(59, 60, 1.0, 1.0, 0, 0),
        ])
        .unwrap_err();
        assert_eq!(err.second.unix(), 59);
        assert!(BucketSeries::new(vec![
            bucket(0, 60, 1.0, 1.0, 0, 0),
            bucket(0, 60, 1.0, 1.0, 0, 0)
        ])
        .is_err());
    }

    #[test]
    fn work_between_prorates_edges() {
        // Buckets [0,60) with 60 work, [60,120) with 120, a gap, [180,240) with 6.
        let s = BucketSeries::new(vec![
            bucket(0, 60, 60.0, 1.0, 0, 0),
            bucket(60, 60, 120.0, 1.0, 0, 0),
            bucket(180, 60, 6.0, 1.0, 0, 0),
        ])
        .unwrap();
        // [30, 90): half of the first (30) + half of the second (60) = 90.
        assert_eq!(
            s.work_between(Timestamp::from_unix(30), Timestamp::from_unix(90))
                .get(),
            90.0
        );
        // [100, 190): the last 20 s of the second (40) + the gap + 10 s of the third (1) = 41.
        assert_eq!(
            s.work_between(Timestamp::from_unix(100), Timestamp::from_unix(190))
                .get(),
            41.0
        );
        // Whole range and beyond: everything.
        assert_eq!(
            s.work_between(Timestamp::from_unix(-1000), Timestamp::from_unix(1000))
                .get(),
            186.0
        );
        // Empty or reversed ranges: nothing.
        assert!(s
            .work_between(Timestamp::from_unix(90), Timestamp::from_unix(90))
            .is_zero());
        assert!(s
            .work_between(Timestamp::from_unix(120), Timestamp::from_unix(180))
            .is_zero());
        assert!(s
            .work_between(Timestamp::from_unix(90), Timestamp::from_unix(30))
            .is_zero());
    }
}
