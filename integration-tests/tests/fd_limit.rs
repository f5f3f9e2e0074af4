//! File descriptors: jd-proxy fits `max_connections` to its file limit at start, and a found
//! block still reaches the node when a connection flood has taken every descriptor. jd-proxy
//! runs as its own process here, since a file limit is a process's.

use std::time::{Duration, Instant};

use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::binary::{solo_toml, ProxyProcess};
use integration_tests::support::process::free_local_port;
use integration_tests::support::{init_tracing, wait_until, with_timeout, MinerSpec};
use integration_tests::wallet::TestWallet;
use sv1_miner::Dialect;
use template_provider::blocks::journal::read_dir;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "farm",
    difficulty: 5e-6,
    hashrate: 25_000.0,
};

/// `n` connections at once that never speak; those the listen queue cannot hold time out.
async fn flood(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(addr),
        ));
    }
    let mut open = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(Ok(Ok(s))) = r {
            open.push(s);
        }
    }
    open
}

/// Every block the log says went into the journal is there, and a block that could not be
/// written is logged whole.
fn check_log_against_journal(proxy: &ProxyProcess) -> anyhow::Result<usize> {
    let log = proxy.log();
    let journal = read_dir(&proxy.blocks_dir())?;
    let claimed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("block written to the journal"))
        .collect();
    anyhow::ensure!(!claimed.is_empty(), "no block was journaled");
    for line in &claimed {
        anyhow::ensure!(
            journal.iter().any(|e| line.contains(&e.hash.to_string())),
            "the log claims a block the journal does not hold: {line}"
        );
    }
    for line in log.lines().filter(|l| l.contains("BLOCK NOT ON DISK")) {
        anyhow::ensure!(
            line.contains("block="),
            "a block not on disk is logged whole: {line}"
        );
    }
    Ok(claimed.len())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn set_fd_limit(pid: u32, limit: usize) -> anyhow::Result<()> {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()?;
    anyhow::ensure!(status.success(), "prlimit failed");
    Ok(())
}

/// Outcome 2: under a file limit of 400, `max_connections = 1000` is clamped with a warning
/// naming the key. Then the limit is cut to what the process holds and a flood of
/// connections takes every descriptor left: blocks found meanwhile are accepted by the node,
/// and every block the log says is in the journal is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_reach_the_node_while_a_flood_holds_every_descriptor() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(Duration::from_secs(150), async {
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        TestWallet::new().fund(&node, 101).await?;
        let payout = TestWallet::new();
        let listen = format!("127.0.0.1:{}", free_local_port()?);
        let toml = solo_toml(
            &node,
            payout.address(),
            &listen,
            "max_connections = 1000\nmax_connections_per_ip = 0",
            "",
        );
        let proxy = ProxyProcess::start(&toml, "ulimit -n 400;")?;
        proxy
            .wait_for_log("serving Stratum V1 miners", Duration::from_secs(20))
            .await?;
        let log = proxy.log();
        assert!(
            log.contains("stratum.max_connections = 1000 does not fit the process's file limit of 400"),
            "the clamp names the key:\n{log}"
        );
        let pid = proxy.pid().expect("running");

        let stop = CancellationToken::new();
        let addr = listen.parse()?;
        let miners = MINERS.spawn_each(addr, &[Dialect::Cgminer, Dialect::Bitaxe], &stop);
        anyhow::ensure!(
            wait_until(Duration::from_secs(30), || async {
                miners.iter().all(|m| m.stats.snapshot().shares_accepted >= 1)
            })
            .await,
            "miners mining before the flood:\n{}",
            proxy.log_tail()
        );

        // Leave the process no descriptor to spare, then flood it.
        let held = open_fds(pid);
        set_fd_limit(pid, held + 4)?;
        let flood = flood(addr, 300).await;
        let (start, _) = node.tip().await?;
        let flooded_at = Instant::now();
        // The flood ran the process out of descriptors.
        proxy
            .wait_for_log("accept failed (out of file descriptors?)", Duration::from_secs(5))
            .await?;
        let found = wait_until(Duration::from_secs(60), || async {
            node.tip().await.is_ok_and(|(h, _)| h >= start + 3)
        })
        .await;
        let (end, _) = node.tip().await?;
        assert!(
            found,
            "blocks accepted during the flood: {} (flood of {} sockets)\n{}",
            end - start,
            flood.len(),
            proxy.log_tail()
        );
        assert!(proxy.is_running(), "the proxy survived");
        let during = flooded_at.elapsed();

        stop.cancel();
        let flood_len = flood.len();
        drop(flood);
        let journaled = check_log_against_journal(&proxy)?;
        eprintln!(
            "fd limit: clamped 1000 -> {} miners under ulimit 400; flood of {} sockets with the limit cut to {}: {} blocks accepted in {during:?}; {journaled} blocks journaled, each as the log says",
            400 - 256,
            flood_len,
            held + 4,
            end - start
        );
        Ok(())
    })
    .await
}
