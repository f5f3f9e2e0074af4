//! A tiny key-holding wallet for tests: the node is built without a wallet, so the test owns one P2WPKH key,
//! tracks its coins itself and signs transactions locally (segwit v0 sighash, ECDSA).
//!
//! Coins come from coinbases mined to [`TestWallet::address`] ([`TestWallet::fund`]) and from the outputs
//! of the wallet's own transactions (change, payments to self). Unconfirmed change is spendable right away,
//! so parent → child chains in the mempool are easy to build.

use std::collections::HashSet;
use std::str::FromStr;

use anyhow::{anyhow, bail, ensure, Context};
use bitcoin::absolute::LockTime;
use bitcoin::key::{CompressedPublicKey, Secp256k1};
use bitcoin::secp256k1::{self, All, Message, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, BlockHash, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Txid, Witness,
};
use serde_json::{json, Value};

use crate::node::BitcoinNode;

/// Blocks a coinbase output must wait before it can be spent.
pub const COINBASE_MATURITY: u64 = 100;
/// Change below this is not worth an output and is left to the fee (P2WPKH dust limit is 294 sat).
pub const DUST_LIMIT: Amount = Amount::from_sat(546);

/// A coin the wallet can spend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utxo {
    pub outpoint: OutPoint,
    pub value: Amount,
    /// Height of the block that confirmed it; `None` while it is only in the mempool.
    pub height: Option<u64>,
    pub is_coinbase: bool,
}

impl Utxo {
    /// Whether the coin may go into a transaction for the block after `tip_height`.
    pub fn is_spendable_at(&self, tip_height: u64) -> bool {
        match (self.is_coinbase, self.height) {
            (true, Some(h)) => tip_height + 1 >= h + COINBASE_MATURITY,
            (true, None) => false,
            (false, _) => true,
        }
    }
}

/// One secp256k1 key, its P2WPKH regtest address and the coins known to pay it.
pub struct TestWallet {
    secp: Secp256k1<All>,
    secret_key: SecretKey,
    public_key: CompressedPublicKey,
    address: Address,
    script_pubkey: ScriptBuf,
    utxos: Vec<Utxo>,
}

impl std::fmt::Debug for TestWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestWallet")
            .field("address", &self.address)
            .field("utxos", &self.utxos.len())
            .field("balance", &self.balance())
            .finish()
    }
}

impl Default for TestWallet {
    fn default() -> Self {
        Self::new()
    }
}

impl TestWallet {
    /// A wallet with a fresh random key.
    pub fn new() -> Self {
        let secp = Secp256k1::new();
        let (secret_key, _) = secp.generate_keypair(&mut secp256k1::rand::thread_rng());
        Self::from_secret_key(secret_key)
    }

    /// A wallet for a given key (deterministic addresses across runs).
    pub fn from_secret_key(secret_key: SecretKey) -> Self {
        let secp = Secp256k1::new();
        let public_key = CompressedPublicKey(secret_key.public_key(&secp));
        let address = Address::p2wpkh(&public_key, Network::Regtest);
        let script_pubkey = address.script_pubkey();
        TestWallet {
            secp,
            secret_key,
            public_key,
            address,
            script_pubkey,
            utxos: Vec::new(),
        }
    }

    /// The wallet's P2WPKH regtest address (`bcrt1q…`).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The wallet's output script.
    pub fn script_pubkey(&self) -> &ScriptBuf {
        &self.script_pubkey
    }

    /// The wallet's compressed public key.
    pub fn public_key(&self) -> CompressedPublicKey {
        self.public_key
    }

    /// All coins known to the wallet, spendable or not (immature coinbases included).
    pub fn utxos(&self) -> &[Utxo] {
        &self.utxos
    }

    /// Sum of all known coins, immature ones included.
    pub fn balance(&self) -> Amount {
        self.utxos.iter().map(|u| u.value).sum()
    }

    /// Mines `blocks` (at least 101) to the wallet's address and remembers their coinbase outputs, so that
    /// at least one of them is mature afterwards. Coinbases mined by earlier calls mature as the chain grows.
    pub async fn fund(&mut self, node: &BitcoinNode, blocks: u64) -> anyhow::Result<()> {
        ensure!(
            blocks > COINBASE_MATURITY,
            "fund needs at least {} blocks for a mature coinbase",
            COINBASE_MATURITY + 1
        );
        let hashes = node.mine_to(blocks, &self.address).await?;
        self.scan_blocks(node, &hashes).await
    }

    /// Records the outputs paying the wallet (and drops coins spent) in the given blocks, fetched with
    /// `getblock <hash> 2`. Use it for blocks that were mined to [`TestWallet::address`] by other means.
    pub async fn scan_blocks(
        &mut self,
        node: &BitcoinNode,
        hashes: &[BlockHash],
    ) -> anyhow::Result<()> {
        for hash in hashes {
            let block = node.rpc("getblock", json!([hash.to_string(), 2])).await?;
            let height = block["height"]
                .as_u64()
                .ok_or_else(|| anyhow!("getblock {hash}: no height"))?;
            let txs = block["tx"]
                .as_array()
                .ok_or_else(|| anyhow!("getblock {hash}: no tx array"))?;
            for (i, tx) in txs.iter().enumerate() {
                self.scan_verbose_tx(tx, Some(height), i == 0)
                    .with_context(|| format!("block {hash} tx {i}"))?;
            }
        }
        Ok(())
    }

