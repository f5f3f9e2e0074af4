//! The farm's transaction policy on a real template from a regtest Bitcoin Core: the excluded
//! transactions and their descendants are gone, and the node itself says the filtered block is
//! valid (`getblocktemplate` in proposal mode checks everything but proof of work).

use std::time::Duration;

use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::{Amount, Network, ScriptBuf, Txid};
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::{build_block, init_tracing, mine_block, txids, with_timeout};
use integration_tests::wallet::TestWallet;
use mining_types::coinbase::witness_commitment_script;
use mining_types::Template;
use serde_json::{json, Value};
use template_provider::policy::{Policy, PolicyConfig, MAX_TX_WEIGHT};
use template_provider::{NodeAuth, RpcClient, TemplateSource, TemplateSourceConfig};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// The coinbase tag of the blocks this test builds.
const TAG: &[u8] = b"/policy-test/";

/// The mempool: P (to exclude) and its child C, D with a 60-byte OP_RETURN, and A, B.
struct Mempool {
    p: Txid,
    c: Txid,
    d: Txid,
    a: Txid,
    b: Txid,
}

impl Mempool {
    fn all(&self) -> [(&'static str, Txid); 5] {
        [
            ("P", self.p),
            ("C", self.c),
            ("D", self.d),
            ("A", self.a),
            ("B", self.b),
        ]
    }

    /// What the farm's policy removes.
    fn removed(&self) -> [(&'static str, Txid); 3] {
        [("P", self.p), ("C", self.c), ("D", self.d)]
    }
}

/// The whole block for `t`, paying `payout`, with nonce 0.
fn block(t: &Template, payout: &ScriptBuf) -> anyhow::Result<Vec<u8>> {
    build_block(t, payout, TAG, 0)
}

/// The node's verdict on a block proposal: `None` when valid, else its reason.
async fn propose(node: &BitcoinNode, block: &[u8]) -> anyhow::Result<Option<String>> {
    let reply = node
        .rpc_with_timeout(
            "getblocktemplate",
            json!([{"mode": "proposal", "data": hex::encode(block), "rules": ["segwit"]}]),
            Some(RPC_TIMEOUT),
        )
        .await?;
    Ok(match reply {
        Value::Null => None,
        Value::String(reason) => Some(reason),
        other => Some(other.to_string()),
    })
}

fn op_return(len: usize) -> anyhow::Result<ScriptBuf> {
    let data = PushBytesBuf::try_from(vec![0x5au8; len])?;
    Ok(Builder::new()
        .push_opcode(OP_RETURN)
        .push_slice(data)
        .into_script())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_templates_are_valid_blocks_for_the_node() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 120).await?;
        let payout = wallet.script_pubkey().clone();
        let txs = fill_mempool(&node, &mut wallet).await?;
        let template = node_template(&node, &txs).await?;

        // The unfiltered template is a valid block.
        let verdict = propose(&node, &block(&template, &payout)?).await?;
        assert_eq!(verdict, None, "node's own template as a block proposal");

        let (filtered, kept) = apply_the_farms_policy(&template, &txs)?;
        let verdict = propose(&node, &block(&filtered, &payout)?).await?;
        assert_eq!(verdict, None, "filtered template as a block proposal");
        check_the_node_catches_stale_fields(&node, &template, &filtered, &payout).await?;

        // A reserve so large that nothing fits: an empty but valid block.
        let empty = Policy::new()
            .with_weight_reserve(MAX_TX_WEIGHT)
            .apply(&template)?
            .expect("every transaction dropped");
        assert!(empty.txs.is_empty() && empty.merkle_path.is_empty());
        assert_eq!(
            empty.coinbase_value,
            template.coinbase_value - template.fees()
        );
        let verdict = propose(&node, &block(&empty, &payout)?).await?;
        assert_eq!(verdict, None, "empty template as a block proposal");

        mine_the_filtered_block(&node, &filtered, &payout, &kept, &txs).await
    })
    .await
}

/// Puts P, its child C, D (with a 60-byte OP_RETURN), A and B in the node's mempool.
async fn fill_mempool(node: &BitcoinNode, wallet: &mut TestWallet) -> anyhow::Result<Mempool> {
    let fee = Amount::from_sat(2_000);
    let p = wallet.send_self(node, Amount::from_sat(3_000)).await?;
    let c = wallet.send_child(node, p, fee).await?;
    let coin = wallet
        .spendable(node)
        .await?
        .into_iter()
        .find(|u| u.height.is_some())
        .expect("a confirmed coin");
    let data_script = op_return(60)?;
    let d_tx = wallet.build_tx(
        &[coin.outpoint],
        &[(data_script, Amount::ZERO)],
        Amount::from_sat(4_000),
    )?;
    let d = wallet.broadcast(node, &d_tx).await?;
    let a = wallet.send_self(node, Amount::from_sat(5_000)).await?;
    let b = wallet.send_self(node, Amount::from_sat(6_000)).await?;
    let txs = Mempool { p, c, d, a, b };
    let mempool: Vec<Txid> = node.rpc_as("getrawmempool", json!([])).await?;
    for (name, txid) in txs.all() {
        assert!(mempool.contains(&txid), "{name} {txid} is in the mempool");
    }
    Ok(txs)
}

