//! The reply of `getblocktemplate` (BIP22/BIP23/BIP141) and its conversion into a [`Template`].
//!
//! A full-size reply is about 4 MB, most of it transaction hex. It is read in one pass, straight
//! from the response bytes into these types (no `serde_json::Value` tree), and each
//! transaction's hex is decoded while it is read, from the borrowed body, with a SIMD decoder:
//! no owned hex string is ever made. The node's own txids and wtxids are taken as given.

use std::fmt;
use std::sync::Arc;

use bitcoin::{Amount, BlockHash, CompactTarget, Network, ScriptBuf, Txid, Wtxid};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use mining_types::{merkle, Template, TemplateId, TemplateKind, TemplateTx};

/// The fields of a `getblocktemplate` reply that a template needs.
#[derive(Debug, Deserialize)]
pub struct BlockTemplateReply {
    /// The block version, with the version bits the node signals.
    pub version: i32,
    /// The tip the block builds on.
    #[serde(rename = "previousblockhash")]
    pub prev_hash: BlockHash,
    /// The transactions, in the node's block order.
    pub transactions: Vec<GbtTransaction>,
    /// Subsidy plus every transaction's fee, in satoshis.
    #[serde(rename = "coinbasevalue")]
    pub coinbase_value: u64,
    /// What to send back to long-poll for the next template.
    #[serde(rename = "longpollid")]
    pub longpoll_id: Option<String>,
    /// The earliest block time allowed.
    #[serde(rename = "mintime")]
    pub min_time: u32,
    /// The node's current time, the block time to use.
    #[serde(rename = "curtime")]
    pub cur_time: u32,
    /// The compact target, as 8 hex digits.
    pub bits: String,
    /// The block's height.
    pub height: u32,
    /// The coinbase's BIP141 witness commitment output script, as hex.
    pub default_witness_commitment: Option<String>,
}

/// One transaction of a `getblocktemplate` reply.
#[derive(Debug, Deserialize)]
pub struct GbtTransaction {
    /// The serialized transaction, decoded from the reply's hex as it is read.
    #[serde(deserialize_with = "hex_bytes")]
    pub data: Vec<u8>,
    /// The transaction's id.
    pub txid: Txid,
    /// Its witness id.
    pub hash: Wtxid,
    /// Its fee in satoshis, when the node gives it.
    pub fee: Option<i64>,
    /// Its weight, when the node gives it.
    pub weight: Option<u64>,
    /// 1-based positions (in `transactions`) of the in-template parents this one spends.
    #[serde(default)]
    pub depends: Vec<usize>,
}

/// Decodes hex into bytes: SIMD where the CPU has it, every character checked.
///
/// # Errors
/// When `hex` has an odd length or a character that is not a hex digit.
pub fn decode_hex(hex: &[u8]) -> Result<Vec<u8>, hex::FromHexError> {
    if hex.len() & 1 == 1 {
        return Err(hex::FromHexError::OddLength);
    }
    let mut out = vec![0u8; hex.len() / 2];
    if faster_hex::hex_decode(hex, &mut out).is_err() {
        // Name the offending character the way `hex` does (rare path: the node sends hex).
        return Err(hex::decode(hex)
            .err()
            .unwrap_or(hex::FromHexError::OddLength));
    }
    Ok(out)
}

/// `deserialize_with` for hex strings: decodes from the borrowed body when the JSON string has
/// no escapes (always, for hex), from the unescaped copy otherwise.
fn hex_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct HexVisitor;
    impl Visitor<'_> for HexVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a hex string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            decode_hex(v.as_bytes())
                .map_err(|e| E::custom(format_args!("transaction data is not hex: {e}")))
        }
    }
    deserializer.deserialize_str(HexVisitor)
}

/// Why a `getblocktemplate` reply could not become a template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GbtError {
    /// `bits` is not a compact target.
    #[error("bits {0:?} is not 8 hex digits")]
    Bits(String),
    /// `default_witness_commitment` is not hex.
    #[error("default_witness_commitment is not hex: {0}")]
    Commitment(hex::FromHexError),
}

