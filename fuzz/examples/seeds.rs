//! Writes the seed inputs of every target into `fuzz/corpus/<target>/`: the lines the session
//! tests send, the messages our peers really send (encoded by the reference message crates),
//! small `getblocktemplate` replies, and the example configs.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (a plain build, no fuzzer).

use std::path::{Path, PathBuf};

use binary_sv2::{Seq0255, Seq064K, Str0255, Sv2Option, B0255, B032, B064K, U256};
use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, ScriptBuf, TxOut};
use common_messages_sv2::{Protocol, SetupConnection, SetupConnectionError};
use jd_proxy_fuzz::{coinbase, template, NTIME};
use mining_types::{CoinbaseSplit, Solution, TemplateId};
use sv2_wire::tdp::{submit_solution, NewTemplateParts, PrevHashParts};

#[path = "../../load/src/synth_gbt.rs"]
#[allow(dead_code)]
mod synth_gbt;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    sv1(&dir(&root, "sv1_line"));
    sv2(&dir(&root, "sv2_messages"));
    gbt(&dir(&root, "gbt"));
    config(&dir(&root, "config"));
}

fn dir(root: &Path, target: &str) -> PathBuf {
    let d = root.join(target);
    std::fs::create_dir_all(&d).expect("corpus directory");
    d
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
}

