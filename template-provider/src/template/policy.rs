//! The farm's transaction policy, applied to a template whatever backend built it.
//!
//! A [`Policy`] removes transactions the farm does not want to mine (by txid, by output script
//! type, by OP_RETURN size, by fee rate) and keeps block weight free for a bigger coinbase. The
//! result is again a valid template: the descendants of every removed transaction go too, and
//! the merkle path, the coinbase value and the BIP141 witness commitment are recomputed.
//!
//! Pure: no I/O, no async. Transactions are decoded only when a rule needs their outputs
//! (script types, OP_RETURN size), and only those not already removed.
//!
//! Rules, in the order they are applied:
//! 1. per transaction, in template order: an excluded txid; a fee rate (the transaction's own
//!    fee over its own vsize, `ceil(weight / 4)`, not its package's) below `min_feerate`; an
//!    output whose script type is excluded; OP_RETURN outputs whose script sizes, summed over
//!    the transaction, exceed `max_datacarrier_bytes`. A transaction spending a removed one is
//!    removed with it.
//! 2. `weight_reserve`: transactions are dropped from the end of the list (the lowest priority
//!    in Core's ordering) until the kept ones weigh at most
//!    `4_000_000 - 4_000 - weight_reserve`. Descendants always follow their parents, so the
//!    last kept transaction never has a kept descendant.
//!
//! Descendants are found through [`TemplateTx::depends`]; a backend must fill it (the
//! `getblocktemplate` backend does).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bitcoin::consensus::encode;
use bitcoin::hashes::{sha256d, Hash, HashEngine};
use bitcoin::merkle_tree::calculate_root;
use bitcoin::{Amount, FeeRate, Script, ScriptBuf, Transaction, Txid, WitnessMerkleNode, Wtxid};
use serde::{Deserialize, Serialize};

use super::{merkle, Template, TemplateTx};

/// Consensus limit on block weight.
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// The weight Bitcoin Core keeps for the coinbase and header when it fills a template.
pub const CORE_COINBASE_RESERVE: u64 = 4_000;
/// The most weight transactions may take in a template: [`MAX_BLOCK_WEIGHT`] less
/// [`CORE_COINBASE_RESERVE`].
pub const MAX_TX_WEIGHT: u64 = MAX_BLOCK_WEIGHT - CORE_COINBASE_RESERVE;

/// BIP141: the coinbase output script starts with OP_RETURN, a 36-byte push and this header.
const WITNESS_COMMITMENT_HEADER: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// The kind of an output script, as Bitcoin Core's standardness rules name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScriptType {
    /// `<pubkey> OP_CHECKSIG`.
    P2pk,
    /// `OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG`.
    P2pkh,
    /// `OP_HASH160 <20> OP_EQUAL`.
    P2sh,
    /// Witness v0, 20-byte program.
    P2wpkh,
    /// Witness v0, 32-byte program.
    P2wsh,
    /// Witness v1, 32-byte program.
    P2tr,
    /// Any script starting with OP_RETURN (data carrier).
    OpReturn,
    /// `m <pubkey>... n OP_CHECKMULTISIG`, not wrapped in P2SH or P2WSH.
    BareMultisig,
    /// Everything else: non-standard scripts, pay-to-anchor (`OP_1 <4e73>`) and future witness
    /// versions or program sizes.
    Other,
}

impl ScriptType {
    /// Every type, in the order they are listed to users.
    pub const ALL: [ScriptType; 9] = [
        ScriptType::P2pk,
        ScriptType::P2pkh,
        ScriptType::P2sh,
        ScriptType::P2wpkh,
        ScriptType::P2wsh,
        ScriptType::P2tr,
        ScriptType::OpReturn,
        ScriptType::BareMultisig,
        ScriptType::Other,
    ];

    /// The type of an output script.
    pub fn of(script: &Script) -> ScriptType {
        if script.is_op_return() {
            ScriptType::OpReturn
        } else if script.is_p2pkh() {
            ScriptType::P2pkh
        } else if script.is_p2sh() {
            ScriptType::P2sh
        } else if script.is_p2wpkh() {
            ScriptType::P2wpkh
        } else if script.is_p2wsh() {
            ScriptType::P2wsh
        } else if script.is_p2tr() {
            ScriptType::P2tr
        } else if script.is_p2pk() {
            ScriptType::P2pk
        } else if script.is_multisig() {
            ScriptType::BareMultisig
        } else {
            ScriptType::Other
        }
    }

    /// The name used in configuration.
    pub const fn name(self) -> &'static str {
        match self {
            ScriptType::P2pk => "p2pk",
            ScriptType::P2pkh => "p2pkh",
            ScriptType::P2sh => "p2sh",
            ScriptType::P2wpkh => "p2wpkh",
            ScriptType::P2wsh => "p2wsh",
            ScriptType::P2tr => "p2tr",
            ScriptType::OpReturn => "op_return",
            ScriptType::BareMultisig => "bare-multisig",
            ScriptType::Other => "other",
        }
    }
}

impl fmt::Display for ScriptType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown script type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown script type {0:?}; expected one of p2pk, p2pkh, p2sh, p2wpkh, p2wsh, p2tr, op_return (or nulldata), bare-multisig (or multisig), other (or nonstandard)")]
pub struct UnknownScriptType(pub String);

impl FromStr for ScriptType {
    type Err = UnknownScriptType;

    /// Case-insensitive; `-` and `_` are the same; Core's names `nulldata`, `multisig` and
    /// `nonstandard` are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Ok(match norm.as_str() {
            "p2pk" | "pubkey" => ScriptType::P2pk,
            "p2pkh" | "pubkeyhash" => ScriptType::P2pkh,
            "p2sh" | "scripthash" => ScriptType::P2sh,
            "p2wpkh" | "witness_v0_keyhash" => ScriptType::P2wpkh,
            "p2wsh" | "witness_v0_scripthash" => ScriptType::P2wsh,
            "p2tr" | "witness_v1_taproot" => ScriptType::P2tr,
            "op_return" | "opreturn" | "nulldata" => ScriptType::OpReturn,
            "bare_multisig" | "multisig" => ScriptType::BareMultisig,
            "other" | "nonstandard" => ScriptType::Other,
            _ => return Err(UnknownScriptType(s.to_string())),
        })
    }
}

