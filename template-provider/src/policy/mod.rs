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
//! Descendants are found through [`TemplateTx::depends`](mining_types::TemplateTx::depends); a
//! backend must fill it (the `getblocktemplate` backend does).

mod config;
mod filter;
#[cfg(test)]
mod fixture;
mod live;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use bitcoin::consensus::encode;
use bitcoin::{Amount, FeeRate, Script, Txid};
use mining_types::Template;

pub use self::config::{PolicyConfig, PolicyConfigError, MAX_FEERATE_SAT_VB};
pub use self::live::LivePolicy;

/// Consensus limit on block weight.
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// The weight Bitcoin Core keeps for the coinbase and header when it fills a template.
pub const CORE_COINBASE_RESERVE: u64 = 4_000;
/// The most weight transactions may take in a template: [`MAX_BLOCK_WEIGHT`] less
/// [`CORE_COINBASE_RESERVE`].
pub const MAX_TX_WEIGHT: u64 = MAX_BLOCK_WEIGHT - CORE_COINBASE_RESERVE;

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
    Datacarrier {
        /// The summed size of its OP_RETURN output scripts.
        bytes: usize,
    },
    /// It pays `fee` for `vsize` vbytes, below the minimum fee rate.
    Feerate {
        /// Its own fee.
        fee: Amount,
        /// Its own vsize, `ceil(weight / 4)`.
        vsize: u64,
    },
    /// It spends `parent`, which was removed.
    Descendant {
        /// The removed transaction it spends.
        parent: Txid,
    },
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
    /// The removed transaction.
    pub txid: Txid,
    /// Its fee, as the template gave it.
    pub fee: Option<Amount>,
    /// Its weight (the template's, or decoded when a rule needed it).
    pub weight: u64,
    /// The rule that removed it.
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
    UnknownFee {
        /// The removed transaction.
        txid: Txid,
        /// Why it was removed.
        reason: RemovalReason,
    },
    /// `min_feerate` is set and a transaction's fee is unknown.
    #[error("min_feerate is set but the template does not say the fee of transaction {txid}")]
    FeeNeededForFeerate {
        /// The transaction of unknown fee.
        txid: Txid,
    },
    /// A transaction's data does not decode (only decoded for script-type and OP_RETURN rules,
    /// or when the template gives no weight).
    #[error("transaction {txid} (position {index}) does not decode: {source}")]
    Decode {
        /// Its position in the template.
        index: usize,
        /// Its txid, as the template gave it.
        txid: Txid,
        /// Why it does not decode.
        source: encode::Error,
    },
    /// `depends` names a position that is not an earlier transaction.
    #[error("transaction {txid} at position {index} depends on position {parent}, which is not an earlier transaction of the template")]
    BadDepends {
        /// The transaction's position.
        index: usize,
        /// Its txid.
        txid: Txid,
        /// The position it names as a parent.
        parent: usize,
    },
    /// The removed fees exceed the coinbase value: the template's fees are inconsistent.
    #[error("removed fees of {removed} exceed the template's coinbase value of {coinbase_value}")]
    CoinbaseValue {
        /// The template's coinbase value.
        coinbase_value: Amount,
        /// The fees of the removed transactions.
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

    /// The txids removed with their descendants.
    pub fn excluded_txids(&self) -> &HashSet<Txid> {
        &self.exclude_txids
    }

    /// The output script types a transaction must not pay.
    pub fn excluded_script_types(&self) -> &HashSet<ScriptType> {
        &self.exclude_script_types
    }

    /// The most bytes of OP_RETURN output scripts per transaction, if limited.
    pub fn max_datacarrier_bytes(&self) -> Option<usize> {
        self.max_datacarrier_bytes
    }

    /// The lowest fee rate a transaction must pay on its own, if any.
    pub fn min_feerate(&self) -> Option<FeeRate> {
        self.min_feerate
    }

    /// The block weight kept free beyond Core's own coinbase reserve.
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
}
