//! A synthetic, full-size `getblocktemplate` reply: thousands of realistic segwit transactions
//! (P2WPKH and P2TR spends, consolidations, parents with children), real txids, wtxids, weights
//! and witness commitment, deterministic for a seed.
//!
//! Used by the benchmarks of `template-provider` and `jd-proxy` (included there by path, so it
//! depends on nothing but `bitcoin`, `hex` and `serde_json`).

use bitcoin::absolute::LockTime;
use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash as _;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, BlockHash, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness, WitnessMerkleNode,
};
use serde_json::{json, Value};

/// splitmix64: small, deterministic, good enough to vary transaction shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn array32(&mut self) -> [u8; 32] {
        let mut a = [0u8; 32];
        a.iter_mut().for_each(|b| *b = self.next() as u8);
        a
    }
}

fn output(rng: &mut Rng) -> TxOut {
    let script = match rng.below(10) {
        0..=4 => {
            let mut s = vec![0x00, 0x14];
            s.extend(rng.bytes(20));
            s
        }
        5..=7 => {
            let mut s = vec![0x51, 0x20];
            s.extend(rng.bytes(32));
            s
        }
        8 => {
            let mut s = vec![0x76, 0xa9, 0x14];
            s.extend(rng.bytes(20));
            s.extend([0x88, 0xac]);
            s
        }
        _ => {
            let mut s = vec![0xa9, 0x14];
            s.extend(rng.bytes(20));
            s.push(0x87);
            s
        }
    };
    TxOut {
        value: Amount::from_sat(546 + rng.below(50_000_000)),
        script_pubkey: ScriptBuf::from_bytes(script),
    }
}

fn input(rng: &mut Rng, prev: OutPoint) -> TxIn {
    let witness = if rng.below(3) == 0 {
        // Taproot key path: one 64-byte Schnorr signature.
        Witness::from_slice(&[rng.bytes(64)])
    } else {
        // P2WPKH: a DER signature with sighash byte, and a compressed key.
        let mut key = rng.bytes(33);
        key[0] = 0x02 | (key[0] & 1);
        let sig_len = 71 + rng.below(2) as usize;
        Witness::from_slice(&[rng.bytes(sig_len), key])
    };
    TxIn {
        previous_output: prev,
        script_sig: ScriptBuf::new(),
        sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
        witness,
    }
}

/// Inputs per transaction, weighted like a busy mempool: mostly 1-2, some consolidations.
fn input_count(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=49 => 1,
        50..=71 => 2,
        72..=83 => 3,
        84..=91 => 5,
        92..=97 => 14,
        _ => 40,
    }
}

/// A `getblocktemplate` result object with `n_txs` transactions.
pub fn gbt_result(n_txs: usize, seed: u64) -> Value {
    let mut rng = Rng(seed);
    let mut txs: Vec<Transaction> = Vec::with_capacity(n_txs);
    let mut txids: Vec<Txid> = Vec::with_capacity(n_txs);
    let mut entries = Vec::with_capacity(n_txs);
    let mut fees = 0u64;
    for i in 0..n_txs {
        // One in ten spends an output of an earlier template transaction (a child).
        let parent = (i > 0 && rng.below(10) == 0).then(|| rng.below(i as u64) as usize);
        let n_in = input_count(&mut rng);
        let input_list: Vec<TxIn> = (0..n_in)
            .map(|k| {
                let prev = match parent {
                    Some(p) if k == 0 => OutPoint {
                        txid: txids[p],
                        vout: 0,
                    },
                    _ => OutPoint {
                        txid: Txid::from_byte_array(rng.array32()),
                        vout: rng.below(4) as u32,
                    },
                };
                input(&mut rng, prev)
            })
            .collect();
        let n_out = if n_in > 4 {
            1
        } else {
            1 + rng.below(3) as usize
        };
        let tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: input_list,
            output: (0..n_out).map(|_| output(&mut rng)).collect(),
        };
        let weight = tx.weight().to_wu();
        let fee = weight.div_ceil(4) * (1 + rng.below(40));
        fees += fee;
        let txid = tx.compute_txid();
        entries.push(json!({
            "data": hex::encode(serialize(&tx)),
            "txid": txid.to_string(),
            "hash": tx.compute_wtxid().to_string(),
            "depends": parent.map_or_else(Vec::new, |p| vec![p + 1]),
            "fee": fee,
            "sigops": n_in,
            "weight": weight,
        }));
        txids.push(txid);
        txs.push(tx);
    }
    let wtxids = std::iter::once(WitnessMerkleNode::all_zeros()).chain(
        txs.iter()
            .map(|t| WitnessMerkleNode::from_byte_array(t.compute_wtxid().to_byte_array())),
    );
    let root = bitcoin::merkle_tree::calculate_root(wtxids).expect("at least the coinbase");
    let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
    let prev = BlockHash::from_byte_array(rng.array32());
    json!({
        "capabilities": ["proposal"],
        "version": 0x2000_0000,
        "rules": ["csv", "!segwit", "taproot"],
        "vbavailable": {},
        "vbrequired": 0,
        "previousblockhash": prev.to_string(),
        "transactions": entries,
        "coinbaseaux": {},
        "coinbasevalue": 312_500_000u64 + fees,
        "longpollid": format!("{prev}{}", 1234),
        "target": "00000000000000000002f1280000000000000000000000000000000000000000",
        "mintime": 1_763_700_000u32,
        "mutable": ["time", "transactions", "prevblock"],
        "noncerange": "00000000ffffffff",
        "sigoplimit": 80_000,
        "sizelimit": 4_000_000,
        "weightlimit": 4_000_000,
        "curtime": 1_763_772_355u32,
        "bits": "17023a04",
        "height": 925_000,
        "default_witness_commitment": format!("6a24aa21a9ed{}", hex::encode(commitment.as_byte_array())),
    })
}

/// The HTTP body the node sends for `getblocktemplate`: the JSON-RPC envelope around
/// [`gbt_result`].
pub fn gbt_reply_body(n_txs: usize, seed: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"result": gbt_result(n_txs, seed), "error": null, "id": 1}))
        .expect("JSON serializes")
}