/// What the farm refuses to mine, and the block weight it keeps free.
///
/// Build one from a [`PolicyConfig`] (`Policy::try_from(config)`) or with the `with_*`
/// methods; [`Policy::default`] changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    exclude_txids: HashSet<Txid>,
    /// A transaction with an output of one of these types is removed (outputs only: the types
    /// of the coins it spends are not known without their previous transactions).
    exclude_script_types: HashSet<ScriptType>,
    /// The most bytes of OP_RETURN output scripts a transaction may carry: the sum, over all
    /// its outputs starting with OP_RETURN, of the whole script's size (OP_RETURN and push
    /// opcodes included), as Bitcoin Core's `-datacarriersize` counts (default 83 = 80 bytes of
    /// data + 3). `Some(0)` refuses every OP_RETURN output.
    max_datacarrier_bytes: Option<usize>,
    /// The lowest fee rate of a transaction's own fee over its own vsize (`ceil(weight / 4)`).
    min_feerate: Option<FeeRate>,
    /// Block weight kept free beyond Core's own 4,000 for the coinbase; 0 trusts the node's
    /// limit and never drops a transaction for weight.
    weight_reserve: u64,
}

/// Why a transaction was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovalReason {
    /// Its txid is excluded.
    ExcludedTxid,
    /// It pays an output of an excluded type.
    ScriptType(ScriptType),
    /// Its OP_RETURN output scripts total `bytes`, above the limit.
    Datacarrier { bytes: usize },
    /// It pays `fee` for `vsize` vbytes, below the minimum fee rate.
    Feerate { fee: Amount, vsize: u64 },
    /// It spends `parent`, which was removed.
    Descendant { parent: Txid },
    /// Dropped from the end of the template to keep the weight reserve free.
    WeightReserve,
}

impl fmt::Display for RemovalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemovalReason::ExcludedTxid => f.write_str("txid excluded"),
            RemovalReason::ScriptType(t) => write!(f, "pays a {t} output"),
            RemovalReason::Datacarrier { bytes } => {
                write!(f, "{bytes} bytes of OP_RETURN scripts")
            }
            RemovalReason::Feerate { fee, vsize } => {
                write!(f, "fee {} sat for {vsize} vB", fee.to_sat())
            }
            RemovalReason::Descendant { parent } => write!(f, "spends removed {parent}"),
            RemovalReason::WeightReserve => f.write_str("weight reserve"),
        }
    }
}

/// One removed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub txid: Txid,
    pub fee: Option<Amount>,
    pub weight: u64,
    pub reason: RemovalReason,
}

/// What [`Policy::apply_with_report`] did.
#[derive(Debug, Clone)]
pub struct PolicyOutcome {
    /// The filtered template; `None` when nothing was removed (use the original).
    pub template: Option<Template>,
    /// The removed transactions, in template order.
    pub removed: Vec<Removal>,
}

/// Why a policy could not be applied to a template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A removed transaction's fee is unknown, so the coinbase value cannot be corrected.
    #[error("transaction {txid} is removed by the policy ({reason}) but the template does not say its fee, so the coinbase value cannot be corrected")]
    UnknownFee { txid: Txid, reason: RemovalReason },
    /// `min_feerate` is set and a transaction's fee is unknown.
    #[error("min_feerate is set but the template does not say the fee of transaction {txid}")]
    FeeNeededForFeerate { txid: Txid },
    /// A transaction's data does not decode (only decoded for script-type and OP_RETURN rules,
    /// or when the template gives no weight).
    #[error("transaction {txid} (position {index}) does not decode: {source}")]
    Decode {
        index: usize,
        txid: Txid,
        source: encode::Error,
    },
    /// `depends` names a position that is not an earlier transaction.
    #[error("transaction {txid} at position {index} depends on position {parent}, which is not an earlier transaction of the template")]
    BadDepends {
        index: usize,
        txid: Txid,
        parent: usize,
    },
    /// The removed fees exceed the coinbase value: the template's fees are inconsistent.
    #[error("removed fees of {removed} exceed the template's coinbase value of {coinbase_value}")]
    CoinbaseValue {
        coinbase_value: Amount,
        removed: Amount,
    },
}

impl Policy {
    /// A policy that changes nothing; add rules with the `with_*` methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also excludes `txid` (and its descendants).
    #[must_use]
    pub fn with_excluded_txid(mut self, txid: Txid) -> Self {
        self.exclude_txids.insert(txid);
        self
    }

    /// Also excludes transactions paying an output of type `t`.
    #[must_use]
    pub fn with_excluded_script_type(mut self, t: ScriptType) -> Self {
        self.exclude_script_types.insert(t);
        self
    }

    /// Sets the most bytes of OP_RETURN scripts per transaction (see the field's meaning on
    /// [`Policy`]).
    #[must_use]
    pub fn with_max_datacarrier_bytes(mut self, bytes: usize) -> Self {
        self.max_datacarrier_bytes = Some(bytes);
        self
    }

    /// Sets the lowest fee rate a transaction must pay on its own.
    #[must_use]
    pub fn with_min_feerate(mut self, rate: FeeRate) -> Self {
        self.min_feerate = Some(rate);
        self
    }

    /// Sets the block weight kept free beyond Core's own coinbase reserve.
    #[must_use]
    pub fn with_weight_reserve(mut self, weight: u64) -> Self {
        self.weight_reserve = weight;
        self
    }

    pub fn excluded_txids(&self) -> &HashSet<Txid> {
        &self.exclude_txids
    }

    pub fn excluded_script_types(&self) -> &HashSet<ScriptType> {
        &self.exclude_script_types
    }

    pub fn max_datacarrier_bytes(&self) -> Option<usize> {
        self.max_datacarrier_bytes
    }

    pub fn min_feerate(&self) -> Option<FeeRate> {
        self.min_feerate
    }

    pub fn weight_reserve(&self) -> u64 {
        self.weight_reserve
    }

    /// The most weight the kept transactions may have.
    pub fn max_tx_weight(&self) -> u64 {
        MAX_TX_WEIGHT.saturating_sub(self.weight_reserve)
    }

    /// Whether the policy never changes a template.
    pub fn is_empty(&self) -> bool {
        self.exclude_txids.is_empty()
            && self.exclude_script_types.is_empty()
            && self.max_datacarrier_bytes.is_none()
            && self.min_feerate.is_none()
            && self.weight_reserve == 0
    }

    /// Applies the policy to `template`.
    ///
    /// Returns `None` when no transaction is removed: the template is fine as it is. Otherwise
    /// a template with the same id, kind, height, previous hash, bits, version and times, the
    /// kept transactions in their order (`depends` renumbered), and a recomputed merkle path,
    /// coinbase value and witness commitment.
    ///
    /// # Errors
    /// See [`PolicyError`]: a removed transaction of unknown fee, undecodable data, or
    /// inconsistent `depends`.
    pub fn apply(&self, template: &Template) -> Result<Option<Template>, PolicyError> {
        self.apply_with_report(template).map(|o| o.template)
    }

