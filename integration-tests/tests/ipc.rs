//! The Bitcoin Core IPC backend on a real `bitcoin-node -ipcbind=unix` (v31): templates with
//! their transactions, new tips pushed by the node (no polling), blocks built from them accepted
//! by the node, a lost connection survived, and the template provider serving jd-proxy from it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::{Amount, Block, BlockHash, Network, ScriptBuf, Transaction, Txid};
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::proxy::{init_tracing, solo_config, start_proxy, with_timeout};
use integration_tests::wallet::TestWallet;
use jd_proxy::config::raw::RawTemplateProvider;
use serde_json::{json, Value};
use sv1_miner::{Dialect, MinerConfig, MinerHandle};
use template_provider::config::RawNode;
use template_provider::node::ipc::{self, IpcConfig, IpcError};
use template_provider::server::{Provider, ProviderConfig, RawProviderConfig, RawServer};
use template_provider::sv2::AuthorityKeypair;
use template_provider::template::merkle;
use template_provider::template::policy::Policy;
use template_provider::{CoinbaseConfig, CoinbaseSplit, Template, TemplateKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const TEST_TIMEOUT: Duration = Duration::from_secs(110);
/// A new tip must reach us this fast.
const TIP_DEADLINE: Duration = Duration::from_secs(2);
const EXTRANONCE: [u8; 8] = [0u8; 8];

fn ipc_config(socket: &Path) -> IpcConfig {
    IpcConfig {
        socket: socket.to_path_buf(),
        network: Network::Regtest,
        fee_threshold_sat: 1_000,
        min_interval: Duration::from_secs(1),
    }
}

/// Waits (bounded) for the next published template; `None` when none came in time.
async fn next_template(
    rx: &mut watch::Receiver<Arc<Template>>,
    within: Duration,
) -> Option<Arc<Template>> {
    match tokio::time::timeout(within, rx.changed()).await {
        Ok(Ok(())) => Some(rx.borrow_and_update().clone()),
        _ => None,
    }
}

/// Waits (bounded) for a published template that satisfies `pred`.
async fn template_where(
    rx: &mut watch::Receiver<Arc<Template>>,
    within: Duration,
    pred: impl Fn(&Template) -> bool,
) -> anyhow::Result<Arc<Template>> {
    let deadline = Instant::now() + within;
    loop {
        let current = rx.borrow_and_update().clone();
        if pred(&current) {
            return Ok(current);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if next_template(rx, left).await.is_none() && Instant::now() >= deadline {
            anyhow::bail!(
                "no matching template within {within:?}; last was id {} at height {}",
                current.id,
                current.height
            );
        }
    }
}

/// The whole block for `t` paying `payout`, with proof of work (regtest: a few tries).
fn mine_block(t: &Template, payout: &ScriptBuf) -> anyhow::Result<(BlockHash, Vec<u8>)> {
    let config = CoinbaseConfig {
        payout_script: payout.clone(),
        tag: b"/ipc-test/".to_vec(),
    };
    let coinbase = CoinbaseSplit::build(t, &config, EXTRANONCE.len())?;
    let mut header = Header {
        version: BlockVersion::from_consensus(t.version),
        prev_blockhash: t.prev_hash,
        merkle_root: merkle::root_from_path(coinbase.txid(&[&EXTRANONCE]), &t.merkle_path),
        time: t.cur_time,
        bits: t.bits,
        nonce: 0,
    };
    let target = t.network_target();
    while header.validate_pow(target).is_err() {
        header.nonce = header
            .nonce
            .checked_add(1)
            .ok_or_else(|| anyhow::anyhow!("no nonce meets the target"))?;
    }
    Ok((
        header.block_hash(),
        t.assemble_block(&header, &coinbase, &EXTRANONCE),
    ))
}

fn txids(t: &Template) -> Vec<Txid> {
    t.txs.iter().map(|x| x.txid).collect()
}

/// Templates over IPC: the mempool transaction with its data, a new tip pushed within 2 s, a
/// fee update, and a block built from an IPC template accepted by `submitblock`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_templates_follow_the_node_and_make_valid_blocks() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::BitcoinNodeIpc).await?;
        let socket = node.ipc_socket().expect("an IPC node has a socket");
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 110).await?; // createNewBlock fails below height 17
        let fee1 = Amount::from_sat(2_000);
        let tx1 = wallet.send_self(&node, fee1).await?;
        let (height, tip) = node.tip().await?;

        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let mut rx = ipc::spawn(
            ipc_config(&socket),
            Policy::default(),
            &tracker,
            shutdown.clone(),
        )
        .await?;

        // The first template: on the node's tip, with the transaction and its bytes.
        let first = rx.borrow_and_update().clone();
        assert_eq!(
            first.prev_hash, tip,
            "first template builds on the node's tip"
        );
        assert_eq!(u64::from(first.height), height + 1);
        assert_eq!(first.kind, TemplateKind::Full);
        assert_eq!(first.network, Network::Regtest);
        let pos = txids(&first)
            .iter()
            .position(|t| *t == tx1)
            .expect("the mempool transaction is in the first template");
        let raw: String = node
            .rpc_as("getrawtransaction", json!([tx1.to_string()]))
            .await?;
        assert_eq!(
            hex::encode(&first.txs[pos].data),
            raw,
            "the template carries the transaction's full serialization"
        );
        let decoded: Transaction = bitcoin::consensus::deserialize(&first.txs[pos].data)?;
        assert_eq!(first.txs[pos].wtxid, decoded.compute_wtxid());
        assert_eq!(first.txs[pos].weight, decoded.weight().to_wu());
        assert!(first.txs[pos].fee.is_none() && first.txs[pos].depends.is_empty());
        let subsidy = template_provider::node::block_subsidy(Network::Regtest, first.height);
        assert_eq!(
            first.coinbase_value,
            subsidy + fee1,
            "coinbase value is the subsidy plus the template's fees"
        );
        assert!(first.witness_commitment.is_some());

        // Nothing changes at the node, so nothing is published: no timer refreshes templates.
        assert!(
            next_template(&mut rx, Duration::from_millis(1500))
                .await
                .is_none(),
            "a template came without any change at the node"
        );

        // A new tip: its template arrives on its own (we only wait on the channel).
        let asked = Instant::now();
        let mined = node.mine_to(1, TestWallet::new().address()).await?;
        let on_tip = next_template(&mut rx, TIP_DEADLINE)
            .await
            .ok_or_else(|| anyhow::anyhow!("no template on the new tip within {TIP_DEADLINE:?}"))?;
        let latency = asked.elapsed();
        eprintln!(
            "generatetoaddress 1 -> template {} on the new tip {} after {latency:?}",
            on_tip.id, mined[0]
        );
        assert_eq!(
            on_tip.prev_hash, mined[0],
            "the template builds on the new tip"
        );
        assert_eq!(on_tip.height, first.height + 1);
        assert!(on_tip.id > first.id, "template ids increase");
        assert!(
            !txids(&on_tip).contains(&tx1),
            "the mined transaction left the template"
        );

        // A transaction paying more than the fee threshold brings a same-tip update (pushed by
        // the node's waitNext, no faster than the 1 s minimum interval).
        let fee2 = Amount::from_sat(5_000);
        let tx2 = wallet.send_self(&node, fee2).await?;
        let with_tx2 = template_where(&mut rx, Duration::from_secs(15), |t| {
            txids(t).contains(&tx2)
        })
        .await?;
        assert_eq!(with_tx2.prev_hash, mined[0]);
        assert_eq!(
            with_tx2.coinbase_value,
            template_provider::node::block_subsidy(Network::Regtest, with_tx2.height) + fee2
        );

        // A block from the IPC template, submitted over RPC: accepted, with the transaction.
        let payout = wallet.script_pubkey().clone();
        let (hash, block) = mine_block(&with_tx2, &payout)?;
        let verdict = node
            .rpc("submitblock", json!([hex::encode(&block)]))
            .await?;
        assert_eq!(
            verdict,
            Value::Null,
            "the node accepts the block built from the IPC template"
        );
        let (new_height, new_tip) = node.tip().await?;
        assert_eq!((new_height, new_tip), (u64::from(with_tx2.height), hash));
        let b: Block = node.block(&hash).await?;
        assert!(
            b.txdata.iter().any(|t| t.compute_txid() == tx2),
            "the transaction is in the accepted block"
        );

        // Our own block is a new tip too.
        let after = template_where(&mut rx, TIP_DEADLINE, |t| t.prev_hash == hash).await?;
        assert_eq!(after.height, with_tx2.height + 1);

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(15), tracker.wait())
            .await
            .map_err(|_| anyhow::anyhow!("IPC backend did not stop"))?;
        Ok(())
    })
    .await
}

