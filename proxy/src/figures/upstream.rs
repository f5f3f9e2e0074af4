//! Where the farm's work goes, since when, and why it moved: written by the upstream
//! supervisor when it switches, read by the API and `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use super::asic::AtomicF64;

/// Workers whose pool verdicts a route keeps one by one (names come from the miners).
const MAX_CREDITED: usize = 100_000;

/// Shares accepted and refused, by pool and worker.
type Credits = HashMap<(Arc<str>, Arc<str>), (u64, u64)>;

/// How the farm mines now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamMode {
    /// On the farm's node, blocks paying the farm.
    Solo,
    /// For a pool, on the farm's own templates declared to its JDS.
    Declared,
    /// For a pool, on the pool's own jobs (no JDS, or no node of the farm answers).
    PoolJobs,
}

impl UpstreamMode {
    /// Every mode, as `/metrics` lists them.
    pub const ALL: [UpstreamMode; 3] = [
        UpstreamMode::Solo,
        UpstreamMode::Declared,
        UpstreamMode::PoolJobs,
    ];

    /// The name in the API and in labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamMode::Solo => "solo",
            UpstreamMode::Declared => "declared",
            UpstreamMode::PoolJobs => "pool_jobs",
        }
    }
}

/// The upstream state at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamState {
    /// How the farm mines.
    pub mode: UpstreamMode,
    /// The pool's name, when not solo.
    pub pool: Option<String>,
    /// Unix seconds it has mined this way.
    pub since: u64,
}

/// The upstream state and the failovers so far.
#[derive(Debug)]
pub struct UpstreamFigures {
    state: Mutex<UpstreamState>,
    /// Keyed by a fixed set of reasons (see `LinkError::reason` and the supervisor).
    failovers: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for UpstreamFigures {
    fn default() -> Self {
        UpstreamFigures {
            state: Mutex::new(UpstreamState {
                mode: UpstreamMode::Solo,
                pool: None,
                since: super::unix_now(),
            }),
            failovers: Mutex::default(),
        }
    }
}

impl UpstreamFigures {
    /// Mining goes `mode` (to `pool`) at `now`; whether that is a change.
    pub fn set(&self, mode: UpstreamMode, pool: Option<&str>, now: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.mode == mode && s.pool.as_deref() == pool {
            return false;
        }
        *s = UpstreamState {
            mode,
            pool: pool.map(str::to_owned),
            since: now,
        };
        true
    }

    /// Mining left an upstream for `reason`.
    pub fn failed_over(&self, reason: &'static str) {
        let mut f = self
            .failovers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *f.entry(reason).or_insert(0) += 1;
    }

    /// The state now.
    pub fn state(&self) -> UpstreamState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Failovers so far, by reason.
    pub fn failovers(&self) -> BTreeMap<&'static str, u64> {
        self.failovers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One route's figures: where it mines, and what its pools made of the work sent to them.
/// Written by the route's supervisor and pool channels, off the share path.
#[derive(Debug)]
pub struct RouteFigures {
    /// The route's name.
    pub name: String,
    /// Its place among the routes; the first is the farm's `upstream` too.
    pub index: usize,
    /// Where it mines, and its failovers.
    pub upstream: UpstreamFigures,
    submitted: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// At the pool's target of each share sent.
    work_validated: AtomicF64,
    /// At the pool's target of each share the pool acknowledged.
    work_accepted: AtomicF64,
    /// The pools' own `new_shares_sum` (whole numbers: sub-1 targets count 0 there).
    work_acknowledged: AtomicU64,
    /// Shares the pools accepted and refused, by pool and worker.
    credits: Mutex<Credits>,
}

/// A route's figures at one moment, as the API shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSnapshot {
    /// The route's name.
    pub name: String,
    /// Where it mines.
    #[serde(flatten)]
    pub state: UpstreamState,
    /// Times it left an upstream, by reason.
    pub failovers: BTreeMap<&'static str, u64>,
    /// Shares sent to its pools, and their verdicts.
    pub pool_shares: PoolShares,
    /// The work of those shares.
    pub work: PoolWork,
}

/// Shares sent to a route's pools and their verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolShares {
    /// Sent.
    pub submitted: u64,
    /// Accepted (`SubmitShares.Success`).
    pub accepted: u64,
    /// Refused.
    pub rejected: u64,
}

/// The work of a route's pool shares, in share difficulty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PoolWork {
    /// Sent, at the pool's target for each.
    pub validated: f64,
    /// Acknowledged by the pool, at the pool's target for each share it acknowledged.
    pub accepted: f64,
    /// The pool's own sums (`new_shares_sum`).
    pub acknowledged: u64,
}

