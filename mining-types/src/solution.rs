//! A solved template: the fields a miner filled in, and the block they make.
//!
//! Every path a found block takes uses this one type: a share that met the network target in
//! the proxy, a Template Distribution `SubmitSolution` in the provider, and the proxy's
//! `SubmitSolution` to an external provider.

use bitcoin::consensus::encode::VarInt;
use bitcoin::consensus::{deserialize, Encodable};
use bitcoin::{block, BlockHash, Transaction, Witness};

use crate::coinbase::CoinbaseSplit;
use crate::ids::TemplateId;
use crate::merkle;
use crate::template::Template;

/// What a miner filled in on a template to solve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solution {
    /// The template solved.
    pub template_id: TemplateId,
    /// The header version, rolled bits included.
    pub version: block::Version,
    /// The header time.
    pub ntime: u32,
    /// The header nonce.
    pub nonce: u32,
    /// The whole coinbase, serialized as it goes in the block. When the template commits to
    /// witnesses and the witness is missing, the BIP141 reserved value is added on assembly.
    pub coinbase_tx: Vec<u8>,
}

/// A solution that cannot become a block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SolutionError {
    /// The coinbase bytes are not a transaction.
    #[error("coinbase transaction does not decode: {0}")]
    Coinbase(String),
    /// The transaction is not a coinbase.
    #[error("the coinbase is not a coinbase transaction")]
    NotCoinbase,
    /// The solution names another template.
    #[error("solution for template {solution}, assembled on template {template}")]
    WrongTemplate {
        /// The template the solution names.
        solution: TemplateId,
        /// The template it was assembled on.
        template: TemplateId,
    },
}

/// A block, serialized, with its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledBlock {
    /// The block hash.
    pub hash: BlockHash,
    /// The header.
    pub header: block::Header,
    /// The whole block, as `submitblock` takes it (hex-encode it).
    pub bytes: Vec<u8>,
}

impl Solution {
    /// The solution of a share on a coinbase split: the coinbase filled with `extranonce`.
    pub fn from_split(
        template_id: TemplateId,
        header: &block::Header,
        split: &CoinbaseSplit,
        extranonce: &[u8],
    ) -> Self {
        let mut coinbase_tx = Vec::with_capacity(split.serialized_len());
        split.write_for_block(extranonce, &mut coinbase_tx);
        Solution {
            template_id,
            version: header.version,
            ntime: header.time,
            nonce: header.nonce,
            coinbase_tx,
        }
    }

    /// Builds the block on `template`: header from the coinbase's merkle path, then the
    /// coinbase and every template transaction.
    ///
    /// # Errors
    /// A coinbase that does not decode or is not a coinbase, or another template's solution.
    pub fn assemble(&self, template: &Template) -> Result<AssembledBlock, SolutionError> {
        let (header, coinbase) = self.header_and_coinbase(template)?;
        let tx_bytes: usize = template.txs.iter().map(|t| t.data.len()).sum();
        let mut bytes = Vec::with_capacity(80 + 9 + self.coinbase_tx.len() + 36 + tx_bytes);
        header
            .consensus_encode(&mut bytes)
            .expect("writing to a Vec cannot fail");
        VarInt::from(template.txs.len() + 1)
            .consensus_encode(&mut bytes)
            .expect("writing to a Vec cannot fail");
        coinbase
            .consensus_encode(&mut bytes)
            .expect("writing to a Vec cannot fail");
        for tx in template.txs.iter() {
            bytes.extend_from_slice(&tx.data);
        }
        Ok(AssembledBlock {
            hash: header.block_hash(),
            header,
            bytes,
        })
    }

    /// The block header this solution makes on `template`, without copying the template's
    /// transactions: enough to check the proof of work before paying for the whole block.
    ///
    /// # Errors
    /// As [`assemble`](Self::assemble).
    pub fn header(&self, template: &Template) -> Result<block::Header, SolutionError> {
        self.header_and_coinbase(template).map(|(h, _)| h)
    }

