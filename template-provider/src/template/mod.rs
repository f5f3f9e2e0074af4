//! Block templates as typed values: what the proxy turns into jobs and, once solved, into a block.

pub mod coinbase;
pub mod merkle;
pub mod policy;

use std::fmt;
use std::sync::Arc;

use bitcoin::consensus::encode::VarInt;
use bitcoin::consensus::Encodable;
use bitcoin::{
    block, Amount, BlockHash, CompactTarget, Network, ScriptBuf, Target, TxMerkleNode, Txid, Wtxid,
};

use self::coinbase::CoinbaseSplit;

/// A process-unique template number, increasing with time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemplateId(u64);

impl TemplateId {
    /// Wraps a raw id (the source hands them out in order).
    pub const fn new(raw: u64) -> Self {
        TemplateId(raw)
    }
    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether a template carries the node's transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Built by the proxy the moment a new tip is seen, before the node's template is ready:
    /// coinbase only, so miners stop wasting work on the old tip at once.
    Empty,
    /// The node's full template.
    Full,
    /// A pool's own job: only its merkle path is known here; the pool holds the transactions
    /// and propagates the blocks.
    Pool,
}

/// One transaction of a template, kept serialized: it is only ever copied into a block.
#[derive(Debug, Clone)]
pub struct TemplateTx {
    pub txid: Txid,
    pub wtxid: Wtxid,
    pub data: Vec<u8>,
    pub fee: Option<Amount>,
    pub weight: u64,
    /// 0-based positions in the template of the parents this transaction spends.
    pub depends: Vec<usize>,
}

/// What is known of the next block the moment a new tip appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextBlock {
    pub prev_hash: BlockHash,
    pub height: u32,
    pub bits: CompactTarget,
    /// Median time past of the tip, plus one.
    pub min_time: u32,
}

/// A block template: everything of a block but its coinbase's extranonce, ntime, nonce and
/// rolled version bits.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: TemplateId,
    pub kind: TemplateKind,
    pub network: Network,
    pub height: u32,
    pub prev_hash: BlockHash,
    pub version: i32,
    pub bits: CompactTarget,
    /// The earliest ntime the node accepts (median time past + 1).
    pub min_time: u32,
    pub cur_time: u32,
    /// Subsidy plus the fees of `txs`.
    pub coinbase_value: Amount,
    /// The BIP141 commitment output's script, when the block needs one.
    pub witness_commitment: Option<ScriptBuf>,
    /// Shared with every job made from this template.
    pub txs: Arc<Vec<TemplateTx>>,
    /// The coinbase's merkle branch.
    pub merkle_path: Vec<TxMerkleNode>,
}

impl Template {
    /// A coinbase-only template on a new tip, valid as long as `tip.bits` is right for the next
    /// block (the caller checks that).
    pub fn empty_on_tip(
        id: TemplateId,
        network: Network,
        tip: &NextBlock,
        version: i32,
        now: u32,
    ) -> Self {
        Template {
            id,
            kind: TemplateKind::Empty,
            network,
            height: tip.height,
            prev_hash: tip.prev_hash,
            version,
            bits: tip.bits,
            min_time: tip.min_time,
            cur_time: now.max(tip.min_time),
            coinbase_value: crate::node::block_subsidy(network, tip.height),
            witness_commitment: None,
            txs: Arc::new(Vec::new()),
            merkle_path: Vec::new(),
        }
    }

    /// The network target a block on this template must meet.
    pub fn network_target(&self) -> Target {
        Target::from_compact(self.bits)
    }

    /// Total fees of the template's transactions, when the node reported them.
    pub fn fees(&self) -> Amount {
        self.txs
            .iter()
            .filter_map(|t| t.fee)
            .fold(Amount::ZERO, |a, b| a + b)
    }

    /// Serializes the whole block: `header`, the coinbase filled with `extranonce`, and every
    /// template transaction.
    pub fn assemble_block(
        &self,
        header: &block::Header,
        coinbase: &CoinbaseSplit,
        extranonce: &[u8],
    ) -> Vec<u8> {
        let tx_bytes: usize = self.txs.iter().map(|t| t.data.len()).sum();
        let mut out = Vec::with_capacity(80 + 9 + coinbase.serialized_len() + 40 + tx_bytes);
        header
            .consensus_encode(&mut out)
            .expect("writing to a Vec cannot fail");
        VarInt::from(self.txs.len() + 1)
            .consensus_encode(&mut out)
            .expect("writing to a Vec cannot fail");
        coinbase.write_for_block(extranonce, &mut out);
        for tx in self.txs.iter() {
            out.extend_from_slice(&tx.data);
        }
        out
    }

    /// Serializes the whole block around an already serialized coinbase.
    pub fn assemble_block_with_coinbase(
        &self,
        header: &block::Header,
        coinbase_tx: &[u8],
    ) -> Vec<u8> {
        let tx_bytes: usize = self.txs.iter().map(|t| t.data.len()).sum();
        let mut out = Vec::with_capacity(80 + 9 + coinbase_tx.len() + tx_bytes);
        header
            .consensus_encode(&mut out)
            .expect("writing to a Vec cannot fail");
        VarInt::from(self.txs.len() + 1)
            .consensus_encode(&mut out)
            .expect("writing to a Vec cannot fail");
        out.extend_from_slice(coinbase_tx);
        for tx in self.txs.iter() {
            out.extend_from_slice(&tx.data);
        }
        out
    }
}
