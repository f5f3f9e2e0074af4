//! Checks of the test harness itself: a real regtest node, the key-holding wallet, mempool and mining.
//! Needs the Bitcoin Core binaries (`scripts/bitcoin-core.sh` or `JD_BITCOIN_BIN_DIR`).

use std::collections::HashSet;
use std::time::Duration;

use bitcoin::{Amount, Txid};
use integration_tests::node::{BitcoinNode, NodeKind, RpcError};
use integration_tests::support::bounded;
use integration_tests::wallet::TestWallet;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_txs_reach_mempool_and_block() {
    bounded(Duration::from_secs(180), async {
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 101).await?;
        let (height, tip) = node.tip().await?;
        assert_eq!(height, 101);
        assert_eq!(
            wallet.spendable(&node).await?.len(),
            2,
            "coinbases of blocks 1 and 2 are mature at tip 101"
        );

        let fee = Amount::from_sat(1_000);
        let other = TestWallet::new();
        // Parent: pays someone else, change back to us (unconfirmed).
        let parent = wallet
            .send_to(&node, other.script_pubkey(), Amount::from_btc(1.0)?, fee)
            .await?;
        let change = wallet
            .utxos()
            .iter()
            .find(|u| u.outpoint.txid == parent)
            .expect("parent change remembered")
            .outpoint;
        // Child: spends the parent's unconfirmed change.
        let child = wallet
            .send_with_inputs(
                &node,
                &[change],
                &[(other.script_pubkey().clone(), Amount::from_btc(2.0)?)],
                fee,
            )
            .await?;
        // Third: a self-payment from the other mature coinbase.
        let third = wallet.send_self(&node, fee).await?;

        let entry = node
            .rpc("getmempoolentry", json!([child.to_string()]))
            .await?;
        assert_eq!(
            entry["depends"],
            json!([parent.to_string()]),
            "child depends on parent"
        );

        let mempool: Vec<String> = node.rpc_as("getrawmempool", json!([])).await?;
        let mempool: HashSet<Txid> = mempool
            .iter()
            .map(|t| t.parse())
            .collect::<Result<_, _>>()?;
        let ours: HashSet<Txid> = [parent, child, third].into();
        assert_eq!(mempool, ours);

        let hashes = node.mine_to(1, other.address()).await?;
        assert_eq!(hashes.len(), 1);
        node.wait_for_height(102, Duration::from_secs(10)).await?;
        let block = node.block(&hashes[0]).await?;
        assert_eq!(block.header.prev_blockhash, tip);
        assert_eq!(node.tip().await?, (102, hashes[0]));
        let in_block: HashSet<Txid> = block
            .txdata
            .iter()
            .skip(1)
            .map(bitcoin::Transaction::compute_txid)
            .collect();
        assert_eq!(in_block, ours);
        assert!(block.check_merkle_root());
        let mempool: Vec<String> = node.rpc_as("getrawmempool", json!([])).await?;
        assert!(mempool.is_empty());

        // Confirmed change is spendable again.
        wallet.scan_blocks(&node, &hashes).await?;
        wallet
            .send_to(&node, other.script_pubkey(), Amount::from_btc(0.5)?, fee)
            .await?;

        // RPC errors carry the node's message and code.
        let err = node.rpc("nosuchmethod", json!([])).await.unwrap_err();
        let rpc = err.downcast_ref::<RpcError>().expect("an RpcError");
        assert_eq!(rpc.code, -32601);
        assert!(rpc.message.contains("Method not found"), "{rpc}");

        node.stop().await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_node_exposes_socket() {
    bounded(Duration::from_secs(120), async {
        let node = BitcoinNode::start(NodeKind::BitcoinNodeIpc).await?;
        let socket = node.ipc_socket().expect("IPC node has a socket path");
        assert_eq!(socket, node.datadir().join("regtest").join("node.sock"));
        assert!(socket.exists(), "{} missing", socket.display());
        let wallet = TestWallet::new();
        node.mine_to(3, wallet.address()).await?;
        assert_eq!(node.tip().await?.0, 3);
        let status = node.stop().await?;
        assert!(status.success(), "bitcoin-node exited with {status}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_kills_the_node() {
    fn shareable<T: Send + Sync>() {}
    shareable::<BitcoinNode>();
    shareable::<TestWallet>();
    bounded(Duration::from_secs(120), async {
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        assert!(node.ipc_socket().is_none());
        let pid = node.pid().expect("running");
        let datadir = node.datadir().to_path_buf();
        assert!(node.is_running());
        drop(node);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} survived drop"
        );
        if std::env::var("JD_KEEP_TEST_DIRS").as_deref() != Ok("1") {
            assert!(!datadir.exists(), "datadir not cleaned up");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failure_is_reported_with_logs() {
    bounded(Duration::from_secs(120), async {
        // Occupy a port and force the node onto it: every attempt clashes, and the error shows the logs.
        let busy = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = busy.local_addr()?.port();
        let arg = format!("-rpcport={port}");
        let err = BitcoinNode::start_with_args(NodeKind::Bitcoind, &[&arg])
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        eprintln!("{msg}");
        assert!(msg.contains("port clashes"), "{msg}");
        assert!(msg.contains("exited during startup"), "{msg}");
        assert!(msg.contains("RPC"), "{msg}");
        Ok(())
    })
    .await;
}