    /// [`apply`](Self::apply), also saying which transactions were removed and why.
    ///
    /// # Errors
    /// As [`apply`](Self::apply).
    pub fn apply_with_report(&self, template: &Template) -> Result<PolicyOutcome, PolicyError> {
        if self.is_empty() || template.txs.is_empty() {
            return Ok(PolicyOutcome {
                template: None,
                removed: Vec::new(),
            });
        }
        let txs = &template.txs;
        let mut removed: Vec<Option<RemovalReason>> = vec![None; txs.len()];
        // Weights, filled in only when a rule needs them (a template may leave them at 0).
        let mut weights: Vec<Option<u64>> = vec![None; txs.len()];
        let decode_outputs =
            !self.exclude_script_types.is_empty() || self.max_datacarrier_bytes.is_some();

        for (index, tx) in txs.iter().enumerate() {
            if let Some(&parent) = tx.depends.iter().find(|&&p| p >= index) {
                return Err(PolicyError::BadDepends {
                    index,
                    txid: tx.txid,
                    parent,
                });
            }
            if let Some(&parent) = tx.depends.iter().find(|&&p| removed[p].is_some()) {
                removed[index] = Some(RemovalReason::Descendant {
                    parent: txs[parent].txid,
                });
                continue;
            }
            if self.exclude_txids.contains(&tx.txid) {
                removed[index] = Some(RemovalReason::ExcludedTxid);
                continue;
            }
            if let Some(rate) = self.min_feerate {
                let fee = tx
                    .fee
                    .ok_or(PolicyError::FeeNeededForFeerate { txid: tx.txid })?;
                let weight = *weights[index].get_or_insert(weight_of(index, tx)?);
                let vsize = weight.div_ceil(4);
                // fee / vsize >= sat_per_kwu * 4 / 1000, in integers.
                let paid = u128::from(fee.to_sat()) * 1000;
                let wanted = u128::from(rate.to_sat_per_kwu()) * 4 * u128::from(vsize);
                if paid < wanted {
                    removed[index] = Some(RemovalReason::Feerate { fee, vsize });
                    continue;
                }
            }
            if decode_outputs {
                let decoded = decode(index, tx)?;
                if let Some(reason) = self.output_rule(&decoded) {
                    removed[index] = Some(reason);
                    continue;
                }
            }
        }

        if self.weight_reserve > 0 {
            let limit = self.max_tx_weight();
            let mut total: u64 = 0;
            for (index, tx) in txs.iter().enumerate() {
                if removed[index].is_none() {
                    total += *weights[index].get_or_insert(weight_of(index, tx)?);
                }
            }
            // Parents precede children, so the last kept transaction has no kept descendant:
            // dropping from the end keeps every kept transaction's parents.
            for index in (0..txs.len()).rev() {
                if total <= limit {
                    break;
                }
                if removed[index].is_none() {
                    removed[index] = Some(RemovalReason::WeightReserve);
                    total -= weights[index].expect("filled for every kept transaction");
                }
            }
        }

        if removed.iter().all(Option::is_none) {
            return Ok(PolicyOutcome {
                template: None,
                removed: Vec::new(),
            });
        }

        let mut removals = Vec::new();
        let mut removed_fees = Amount::ZERO;
        let mut new_pos: Vec<Option<usize>> = vec![None; txs.len()];
        let mut kept: Vec<TemplateTx> = Vec::with_capacity(txs.len());
        for (index, (tx, reason)) in txs.iter().zip(removed).enumerate() {
            match reason {
                Some(reason) => {
                    let fee = match tx.fee {
                        Some(fee) => fee,
                        None => {
                            return Err(PolicyError::UnknownFee {
                                txid: tx.txid,
                                reason,
                            })
                        }
                    };
                    removed_fees += fee;
                    removals.push(Removal {
                        txid: tx.txid,
                        fee: tx.fee,
                        weight: weights[index].unwrap_or(tx.weight),
                        reason,
                    });
                }
                None => {
                    new_pos[index] = Some(kept.len());
                    let mut tx = tx.clone();
                    for d in &mut tx.depends {
                        *d = new_pos[*d].expect("a kept transaction's parents are kept");
                    }
                    kept.push(tx);
                }
            }
        }
        let coinbase_value = template.coinbase_value.checked_sub(removed_fees).ok_or(
            PolicyError::CoinbaseValue {
                coinbase_value: template.coinbase_value,
                removed: removed_fees,
            },
        )?;
        let merkle_path = merkle::coinbase_path(kept.iter().map(|t| t.txid));
        let witness_commitment = template
            .witness_commitment
            .as_ref()
            .map(|_| witness_commitment_script(kept.iter().map(|t| t.wtxid)));
        Ok(PolicyOutcome {
            template: Some(Template {
                coinbase_value,
                witness_commitment,
                txs: Arc::new(kept),
                merkle_path,
                ..template.clone()
            }),
            removed: removals,
        })
    }

    /// The script-type and OP_RETURN rules, on a decoded transaction.
    fn output_rule(&self, tx: &Transaction) -> Option<RemovalReason> {
        let mut datacarrier = 0usize;
        for out in &tx.output {
            let script = out.script_pubkey.as_script();
            if !self.exclude_script_types.is_empty() {
                let t = ScriptType::of(script);
                if self.exclude_script_types.contains(&t) {
                    return Some(RemovalReason::ScriptType(t));
                }
            }
            if script.is_op_return() {
                datacarrier += script.len();
            }
        }
        match self.max_datacarrier_bytes {
            Some(max) if datacarrier > max => {
                Some(RemovalReason::Datacarrier { bytes: datacarrier })
            }
            _ => None,
        }
    }
}

fn decode(index: usize, tx: &TemplateTx) -> Result<Transaction, PolicyError> {
    encode::deserialize::<Transaction>(&tx.data).map_err(|source| PolicyError::Decode {
        index,
        txid: tx.txid,
        source,
    })
}

/// The template's weight for the transaction, or its decoded weight when the template has none.
fn weight_of(index: usize, tx: &TemplateTx) -> Result<u64, PolicyError> {
    if tx.weight > 0 {
        return Ok(tx.weight);
    }
    Ok(decode(index, tx)?.weight().to_wu())
}

