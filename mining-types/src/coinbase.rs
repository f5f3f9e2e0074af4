//! The coinbase transaction, split around the extranonce space miners fill in.
//!
//! Layout (non-witness serialization, which is what the txid and Stratum V1 see):
//!
//! ```text
//! prefix = version | 01 | null outpoint | scriptSig length | BIP34 height | tag push | PUSH(extranonce_len)
//!          extranonce (proxy part, then miner part)
//! suffix = sequence | outputs | locktime
//! ```
//! Kept small by default: old Antminer firmware fails on large coinbases.

use bitcoin::consensus::encode::VarInt;
use bitcoin::consensus::Encodable;
use bitcoin::hashes::{sha256d, Hash, HashEngine};
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::{Amount, Block, ScriptBuf, Txid, WitnessMerkleNode, Wtxid};

use crate::template::Template;

/// Consensus limit on a coinbase scriptSig.
pub const MAX_SCRIPT_SIG_LEN: usize = 100;

/// Longest extranonce a split accepts; SV1 needs 16 at most (8 proxy + 8 miner).
pub const MAX_EXTRANONCE_LEN: usize = 32;

/// What the farm puts in every coinbase.
#[derive(Debug, Clone)]
pub struct CoinbaseConfig {
    /// Where the block reward goes.
    pub payout_script: ScriptBuf,
    /// A short tag in the scriptSig (e.g. `/farm-name/`).
    pub tag: Vec<u8>,
}

/// Why a coinbase could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoinbaseError {
    /// The scriptSig would break the consensus limit.
    #[error("coinbase scriptSig would be {len} bytes, above the consensus limit of {MAX_SCRIPT_SIG_LEN}; shorten the coinbase tag")]
    ScriptSigTooLong {
        /// Its length.
        len: usize,
    },
    /// The extranonce space asked for is empty or too large.
    #[error("extranonce of {0} bytes is outside 1..={MAX_EXTRANONCE_LEN}")]
    ExtranonceLen(usize),
    /// Parts given by a peer are too short to be a transaction's.
    #[error("coinbase parts too short to be a transaction's")]
    Malformed,
}

/// A coinbase with a hole for the extranonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinbaseSplit {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    extranonce_len: usize,
    /// Where the scriptSig's fixed extranonce bytes (a pool's channel prefix) begin in `prefix`:
    /// everything of the scriptSig before it is what SV2 calls the coinbase prefix.
    fixed_start: usize,
    /// Whether the block has a witness commitment, so the coinbase carries the reserved value.
    witness: bool,
}

/// Offset of the scriptSig in the non-witness serialization: version, input count, outpoint,
/// and a one-byte length (a scriptSig is at most 100 bytes).
const SCRIPT_SIG_START: usize = 4 + 1 + 36 + 1;

impl CoinbaseSplit {
    /// Builds the coinbase for `template` paying its whole value to the configured script.
    ///
    /// # Errors
    /// When the scriptSig would exceed 100 bytes or the extranonce length is out of range.
    pub fn build(
        template: &Template,
        config: &CoinbaseConfig,
        extranonce_len: usize,
    ) -> Result<Self, CoinbaseError> {
        let outputs = [(config.payout_script.clone(), template.coinbase_value)];
        Self::with_outputs(template, &config.tag, &outputs, &[], extranonce_len)
    }

