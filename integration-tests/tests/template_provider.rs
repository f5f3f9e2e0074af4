//! The standalone template provider end to end: our TDP server on a real regtest node, with
//! jd-proxy as its client (templates over encrypted SV2, solutions back), and misbehaving
//! clients that must not disturb the others.

use std::time::{Duration, Instant};

use bitcoin::{Amount, Txid};
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::{
    block_at, init_tracing, provider_config, provider_link, solo_config, start_provider,
    start_proxy, with_timeout, MinerSpec,
};
use integration_tests::wallet::TestWallet;
use serde_json::json;
use sv1_miner::{Dialect, MinerHandle};
use sv2_wire::AuthorityKeypair;
use template_provider::policy::PolicyConfig;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(150);
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "tp",
    difficulty: 5e-6,
    hashrate: 25_000.0,
};

/// Outcome 2 (and 5): jd-proxy mining through an external template provider gets its blocks
/// accepted, with the node's mempool transactions in them; garbage and wrong messages from
/// other clients drop only those clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jd_proxy_mines_through_our_template_provider() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 120).await?;
        let tp_dir = tempfile::tempdir()?;
        let keys = AuthorityKeypair::generate();
        let provider = start_provider(provider_config(&node, &keys, tp_dir.path())).await?;

        let payout = TestWallet::new();
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, payout.address(), dir.path());
        raw.template_provider = Some(provider_link(&provider, keys.public()));
        let proxy = start_proxy(raw).await?;
        let (start, _) = node.tip().await?;

        let txid: Txid = wallet.send_self(&node, Amount::from_sat(2_000)).await?;

        // Misbehaving clients of the provider, while the proxy is its client too.
        let mut garbage = tokio::net::TcpStream::connect(provider.local_addr()).await?;
        garbage.write_all(&[0xde; 300]).await?;
        let mut silent_wrong = tokio::net::TcpStream::connect(provider.local_addr()).await?;
        silent_wrong.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;

        let shutdown = CancellationToken::new();
        let miners = MINERS.spawn_each(
            proxy.local_addr(),
            &[Dialect::Bitaxe, Dialect::Cgminer],
            &shutdown,
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut mined_tx = false;
        let mut blocks = 0;
        while Instant::now() < deadline && !(mined_tx && blocks >= 3) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (tip, _) = node.tip().await?;
            blocks = tip - start;
            for h in start + 1..=tip {
                if block_at(&node, h)
                    .await?
                    .txdata
                    .iter()
                    .any(|t| t.compute_txid() == txid)
                {
                    mined_tx = true;
                }
            }
        }
        assert!(
            blocks >= 3,
            "blocks found through the template provider were accepted: {blocks}"
        );
        assert!(
            mined_tx,
            "the mempool transaction is in a block mined through the provider"
        );
        for h in start + 1..=start + blocks {
            let b = block_at(&node, h).await?;
            assert_eq!(
                b.txdata[0].output[0].script_pubkey,
                *payout.script_pubkey(),
                "coinbase pays the proxy's payout"
            );
        }
        // The provider wrote every block it submitted, and the bad clients are gone.
        assert!(integration_tests::support::journaled_blocks(tp_dir.path()) >= 1);
        use tokio::io::AsyncReadExt;
        for (name, sock) in [("garbage", &mut garbage), ("wrong", &mut silent_wrong)] {
            // Whatever the provider sent (a handshake reply), the connection must end.
            let mut sink = Vec::new();
            let r =
                tokio::time::timeout(Duration::from_secs(15), sock.read_to_end(&mut sink)).await;
            assert!(
                matches!(r, Ok(Ok(_)) | Ok(Err(_))),
                "{name} client dropped by the provider (read {} bytes)",
                sink.len()
            );
        }
        assert!(miners
            .iter()
            .all(|m| m.stats.snapshot().shares_accepted > 0));
        shutdown.cancel();
        proxy.shutdown().await;
        provider.shutdown().await;
        Ok(())
    })
    .await
}

/// A proxy that pins another authority key refuses the provider before anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_authority_key_is_refused() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        node.mine_to(110, TestWallet::new().address()).await?;
        let tp_dir = tempfile::tempdir()?;
        let keys = AuthorityKeypair::generate();
        let provider = start_provider(provider_config(&node, &keys, tp_dir.path())).await?;
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, TestWallet::new().address(), dir.path());
        raw.template_provider = Some(provider_link(
            &provider,
            AuthorityKeypair::generate().public(),
        ));
        let err = start_proxy(raw)
            .await
            .expect_err("a provider signed by another key is refused");
        assert!(
            format!("{err:#}").contains("pinned authority key"),
            "{err:#}"
        );
        provider.shutdown().await;
        Ok(())
    })
    .await
}

/// Outcome 4 through the provider: a transaction the farm excludes, and its child, never
/// appear in a block mined through it, while the others do; every block is accepted (so every
/// filtered template was valid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_transactions_and_their_children_are_never_mined() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 125).await?;
        let fee = Amount::from_sat(3_000);
        let excluded = wallet.send_self(&node, fee).await?;
        let child = wallet.send_child(&node, excluded, fee).await?;
        let kept = wallet.send_self(&node, fee).await?;

        let tp_dir = tempfile::tempdir()?;
        let keys = AuthorityKeypair::generate();
        let policy = PolicyConfig {
            exclude_txids: vec![excluded.to_string()],
            ..Default::default()
        };
        let mut provider_raw = provider_config(&node, &keys, tp_dir.path());
        provider_raw.policy = policy;
        let provider = start_provider(provider_raw).await?;
        let payout = TestWallet::new();
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, payout.address(), dir.path());
        raw.template_provider = Some(provider_link(&provider, keys.public()));
        let proxy = start_proxy(raw).await?;
        let (start, _) = node.tip().await?;
        let shutdown = CancellationToken::new();
        let _miners: Vec<MinerHandle> = MINERS.spawn_each(
            proxy.local_addr(),
            &[Dialect::Braiins, Dialect::Whatsminer],
            &shutdown,
        );

        let deadline = Instant::now() + Duration::from_secs(60);
        let mut kept_mined = false;
        let mut blocks_after_kept = 0;
        while Instant::now() < deadline && blocks_after_kept < 5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (tip, _) = node.tip().await?;
            blocks_after_kept = 0;
            kept_mined = false;
            for h in start + 1..=tip {
                let b = block_at(&node, h).await?;
                let ids: Vec<Txid> = b
                    .txdata
                    .iter()
                    .map(bitcoin::Transaction::compute_txid)
                    .collect();
                assert!(
                    !ids.contains(&excluded),
                    "excluded transaction mined at height {h}"
                );
                assert!(
                    !ids.contains(&child),
                    "child of the excluded transaction mined at height {h}"
                );
                if kept_mined {
                    blocks_after_kept += 1;
                }
                kept_mined |= ids.contains(&kept);
            }
        }
        assert!(kept_mined, "the transaction the policy keeps is mined");
        assert!(
            blocks_after_kept >= 5,
            "several more blocks were mined with the excluded pair still waiting"
        );
        let mempool: Vec<Txid> = node.rpc_as("getrawmempool", json!([])).await?;
        assert!(
            mempool.contains(&excluded) && mempool.contains(&child),
            "the excluded pair is still in the mempool, just not mined"
        );
        shutdown.cancel();
        proxy.shutdown().await;
        provider.shutdown().await;
        Ok(())
    })
    .await
}