impl BlockTemplateReply {
    /// Converts the reply into a typed template.
    ///
    /// # Errors
    /// When a hex field does not decode.
    pub fn into_template(self, id: TemplateId, network: Network) -> Result<Template, GbtError> {
        let bits = u32::from_str_radix(&self.bits, 16)
            .ok()
            .filter(|_| self.bits.len() == 8)
            .ok_or_else(|| GbtError::Bits(self.bits.clone()))?;
        let witness_commitment = self
            .default_witness_commitment
            .map(|h| decode_hex(h.as_bytes()).map(ScriptBuf::from_bytes))
            .transpose()
            .map_err(GbtError::Commitment)?;
        let merkle_path = merkle::coinbase_path(self.transactions.iter().map(|t| t.txid));
        let txs = self
            .transactions
            .into_iter()
            .map(|tx| TemplateTx {
                data: tx.data,
                txid: tx.txid,
                wtxid: tx.hash,
                fee: tx
                    .fee
                    .and_then(|f| u64::try_from(f).ok())
                    .map(Amount::from_sat),
                weight: tx.weight.unwrap_or(0),
                depends: tx.depends.iter().filter_map(|d| d.checked_sub(1)).collect(),
            })
            .collect();
        Ok(Template {
            id,
            kind: TemplateKind::Full,
            network,
            height: self.height,
            prev_hash: self.prev_hash,
            version: bitcoin::block::Version::from_consensus(self.version),
            bits: CompactTarget::from_consensus(bits),
            min_time: self.min_time,
            cur_time: self.cur_time,
            coinbase_value: Amount::from_sat(self.coinbase_value),
            witness_commitment,
            txs: Arc::new(txs),
            merkle_path,
        })
    }
}

// The synthetic full-size reply of the benchmarks (it depends only on bitcoin, hex, serde_json).
#[cfg(test)]
#[path = "../../../load/src/synth_gbt.rs"]
#[allow(dead_code)]
mod synth_gbt_for_tests;

#[cfg(test)]
mod tests {
    use bitcoin::consensus::deserialize;
    use bitcoin::hashes::Hash;
    use bitcoin::{Transaction, TxMerkleNode};

    use super::*;
    use crate::node::rpc::RawReply;
    use mining_types::merkle::root_from_path;
    use synth_gbt_for_tests as synth_gbt;

    fn template_of(body: Vec<u8>) -> Template {
        let raw = RawReply::new("getblocktemplate", 200, body.into());
        raw.decode::<BlockTemplateReply>()
            .expect("reply")
            .into_template(TemplateId::new(1), Network::Bitcoin)
            .expect("template")
    }

    #[test]
    fn full_reply_decodes_to_the_same_transactions_and_merkle_root() {
        let template = template_of(synth_gbt::gbt_reply_body(300, 7));
        assert_eq!(template.txs.len(), 300);
        for (i, tx) in template.txs.iter().enumerate() {
            let decoded: Transaction = deserialize(&tx.data).expect("a transaction");
            assert_eq!(decoded.compute_txid(), tx.txid, "tx {i}");
            assert_eq!(decoded.compute_wtxid(), tx.wtxid, "tx {i}");
        }
        let coinbase = Txid::from_byte_array([9; 32]);
        let expected: TxMerkleNode = bitcoin::merkle_tree::calculate_root(
            std::iter::once(coinbase)
                .chain(template.txs.iter().map(|t| t.txid))
                .map(|t| TxMerkleNode::from_byte_array(t.to_byte_array())),
        )
        .expect("non-empty");
        assert_eq!(root_from_path(coinbase, &template.merkle_path), expected);
        assert!(template.witness_commitment.is_some());
        assert!(template.txs.iter().any(|t| !t.depends.is_empty()));
    }

    #[test]
    fn hex_is_checked() {
        assert_eq!(decode_hex(b"00ffAb").unwrap(), vec![0, 0xff, 0xab]);
        assert_eq!(decode_hex(b"").unwrap(), Vec::<u8>::new());
        assert!(decode_hex(b"0g").is_err());
        assert!(decode_hex(b"abc").is_err());
        // Long enough for the SIMD path, with a bad character near the end.
        let mut long = "ab".repeat(100);
        long.push_str("zz");
        assert!(decode_hex(long.as_bytes()).is_err());
        let body = br#"{"result":{"version":1,"previousblockhash":"0000000000000000000000000000000000000000000000000000000000000000","transactions":[{"data":"0x12","txid":"0000000000000000000000000000000000000000000000000000000000000000","hash":"0000000000000000000000000000000000000000000000000000000000000000"}],"coinbasevalue":1,"mintime":1,"curtime":1,"bits":"1d00ffff","height":1},"error":null,"id":1}"#;
        let err = RawReply::new("getblocktemplate", 200, body.to_vec().into())
            .decode::<BlockTemplateReply>()
            .unwrap_err();
        assert!(err.to_string().contains("not hex"), "{err}");
    }
}
