//! Restarts and upgrades on real processes: what a miner sees when jd-proxy stops (SIGTERM, with
//! a successor started on the same port, as systemd's `Restart=` does) and when a new version
//! takes the listening socket over from the running one (`[upgrade] handover_socket`).
//!
//! Those two run our `jd-proxy` binary (built by `scripts/test.sh`) against a regtest node,
//! over loopback; a third checks in-process that a stopping proxy answers what is already on the
//! wire. On regtest every share at the test difficulty is also a block, so the miner finds
//! blocks the whole time and a stopping process has some to wait for.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::binary::{solo_toml, ProxyProcess};
use integration_tests::support::process::free_local_port;
use integration_tests::support::{
    init_tracing, solo_config, start_proxy, wait_until, with_timeout,
};
use integration_tests::wallet::TestWallet;
use serde_json::Value;
use sv1_miner::{Dialect, MinerConfig, MinerEvent};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(55);
/// What `jd_proxy::Proxy::start` logs once it accepts miners.
const SERVING: &str = "jd-proxy serving Stratum V1 miners";
/// The wait the proxy asks of miners in `client.reconnect` (`stratum.reconnect_wait_secs`).
const RECONNECT_WAIT: Duration = Duration::from_secs(1);
/// From `client.reconnect` to a share accepted by the next process, at most.
const BACK_TO_WORK: Duration = Duration::from_secs(2);
/// The miner's share difficulty and pace: a share (and, on regtest, a block) every ~0.1 s, so
/// the time back to work is the reconnect's, not the luck of the hash.
const DIFFICULTY: f64 = 1e-6;
const HASHRATE: f64 = 50_000.0;
/// The first request of the test clients.
const SUBSCRIBE: &[u8] = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"probe/1.0\"]}\n";
/// How often the stream of connections during a handover connects.
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// SIGTERM: every miner is told to come back to the same address after
/// `stratum.reconnect_wait_secs`, the process waits for its found blocks to get a verdict from
/// the node, and a miner following the request mines on the successor within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_miners_to_the_successor() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let (node, payout) = regtest_node().await?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_local_port()?));
        let toml = solo_toml(
            &node,
            payout.address(),
            &addr.to_string(),
            &format!("reconnect_wait_secs = {}", RECONNECT_WAIT.as_secs()),
            "",
        );
        let first = started(&toml).await?;
        let miner_stop = CancellationToken::new();
        let mut miner = TimedMiner::spawn(addr, &miner_stop);
        miner.accepted_share(Duration::from_secs(15)).await?;
        let mut idle = TimedMiner::idle(addr, &miner_stop).await?;
        // Mining at full pace when the signal comes: blocks are found while it stops.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let term_at = Instant::now();
        first.signal("TERM")?;
        let status = first.wait_exit(Duration::from_secs(15)).await?;
        let exited_in = term_at.elapsed();
        // As systemd's Restart= would: the successor on the same port as soon as it is gone.
        let successor_at = Instant::now();
        let successor = ProxyProcess::start(&toml, "")?;
        successor
            .wait_for_log(SERVING, Duration::from_secs(20))
            .await?;
        let successor_ready_in = successor_at.elapsed();
        let back = miner.back_to_work(addr).await;
        let log = first.log();
        anyhow::ensure!(
            status.success(),
            "SIGTERM is a clean exit, got {status}:\n{}",
            first.log_tail()
        );
        anyhow::ensure!(
            log.contains("shutting down: miners are asked to reconnect"),
            "the first process logs why it stops:\n{}",
            first.log_tail()
        );
        let back = back?;
        for m in &mut idle {
            m.back_with_a_job(addr).await?;
        }
        let blocks = every_block_judged(&log, &first.blocks_dir())?;
        eprintln!(
            "sigterm: exited {exited_in:?} after SIGTERM (10 ms poll); successor serving {successor_ready_in:?} after start (50 ms poll); \
             reconnect -> accepted share on the successor {:?} (asked wait {:?}), {} idle miners back with a job; {blocks} blocks found by the first process, each judged by the node before it exited",
            back.reconnect_to_share, back.wait, idle.len()
        );
        anyhow::ensure!(
            back.reconnect_to_share <= BACK_TO_WORK,
            "mining again {:?} after client.reconnect, more than {BACK_TO_WORK:?}",
            back.reconnect_to_share
        );
        miner_stop.cancel();
        successor.signal("TERM")?;
        successor.wait_exit(Duration::from_secs(15)).await?;
        Ok(())
    })
    .await
}

