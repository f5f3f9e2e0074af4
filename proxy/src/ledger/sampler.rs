//! What one sample holds, computed without I/O or a clock: each worker's work since the
//! previous sample (from the board's running totals), the pool's acknowledgements tallied as
//! they arrive, the chain as mined over the bucket, and the blocks among the board's events.

use std::collections::HashMap;
use std::sync::Arc;

use ledger::{AckRow, BlockRow, ChainRow, FateRow, RefusalRow, WorkRow};
use ledger_math::customers::CustomerMap;

use crate::figures::asic::Totals;
use crate::figures::events::{Event, EventKind};
use crate::figures::WorkerFigures;

/// A worker's running totals as last written.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Written {
    shares: u64,
    work: f64,
    rejects: u64,
}

impl Written {
    fn of(t: &Totals) -> Written {
        Written {
            shares: t.accepted,
            work: t.work,
            rejects: t.rejected_total(),
        }
    }

    /// Never below what was written: a worker's totals can dip for a moment while an ASIC
    /// moves from the connected to the gone (the board reads the two apart), and a dip
    /// followed by a rise must not count the rise twice.
    fn max(self, o: Written) -> Written {
        Written {
            shares: self.shares.max(o.shares),
            work: self.work.max(o.work),
            rejects: self.rejects.max(o.rejects),
        }
    }
}

/// Each worker's work since the previous sample, from the board's running totals. The sum of
/// the deltas is the running total: nothing is counted twice or dropped.
#[derive(Debug, Default)]
pub struct Deltas {
    written: HashMap<Arc<str>, Written>,
}

/// A sample's rows and the totals they bring the ledger to; [`Deltas::commit`] once the rows
/// are safely handed on, so rows that could not be are part of the next sample.
#[derive(Debug)]
pub struct Sample {
    /// One row per worker with news.
    pub rows: Vec<WorkRow>,
    next: Vec<(Arc<str>, Written)>,
}

impl Deltas {
    /// The rows since the last commit, each worker's customer named by `customers`.
    pub fn sample(&self, workers: &[WorkerFigures], customers: &CustomerMap) -> Sample {
        let mut rows = Vec::new();
        let mut next = Vec::new();
        for w in workers {
            let before = self.written.get(&w.worker).copied().unwrap_or_default();
            let now = Written::of(&w.totals).max(before);
            if now == before {
                continue;
            }
            rows.push(WorkRow {
                worker: w.worker.to_string(),
                customer: Some(customers.customer_of(&w.worker).to_string()),
                shares: i64::try_from(now.shares - before.shares).unwrap_or(i64::MAX),
                work: now.work - before.work,
                rejects: i64::try_from(now.rejects - before.rejects).unwrap_or(i64::MAX),
            });
            next.push((w.worker.clone(), now));
        }
        Sample { rows, next }
    }

    /// The sample's rows were handed on.
    pub fn commit(&mut self, sample: Sample) {
        self.written.extend(sample.next);
    }
}

/// What the pool said of the farm's shares, as the pool link hands it over.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolAck {
    /// `SubmitShares.Success`.
    Accepted {
        /// The pool's place in `[[upstream]]`.
        pool: usize,
        /// `new_submits_accepted_count`.
        count: u32,
        /// `new_shares_sum`.
        shares_sum: u64,
    },
    /// `SubmitShares.Error`.
    Refused {
        /// The pool's place in `[[upstream]]`.
        pool: usize,
        /// Its error code.
        reason: String,
    },
}

/// The pool's acknowledgements since the last sample, summed per pool and reason.
#[derive(Debug, Default)]
pub struct AckTally {
    acks: HashMap<usize, (i64, i64, i64)>,
    refusals: HashMap<(usize, String), i64>,
}

impl AckTally {
    /// Counts one acknowledgement.
    pub fn add(&mut self, ack: PoolAck) {
        match ack {
            PoolAck::Accepted {
                pool,
                count,
                shares_sum,
            } => {
                let a = self.acks.entry(pool).or_default();
                a.0 += i64::from(count);
                a.1 =
                    a.1.saturating_add(i64::try_from(shares_sum).unwrap_or(i64::MAX));
            }
            PoolAck::Refused { pool, reason } => {
                self.acks.entry(pool).or_default().2 += 1;
                *self.refusals.entry((pool, reason)).or_default() += 1;
            }
        }
    }