    fn scan_verbose_tx(
        &mut self,
        tx: &Value,
        height: Option<u64>,
        is_coinbase: bool,
    ) -> anyhow::Result<()> {
        let txid = Txid::from_str(tx["txid"].as_str().ok_or_else(|| anyhow!("no txid"))?)?;
        if !is_coinbase {
            let spent: HashSet<OutPoint> = tx["vin"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|vin| {
                    let prev = Txid::from_str(vin["txid"].as_str()?).ok()?;
                    Some(OutPoint::new(prev, vin["vout"].as_u64()? as u32))
                })
                .collect();
            self.utxos.retain(|u| !spent.contains(&u.outpoint));
        }
        let our_hex = self.script_pubkey.to_hex_string();
        for out in tx["vout"]
            .as_array()
            .ok_or_else(|| anyhow!("no vout array"))?
        {
            if out["scriptPubKey"]["hex"].as_str() != Some(our_hex.as_str()) {
                continue;
            }
            let n = out["n"].as_u64().ok_or_else(|| anyhow!("vout without n"))? as u32;
            // `value` is a BTC float; every realistic amount is exact after rounding to satoshis.
            let btc = out["value"]
                .as_f64()
                .ok_or_else(|| anyhow!("vout without value"))?;
            let value = Amount::from_sat((btc * 100_000_000.0).round() as u64);
            let outpoint = OutPoint::new(txid, n);
            match self.utxos.iter_mut().find(|u| u.outpoint == outpoint) {
                Some(known) => known.height = height,
                None => self.utxos.push(Utxo {
                    outpoint,
                    value,
                    height,
                    is_coinbase,
                }),
            }
        }
        Ok(())
    }

    /// Coins usable in the next block, confirmed ones first (oldest first), then unconfirmed ones.
    pub async fn spendable(&self, node: &BitcoinNode) -> anyhow::Result<Vec<Utxo>> {
        let (tip, _) = node.tip().await?;
        let mut coins: Vec<Utxo> = self
            .utxos
            .iter()
            .filter(|u| u.is_spendable_at(tip))
            .cloned()
            .collect();
        // Stable sort keeps insertion order among unconfirmed coins.
        coins.sort_by_key(|u| (u.height.is_none(), u.height.unwrap_or(0)));
        Ok(coins)
    }

    /// Pays `amount` to `dest` with an absolute `fee`, change back to the wallet; broadcasts with
    /// `sendrawtransaction`. Inputs are picked among spendable coins, confirmed first, then unconfirmed
    /// change (so the result may be a child of an earlier, unconfirmed wallet transaction).
    pub async fn send_to(
        &mut self,
        node: &BitcoinNode,
        dest: &ScriptBuf,
        amount: Amount,
        fee: Amount,
    ) -> anyhow::Result<Txid> {
        let need = amount
            .checked_add(fee)
            .ok_or_else(|| anyhow!("amount + fee overflows"))?;
        let mut inputs = Vec::new();
        let mut total = Amount::ZERO;
        for coin in self.spendable(node).await? {
            if total >= need {
                break;
            }
            total += coin.value;
            inputs.push(coin.outpoint);
        }
        if total < need {
            bail!("wallet has {total} spendable, needs {need} (fund it or mine more blocks)");
        }
        self.send_with_inputs(node, &inputs, &[(dest.clone(), amount)], fee)
            .await
    }

    /// A transaction from one spendable coin (the first [`TestWallet::spendable`] one) back to the
    /// wallet's own address, paying `fee`.
    pub async fn send_self(&mut self, node: &BitcoinNode, fee: Amount) -> anyhow::Result<Txid> {
        let coin = self
            .spendable(node)
            .await?
            .into_iter()
            .find(|c| c.value >= fee + DUST_LIMIT)
            .ok_or_else(|| anyhow!("no spendable coin big enough to pay a {fee} fee"))?;
        let out = (self.script_pubkey.clone(), coin.value - fee);
        self.send_with_inputs(node, &[coin.outpoint], &[out], fee)
            .await
    }

    /// A child of the wallet's unconfirmed transaction `parent`: its output to the wallet, back to
    /// the wallet, paying `fee`.
    pub async fn send_child(
        &mut self,
        node: &BitcoinNode,
        parent: Txid,
        fee: Amount,
    ) -> anyhow::Result<Txid> {
        let coin = self
            .utxos
            .iter()
            .find(|u| u.outpoint.txid == parent)
            .cloned()
            .ok_or_else(|| anyhow!("no output of {parent} pays the wallet"))?;
        let out = (self.script_pubkey.clone(), coin.value - fee);
        self.send_with_inputs(node, &[coin.outpoint], &[out], fee)
            .await
    }

