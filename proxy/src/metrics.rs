//! Counters every part of the proxy bumps, read by the periodic status line and by tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::figures::asic::AtomicF64;
use crate::share::Reject;

const REASONS: [Reject; 10] = Reject::ALL;

/// Workers whose pool verdicts are counted one by one.
const MAX_POOL_WORKERS: usize = 100_000;

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    miners: AtomicU64,
    accepted: AtomicU64,
    /// Sum of accepted share difficulties, in millionths (for a hashrate estimate).
    accepted_work_micro: AtomicU64,
    rejected: [AtomicU64; REASONS.len()],
    blocks: AtomicU64,
    /// Shares sent to the pool, and what the pool said of them.
    pool_submitted: AtomicU64,
    pool_accepted: AtomicU64,
    pool_rejected: AtomicU64,
    /// Shares meant for the pool that never reached it (job never set, link gone, queue full).
    pool_dropped: AtomicU64,
    /// Per worker: shares the pool accepted and rejected.
    pool_workers: Mutex<HashMap<Arc<str>, (u64, u64)>>,
    /// The work of the shares sent to the pool, at the pool's target for each (what the pool
    /// should acknowledge).
    pool_work_validated: AtomicF64,
    /// The work the pool acknowledged (`SubmitShares.Success.new_shares_sum`).
    pool_work_acknowledged: AtomicU64,
    /// Declarations to the pools' JDS and their answers.
    pub declarations: Arc<job_declarator::Tally>,
    /// The pool's verdicts, for the share ledger.
    pub acks: crate::ledger::AckSink,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Miners connected now.
    pub connections: u64,
    /// Connections since start.
    pub connections_total: u64,
    /// Connections refused at the limit.
    pub connections_refused: u64,
    /// Shares accepted.
    pub accepted: u64,
    /// The sum of their difficulties.
    pub accepted_work: f64,
    /// Shares refused, by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// Blocks found.
    pub blocks: u64,
    /// Shares sent to the pool.
    pub pool_submitted: u64,
    /// Shares the pool accepted.
    pub pool_accepted: u64,
    /// Shares the pool refused.
    pub pool_rejected: u64,
    /// Shares meant for the pool that never reached it.
    pub pool_dropped: u64,
    /// The work of the shares sent to the pool, at the pool's target for each.
    pub pool_work_validated: f64,
    /// The work the pool acknowledged.
    pub pool_work_acknowledged: u64,
}

impl Snapshot {
    /// Rejected shares for one reason.
    pub fn rejected_for(&self, reason: Reject) -> u64 {
        self.rejected
            .iter()
            .find(|(r, _)| *r == reason.as_str())
            .map_or(0, |(_, n)| *n)
    }
}

impl Stats {
    /// A miner connected.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
        self.connections_total.fetch_add(1, Relaxed);
    }
    /// A miner's connection ended.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }
    /// A connection was refused at the limit.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }
    /// A miner subscribed and authorized.
    pub fn miner_started(&self) {
        self.miners.fetch_add(1, Relaxed);
    }
    /// A share passed the proxy's check at `difficulty`.
    pub fn share_accepted(&self, difficulty: f64) {
        self.accepted.fetch_add(1, Relaxed);
        self.accepted_work_micro
            .fetch_add((difficulty * 1e6) as u64, Relaxed);
    }
    /// A share was refused for `reason`.
    pub fn share_rejected(&self, reason: Reject) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }
    /// A share met the network target.
    pub fn block_found(&self) {
        self.blocks.fetch_add(1, Relaxed);
    }
    /// A share went to the pool.
    pub fn pool_submitted(&self) {
        self.pool_submitted.fetch_add(1, Relaxed);
    }
    /// The pool accepted `n` shares.
    pub fn pool_accepted(&self, n: u64) {
        self.pool_accepted.fetch_add(n, Relaxed);
    }
    /// The pool refused a share.
    pub fn pool_rejected(&self) {
        self.pool_rejected.fetch_add(1, Relaxed);
    }
    /// The pool's verdict on shares of `worker`.
    pub fn pool_verdict(&self, worker: &Arc<str>, accepted: u64, rejected: u64) {
        let mut map = self
            .pool_workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Worker names come from the miners: past a bound, new names share one entry.
        let key = if map.len() >= MAX_POOL_WORKERS && !map.contains_key(worker) {
            Arc::from("(other workers)")
        } else {
            worker.clone()
        };
        let e = map.entry(key).or_default();
        e.0 += accepted;
        e.1 += rejected;
    }
    /// Per worker, the shares the pool accepted and rejected.
    pub fn pool_workers(&self) -> Vec<(String, u64, u64)> {
        let map = self
            .pool_workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = map
            .iter()
            .map(|(w, (a, r))| (w.to_string(), *a, *r))
            .collect();
        v.sort();
        v
    }
    /// A share of `difficulty` (the pool's target for it) went to the pool.
    pub fn pool_work_sent(&self, difficulty: f64) {
        self.pool_work_validated.add(difficulty);
    }
    /// The pool acknowledged `work` (its `new_shares_sum`).
    pub fn pool_work_acknowledged(&self, work: u64) {
        self.pool_work_acknowledged.fetch_add(work, Relaxed);
    }
    /// `n` shares meant for the pool never reached it.
    pub fn pool_dropped(&self, n: u64) {
        self.pool_dropped.fetch_add(n, Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connections: self.connections.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            accepted_work: self.accepted_work_micro.load(Relaxed) as f64 / 1e6,
            rejected: REASONS
                .iter()
                .zip(&self.rejected)
                .map(|(r, n)| (r.as_str(), n.load(Relaxed)))
                .collect(),
            blocks: self.blocks.load(Relaxed),
            pool_submitted: self.pool_submitted.load(Relaxed),
            pool_accepted: self.pool_accepted.load(Relaxed),
            pool_rejected: self.pool_rejected.load(Relaxed),
            pool_dropped: self.pool_dropped.load(Relaxed),
            pool_work_validated: self.pool_work_validated.get(),
            pool_work_acknowledged: self.pool_work_acknowledged.load(Relaxed),
        }
    }
}
