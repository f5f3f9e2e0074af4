use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::script::Builder;
use bitcoin::{Amount, FeeRate, ScriptBuf, Txid};

use super::fixture::{
    assert_consistent, coin, fixture, fixture_txids, op_return, template_of, txids, Signer, A, B,
    C, D, E, FEES, G, L, P, SUBSIDY,
};
use super::*;

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

/// A node reply with absurd fees or weights is refused with an error, never a panic (found by
/// reading the filter while writing the `gbt` fuzz target).
#[test]
fn absurd_fees_and_weights_are_errors_not_panics() {
    let f = fixture();
    let mut t = f.template.clone();
    let txs = std::sync::Arc::make_mut(&mut t.txs);
    for tx in txs.iter_mut() {
        tx.fee = Some(Amount::from_sat(i64::MAX as u64 / 2));
        tx.weight = u64::MAX / 2;
    }
    let every = t
        .txs
        .iter()
        .fold(Policy::new(), |p, tx| p.with_excluded_txid(tx.txid));
    assert!(matches!(
        every.apply(&t),
        Err(PolicyError::CoinbaseValue { .. })
    ));
    let reserve = Policy::new().with_weight_reserve(1);
    let _ = reserve.apply(&t);
}
