//! Runs miners of every dialect against a tiny in-test Stratum V1 pool on 127.0.0.1:0 and
//! checks their handshakes and that their shares rebuild to hashes under the share target.

use bitcoin::block::{Header, Version};
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::{BlockHash, CompactTarget, TxMerkleNode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use sv1_miner::{
    encode_prevhash, share_target, spawn, Dialect, MinerConfig, MinerEvent, MinerHandle,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const STEP: Duration = Duration::from_secs(20);
const POOL_MASK: u32 = 0x1fff_e000;
const EN1: [u8; 4] = [0xf0, 0x00, 0x00, 0x0d];

/// One notify's worth of job data, as the pool remembers it to check shares.
#[derive(Clone)]
struct PoolJob {
    id: String,
    prevhash: BlockHash,
    coinb1: Vec<u8>,
    coinb2: Vec<u8>,
    branch: Vec<[u8; 32]>,
    version: u32,
    nbits: u32,
    ntime: u32,
}

impl PoolJob {
    fn new(id: &str, seed: u8) -> PoolJob {
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

    fn notify(&self, clean: bool) -> Value {
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
    fn check_submit(&self, en1: &[u8], params: &[Value], mask: Option<u32>) -> BlockHash {
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
struct Conn {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    peer: SocketAddr,
}

impl Conn {
    async fn accept(listener: &TcpListener) -> Conn {
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

    async fn recv(&mut self) -> Value {
        let line = timeout(STEP, self.lines.next_line())
            .await
            .expect("miner went quiet")
            .unwrap()
            .expect("miner closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("miner sent bad JSON {line:?}: {e}"))
    }

    async fn recv_within(&mut self, d: Duration) -> Option<Value> {
        match timeout(d, self.lines.next_line()).await {
            Ok(line) => Some(serde_json::from_str(&line.unwrap().unwrap()).unwrap()),
            Err(_) => None,
        }
    }

    async fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string()).await;
    }

    async fn send_raw(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    async fn reply(&mut self, req: &Value, result: Value) {
        self.send(json!({"id": req["id"], "result": result, "error": null}))
            .await;
    }

    /// Answers handshake requests until `mining.authorize`; returns the methods in arrival
    /// order and the negotiated mask.
    async fn handshake(&mut self) -> (Vec<String>, Option<u32>) {
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
                    .await
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
    async fn next_submit(&mut self) -> Value {
        loop {
            let req = self.recv().await;
            if req["method"] == "mining.submit" {
                return req;
            }
        }
    }
}

fn expected_methods(d: Dialect) -> Vec<&'static str> {
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

async fn start(dialect: Dialect) -> (TcpListener, MinerHandle, CancellationToken) {
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

async fn next_event(miner: &mut MinerHandle, pred: impl Fn(&MinerEvent) -> bool) -> MinerEvent {
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

async fn one_dialect_mines(dialect: Dialect) {
    let (listener, mut miner, shutdown) = start(dialect).await;
    let mut conn = Conn::accept(&listener).await;
    let (methods, mask) = conn.handshake().await;
    assert_eq!(methods, expected_methods(dialect), "{dialect} handshake");
    assert_eq!(mask.is_some(), dialect.requests_version_rolling());

    let job = PoolJob::new("1", 0x11);
    conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]}))
        .await;
    conn.send(job.notify(true)).await;
    let target = share_target(1e-9);
    for _ in 0..3 {
        let submit = conn.next_submit().await;
        let p = submit["params"].as_array().unwrap();
        assert_eq!(p[0], format!("{dialect}.worker"));
        assert_eq!(p[1], "1");
        assert_eq!(
            p[2].as_str().unwrap().len(),
            8,
            "extranonce2 keeps its size"
        );
        if dialect == Dialect::Whatsminer {
            // No zero padding on u32 fields (the version bits, at least, are small numbers).
            assert!(p[5].as_str().unwrap().len() < 8, "{p:?}");
        } else {
            assert!(
                p[3..].iter().all(|f| f.as_str().unwrap().len() == 8),
                "{p:?}"
            );
        }
        if dialect == Dialect::Avalon {
            assert!(submit["id"].is_string());
        } else {
            assert!(submit["id"].is_u64());
        }
        let hash = job.check_submit(&EN1, p, mask);
        assert!(
            target.is_met_by(hash),
            "{dialect}: share {hash} above target"
        );
        conn.reply(&submit, json!(true)).await;
    }
    let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::ShareResult { .. })).await;
    assert!(
        matches!(
            ev,
            MinerEvent::ShareResult {
                accepted: true,
                reason: None,
                ..
            }
        ),
        "{ev:?}"
    );
    let s = miner.stats.snapshot();
    assert!(
        s.shares_submitted >= 3 && s.notifies == 1 && s.clean_notifies == 1 && s.authorized,
        "{s:?}"
    );
    shutdown.cancel();
    let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::Disconnected { .. })).await;
    assert!(
        matches!(ev, MinerEvent::Disconnected { ref reason } if reason == "shutdown"),
        "{ev:?}"
    );
    timeout(STEP, miner.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn every_dialect_handshakes_and_submits_valid_shares() {
    timeout(Duration::from_secs(120), async {
        let mut set = tokio::task::JoinSet::new();
        for d in Dialect::ALL {
            set.spawn(one_dialect_mines(d));
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn events_report_handshake_job_and_rejections() {
    timeout(Duration::from_secs(60), async {
        let (listener, mut miner, _shutdown) = start(Dialect::Cgminer).await;
        let mut conn = Conn::accept(&listener).await;
        conn.handshake().await;
        let job = PoolJob::new("j7", 0x42);
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]})).await;
        conn.send(job.notify(true)).await;
        let submit = conn.next_submit().await;
        conn.send(json!({"id": submit["id"], "result": null, "error": [23, "Low difficulty share", null]})).await;

        let ev = next_event(&mut miner, |_| true).await;
        assert!(matches!(ev, MinerEvent::Configured { version_mask: Some(POOL_MASK) }), "{ev:?}");
        let ev = next_event(&mut miner, |_| true).await;
        assert!(matches!(ev, MinerEvent::Subscribed { ref extranonce1, extranonce2_size: 4 } if extranonce1[..] == EN1), "{ev:?}");
        let ev = next_event(&mut miner, |_| true).await;
        assert!(matches!(ev, MinerEvent::Difficulty(d) if d == 1e-9), "{ev:?}");
        let ev = next_event(&mut miner, |_| true).await;
        match ev {
            MinerEvent::Notify { job_id, prevhash, clean, .. } => {
                assert_eq!(job_id, "j7");
                assert_eq!(prevhash, job.prevhash);
                assert!(clean);
            }
            other => panic!("{other:?}"),
        }
        let ev = next_event(&mut miner, |_| true).await;
        match ev {
            MinerEvent::ShareSubmitted { job_id, block_hash } => {
                assert_eq!(job_id, "j7");
                let p = submit["params"].as_array().unwrap();
                assert_eq!(block_hash, job.check_submit(&EN1, p, Some(POOL_MASK)));
            }
            other => panic!("{other:?}"),
        }
        let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::ShareResult { .. })).await;
        assert!(
            matches!(ev, MinerEvent::ShareResult { accepted: false, reason: Some(ref r), .. } if r == "Low difficulty share"),
            "{ev:?}"
        );
        assert!(miner.stats.snapshot().shares_rejected >= 1);

        // The server going away ends the miner.
        drop(conn);
        let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::Disconnected { .. })).await;
        assert!(matches!(ev, MinerEvent::Disconnected { ref reason } if reason != "shutdown"), "{ev:?}");
        timeout(STEP, miner.task).await.unwrap().unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn clean_jobs_extranonce_difficulty_and_junk() {
    timeout(Duration::from_secs(60), async {
        let (listener, miner, shutdown) = start(Dialect::Bitaxe).await;
        let mut conn = Conn::accept(&listener).await;
        let (_, mask) = conn.handshake().await;
        assert_eq!(mask, Some(POOL_MASK), "bitaxe asks ffffffff; the pool ANDs it down");

        let job1 = PoolJob::new("1", 1);
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]})).await;
        conn.send(job1.notify(true)).await;
        conn.next_submit().await;

        // Junk must be ignored: unknown notification, unknown server request, garbage, stray reply.
        conn.send(json!({"id": null, "method": "mining.something_new", "params": [1, 2]})).await;
        conn.send(json!({"id": 99, "method": "client.unknown_request", "params": []})).await;
        conn.send_raw("this is not json").await;
        conn.send(json!({"id": 12345, "result": true, "error": null})).await;
        conn.send(json!({"id": null, "method": "client.show_message", "params": ["hello"]})).await;

        // A new difficulty alone changes nothing until the next notify: job 1 shares keep coming.
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e12]})).await;
        conn.send(json!({"id": 7, "method": "client.get_version", "params": []})).await;
        let mut saw_version_reply = false;
        let mut job1_after = 0;
        while job1_after < 3 || !saw_version_reply {
            let msg = conn.recv().await;
            if msg["id"] == 7 && msg.get("method").is_none() {
                assert_eq!(msg["result"], "bitaxe/BM1366/v2.4.0");
                saw_version_reply = true;
            } else if msg["method"] == "mining.submit" {
                assert_eq!(msg["params"][1], "1");
                let hash = job1.check_submit(&EN1, msg["params"].as_array().unwrap(), mask);
                assert!(share_target(1e-9).is_met_by(hash));
                job1_after += 1;
            }
        }

        // A clean job at difficulty 1e12 (out of reach): no job-1 share may follow once it is
        // taken, and none for job 2 either.
        conn.send(PoolJob::new("2", 2).notify(true)).await;
        let t0 = Instant::now();
        // Drain what was in flight before the notify reached the miner.
        while let Some(msg) = conn.recv_within(Duration::from_millis(300)).await {
            assert_eq!(msg["params"][1], "1", "no job-2 share at difficulty 1e12");
            assert!(t0.elapsed() < Duration::from_secs(2), "job 1 shares keep coming after a clean notify");
        }

        // set_extranonce applies from the next notify on; a clean job 3 at 1e-9 mines with it.
        let en1b = [0xca, 0xfe];
        conn.send(json!({"id": null, "method": "mining.set_extranonce", "params": [hex::encode(en1b), 2]})).await;
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]})).await;
        let job3 = PoolJob::new("3", 3);
        conn.send(job3.notify(true)).await;
        let t_notify = Instant::now();
        let submit = conn.next_submit().await;
        assert!(t_notify.elapsed() < Duration::from_secs(5));
        let p = submit["params"].as_array().unwrap();
        assert_eq!(p[1], "3");
        assert_eq!(p[2].as_str().unwrap().len(), 4, "new extranonce2 size");
        assert!(share_target(1e-9).is_met_by(job3.check_submit(&en1b, p, mask)));

        let s = miner.stats.snapshot();
        assert_eq!(s.unknown_messages, 4, "{s:?}");
        assert_eq!((s.notifies, s.clean_notifies), (3, 3));
        assert!(s.hashes > 0);
        shutdown.cancel();
        timeout(STEP, miner.task).await.unwrap().unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn cgminer_waits_for_configure_but_whatsminer_pipelines() {
    timeout(Duration::from_secs(30), async {
        for (dialect, waits) in [
            (Dialect::Cgminer, true),
            (Dialect::Whatsminer, false),
            (Dialect::Braiins, true),
        ] {
            let (listener, _miner, shutdown) = start(dialect).await;
            let mut conn = Conn::accept(&listener).await;
            let configure = conn.recv().await;
            assert_eq!(configure["method"], "mining.configure");
            let next = conn.recv_within(Duration::from_millis(400)).await;
            if waits {
                assert!(
                    next.is_none(),
                    "{dialect} must wait for the configure reply, sent {next:?}"
                );
                conn.reply(&configure, json!({"version-rolling": false}))
                    .await;
                assert_eq!(conn.recv().await["method"], "mining.subscribe");
            } else {
                // Pipelined: the subscribe follows at once (allow for a loaded machine).
                let next = match next {
                    Some(n) => Some(n),
                    None => conn.recv_within(Duration::from_secs(3)).await,
                };
                let next = next.expect("whatsminer must not wait for the configure reply");
                assert_eq!(next["method"], "mining.subscribe");
            }
            shutdown.cancel();
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn no_rolling_granted_means_five_params_and_bind_ip_is_used() {
    timeout(Duration::from_secs(30), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let config = MinerConfig::new(listener.local_addr().unwrap(), "w", Dialect::Braiins)
            .with_suggest_difficulty(1e-6)
            .with_max_hashrate(2000.0)
            .with_bind_ip("127.0.0.3".parse().unwrap());
        let miner = spawn(config, shutdown.clone());
        let mut conn = Conn::accept(&listener).await;
        assert_eq!(conn.peer.ip().to_string(), "127.0.0.3");
        let configure = conn.recv().await;
        assert_eq!(
            configure["params"][1]["minimum-difficulty.value"],
            json!(1e-6)
        );
        conn.send(
            json!({"id": configure["id"], "result": null, "error": [20, "Unsupported", null]}),
        )
        .await;
        let (methods, _) = conn.handshake().await;
        assert_eq!(methods, vec!["mining.subscribe", "mining.authorize"]);
        let job = PoolJob::new("x", 9);
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]}))
            .await;
        conn.send(job.notify(false)).await;
        let submit = conn.next_submit().await;
        assert!(share_target(1e-9).is_met_by(job.check_submit(
            &EN1,
            submit["params"].as_array().unwrap(),
            None
        )));
        shutdown.cancel();
        timeout(STEP, miner.task).await.unwrap().unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn connection_refused_and_oversized_lines_disconnect() {
    timeout(Duration::from_secs(30), async {
        // Nothing listens on a just-closed port.
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let mut miner = spawn(
            MinerConfig::new(addr, "w", Dialect::Avalon),
            CancellationToken::new(),
        );
        let ev = next_event(&mut miner, |_| true).await;
        assert!(
            matches!(ev, MinerEvent::Disconnected { ref reason } if reason.contains("connect")),
            "{ev:?}"
        );

        let (listener, mut miner, _shutdown) = start(Dialect::Nerdminer).await;
        let mut conn = Conn::accept(&listener).await;
        conn.recv().await;
        conn.send_raw(&"x".repeat(sv1_miner::MAX_LINE_LEN + 10))
            .await;
        let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::Disconnected { .. })).await;
        assert!(
            matches!(ev, MinerEvent::Disconnected { ref reason } if reason.contains("longer")),
            "{ev:?}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn idle_miner_follows_jobs_without_hashing() {
    timeout(Duration::from_secs(30), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let config = MinerConfig::new(listener.local_addr().unwrap(), "idle", Dialect::Whatsminer)
            .with_max_hashrate(0.0);
        let mut miner = spawn(config, shutdown.clone());
        let mut conn = Conn::accept(&listener).await;
        conn.handshake().await;
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]}))
            .await;
        conn.send(PoolJob::new("1", 1).notify(true)).await;
        next_event(&mut miner, |e| matches!(e, MinerEvent::Notify { .. })).await;
        assert!(conn.recv_within(Duration::from_millis(300)).await.is_none());
        let s = miner.stats.snapshot();
        assert_eq!((s.hashes, s.shares_submitted, s.notifies), (0, 0, 1));
        shutdown.cancel();
        timeout(STEP, miner.task).await.unwrap().unwrap();
    })
    .await
    .expect("test timed out");
}