/// An upgrade by socket handover refuses no connection: a stream of subscribes, one every
/// 5 ms, is answered throughout while the new process takes the socket and the old one sends
/// its miners to it and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_refuses_no_connection() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let (node, payout) = regtest_node().await?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_local_port()?));
        let handover = tempfile::tempdir()?;
        let upgrade = format!(
            "[upgrade]\nhandover_socket = \"{}\"\n",
            handover.path().join("handover.sock").display()
        );
        let toml = solo_toml(&node, payout.address(), &addr.to_string(), "", &upgrade);
        let old = started(&toml).await?;
        old.wait_for_log("ready to hand the listening socket", Duration::from_secs(5))
            .await?;
        let miner_stop = CancellationToken::new();
        let mut miner = TimedMiner::spawn(addr, &miner_stop);
        miner.accepted_share(Duration::from_secs(15)).await?;
        let mut idle = TimedMiner::idle(addr, &miner_stop).await?;

        let probes = Probes::start(addr);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let new_at = Instant::now();
        let new = ProxyProcess::start(&toml, "")?;
        let (serving, exited) = tokio::join!(
            async {
                new.wait_for_log(SERVING, Duration::from_secs(20)).await?;
                anyhow::Ok(new_at.elapsed())
            },
            async {
                let status = old.wait_exit(Duration::from_secs(20)).await?;
                anyhow::Ok((status, new_at.elapsed()))
            },
        );
        let (new_serving_in, (status, old_gone_in)) = (serving?, exited?);
        let back = miner.back_to_work(addr).await;
        // The stream goes on a while after the old process is gone.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let counts = probes.stop().await;
        eprintln!(
            "handover: new process serving {new_serving_in:?} after its start (50 ms poll), old one exited {old_gone_in:?} after it (10 ms poll); \
             connects attempted {}, answered {}, refused {}, unanswered {} (slowest answer {:?})",
            counts.attempted, counts.answered, counts.refused, counts.unanswered.len(), counts.slowest
        );
        anyhow::ensure!(
            status.success(),
            "the old process exits cleanly, got {status}:\n{}",
            old.log_tail()
        );
        socket_moved(&old, &new)?;
        counts.none_lost()?;
        let back = back?;
        for m in &mut idle {
            m.back_with_a_job(addr).await?;
        }
        eprintln!(
            "handover: reconnect -> accepted share on the new process {:?} (asked wait {:?}), {} idle miners back with a job",
            back.reconnect_to_share, back.wait, idle.len()
        );
        anyhow::ensure!(
            back.reconnect_to_share <= BACK_TO_WORK,
            "mining again {:?} after client.reconnect, more than {BACK_TO_WORK:?}",
            back.reconnect_to_share
        );
        anyhow::ensure!(new.is_running(), "the new process still serves");
        miner_stop.cancel();
        new.signal("TERM")?;
        new.wait_exit(Duration::from_secs(15)).await?;
        Ok(())
    })
    .await
}

/// A request already on the wire when the proxy stops is answered, not cut off: here the
/// subscribe of a miner accepted just as the socket goes to the next version (a share, which
/// may solve a block, takes the same path). On one thread nothing runs between the write and
/// the stop, so the session sees both at once.
#[tokio::test(flavor = "current_thread")]
async fn a_request_on_the_wire_at_shutdown_is_answered() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let (node, payout) = regtest_node().await?;
        let dir = tempfile::tempdir()?;
        let proxy = start_proxy(solo_config(&node, payout.address(), dir.path())).await?;
        let mut client = TcpStream::connect(proxy.local_addr()).await?;
        let accepted = wait_until(Duration::from_secs(5), || async {
            proxy.stats().connections == 1
        });
        anyhow::ensure!(accepted.await, "the proxy accepted the connection");
        client.write_all(SUBSCRIBE).await?;
        proxy.shutdown().await;
        let mut lines = BufReader::new(client).lines();
        let reply = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await?;
        let reply: Value = serde_json::from_str(&reply?.unwrap_or_default())?;
        anyhow::ensure!(
            reply["id"] == 1 && reply["result"].is_array(),
            "the subscribe sent as the proxy stopped is answered: {reply}"
        );
        Ok(())
    })
    .await
}

/// The new process took the listening socket from the old one (rather than binding its own).
fn socket_moved(old: &ProxyProcess, new: &ProxyProcess) -> anyhow::Result<()> {
    anyhow::ensure!(
        new.log().contains("took the listening socket over"),
        "the new process took the socket over:\n{}",
        new.log_tail()
    );
    anyhow::ensure!(
        old.log()
            .contains("listening socket handed to the new version"),
        "the old process handed its socket over:\n{}",
        old.log_tail()
    );
    Ok(())
}

/// A regtest node past initial block download, and the wallet blocks pay.
async fn regtest_node() -> anyhow::Result<(BitcoinNode, TestWallet)> {
    let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
    let payout = TestWallet::new();
    node.mine_to(1, payout.address()).await?;
    Ok((node, payout))
}

