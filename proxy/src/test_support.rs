//! Fixtures for the unit tests: a real template, jobs on it, a session context. No sockets.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::absolute::LockTime;
use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    block, Amount, CompactTarget, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Witness,
};
use mining_types::coinbase::witness_commitment_script;
use mining_types::{
    merkle, CoinbaseConfig, CoinbaseSplit, Difficulty, ExtranonceLayout, JobId, Template,
    TemplateId, TemplateKind, TemplateTx,
};

use crate::blocks::{BlockSink, FoundBlock};
use crate::job::Job;
use crate::metrics::Stats;
use crate::sv1::extranonce::Extranonce1Allocator;
use crate::sv1::vardiff::VardiffConfig;
use crate::sv1::{Shared, Sv1Config};
use crate::upstream::shares::{Links, PoolTag};

fn spend(n: u8) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: bitcoin::Txid::from_byte_array([n; 32]),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[vec![n; 71], vec![2; 33]]),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(1000),
            script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
        }],
    }
}

/// The time of [`template`]'s blocks.
pub const NTIME: u32 = 1_700_000_100;

/// A regtest template with three segwit spends and the commitment Core would compute.
pub fn template() -> Template {
    let txs: Vec<TemplateTx> = (1..=3)
        .map(spend)
        .map(|t| TemplateTx {
            txid: t.compute_txid(),
            wtxid: t.compute_wtxid(),
            data: serialize(&t),
            fee: Some(Amount::from_sat(100)),
            weight: t.weight().to_wu(),
            depends: vec![],
        })
        .collect();
    Template {
        id: TemplateId::new(1),
        kind: TemplateKind::Full,
        network: Network::Regtest,
        height: 500,
        prev_hash: bitcoin::BlockHash::from_byte_array([9; 32]),
        version: block::Version::from_consensus(0x2000_0000),
        bits: CompactTarget::from_consensus(0x207f_ffff),
        min_time: NTIME - 100,
        cur_time: NTIME,
        coinbase_value: Amount::from_sat(1_250_000_300),
        witness_commitment: Some(witness_commitment_script(txs.iter().map(|t| t.wtxid))),
        merkle_path: merkle::coinbase_path(txs.iter().map(|t| t.txid)),
        txs: Arc::new(txs),
    }
}

/// The template on another tip.
pub fn template_on(prev: u8, id: u64) -> Template {
    let mut t = template();
    t.prev_hash = bitcoin::BlockHash::from_byte_array([prev; 32]);
    t.id = TemplateId::new(id);
    t
}

/// 4 bytes each of extranonce1 and extranonce2.
pub fn layout() -> ExtranonceLayout {
    ExtranonceLayout::new(4, 4).expect("valid")
}

/// A solo job `id` on `template`, clean, or a pool's when `pool` is given.
pub fn job_on(id: u32, template: Template, pool: Option<PoolTag>) -> Arc<Job> {
    let config = CoinbaseConfig {
        payout_script: ScriptBuf::from_bytes(vec![0x51]),
        tag: b"/t/".to_vec(),
    };
    let split = CoinbaseSplit::build(&template, &config, layout().total_len()).expect("a coinbase");
    Arc::new(Job::new(
        JobId::new(id),
        Arc::new(template),
        split,
        true,
        pool,
    ))
}

/// A solo job `id` on [`template`].
pub fn job(id: u32) -> Arc<Job> {
    job_on(id, template(), None)
}

/// The session context: vardiff from difficulty `d`, blocks to the returned receiver.
pub fn shared(
    d: f64,
) -> (
    Arc<Shared>,
    tokio::sync::mpsc::UnboundedReceiver<FoundBlock>,
) {
    shared_with(d, layout())
}

/// [`shared`] whose vardiff settings the test replaces, as a reload does.
pub fn shared_reloading(d: f64) -> (Arc<Shared>, tokio::sync::watch::Sender<VardiffConfig>) {
    let (shared, _) = shared(d);
    let shared = Arc::try_unwrap(shared).expect("the only reference");
    let (reload, vardiff) = tokio::sync::watch::channel(shared.sv1.vardiff);
    (Arc::new(Shared { vardiff, ..shared }), reload)
}

/// [`shared`] with another extranonce layout.
pub fn shared_with(
    d: f64,
    layout: ExtranonceLayout,
) -> (
    Arc<Shared>,
    tokio::sync::mpsc::UnboundedReceiver<FoundBlock>,
) {
    let difficulty = Difficulty::new(d).expect("positive");
    let sv1 = Sv1Config {
        max_connections: 10,
        max_line_bytes: 4096,
        first_message_timeout: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(60),
        max_requests_per_sec: 100,
        idle_timeout: Duration::from_secs(900),
        write_timeout: Duration::from_secs(30),
        reconnect_wait: Duration::from_secs(1),
        layout,
        version_mask: 0x1fff_e000,
        max_ntime_future: Duration::from_secs(600),
        vardiff: VardiffConfig {
            initial: difficulty,
            min: Difficulty::new(1e-12).expect("positive"),
            max: Difficulty::new(1e15).expect("positive"),
            target_share_interval: Duration::from_secs(10),
            retarget_interval: Duration::from_secs(60),
        },
    };
    let (blocks, found) = BlockSink::new();
    let shared = Arc::new(Shared {
        extranonces: Extranonce1Allocator::new(sv1.layout),
        vardiff: crate::sv1::vardiff::fixed(sv1.vardiff),
        sv1,
        blocks,
        links: Arc::new(Links::default()),
        stats: Arc::new(Stats::default()),
        fds: Arc::new(template_provider::blocks::fds::FdReserve::new(2)),
        board: crate::figures::Board::new(),
        router: None,
    });
    (shared, found)
}
