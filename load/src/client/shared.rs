//! What every connection and the driver share: settings, counters and the tips seen.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bitcoin::BlockHash;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Pace;
use crate::histogram::Histogram;

/// What every connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connect, handshake, follow jobs.
    Idle,
    /// As idle, and submit valid shares when the pacer says so.
    Shares,
}

/// Settings shared by every connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: SocketAddr,
    pub mode: Mode,
    /// `mining.suggest_difficulty`, sent before `mining.authorize`.
    pub suggest_difficulty: Option<f64>,
    /// Ask for BIP310 version rolling (and submit with the 6th parameter when granted).
    pub version_rolling: bool,
    pub connect_timeout: Duration,
    /// Submits a connection may have unanswered; a due share beyond it is counted, not sent.
    pub window: usize,
    /// Submit shares that happen to meet the network target too (they are blocks, and move
    /// the tip); by default they are skipped so a run measures shares only.
    pub submit_blocks: bool,
}

/// A connection saw a job on a new previous block hash.
#[derive(Debug, Clone, Copy)]
pub struct TipSeen {
    pub conn: u32,
    pub prev_hash: BlockHash,
    pub at: Instant,
    pub clean: bool,
}

/// Counters of every connection together.
#[derive(Debug, Default)]
pub struct Stats {
    pub attempted: AtomicU64,
    pub connected_total: AtomicU64,
    pub live: AtomicU64,
    pub failed: AtomicU64,
    pub failures: Mutex<BTreeMap<String, u64>>,
    /// Connections the server ended after they were mining.
    pub dropped: AtomicU64,
    pub drops: Mutex<BTreeMap<String, u64>>,
    pub notifies: AtomicU64,
    pub clean_notifies: AtomicU64,
    pub set_difficulty: AtomicU64,
    /// The last `mining.set_difficulty` value, as `f64` bits (0: none yet).
    pub last_difficulty: AtomicU64,
    pub other_messages: AtomicU64,
    /// Lines that are not JSON-RPC, or replies the tool cannot place.
    pub protocol_errors: AtomicU64,
    pub submitted: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub rejects: Mutex<BTreeMap<String, u64>>,
    /// Due shares not sent because the connection's window was full.
    pub window_full: AtomicU64,
    pub blocks_skipped: AtomicU64,
    pub grind_failed: AtomicU64,
    pub hashes: AtomicU64,
    /// TCP connect, then connect → first job.
    pub tcp_connect: Histogram,
    pub handshake: Histogram,
    pub submit_latency: Histogram,
}

impl Stats {
    pub(super) fn bump(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default() += 1;
    }
}

/// Shared by every connection and the driver.
#[derive(Debug)]
pub struct Shared {
    pub config: ClientConfig,
    pub stats: Stats,
    pub tips: Mutex<Vec<TipSeen>>,
    pub pace: watch::Receiver<Pace>,
    pub shutdown: CancellationToken,
}