/// A jd-proxy process running `toml`, once it serves miners.
async fn started(toml: &str) -> anyhow::Result<ProxyProcess> {
    let proxy = ProxyProcess::start(toml, "")?;
    proxy.wait_for_log(SERVING, Duration::from_secs(20)).await?;
    Ok(proxy)
}

/// Every block the process logged as found is in its journal with the node's verdict: it did
/// not exit while one was still on its way. Returns how many there were.
///
/// Counted by hash: on regtest's empty mempool the empty job sent on a new tip and the full
/// one after it build the same block, and a miner restarting its nonce range finds it twice.
fn every_block_judged(log: &str, blocks_dir: &Path) -> anyhow::Result<usize> {
    let found: HashSet<&str> = log
        .lines()
        .filter_map(|l| l.split_once("BLOCK FOUND hash=")?.1.split(' ').next())
        .collect();
    let journal = template_provider::blocks::journal::read_dir(blocks_dir)?;
    let journaled: HashSet<String> = journal.iter().map(|e| e.hash.to_string()).collect();
    anyhow::ensure!(
        !found.is_empty(),
        "the miner found blocks before the signal"
    );
    let missing: Vec<&&str> = found.iter().filter(|h| !journaled.contains(**h)).collect();
    anyhow::ensure!(
        missing.is_empty() && journaled.len() == found.len(),
        "{} blocks found, {} journaled; not journaled: {missing:?}",
        found.len(),
        journaled.len()
    );
    let unjudged: Vec<String> = journal
        .iter()
        .filter(|e| e.fates.is_empty())
        .map(|e| e.hash.to_string())
        .collect();
    anyhow::ensure!(
        unjudged.is_empty(),
        "the process exited before the node judged {unjudged:?}"
    );
    Ok(found.len())
}

/// A CPU miner that follows `client.reconnect`, its events stamped as they happen.
struct TimedMiner {
    events: mpsc::UnboundedReceiver<(Instant, MinerEvent)>,
}

/// How a miner got back to work after `client.reconnect`.
struct BackToWork {
    /// The wait the proxy asked for.
    wait: Duration,
    /// From the request to the first share the next process accepted.
    reconnect_to_share: Duration,
}

impl TimedMiner {
    /// The miner whose time back to work is measured.
    fn spawn(addr: SocketAddr, shutdown: &CancellationToken) -> TimedMiner {
        let config = MinerConfig::new(addr, "upgrade.bitaxe", Dialect::Bitaxe)
            .with_suggest_difficulty(DIFFICULTY)
            .with_max_hashrate(HASHRATE);
        Self::following(config, shutdown)
    }

    /// Idle miners of the other dialects (they handshake and take jobs, never hash), each
    /// once it has its first job.
    async fn idle(addr: SocketAddr, shutdown: &CancellationToken) -> anyhow::Result<Vec<Self>> {
        let mut idle = Vec::new();
        for dialect in [
            Dialect::Cgminer,
            Dialect::Whatsminer,
            Dialect::Avalon,
            Dialect::Braiins,
        ] {
            let config = MinerConfig::new(addr, format!("upgrade.{dialect}"), dialect)
                .with_max_hashrate(0.0);
            let mut miner = Self::following(config, shutdown);
            miner.notified().await?;
            idle.push(miner);
        }
        Ok(idle)
    }

