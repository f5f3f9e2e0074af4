//! The Stratum V2 Reference Implementation as a real peer: `pool_sv2` 0.7.0 on a regtest
//! `bitcoin-node` over IPC (embedded JDS on), `translator_sv2` 0.6.0 in front of it, and CPU
//! miners speaking Antminer (cgminer) and Bitaxe firmware dialects. Every block the node gains
//! must pay the pool's configured output.
//!
//! Needs `scripts/bitcoin-core.sh` and `scripts/sv2-peers.sh` (or `JD_BITCOIN_BIN_DIR` /
//! `JD_SV2_BIN_DIR`). Without the SV2 binaries this test FAILS, naming the script: it is never
//! skipped silently.

use std::time::{Duration, Instant};

use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::{block_at, init_tracing, with_timeout, MinerSpec};
use integration_tests::sv2_peers::{
    sv2_bin_dir, PoolSv2, PoolSv2Config, TemplateSource, TranslatorSv2, TranslatorSv2Config,
    POOL_BLOCK_FOUND_LOG,
};
use integration_tests::wallet::TestWallet;
use sv1_miner::{Dialect, MinerHandle};
use tokio_util::sync::CancellationToken;

/// The whole test, set-up included.
const TEST_TIMEOUT: Duration = Duration::from_secs(110);
/// How long the miners get to push the chain up by [`BLOCKS_WANTED`].
const MINING_TIMEOUT: Duration = Duration::from_secs(60);
/// Blocks above the starting tip that must come through the pool.
const BLOCKS_WANTED: u64 = 4;
/// Per-miner hash cap; the translator's first difficulty is set for this rate.
const HASHRATE: f64 = 20_000.0;
/// Shares a minute per miner the translator aims at; on regtest every share is a block.
const SHARES_PER_MINUTE: f32 = 20.0;
/// `bitcoin-node`'s IPC `createNewBlock` fails below height 17 on regtest: start well above it.
const PREMINE: u64 = 110;
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "farm",
    difficulty: 1e-4,
    hashrate: HASHRATE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_pool_and_translator_mine_blocks_on_an_ipc_node() -> anyhow::Result<()> {
    init_tracing();
    // First, so a missing build fails at once with the instructions (CI runs sv2-peers.sh first).
    let bin_dir = sv2_bin_dir()?;
    eprintln!("SV2 reference binaries from {}", bin_dir.display());
    with_timeout(TEST_TIMEOUT, run()).await
}

async fn run() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let node = BitcoinNode::start(NodeKind::BitcoinNodeIpc).await?;
    node.mine_to(PREMINE, TestWallet::new().address()).await?;
    eprintln!("[{:>5.1?}] node up at height {PREMINE}", t0.elapsed());
    let (pool, tproxy) = start_peers(&node, t0).await?;

    let (start_height, _) = node.tip().await?;
    let shutdown = CancellationToken::new();
    let _cancel_on_exit = shutdown.clone().drop_guard();
    let miners: Vec<(Dialect, MinerHandle)> = [Dialect::Cgminer, Dialect::Bitaxe]
        .into_iter()
        .map(|d| (d, MINERS.spawn(tproxy.sv1_addr(), d, &shutdown)))
        .collect();
    let mining_started = Instant::now();
    wait_for_blocks(&node, &pool, &tproxy, &miners, start_height).await?;
    let mining_took = mining_started.elapsed();
    shutdown.cancel();
    for (_, m) in &miners {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !m.task.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    let tip = check_blocks_pay_the_pool(&node, &pool, start_height).await?;
    let found = pool.log_count(POOL_BLOCK_FOUND_LOG);
    assert!(
        found as u64 >= tip - start_height,
        "pool logged {found} {POOL_BLOCK_FOUND_LOG:?} for {} blocks",
        tip - start_height
    );
    let stats: Vec<_> = miners
        .iter()
        .map(|(d, m)| {
            let s = m.stats.snapshot();
            format!(
                "{d}: {} submitted, {} accepted, {} rejected",
                s.shares_submitted, s.shares_accepted, s.shares_rejected
            )
        })
        .collect();
    eprintln!(
        "[{:>5.1?}] {} blocks through the pool in {mining_took:.1?} (height {start_height} -> {tip}); \
         pool logged {found} block(s) found; {}",
        t0.elapsed(),
        tip - start_height,
        stats.join("; ")
    );
    drop(tproxy);
    drop(pool);
    node.stop().await?;
    Ok(())
}