/// The IPC interface does not report fees, so a policy that must remove a transaction cannot
/// fix the coinbase value: such a template is refused (at start: an error; later: nothing new
/// published), never mined unfiltered. Templates the policy leaves whole flow as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_cannot_be_honoured_is_never_ignored() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::BitcoinNodeIpc).await?;
        let socket = node.ipc_socket().expect("an IPC node has a socket");
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 110).await?;
        let fee = Amount::from_sat(4_000);
        let present = wallet.send_self(&node, fee).await?;

        // At start: the first template holds an excluded transaction.
        let policy = Policy::new().with_excluded_txid(present);
        let err = ipc::spawn(
            ipc_config(&socket),
            policy,
            &TaskTracker::new(),
            CancellationToken::new(),
        )
        .await
        .expect_err("the policy cannot be applied without fees");
        assert!(matches!(err, IpcError::Policy(_)), "{err:?}");
        assert!(
            err.to_string().contains(&present.to_string()),
            "the error names the transaction: {err}"
        );

        // Running: a transaction excluded by the farm enters the mempool later.
        node.mine_to(1, TestWallet::new().address()).await?;
        let coin = wallet
            .spendable(&node)
            .await?
            .into_iter()
            .find(|u| u.height.is_some())
            .expect("a confirmed coin");
        let late = wallet.build_tx(
            &[coin.outpoint],
            &[(wallet.script_pubkey().clone(), coin.value - fee)],
            fee,
        )?;
        let late_txid = late.compute_txid();
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let policy = Policy::new().with_excluded_txid(late_txid);
        let mut rx = ipc::spawn(ipc_config(&socket), policy, &tracker, shutdown.clone()).await?;
        let first = rx.borrow_and_update().clone();
        assert!(first.txs.is_empty());
        // A second client without the policy shows what the node offers.
        let mut unfiltered = ipc::spawn(
            ipc_config(&socket),
            Policy::default(),
            &tracker,
            shutdown.clone(),
        )
        .await?;
        wallet.broadcast(&node, &late).await?;
        // The node offers a template with it (a fee update after the 1 s interval) ...
        template_where(&mut unfiltered, Duration::from_secs(10), |t| {
            txids(t).contains(&late_txid)
        })
        .await?;
        // ... which the farm's backend refused: nothing new was published.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !rx.has_changed()?,
            "a template with the excluded transaction was published"
        );
        assert_eq!(rx.borrow().id, first.id);
        // Someone else mines it: the next tip's template no longer needs filtering.
        let mined = node.mine_to(1, TestWallet::new().address()).await?;
        let next = template_where(&mut rx, TIP_DEADLINE, |t| t.prev_hash == mined[0]).await?;
        assert!(!txids(&next).contains(&late_txid));

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(15), tracker.wait())
            .await
            .map_err(|_| anyhow::anyhow!("IPC backend did not stop"))?;
        Ok(())
    })
    .await
}

