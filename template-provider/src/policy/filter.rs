//! Applying a [`Policy`] to a template: the rules in order, descendants with their parents,
//! and the merkle path, coinbase value and witness commitment recomputed.

use std::sync::Arc;

use bitcoin::consensus::encode;
use bitcoin::{Amount, Transaction};
use mining_types::coinbase::witness_commitment_script;
use mining_types::{merkle, Template, TemplateTx};

use super::{Policy, PolicyError, PolicyOutcome, Removal, RemovalReason, ScriptType};

impl Policy {
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
            removed[index] = self.transaction_rule(
                index,
                tx,
                txs,
                &removed,
                &mut weights[index],
                decode_outputs,
            )?;
        }
        if self.weight_reserve > 0 {
            self.keep_weight_reserve(txs, &mut removed, &mut weights)?;
        }
        if removed.iter().all(Option::is_none) {
            return Ok(PolicyOutcome {
                template: None,
                removed: Vec::new(),
            });
        }
        rebuild(template, removed, &weights)
    }

    /// Step 1 for the transaction at `index`: why it is removed, if it is. `removed` holds the
    /// verdicts on the transactions before it; `weight` is filled in when a rule needs it.
    fn transaction_rule(
        &self,
        index: usize,
        tx: &TemplateTx,
        txs: &[TemplateTx],
        removed: &[Option<RemovalReason>],
        weight: &mut Option<u64>,
        decode_outputs: bool,
    ) -> Result<Option<RemovalReason>, PolicyError> {
        if let Some(&parent) = tx.depends.iter().find(|&&p| p >= index) {
            return Err(PolicyError::BadDepends {
                index,
                txid: tx.txid,
                parent,
            });
        }
        if let Some(&parent) = tx.depends.iter().find(|&&p| removed[p].is_some()) {
            return Ok(Some(RemovalReason::Descendant {
                parent: txs[parent].txid,
            }));
        }
        if self.exclude_txids.contains(&tx.txid) {
            return Ok(Some(RemovalReason::ExcludedTxid));
        }
        if let Some(rate) = self.min_feerate {
            let fee = tx
                .fee
                .ok_or(PolicyError::FeeNeededForFeerate { txid: tx.txid })?;
            let weight = *weight.get_or_insert(weight_of(index, tx)?);
            let vsize = weight.div_ceil(4);
            // fee / vsize >= sat_per_kwu * 4 / 1000, in integers.
            let paid = u128::from(fee.to_sat()) * 1000;
            let wanted = u128::from(rate.to_sat_per_kwu()) * 4 * u128::from(vsize);
            if paid < wanted {
                return Ok(Some(RemovalReason::Feerate { fee, vsize }));
            }
        }
        if decode_outputs {
            let decoded = decode(index, tx)?;
            if let Some(reason) = self.output_rule(&decoded) {
                return Ok(Some(reason));
            }
        }
        Ok(None)
    }

    /// Step 2: drops kept transactions from the end until the rest fit under
    /// [`max_tx_weight`](Self::max_tx_weight).
    fn keep_weight_reserve(
        &self,
        txs: &[TemplateTx],
        removed: &mut [Option<RemovalReason>],
        weights: &mut [Option<u64>],
    ) -> Result<(), PolicyError> {
        let limit = self.max_tx_weight();
        let mut total: u64 = 0;
        for (index, tx) in txs.iter().enumerate() {
            if removed[index].is_none() {
                // A node's weights never come near u64::MAX; a hostile reply must not wrap.
                total = total.saturating_add(*weights[index].get_or_insert(weight_of(index, tx)?));
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
        Ok(())
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

/// The template without the `removed` transactions: `depends` renumbered, and the merkle
/// path, coinbase value and witness commitment recomputed.
fn rebuild(
    template: &Template,
    removed: Vec<Option<RemovalReason>>,
    weights: &[Option<u64>],
) -> Result<PolicyOutcome, PolicyError> {
    let txs = &template.txs;
    let mut removals = Vec::new();
    let mut removed_fees = Amount::ZERO;
    let mut new_pos: Vec<Option<usize>> = vec![None; txs.len()];
    let mut kept: Vec<TemplateTx> = Vec::with_capacity(txs.len());
    for (index, (tx, reason)) in txs.iter().zip(removed).enumerate() {
        if let Some(reason) = reason {
            let Some(fee) = tx.fee else {
                return Err(PolicyError::UnknownFee {
                    txid: tx.txid,
                    reason,
                });
            };
            // Fees past the coinbase value are inconsistent whatever they sum to: report that
            // rather than overflow (a wrong node reply must not panic the provider).
            removed_fees = removed_fees
                .checked_add(fee)
                .ok_or(PolicyError::CoinbaseValue {
                    coinbase_value: template.coinbase_value,
                    removed: Amount::MAX_MONEY,
                })?;
            removals.push(Removal {
                txid: tx.txid,
                fee: tx.fee,
                weight: weights[index].unwrap_or(tx.weight),
                reason,
            });
        } else {
            new_pos[index] = Some(kept.len());
            let mut tx = tx.clone();
            for d in &mut tx.depends {
                *d = new_pos[*d].expect("a kept transaction's parents are kept");
            }
            kept.push(tx);
        }
    }
    let coinbase_value =
        template
            .coinbase_value
            .checked_sub(removed_fees)
            .ok_or(PolicyError::CoinbaseValue {
                coinbase_value: template.coinbase_value,
                removed: removed_fees,
            })?;
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

/// Decodes the transaction at `index`, naming it when it does not decode.
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
