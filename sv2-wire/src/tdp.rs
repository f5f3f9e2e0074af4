//! Template Distribution messages from and to our typed templates. Pure: no I/O.

use std::sync::Arc;

use binary_sv2::{Seq0255, B0255, B064K, U256};
use bitcoin::consensus::Encodable;
use bitcoin::hashes::Hash;
use bitcoin::{block, Amount, BlockHash, CompactTarget, Network, Target, TxMerkleNode, TxOut};
use mining_types::coinbase::{bip34_height, WITNESS_COMMITMENT_HEADER};
use mining_types::{Solution, Template, TemplateId, TemplateKind};
use template_distribution_sv2::{NewTemplate, SetNewPrevHash, SubmitSolution};

/// The protocol version both sides speak.
pub use crate::SV2_VERSION as TDP_VERSION;

/// The parts of a [`NewTemplate`] that borrow: kept alive while the message is sent.
#[derive(Debug)]
pub struct NewTemplateParts {
    prefix: Vec<u8>,
    outputs: Vec<u8>,
    path: Vec<[u8; 32]>,
}

impl NewTemplateParts {
    /// Renders the coinbase requirements of `t`: the BIP34 height as the scriptSig prefix and
    /// the witness commitment (when the block needs one) as the required output.
    pub fn of(t: &Template) -> Self {
        let prefix = bitcoin::script::Builder::new()
            .push_int(i64::from(t.height))
            .into_bytes();
        let mut outputs = Vec::new();
        if let Some(c) = &t.witness_commitment {
            TxOut {
                value: Amount::ZERO,
                script_pubkey: c.clone(),
            }
            .consensus_encode(&mut outputs)
            .expect("writing to a Vec cannot fail");
        }
        let path = t.merkle_path.iter().map(|n| n.to_byte_array()).collect();
        NewTemplateParts {
            prefix,
            outputs,
            path,
        }
    }

    /// The message; `future` for a template on a tip not yet announced.
    ///
    /// # Panics
    /// Never for templates we build: the prefix is at most 5 bytes, one output, and a merkle
    /// path of at most 24 levels.
    pub fn message<'a>(&'a self, t: &Template, future: bool) -> NewTemplate<'a> {
        NewTemplate {
            template_id: t.id.get(),
            future_template: future,
            version: t.version.to_consensus() as u32,
            coinbase_tx_version: 2,
            coinbase_prefix: B0255::try_from(&self.prefix[..])
                .expect("a height push is at most 5 bytes"),
            coinbase_tx_input_sequence: u32::MAX,
            coinbase_tx_value_remaining: t.coinbase_value.to_sat(),
            coinbase_tx_outputs_count: u32::from(t.witness_commitment.is_some()),
            coinbase_tx_outputs: B064K::try_from(&self.outputs[..])
                .expect("one output is far below 64 KiB"),
            coinbase_tx_locktime: 0,
            merkle_path: Seq0255::new(self.path.iter().map(U256::from).collect())
                .expect("a merkle path has at most 255 levels"),
        }
    }
}

/// The 32 bytes of a target, little-endian, as SV2 carries it.
pub fn target_le(bits: CompactTarget) -> [u8; 32] {
    Target::from_compact(bits).to_le_bytes()
}

/// Owned bytes for a [`SetNewPrevHash`].
#[derive(Debug)]
pub struct PrevHashParts {
    prev_hash: [u8; 32],
    target: [u8; 32],
}

impl PrevHashParts {
    /// The bytes of `t`'s tip and target.
    pub fn of(t: &Template) -> Self {
        PrevHashParts {
            prev_hash: t.prev_hash.to_byte_array(),
            target: target_le(t.bits),
        }
    }

    /// The message for `t`.
    pub fn message<'a>(&'a self, t: &Template) -> SetNewPrevHash<'a> {
        SetNewPrevHash {
            template_id: t.id.get(),
            prev_hash: U256::from(&self.prev_hash),
            header_timestamp: t.cur_time,
            n_bits: t.bits.to_consensus(),
            target: U256::from(&self.target),
        }
    }
}

/// The solution a client's `SubmitSolution` carries.
pub fn solution_from_tdp(m: &SubmitSolution<'_>) -> Solution {
    Solution {
        template_id: TemplateId::new(m.template_id),
        version: block::Version::from_consensus(m.version as i32),
        ntime: m.header_timestamp,
        nonce: m.header_nonce,
        coinbase_tx: m.coinbase_tx.as_bytes().to_vec(),
    }
}

/// The `SubmitSolution` for `s`.
///
/// # Errors
/// A coinbase above 64 KiB, which no template of ours leads to.
pub fn submit_solution(s: &Solution) -> Result<SubmitSolution<'_>, crate::Sv2Error> {
    Ok(SubmitSolution {
        template_id: s.template_id.get(),
        version: s.version.to_consensus() as u32,
        header_timestamp: s.ntime,
        header_nonce: s.nonce,
        coinbase_tx: B064K::try_from(&s.coinbase_tx[..])
            .map_err(|e| crate::Sv2Error::Encode(format!("coinbase: {e:?}")))?,
    })
}