/// The node's own template: every transaction, C after the P it depends on, and the witness
/// commitment we would compute.
async fn node_template(node: &BitcoinNode, txs: &Mempool) -> anyhow::Result<Template> {
    let source = TemplateSource::new(
        RpcClient::new(node.rpc_url(), NodeAuth::CookieFile(node.cookie_file())),
        TemplateSourceConfig {
            network: Network::Regtest,
            ..Default::default()
        },
    );
    let (template, _) = tokio::time::timeout(RPC_TIMEOUT, source.fetch_template(None))
        .await
        .map_err(|_| anyhow::anyhow!("getblocktemplate timed out"))??;
    let all = txids(&template);
    for (name, txid) in txs.all() {
        assert!(
            all.contains(&txid),
            "{name} {txid} is in the node's template"
        );
    }
    let c_pos = all.iter().position(|t| *t == txs.c).expect("C");
    let p_pos = all.iter().position(|t| *t == txs.p).expect("P");
    assert_eq!(template.txs[c_pos].depends, vec![p_pos], "C depends on P");
    // Our commitment computation agrees with Core's on the unfiltered template.
    assert_eq!(
        template.witness_commitment,
        Some(witness_commitment_script(
            template.txs.iter().map(|t| t.wtxid)
        )),
        "commitment recomputed over the node's transactions equals the node's own"
    );
    Ok(template)
}

/// The farm's policy: no P, and at most 40 bytes of OP_RETURN per transaction. Returns the
/// filtered template and the transactions it kept.
fn apply_the_farms_policy(
    template: &Template,
    txs: &Mempool,
) -> anyhow::Result<(Template, Vec<Txid>)> {
    let policy = Policy::try_from(PolicyConfig {
        exclude_txids: vec![txs.p.to_string()],
        max_datacarrier_bytes: Some(40),
        ..Default::default()
    })?;
    let outcome = policy.apply_with_report(template)?;
    let filtered = outcome.template.expect("the policy removes transactions");
    let kept = txids(&filtered);
    for (name, txid) in txs.removed() {
        assert!(!kept.contains(&txid), "{name} {txid} is filtered out");
    }
    for (name, txid) in [("A", txs.a), ("B", txs.b)] {
        assert!(kept.contains(&txid), "{name} {txid} is kept");
    }
    let removed_fees: Amount = outcome.removed.iter().filter_map(|r| r.fee).sum();
    assert_eq!(removed_fees, Amount::from_sat(3_000 + 2_000 + 4_000));
    assert_eq!(
        filtered.coinbase_value,
        template.coinbase_value - removed_fees
    );
    assert_eq!(
        (
            filtered.id,
            filtered.height,
            filtered.prev_hash,
            filtered.bits
        ),
        (
            template.id,
            template.height,
            template.prev_hash,
            template.bits
        )
    );
    Ok((filtered, kept))
}

/// Controls: the node does catch a stale commitment, merkle path or coinbase value.
async fn check_the_node_catches_stale_fields(
    node: &BitcoinNode,
    template: &Template,
    filtered: &Template,
    payout: &ScriptBuf,
) -> anyhow::Result<()> {
    let mut stale = filtered.clone();
    stale.witness_commitment = template.witness_commitment.clone();
    let verdict = propose(node, &block(&stale, payout)?).await?;
    assert_eq!(verdict.as_deref(), Some("bad-witness-merkle-match"));
    let mut stale = filtered.clone();
    stale.merkle_path = template.merkle_path.clone();
    let verdict = propose(node, &block(&stale, payout)?).await?;
    assert_eq!(verdict.as_deref(), Some("bad-txnmrklroot"));
    let mut stale = filtered.clone();
    stale.coinbase_value = template.coinbase_value;
    let verdict = propose(node, &block(&stale, payout)?).await?;
    assert_eq!(verdict.as_deref(), Some("bad-cb-amount"));
    Ok(())
}

/// Finally mines the filtered block for real: the node takes it, it holds exactly the kept
/// transactions, and the removed ones stay in the mempool.
async fn mine_the_filtered_block(
    node: &BitcoinNode,
    filtered: &Template,
    payout: &ScriptBuf,
    kept: &[Txid],
    txs: &Mempool,
) -> anyhow::Result<()> {
    let (_, block_bytes) = mine_block(filtered, payout, TAG)?;
    let verdict = node
        .rpc_with_timeout(
            "submitblock",
            json!([hex::encode(&block_bytes)]),
            Some(RPC_TIMEOUT),
        )
        .await?;
    assert_eq!(
        verdict,
        Value::Null,
        "submitblock accepts the filtered block"
    );
    let (height, tip) = node.tip().await?;
    assert_eq!(height, u64::from(filtered.height));
    let mined = node.block(&tip).await?;
    let mined_txids: Vec<Txid> = mined.txdata[1..]
        .iter()
        .map(bitcoin::Transaction::compute_txid)
        .collect();
    assert_eq!(
        mined_txids, kept,
        "the block holds exactly the kept transactions"
    );
    let mempool: Vec<Txid> = node.rpc_as("getrawmempool", json!([])).await?;
    for (name, txid) in txs.removed() {
        assert!(
            mempool.contains(&txid),
            "{name} {txid} stays in the mempool"
        );
    }
    Ok(())
}