/// No node at the socket: a clear error naming it, at once.
#[tokio::test]
async fn a_missing_socket_is_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("regtest/node.sock");
    let started = Instant::now();
    let err = ipc::spawn(
        ipc_config(&socket),
        Policy::default(),
        &TaskTracker::new(),
        CancellationToken::new(),
    )
    .await
    .expect_err("nothing listens there");
    assert!(matches!(err, IpcError::NoSocket { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&socket.display().to_string()),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

/// The node goes away: the last template stays, and templates resume from the node that comes
/// back on the same socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_keeps_the_last_template_and_reconnects() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let sockets = tempfile::tempdir()?;
        let socket = sockets.path().join("tp.sock");
        let bind = format!("-ipcbind=unix:{}", socket.display());
        let first_node = BitcoinNode::start_with_args(NodeKind::BitcoinNodeIpc, &[&bind]).await?;
        first_node.mine_to(110, TestWallet::new().address()).await?;
        let (_, first_tip) = first_node.tip().await?;

        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let mut rx = ipc::spawn(
            ipc_config(&socket),
            Policy::default(),
            &tracker,
            shutdown.clone(),
        )
        .await?;
        let before = rx.borrow_and_update().clone();
        assert_eq!(before.prev_hash, first_tip);

        drop(first_node); // killed: the connection is lost
        assert!(
            next_template(&mut rx, Duration::from_secs(1))
                .await
                .is_none(),
            "nothing replaces the last template while the node is gone"
        );
        assert_eq!(rx.borrow().id, before.id);

        let second_node = BitcoinNode::start_with_args(NodeKind::BitcoinNodeIpc, &[&bind]).await?;
        second_node
            .mine_to(120, TestWallet::new().address())
            .await?;
        let (_, second_tip) = second_node.tip().await?;
        let resumed = template_where(&mut rx, Duration::from_secs(30), |t| {
            t.prev_hash == second_tip
        })
        .await?;
        assert_eq!(resumed.height, 121);
        assert!(
            resumed.id > before.id,
            "ids keep increasing across connections"
        );

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(15), tracker.wait())
            .await
            .map_err(|_| anyhow::anyhow!("IPC backend did not stop"))?;
        Ok(())
    })
    .await
}