    /// Builds the coinbase with explicit outputs (a pool's outputs, in pool mode) and `fixed`
    /// bytes at the start of the extranonce push (a pool channel's extranonce prefix), which
    /// then belong to [`prefix`](Self::prefix).
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn with_outputs(
        template: &Template,
        tag: &[u8],
        outputs: &[(ScriptBuf, Amount)],
        fixed: &[u8],
        extranonce_len: usize,
    ) -> Result<Self, CoinbaseError> {
        if extranonce_len == 0 || fixed.len() + extranonce_len > MAX_EXTRANONCE_LEN {
            return Err(CoinbaseError::ExtranonceLen(fixed.len() + extranonce_len));
        }
        let mut script = Builder::new().push_int(i64::from(template.height));
        if !tag.is_empty() {
            let tag = PushBytesBuf::try_from(tag.to_vec())
                .map_err(|_| CoinbaseError::ScriptSigTooLong { len: tag.len() })?;
            script = script.push_slice(tag);
        }
        let head = script.into_bytes();
        // A push opcode for the extranonce keeps the scriptSig a well-formed script.
        let push_len = fixed.len() + extranonce_len;
        let script_sig_len = head.len() + 1 + push_len;
        if script_sig_len > MAX_SCRIPT_SIG_LEN {
            return Err(CoinbaseError::ScriptSigTooLong {
                len: script_sig_len,
            });
        }

        let mut prefix = Vec::with_capacity(42 + head.len() + 1);
        prefix.extend_from_slice(&1i32.to_le_bytes()); // version 1: no relative locktime semantics needed
        prefix.push(1); // one input
        prefix.extend_from_slice(&[0u8; 32]);
        prefix.extend_from_slice(&u32::MAX.to_le_bytes());
        VarInt::from(script_sig_len)
            .consensus_encode(&mut prefix)
            .expect("writing to a Vec cannot fail");
        prefix.extend_from_slice(&head);
        prefix.push(u8::try_from(push_len).expect("checked <= 32 above"));
        let fixed_start = prefix.len();
        prefix.extend_from_slice(fixed);

        let mut suffix = Vec::with_capacity(64);
        suffix.extend_from_slice(&u32::MAX.to_le_bytes()); // sequence
        let commitment = template.witness_commitment.as_ref();
        let n_out = outputs.len() + usize::from(commitment.is_some());
        VarInt::from(n_out)
            .consensus_encode(&mut suffix)
            .expect("writing to a Vec cannot fail");
        for (script, value) in outputs {
            write_output(&mut suffix, *value, script);
        }
        if let Some(c) = commitment {
            write_output(&mut suffix, Amount::ZERO, c);
        }
        suffix.extend_from_slice(&0u32.to_le_bytes()); // locktime

        Ok(CoinbaseSplit {
            prefix,
            suffix,
            extranonce_len,
            fixed_start,
            witness: commitment.is_some(),
        })
    }

    /// The bytes before the extranonce (Stratum V1 `coinb1`).
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The bytes after the extranonce (Stratum V1 `coinb2`).
    pub fn suffix(&self) -> &[u8] {
        &self.suffix
    }

    /// A coinbase split someone else built (a pool's own job), in the non-witness form;
    /// `prefix` ends where the miners' extranonce begins.
    ///
    /// # Errors
    /// An extranonce length out of range, or parts too short to be a transaction's.
    pub fn from_parts(
        prefix: Vec<u8>,
        suffix: Vec<u8>,
        extranonce_len: usize,
    ) -> Result<Self, CoinbaseError> {
        if extranonce_len == 0 || extranonce_len > MAX_EXTRANONCE_LEN {
            return Err(CoinbaseError::ExtranonceLen(extranonce_len));
        }
        if prefix.len() < SCRIPT_SIG_START || suffix.len() < 9 {
            return Err(CoinbaseError::Malformed);
        }
        Ok(CoinbaseSplit {
            fixed_start: prefix.len(),
            prefix,
            suffix,
            extranonce_len,
            witness: false,
        })
    }

    /// The block height a BIP34 scriptSig starts with, if it does.
    pub fn bip34_height(&self) -> Option<u32> {
        bip34_height(self.prefix.get(SCRIPT_SIG_START..)?)
    }

    /// The scriptSig up to the whole extranonce push, opcode included (SV2's `coinbase_prefix`:
    /// what a pool puts its channel's extranonce prefix and the miner's extranonce after).
    pub fn script_sig_prefix(&self) -> &[u8] {
        &self.prefix[SCRIPT_SIG_START..self.fixed_start]
    }

