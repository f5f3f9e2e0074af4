//! The ledger's rows turned into what `ledger-math` computes pay from: the farm's work per
//! bucket with the network of the time ([`series`]), PPLNS blocks, work per customer, and the
//! measured hashrate. Pure.

use std::collections::BTreeMap;

use bitcoin::Amount;
use ledger::{Block, ChainBucket, WorkBucket};
use ledger_math::{
    Bucket, BucketSeries, Customer, CustomerMap, NetworkAt, Payout, PoolBlock, PplnsWindow,
    Timestamp, Work,
};
use mining_types::Difficulty;

use super::books::customer_of;
use super::ReportError;

/// The network as the chain rows show it at `start`: the row of that bucket, else the latest
/// before it, else the first after it (a gateway that started mid-bucket).
fn network_at(chain: &[ChainBucket], start: i64) -> Option<NetworkAt> {
    let row = chain
        .iter()
        .filter(|c| c.bucket_start <= start)
        .max_by_key(|c| c.bucket_start)
        .or_else(|| chain.iter().min_by_key(|c| c.bucket_start))?;
    Some(NetworkAt {
        difficulty: Difficulty::new(row.network_difficulty).ok()?,
        subsidy: Amount::from_sat(u64::try_from(row.subsidy_sat).unwrap_or(0)),
        template_fees: Amount::from_sat(u64::try_from(row.fees_sat).unwrap_or(0)),
    })
}

/// The farm's work per bucket, all workers and gateways summed, each with its network.
///
/// Gateways may sample with different bucket lengths; rows are then put in buckets of the
/// longest, so none overlaps another.
///
/// # Errors
/// No chain figures at all (nothing to price work with), or work that is not a number.
pub fn series(work: &[WorkBucket], chain: &[ChainBucket]) -> Result<BucketSeries, ReportError> {
    if chain.is_empty() {
        return Err(ReportError::Empty(
            "the ledger has no chain figures (difficulty, subsidy, fees) for this period".into(),
        ));
    }
    let secs = chain
        .iter()
        .map(|c| c.bucket_secs)
        .max()
        .unwrap_or(60)
        .max(1);
    let mut sums: BTreeMap<i64, f64> = BTreeMap::new();
    for w in work {
        *sums
            .entry(w.bucket_start.div_euclid(secs) * secs)
            .or_default() += w.work;
    }
    let mut buckets = Vec::with_capacity(sums.len());
    for (start, w) in sums {
        let network = network_at(chain, start).ok_or_else(|| {
            ReportError::Empty(format!("no usable network difficulty at {start}"))
        })?;
        buckets.push(Bucket {
            start: Timestamp::from_unix(start),
            secs: std::num::NonZeroU32::new(u32::try_from(secs).unwrap_or(u32::MAX))
                .unwrap_or(std::num::NonZeroU32::MIN),
            work: Work::new(w).map_err(|e| ReportError::Input(format!("work {}", e.0)))?,
            network,
        });
    }
    BucketSeries::new(buckets).map_err(|e| ReportError::Input(e.to_string()))
}

/// The window's size: a number of work units, or `2xD` (twice the network difficulty of the
/// period's last bucket).
///
/// # Errors
/// A window that does not parse or is not above zero.
pub fn window(text: &str, chain: &[ChainBucket]) -> Result<PplnsWindow, ReportError> {
    let bad = |why: String| ReportError::Input(format!("--window {text:?}: {why}"));
    let t = text.trim();
    if let Some(factor) = t.strip_suffix("xD").or_else(|| t.strip_suffix("xd")) {
        let factor: f64 = factor
            .trim()
            .parse()
            .map_err(|_| bad("expected e.g. 2xD".into()))?;
        let last = chain
            .iter()
            .max_by_key(|c| c.bucket_start)
            .ok_or_else(|| bad("no network difficulty in the ledger".into()))?;
        let d = Difficulty::new(last.network_difficulty).map_err(|e| bad(e.to_string()))?;
        return PplnsWindow::times_network_difficulty(factor, d).map_err(|e| bad(e.to_string()));
    }
    let n: f64 = t
        .parse()
        .map_err(|_| bad("a number of work units, or e.g. 2xD".into()))?;
    let w = Work::new(n).map_err(|_| bad("must be a finite number".into()))?;
    PplnsWindow::new(w).map_err(|e| bad(e.to_string()))
}

/// The pool's blocks for PPLNS: given (time and reward, from a CSV), or else the blocks the
/// farm found, each worth the subsidy and fees of its time.
pub fn pplns_blocks(
    given: Option<&[Payout]>,
    found: &[Block],
    chain: &[ChainBucket],
) -> Vec<(Timestamp, Amount)> {
    if let Some(p) = given {
        return p.iter().map(|p| (p.at, p.amount)).collect();
    }
    found
        .iter()
        .filter_map(|b| {
            let n = network_at(chain, b.found_at)?;
            let reward = n.subsidy.checked_add(n.template_fees)?;
            Some((Timestamp::from_unix(b.found_at), reward))
        })
        .collect()
}

