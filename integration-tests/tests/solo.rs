//! Solo mode end to end: a real regtest Bitcoin Core, jd-proxy in-process, CPU miners speaking
//! real firmware dialects over loopback. Every block claim is checked against the node.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bitcoin::{Amount, Txid};
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::{
    blocks_above, init_tracing, solo_config, start_proxy, wait_until, with_timeout, MinerSpec,
};
use integration_tests::wallet::TestWallet;
use serde_json::{json, Value};
use sv1_miner::{Dialect, MinerEvent, MinerHandle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(150);
/// A CPU miner at this rate finds a share at the test difficulty about once a second.
const HASHRATE: f64 = 25_000.0;
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "farm",
    difficulty: 5e-6,
    hashrate: HASHRATE,
};

/// Outcomes 1 and 4: every dialect mines through the proxy; the node accepts the blocks; the
/// coinbase pays the configured address; version-rolling miners' blocks are among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_mines_blocks_the_node_accepts() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let mut funder = TestWallet::new();
        funder.fund(&node, 110).await?;
        let payout = TestWallet::new();
        let dir = tempfile::tempdir()?;
        let proxy = start_proxy(solo_config(&node, payout.address(), dir.path())).await?;
        let (start, _) = node.tip().await?;

        let shutdown = CancellationToken::new();
        let miners: Vec<(Dialect, MinerHandle)> = Dialect::ALL
            .iter()
            .map(|&d| (d, MINERS.spawn(proxy.local_addr(), d, &shutdown)))
            .collect();
        let all_found = wait_until(Duration::from_secs(90), || async {
            miners
                .iter()
                .all(|(_, m)| m.stats.snapshot().shares_accepted >= 2)
        })
        .await;
        let by_dialect: Vec<(String, u64, u64)> = miners
            .iter()
            .map(|(d, m)| {
                (
                    d.to_string(),
                    m.stats.snapshot().shares_accepted,
                    m.stats.snapshot().shares_rejected,
                )
            })
            .collect();
        assert!(
            all_found,
            "every dialect gets shares accepted: {by_dialect:?}"
        );
        shutdown.cancel();
        let stats = proxy.stats();
        proxy.shutdown().await;

        let blocks = blocks_above(&node, start).await?;
        assert!(
            blocks.len() >= Dialect::ALL.len(),
            "node accepted {} blocks from the proxy",
            blocks.len()
        );
        let mut rolled = 0;
        for block in &blocks {
            let coinbase = &block.txdata[0];
            assert_eq!(
                coinbase.output[0].script_pubkey,
                *payout.script_pubkey(),
                "coinbase pays the configured address"
            );
            let script_sig = coinbase.input[0].script_sig.as_bytes();
            assert!(
                script_sig.windows(15).any(|w| w == b"/jd-proxy-test/"),
                "coinbase carries the tag"
            );
            if block.header.version.to_consensus() as u32 & 0x1fff_e000 != 0 {
                rolled += 1;
            }
        }
        assert!(
            rolled > 0,
            "blocks from version-rolling miners (6-param submits) were accepted"
        );
        assert!(
            stats.blocks >= blocks.len() as u64,
            "proxy counted {} blocks, node has {}",
            stats.blocks,
            blocks.len()
        );
        // Every block found was also written to disk before it went to the node.
        let files = integration_tests::support::journaled_blocks(dir.path());
        assert!(
            files as u64 >= stats.blocks,
            "{files} block files for {} blocks",
            stats.blocks
        );
        Ok(())
    })
    .await
}

