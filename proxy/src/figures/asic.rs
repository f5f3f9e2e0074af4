//! One ASIC's counters: written by its session on the share path (plain atomics, one writer),
//! read by whoever shows them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use super::rates::Rates;
use crate::share::Reject;

/// Every reason a share is refused, in the order counters are kept.
pub const REASONS: [Reject; 10] = Reject::ALL;

/// An `f64` kept in an atomic, for sums with a single writer.
#[derive(Debug, Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
    /// Replaces the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed);
    }
    /// Adds `v`; writers racing each other retry.
    pub fn add(&self, v: f64) {
        let mut old = self.0.load(Relaxed);
        while let Err(now) =
            self.0
                .compare_exchange_weak(old, (f64::from_bits(old) + v).to_bits(), Relaxed, Relaxed)
        {
            old = now;
        }
    }
}

/// Who an ASIC is, fixed when it starts mining.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    /// Unique for the life of the process.
    pub id: u64,
    /// The worker name it authorized with.
    pub worker: Arc<str>,
    /// Its address.
    pub peer: SocketAddr,
    /// What its `mining.subscribe` said it is.
    pub agent: Option<Arc<str>>,
    /// The version bits it may roll, if it asked.
    pub version_mask: Option<u32>,
    /// Unix seconds.
    pub connected_at: u64,
}

/// One connected ASIC's counters.
#[derive(Debug)]
pub struct AsicFigures {
    /// Who it is.
    pub identity: Identity,
    accepted: AtomicU64,
    work: AtomicF64,
    rejected: [AtomicU64; REASONS.len()],
    last_share: AtomicU64,
    difficulty: AtomicF64,
    /// Hashrate estimates, kept by the sampler.
    pub(super) rates: Mutex<Rates>,
}

/// Totals of shares: for an ASIC, a worker or the farm.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Shares accepted.
    pub accepted: u64,
    /// The sum of their difficulties.
    pub work: f64,
    /// Refused, by reason, in [`REASONS`] order.
    pub rejected: [u64; REASONS.len()],
    /// Unix seconds of the last accepted share (0: none).
    pub last_share: u64,
}

impl Totals {
    /// Adds `other` in.
    pub fn add(&mut self, other: &Totals) {
        self.accepted += other.accepted;
        self.work += other.work;
        for (a, b) in self.rejected.iter_mut().zip(other.rejected) {
            *a += b;
        }
        self.last_share = self.last_share.max(other.last_share);
    }

    /// Refused shares, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

impl AsicFigures {
    /// Counters for a new ASIC at `difficulty`.
    pub fn new(identity: Identity, difficulty: f64) -> Self {
        let figures = AsicFigures {
            identity,
            accepted: AtomicU64::new(0),
            work: AtomicF64::default(),
            rejected: Default::default(),
            last_share: AtomicU64::new(0),
            difficulty: AtomicF64::default(),
            rates: Mutex::new(Rates::default()),
        };
        figures.difficulty.set(difficulty);
        figures
    }

    /// A share accepted at `difficulty`, at `unix` seconds.
    pub fn share_accepted(&self, difficulty: f64, unix: u64) {
        self.accepted.fetch_add(1, Relaxed);
        self.work.add(difficulty);
        self.last_share.store(unix, Relaxed);
    }

    /// A share refused.
    pub fn share_rejected(&self, reason: Reject) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }

    /// The difficulty now asked of it.
    pub fn set_difficulty(&self, d: f64) {
        self.difficulty.set(d);
    }

    /// The difficulty now asked of it.
    pub fn difficulty(&self) -> f64 {
        self.difficulty.get()
    }

    /// Its totals now.
    pub fn totals(&self) -> Totals {
        Totals {
            accepted: self.accepted.load(Relaxed),
            work: self.work.get(),
            rejected: std::array::from_fn(|i| self.rejected[i].load(Relaxed)),
            last_share: self.last_share.load(Relaxed),
        }
    }

    /// Its hashrate estimates now.
    pub fn rates(&self) -> Rates {
        *self.rates.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