impl RouteFigures {
    /// Figures for route `index`, `name`, mining solo until told otherwise.
    pub fn new(index: usize, name: &str) -> Arc<Self> {
        Arc::new(RouteFigures {
            name: name.to_owned(),
            index,
            upstream: UpstreamFigures::default(),
            submitted: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            work_validated: AtomicF64::default(),
            work_accepted: AtomicF64::default(),
            work_acknowledged: AtomicU64::new(0),
            credits: Mutex::default(),
        })
    }

    /// A share went to a pool at its target's `difficulty`.
    pub fn sent(&self, difficulty: f64) {
        self.submitted.fetch_add(1, Relaxed);
        self.work_validated.add(difficulty);
    }

    /// `SubmitShares.Success` with the pool's `sum`.
    pub fn acknowledged(&self, sum: u64) {
        self.work_acknowledged.fetch_add(sum, Relaxed);
    }

    /// The pool `pool` accepted a share of `worker` sent at its target's `difficulty`.
    pub fn accepted(&self, pool: &Arc<str>, worker: &Arc<str>, difficulty: f64) {
        self.accepted.fetch_add(1, Relaxed);
        self.work_accepted.add(difficulty);
        self.credit(pool, worker, (1, 0));
    }

    /// The pool `pool` refused a share (of `worker`, when known).
    pub fn refused(&self, pool: &Arc<str>, worker: Option<&Arc<str>>) {
        self.rejected.fetch_add(1, Relaxed);
        if let Some(w) = worker {
            self.credit(pool, w, (0, 1));
        }
    }

    fn credit(&self, pool: &Arc<str>, worker: &Arc<str>, (a, r): (u64, u64)) {
        let mut map = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key = (pool.clone(), worker.clone());
        if map.len() >= MAX_CREDITED && !map.contains_key(&key) {
            key.1 = Arc::from(super::OTHER_WORKERS);
        }
        let e = map.entry(key).or_default();
        e.0 += a;
        e.1 += r;
    }

    /// Per pool and worker, the shares the pool accepted and refused, sorted.
    pub fn credits(&self) -> Vec<(String, String, u64, u64)> {
        let map = self.credits.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = map
            .iter()
            .map(|((p, w), (a, r))| (p.to_string(), w.to_string(), *a, *r))
            .collect();
        v.sort();
        v
    }

    /// The figures now.
    pub fn snapshot(&self) -> RouteSnapshot {
        RouteSnapshot {
            name: self.name.clone(),
            state: self.upstream.state(),
            failovers: self.upstream.failovers(),
            pool_shares: PoolShares {
                submitted: self.submitted.load(Relaxed),
                accepted: self.accepted.load(Relaxed),
                rejected: self.rejected.load(Relaxed),
            },
            work: PoolWork {
                validated: self.work_validated.get(),
                accepted: self.work_accepted.get(),
                acknowledged: self.work_acknowledged.load(Relaxed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_is_a_change_once_and_failovers_add_up() {
        let u = UpstreamFigures::default();
        assert_eq!(u.state().mode, UpstreamMode::Solo);
        assert!(u.set(UpstreamMode::Declared, Some("p"), 100));
        assert!(!u.set(UpstreamMode::Declared, Some("p"), 200), "no change");
        assert_eq!(u.state().since, 100);
        assert!(u.set(UpstreamMode::PoolJobs, Some("p"), 300));
        u.failed_over("timeout");
        u.failed_over("timeout");
        u.failed_over("node_down");
        assert_eq!(u.failovers()["timeout"], 2);
        assert_eq!(u.failovers().len(), 2);
    }

    #[test]
    fn a_route_counts_its_pools_verdicts_and_work_by_worker() {
        let r = RouteFigures::new(1, "hedge");
        let (pool, w): (Arc<str>, Arc<str>) = (Arc::from("p"), Arc::from("alice.1"));
        r.sent(0.5);
        r.sent(0.5);
        r.accepted(&pool, &w, 0.5);
        r.acknowledged(0);
        r.refused(&pool, Some(&w));
        let s = r.snapshot();
        assert_eq!(
            (s.name.as_str(), s.state.mode),
            ("hedge", UpstreamMode::Solo)
        );
        assert_eq!(
            s.pool_shares,
            PoolShares {
                submitted: 2,
                accepted: 1,
                rejected: 1
            }
        );
        assert_eq!((s.work.validated, s.work.accepted), (1.0, 0.5));
        assert_eq!(r.credits(), vec![("p".into(), "alice.1".into(), 1, 1)]);
    }
}
