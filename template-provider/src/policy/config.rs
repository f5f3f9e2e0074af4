//! The policy as written in a config file, checked into a [`Policy`].

use std::str::FromStr;

use bitcoin::hashes::hex::HexToArrayError;
use bitcoin::{FeeRate, Txid};
use serde::{Deserialize, Serialize};

use super::{Policy, ScriptType, UnknownScriptType, MAX_TX_WEIGHT};

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
    /// An `exclude_txids` entry is not a txid.
    #[error("exclude_txids: {value:?} is not a txid (64 hex digits): {reason}")]
    Txid {
        /// The entry as written.
        value: String,
        /// Why it does not parse.
        reason: HexToArrayError,
    },
    /// An `exclude_script_types` entry names no script type.
    #[error("exclude_script_types: {0}")]
    ScriptType(#[from] UnknownScriptType),
    /// `min_feerate` is negative, not finite, or above [`MAX_FEERATE_SAT_VB`].
    #[error(
        "min_feerate: {value} sat/vB is not a finite fee rate between 0 and {MAX_FEERATE_SAT_VB}"
    )]
    Feerate {
        /// The rate as written, in sat/vB.
        value: f64,
    },
    /// `weight_reserve` would leave no room for transactions.
    #[error("weight_reserve: {value} is above the {MAX_TX_WEIGHT} weight units a block leaves for transactions")]
    WeightReserve {
        /// The reserve as written.
        value: u64,
    },
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
                Txid::from_str(s.trim()).map_err(|reason| PolicyConfigError::Txid {
                    value: s.clone(),
                    reason,
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

    #[test]
    fn config_parses_and_names_bad_values() {
        let txid: Txid = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
            .parse()
            .unwrap();
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
}