    /// The outputs as serialized in the transaction, count first.
    pub fn outputs(&self) -> &[u8] {
        &self.suffix[4..self.suffix.len() - 4]
    }

    /// The transaction version the coinbase uses.
    pub fn tx_version(&self) -> u32 {
        u32::from_le_bytes(self.prefix[..4].try_into().expect("4 bytes"))
    }

    /// The coinbase input's nSequence.
    pub fn input_sequence(&self) -> u32 {
        u32::from_le_bytes(self.suffix[..4].try_into().expect("4 bytes"))
    }

    /// The coinbase's nLockTime.
    pub fn lock_time(&self) -> u32 {
        let n = self.suffix.len();
        u32::from_le_bytes(self.suffix[n - 4..].try_into().expect("4 bytes"))
    }

    /// The witness serialization split around the whole extranonce push (fixed bytes
    /// included), as SV2 Job Declaration's `DeclareMiningJob` carries it; `None` without a
    /// witness commitment, since that form needs the segwit marker.
    pub fn witness_parts(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if !self.witness {
            return None;
        }
        let mut prefix = Vec::with_capacity(self.fixed_start + 2);
        prefix.extend_from_slice(&self.prefix[..4]);
        prefix.extend_from_slice(&[0x00, 0x01]);
        prefix.extend_from_slice(&self.prefix[4..self.fixed_start]);
        let (outputs, locktime) = self.suffix.split_at(self.suffix.len() - 4);
        let mut suffix = Vec::with_capacity(self.suffix.len() + 34);
        suffix.extend_from_slice(outputs);
        suffix.extend_from_slice(&[0x01, 0x20]);
        suffix.extend_from_slice(&[0u8; 32]);
        suffix.extend_from_slice(locktime);
        Some((prefix, suffix))
    }

    /// Bytes of extranonce space, proxy and miner parts together.
    pub fn extranonce_len(&self) -> usize {
        self.extranonce_len
    }

    /// Size as written in a block.
    pub fn serialized_len(&self) -> usize {
        self.prefix.len()
            + self.extranonce_len
            + self.suffix.len()
            + if self.witness { 36 } else { 0 }
    }

    /// The coinbase txid for a filled-in extranonce, hashed in place without a copy.
    ///
    /// `extranonce` parts are concatenated; their total length must be `extranonce_len`.
    pub fn txid(&self, extranonce: &[&[u8]]) -> Txid {
        let mut engine = sha256d::Hash::engine();
        engine.input(&self.prefix);
        for part in extranonce {
            engine.input(part);
        }
        engine.input(&self.suffix);
        Txid::from_raw_hash(sha256d::Hash::from_engine(engine))
    }

    /// Writes the coinbase without its witness: the bytes its txid is the hash of.
    pub fn write_for_txid(&self, extranonce: &[u8], out: &mut Vec<u8>) {
        debug_assert_eq!(extranonce.len(), self.extranonce_len);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(extranonce);
        out.extend_from_slice(&self.suffix);
    }

    /// Writes the coinbase as it goes in a block: with the BIP141 witness reserved value when
    /// the block has a witness commitment.
    pub fn write_for_block(&self, extranonce: &[u8], out: &mut Vec<u8>) {
        debug_assert_eq!(extranonce.len(), self.extranonce_len);
        if !self.witness {
            self.write_for_txid(extranonce, out);
            return;
        }
        let (version, inputs) = self.prefix.split_at(4);
        let (outputs, locktime) = self.suffix.split_at(self.suffix.len() - 4);
        out.extend_from_slice(version);
        out.extend_from_slice(&[0x00, 0x01]); // segwit marker and flag
        out.extend_from_slice(inputs);
        out.extend_from_slice(extranonce);
        out.extend_from_slice(outputs);
        out.extend_from_slice(&[0x01, 0x20]); // one witness item of 32 bytes
        out.extend_from_slice(&[0u8; 32]); // the witness reserved value
        out.extend_from_slice(locktime);
    }
}

