//! Counters every part of the proxy bumps, read by the periodic status line and by tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::share::Reject;

const REASONS: [Reject; 10] = [
    Reject::UnknownJob,
    Reject::StaleJob,
    Reject::Duplicate,
    Reject::AboveTarget,
    Reject::NtimeOutOfRange,
    Reject::BadVersionBits,
    Reject::BadExtranonce2,
    Reject::Malformed,
    Reject::NotSubscribed,
    Reject::Unauthorized,
];

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
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub connections: u64,
    pub connections_total: u64,
    pub connections_refused: u64,
    pub accepted: u64,
    pub accepted_work: f64,
    pub rejected: Vec<(&'static str, u64)>,
    pub blocks: u64,
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
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
        self.connections_total.fetch_add(1, Relaxed);
    }
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Relaxed);
    }
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }
    pub fn miner_started(&self) {
        self.miners.fetch_add(1, Relaxed);
    }
    pub fn share_accepted(&self, difficulty: f64) {
        self.accepted.fetch_add(1, Relaxed);
        self.accepted_work_micro
            .fetch_add((difficulty * 1e6) as u64, Relaxed);
    }
    pub fn share_rejected(&self, reason: Reject) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }
    pub fn block_found(&self) {
        self.blocks.fetch_add(1, Relaxed);
    }

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
        }
    }
}
