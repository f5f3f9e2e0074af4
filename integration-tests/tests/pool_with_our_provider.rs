//! Issue outcome: the reference pool `pool_sv2` 0.7.0, configured with
//! `[template_provider_type.Sv2Tp]`, gets its templates from OUR template-provider running on a
//! plain `bitcoind` over RPC (no IPC anywhere); blocks found through it (CPU miners behind the
//! reference translator) are accepted by the node and pay the pool's output.
//!
//! Needs `scripts/sv2-peers.sh` (or `JD_SV2_BIN_DIR`); without the binaries this test fails,
//! naming the script.

use std::time::{Duration, Instant};

use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::{
    block_at, init_tracing, provider_config, start_provider, with_timeout, MinerSpec,
};
use integration_tests::sv2_peers::{
    sv2_bin_dir, PoolSv2, PoolSv2Config, TemplateSource, TranslatorSv2, TranslatorSv2Config,
};
use integration_tests::wallet::TestWallet;
use sv1_miner::Dialect;
use sv2_wire::AuthorityKeypair;
use tokio_util::sync::CancellationToken;

const HASHRATE: f64 = 20_000.0;
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "farm",
    difficulty: 1e-4,
    hashrate: HASHRATE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_pool_mines_on_templates_from_our_provider() -> anyhow::Result<()> {
    init_tracing();
    sv2_bin_dir()?;
    with_timeout(Duration::from_secs(120), run()).await
}

async fn run() -> anyhow::Result<()> {
    let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
    node.mine_to(110, TestWallet::new().address()).await?;
    let keys = AuthorityKeypair::generate();
    let blocks = tempfile::tempdir()?;
    let provider = start_provider(provider_config(&node, &keys, blocks.path())).await?;

    let payout = TestWallet::new();
    let source = TemplateSource::sv2_tp(
        provider.local_addr().to_string(),
        Some(keys.public().to_string()),
    );
    let pool = PoolSv2::start(PoolSv2Config::new(source, payout.address()).with_jds(false)).await?;
    let tproxy =
        TranslatorSv2::start(TranslatorSv2Config::new(&pool).with_miner_hashrate(HASHRATE, 20.0))
            .await?;

    let (start, _) = node.tip().await?;
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let miners = MINERS.spawn_each(
        tproxy.sv1_addr(),
        &[Dialect::Cgminer, Dialect::Bitaxe],
        &shutdown,
    );
    let deadline = Instant::now() + Duration::from_secs(80);
    let mut height = start;
    while height < start + 3 {
        pool.ensure_running()?;
        tproxy.ensure_running()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "height {height}, wanted {}; miners {:?}\n--- pool ---\n{}\n--- translator ---\n{}",
            start + 3,
            miners
                .iter()
                .map(|m| m.stats.snapshot())
                .collect::<Vec<_>>(),
            pool.log_tail(),
            tproxy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        height = node.tip().await?.0;
    }
    for h in start + 1..=height {
        let block = block_at(&node, h).await?;
        assert!(
            block.txdata[0]
                .output
                .iter()
                .any(|o| o.script_pubkey == *pool.coinbase_script()),
            "block {h} pays the pool's output"
        );
    }
    // The pool sent its solutions to our provider, which built and submitted the blocks.
    let files = integration_tests::support::journaled_blocks(blocks.path());
    assert!(files >= 3, "our provider wrote {files} blocks it submitted");
    shutdown.cancel();
    provider.shutdown().await;
    Ok(())
}
