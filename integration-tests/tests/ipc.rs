//! The Bitcoin Core IPC backend on a real `bitcoin-node -ipcbind=unix` (v31): templates with
//! their transactions, new tips pushed by the node (no polling), blocks built from them accepted
//! by the node, a lost connection survived, and the template provider serving jd-proxy from it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Amount, Block, BlockHash, Network, Transaction, Txid};
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::{
    block_at, init_tracing, ipc_provider_config, mine_block, provider_link, solo_config,
    start_provider, start_proxy, stop_tasks, txids, with_timeout, MinerSpec,
};
use integration_tests::wallet::TestWallet;
use mining_types::{Template, TemplateKind};
use serde_json::{json, Value};
use sv1_miner::{Dialect, MinerHandle};
use sv2_wire::AuthorityKeypair;
use template_provider::config::RawNode;
use template_provider::node::ipc::{self, IpcConfig, IpcError};
use template_provider::policy::Policy;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const TEST_TIMEOUT: Duration = Duration::from_secs(110);
/// A new tip must reach us this fast.
const TIP_DEADLINE: Duration = Duration::from_secs(2);
/// How long the IPC backend gets to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The coinbase tag of the blocks this test builds.
const TAG: &[u8] = b"/ipc-test/";
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "ipc",
    difficulty: 5e-6,
    hashrate: 25_000.0,
};

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
        check_first_template(&node, &first, tx1, fee1).await?;

        // Nothing changes at the node, so nothing is published: no timer refreshes templates.
        assert!(
            next_template(&mut rx, Duration::from_millis(1500))
                .await
                .is_none(),
            "a template came without any change at the node"
        );

        let new_tip = template_on_a_new_tip(&node, &mut rx, &first, tx1).await?;

        // A transaction paying more than the fee threshold brings a same-tip update (pushed by
        // the node's waitNext, no faster than the 1 s minimum interval).
        let fee2 = Amount::from_sat(5_000);
        let tx2 = wallet.send_self(&node, fee2).await?;
        let with_tx2 = template_where(&mut rx, Duration::from_secs(15), |t| {
            txids(t).contains(&tx2)
        })
        .await?;
        assert_eq!(with_tx2.prev_hash, new_tip);
        assert_eq!(
            with_tx2.coinbase_value,
            mining_types::block_subsidy(Network::Regtest, with_tx2.height) + fee2
        );

        let hash = submit_block_on(&node, &with_tx2, &wallet, tx2).await?;
        // Our own block is a new tip too.
        let after = template_where(&mut rx, TIP_DEADLINE, |t| t.prev_hash == hash).await?;
        assert_eq!(after.height, with_tx2.height + 1);

        stop_tasks(&shutdown, &tracker, STOP_TIMEOUT, "IPC backend").await?;
        Ok(())
    })
    .await
}

/// The first template holds `tx1` (paying `fee1`) with its data, and is complete.
async fn check_first_template(
    node: &BitcoinNode,
    first: &Template,
    tx1: Txid,
    fee1: Amount,
) -> anyhow::Result<()> {
    assert_eq!(first.kind, TemplateKind::Full);
    assert_eq!(first.network, Network::Regtest);
    let pos = txids(first)
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
    let subsidy = mining_types::block_subsidy(Network::Regtest, first.height);
    assert_eq!(
        first.coinbase_value,
        subsidy + fee1,
        "coinbase value is the subsidy plus the template's fees"
    );
    assert!(first.witness_commitment.is_some());
    Ok(())
}

/// A new tip: its template arrives on its own (we only wait on the channel), without `tx1`.
/// Returns the new tip.
async fn template_on_a_new_tip(
    node: &BitcoinNode,
    rx: &mut watch::Receiver<Arc<Template>>,
    first: &Template,
    tx1: Txid,
) -> anyhow::Result<BlockHash> {
    let asked = Instant::now();
    let mined = node.mine_to(1, TestWallet::new().address()).await?;
    let on_tip = next_template(rx, TIP_DEADLINE)
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
    Ok(mined[0])
}

/// A block from the IPC template, submitted over RPC: accepted, with the transaction `tx`.
/// Returns its hash.
async fn submit_block_on(
    node: &BitcoinNode,
    t: &Template,
    wallet: &TestWallet,
    tx: Txid,
) -> anyhow::Result<BlockHash> {
    let payout = wallet.script_pubkey().clone();
    let (hash, block) = mine_block(t, &payout, TAG)?;
    let verdict = node
        .rpc("submitblock", json!([hex::encode(&block)]))
        .await?;
    assert_eq!(
        verdict,
        Value::Null,
        "the node accepts the block built from the IPC template"
    );
    let (new_height, new_tip) = node.tip().await?;
    assert_eq!((new_height, new_tip), (u64::from(t.height), hash));
    let b: Block = node.block(&hash).await?;
    assert!(
        b.txdata.iter().any(|t| t.compute_txid() == tx),
        "the transaction is in the accepted block"
    );
    Ok(hash)
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

        stop_tasks(&shutdown, &tracker, STOP_TIMEOUT, "IPC backend").await?;
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

        stop_tasks(&shutdown, &tracker, STOP_TIMEOUT, "IPC backend").await?;
        Ok(())
    })
    .await
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
        let provider = start_provider(ipc_provider_config(&node, &keys, tp_dir.path())).await?;

        let payout = TestWallet::new();
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, payout.address(), dir.path());
        raw.template_provider = Some(provider_link(&provider, keys.public()));
        let proxy = start_proxy(raw).await?;
        let (start, _) = node.tip().await?;
        let txid = wallet.send_self(&node, Amount::from_sat(3_000)).await?;

        let shutdown = CancellationToken::new();
        let _miners: Vec<MinerHandle> = MINERS.spawn_each(
            proxy.local_addr(),
            &[Dialect::Bitaxe, Dialect::Cgminer],
            &shutdown,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut blocks, mut mined_tx) = (0, false);
        while Instant::now() < deadline && !(mined_tx && blocks >= 2) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (tip, _) = node.tip().await?;
            blocks = tip - start;
            for h in start + 1..=tip {
                let b = block_at(&node, h).await?;
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
            integration_tests::support::journaled_blocks(tp_dir.path()) >= 1,
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
    assert_eq!(err.0[0].key, "node.ipc_socket");
    let err = RawNode {
        backend: Some("capnp".into()),
        ..Default::default()
    }
    .resolve(Network::Regtest)
    .unwrap_err();
    assert_eq!(err.0[0].key, "node.backend");
    let ok = RawNode {
        backend: Some("ipc".into()),
        ipc_socket: Some("/x/node.sock".into()),
        ..Default::default()
    }
    .resolve(Network::Regtest)
    .unwrap();
    match ok.backend {
        template_provider::config::BackendKind::Ipc(c) => {
            assert_eq!(c.socket, Path::new("/x/node.sock"));
            assert_eq!(c.fee_threshold_sat, 1_000);
        }
        other @ template_provider::config::BackendKind::Rpc => {
            panic!("expected the IPC backend, got {other:?}")
        }
    }
}