/// Each block with its window placed by the pool's hashrate.
///
/// # Errors
/// A hashrate of zero.
pub fn place(
    blocks: &[(Timestamp, Amount)],
    window: PplnsWindow,
    pool_hashrate: ledger_math::Hashrate,
) -> Result<Vec<PoolBlock>, ReportError> {
    blocks
        .iter()
        .map(|&(at, reward)| {
            PoolBlock::from_pool_hashrate(at, reward, window, pool_hashrate)
                .map_err(|e| ReportError::Input(e.to_string()))
        })
        .collect()
}

/// Work per customer, every customer of the map listed.
///
/// # Errors
/// Recorded customer names that are no longer valid names.
pub fn work_by_customer(
    work: &[WorkBucket],
    customers: &CustomerMap,
    remap: bool,
) -> Result<BTreeMap<Customer, Work>, ReportError> {
    let mut sums: BTreeMap<Customer, Work> = customers
        .customers()
        .into_iter()
        .map(|c| (c.clone(), Work::ZERO))
        .collect();
    for r in work {
        let name = customer_of(r, customers, remap);
        let c = Customer::new(&name).map_err(|e| ReportError::Input(e.to_string()))?;
        let w = Work::new(r.work).map_err(|e| ReportError::Input(format!("work {}", e.0)))?;
        *sums.entry(c).or_insert(Work::ZERO) += w;
    }
    Ok(sums)
}

/// The farm's total work in the rows.
pub fn total_work(work: &[WorkBucket]) -> Work {
    Work::new(work.iter().map(|w| w.work).sum()).unwrap_or(Work::ZERO)
}

#[cfg(test)]
mod tests {
    use ledger_math::{pps, Bps, Hashrate};

    use super::*;

    fn chain(start: i64, difficulty: f64, fees: i64) -> ChainBucket {
        ChainBucket {
            gateway: "g".into(),
            bucket_start: start,
            bucket_secs: 60,
            height: 1,
            network_difficulty: difficulty,
            subsidy_sat: 1_000,
            fees_sat: fees,
        }
    }

    fn work(gateway: &str, start: i64, w: f64) -> WorkBucket {
        WorkBucket {
            gateway: gateway.into(),
            bucket_start: start,
            worker: "w".into(),
            customer: None,
            shares: 1,
            work: w,
            rejects: 0,
        }
    }

    #[test]
    fn gateways_sum_per_bucket_and_each_bucket_is_priced_at_its_time() {
        let chain = vec![chain(0, 100.0, 0), chain(120, 200.0, 0)];
        let s = series(
            &[work("a", 0, 10.0), work("b", 0, 10.0), work("a", 180, 40.0)],
            &chain,
        )
        .unwrap();
        assert_eq!(s.buckets().len(), 2);
        assert_eq!(s.buckets()[0].work.get(), 20.0);
        assert_eq!(
            s.buckets()[1].network.difficulty.get(),
            200.0,
            "the latest row before"
        );
        // By hand: 20/100 × 1000 + 40/200 × 1000 = 400 sat, no fee.
        assert_eq!(pps(&s, Bps::ZERO).total_sat, 400);
        let err = series(&[work("a", 0, 1.0)], &[]).unwrap_err().to_string();
        assert!(err.contains("chain figures"), "{err}");
    }

    #[test]
    fn a_window_is_work_units_or_a_multiple_of_the_difficulty() {
        let chain = vec![chain(0, 100.0, 0), chain(60, 300.0, 0)];
        assert_eq!(window("500", &chain).unwrap().work().get(), 500.0);
        assert_eq!(window("2xD", &chain).unwrap().work().get(), 600.0);
        for bad in ["0", "-1", "twice", "xD"] {
            assert!(window(bad, &chain).is_err(), "{bad}");
        }
    }

    #[test]
    fn pplns_blocks_default_to_the_farms_own_at_subsidy_and_fees() {
        let chain = vec![chain(0, 100.0, 250)];
        let found = Block {
            gateway: "g".into(),
            hash: "h".into(),
            height: 1,
            worker: "w".into(),
            found_at: 30,
            fates: Vec::new(),
        };
        let blocks = pplns_blocks(None, &[found], &chain);
        assert_eq!(
            blocks,
            vec![(Timestamp::from_unix(30), Amount::from_sat(1_250))]
        );
        let w = window("100", &chain).unwrap();
        // 100 work units at 1 unit/s: a window of 100 s.
        let rate = Hashrate::new(ledger_math::HASHES_PER_WORK).unwrap();
        let placed = place(&blocks, w, rate).unwrap();
        assert_eq!(placed[0].window_start, Timestamp::from_unix(-70));
    }
}
