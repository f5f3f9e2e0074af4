//! CPU miners speaking real firmware dialects, as the tests and the demo run them.

use std::net::SocketAddr;

use sv1_miner::{Dialect, MinerConfig, MinerHandle};
use tokio_util::sync::CancellationToken;

/// How a test's CPU miners are set up.
#[derive(Clone, Copy, Debug)]
pub struct MinerSpec {
    /// Workers are named `<worker_prefix>.<dialect>`.
    pub worker_prefix: &'static str,
    /// The difficulty each miner suggests.
    pub difficulty: f64,
    /// Each miner's hash cap (H/s).
    pub hashrate: f64,
}

impl MinerSpec {
    /// A miner of `dialect` mining at `addr` until `shutdown`.
    pub fn spawn(
        &self,
        addr: SocketAddr,
        dialect: Dialect,
        shutdown: &CancellationToken,
    ) -> MinerHandle {
        let config = MinerConfig::new(addr, self.worker(dialect), dialect)
            .with_suggest_difficulty(self.difficulty)
            .with_max_hashrate(self.hashrate);
        sv1_miner::spawn(config, shutdown.clone())
    }

    /// One miner of each of `dialects`, in order.
    pub fn spawn_each(
        &self,
        addr: SocketAddr,
        dialects: &[Dialect],
        shutdown: &CancellationToken,
    ) -> Vec<MinerHandle> {
        dialects
            .iter()
            .map(|&d| self.spawn(addr, d, shutdown))
            .collect()
    }

    /// The worker name a miner of `dialect` authorizes with.
    pub fn worker(&self, dialect: Dialect) -> String {
        format!("{}.{dialect}", self.worker_prefix)
    }
}