    /// The rows so far, pools named by `name`; the tally is kept until [`AckTally::clear`].
    pub fn rows(&self, name: impl Fn(usize) -> String) -> (Vec<AckRow>, Vec<RefusalRow>) {
        let mut acks: Vec<AckRow> = self
            .acks
            .iter()
            .map(|(p, (accepted, shares_sum, refused))| AckRow {
                pool: name(*p),
                accepted: *accepted,
                shares_sum: *shares_sum,
                refused: *refused,
            })
            .collect();
        acks.sort_by(|a, b| a.pool.cmp(&b.pool));
        let mut refusals: Vec<RefusalRow> = self
            .refusals
            .iter()
            .map(|((p, reason), count)| RefusalRow {
                pool: name(*p),
                reason: reason.clone(),
                count: *count,
            })
            .collect();
        refusals.sort_by(|a, b| (&a.pool, &a.reason).cmp(&(&b.pool, &b.reason)));
        (acks, refusals)
    }

    /// The rows were handed on.
    pub fn clear(&mut self) {
        self.acks.clear();
        self.refusals.clear();
    }
}

/// The chain as mined: the job out now, and the fees of the templates mined over the bucket,
/// weighted by how long each was out. Times are seconds from any fixed origin.
#[derive(Debug, Default)]
pub struct ChainTally {
    current: Option<(f64, ChainRow)>,
    fee_secs: f64,
    secs: f64,
}

impl ChainTally {
    /// A new job went out at `at`.
    pub fn on_job(&mut self, at: f64, job: ChainRow) {
        self.close(at);
        self.current = Some((at, job));
    }

    fn close(&mut self, at: f64) {
        if let Some((since, job)) = &mut self.current {
            let secs = (at - *since).max(0.0);
            self.fee_secs += job.fees_sat as f64 * secs;
            self.secs += secs;
            *since = at;
        }
    }

    /// The bucket ending at `at`: the job out now, with the time-weighted fees of the bucket.
    /// Starts the next bucket.
    pub fn take(&mut self, at: f64) -> Option<ChainRow> {
        self.close(at);
        let (_, job) = self.current.as_ref()?;
        let mut row = job.clone();
        if self.secs > 0.0 {
            row.fees_sat = (self.fee_secs / self.secs).round() as i64;
        }
        self.fee_secs = 0.0;
        self.secs = 0.0;
        Some(row)
    }
}

