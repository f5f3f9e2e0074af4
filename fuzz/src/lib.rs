//! What the fuzz targets share: a real regtest template and the session context, built from
//! public APIs the way `proxy/src/test_support.rs` builds them for the unit tests.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bitcoin::absolute::LockTime;
use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    block, Amount, CompactTarget, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Witness,
};
use jd_proxy::blocks::BlockSink;
use jd_proxy::figures::Board;
use jd_proxy::metrics::Stats;
use jd_proxy::sv1::extranonce::Extranonce1Allocator;
use jd_proxy::sv1::vardiff::VardiffConfig;
use jd_proxy::sv1::{Shared, Sv1Config};
use jd_proxy::upstream::shares::Links;
use mining_types::coinbase::witness_commitment_script;
use mining_types::{
    merkle, CoinbaseConfig, Difficulty, ExtranonceLayout, Template, TemplateId, TemplateKind,
    TemplateTx,
};
use template_provider::blocks::fds::FdReserve;

/// The time of [`template`]'s blocks; sessions are driven at this Unix time.
pub const NTIME: u32 = 1_700_000_100;

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

/// A regtest template (id 1) with three segwit spends and the commitment Core would compute.
/// Regtest's target is so easy that about half of all shares solve a block, so the block
/// path is reached as often as the share path.
pub fn template() -> Arc<Template> {
    static T: OnceLock<Arc<Template>> = OnceLock::new();
    T.get_or_init(|| {
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
        Arc::new(Template {
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
        })
    })
    .clone()
}

/// The farm's coinbase: pays to `OP_TRUE`, tagged.
pub fn coinbase() -> CoinbaseConfig {
    CoinbaseConfig {
        payout_script: ScriptBuf::from_bytes(vec![0x51]),
        tag: b"/fuzz/".to_vec(),
    }
}

/// The session context, as the proxy builds it from its config.
pub fn shared(initial: Difficulty, layout: ExtranonceLayout) -> Arc<Shared> {
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
            initial,
            min: Difficulty::new(1e-12).expect("positive"),
            max: Difficulty::new(1e15).expect("positive"),
            target_share_interval: Duration::from_secs(10),
            retarget_interval: Duration::from_secs(60),
        },
    };
    // The receiver is dropped: found blocks are taken from the session's effects instead.
    let (blocks, _) = BlockSink::new();
    Arc::new(Shared {
        extranonces: Extranonce1Allocator::new(sv1.layout),
        vardiff: jd_proxy::sv1::vardiff::fixed(sv1.vardiff),
        sv1,
        blocks,
        links: Arc::new(Links::default()),
        stats: Arc::new(Stats::default()),
        board: Board::new(),
        // Empty: the reserve gates accepting connections, which no session does, and opening
        // descriptors for every input would only slow the fuzzer down.
        fds: Arc::new(FdReserve::default()),
        // One route, nothing tracked.
        router: None,
    })
}