    /// Spends exactly `inputs` (all must be wallet coins) to `outputs`, with change (input sum − outputs −
    /// `fee`) back to the wallet unless it is below [`DUST_LIMIT`], in which case it goes to the fee.
    /// Broadcasts and returns the txid; the wallet then forgets the inputs and remembers its new outputs.
    pub async fn send_with_inputs(
        &mut self,
        node: &BitcoinNode,
        inputs: &[OutPoint],
        outputs: &[(ScriptBuf, Amount)],
        fee: Amount,
    ) -> anyhow::Result<Txid> {
        let tx = self.build_tx(inputs, outputs, fee)?;
        self.broadcast(node, &tx).await
    }

    /// Submits a transaction built by [`TestWallet::build_tx`] and updates the coin list on success.
    pub async fn broadcast(
        &mut self,
        node: &BitcoinNode,
        tx: &Transaction,
    ) -> anyhow::Result<Txid> {
        let hex = bitcoin::consensus::encode::serialize_hex(tx);
        let txid: String = node.rpc_as("sendrawtransaction", json!([hex])).await?;
        let txid = Txid::from_str(&txid)?;
        ensure!(
            txid == tx.compute_txid(),
            "node reported txid {txid}, expected {}",
            tx.compute_txid()
        );
        self.apply_tx(tx);
        Ok(txid)
    }

    /// Marks the inputs of `tx` spent and records its outputs paying the wallet as unconfirmed coins.
    pub fn apply_tx(&mut self, tx: &Transaction) {
        let spent: HashSet<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
        self.utxos.retain(|u| !spent.contains(&u.outpoint));
        let txid = tx.compute_txid();
        for (vout, out) in tx.output.iter().enumerate() {
            if out.script_pubkey == self.script_pubkey {
                self.utxos.push(Utxo {
                    outpoint: OutPoint::new(txid, vout as u32),
                    value: out.value,
                    height: None,
                    is_coinbase: false,
                });
            }
        }
    }

    /// Builds and signs (SIGHASH_ALL, segwit v0) a version-2 transaction without broadcasting it or
    /// touching the coin list. The change output, if any, comes last.
    pub fn build_tx(
        &self,
        inputs: &[OutPoint],
        outputs: &[(ScriptBuf, Amount)],
        fee: Amount,
    ) -> anyhow::Result<Transaction> {
        ensure!(!inputs.is_empty(), "a transaction needs at least one input");
        let coins: Vec<&Utxo> = inputs
            .iter()
            .map(|op| {
                self.utxos
                    .iter()
                    .find(|u| u.outpoint == *op)
                    .ok_or_else(|| anyhow!("{op} is not a wallet coin"))
            })
            .collect::<anyhow::Result<_>>()?;
        let in_total: Amount = coins.iter().map(|c| c.value).sum();
        let out_total: Amount = outputs.iter().map(|(_, v)| *v).sum();
        let spend = out_total
            .checked_add(fee)
            .ok_or_else(|| anyhow!("outputs + fee overflow"))?;
        let change = in_total
            .checked_sub(spend)
            .ok_or_else(|| anyhow!("inputs hold {in_total}, outputs + fee need {spend}"))?;

        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|op| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs
                .iter()
                .map(|(spk, v)| TxOut {
                    value: *v,
                    script_pubkey: spk.clone(),
                })
                .collect(),
        };
        if change >= DUST_LIMIT {
            tx.output.push(TxOut {
                value: change,
                script_pubkey: self.script_pubkey.clone(),
            });
        }
        self.sign(&mut tx, &coins.iter().map(|c| c.value).collect::<Vec<_>>())?;
        Ok(tx)
    }

    /// Signs every input of `tx` as a P2WPKH spend of the wallet key; `values[i]` is the amount of input i.
    pub fn sign(&self, tx: &mut Transaction, values: &[Amount]) -> anyhow::Result<()> {
        ensure!(
            values.len() == tx.input.len(),
            "{} input values for {} inputs",
            values.len(),
            tx.input.len()
        );
        let sighash_type = EcdsaSighashType::All;
        let mut cache = SighashCache::new(&mut *tx);
        let mut witnesses = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let sighash = cache
                .p2wpkh_signature_hash(i, &self.script_pubkey, *value, sighash_type)
                .with_context(|| format!("sighash of input {i}"))?;
            let msg = Message::from(sighash);
            let signature = self.secp.sign_ecdsa(&msg, &self.secret_key);
            let sig = bitcoin::ecdsa::Signature {
                signature,
                sighash_type,
            };
            witnesses.push(Witness::p2wpkh(&sig, &self.public_key.0));
        }
        for (input, witness) in tx.input.iter_mut().zip(witnesses) {
            input.witness = witness;
        }
        Ok(())
    }
}