fn sv1(dir: &Path) {
    let submit = |job: u32, en2: &str, extra: &str| {
        format!(
            r#"{{"id":9,"method":"mining.submit","params":["farm.s19","{job}","{en2}","{NTIME:08x}","0000a1b2"{extra}]}}"#
        )
    };
    let session = [
        r#"{"id":1,"method":"mining.configure","params":[["version-rolling","minimum-difficulty","subscribe-extranonce","x-ext"],{"version-rolling.mask":"ffffffff","minimum-difficulty.value":0.5}]}"#.to_owned(),
        r#"{"id":2,"method":"mining.subscribe","params":["cgminer/4.11"]}"#.to_owned(),
        r#"{"id":"3","method":"mining.authorize","params":["farm.s19","x"]}"#.to_owned(),
        r#"{"id":4,"method":"mining.extranonce.subscribe","params":[]}"#.to_owned(),
        submit(1, "00000007", ""),
        submit(1, "7", r#","00002000""#),
        submit(1, "00000007", ""),
        "!j".to_owned(),
        submit(2, "00000008", ""),
        r#"{"id":5,"method":"mining.suggest_difficulty","params":["0.25"]}"#.to_owned(),
        "!t".to_owned(),
        submit(2, "00000009", ""),
        "!k".to_owned(),
        submit(3, "0000000a", r#","20002000""#),
        r#"{"id":6,"method":"mining.get_transactions","params":[]}"#.to_owned(),
        r#"{"id":7,"result":true,"error":null}"#.to_owned(),
    ]
    .join("\n");
    // Setup byte: difficulty (bits 0-1), layout (2-3), pool job (4), pad (5).
    for (name, setup) in [
        ("solo", 0x00u8),
        ("d1", 0x02),
        ("en8", 0x04),
        ("pool", 0x10),
        ("pool-pad", 0x34),
    ] {
        let mut input = vec![setup];
        input.extend_from_slice(session.as_bytes());
        write(dir, &format!("session-{name}"), &input);
    }
    for (name, line) in [
        (
            "subscribe-null",
            r#"{"id":null,"method":"mining.subscribe","params":[]}"#,
        ),
        (
            "authorize-only",
            r#"{"id":1,"method":"mining.authorize","params":["w"]}"#,
        ),
        (
            "bad-params",
            r#"{"id":[1,{"a":2}],"method":"mining.submit","params":[1,2]}"#,
        ),
        ("garbage", "GET / HTTP/1.1"),
    ] {
        write(dir, name, &[&[0u8][..], line.as_bytes()].concat());
    }
}

fn frame<T: binary_sv2::Serialize + binary_sv2::GetSize>(msg_type: u8, m: T) -> Vec<u8> {
    let body = binary_sv2::to_bytes(m).expect("encodes");
    let len = u16::try_from(body.len()).expect("small message");
    [&[msg_type][..], &len.to_le_bytes(), &body].concat()
}

fn str0255(s: &str) -> Str0255<'_> {
    Str0255::try_from(s.as_bytes()).expect("short")
}

fn sv2(dir: &Path) {
    use job_declaration_sv2::*;
    use mining_sv2::*;
    use template_distribution_sv2::{NewTemplate, RequestTransactionData};

    let t = template();
    let split = CoinbaseSplit::build(&t, &coinbase(), 8).expect("coinbase");
    let setup = frame(
        0x00,
        SetupConnection {
            protocol: Protocol::TemplateDistributionProtocol,
            min_version: 2,
            max_version: 2,
            flags: 0,
            endpoint_host: str0255("127.0.0.1"),
            endpoint_port: 8442,
            vendor: str0255("jd-proxy"),
            hardware_version: str0255(""),
            firmware: str0255(""),
            device_id: str0255(""),
        },
    );
    let refused = frame(
        0x02,
        SetupConnectionError {
            flags: 0,
            error_code: str0255("unsupported-protocol"),
        },
    );
    let open = frame(
        MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS,
        OpenExtendedMiningChannelSuccess {
            request_id: 1,
            channel_id: 7,
            target: U256::from(&[0xffu8; 32]),
            extranonce_size: 12,
            extranonce_prefix: B032::try_from(&[1u8, 2, 3, 4][..]).expect("short"),
            group_channel_id: 0,
        },
    );
    let path_bytes: Vec<[u8; 32]> = t.merkle_path.iter().map(|n| n.to_byte_array()).collect();
    let path: Vec<U256> = path_bytes.iter().map(U256::from).collect();
    let pool_job = |job_id: u32, future: bool| {
        frame(
            MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB,
            NewExtendedMiningJob {
                channel_id: 7,
                job_id,
                min_ntime: Sv2Option::new((!future).then_some(NTIME)),
                version: 0x2000_0000,
                version_rolling_allowed: true,
                merkle_path: Seq0255::new(path.clone()).expect("short"),
                coinbase_tx_prefix: B064K::try_from(split.prefix()).expect("short"),
                coinbase_tx_suffix: B064K::try_from(split.suffix()).expect("short"),
            },
        )
    };
    let prev_hash = frame(
        MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH,
        SetNewPrevHash {
            channel_id: 7,
            job_id: 5,
            prev_hash: U256::from(&[9u8; 32]),
            min_ntime: NTIME,
            nbits: 0x207f_ffff,
        },
    );
    let set_target = frame(
        MESSAGE_TYPE_SET_TARGET,
        SetTarget {
            channel_id: 7,
            maximum_target: U256::from(&[0x0fu8; 32]),
        },
    );
    let prefix = frame(
        MESSAGE_TYPE_SET_EXTRANONCE_PREFIX,
        SetExtranoncePrefix {
            channel_id: 7,
            extranonce_prefix: B032::try_from(&[9u8, 9][..]).expect("short"),
        },
    );
    let shares_ok = frame(
        MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS,
        SubmitSharesSuccess {
            channel_id: 7,
            last_sequence_number: 3,
            new_submits_accepted_count: 2,
            new_shares_sum: 2,
        },
    );
    let shares_err = frame(
        MESSAGE_TYPE_SUBMIT_SHARES_ERROR,
        SubmitSharesError {
            channel_id: 7,
            sequence_number: 4,
            error_code: str0255("difficulty-too-low"),
        },
    );
    write(
        dir,
        "pool-own-jobs",
        &[
            setup.clone(),
            open.clone(),
            pool_job(5, true),
            prev_hash,
            pool_job(6, false),
            set_target,
            prefix,
            shares_ok,
            shares_err,
            refused,
        ]
        .concat(),
    );

    let outputs = serialize(&vec![TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
    }]);
    let token = frame(
        0x51,
        AllocateMiningJobTokenSuccess {
            request_id: 1,
            mining_job_token: B0255::try_from(&[7u8; 8][..]).expect("short"),
            coinbase_outputs: B064K::try_from(&outputs[..]).expect("short"),
        },
    );
    let declared = frame(
        0x58,
        DeclareMiningJobSuccess {
            request_id: 2,
            new_mining_job_token: B0255::try_from(&[8u8; 8][..]).expect("short"),
        },
    );
    let stale = frame(
        0x59,
        DeclareMiningJobError {
            request_id: 2,
            error_code: str0255("stale-chain-tip"),
            error_details: B064K::try_from(&[][..]).expect("empty"),
        },
    );
    let missing = frame(
        0x55,
        ProvideMissingTransactions {
            request_id: 2,
            unknown_tx_position_list: Seq064K::new(vec![0u16, 2]).expect("short"),
        },
    );
    let custom_ok = frame(
        MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_SUCCESS,
        SetCustomMiningJobSuccess {
            channel_id: 7,
            request_id: 3,
            job_id: 11,
        },
    );
    let custom_err = frame(
        MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_ERROR,
        SetCustomMiningJobError {
            channel_id: 7,
            request_id: 3,
            error_code: str0255("invalid-mining-job-token"),
        },
    );

    let parts = NewTemplateParts::of(&t);
    let prev = PrevHashParts::of(&t);
    let tdp_future = frame(0x71, parts.message(&t, true));
    let tdp_prev = frame(0x72, prev.message(&t));
    let tdp_now: NewTemplate = parts.message(&t, false);
    let tdp_now = frame(0x71, tdp_now);
    write(
        dir,
        "declared",
        &[
            open,
            token,
            tdp_future.clone(),
            tdp_prev.clone(),
            tdp_now.clone(),
            missing,
            declared,
            custom_ok,
            stale,
            custom_err,
        ]
        .concat(),
    );

    let header = bitcoin::block::Header {
        version: t.version,
        prev_blockhash: t.prev_hash,
        merkle_root: bitcoin::TxMerkleNode::from_byte_array([0; 32]),
        time: NTIME,
        bits: t.bits,
        nonce: 7,
    };
    let solution = Solution::from_split(TemplateId::new(1), &header, &split, &[0u8; 8]);
    let submit = frame(0x76, submit_solution(&solution).expect("small coinbase"));
    let constraints = frame(
        0x70,
        template_distribution_sv2::CoinbaseOutputConstraints {
            coinbase_output_max_additional_size: 100,
            coinbase_output_max_additional_sigops: 4,
        },
    );
    let tx_data = frame(0x73, RequestTransactionData { template_id: 1 });
    write(
        dir,
        "provider",
        &[setup, constraints, tdp_future, tdp_prev, tx_data, submit].concat(),
    );
}

