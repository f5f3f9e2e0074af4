//! The pool side of the tests: a job the pool can check shares against, one accepted
//! connection, and helpers to start a miner and wait for its events.

use bitcoin::block::{Header, Version};
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::{BlockHash, CompactTarget, TxMerkleNode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use sv1_miner::{encode_prevhash, spawn, Dialect, MinerConfig, MinerEvent, MinerHandle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

pub const STEP: Duration = Duration::from_secs(20);
pub const POOL_MASK: u32 = 0x1fff_e000;
pub const EN1: [u8; 4] = [0xf0, 0x00, 0x00, 0x0d];

/// One notify's worth of job data, as the pool remembers it to check shares.
#[derive(Clone)]
pub struct PoolJob {
    pub id: String,
    pub prevhash: BlockHash,
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
}

impl PoolJob {
    pub fn new(id: &str, seed: u8) -> PoolJob {
        PoolJob {
            id: id.into(),
            prevhash: BlockHash::from_byte_array([seed; 32]),
            coinb1: hex::decode("01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20").unwrap(),
            coinb2: hex::decode("ffffffff0100f2052a010000000000000000").unwrap(),
            branch: vec![[seed.wrapping_add(1); 32], [seed.wrapping_add(2); 32]],
            version: 0x2000_0000,
            nbits: 0x207f_ffff,
            ntime: 0x6650_0000 + seed as u32,
        }
    }

    pub fn notify(&self, clean: bool) -> Value {
        json!({"id": null, "method": "mining.notify", "params": [
            self.id,
            encode_prevhash(&self.prevhash),
            hex::encode(&self.coinb1),
            hex::encode(&self.coinb2),
            self.branch.iter().map(hex::encode).collect::<Vec<_>>(),
            format!("{:08x}", self.version),
            format!("{:08x}", self.nbits),
            format!("{:08x}", self.ntime),
            clean,
        ]})
    }

    /// Rebuilds the header of a submit independently of the miner's code; returns its hash.
    pub fn check_submit(&self, en1: &[u8], params: &[Value], mask: Option<u32>) -> BlockHash {
        let s = |i: usize| params[i].as_str().unwrap();
        let en2 = hex::decode(s(2)).unwrap();
        let ntime = u32::from_str_radix(s(3), 16).unwrap();
        let nonce = u32::from_str_radix(s(4), 16).unwrap();
        let version = match mask {
            Some(mask) => {
                assert_eq!(
                    params.len(),
                    6,
                    "rolling granted: 6-param submit expected: {params:?}"
                );
                let bits = u32::from_str_radix(s(5), 16).unwrap();
                assert_eq!(bits & !mask, 0, "version bits outside the mask: {params:?}");
                (self.version & !mask) | bits
            }
            None => {
                assert_eq!(
                    params.len(),
                    5,
                    "no rolling: 5-param submit expected: {params:?}"
                );
                self.version
            }
        };
        assert_eq!(ntime, self.ntime);
        let coinbase = [&self.coinb1[..], en1, &en2, &self.coinb2].concat();
        let mut root = sha256d::Hash::hash(&coinbase).to_byte_array();
        for b in &self.branch {
            root = sha256d::Hash::hash(&[root, *b].concat()).to_byte_array();
        }
        let header = Header {
            version: Version::from_consensus(version as i32),
            prev_blockhash: self.prevhash,
            merkle_root: TxMerkleNode::from_byte_array(root),
            time: ntime,
            bits: CompactTarget::from_consensus(self.nbits),
            nonce,
        };
        header.block_hash()
    }
}

/// The pool side of one connection.
pub struct Conn {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    pub peer: SocketAddr,
}

impl Conn {
    pub async fn accept(listener: &TcpListener) -> Conn {
        let (stream, peer): (TcpStream, _) = timeout(STEP, listener.accept())
            .await
            .expect("accept timeout")
            .unwrap();
        let (r, w) = stream.into_split();
        Conn {
            lines: BufReader::new(r).lines(),
            writer: w,
            peer,
        }
    }

    pub async fn recv(&mut self) -> Value {
        let line = timeout(STEP, self.lines.next_line())
            .await
            .expect("miner went quiet")
            .unwrap()
            .expect("miner closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("miner sent bad JSON {line:?}: {e}"))
    }

    pub async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        match timeout(d, self.lines.next_line()).await {
            Ok(line) => Some(serde_json::from_str(&line.unwrap().unwrap()).unwrap()),
            Err(_) => None,
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string()).await;
    }

    pub async fn send_raw(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    pub async fn reply(&mut self, req: &Value, result: Value) {
        self.send(json!({"id": req["id"], "result": result, "error": null}))
            .await;
    }

    /// Answers handshake requests until `mining.authorize`; returns the methods in arrival
    /// order and the negotiated mask.
    pub async fn handshake(&mut self) -> (Vec<String>, Option<u32>) {
        let mut methods = vec![];
        let mut mask = None;
        loop {
            let req = self.recv().await;
            let method = req["method"].as_str().unwrap().to_string();
            methods.push(method.clone());
            match method.as_str() {
                "mining.configure" => {
                    let asked = u32::from_str_radix(
                        req["params"][1]["version-rolling.mask"].as_str().unwrap(),
                        16,
                    )
                    .unwrap();
                    mask = Some(asked & POOL_MASK);
                    self.reply(&req, json!({"version-rolling": true, "version-rolling.mask": format!("{:08x}", asked & POOL_MASK)})).await;
                }
                "mining.subscribe" => {
                    self.reply(
                        &req,
                        json!([
                            [["mining.set_difficulty", "d1"], ["mining.notify", "n1"]],
                            hex::encode(EN1),
                            4
                        ]),
                    )
                    .await;
                }
                "mining.authorize" => {
                    self.reply(&req, json!(true)).await;
                    // NerdMiner's suggest_difficulty follows its authorize.
                    if let Some(extra) = self.recv_within(Duration::from_millis(300)).await {
                        methods.push(extra["method"].as_str().unwrap().to_string());
                        self.reply(&extra, json!(true)).await;
                    }
                    return (methods, mask);
                }
                _ => self.reply(&req, json!(true)).await,
            }
        }
    }

    /// Waits for the next `mining.submit`, answering nothing else.
    pub async fn next_submit(&mut self) -> Value {
        loop {
            let req = self.recv().await;
            if req["method"] == "mining.submit" {
                return req;
            }
        }
    }
}

pub fn expected_methods(d: Dialect) -> Vec<&'static str> {
    match d {
        Dialect::Cgminer | Dialect::Whatsminer => {
            vec!["mining.configure", "mining.subscribe", "mining.authorize"]
        }
        Dialect::Avalon => vec![
            "mining.subscribe",
            "mining.extranonce.subscribe",
            "mining.authorize",
        ],
        Dialect::Bitaxe => vec![
            "mining.subscribe",
            "mining.configure",
            "mining.suggest_difficulty",
            "mining.authorize",
        ],
        Dialect::Braiins => vec!["mining.configure", "mining.subscribe", "mining.authorize"],
        Dialect::Nerdminer => vec![
            "mining.subscribe",
            "mining.authorize",
            "mining.suggest_difficulty",
        ],
    }
}

pub async fn start(dialect: Dialect) -> (TcpListener, MinerHandle, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let config = MinerConfig::new(
        listener.local_addr().unwrap(),
        format!("{dialect}.worker"),
        dialect,
    )
    .with_suggest_difficulty(0.0001)
    .with_max_hashrate(2000.0);
    let miner = spawn(config, shutdown.clone());
    (listener, miner, shutdown)
}

pub async fn next_event(miner: &mut MinerHandle, pred: impl Fn(&MinerEvent) -> bool) -> MinerEvent {
    timeout(STEP, async {
        loop {
            let ev = miner.events.recv().await.expect("events ended");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event timeout")
}
