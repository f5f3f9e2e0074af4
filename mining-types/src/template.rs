//! Block templates as typed values: what jobs are made of and, once solved, blocks.

use std::sync::Arc;

use bitcoin::{block, Amount, BlockHash, CompactTarget, Network, ScriptBuf, Target, TxMerkleNode};
use bitcoin::{Txid, Wtxid};

use crate::coinbase::witness_commitment_script;
use crate::ids::TemplateId;

/// Whether a template carries transactions, and who holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Built the moment a new tip is seen, before the node's template is ready: coinbase only,
    /// so miners stop wasting work on the old tip at once.
    Empty,
    /// A full template; its transactions are in [`Template::txs`] unless it came from an
    /// external template provider, which keeps them.
    Full,
    /// A pool's own job: only its merkle path is known here; the pool holds the transactions
    /// and propagates the blocks.
    Pool,
}

/// One transaction of a template, kept serialized: it is only ever copied into a block.
#[derive(Debug, Clone)]
pub struct TemplateTx {
    /// Its txid, for the merkle path.
    pub txid: Txid,
    /// Its wtxid, for the witness commitment and job declaration.
    pub wtxid: Wtxid,
    /// The transaction as it goes in a block (with witnesses).
    pub data: Vec<u8>,
    /// The fee it pays, when the source says (getblocktemplate does, IPC does not).
    pub fee: Option<Amount>,
    /// Its weight in weight units.
    pub weight: u64,
    /// 0-based positions in the template of the parents this transaction spends.
    pub depends: Vec<usize>,
}

/// What is known of the next block the moment a new tip appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextBlock {
    /// The new tip.
    pub prev_hash: BlockHash,
    /// The height of the block to mine.
    pub height: u32,
    /// Its difficulty bits.
    pub bits: CompactTarget,
    /// Median time past of the tip, plus one.
    pub min_time: u32,
}

/// A block template: everything of a block but its coinbase's extranonce, ntime, nonce and
/// rolled version bits.
#[derive(Debug, Clone)]
pub struct Template {
    /// Unique per source, increasing.
    pub id: TemplateId,
    /// Whether transactions are in it, and who holds them.
    pub kind: TemplateKind,
    /// The chain it is for.
    pub network: Network,
    /// The height of the block it builds.
    pub height: u32,
    /// The tip it builds on.
    pub prev_hash: BlockHash,
    /// The header version before any rolled bits.
    pub version: block::Version,
    /// The network target, compact.
    pub bits: CompactTarget,
    /// The earliest ntime the node accepts (median time past + 1).
    pub min_time: u32,
    /// The ntime miners start from.
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
    ///
    /// It commits to its (empty) witness tree as a full template does, so a pool's job
    /// declarator takes it like any other: the clean job sent at a new tip is declarable, and a
    /// block found on it is credited.
    pub fn empty_on_tip(
        id: TemplateId,
        network: Network,
        tip: &NextBlock,
        version: block::Version,
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
            coinbase_value: block_subsidy(network, tip.height),
            witness_commitment: Some(witness_commitment_script(std::iter::empty())),
            txs: Arc::new(Vec::new()),
            merkle_path: Vec::new(),
        }
    }

    /// The network target a block on this template must meet.
    pub fn network_target(&self) -> Target {
        Target::from_compact(self.bits)
    }

    /// Total fees of the template's transactions, when the source reported them.
    pub fn fees(&self) -> Amount {
        self.txs
            .iter()
            .filter_map(|t| t.fee)
            .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap_or(a))
    }
}

/// Blocks between subsidy halvings; regtest halves far sooner than the other chains.
pub const fn halving_interval(network: Network) -> u32 {
    match network {
        Network::Regtest => 150,
        _ => 210_000,
    }
}

/// The block subsidy at `height` on `network`.
pub fn block_subsidy(network: Network, height: u32) -> Amount {
    let halvings = height / halving_interval(network);
    if halvings >= 64 {
        return Amount::ZERO;
    }
    Amount::from_sat((50 * 100_000_000u64) >> halvings)
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;

    use super::*;

    #[test]
    fn the_empty_template_on_a_new_tip_commits_to_its_witnesses() {
        let tip = NextBlock {
            prev_hash: BlockHash::from_byte_array([1; 32]),
            height: 7,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            min_time: 5,
        };
        let t = Template::empty_on_tip(
            TemplateId::new(1),
            Network::Regtest,
            &tip,
            block::Version::TWO,
            9,
        );
        let split = crate::CoinbaseSplit::build(
            &t,
            &crate::CoinbaseConfig {
                payout_script: ScriptBuf::from_bytes(vec![0x51]),
                tag: vec![],
            },
            8,
        )
        .unwrap();
        assert!(
            split.witness_parts().is_some(),
            "declarable: its coinbase has the witness form"
        );
        let header = block::Header {
            version: t.version,
            prev_blockhash: t.prev_hash,
            merkle_root: TxMerkleNode::from_raw_hash(split.txid(&[&[0; 8]]).to_raw_hash()),
            time: 9,
            bits: t.bits,
            nonce: 0,
        };
        let s = crate::Solution::from_split(t.id, &header, &split, &[0; 8]);
        let b: bitcoin::Block =
            bitcoin::consensus::deserialize(&s.assemble(&t).unwrap().bytes).unwrap();
        assert!(b.check_witness_commitment());
        assert_eq!(t.cur_time, 9);
    }

    #[test]
    fn subsidy_halves() {
        assert_eq!(block_subsidy(Network::Bitcoin, 0).to_sat(), 5_000_000_000);
        assert_eq!(
            block_subsidy(Network::Bitcoin, 840_000).to_sat(),
            312_500_000
        );
        assert_eq!(block_subsidy(Network::Regtest, 150).to_sat(), 2_500_000_000);
        assert_eq!(block_subsidy(Network::Regtest, 150 * 64).to_sat(), 0);
    }
}
