//! A farm in pool mode, for tests against the real reference pool: `pool_sv2` with its
//! embedded Job Declaration Server on a `bitcoin-node` (IPC) of its own, and the farm's own
//! `bitcoind`, the two nodes peered on loopback.
//!
//! The pool's node refuses low-fee transactions (`-minrelaytxfee`), so a transaction the farm's
//! node holds is one the pool would never pick: seeing it mined proves the block is the farm's.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bitcoin::{Amount, ScriptBuf, Txid};
use jd_proxy::config::raw::{RawConfig, RawFailover, RawUpstream};
use jd_proxy::{Mode, Proxy};
use serde_json::json;
use sv1_miner::{Dialect, MinerHandle};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::{blocks_above, connect_nodes, solo_config, MinerSpec};
use crate::node::{BitcoinNode, NodeKind};
use crate::sv2_peers::{sv2_bin_dir, PoolSv2, PoolSv2Config, TemplateSource};
use crate::wallet::TestWallet;

/// Per-miner hash cap.
pub const HASHRATE: f64 = 20_000.0;
/// About one share per miner every 8 s at [`HASHRATE`]; on regtest every share is a block.
pub const DIFFICULTY: f64 = 4e-5;
/// `bitcoin-node`'s IPC `createNewBlock` fails below height 17 on regtest; coins must mature.
pub const PREMINE: u64 = 110;
/// The farm's transaction pays this much (about 2 sat/vB): the pool's node refuses it.
pub const LOW_FEE: Amount = Amount::from_sat(250);
pub const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "farm",
    difficulty: DIFFICULTY,
    hashrate: HASHRATE,
};

pub struct Farm {
    pub pool_node: BitcoinNode,
    pub node: BitcoinNode,
    pub pool: Option<PoolSv2>,
    pub pool_script: ScriptBuf,
    pub solo: TestWallet,
    pub wallet: TestWallet,
    pub dir: TempDir,
}

pub async fn farm() -> anyhow::Result<Farm> {
    farm_with(true).await
}

/// A farm whose pool runs its JDS when `jds`.
pub async fn farm_with(jds: bool) -> anyhow::Result<Farm> {
    sv2_bin_dir()?;
    let pool_node =
        BitcoinNode::start_with_args(NodeKind::BitcoinNodeIpc, &["-minrelaytxfee=0.00005"]).await?;
    let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
    connect_nodes(&node, &pool_node).await?;
    let mut wallet = TestWallet::new();
    wallet.fund(&pool_node, PREMINE).await?;
    node.wait_for_height(PREMINE, Duration::from_secs(30))
        .await?;
    let pool_payout = TestWallet::new();
    let pool = PoolSv2::start(
        PoolSv2Config::new(TemplateSource::ipc(&pool_node), pool_payout.address()).with_jds(jds),
    )
    .await?;
    let pool_script = pool.coinbase_script().clone();
    Ok(Farm {
        pool_node,
        node,
        pool: Some(pool),
        pool_script,
        solo: TestWallet::new(),
        wallet,
        dir: TempDir::new()?,
    })
}

impl Farm {
    pub fn pool(&self) -> &PoolSv2 {
        self.pool.as_ref().expect("the pool runs")
    }

    pub fn proxy_config(&self, pool_key: String) -> RawConfig {
        let mut raw = solo_config(&self.node, self.solo.address(), self.dir.path());
        raw.vardiff.initial_difficulty = Some(DIFFICULTY);
        raw.vardiff.min_difficulty = Some(DIFFICULTY);
        raw.vardiff.max_difficulty = Some(DIFFICULTY);
        raw.upstream.push(RawUpstream {
            name: Some("reference-pool".into()),
            pool_address: Some(self.pool().listen_addr().to_string()),
            pool_authority_public_key: Some(pool_key),
            jds_address: self.pool().jds_addr().map(|a| a.to_string()),
            user_identity: Some("farm".into()),
            ..Default::default()
        });
        raw.failover = RawFailover {
            connect_timeout_secs: Some(3),
            response_timeout_secs: Some(5),
            retry_preferred_secs: Some(2),
            hashrate_report_secs: Some(5),
        };
        raw
    }

    pub fn miners(
        &self,
        proxy: &Proxy,
        dialects: &[Dialect],
        stop: &CancellationToken,
    ) -> Vec<MinerHandle> {
        MINERS.spawn_each(proxy.local_addr(), dialects, stop)
    }

    /// The first block above `from` whose coinbase pays `script`, waiting up to `timeout`.
    pub async fn wait_block_paying(
        &self,
        from: u64,
        script: &ScriptBuf,
        timeout: Duration,
    ) -> anyhow::Result<bitcoin::Block> {
        let deadline = Instant::now() + timeout;
        loop {
            for b in blocks_above(&self.node, from).await? {
                if b.txdata[0].output[0].script_pubkey == *script {
                    return Ok(b);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no block paying {script} above {from} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub async fn wait_mode(
    proxy: &Proxy,
    want: impl Fn(&Mode) -> bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut mode = proxy.mode();
    tokio::time::timeout(timeout, mode.wait_for(|m| want(m)))
        .await
        .map_err(|_| {
            anyhow::anyhow!("mode still {:?} after {timeout:?}", *proxy.mode().borrow())
        })??;
    Ok(())
}

/// Workers with at least one share the pool accepted.
pub fn pool_accepted_workers(proxy: &Proxy) -> HashSet<String> {
    proxy
        .pool_workers()
        .into_iter()
        .filter(|(_, accepted, _)| *accepted > 0)
        .map(|(worker, _, _)| worker)
        .collect()
}

pub fn is_pool(m: &Mode) -> bool {
    matches!(m, Mode::Pool { .. })
}

pub async fn mempool_has(node: &BitcoinNode, txid: &Txid) -> anyhow::Result<bool> {
    let pool: Vec<Txid> = node.rpc_as("getrawmempool", json!([])).await?;
    Ok(pool.contains(txid))
}