fn miner(
    addr: std::net::SocketAddr,
    dialect: Dialect,
    shutdown: &CancellationToken,
) -> MinerHandle {
    sv1_miner::spawn(
        MinerConfig::new(addr, format!("ipc.{dialect}"), dialect)
            .with_suggest_difficulty(5e-6)
            .with_max_hashrate(25_000.0),
        shutdown.clone(),
    )
}

/// Our template provider on the IPC backend, jd-proxy as its client: blocks mined through it
/// are accepted, with the mempool transaction in one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jd_proxy_mines_through_the_provider_on_ipc() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::BitcoinNodeIpc).await?;
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 110).await?;
        let tp_dir = tempfile::tempdir()?;
        let keys = AuthorityKeypair::generate();
        let raw = RawProviderConfig {
            network: Some("regtest".into()),
            node: RawNode {
                rpc_url: Some(node.rpc_url()),
                cookie_file: Some(node.cookie_file()),
                backend: Some("ipc".into()),
                ipc_socket: node.ipc_socket(),
                fee_threshold_sat: Some(1_000),
                min_template_interval_secs: Some(1),
                ..Default::default()
            },
            server: RawServer {
                listen: Some("127.0.0.1:0".into()),
                authority_public_key: Some(keys.public().to_string()),
                authority_secret_key: Some(keys.secret_string()),
                blocks_dir: Some(tp_dir.path().to_path_buf()),
                ..Default::default()
            },
            policy: Default::default(),
        };
        let provider = Provider::start(ProviderConfig::from_raw(raw)?).await?;

        let payout = TestWallet::new();
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, payout.address(), dir.path());
        raw.template_provider = Some(RawTemplateProvider {
            address: Some(provider.local_addr().to_string()),
            authority_public_key: Some(keys.public().to_string()),
        });
        let proxy = start_proxy(raw).await?;
        let (start, _) = node.tip().await?;
        let txid = wallet.send_self(&node, Amount::from_sat(3_000)).await?;

        let shutdown = CancellationToken::new();
        let _miners: Vec<MinerHandle> = [Dialect::Bitaxe, Dialect::Cgminer]
            .iter()
            .map(|&d| miner(proxy.local_addr(), d, &shutdown))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut blocks, mut mined_tx) = (0, false);
        while Instant::now() < deadline && !(mined_tx && blocks >= 2) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (tip, _) = node.tip().await?;
            blocks = tip - start;
            for h in start + 1..=tip {
                let hash: BlockHash = node.rpc_as("getblockhash", json!([h])).await?;
                let b = node.block(&hash).await?;
                assert_eq!(
                    b.txdata[0].output[0].script_pubkey,
                    *payout.script_pubkey(),
                    "block {h} was mined through the proxy"
                );
                mined_tx |= b.txdata.iter().any(|t| t.compute_txid() == txid);
            }
        }
        assert!(
            blocks >= 2,
            "blocks mined through the IPC-fed provider were accepted: {blocks}"
        );
        assert!(
            mined_tx,
            "the mempool transaction reached a block through IPC templates"
        );
        assert!(
            std::fs::read_dir(tp_dir.path())?.count() >= 1,
            "the provider kept the blocks it submitted"
        );
        shutdown.cancel();
        proxy.shutdown().await;
        provider.shutdown().await;
        Ok(())
    })
    .await
}

/// `[node] backend = "ipc"` needs its socket, and a misspelt backend is refused.
#[test]
fn ipc_backend_config_is_checked() {
    let err = RawNode {
        backend: Some("ipc".into()),
        ..Default::default()
    }
    .resolve(Network::Regtest)
    .unwrap_err();
    assert_eq!(err.key, "node.ipc_socket");
    let err = RawNode {
        backend: Some("capnp".into()),
        ..Default::default()
    }
    .resolve(Network::Regtest)
    .unwrap_err();
    assert_eq!(err.key, "node.backend");
    let ok = RawNode {
        backend: Some("ipc".into()),
        ipc_socket: Some("/x/node.sock".into()),
        ..Default::default()
    }
    .resolve(Network::Regtest)
    .unwrap();
    match ok.backend {
        template_provider::config::NodeBackend::Ipc(c) => {
            assert_eq!(c.socket, Path::new("/x/node.sock"));
            assert_eq!(c.fee_threshold_sat, 1_000);
        }
        other => panic!("expected the IPC backend, got {other:?}"),
    }
}
