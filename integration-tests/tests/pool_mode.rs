//! Pool mode against the real reference pool: `pool_sv2` 0.7.0 with its embedded Job
//! Declaration Server on a `bitcoin-node` (IPC) of its own, and jd-proxy on the farm's own
//! `bitcoind`, the two nodes peered on loopback. CPU miners speak real firmware dialects.
//!
//! The pool's node refuses low-fee transactions (`-minrelaytxfee`), so a transaction the farm's
//! node holds is one the pool would never pick: seeing it mined proves the block is the farm's.
//!
//! Needs `scripts/bitcoin-core.sh` and `scripts/sv2-peers.sh` (or `JD_BITCOIN_BIN_DIR` /
//! `JD_SV2_BIN_DIR`); without them these tests fail, naming the script.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use integration_tests::support::farm::{
    farm, farm_with, is_pool, mempool_has, pool_accepted_workers, wait_mode, LOW_FEE, MINERS,
    PREMINE,
};
use integration_tests::support::{
    blocks_above, connect_nodes, init_tracing, start_proxy, wait_until, with_timeout,
};
use integration_tests::sv2_peers::{PoolSv2, PoolSv2Config, TemplateSource, POOL_BLOCK_FOUND_LOG};
use integration_tests::wallet::TestWallet;
use jd_proxy::config::raw::RawUpstream;
use jd_proxy::Mode;
use serde_json::json;
use sv1_miner::Dialect;
use sv2_wire::AuthorityKeypair;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(170);
/// Outcome 1: full-template mode. The pool accepts shares from every ASIC; blocks found through
/// the proxy are accepted by both nodes, pay the pool's output, and carry the farm's own
/// transaction that the pool's node refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_template_blocks_carry_the_farms_transactions_and_pay_the_pool() -> anyhow::Result<()>
{
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let mut f = farm().await?;
        let start = PREMINE;
        let farm_tx = f.wallet.send_self(&f.node, LOW_FEE).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(mempool_has(&f.node, &farm_tx).await?, "the farm's node holds its tx");
        assert!(!mempool_has(&f.pool_node, &farm_tx).await?, "the pool's node refuses the low-fee tx");

        let proxy = start_proxy(f.proxy_config(f.pool().authority_public_key())).await?;
        wait_mode(&proxy, is_pool, Duration::from_secs(20)).await?;
        let stop = CancellationToken::new();
        let dialects = [Dialect::Cgminer, Dialect::Bitaxe, Dialect::Whatsminer];
        let _miners = f.miners(&proxy, &dialects, &stop);

        let workers: HashSet<String> = dialects.iter().map(|&d| MINERS.worker(d)).collect();
        let all_accepted = wait_until(Duration::from_secs(110), || async {
            let accepted = pool_accepted_workers(&proxy);
            let mined = f.node.rpc("getmempoolentry", json!([farm_tx.to_string()])).await.is_err();
            workers.is_subset(&accepted) && mined
        })
        .await;
        let s = proxy.stats();
        assert!(all_accepted, "every ASIC's shares accepted by the pool and the farm tx mined; pool verdicts {:?}, stats {s:?}", proxy.pool_workers());
        assert!(is_pool(&proxy.mode().borrow()), "still mining for the pool");

        let blocks = blocks_above(&f.node, start).await?;
        assert!(blocks.len() >= 3, "{} blocks", blocks.len());
        for b in &blocks {
            assert_eq!(b.txdata[0].output[0].script_pubkey, f.pool_script, "block {} pays the pool", b.block_hash());
        }
        assert!(
            blocks.iter().any(|b| b.txdata.iter().any(|t| t.compute_txid() == farm_tx)),
            "the farm's own transaction is in a block"
        );
        // The pool's node accepted the same chain.
        let (tip, hash) = f.node.tip().await?;
        f.pool_node.wait_for_height(tip, Duration::from_secs(10)).await?;
        let pool_hash: bitcoin::BlockHash = f.pool_node.rpc_as("getblockhash", json!([tip])).await?;
        assert_eq!(pool_hash, hash);
        assert!(f.pool().log_count(POOL_BLOCK_FOUND_LOG) >= 1, "the pool saw block shares");
        // The reference pool does not propagate blocks of custom jobs: these reached its node
        // from the farm's node alone.
        assert_eq!(f.pool().log_count("Propagating solution"), 0);
        assert!(s.pool_accepted >= 3, "{s:?}");
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// Outcome 3: the pool dies; every ASIC keeps its connection and mines solo within seconds, a
/// solo block is accepted; the pool comes back and mining returns to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pool_means_solo_without_dropping_an_asic_then_back() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let mut f = farm().await?;
        let proxy = start_proxy(f.proxy_config(f.pool().authority_public_key())).await?;
        wait_mode(&proxy, is_pool, Duration::from_secs(20)).await?;
        let stop = CancellationToken::new();
        let miners = f.miners(&proxy, &[Dialect::Cgminer, Dialect::Braiins], &stop);
        f.wait_block_paying(PREMINE, &f.pool_script, Duration::from_secs(60))
            .await?;
        let connections = proxy.stats().connections_total;
        assert_eq!(connections, 2);

        let (listen, jds, config) = (
            f.pool().listen_addr(),
            f.pool().jds_addr(),
            f.pool().config().clone(),
        );
        let killed_at = Instant::now();
        drop(f.pool.take());
        wait_mode(&proxy, |m| *m == Mode::Solo, Duration::from_secs(15)).await?;
        eprintln!("solo {:?} after the pool died", killed_at.elapsed());
        let (h, _) = f.node.tip().await?;
        let solo_script = f.solo.script_pubkey().clone();
        f.wait_block_paying(h, &solo_script, Duration::from_secs(60))
            .await?;
        let s = proxy.stats();
        assert_eq!(
            (s.connections, s.connections_total),
            (2, 2),
            "no ASIC was dropped or reconnected"
        );
        for m in &miners {
            assert!(
                m.stats.snapshot().clean_notifies >= 2,
                "clean jobs reached every miner"
            );
        }

        f.pool = Some(PoolSv2::start_on(config, listen, jds).await?);
        wait_mode(&proxy, is_pool, Duration::from_secs(30)).await?;
        let (h, _) = f.node.tip().await?;
        f.wait_block_paying(h, &f.pool_script, Duration::from_secs(60))
            .await?;
        let s = proxy.stats();
        assert_eq!((s.connections, s.connections_total), (2, 2));
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// Outcome 4: a pool whose certificate is not signed by the pinned key is refused before any
/// share is sent; the farm mines solo meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_authority_key_is_refused_before_any_share() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let f = farm().await?;
        let wrong = AuthorityKeypair::generate().public().to_string();
        let proxy = start_proxy(f.proxy_config(wrong)).await?;
        let stop = CancellationToken::new();
        let _miners = f.miners(&proxy, &[Dialect::Avalon], &stop);
        f.wait_block_paying(PREMINE, f.solo.script_pubkey(), Duration::from_secs(60))
            .await?;
        assert_eq!(*proxy.mode().borrow(), Mode::Solo);
        let s = proxy.stats();
        assert_eq!(s.pool_submitted, 0, "{s:?}");
        assert_eq!(
            f.pool().log_count("OpenExtendedMiningChannel"),
            0,
            "no channel was opened"
        );
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// Outcome 5: the JDS refuses a declaration (the farm's node is on a tip the pool's node does
/// not have: `stale-chain-tip`); the proxy falls back to solo instead of stalling, and returns
/// once the nodes agree again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_declaration_falls_back_to_solo() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let f = farm().await?;
        let mut raw = f.proxy_config(f.pool().authority_public_key());
        // A pool that keeps refusing is retried after 5, 10, then every 20 s.
        raw.failover.retry_preferred_secs = Some(5);
        let proxy = start_proxy(raw).await?;
        wait_mode(&proxy, is_pool, Duration::from_secs(20)).await?;
        let stop = CancellationToken::new();
        let _miners = f.miners(&proxy, &[Dialect::Nerdminer, Dialect::Bitaxe], &stop);

        f.node.rpc("setnetworkactive", json!([false])).await?;
        let (h, _) = f.node.tip().await?;
        f.node.mine_to(1, f.wallet.address()).await?;
        wait_mode(&proxy, |m| *m == Mode::Solo, Duration::from_secs(20)).await?;
        f.wait_block_paying(h + 1, f.solo.script_pubkey(), Duration::from_secs(60))
            .await?;
        assert!(
            f.pool().log().contains("DeclareMiningJob"),
            "the job was declared and refused"
        );

        f.node.rpc("setnetworkactive", json!([true])).await?;
        connect_nodes(&f.node, &f.pool_node).await?;
        let (tip, _) = f.node.tip().await?;
        f.pool_node
            .wait_for_height(tip, Duration::from_secs(20))
            .await?;
        wait_mode(&proxy, is_pool, Duration::from_secs(45)).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// Ordered failover: with two pools, the first one's death moves mining to the second, and
/// its return brings mining back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_pool_takes_over_and_the_first_gets_the_farm_back() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let mut f = farm().await?;
        let second_payout = TestWallet::new();
        let second = PoolSv2::start(PoolSv2Config::new(
            TemplateSource::ipc(&f.pool_node),
            second_payout.address(),
        ))
        .await?;
        let mut raw = f.proxy_config(f.pool().authority_public_key());
        raw.upstream.push(RawUpstream {
            name: Some("backup-pool".into()),
            pool_address: Some(second.listen_addr().to_string()),
            pool_authority_public_key: Some(second.authority_public_key()),
            jds_address: second.jds_addr().map(|a| a.to_string()),
            ..Default::default()
        });
        let proxy = start_proxy(raw).await?;
        wait_mode(
            &proxy,
            |m| matches!(m, Mode::Pool { index: 0, .. }),
            Duration::from_secs(20),
        )
        .await?;
        let stop = CancellationToken::new();
        let _miners = f.miners(&proxy, &[Dialect::Whatsminer, Dialect::Avalon], &stop);
        f.wait_block_paying(PREMINE, &f.pool_script, Duration::from_secs(60))
            .await?;

        let (listen, jds, config) = (
            f.pool().listen_addr(),
            f.pool().jds_addr(),
            f.pool().config().clone(),
        );
        drop(f.pool.take());
        wait_mode(
            &proxy,
            |m| matches!(m, Mode::Pool { index: 1, .. }),
            Duration::from_secs(15),
        )
        .await?;
        let (h, _) = f.node.tip().await?;
        f.wait_block_paying(h, second_payout.script_pubkey(), Duration::from_secs(60))
            .await?;

        f.pool = Some(PoolSv2::start_on(config, listen, jds).await?);
        wait_mode(
            &proxy,
            |m| matches!(m, Mode::Pool { index: 0, .. }),
            Duration::from_secs(30),
        )
        .await?;
        let (h, _) = f.node.tip().await?;
        f.wait_block_paying(h, &f.pool_script, Duration::from_secs(60))
            .await?;
        let s = proxy.stats();
        assert_eq!(
            (s.connections, s.connections_total),
            (2, 2),
            "no ASIC dropped across two switches"
        );
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// A pool without job declaration: jd-proxy mines the pool's own jobs (a plain SV1-to-SV2
/// translator); the pool's blocks are found through it and accepted by both nodes, and the
/// farm's low-fee transaction is not in them (the pool chose the transactions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_jds_the_pools_own_jobs_are_mined() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let mut f = farm_with(false).await?;
        let farm_tx = f.wallet.send_self(&f.node, LOW_FEE).await?;
        let mut raw = f.proxy_config(f.pool().authority_public_key());
        raw.upstream[0].jds_address = None;
        let proxy = start_proxy(raw).await?;
        wait_mode(&proxy, is_pool, Duration::from_secs(20)).await?;
        let stop = CancellationToken::new();
        let dialects = [Dialect::Cgminer, Dialect::Bitaxe];
        let _miners = f.miners(&proxy, &dialects, &stop);
        let workers: HashSet<String> = dialects.iter().map(|&d| MINERS.worker(d)).collect();
        let ok = wait_until(Duration::from_secs(90), || async {
            let accepted = pool_accepted_workers(&proxy);
            let (h, _) = f
                .node
                .tip()
                .await
                .unwrap_or((0, bitcoin::BlockHash::all_zeros()));
            workers.is_subset(&accepted) && h >= PREMINE + 2
        })
        .await;
        assert!(
            ok,
            "pool verdicts {:?}, stats {:?}",
            proxy.pool_workers(),
            proxy.stats()
        );
        let blocks = blocks_above(&f.node, PREMINE).await?;
        for b in &blocks {
            assert_eq!(
                b.txdata[0].output[0].script_pubkey, f.pool_script,
                "the pool's coinbase"
            );
            assert!(
                !b.txdata.iter().any(|t| t.compute_txid() == farm_tx),
                "the pool picked the transactions"
            );
        }
        assert!(f.pool().log_count(POOL_BLOCK_FOUND_LOG) >= 1);
        assert_eq!(proxy.stats().pool_rejected, 0, "{:?}", proxy.stats());
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// Coinbase-only declaration, as the spec defines it (no transaction data; the proxy alone
/// propagates its blocks). The reference JDS 0.7.0 supports only full-template mode and refuses
/// such a connection at setup; jd-proxy reports the refusal and keeps the farm mining (solo).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coinbase_only_is_refused_by_the_reference_jds_and_the_farm_keeps_mining(
) -> anyhow::Result<()> {
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let f = farm().await?;
        let jds = f.pool().jds_addr().expect("jds on").to_string();
        let key = f.pool().authority_public_key().parse()?;
        let tracker = tokio_util::task::TaskTracker::new();
        let err = job_declarator::JdClient::connect(
            &jds,
            key,
            false,
            (Duration::from_secs(5), Duration::from_secs(5)),
            &tracker,
        )
        .await
        .expect_err("the reference JDS wants DECLARE_TX_DATA");
        assert!(
            err.to_string().contains("missing-declare-tx-data-flag"),
            "{err}"
        );

        let mut raw = f.proxy_config(f.pool().authority_public_key());
        raw.upstream[0].declaration = Some("coinbase-only".into());
        let proxy = start_proxy(raw).await?;
        let stop = CancellationToken::new();
        let _miners = f.miners(&proxy, &[Dialect::Braiins], &stop);
        f.wait_block_paying(PREMINE, f.solo.script_pubkey(), Duration::from_secs(60))
            .await?;
        assert_eq!(*proxy.mode().borrow(), Mode::Solo);
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}
