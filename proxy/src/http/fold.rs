//! Bounding `/metrics` by workers: worker names come from the miners, so their number is
//! theirs to choose. The first [`Named::max`] workers seen keep series of their own; every
//! other worker is summed into one `(other workers)` row. Pure: no I/O, no clock.
//!
//! Who is named is sticky: a worker named once stays named and a folded one stays folded, so
//! every counter, the overflow's included, only ever goes up (a worker moving between the two
//! would make Prometheus see a counter reset).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::figures::asic::Totals;
use crate::figures::rates::Rates;
use crate::figures::OTHER_WORKERS;

/// One worker's figures as `/metrics` shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerRow {
    /// The name (the label).
    pub worker: Arc<str>,
    /// Shares since start.
    pub totals: Totals,
    /// The hashrate of its connected ASICs.
    pub rates: Rates,
    /// The sum of its connected ASICs' difficulties.
    pub difficulty_sum: f64,
    /// Its connected ASICs.
    pub asics: usize,
}

impl WorkerRow {
    /// The difficulty shown: the mean over its connected ASICs (none: `None`).
    pub fn difficulty(&self) -> Option<f64> {
        (self.asics > 0).then(|| self.difficulty_sum / self.asics as f64)
    }

    fn add(&mut self, other: &WorkerRow) {
        self.totals.add(&other.totals);
        self.rates.add(&other.rates);
        self.difficulty_sum += other.difficulty_sum;
        self.asics += other.asics;
    }
}

/// The workers of one scrape, bounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Folded {
    /// Named workers, by name.
    pub rows: Vec<WorkerRow>,
    /// Everyone else, summed, when there is anyone else.
    pub other: Option<WorkerRow>,
    /// How many workers `other` sums.
    pub folded: usize,
}

/// The workers with series of their own.
#[derive(Debug, Clone)]
pub struct Named {
    names: HashSet<Arc<str>>,
    max: usize,
}

impl Named {
    /// At most `max` named workers.
    pub fn new(max: usize) -> Self {
        Named {
            names: HashSet::new(),
            max,
        }
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Splits `rows` (in name order; new workers are named in that order while there is room)
    /// into named rows and the overflow.
    pub fn fold(&mut self, rows: Vec<WorkerRow>) -> Folded {
        let mut out = Folded::default();
        let mut other = WorkerRow {
            worker: Arc::from(OTHER_WORKERS),
            ..WorkerRow::default()
        };
        for row in rows {
            // The board's own overflow worker is never a name of its own.
            let nameable = &*row.worker != OTHER_WORKERS;
            if nameable && (self.names.contains(&row.worker) || self.names.len() < self.max) {
                self.names.insert(row.worker.clone());
                out.rows.push(row);
            } else {
                other.add(&row);
                out.folded += 1;
            }
        }
        if out.folded > 0 {
            out.other = Some(other);
        }
        out
    }
}

/// The per-worker rows from the board's worker figures and its connected ASICs' difficulties
/// (`(worker, difficulty)` per ASIC).
pub fn rows(
    workers: Vec<crate::figures::WorkerFigures>,
    difficulties: impl IntoIterator<Item = (Arc<str>, f64)>,
) -> Vec<WorkerRow> {
    let mut diff: HashMap<Arc<str>, (f64, usize)> = HashMap::new();
    for (w, d) in difficulties {
        let e = diff.entry(w).or_default();
        e.0 += d;
        e.1 += 1;
    }
    workers
        .into_iter()
        .map(|w| {
            let (difficulty_sum, asics) = diff.get(&w.worker).copied().unwrap_or_default();
            WorkerRow {
                worker: w.worker,
                totals: w.totals,
                rates: w.rates,
                difficulty_sum,
                asics,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, accepted: u64) -> WorkerRow {
        WorkerRow {
            worker: Arc::from(name),
            totals: Totals {
                accepted,
                work: accepted as f64,
                ..Totals::default()
            },
            difficulty_sum: 2.0,
            asics: 1,
            ..WorkerRow::default()
        }
    }

    #[test]
    fn past_the_bound_workers_fold_into_one_row_that_carries_their_totals() {
        let mut named = Named::new(2);
        let f = named.fold(vec![row("a", 1), row("b", 2), row("c", 3), row("d", 4)]);
        let names: Vec<&str> = f.rows.iter().map(|r| &*r.worker).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(f.folded, 2);
        let other = f.other.expect("an overflow row");
        assert_eq!(&*other.worker, OTHER_WORKERS);
        assert_eq!(other.totals.accepted, 7);
        assert_eq!(other.asics, 2);
        assert_eq!(other.difficulty(), Some(2.0), "the mean of its ASICs");
    }

    #[test]
    fn who_is_named_never_changes_so_counters_only_go_up() {
        let mut named = Named::new(2);
        let first = named.fold(vec![row("m", 1), row("n", 1)]);
        assert!(first.other.is_none());
        // "a" sorts first but came later: it folds, and "m", "n" keep their series.
        let second = named.fold(vec![row("a", 5), row("m", 2), row("n", 2)]);
        let names: Vec<&str> = second.rows.iter().map(|r| &*r.worker).collect();
        assert_eq!(names, ["m", "n"]);
        assert_eq!(second.other.unwrap().totals.accepted, 5);
    }

    #[test]
    fn the_boards_own_overflow_worker_always_folds() {
        let mut named = Named::new(10);
        let f = named.fold(vec![row(OTHER_WORKERS, 9), row("x", 1)]);
        assert_eq!(f.rows.len(), 1);
        assert_eq!(f.other.unwrap().totals.accepted, 9);
    }

    #[test]
    fn difficulties_are_summed_per_worker() {
        let workers = vec![crate::figures::WorkerFigures {
            worker: Arc::from("w"),
            connected: 2,
            totals: Totals::default(),
            rates: Rates::default(),
        }];
        let r = rows(workers, [(Arc::from("w"), 4.0), (Arc::from("w"), 8.0)]);
        assert_eq!(r[0].difficulty(), Some(6.0));
    }
}