/// Outcome 2: transactions in the node's mempool (a parent and its child among them) end up in
/// blocks mined through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mempool_transactions_are_mined() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 120).await?;
        let dir = tempfile::tempdir()?;
        // Paid through a descriptor this time: the node resolves it.
        let mut raw = solo_config(&node, wallet.address(), dir.path());
        raw.coinbase.payout_address = None;
        raw.coinbase.payout_descriptor = Some(format!("wpkh({})", wallet.public_key()));
        let proxy = start_proxy(raw).await?;
        let (start, _) = node.tip().await?;

        let fee = Amount::from_sat(2_000);
        let parent = wallet.send_self(&node, fee).await?;
        let child = wallet.send_child(&node, parent, fee).await?;
        let other = wallet.send_self(&node, fee).await?;
        let wanted: HashSet<Txid> = [parent, child, other].into();
        let mempool: Vec<Txid> = node.rpc_as("getrawmempool", json!([])).await?;
        assert!(
            wanted.iter().all(|t| mempool.contains(t)),
            "all three in the mempool"
        );

        let shutdown = CancellationToken::new();
        let _miners = MINERS.spawn_each(
            proxy.local_addr(),
            &[Dialect::Cgminer, Dialect::Bitaxe],
            &shutdown,
        );
        let mut mined = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while mined.len() < wanted.len() && Instant::now() < deadline {
            for b in blocks_above(&node, start).await? {
                mined.extend(
                    b.txdata
                        .iter()
                        .map(bitcoin::Transaction::compute_txid)
                        .filter(|t| wanted.contains(t)),
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let done = mined.len() == wanted.len();
        shutdown.cancel();
        proxy.shutdown().await;
        assert!(done, "mined {} of the 3 mempool transactions", mined.len());
        for block in blocks_above(&node, start).await? {
            assert_eq!(
                block.txdata[0].output[0].script_pubkey,
                *wallet.script_pubkey(),
                "descriptor payout"
            );
        }
        Ok(())
    })
    .await
}

/// Outcome 3: a tip mined outside the proxy moves every connected miner to a clean job on the
/// new previous hash, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tip_moves_every_miner_to_a_clean_job() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let wallet = TestWallet::new();
        node.mine_to(110, wallet.address()).await?;
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, wallet.address(), dir.path());
        // Miners that never find a share: only the node moves the tip.
        raw.vardiff.initial_difficulty = Some(1000.0);
        raw.vardiff.min_difficulty = Some(1000.0);
        let proxy = start_proxy(raw).await?;

        let shutdown = CancellationToken::new();
        let idle = MinerSpec { worker_prefix: "w", difficulty: 1000.0, hashrate: 1000.0 };
        let mut miners = idle.spawn_each(proxy.local_addr(), &Dialect::ALL, &shutdown);
        // Everyone has work first.
        for m in &mut miners {
            loop {
                match tokio::time::timeout(Duration::from_secs(20), m.events.recv()).await? {
                    Some(MinerEvent::Notify { .. }) => break,
                    Some(MinerEvent::Disconnected { reason }) => anyhow::bail!("miner disconnected: {reason}"),
                    Some(_) => {}
                    None => anyhow::bail!("miner ended"),
                }
            }
        }

        for round in 0..3 {
            let mined = node.mine_to(1, wallet.address()).await?;
            let at = Instant::now();
            let new_tip = mined[0];
            let mut worst = Duration::ZERO;
            for m in &mut miners {
                let latency = loop {
                    match tokio::time::timeout(Duration::from_secs(10), m.events.recv()).await? {
                        Some(MinerEvent::Notify { prevhash, clean: true, at: seen, .. }) if prevhash == new_tip => {
                            break seen.saturating_duration_since(at);
                        }
                        Some(MinerEvent::Disconnected { reason }) => anyhow::bail!("miner disconnected: {reason}"),
                        None => anyhow::bail!("miner ended"),
                        Some(_) => {}
                    }
                };
                worst = worst.max(latency);
            }
            eprintln!("round {round}: all {} miners on the new tip {worst:?} after generatetoaddress returned", miners.len());
            assert!(worst < Duration::from_secs(2), "every miner switched within 2 s (took {worst:?})");
        }
        shutdown.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// A hand-driven miner connection for the misbehaviour tests.
struct RawClient {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawClient {
    async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let (r, w) = TcpStream::connect(addr).await?.into_split();
        Ok(RawClient {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.write_all(b"\n").await?;
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
            .await??;
        anyhow::ensure!(n > 0, "connection closed");
        Ok(serde_json::from_str(&line)?)
    }

    /// The next message that is a reply (has a non-null id) or matches `method`.
    async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        loop {
            let v = self.recv().await?;
            if pred(&v) {
                return Ok(v);
            }
        }
    }