    fn following(config: MinerConfig, shutdown: &CancellationToken) -> TimedMiner {
        let mut miner = sv1_miner::spawn(config.following_reconnect(), shutdown.clone());
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(ev) = miner.events.recv().await {
                if tx.send((Instant::now(), ev)).is_err() {
                    return;
                }
            }
        });
        TimedMiner { events }
    }

    async fn next(&mut self, until: Instant) -> anyhow::Result<(Instant, MinerEvent)> {
        match tokio::time::timeout_at(until.into(), self.events.recv()).await {
            Ok(Some((_, MinerEvent::Disconnected { reason }))) => {
                anyhow::bail!("the miner stopped: {reason}")
            }
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => anyhow::bail!("the miner is gone"),
            Err(_) => anyhow::bail!("no miner event in time"),
        }
    }

    /// Waits for a share the proxy accepts.
    async fn accepted_share(&mut self, limit: Duration) -> anyhow::Result<Instant> {
        let until = Instant::now() + limit;
        loop {
            if let (at, MinerEvent::ShareResult { accepted: true, .. }) = self.next(until).await? {
                return Ok(at);
            }
        }
    }

    /// Waits for a job.
    async fn notified(&mut self) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(10);
        while !matches!(self.next(until).await?, (_, MinerEvent::Notify { .. })) {}
        Ok(())
    }

    /// Waits for `client.reconnect`, checks it sends the miner back to `addr` after the
    /// configured wait, and returns when it came.
    async fn sent_back(&mut self, addr: SocketAddr) -> anyhow::Result<(Instant, Duration)> {
        let until = Instant::now() + Duration::from_secs(20);
        let (asked_at, to, wait) = loop {
            if let (at, MinerEvent::Reconnecting { to, wait }) = self.next(until).await? {
                break (at, to, wait);
            }
        };
        anyhow::ensure!(to == addr, "sent to {to}, not back to {addr}");
        anyhow::ensure!(wait == RECONNECT_WAIT, "asked to wait {wait:?}");
        Ok((asked_at, wait))
    }

    /// Sent back (as [`TimedMiner::sent_back`]), then given a job by the next process.
    async fn back_with_a_job(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        self.sent_back(addr).await?;
        self.notified().await
    }

    /// Sent back (as [`TimedMiner::sent_back`]), then a share accepted by the next process.
    async fn back_to_work(&mut self, addr: SocketAddr) -> anyhow::Result<BackToWork> {
        let (asked_at, wait) = self.sent_back(addr).await?;
        let accepted_at = self.accepted_share(BACK_TO_WORK * 5).await?;
        Ok(BackToWork {
            wait,
            reconnect_to_share: accepted_at - asked_at,
        })
    }
}

/// A stream of connections, each subscribing and reading the reply.
struct Probes {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Counts>,
}

/// What became of the connections.
#[derive(Debug, Default)]
struct Counts {
    attempted: usize,
    answered: usize,
    refused: usize,
    /// Connected but closed or silent before the reply, with what happened.
    unanswered: Vec<String>,
    slowest: Duration,
}

impl Counts {
    /// No connect refused, every subscribe answered, and enough of them to mean something.
    fn none_lost(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.refused == 0, "{} connects refused", self.refused);
        anyhow::ensure!(
            self.unanswered.is_empty(),
            "{} of {} subscribes unanswered: {:?}",
            self.unanswered.len(),
            self.attempted,
            self.unanswered
        );
        anyhow::ensure!(
            self.answered == self.attempted && self.attempted >= 100,
            "{} of {} answered",
            self.answered,
            self.attempted
        );
        Ok(())
    }
}

enum Probe {
    Answered(Duration),
    Refused,
    Unanswered(String),
}

impl Probes {
    fn start(addr: SocketAddr) -> Probes {
        let stop = CancellationToken::new();
        let task = tokio::spawn(Self::run(addr, stop.clone()));
        Probes { stop, task }
    }

    async fn run(addr: SocketAddr, stop: CancellationToken) -> Counts {
        let mut every = tokio::time::interval(PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes = JoinSet::new();
        while !stop.is_cancelled() {
            every.tick().await;
            probes.spawn(probe(addr));
        }
        let mut counts = Counts::default();
        while let Some(p) = probes.join_next().await {
            counts.attempted += 1;
            match p.unwrap_or_else(|e| Probe::Unanswered(format!("probe task: {e}"))) {
                Probe::Answered(took) => {
                    counts.answered += 1;
                    counts.slowest = counts.slowest.max(took);
                }
                Probe::Refused => counts.refused += 1,
                Probe::Unanswered(why) => counts.unanswered.push(why),
            }
        }
        counts
    }

    async fn stop(self) -> Counts {
        self.stop.cancel();
        self.task.await.expect("the probe loop does not panic")
    }
}

/// Connects, sends `mining.subscribe` and reads until its reply.
async fn probe(addr: SocketAddr) -> Probe {
    let start = Instant::now();
    let limit = Duration::from_secs(10);
    let mut stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Probe::Refused,
        Ok(Err(e)) => return Probe::Unanswered(format!("connect: {e}")),
        Err(_) => return Probe::Unanswered("connect timed out".into()),
    };
    if let Err(e) = stream.write_all(SUBSCRIBE).await {
        return Probe::Unanswered(format!("write: {e}"));
    }
    let mut lines = BufReader::new(stream).lines();
    loop {
        let line = match tokio::time::timeout_at((start + limit).into(), lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => return Probe::Unanswered("closed before the reply".into()),
            Ok(Err(e)) => return Probe::Unanswered(format!("read: {e}")),
            Err(_) => return Probe::Unanswered("no reply in time".into()),
        };
        let Ok(reply) = serde_json::from_str::<Value>(&line) else {
            return Probe::Unanswered(format!("not JSON: {line}"));
        };
        if reply["id"] == 1 {
            return if reply["result"].is_array() {
                Probe::Answered(start.elapsed())
            } else {
                Probe::Unanswered(format!("subscribe refused: {line}"))
            };
        }
    }
}