    fn header_and_coinbase(
        &self,
        template: &Template,
    ) -> Result<(block::Header, Transaction), SolutionError> {
        if self.template_id != template.id {
            return Err(SolutionError::WrongTemplate {
                solution: self.template_id,
                template: template.id,
            });
        }
        let mut coinbase: Transaction =
            deserialize(&self.coinbase_tx).map_err(|e| SolutionError::Coinbase(e.to_string()))?;
        if !coinbase.is_coinbase() {
            return Err(SolutionError::NotCoinbase);
        }
        if template.witness_commitment.is_some() && coinbase.input[0].witness.is_empty() {
            coinbase.input[0].witness = Witness::from_slice(&[[0u8; 32]]);
        }
        let header = block::Header {
            version: self.version,
            prev_blockhash: template.prev_hash,
            merkle_root: merkle::root_from_path(coinbase.compute_txid(), &template.merkle_path),
            time: self.ntime,
            bits: template.bits,
            nonce: self.nonce,
        };
        Ok((header, coinbase))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, Block, CompactTarget, Network, ScriptBuf, TxMerkleNode};

    use super::*;
    use crate::coinbase::CoinbaseConfig;
    use crate::template::TemplateKind;

    fn template(commitment: bool) -> Template {
        Template {
            id: TemplateId::new(4),
            kind: TemplateKind::Full,
            network: Network::Regtest,
            height: 300,
            prev_hash: BlockHash::from_byte_array([3; 32]),
            version: block::Version::from_consensus(0x2000_0000),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            min_time: 0,
            cur_time: 0,
            coinbase_value: Amount::from_sat(5_000_000_000),
            // The commitment of a block with no transaction but the coinbase.
            witness_commitment: commitment.then(|| {
                ScriptBuf::from_bytes(
                    hex::decode("6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9")
                        .expect("hex"),
                )
            }),
            txs: Arc::new(vec![]),
            merkle_path: vec![],
        }
    }

    fn config() -> CoinbaseConfig {
        CoinbaseConfig {
            payout_script: ScriptBuf::from_bytes(vec![0x51]),
            tag: b"/t/".to_vec(),
        }
    }

    fn header_for(t: &Template, split: &CoinbaseSplit, en: &[u8]) -> block::Header {
        block::Header {
            version: block::Version::from_consensus(0x2000_4000),
            prev_blockhash: t.prev_hash,
            merkle_root: TxMerkleNode::from_raw_hash(split.txid(&[en]).to_raw_hash()),
            time: 77,
            bits: t.bits,
            nonce: 9,
        }
    }

    #[test]
    fn a_split_solution_assembles_into_the_block_the_miner_hashed() {
        for commitment in [false, true] {
            let t = template(commitment);
            let split = CoinbaseSplit::build(&t, &config(), 8).expect("coinbase");
            let en = [7u8; 8];
            let header = header_for(&t, &split, &en);
            let s = Solution::from_split(t.id, &header, &split, &en);
            let b = s.assemble(&t).expect("assembles");
            assert_eq!(b.hash, header.block_hash(), "the header the miner hashed");
            let block: Block = deserialize(&b.bytes).expect("decodes");
            assert!(block.check_merkle_root());
            if commitment {
                assert!(block.check_witness_commitment());
            }
        }
    }

    #[test]
    fn a_coinbase_sent_without_its_witness_gets_the_reserved_value() {
        let t = template(true);
        let split = CoinbaseSplit::build(&t, &config(), 8).expect("coinbase");
        let en = [1u8; 8];
        let mut stripped = Vec::new();
        split.write_for_txid(&en, &mut stripped);
        let header = header_for(&t, &split, &en);
        let s = Solution {
            coinbase_tx: stripped,
            ..Solution::from_split(t.id, &header, &split, &en)
        };
        let block: Block = deserialize(&s.assemble(&t).expect("assembles").bytes).expect("decodes");
        assert!(block.check_witness_commitment());
    }

    #[test]
    fn garbage_and_other_templates_are_refused() {
        let t = template(false);
        let s = Solution {
            template_id: t.id,
            version: block::Version::ONE,
            ntime: 0,
            nonce: 0,
            coinbase_tx: vec![1, 2, 3],
        };
        assert!(matches!(s.assemble(&t), Err(SolutionError::Coinbase(_))));
        let other = Solution {
            template_id: TemplateId::new(99),
            ..s
        };
        assert!(matches!(
            other.assemble(&t),
            Err(SolutionError::WrongTemplate { .. })
        ));
    }
}