    /// Whether the server closes the connection within 5 s (reading and dropping any data).
    async fn closed_by_server(&mut self) -> bool {
        let mut buf = String::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            buf.clear();
            match tokio::time::timeout_at(deadline.into(), self.reader.read_line(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Outcome 5: garbage, an oversized line, an unknown method, a stale job and a duplicate each
/// get a clear answer or a clean disconnect of that one client, and the others keep mining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_clients_are_answered_or_cut_off_alone() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let wallet = TestWallet::new();
        node.mine_to(110, wallet.address()).await?;
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, wallet.address(), dir.path());
        raw.stratum.max_line_bytes = Some(1024);
        let proxy = start_proxy(raw).await?;
        let addr = proxy.local_addr();

        let shutdown = CancellationToken::new();
        let honest = MINERS.spawn(addr, Dialect::Cgminer, &shutdown);
        assert!(wait_until(Duration::from_secs(30), || async { honest.stats.snapshot().shares_accepted >= 1 }).await, "honest miner mines");

        // Garbage: cut off.
        let mut garbage = RawClient::connect(addr).await?;
        garbage.writer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        assert!(garbage.closed_by_server().await, "garbage is cut off");

        // An oversized line: cut off.
        let mut big = RawClient::connect(addr).await?;
        big.writer.write_all(&vec![b'a'; 4096]).await?;
        assert!(big.closed_by_server().await, "an oversized line is cut off");

        // An unknown method: an error with the same id, and the connection lives on.
        let mut c = RawClient::connect(addr).await?;
        c.send(r#"{"id":"abc","method":"mining.get_transactions","params":[]}"#).await?;
        let reply = c.recv().await?;
        assert_eq!(reply["id"], "abc");
        assert!(reply["error"].is_array(), "unknown method gets an error: {reply}");

        // The subscribe reply is the first line after the subscribe request.
        c.send(r#"{"id":1,"method":"mining.subscribe","params":["raw/1.0"]}"#).await?;
        let sub = c.recv().await?;
        assert_eq!(sub["id"], 1, "first line after subscribe is its reply: {sub}");
        let en1 = hex::decode(sub["result"][1].as_str().unwrap())?;
        let en2_size = sub["result"][2].as_u64().unwrap() as usize;
        c.send(r#"{"id":2,"method":"mining.suggest_difficulty","params":[1e-12]}"#).await?;
        c.send(r#"{"id":3,"method":"mining.authorize","params":["raw.1","x"]}"#).await?;
        let notify = c.recv_until(|v| v["method"] == "mining.notify").await?;
        let job = sv1_miner::Job::from_notify_params(&notify["params"])?;

        // A share that is not a block (so the tip stays), accepted once, then a duplicate.
        let network = bitcoin::Target::from_compact(bitcoin::CompactTarget::from_consensus(job.nbits));
        let en2 = vec![0u8; en2_size];
        let nonce = (0u32..)
            .find(|&n| !network.is_met_by(sv1_miner::build_header(&job, &en1, &en2, job.version, job.ntime, n).block_hash()))
            .expect("a non-block nonce");
        let submit = format!(
            r#"{{"id":10,"method":"mining.submit","params":["raw.1","{}","{}","{:08x}","{:08x}"]}}"#,
            job.job_id, hex::encode(&en2), job.ntime, nonce
        );
        // Both in one write: the honest miner may move the tip at any moment, and lines already
        // sent are judged against the jobs the miner had.
        c.send(&format!("{submit}\n{}", submit.replace("\"id\":10", "\"id\":11"))).await?;
        let ok = c.recv_until(|v| v["id"] == 10).await?;
        assert_eq!(ok["result"], true, "valid share accepted: {ok}");
        let dup = c.recv_until(|v| v["id"] == 11).await?;
        assert_eq!(dup["error"][0], 22, "duplicate answered as such: {dup}");

        // A job id never sent.
        c.send(r#"{"id":12,"method":"mining.submit","params":["raw.1","ffffff","00000000","00000000","00000000"]}"#).await?;
        let unknown = c.recv_until(|v| v["id"] == 12).await?;
        assert_eq!(unknown["error"][1], "job not found", "{unknown}");

        // A stale job: the node moves on, the old job id is answered "stale".
        node.mine_to(1, wallet.address()).await?;
        let old_prev = job.prevhash;
        c.recv_until(|v| {
            v["method"] == "mining.notify"
                && sv1_miner::Job::from_notify_params(&v["params"]).map(|j| j.prevhash != old_prev && j.clean).unwrap_or(false)
        })
        .await?;
        c.send(&submit.replace("\"id\":10", "\"id\":13")).await?;
        let stale = c.recv_until(|v| v["id"] == 13).await?;
        assert_eq!(stale["error"][1], "stale job", "{stale}");

        // The honest miner kept mining through all of it.
        let before = honest.stats.snapshot().shares_accepted;
        assert!(wait_until(Duration::from_secs(30), || async { honest.stats.snapshot().shares_accepted > before }).await, "honest miner keeps mining");
        let s = proxy.stats();
        assert_eq!(s.rejected_for(jd_proxy::share::Reject::Duplicate), 1);
        assert!(s.rejected_for(jd_proxy::share::Reject::StaleJob) >= 1);
        shutdown.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// A node on another chain is refused at start with a message naming both chains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_network_is_refused_at_start() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, TestWallet::new().address(), dir.path());
        raw.network = Some("signet".into());
        raw.coinbase.payout_address = Some("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx".into());
        let err = start_proxy(raw)
            .await
            .expect_err("a regtest node is refused for signet");
        let msg = format!("{err:#}");
        assert!(msg.contains("regtest") && msg.contains("signet"), "{msg}");
        Ok(())
    })
    .await
}

/// Limits: connections beyond the maximum are refused, a connection that says nothing is cut
/// off after the first-message timeout, an idle one after the idle timeout, and freed slots
/// serve new miners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_and_timeouts() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let wallet = TestWallet::new();
        node.mine_to(110, wallet.address()).await?;
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, wallet.address(), dir.path());
        raw.stratum.max_connections = Some(2);
        raw.stratum.first_message_timeout_secs = Some(1);
        raw.stratum.idle_timeout_secs = Some(2);
        raw.vardiff.initial_difficulty = Some(1000.0);
        raw.vardiff.min_difficulty = Some(1000.0);
        let proxy = start_proxy(raw).await?;
        let addr = proxy.local_addr();

        let mut silent = RawClient::connect(addr).await?;
        let mut talker = RawClient::connect(addr).await?;
        talker
            .send(r#"{"id":1,"method":"mining.subscribe","params":[]}"#)
            .await?;
        assert_eq!(talker.recv().await?["id"], 1);
        let mut third = RawClient::connect(addr).await?;
        let refused_at = Instant::now();
        assert!(
            third.closed_by_server().await,
            "a connection beyond the maximum is refused"
        );
        assert!(
            refused_at.elapsed() < Duration::from_millis(900),
            "refused at once, not by a timeout"
        );
        assert!(
            wait_until(Duration::from_secs(2), || async {
                proxy.stats().connections_refused == 1
            })
            .await
        );

        let t = Instant::now();
        assert!(silent.closed_by_server().await, "silent connection cut off");
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "after the first-message timeout, not before"
        );
        assert!(talker.closed_by_server().await, "idle connection cut off");

        // Slots are free again.
        assert!(
            wait_until(Duration::from_secs(2), || async {
                proxy.stats().connections == 0
            })
            .await
        );
        let mut again = RawClient::connect(addr).await?;
        again
            .send(r#"{"id":7,"method":"mining.subscribe","params":[]}"#)
            .await?;
        assert_eq!(
            again.recv().await?["id"],
            7,
            "a freed slot serves a new miner"
        );
        proxy.shutdown().await;
        Ok(())
    })
    .await
}