/// The BIP141 witness commitment output script for a block whose non-coinbase transactions
/// have `wtxids` (in block order), with the all-zero witness reserved value the coinbase
/// carries: `OP_RETURN PUSH36 aa21a9ed SHA256d(witness root || 32 zero bytes)`, where the
/// witness root is the merkle root of `[0x00…00 (coinbase), wtxids…]`.
pub fn witness_commitment_script(wtxids: impl Iterator<Item = Wtxid>) -> ScriptBuf {
    let leaves = std::iter::once(WitnessMerkleNode::all_zeros())
        .chain(wtxids.map(|w| WitnessMerkleNode::from_byte_array(w.to_byte_array())));
    let root = calculate_root(leaves).expect("at least the coinbase leaf");
    let mut engine = sha256d::Hash::engine();
    engine.input(root.as_byte_array());
    engine.input(&[0u8; 32]);
    let commitment = sha256d::Hash::from_engine(engine);
    let mut script = Vec::with_capacity(38);
    script.extend_from_slice(&WITNESS_COMMITMENT_HEADER);
    script.extend_from_slice(commitment.as_byte_array());
    ScriptBuf::from_bytes(script)
}

/// The policy as written in a configuration file: strings and numbers.
///
/// ```toml
/// exclude_txids = ["<64 hex digits, as RPC shows txids>"]
/// exclude_script_types = ["bare-multisig", "p2pk"]
/// max_datacarrier_bytes = 83     # sum of OP_RETURN script sizes per transaction
/// min_feerate = 1.5              # sat/vB, the transaction's own
/// weight_reserve = 8000          # weight units kept free beyond Core's 4000
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Txids (hex, as the node's RPC shows them) never to mine, nor their descendants.
    pub exclude_txids: Vec<String>,
    /// Output script types never to mine: `p2pk`, `p2pkh`, `p2sh`, `p2wpkh`, `p2wsh`, `p2tr`,
    /// `op_return`, `bare-multisig`, `other`.
    pub exclude_script_types: Vec<String>,
    /// The most bytes of OP_RETURN output scripts per transaction (summed over its outputs,
    /// whole scripts counted, as Core's `-datacarriersize`).
    pub max_datacarrier_bytes: Option<usize>,
    /// The lowest fee rate in sat/vB of a transaction's own fee over its own vsize.
    pub min_feerate: Option<f64>,
    /// Block weight kept free beyond Core's 4,000 for the coinbase.
    pub weight_reserve: u64,
    /// Txids to mine first: the node is told once at start (`prioritisetransaction`), so its
    /// own block assembly ranks them as if they paid this much more fee.
    pub prioritise_txids: Vec<String>,
    /// The fee bonus for `prioritise_txids`, in satoshis (default 1 BTC: top of any block).
    pub prioritise_fee_sat: Option<i64>,
}

/// A bad value in a [`PolicyConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyConfigError {
    #[error("exclude_txids: {value:?} is not a txid (64 hex digits): {reason}")]
    Txid { value: String, reason: String },
    #[error("exclude_script_types: {0}")]
    ScriptType(#[from] UnknownScriptType),
    #[error(
        "min_feerate: {value} sat/vB is not a finite fee rate between 0 and {MAX_FEERATE_SAT_VB}"
    )]
    Feerate { value: f64 },
    #[error("weight_reserve: {value} is above the {MAX_TX_WEIGHT} weight units a block leaves for transactions")]
    WeightReserve { value: u64 },
}

/// The highest `min_feerate` accepted, in sat/vB (far above any real fee market).
pub const MAX_FEERATE_SAT_VB: f64 = 1_000_000.0;

impl TryFrom<PolicyConfig> for Policy {
    type Error = PolicyConfigError;

