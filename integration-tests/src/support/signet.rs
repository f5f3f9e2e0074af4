//! A farm on a custom signet (challenge `OP_TRUE`), for tests that need shares that are not
//! blocks: on regtest every share is a block, so every share would also be a new tip and a
//! clean job for every miner. Here blocks take about 4.8 million hashes (the signet minimum
//! difficulty), far above the shares CPU miners find.
//!
//! As in [`super::farm`], the pools run on a `bitcoin-node` (IPC, for their JDS) of their own,
//! peered with the farm's `bitcoind`. Both start on the same premined chain: mined once by the
//! node (a few seconds a block) and replayed from a cache file on later runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bitcoin::{Address, Network, ScriptBuf};
use jd_proxy::config::raw::{RawConfig, RawFailover, RawUpstream};
use serde_json::json;
use sv1_miner::{Dialect, MinerConfig, MinerHandle};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::process::cache_root;
use super::{connect_nodes, solo_config};
use crate::node::{BitcoinNode, Chain, NodeKind};
use crate::sv2_peers::{sv2_bin_dir, PoolSv2, PoolSv2Config, TemplateSource};
use crate::wallet::TestWallet;

/// Blocks under the tip the tests start at (the pools' IPC templates need 17).
pub const PREMINE: u64 = 20;
/// The cache of premined blocks, one hex block a line, under the cache root.
const CACHE_FILE: &str = "signet-op-true-20-blocks.hex";
/// The anyone-can-spend output the premined blocks pay (and the signet challenge).
const OP_TRUE: &str = "raw(51)";

/// The farm's node, the pools' node, and where solo blocks pay.
pub struct SignetFarm {
    pub pool_node: BitcoinNode,
    pub node: BitcoinNode,
    pub solo: TestWallet,
    pub dir: TempDir,
}

impl SignetFarm {
    /// Starts both nodes on the premined chain, peered.
    ///
    /// # Errors
    /// A node that does not start, or a chain that does not replay.
    pub async fn start() -> anyhow::Result<SignetFarm> {
        sv2_bin_dir()?;
        let pool_node = BitcoinNode::start_on(NodeKind::BitcoinNodeIpc, Chain::Signet, &[]).await?;
        let node = BitcoinNode::start_on(NodeKind::Bitcoind, Chain::Signet, &[]).await?;
        let blocks = premined(&pool_node).await?;
        for b in &blocks {
            node.rpc("submitblock", json!([b])).await?;
        }
        for n in [&node, &pool_node] {
            n.wait_for_height(PREMINE, Duration::from_secs(30)).await?;
        }
        connect_nodes(&node, &pool_node).await?;
        Ok(SignetFarm {
            pool_node,
            node,
            solo: TestWallet::new(),
            dir: TempDir::new()?,
        })
    }

    /// A reference pool with its JDS on the pools' node, aiming at `shares_per_minute` per
    /// channel; it pays a script of its own.
    ///
    /// # Errors
    /// The pool does not start.
    pub async fn pool(&self, shares_per_minute: f32) -> anyhow::Result<PoolSv2> {
        let payout = TestWallet::new();
        let config = PoolSv2Config::new(TemplateSource::ipc(&self.pool_node), payout.address())
            .with_coinbase_script(payout.script_pubkey().clone())
            .with_shares_per_minute(shares_per_minute);
        PoolSv2::start(config).await
    }

    /// jd-proxy on the farm's node, solo payout to [`SignetFarm::solo`], every miner held at
    /// `difficulty`, quick failover and hashrate reports, hashrates sampled every second.
    pub fn proxy_config(&self, difficulty: f64) -> RawConfig {
        let mut raw = solo_config(&self.node, self.solo.address(), self.dir.path());
        raw.network = Some("signet".into());
        raw.coinbase.payout_address = Some(signet_address(self.solo.script_pubkey()));
        raw.vardiff.initial_difficulty = Some(difficulty);
        raw.vardiff.min_difficulty = Some(difficulty);
        raw.vardiff.max_difficulty = Some(difficulty);
        raw.ledger.enabled = Some(false);
        raw.http.hashrate_sample_secs = Some(1.0);
        raw.failover = RawFailover {
            connect_timeout_secs: Some(3),
            response_timeout_secs: Some(5),
            retry_preferred_secs: Some(2),
            hashrate_report_secs: Some(5),
        };
        raw
    }

