//! The policy tests' fixture: a template of real, signed transactions with parents,
//! children and every kind of output the rules look at, and the checks every filtered
//! template must pass.

use std::sync::Arc;

use bitcoin::absolute::LockTime;
use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{hash160, Hash};
use bitcoin::key::{CompressedPublicKey, Secp256k1};
use bitcoin::merkle_tree::calculate_root;
use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{Message, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, Network, OutPoint, PubkeyHash, ScriptBuf, Sequence,
    Transaction, TxIn, TxMerkleNode, TxOut, Txid, Witness, WitnessMerkleNode, Wtxid,
};
use mining_types::{
    merkle, CoinbaseConfig, CoinbaseSplit, Template, TemplateId, TemplateKind, TemplateTx,
};

/// A key that signs P2WPKH spends for real (deterministic).
pub(super) struct Signer {
    secp: Secp256k1<bitcoin::secp256k1::All>,
    key: SecretKey,
    pub(super) public: CompressedPublicKey,
    pub(super) spk: ScriptBuf,
}

impl Signer {
    pub(super) fn new() -> Self {
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
    pub(super) fn spend(&self, inputs: &[(OutPoint, u64)], outputs: Vec<TxOut>) -> Transaction {
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

    pub(super) fn out(&self, sat: u64) -> TxOut {
        TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: self.spk.clone(),
        }
    }
}

/// A confirmed coin outside the template.
pub(super) fn coin(n: u8) -> (OutPoint, u64) {
    (
        OutPoint::new(Txid::from_byte_array([n; 32]), u32::from(n)),
        100_000,
    )
}

pub(super) fn op_return(len: usize) -> TxOut {
    let data = PushBytesBuf::try_from(vec![0x42u8; len]).unwrap();
    TxOut {
        value: Amount::ZERO,
        script_pubkey: Builder::new()
            .push_opcode(OP_RETURN)
            .push_slice(data)
            .into_script(),
    }
}

pub(super) const SUBSIDY: u64 = 5_000_000_000;

/// Positions in the fixture template.
pub(super) const P: usize = 0; // parent, fee 1000
pub(super) const A: usize = 1; // ordinary, fee 2000
pub(super) const C: usize = 2; // child of P, fee 2000
pub(super) const G: usize = 3; // grandchild (child of C), fee 1000
pub(super) const D: usize = 4; // 60-byte OP_RETURN, fee 3000
pub(super) const L: usize = 5; // pays P2PKH, fee 5000
pub(super) const B: usize = 6; // ordinary, fee 200 (under 2 sat/vB)
pub(super) const E: usize = 7; // child of A, fee 500 (about 4.5 sat/vB)
pub(super) const FEES: [u64; 8] = [1_000, 2_000, 2_000, 1_000, 3_000, 5_000, 200, 500];

pub(super) struct Fixture {
    pub(super) template: Template,
    pub(super) txs: Vec<Transaction>,
}

pub(super) fn fixture() -> Fixture {
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

pub(super) fn template_of(txs: &[Transaction], depends: &[&[usize]], fees: &[u64]) -> Template {
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
        version: BlockVersion::from_consensus(0x2000_0000),
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
        .map(Wtxid::to_raw_hash);
    let root: WitnessMerkleNode = calculate_root(leaves).unwrap().into();
    let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
    let mut script = hex::decode("6a24aa21a9ed").unwrap();
    script.extend_from_slice(commitment.as_byte_array());
    ScriptBuf::from_bytes(script)
}

pub(super) fn txids(t: &Template) -> Vec<Txid> {
    t.txs.iter().map(|t| t.txid).collect()
}

pub(super) fn fixture_txids(f: &Fixture, positions: &[usize]) -> Vec<Txid> {
    positions.iter().map(|&i| f.txs[i].compute_txid()).collect()
}

/// Checks everything a filtered template must get right against the bitcoin crate and a
/// full block built from it.
pub(super) fn assert_consistent(original: &Template, t: &Template, f: &Fixture) {
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
        version: t.version,
        prev_blockhash: t.prev_hash,
        merkle_root: merkle::root_from_path(coinbase.txid(&[&en]), &t.merkle_path),
        time: t.cur_time,
        bits: t.bits,
        nonce: 0,
    };
    let solution = mining_types::Solution::from_split(t.id, &header, &coinbase, &en);
    let block: Block = deserialize(&solution.assemble(t).unwrap().bytes).unwrap();
    assert!(block.check_merkle_root());
    assert!(block.check_witness_commitment());
    assert_eq!(block.txdata[0].output[0].value, t.coinbase_value);
}