    fn try_from(config: PolicyConfig) -> Result<Self, Self::Error> {
        let exclude_txids = config
            .exclude_txids
            .iter()
            .map(|s| {
                Txid::from_str(s.trim()).map_err(|e| PolicyConfigError::Txid {
                    value: s.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let exclude_script_types = config
            .exclude_script_types
            .iter()
            .map(|s| ScriptType::from_str(s))
            .collect::<Result<_, _>>()?;
        let min_feerate = config
            .min_feerate
            .map(|value| {
                if value.is_finite() && (0.0..=MAX_FEERATE_SAT_VB).contains(&value) {
                    // 1 sat/vB = 250 sat per 1000 weight units.
                    // In range and non-negative, so the cast is exact after rounding.
                    Ok(FeeRate::from_sat_per_kwu((value * 250.0).round() as u64))
                } else {
                    Err(PolicyConfigError::Feerate { value })
                }
            })
            .transpose()?;
        if config.weight_reserve > MAX_TX_WEIGHT {
            return Err(PolicyConfigError::WeightReserve {
                value: config.weight_reserve,
            });
        }
        Ok(Policy {
            exclude_txids,
            exclude_script_types,
            max_datacarrier_bytes: config.max_datacarrier_bytes,
            min_feerate,
            weight_reserve: config.weight_reserve,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::coinbase::{CoinbaseConfig, CoinbaseSplit};
    use crate::template::{TemplateId, TemplateKind};
    use bitcoin::absolute::LockTime;
    use bitcoin::block::{Header, Version as BlockVersion};
    use bitcoin::consensus::{deserialize, serialize};
    use bitcoin::hashes::hash160;
    use bitcoin::key::{CompressedPublicKey, Secp256k1};
    use bitcoin::opcodes::all::OP_RETURN;
    use bitcoin::script::{Builder, PushBytesBuf};
    use bitcoin::secp256k1::{Message, SecretKey};
    use bitcoin::sighash::{EcdsaSighashType, SighashCache};
    use bitcoin::transaction::Version;
    use bitcoin::{
        Block, BlockHash, CompactTarget, Network, OutPoint, PubkeyHash, Sequence, TxIn,
        TxMerkleNode, TxOut, Witness,
    };

    /// A key that signs P2WPKH spends for real (deterministic).
    struct Signer {
        secp: Secp256k1<bitcoin::secp256k1::All>,
        key: SecretKey,
        public: CompressedPublicKey,
        spk: ScriptBuf,
    }

    impl Signer {
        fn new() -> Self {
            let secp = Secp256k1::new();
            let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
            let public = CompressedPublicKey(key.public_key(&secp));
            let spk = ScriptBuf::new_p2wpkh(&public.wpubkey_hash());
            Signer {
                secp,
                key,
                public,
                spk,
            }
        }

        /// Spends `inputs` (outpoint, value, all paying `self.spk`) to `outputs`, signed.
        fn spend(&self, inputs: &[(OutPoint, u64)], outputs: Vec<TxOut>) -> Transaction {
            let mut tx = Transaction {
                version: Version::TWO,
                lock_time: LockTime::ZERO,
                input: inputs
                    .iter()
                    .map(|(op, _)| TxIn {
                        previous_output: *op,
                        script_sig: ScriptBuf::new(),
                        sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                        witness: Witness::new(),
                    })
                    .collect(),
                output: outputs,
            };
            let mut cache = SighashCache::new(&mut tx);
            let mut witnesses = Vec::new();
            for (i, (_, value)) in inputs.iter().enumerate() {
                let sighash = cache
                    .p2wpkh_signature_hash(
                        i,
                        &self.spk,
                        Amount::from_sat(*value),
                        EcdsaSighashType::All,
                    )
                    .unwrap();
                let signature = self.secp.sign_ecdsa(&Message::from(sighash), &self.key);
                let sig = bitcoin::ecdsa::Signature {
                    signature,
                    sighash_type: EcdsaSighashType::All,
                };
                witnesses.push(Witness::p2wpkh(&sig, &self.public.0));
            }
            for (input, w) in tx.input.iter_mut().zip(witnesses) {
                input.witness = w;
            }
            tx
        }

        fn out(&self, sat: u64) -> TxOut {
            TxOut {
                value: Amount::from_sat(sat),
                script_pubkey: self.spk.clone(),
            }
        }
    }

    /// A confirmed coin outside the template.
    fn coin(n: u8) -> (OutPoint, u64) {
        (
            OutPoint::new(Txid::from_byte_array([n; 32]), u32::from(n)),
            100_000,
        )
    }

    fn op_return(len: usize) -> TxOut {
        let data = PushBytesBuf::try_from(vec![0x42u8; len]).unwrap();
        TxOut {
            value: Amount::ZERO,
            script_pubkey: Builder::new()
                .push_opcode(OP_RETURN)
                .push_slice(data)
                .into_script(),
        }
    }

    const SUBSIDY: u64 = 5_000_000_000;

    /// Positions in the fixture template.
    const P: usize = 0; // parent, fee 1000
    const A: usize = 1; // ordinary, fee 2000
    const C: usize = 2; // child of P, fee 2000
    const G: usize = 3; // grandchild (child of C), fee 1000
    const D: usize = 4; // 60-byte OP_RETURN, fee 3000
    const L: usize = 5; // pays P2PKH, fee 5000
    const B: usize = 6; // ordinary, fee 200 (under 2 sat/vB)
    const E: usize = 7; // child of A, fee 500 (about 4.5 sat/vB)
    const FEES: [u64; 8] = [1_000, 2_000, 2_000, 1_000, 3_000, 5_000, 200, 500];

    struct Fixture {
        template: Template,
        txs: Vec<Transaction>,
    }

    fn fixture() -> Fixture {
        let s = Signer::new();
        let p = s.spend(&[coin(1)], vec![s.out(100_000 - FEES[P])]);
        let a = s.spend(&[coin(2)], vec![s.out(100_000 - FEES[A])]);
        let p_out = (OutPoint::new(p.compute_txid(), 0), 100_000 - FEES[P]);
        let c = s.spend(&[p_out], vec![s.out(p_out.1 - FEES[C])]);
        let c_out = (OutPoint::new(c.compute_txid(), 0), p_out.1 - FEES[C]);
        let g = s.spend(&[c_out], vec![s.out(c_out.1 - FEES[G])]);
        let d = s.spend(&[coin(3)], vec![op_return(60), s.out(100_000 - FEES[D])]);
        let legacy = ScriptBuf::new_p2pkh(&PubkeyHash::from_raw_hash(hash160::Hash::hash(
            &s.public.to_bytes(),
        )));
        let l = s.spend(
            &[coin(4)],
            vec![TxOut {
                value: Amount::from_sat(100_000 - FEES[L]),
                script_pubkey: legacy,
            }],
        );
        let b = s.spend(&[coin(5)], vec![s.out(100_000 - FEES[B])]);
        let a_out = (OutPoint::new(a.compute_txid(), 0), 100_000 - FEES[A]);
        let e = s.spend(&[a_out], vec![s.out(a_out.1 - FEES[E])]);
        let txs = vec![p, a, c, g, d, l, b, e];
        let depends: [&[usize]; 8] = [&[], &[], &[P], &[C], &[], &[], &[], &[A]];
        let template = template_of(&txs, &depends, &FEES);
        Fixture { template, txs }
    }

    fn template_of(txs: &[Transaction], depends: &[&[usize]], fees: &[u64]) -> Template {
        let ttxs: Vec<TemplateTx> = txs
            .iter()
            .zip(depends)
            .zip(fees)
            .map(|((tx, deps), fee)| TemplateTx {
                txid: tx.compute_txid(),
                wtxid: tx.compute_wtxid(),
                data: serialize(tx),
                fee: Some(Amount::from_sat(*fee)),
                weight: tx.weight().to_wu(),
                depends: deps.to_vec(),
            })
            .collect();
        Template {
            id: TemplateId::new(42),
            kind: TemplateKind::Full,
            network: Network::Regtest,
            height: 200,
            prev_hash: BlockHash::from_byte_array([9; 32]),
            version: 0x2000_0000,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            min_time: 1_700_000_000,
            cur_time: 1_700_000_100,
            coinbase_value: Amount::from_sat(SUBSIDY + fees.iter().sum::<u64>()),
            witness_commitment: Some(bitcoin_commitment(ttxs.iter().map(|t| t.wtxid))),
            merkle_path: merkle::coinbase_path(ttxs.iter().map(|t| t.txid)),
            txs: Arc::new(ttxs),
        }
    }

    /// The commitment script computed by the bitcoin crate's own functions.
    fn bitcoin_commitment(wtxids: impl Iterator<Item = Wtxid>) -> ScriptBuf {
        let leaves = std::iter::once(Wtxid::all_zeros())
            .chain(wtxids)
            .map(|w| w.to_raw_hash());
        let root: WitnessMerkleNode = calculate_root(leaves).unwrap().into();
        let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
        let mut script = hex::decode("6a24aa21a9ed").unwrap();
        script.extend_from_slice(commitment.as_byte_array());
        ScriptBuf::from_bytes(script)
    }

    fn txids(t: &Template) -> Vec<Txid> {
        t.txs.iter().map(|t| t.txid).collect()
    }

    fn fixture_txids(f: &Fixture, positions: &[usize]) -> Vec<Txid> {
        positions.iter().map(|&i| f.txs[i].compute_txid()).collect()
    }

    /// Checks everything a filtered template must get right against the bitcoin crate and a
    /// full block built from it.
    fn assert_consistent(original: &Template, t: &Template, f: &Fixture) {
        assert_eq!(t.id, original.id);
        assert_eq!(t.kind, original.kind);
        assert_eq!(t.height, original.height);
        assert_eq!(t.prev_hash, original.prev_hash);
        assert_eq!(t.bits, original.bits);
        assert_eq!(t.version, original.version);
        assert_eq!(
            (t.min_time, t.cur_time),
            (original.min_time, original.cur_time)
        );
        // Coinbase value: subsidy plus the kept fees.
        assert_eq!(t.coinbase_value, Amount::from_sat(SUBSIDY) + t.fees());
        // Depends renumbered: every parent is a kept, earlier transaction that the child spends.
        for (i, tx) in t.txs.iter().enumerate() {
            let decoded: Transaction = deserialize(&tx.data).unwrap();
            for &d in &tx.depends {
                assert!(d < i);
                assert!(decoded
                    .input
                    .iter()
                    .any(|inp| inp.previous_output.txid == t.txs[d].txid));
            }
            // Every in-template parent is listed.
            for inp in &decoded.input {
                if let Some(pos) = t
                    .txs
                    .iter()
                    .position(|x| x.txid == inp.previous_output.txid)
                {
                    assert!(
                        tx.depends.contains(&pos),
                        "tx {i} spends {pos}, not in depends"
                    );
                }
                assert!(
                    !f.txs
                        .iter()
                        .any(|x| x.compute_txid() == inp.previous_output.txid)
                        || t.txs.iter().any(|x| x.txid == inp.previous_output.txid),
                    "tx {i} spends a removed transaction"
                );
            }
        }
        // Merkle root through the path equals the bitcoin crate's over all txids.
        let cb_txid = Txid::from_byte_array([0xcb; 32]);
        let all = std::iter::once(cb_txid)
            .chain(t.txs.iter().map(|x| x.txid))
            .map(|x| TxMerkleNode::from_byte_array(x.to_byte_array()));
        assert_eq!(
            merkle::root_from_path(cb_txid, &t.merkle_path),
            calculate_root(all).unwrap()
        );
        // The commitment equals the bitcoin crate's over the kept wtxids.
        assert_eq!(
            t.witness_commitment.as_ref().unwrap(),
            &bitcoin_commitment(t.txs.iter().map(|x| x.wtxid))
        );
        // And a whole block built from the template passes the crate's own checks.
        let config = CoinbaseConfig {
            payout_script: Signer::new().spk,
            tag: b"/policy/".to_vec(),
        };
        let coinbase = CoinbaseSplit::build(t, &config, 8).unwrap();
        let en = [0u8; 8];
        let header = Header {
            version: BlockVersion::from_consensus(t.version),
            prev_blockhash: t.prev_hash,
            merkle_root: merkle::root_from_path(coinbase.txid(&[&en]), &t.merkle_path),
            time: t.cur_time,
            bits: t.bits,
            nonce: 0,
        };
        let block: Block = deserialize(&t.assemble_block(&header, &coinbase, &en)).unwrap();
        assert!(block.check_merkle_root());
        assert!(block.check_witness_commitment());
        assert_eq!(block.txdata[0].output[0].value, t.coinbase_value);
    }

    #[test]
    fn fixture_is_a_valid_template() {
        let f = fixture();
        assert_consistent(&f.template, &f.template, &f);
    }

    #[test]
    fn empty_policy_and_unmatched_rules_change_nothing() {
        let f = fixture();
        assert!(Policy::new().is_empty());
        assert!(Policy::new().apply(&f.template).unwrap().is_none());
        let unmatched = Policy::new()
            .with_excluded_txid(Txid::from_byte_array([1; 32]))
            .with_excluded_script_type(ScriptType::P2tr)
            .with_max_datacarrier_bytes(83)
            .with_min_feerate(FeeRate::from_sat_per_vb(1).unwrap())
            .with_weight_reserve(10_000);
        assert!(!unmatched.is_empty());
        assert!(unmatched.apply(&f.template).unwrap().is_none());
    }

    #[test]
    fn excluded_txid_takes_its_descendants() {
        let f = fixture();
        let policy = Policy::new().with_excluded_txid(f.txs[P].compute_txid());
        let outcome = policy.apply_with_report(&f.template).unwrap();
        let t = outcome.template.unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[A, D, L, B, E]));
        assert_eq!(
            t.coinbase_value,
            f.template.coinbase_value - Amount::from_sat(FEES[P] + FEES[C] + FEES[G])
        );
        // E spends A, now at position 0.
        assert_eq!(t.txs[4].depends, vec![0]);
        let reasons: Vec<_> = outcome.removed.iter().map(|r| &r.reason).collect();
        assert_eq!(
            reasons,
            [
                &RemovalReason::ExcludedTxid,
                &RemovalReason::Descendant {
                    parent: f.txs[P].compute_txid()
                },
                &RemovalReason::Descendant {
                    parent: f.txs[C].compute_txid()
                },
            ]
        );
        assert_consistent(&f.template, &t, &f);
    }

    #[test]
    fn excluded_child_leaves_parent() {
        let f = fixture();
        let t = Policy::new()
            .with_excluded_txid(f.txs[C].compute_txid())
            .apply(&f.template)
            .unwrap()
            .unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[P, A, D, L, B, E]));
        assert_consistent(&f.template, &t, &f);
    }

    #[test]
    fn script_type_exclusion() {
        let f = fixture();
        let t = Policy::new()
            .with_excluded_script_type(ScriptType::P2pkh)
            .apply(&f.template)
            .unwrap()
            .unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[P, A, C, G, D, B, E]));
        assert_consistent(&f.template, &t, &f);

        let t = Policy::new()
            .with_excluded_script_type(ScriptType::OpReturn)
            .apply(&f.template)
            .unwrap()
            .unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[P, A, C, G, L, B, E]));
        assert_consistent(&f.template, &t, &f);

