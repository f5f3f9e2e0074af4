//! The reply of `getblocktemplate` (BIP22/BIP23/BIP141) and its conversion into a [`Template`].

use std::sync::Arc;

use bitcoin::{Amount, BlockHash, CompactTarget, Network, ScriptBuf, Txid, Wtxid};
use serde::Deserialize;

use crate::template::{merkle, Template, TemplateId, TemplateKind, TemplateTx};

/// The fields of a `getblocktemplate` reply that a template needs.
#[derive(Debug, Deserialize)]
pub struct BlockTemplateReply {
    pub version: i32,
    #[serde(rename = "previousblockhash")]
    pub prev_hash: BlockHash,
    pub transactions: Vec<GbtTransaction>,
    #[serde(rename = "coinbasevalue")]
    pub coinbase_value: u64,
    #[serde(rename = "longpollid")]
    pub longpoll_id: Option<String>,
    #[serde(rename = "mintime")]
    pub min_time: u32,
    #[serde(rename = "curtime")]
    pub cur_time: u32,
    pub bits: String,
    pub height: u32,
    pub default_witness_commitment: Option<String>,
}

/// One transaction of a `getblocktemplate` reply.
#[derive(Debug, Deserialize)]
pub struct GbtTransaction {
    pub data: String,
    pub txid: Txid,
    pub hash: Wtxid,
    pub fee: Option<i64>,
    pub weight: Option<u64>,
    /// 1-based positions (in `transactions`) of the in-template parents this one spends.
    #[serde(default)]
    pub depends: Vec<usize>,
}

/// Why a `getblocktemplate` reply could not become a template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GbtError {
    #[error("bits {0:?} is not 8 hex digits")]
    Bits(String),
    #[error("transaction {index} data is not hex: {source}")]
    TxHex {
        index: usize,
        source: hex::FromHexError,
    },
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
            .map(|h| hex::decode(h).map(ScriptBuf::from_bytes))
            .transpose()
            .map_err(GbtError::Commitment)?;
        let txs = self
            .transactions
            .into_iter()
            .enumerate()
            .map(|(index, tx)| {
                Ok(TemplateTx {
                    data: hex::decode(&tx.data)
                        .map_err(|source| GbtError::TxHex { index, source })?,
                    txid: tx.txid,
                    wtxid: tx.hash,
                    fee: tx
                        .fee
                        .and_then(|f| u64::try_from(f).ok())
                        .map(Amount::from_sat),
                    weight: tx.weight.unwrap_or(0),
                    depends: tx.depends.iter().filter_map(|d| d.checked_sub(1)).collect(),
                })
            })
            .collect::<Result<Vec<_>, GbtError>>()?;
        let merkle_path = merkle::coinbase_path(txs.iter().map(|t| t.txid));
        Ok(Template {
            id,
            kind: TemplateKind::Full,
            network,
            height: self.height,
            prev_hash: self.prev_hash,
            version: self.version,
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