    /// Mines one block on the farm's node (a second or so of its CPU).
    ///
    /// # Errors
    /// An RPC failure.
    pub async fn mine_block(&self) -> anyhow::Result<()> {
        let desc = descriptor(&self.node).await?;
        self.node
            .rpc("generatetodescriptor", json!([1, desc, 1_000_000_000u64]))
            .await?;
        Ok(())
    }
}

/// `[[upstream]]` for `pool`, with its JDS, crediting `identity`.
pub fn upstream(name: &str, pool: &PoolSv2, identity: &str) -> RawUpstream {
    RawUpstream {
        name: Some(name.into()),
        pool_address: Some(pool.listen_addr().to_string()),
        pool_authority_public_key: Some(pool.authority_public_key()),
        jds_address: pool.jds_addr().map(|a| a.to_string()),
        user_identity: Some(identity.into()),
        ..Default::default()
    }
}

/// The signet address of `script`.
pub fn signet_address(script: &ScriptBuf) -> String {
    Address::from_script(script, Network::Signet)
        .expect("a standard script")
        .to_string()
}

/// A CPU miner authorizing as `worker`, at `difficulty`, capped at `hashrate`, until `stop`.
pub fn miner(
    addr: std::net::SocketAddr,
    worker: &str,
    (difficulty, hashrate): (f64, f64),
    stop: &CancellationToken,
) -> MinerHandle {
    let config = MinerConfig::new(addr, worker, Dialect::Cgminer)
        .with_suggest_difficulty(difficulty)
        .with_max_hashrate(hashrate);
    sv1_miner::spawn(config, stop.clone())
}

/// `raw(51)` with its checksum, as the node's descriptor RPCs want it.
async fn descriptor(node: &BitcoinNode) -> anyhow::Result<String> {
    let info = node.rpc("getdescriptorinfo", json!([OP_TRUE])).await?;
    let sum = info["checksum"]
        .as_str()
        .context("getdescriptorinfo without a checksum")?;
    Ok(format!("{OP_TRUE}#{sum}"))
}

/// The premined blocks, on `node`: replayed from the cache, or mined there (and cached).
async fn premined(node: &BitcoinNode) -> anyhow::Result<Vec<String>> {
    let path = cache_root().map(|r| r.join(CACHE_FILE));
    if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        let blocks: Vec<String> = text.lines().map(str::to_owned).collect();
        if blocks.len() as u64 == PREMINE {
            for b in &blocks {
                node.rpc("submitblock", json!([b])).await?;
            }
            let (h, _) = node.tip().await?;
            if h == PREMINE {
                return Ok(blocks);
            }
        }
    }
    let desc = descriptor(node).await?;
    node.rpc_with_timeout(
        "generatetodescriptor",
        json!([PREMINE, desc, 1_000_000_000u64]),
        Some(Duration::from_secs(300)),
    )
    .await?;
    let mut blocks = Vec::new();
    for h in 1..=PREMINE {
        let hash: String = node.rpc_as("getblockhash", json!([h])).await?;
        blocks.push(node.rpc_as::<String>("getblock", json!([hash, 0])).await?);
    }
    if let Some(p) = path {
        write_cache(&p, &blocks);
    }
    Ok(blocks)
}

/// Best effort: a test that cannot write the cache mines again next time.
fn write_cache(path: &PathBuf, blocks: &[String]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, blocks.join("\n")))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache the premined signet blocks");
    }
}