/// The BIP141 witness commitment output script for a block whose non-coinbase transactions
/// have `wtxids` (in block order), with the all-zero witness reserved value our coinbases carry.
pub fn witness_commitment_script(wtxids: impl Iterator<Item = Wtxid>) -> ScriptBuf {
    let leaves = std::iter::once(WitnessMerkleNode::all_zeros())
        .chain(wtxids.map(|w| WitnessMerkleNode::from_raw_hash(w.to_raw_hash())));
    let root =
        bitcoin::merkle_tree::calculate_root(leaves).expect("the coinbase leaf is always there");
    let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
    let mut script = Vec::with_capacity(38);
    script.extend_from_slice(&WITNESS_COMMITMENT_HEADER);
    script.extend_from_slice(commitment.as_byte_array());
    ScriptBuf::from_bytes(script)
}

/// Reads the BIP34 height a coinbase scriptSig starts with (`OP_1`..`OP_16`, or a minimal
/// little-endian number push), if it does.
pub fn bip34_height(script_sig: &[u8]) -> Option<u32> {
    match *script_sig.first()? {
        op @ 0x51..=0x60 => Some(u32::from(op - 0x50)),
        n @ 1..=4 => {
            let bytes = script_sig.get(1..=usize::from(n))?;
            let mut le = [0u8; 4];
            le[..bytes.len()].copy_from_slice(bytes);
            Some(u32::from_le_bytes(le))
        }
        _ => None,
    }
}

/// BIP141: a commitment output script starts with OP_RETURN, a 36-byte push and this header.
pub const WITNESS_COMMITMENT_HEADER: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