/// The pool on `node` (embedded JDS on), and the translator in front of it.
async fn start_peers(node: &BitcoinNode, t0: Instant) -> anyhow::Result<(PoolSv2, TranslatorSv2)> {
    let payout = TestWallet::new();
    let pool = PoolSv2::start(PoolSv2Config::new(
        TemplateSource::ipc(node),
        payout.address(),
    ))
    .await?;
    eprintln!(
        "[{:>5.1?}] pool_sv2 ready: mining {}, JDS {:?}, authority {}",
        t0.elapsed(),
        pool.listen_addr(),
        pool.jds_addr(),
        pool.authority_public_key()
    );
    assert!(pool.jds_addr().is_some(), "the embedded JDS is on with IPC");

    let tproxy = TranslatorSv2::start(
        TranslatorSv2Config::new(&pool).with_miner_hashrate(HASHRATE, SHARES_PER_MINUTE),
    )
    .await?;
    eprintln!(
        "[{:>5.1?}] translator_sv2 ready: SV1 on {}",
        t0.elapsed(),
        tproxy.sv1_addr()
    );
    Ok((pool, tproxy))
}

/// Waits for the chain to rise and for every miner to have had shares accepted.
async fn wait_for_blocks(
    node: &BitcoinNode,
    pool: &PoolSv2,
    tproxy: &TranslatorSv2,
    miners: &[(Dialect, MinerHandle)],
    start_height: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + MINING_TIMEOUT;
    loop {
        pool.ensure_running()?;
        tproxy.ensure_running()?;
        let height = node.tip().await?.0;
        let all_accepted = miners
            .iter()
            .all(|(_, m)| m.stats.snapshot().shares_accepted >= 1);
        if height >= start_height + BLOCKS_WANTED && all_accepted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let stats: Vec<_> = miners
                .iter()
                .map(|(d, m)| (d.to_string(), m.stats.snapshot()))
                .collect();
            anyhow::bail!(
                "after {MINING_TIMEOUT:?}: height {height} (started at {start_height}, wanted \
                 +{BLOCKS_WANTED}); miners {stats:#?}\n--- pool log tail ---\n{}\n--- \
                 translator log tail ---\n{}",
                pool.log_tail(),
                tproxy.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every block above the starting tip came through the pool: its coinbase pays the pool's
/// configured output. Returns the tip height.
async fn check_blocks_pay_the_pool(
    node: &BitcoinNode,
    pool: &PoolSv2,
    start_height: u64,
) -> anyhow::Result<u64> {
    let (tip, _) = node.tip().await?;
    let pool_script = pool.coinbase_script().clone();
    for h in start_height + 1..=tip {
        let block = block_at(node, h).await?;
        let hash = block.block_hash();
        let coinbase = &block.txdata[0];
        let paid = coinbase
            .output
            .iter()
            .filter(|o| o.script_pubkey == pool_script)
            .map(|o| o.value)
            .sum::<bitcoin::Amount>();
        assert!(
            paid > bitcoin::Amount::ZERO,
            "block {h} {hash}: coinbase outputs {:?} do not pay the pool's {pool_script:?}",
            coinbase.output
        );
        let tag = pool.config().pool_signature.as_bytes();
        assert!(
            coinbase.input[0]
                .script_sig
                .as_bytes()
                .windows(tag.len())
                .any(|w| w == tag),
            "block {h}: coinbase scriptSig carries the pool signature"
        );
    }
    Ok(tip)
}