/// Blocks found and their verdicts among `events`.
pub fn blocks(events: &[Event]) -> (Vec<BlockRow>, Vec<FateRow>) {
    let mut found = Vec::new();
    let mut fates = Vec::new();
    for e in events {
        let at = i64::try_from(e.at).unwrap_or(i64::MAX);
        match &e.kind {
            EventKind::BlockFound {
                hash,
                height,
                worker,
            } => found.push(BlockRow {
                hash: hash.clone(),
                height: i64::from(*height),
                worker: worker.clone(),
                found_at: at,
            }),
            EventKind::BlockFate { hash, by, fate } => fates.push(FateRow {
                hash: hash.clone(),
                judge: by.clone(),
                fate: fate.clone(),
                at,
            }),
            _ => {}
        }
    }
    (found, fates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::rates::Rates;

    fn worker(name: &str, accepted: u64, work: f64, rejected: u64) -> WorkerFigures {
        let mut totals = Totals {
            accepted,
            work,
            ..Totals::default()
        };
        totals.rejected[0] = rejected;
        WorkerFigures {
            worker: Arc::from(name),
            connected: 1,
            totals,
            rates: Rates::default(),
        }
    }

    fn map() -> CustomerMap {
        let rule = ledger_math::customers::CustomerRule {
            pattern: "alice.*".into(),
            customer: "alice".into(),
        };
        CustomerMap::new(&[rule], "farm").unwrap()
    }

    fn sample(d: &mut Deltas, workers: &[WorkerFigures]) -> Vec<(String, i64, f64, i64)> {
        let s = d.sample(workers, &map());
        let rows = s
            .rows
            .iter()
            .map(|r| (r.worker.clone(), r.shares, r.work, r.rejects))
            .collect();
        d.commit(s);
        rows
    }

    #[test]
    fn deltas_add_up_to_the_running_totals() {
        let mut d = Deltas::default();
        let rows = sample(
            &mut d,
            &[worker("alice.1", 3, 1.5, 1), worker("bob", 1, 0.5, 0)],
        );
        assert_eq!(
            rows,
            vec![("alice.1".into(), 3, 1.5, 1), ("bob".into(), 1, 0.5, 0)]
        );
        // bob did nothing: no row.
        let rows = sample(
            &mut d,
            &[worker("alice.1", 5, 2.5, 1), worker("bob", 1, 0.5, 0)],
        );
        assert_eq!(rows, vec![("alice.1".into(), 2, 1.0, 0)]);
        assert!(sample(&mut d, &[worker("alice.1", 5, 2.5, 1)]).is_empty());
    }

    #[test]
    fn customers_are_named_when_written() {
        let d = Deltas::default();
        let s = d.sample(
            &[worker("alice.1", 1, 1.0, 0), worker("carol", 1, 1.0, 0)],
            &map(),
        );
        assert_eq!(s.rows[0].customer.as_deref(), Some("alice"));
        assert_eq!(s.rows[1].customer.as_deref(), Some("farm"));
    }

    #[test]
    fn a_dip_while_an_asic_leaves_is_not_counted_twice() {
        let mut d = Deltas::default();
        sample(&mut d, &[worker("w", 10, 10.0, 0)]);
        // Read between the ASIC leaving the connected and joining the gone.
        assert!(sample(&mut d, &[worker("w", 4, 4.0, 0)]).is_empty());
        let rows = sample(&mut d, &[worker("w", 12, 12.0, 0)]);
        assert_eq!(rows, vec![("w".into(), 2, 2.0, 0)]);
    }

    #[test]
    fn an_uncommitted_sample_is_part_of_the_next() {
        let mut d = Deltas::default();
        let lost = d.sample(&[worker("w", 3, 3.0, 0)], &map());
        assert_eq!(lost.rows.len(), 1);
        let rows = sample(&mut d, &[worker("w", 5, 5.0, 0)]);
        assert_eq!(rows, vec![("w".into(), 5, 5.0, 0)]);
    }

    #[test]
    fn acks_sum_per_pool_and_refusals_per_reason() {
        let mut t = AckTally::default();
        t.add(PoolAck::Accepted {
            pool: 0,
            count: 2,
            shares_sum: 20,
        });
        t.add(PoolAck::Accepted {
            pool: 0,
            count: 1,
            shares_sum: 10,
        });
        t.add(PoolAck::Refused {
            pool: 0,
            reason: "stale-share".into(),
        });
        t.add(PoolAck::Refused {
            pool: 1,
            reason: "invalid-job-id".into(),
        });
        let (acks, refusals) = t.rows(|p| format!("pool{p}"));
        assert_eq!(
            (acks[0].accepted, acks[0].shares_sum, acks[0].refused),
            (3, 30, 1)
        );
        assert_eq!((acks[1].accepted, acks[1].refused), (0, 1));
        assert_eq!(refusals.len(), 2);
        assert_eq!(
            (refusals[0].pool.as_str(), refusals[0].reason.as_str()),
            ("pool0", "stale-share")
        );
        t.clear();
        assert!(t.rows(|p| p.to_string()).0.is_empty());
    }

    #[test]
    fn fees_are_weighted_by_how_long_each_template_was_out() {
        let job = |fees| ChainRow {
            height: 100,
            network_difficulty: 2.0,
            subsidy_sat: 100,
            fees_sat: fees,
        };
        let mut c = ChainTally::default();
        assert_eq!(c.take(0.0), None, "no job yet");
        c.on_job(0.0, job(1_000));
        c.on_job(45.0, job(3_000));
        // 45 s at 1000, 15 s at 3000.
        assert_eq!(c.take(60.0).unwrap().fees_sat, 1_500);
        // The next bucket: the last template all along.
        assert_eq!(c.take(120.0).unwrap().fees_sat, 3_000);
    }

    #[test]
    fn blocks_and_fates_come_from_the_events() {
        let ev = |kind| Event {
            seq: 1,
            at: 50,
            kind,
        };
        let events = [
            ev(EventKind::BlockFound {
                hash: "aa".into(),
                height: 7,
                worker: "w".into(),
            }),
            ev(EventKind::Node { node: "n".into() }),
            ev(EventKind::BlockFate {
                hash: "aa".into(),
                by: "node".into(),
                fate: "accepted".into(),
            }),
        ];
        let (found, fates) = blocks(&events);
        assert_eq!(
            found,
            vec![BlockRow {
                hash: "aa".into(),
                height: 7,
                worker: "w".into(),
                found_at: 50
            }]
        );
        assert_eq!(fates[0].judge, "node");
    }
}