/// A template announced over TDP that we cannot mine on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IncomingError {
    /// No height where BIP34 puts it.
    #[error("coinbase prefix does not start with a BIP34 height")]
    Height,
    /// The outputs the template requires are not transaction outputs.
    #[error("required coinbase outputs do not decode: {0}")]
    Outputs(String),
    /// A required output other than the witness commitment.
    #[error(
        "required coinbase output {0} is not a witness commitment; only that one is supported"
    )]
    UnsupportedOutput(String),
}

/// Turns a provider's `NewTemplate` and the `SetNewPrevHash` it belongs to into our template.
///
/// The transactions stay with the provider (`txs` is empty and the merkle path is theirs): a
/// block on it goes back to the provider as a `SubmitSolution`.
///
/// # Errors
/// A prefix without a height, or required outputs other than the witness commitment.
pub fn template_from_tdp(
    new: &NewTemplate<'_>,
    prev: &SetNewPrevHash<'_>,
    network: Network,
) -> Result<Template, IncomingError> {
    let prefix = new.coinbase_prefix.as_bytes();
    let height = bip34_height(prefix).ok_or(IncomingError::Height)?;
    let mut witness_commitment = None;
    let mut raw = new.coinbase_tx_outputs.as_bytes();
    for _ in 0..new.coinbase_tx_outputs_count {
        let (out, used): (TxOut, usize) = bitcoin::consensus::deserialize_partial(raw)
            .map_err(|e| IncomingError::Outputs(e.to_string()))?;
        raw = &raw[used..];
        if out
            .script_pubkey
            .as_bytes()
            .starts_with(&WITNESS_COMMITMENT_HEADER)
        {
            witness_commitment = Some(out.script_pubkey);
        } else {
            return Err(IncomingError::UnsupportedOutput(
                out.script_pubkey.to_hex_string(),
            ));
        }
    }
    let merkle_path = new
        .merkle_path
        .clone()
        .into_inner()
        .into_iter()
        .map(|n| TxMerkleNode::from_byte_array(n.to_array()))
        .collect();
    let prev_hash = BlockHash::from_byte_array(prev.prev_hash.to_array());
    Ok(Template {
        id: TemplateId::new(new.template_id),
        kind: TemplateKind::Full,
        network,
        height,
        prev_hash,
        version: block::Version::from_consensus(new.version as i32),
        bits: CompactTarget::from_consensus(prev.n_bits),
        min_time: prev.header_timestamp,
        cur_time: prev.header_timestamp,
        coinbase_value: Amount::from_sat(new.coinbase_tx_value_remaining),
        witness_commitment,
        txs: Arc::new(Vec::new()),
        merkle_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(height: u32) -> Template {
        Template {
            id: TemplateId::new(9),
            kind: TemplateKind::Full,
            network: Network::Regtest,
            height,
            prev_hash: BlockHash::from_byte_array([3; 32]),
            version: block::Version::from_consensus(0x2000_0000),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            min_time: 100,
            cur_time: 200,
            coinbase_value: Amount::from_sat(5_000_000_000),
            witness_commitment: Some(bitcoin::ScriptBuf::from_bytes(
                hex::decode(
                    "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
                )
                .unwrap(),
            )),
            txs: Arc::new(vec![]),
            merkle_path: vec![
                TxMerkleNode::from_byte_array([7; 32]),
                TxMerkleNode::from_byte_array([8; 32]),
            ],
        }
    }

    #[test]
    fn new_template_and_prev_hash_round_trip_through_the_wire_format() {
        for height in [1u32, 16, 17, 300, 840_000] {
            let t = template(height);
            let parts = NewTemplateParts::of(&t);
            let mut bytes = binary_sv2::to_bytes(parts.message(&t, true)).unwrap();
            let decoded: NewTemplate<'_> = binary_sv2::from_bytes(&mut bytes).unwrap();
            let prev = PrevHashParts::of(&t);
            let mut pbytes = binary_sv2::to_bytes(prev.message(&t)).unwrap();
            let pdecoded: SetNewPrevHash<'_> = binary_sv2::from_bytes(&mut pbytes).unwrap();
            let back = template_from_tdp(&decoded, &pdecoded, Network::Regtest).unwrap();
            assert_eq!(back.height, height);
            assert_eq!(back.prev_hash, t.prev_hash);
            assert_eq!(back.merkle_path, t.merkle_path);
            assert_eq!(back.witness_commitment, t.witness_commitment);
            assert_eq!(back.coinbase_value, t.coinbase_value);
            assert_eq!(back.bits, t.bits);
            assert!(decoded.future_template);
        }
    }

    #[test]
    fn target_is_little_endian() {
        let le = target_le(CompactTarget::from_consensus(0x207f_ffff));
        assert_eq!(le[31], 0x7f);
        assert_eq!(le[0], 0);
    }
}
