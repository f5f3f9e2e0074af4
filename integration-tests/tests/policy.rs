//! The farm's transaction policy on a real template from a regtest Bitcoin Core: the excluded
//! transactions and their descendants are gone, and the node itself says the filtered block is
//! valid (`getblocktemplate` in proposal mode checks everything but proof of work).

use std::time::Duration;

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::{Amount, Block, Network, ScriptBuf, Txid};
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::proxy::{init_tracing, with_timeout};
use integration_tests::wallet::TestWallet;
use serde_json::{json, Value};
use template_provider::template::merkle;
use template_provider::template::policy::{
    witness_commitment_script, Policy, PolicyConfig, MAX_TX_WEIGHT,
};
use template_provider::{
    CoinbaseConfig, CoinbaseSplit, NodeAuth, RpcClient, Template, TemplateSource,
    TemplateSourceConfig,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const EXTRANONCE: [u8; 8] = [0u8; 8];

/// The whole block for `t`, paying `payout`, with `nonce`.
fn build_block(t: &Template, payout: &ScriptBuf, nonce: u32) -> anyhow::Result<Vec<u8>> {
    let config = CoinbaseConfig {
        payout_script: payout.clone(),
        tag: b"/policy-test/".to_vec(),
    };
    let coinbase = CoinbaseSplit::build(t, &config, EXTRANONCE.len())?;
    let header = Header {
        version: BlockVersion::from_consensus(t.version),
        prev_blockhash: t.prev_hash,
        merkle_root: merkle::root_from_path(coinbase.txid(&[&EXTRANONCE]), &t.merkle_path),
        time: t.cur_time,
        bits: t.bits,
        nonce,
    };
    Ok(t.assemble_block(&header, &coinbase, &EXTRANONCE))
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

fn txids(t: &Template) -> Vec<Txid> {
    t.txs.iter().map(|x| x.txid).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_templates_are_valid_blocks_for_the_node() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 120).await?;
        let payout = wallet.script_pubkey().clone();

        // The mempool: P (to exclude) and its child C, D with a 60-byte OP_RETURN, and A, B.
        let fee = Amount::from_sat(2_000);
        let p = wallet.send_self(&node, Amount::from_sat(3_000)).await?;
        let p_out = wallet
            .utxos()
            .iter()
            .find(|u| u.outpoint.txid == p)
            .cloned()
            .expect("P pays the wallet");
        let c = wallet
            .send_with_inputs(
                &node,
                &[p_out.outpoint],
                &[(payout.clone(), p_out.value - fee)],
                fee,
            )
            .await?;
        let coin = wallet
            .spendable(&node)
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
        let d = wallet.broadcast(&node, &d_tx).await?;
        let a = wallet.send_self(&node, Amount::from_sat(5_000)).await?;
        let b = wallet.send_self(&node, Amount::from_sat(6_000)).await?;
        let mempool: Vec<Txid> = node.rpc_as("getrawmempool", json!([])).await?;
        for (name, txid) in [("P", p), ("C", c), ("D", d), ("A", a), ("B", b)] {
            assert!(mempool.contains(&txid), "{name} {txid} is in the mempool");
        }

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
        for (name, txid) in [("P", p), ("C", c), ("D", d), ("A", a), ("B", b)] {
            assert!(
                all.contains(&txid),
                "{name} {txid} is in the node's template"
            );
        }
        let c_pos = all.iter().position(|t| *t == c).expect("C");
        let p_pos = all.iter().position(|t| *t == p).expect("P");
        assert_eq!(template.txs[c_pos].depends, vec![p_pos], "C depends on P");
        // Our commitment computation agrees with Core's on the unfiltered template.
        assert_eq!(
            template.witness_commitment,
            Some(witness_commitment_script(
                template.txs.iter().map(|t| t.wtxid)
            )),
            "commitment recomputed over the node's transactions equals the node's own"
        );

        // The unfiltered template is a valid block.
        let verdict = propose(&node, &build_block(&template, &payout, 0)?).await?;
        assert_eq!(verdict, None, "node's own template as a block proposal");

        // The farm's policy: no P, and at most 40 bytes of OP_RETURN per transaction.
        let policy = Policy::try_from(PolicyConfig {
            exclude_txids: vec![p.to_string()],
            max_datacarrier_bytes: Some(40),
            ..Default::default()
        })?;
        let outcome = policy.apply_with_report(&template)?;
        let filtered = outcome.template.expect("the policy removes transactions");
        let kept = txids(&filtered);
        for (name, txid) in [("P", p), ("C", c), ("D", d)] {
            assert!(!kept.contains(&txid), "{name} {txid} is filtered out");
        }
        for (name, txid) in [("A", a), ("B", b)] {
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
        let filtered_block = build_block(&filtered, &payout, 0)?;
        let verdict = propose(&node, &filtered_block).await?;
        assert_eq!(verdict, None, "filtered template as a block proposal");

        // Controls: the node does catch a stale commitment, merkle path or coinbase value.
        let mut stale = filtered.clone();
        stale.witness_commitment = template.witness_commitment.clone();
        let verdict = propose(&node, &build_block(&stale, &payout, 0)?).await?;
        assert_eq!(verdict.as_deref(), Some("bad-witness-merkle-match"));
        let mut stale = filtered.clone();
        stale.merkle_path = template.merkle_path.clone();
        let verdict = propose(&node, &build_block(&stale, &payout, 0)?).await?;
        assert_eq!(verdict.as_deref(), Some("bad-txnmrklroot"));
        let mut stale = filtered.clone();
        stale.coinbase_value = template.coinbase_value;
        let verdict = propose(&node, &build_block(&stale, &payout, 0)?).await?;
        assert_eq!(verdict.as_deref(), Some("bad-cb-amount"));

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
        let verdict = propose(&node, &build_block(&empty, &payout, 0)?).await?;
        assert_eq!(verdict, None, "empty template as a block proposal");

        // Finally mine the filtered block for real (regtest proof of work takes a few tries).
        let target = filtered.network_target();
        let mut nonce = 0u32;
        let block_bytes = loop {
            let bytes = build_block(&filtered, &payout, nonce)?;
            let block: Block = bitcoin::consensus::deserialize(&bytes)?;
            if block.header.validate_pow(target).is_ok() {
                break bytes;
            }
            nonce += 1;
        };
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
        let mined_txids: Vec<Txid> = mined.txdata[1..].iter().map(|t| t.compute_txid()).collect();
        assert_eq!(
            mined_txids, kept,
            "the block holds exactly the kept transactions"
        );
        let mempool: Vec<Txid> = node.rpc_as("getrawmempool", json!([])).await?;
        for (name, txid) in [("P", p), ("C", c), ("D", d)] {
            assert!(
                mempool.contains(&txid),
                "{name} {txid} stays in the mempool"
            );
        }
        Ok(())
    })
    .await
}