fn gbt(dir: &Path) {
    for (name, n, seed) in [("one", 1, 1u64), ("three", 3, 2), ("eight", 8, 3)] {
        let body = synth_gbt::gbt_reply_body(n, seed);
        for rules in [0x00u8, 0x13, 0x2e, 0xc8] {
            write(
                dir,
                &format!("{name}-{rules:02x}"),
                &[&[rules][..], &body].concat(),
            );
        }
    }
    let small = br#"{"result":{"version":536870912,"previousblockhash":"0000000000000000000000000000000000000000000000000000000000000000","transactions":[],"coinbasevalue":5000000000,"mintime":1,"curtime":2,"bits":"207fffff","height":1},"error":null,"id":1}"#;
    write(dir, "empty", &[&[0x7fu8][..], small].concat());
    let error = br#"{"result":null,"error":{"code":-10,"message":"Bitcoin Core is in initial sync"},"id":1}"#;
    write(dir, "node-error", &[&[0u8][..], error].concat());
}

fn config(dir: &Path) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for name in ["jd-proxy.toml", "template-provider.toml"] {
        let text = std::fs::read(examples.join(name)).expect("example config");
        write(dir, name, &text);
    }
    let key = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
    let pool = format!(
        "network = \"regtest\"\n[node]\nrpc_url = \"http://127.0.0.1:18443\"\nrpc_user = \"u\"\nrpc_password = \"p\"\n\
         [coinbase]\npayout_address = \"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080\"\ntag = \"/farm/\"\n\
         [stratum]\nextranonce1_bytes = 2\nextranonce2_bytes = 8\nversion_rolling_mask = \"0x1fffe000\"\n\
         [vardiff]\ninitial_difficulty = 0.001\n\
         [policy]\nexclude_script_types = [\"p2pk\", \"bare-multisig\"]\nmin_feerate = 1.5\nmax_datacarrier_bytes = 83\n\
         [[upstream]]\nname = \"main\"\npool_address = \"127.0.0.1:34254\"\npool_authority_public_key = \"{key}\"\njds_address = \"127.0.0.1:34264\"\ndeclaration = \"coinbase-only\"\nuser_identity = \"farm\"\n\
         [[upstream]]\npool_address = \"127.0.0.1:44254\"\npool_authority_public_key = \"{key}\"\n\
         [failover]\nresponse_timeout_secs = 10\nretry_preferred_secs = 30\n"
    );
    write(dir, "pool", pool.as_bytes());
    let provider = format!(
        "network = \"regtest\"\n[node]\nrpc_url = \"http://127.0.0.1:18443\"\ncookie_file = \"/tmp/.cookie\"\n\
         [server]\nlisten = \"127.0.0.1:8442\"\nmax_clients = 0\n\
         [policy]\nexclude_txids = [\"{}\"]\nweight_reserve = 8000\n",
        "ab".repeat(32)
    );
    write(dir, "provider-bad", provider.as_bytes());
    let tp = format!("network = \"signet\"\n[coinbase]\npayout_descriptor = \"wpkh(02ab)\"\n[template_provider]\naddress = \"127.0.0.1:8442\"\nauthority_public_key = \"{key}\"\n");
    write(dir, "tp-client", tp.as_bytes());
}