fn write_output(out: &mut Vec<u8>, value: Amount, script: &ScriptBuf) {
    out.extend_from_slice(&value.to_sat().to_le_bytes());
    VarInt::from(script.len())
        .consensus_encode(out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(script.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TemplateId;
    use crate::template::TemplateKind;
    use bitcoin::consensus::deserialize;
    use bitcoin::{BlockHash, CompactTarget, Network, Transaction};
    use std::sync::Arc;

    fn template(height: u32, commitment: bool) -> Template {
        Template {
            id: TemplateId::new(1),
            kind: TemplateKind::Full,
            network: Network::Regtest,
            height,
            prev_hash: BlockHash::all_zeros(),
            version: bitcoin::block::Version::from_consensus(0x2000_0000),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            min_time: 0,
            cur_time: 0,
            coinbase_value: Amount::from_sat(5_000_000_000),
            witness_commitment: commitment.then(|| {
                ScriptBuf::from_bytes(hex::decode("6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9").unwrap())
            }),
            txs: Arc::new(vec![]),
            merkle_path: vec![],
        }
    }

    fn config() -> CoinbaseConfig {
        CoinbaseConfig {
            payout_script: ScriptBuf::from_bytes(
                vec![0x00, 0x14].into_iter().chain([7u8; 20]).collect(),
            ),
            tag: b"/jd-proxy/".to_vec(),
        }
    }

    #[test]
    fn split_decodes_as_a_coinbase_with_bip34_height() {
        for (height, commitment) in [(1u32, false), (16, true), (17, true), (840_000, true)] {
            let split = CoinbaseSplit::build(&template(height, commitment), &config(), 8).unwrap();
            let en = [0xab; 8];
            let mut raw = Vec::new();
            split.write_for_block(&en, &mut raw);
            let tx: Transaction = deserialize(&raw).expect("valid transaction");
            assert!(tx.is_coinbase());
            assert_eq!(tx.output[0].value, Amount::from_sat(5_000_000_000));
            assert_eq!(tx.output.len(), 1 + usize::from(commitment));
            assert_eq!(tx.input[0].witness.len(), usize::from(commitment));
            // BIP34: the scriptSig starts with the height as Core encodes it.
            let expected_head = Builder::new().push_int(i64::from(height)).into_bytes();
            assert!(tx.input[0]
                .script_sig
                .as_bytes()
                .starts_with(&expected_head));
            assert!(tx.input[0].script_sig.as_bytes().ends_with(&en));
            // The txid (non-witness) is the one a miner computes from coinb1|en|coinb2.
            assert_eq!(split.txid(&[&en[..4], &en[4..]]), tx.compute_txid());
            assert_eq!(split.serialized_len(), raw.len());
        }
    }

    #[test]
    fn pool_parts_rebuild_the_same_transaction() {
        let t = template(300, true);
        let pool_script = ScriptBuf::from_bytes(vec![0x51]);
        let outputs = [(pool_script.clone(), Amount::from_sat(1234))];
        let fixed = [9u8, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0];
        let split = CoinbaseSplit::with_outputs(&t, b"/tag/", &outputs, &fixed, 8).unwrap();
        let en = [0xcd; 8];
        let mut raw = Vec::new();
        split.write_for_block(&en, &mut raw);
        let tx: Transaction = deserialize(&raw).unwrap();
        let sig = tx.input[0].script_sig.as_bytes();
        assert_eq!(sig.len(), split.script_sig_prefix().len() + 20);
        assert!(sig.starts_with(split.script_sig_prefix()));
        assert_eq!(
            *split.script_sig_prefix().last().unwrap(),
            20,
            "push of 20 bytes"
        );
        assert_eq!(&sig[sig.len() - 20..], &[&fixed[..], &en[..]].concat()[..]);
        assert_eq!(split.outputs(), bitcoin::consensus::serialize(&tx.output));
        assert_eq!(split.input_sequence(), tx.input[0].sequence.0);
        assert_eq!(split.lock_time(), tx.lock_time.to_consensus_u32());
        assert_eq!(split.tx_version(), 1);
        assert_eq!(split.bip34_height(), Some(300));
        // The same coinbase, split elsewhere (a pool's own job), hashes the same.
        let foreign =
            CoinbaseSplit::from_parts(split.prefix().to_vec(), split.suffix().to_vec(), 8).unwrap();
        assert_eq!(foreign.txid(&[&en]), tx.compute_txid());
        assert_eq!(foreign.bip34_height(), Some(300));
        // A JDS fills the whole push with zeros between the declared parts.
        let (p, s) = split.witness_parts().unwrap();
        let declared: Transaction = deserialize(&[&p[..], &[0u8; 20], &s[..]].concat()).unwrap();
        assert_eq!(declared.output, tx.output);
        assert_eq!(declared.input[0].script_sig.len(), sig.len());
        assert_eq!(declared.input[0].witness.len(), 1);
    }

    #[test]
    fn default_coinbase_is_small() {
        let split = CoinbaseSplit::build(&template(900_000, true), &config(), 8).unwrap();
        assert!(split.prefix().len() + 8 + split.suffix().len() < 160);
    }

    #[test]
    fn long_tag_is_refused() {
        let mut c = config();
        c.tag = vec![b'x'; 90];
        assert!(matches!(
            CoinbaseSplit::build(&template(1000, false), &c, 8),
            Err(CoinbaseError::ScriptSigTooLong { .. })
        ));
        assert_eq!(
            CoinbaseSplit::build(&template(1000, false), &config(), 0),
            Err(CoinbaseError::ExtranonceLen(0))
        );
    }

    #[test]
    fn witness_commitment_matches_cores() {
        // Core's commitment for a block with a coinbase only (regtest GBT on an empty mempool).
        assert_eq!(
            witness_commitment_script(std::iter::empty()).to_hex_string(),
            "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
        );
        let one = witness_commitment_script(std::iter::once(Wtxid::from_byte_array([1; 32])));
        assert_eq!(one.len(), 38);
        assert!(one.as_bytes().starts_with(&WITNESS_COMMITMENT_HEADER));
    }
}