        // Every transaction pays P2WPKH except L (P2PKH only): only L stays.
        let t = Policy::new()
            .with_excluded_script_type(ScriptType::P2wpkh)
            .apply(&f.template)
            .unwrap()
            .unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[L]));
        assert_consistent(&f.template, &t, &f);
    }

    #[test]
    fn script_types_are_classified() {
        let s = Signer::new();
        let cases = [
            (s.spk.clone(), ScriptType::P2wpkh),
            (
                ScriptBuf::new_p2pk(&bitcoin::PublicKey::new(s.public.0)),
                ScriptType::P2pk,
            ),
            (
                ScriptBuf::new_p2sh(&bitcoin::ScriptHash::from_byte_array([1; 20])),
                ScriptType::P2sh,
            ),
            (
                ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([1; 32])),
                ScriptType::P2wsh,
            ),
            (
                ScriptBuf::from_bytes(
                    [0x51, 0x20]
                        .into_iter()
                        .chain([3u8; 32])
                        .collect::<Vec<_>>(),
                ),
                ScriptType::P2tr,
            ),
            (op_return(10).script_pubkey, ScriptType::OpReturn),
            (
                Builder::new()
                    .push_int(1)
                    .push_key(&bitcoin::PublicKey::new(s.public.0))
                    .push_int(1)
                    .push_opcode(bitcoin::opcodes::all::OP_CHECKMULTISIG)
                    .into_script(),
                ScriptType::BareMultisig,
            ),
            (
                ScriptBuf::from_bytes(vec![0x51, 0x02, 0x4e, 0x73]),
                ScriptType::Other,
            ),
            (ScriptBuf::from_bytes(vec![0x51]), ScriptType::Other),
        ];
        for (script, expected) in cases {
            assert_eq!(ScriptType::of(&script), expected, "{script}");
            assert_eq!(expected.name().parse::<ScriptType>().unwrap(), expected);
        }
        assert_eq!(
            "NullData".parse::<ScriptType>().unwrap(),
            ScriptType::OpReturn
        );
        assert_eq!(
            "bare_multisig".parse::<ScriptType>().unwrap(),
            ScriptType::BareMultisig
        );
        assert_eq!(
            "nonstandard".parse::<ScriptType>().unwrap(),
            ScriptType::Other
        );
    }

    #[test]
    fn datacarrier_limit_counts_whole_op_return_scripts() {
        let f = fixture();
        // 60 bytes of data: OP_RETURN OP_PUSHBYTES_60 <60> is a 62-byte script.
        let at = |max: usize| {
            Policy::new()
                .with_max_datacarrier_bytes(max)
                .apply(&f.template)
                .unwrap()
        };
        assert!(at(62).is_none());
        let t = at(61).unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[P, A, C, G, L, B, E]));
        assert_consistent(&f.template, &t, &f);
        let t = at(40).unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[P, A, C, G, L, B, E]));

        // Two OP_RETURN outputs in one transaction: their sizes add up (12 + 12).
        let s = Signer::new();
        let two = s.spend(
            &[coin(9)],
            vec![op_return(10), op_return(10), s.out(90_000)],
        );
        let t2 = template_of(&[two], &[&[]], &[10_000]);
        let at2 = |max: usize| {
            Policy::new()
                .with_max_datacarrier_bytes(max)
                .apply(&t2)
                .unwrap()
        };
        assert!(at2(24).is_none());
        assert!(at2(23).unwrap().txs.is_empty());
    }

    #[test]
    fn min_feerate_on_own_fee_and_vsize() {
        let f = fixture();
        let vsize = |i: usize| f.txs[i].weight().to_wu().div_ceil(4);
        // Check the fixture's rates: B under 2 sat/vB, E under 5, the rest at 9 or more.
        assert!(FEES[B] < 2 * vsize(B) && FEES[E] < 5 * vsize(E) && FEES[E] > 4 * vsize(E));
        assert!((0..8)
            .filter(|&i| i != B && i != E)
            .all(|i| FEES[i] >= 9 * vsize(i)));

        let rate = |sat_vb: u64| FeeRate::from_sat_per_vb(sat_vb).unwrap();
        let t = Policy::new()
            .with_min_feerate(rate(5))
            .apply(&f.template)
            .unwrap()
            .unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[P, A, C, G, D, L]));
        assert_consistent(&f.template, &t, &f);

        // At 10 sat/vB, P goes and takes C (which pays enough on its own) and G with it.
        assert!(FEES[P] < 10 * vsize(P) && FEES[C] >= 10 * vsize(C));
        let outcome = Policy::new()
            .with_min_feerate(rate(10))
            .apply_with_report(&f.template)
            .unwrap();
        let t = outcome.template.unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[A, D, L]));
        assert!(matches!(
            outcome.removed[0].reason,
            RemovalReason::Feerate { fee, vsize: v } if fee.to_sat() == FEES[P] && v == vsize(P)
        ));
        assert_consistent(&f.template, &t, &f);

        // Exactly the transaction's rate passes (fractional rates from the config too).
        let exact = FEES[B] as f64 / vsize(B) as f64;
        let at = |sat_vb: f64| {
            Policy::try_from(PolicyConfig {
                min_feerate: Some(sat_vb),
                ..Default::default()
            })
            .unwrap()
            .apply(&f.template)
            .unwrap()
        };
        assert!(at(exact - 0.01).is_none());
        assert_eq!(
            txids(&at(exact + 0.01).unwrap()),
            fixture_txids(&f, &[P, A, C, G, D, L, E])
        );
    }

    #[test]
    fn weight_reserve_drops_from_the_end() {
        let f = fixture();
        let w: Vec<u64> = f.template.txs.iter().map(|t| t.weight).collect();
        let total: u64 = w.iter().sum();
        // A reserve that leaves exactly the template's weight changes nothing.
        let reserve_for = |limit: u64| MAX_TX_WEIGHT - limit;
        let at = |limit: u64| {
            Policy::new()
                .with_weight_reserve(reserve_for(limit))
                .apply_with_report(&f.template)
                .unwrap()
        };
        assert!(at(total).template.is_none());
        // One unit less: the last transaction (E, child of A) goes.
        let t = at(total - 1).template.unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[P, A, C, G, D, L, B]));
        assert_consistent(&f.template, &t, &f);
        // Room for the first four: D, L, B and E go, in that order from the end.
        let outcome = at(w[..4].iter().sum::<u64>() + 10);
        let t = outcome.template.unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[P, A, C, G]));
        assert_eq!(
            outcome.removed.iter().map(|r| r.txid).collect::<Vec<_>>(),
            fixture_txids(&f, &[D, L, B, E])
        );
        assert!(outcome
            .removed
            .iter()
            .all(|r| r.reason == RemovalReason::WeightReserve));
        assert_consistent(&f.template, &t, &f);
        // Room for nothing: an empty template with a commitment over the coinbase alone.
        let t = at(0).template.unwrap();
        assert!(t.txs.is_empty() && t.merkle_path.is_empty());
        assert_eq!(t.coinbase_value, Amount::from_sat(SUBSIDY));
        assert_consistent(&f.template, &t, &f);
    }

    #[test]
    fn weight_reserve_after_other_rules_counts_only_kept_weight() {
        let f = fixture();
        let w: Vec<u64> = f.template.txs.iter().map(|t| t.weight).collect();
        // Without P (and so C and G), the rest is A, D, L, B, E; leave room for A, D, L only.
        let limit = w[A] + w[D] + w[L];
        let t = Policy::new()
            .with_excluded_txid(f.txs[P].compute_txid())
            .with_weight_reserve(MAX_TX_WEIGHT - limit)
            .apply(&f.template)
            .unwrap()
            .unwrap();
        assert_eq!(txids(&t), fixture_txids(&f, &[A, D, L]));
        assert_consistent(&f.template, &t, &f);
    }

    #[test]
    fn missing_weight_is_decoded() {
        let f = fixture();
        let mut template = f.template.clone();
        let mut txs = (*template.txs).clone();
        for t in &mut txs {
            t.weight = 0;
        }
        template.txs = Arc::new(txs);
        let t = Policy::new()
            .with_weight_reserve(
                MAX_TX_WEIGHT - f.template.txs[..7].iter().map(|t| t.weight).sum::<u64>(),
            )
            .apply(&template)
            .unwrap()
            .unwrap();
        assert_eq!(t.txs.len(), 7);
    }

    #[test]
    fn no_commitment_stays_none() {
        let f = fixture();
        let mut template = f.template.clone();
        template.witness_commitment = None;
        let t = Policy::new()
            .with_excluded_txid(f.txs[B].compute_txid())
            .apply(&template)
            .unwrap()
            .unwrap();
        assert!(t.witness_commitment.is_none());
    }

    #[test]
    fn unknown_fee_of_a_removed_transaction_is_an_error() {
        let f = fixture();
        let mut template = f.template.clone();
        let mut txs = (*template.txs).clone();
        txs[G].fee = None;
        template.txs = Arc::new(txs);
        let err = Policy::new()
            .with_excluded_txid(f.txs[P].compute_txid())
            .apply(&template)
            .unwrap_err();
        assert!(
            matches!(&err, PolicyError::UnknownFee { txid, .. } if *txid == f.txs[G].compute_txid())
        );
        assert!(err
            .to_string()
            .contains(&f.txs[G].compute_txid().to_string()));
        // A kept transaction of unknown fee is fine.
        let t = Policy::new()
            .with_excluded_txid(f.txs[B].compute_txid())
            .apply(&template)
            .unwrap()
            .unwrap();
        assert_eq!(t.txs.len(), 7);
        // min_feerate cannot judge it.
        assert!(matches!(
            Policy::new()
                .with_min_feerate(FeeRate::from_sat_per_vb(1).unwrap())
                .apply(&template),
            Err(PolicyError::FeeNeededForFeerate { .. })
        ));
    }

    #[test]
    fn bad_depends_and_bad_data_are_errors() {
        let f = fixture();
        let mut template = f.template.clone();
        let mut txs = (*template.txs).clone();
        txs[A].depends = vec![A];
        template.txs = Arc::new(txs);
        assert!(matches!(
            Policy::new()
                .with_excluded_txid(f.txs[B].compute_txid())
                .apply(&template),
            Err(PolicyError::BadDepends {
                index: 1,
                parent: 1,
                ..
            })
        ));

        let mut template = f.template.clone();
        let mut txs = (*template.txs).clone();
        txs[D].data.truncate(10);
        template.txs = Arc::new(txs);
        let policy = Policy::new().with_max_datacarrier_bytes(83);
        assert!(matches!(
            policy.apply(&template),
            Err(PolicyError::Decode { index: 4, .. })
        ));
        // Undecodable data is never looked at when no rule needs it.
        assert!(Policy::new()
            .with_excluded_txid(f.txs[B].compute_txid())
            .apply(&template)
            .is_ok());
    }

    #[test]
    fn config_parses_and_names_bad_values() {
        let f = fixture();
        let txid = f.txs[P].compute_txid();
        let json = serde_json::json!({
            "exclude_txids": [txid.to_string()],
            "exclude_script_types": ["P2PKH", "bare-multisig", "nulldata"],
            "max_datacarrier_bytes": 83,
            "min_feerate": 1.5,
            "weight_reserve": 8000,
        });
        let config: PolicyConfig = serde_json::from_value(json).unwrap();
        let policy = Policy::try_from(config.clone()).unwrap();
        assert!(policy.excluded_txids().contains(&txid));
        assert_eq!(
            policy.excluded_script_types(),
            &[
                ScriptType::P2pkh,
                ScriptType::BareMultisig,
                ScriptType::OpReturn
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(policy.max_datacarrier_bytes(), Some(83));
        assert_eq!(policy.min_feerate(), Some(FeeRate::from_sat_per_kwu(375)));
        assert_eq!(policy.weight_reserve(), 8000);
        assert_eq!(policy.max_tx_weight(), 3_988_000);
        // Round trip.
        let back: PolicyConfig =
            serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
        assert!(Policy::try_from(PolicyConfig::default())
            .unwrap()
            .is_empty());

        let err = |c: PolicyConfig| Policy::try_from(c).unwrap_err().to_string();
        let e = err(PolicyConfig {
            exclude_txids: vec![txid.to_string(), "abcd".into()],
            ..Default::default()
        });
        assert!(e.contains("exclude_txids") && e.contains("\"abcd\""), "{e}");
        let e = err(PolicyConfig {
            exclude_script_types: vec!["p2wpkh".into(), "p2xx".into()],
            ..Default::default()
        });
        assert!(
            e.contains("exclude_script_types") && e.contains("\"p2xx\""),
            "{e}"
        );
        assert!(e.contains("bare-multisig"), "lists the accepted names: {e}");
        for bad in [-1.0, f64::NAN, f64::INFINITY, 2e6] {
            let e = err(PolicyConfig {
                min_feerate: Some(bad),
                ..Default::default()
            });
            assert!(
                e.contains("min_feerate") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
        let e = err(PolicyConfig {
            weight_reserve: 4_000_000,
            ..Default::default()
        });
        assert!(e.contains("weight_reserve") && e.contains("4000000"), "{e}");
        // Unknown keys are refused by name.
        let e = serde_json::from_value::<PolicyConfig>(serde_json::json!({"min_fee": 1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_fee"), "{e}");
    }

    #[test]
    fn commitment_script_matches_the_bitcoin_crate() {
        for n in 0..6u8 {
            let wtxids: Vec<Wtxid> = (0..n)
                .map(|i| Wtxid::from_byte_array([i + 1; 32]))
                .collect();
            let ours = witness_commitment_script(wtxids.iter().copied());
            assert_eq!(ours, bitcoin_commitment(wtxids.into_iter()));
            assert_eq!(ours.len(), 38);
        }
        // Core's commitment for a block with a coinbase only (regtest GBT on an empty mempool).
        assert_eq!(
            witness_commitment_script(std::iter::empty()).to_hex_string(),
            "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
        );
    }
}
