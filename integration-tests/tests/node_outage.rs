//! The farm's node goes away (an upgrade, a crash) while ASICs hash and find blocks: no block
//! is lost, and the ASICs keep doing useful work. A real regtest Bitcoin Core is stopped and
//! started again on its datadir; jd-proxy runs in-process; CPU miners speak real dialects.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bitcoin::BlockHash;
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::farm::{farm, is_pool, wait_mode};
use integration_tests::support::{
    connect_nodes, init_tracing, solo_config, start_proxy, wait_until, with_timeout, MinerSpec,
};
use integration_tests::wallet::TestWallet;
use jd_proxy::{Proxy, Serving};
use mining_types::TemplateKind;
use serde_json::{json, Value};
use sv1_miner::{Dialect, MinerHandle};
use template_provider::blocks::journal::{read_dir, Entry};
use tokio_util::sync::CancellationToken;

/// A CPU miner at this rate finds a share at the test difficulty about once a second; on
/// regtest every share is a block.
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "farm",
    difficulty: 5e-6,
    hashrate: 25_000.0,
};
const DIALECTS: [Dialect; 2] = [Dialect::Cgminer, Dialect::Bitaxe];
/// As long as an upgrade of the node takes.
const OUTAGE: Duration = Duration::from_secs(60);

fn journal(dir: &std::path::Path) -> Vec<Entry> {
    read_dir(dir).expect("the journal reads back")
}

fn accepted(miners: &[MinerHandle]) -> u64 {
    miners
        .iter()
        .map(|m| m.stats.snapshot().shares_accepted)
        .sum()
}

async fn wait_serving(
    proxy: &Proxy,
    want: impl Fn(&Serving) -> bool,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut serving = proxy.serving().expect("templates from the farm's nodes");
    let reached = tokio::time::timeout(timeout, serving.wait_for(|s| want(s)))
        .await
        .is_ok();
    anyhow::ensure!(reached, "still {:?} after {timeout:?}", *serving.borrow());
    Ok(start.elapsed())
}

/// The node knows the block (as its chain or a valid competitor): `getblockheader` answers.
async fn node_has(node: &BitcoinNode, hash: &BlockHash) -> bool {
    node.rpc_as::<Value>("getblockheader", json!([hash.to_string()]))
        .await
        .is_ok()
}

/// Each block in `pending` has the node's verdict: accepted or a valid competitor; the node
/// knows it; and the node's block at that height is the farm's. Counts the fates.
async fn check_fates(
    node: &BitcoinNode,
    dir: &std::path::Path,
    pending: &[Entry],
) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let hashes: HashSet<BlockHash> = pending.iter().map(|e| e.hash).collect();
    let mut fates = std::collections::BTreeMap::<String, usize>::new();
    for e in journal(dir).iter().filter(|e| hashes.contains(&e.hash)) {
        let fate = e.fates.values().next().expect("judged").clone();
        assert!(
            ["accepted", "inconclusive", "duplicate"].contains(&fate.as_str()),
            "block {} at {}: {fate}",
            e.hash,
            e.height
        );
        assert!(node_has(node, &e.hash).await, "node knows block {}", e.hash);
        *fates.entry(fate).or_default() += 1;
    }
    // The farm's work won those heights: the node's block there is one the proxy journaled.
    let journaled: HashSet<BlockHash> = journal(dir).iter().map(|e| e.hash).collect();
    for height in pending.iter().map(|e| e.height).collect::<HashSet<u32>>() {
        let at: BlockHash = node.rpc_as("getblockhash", json!([height])).await?;
        assert!(
            journaled.contains(&at),
            "the node's block at {height} is the farm's"
        );
    }

    Ok(fates)
}

/// Outcome 1: the node is stopped for 60 s while miners hash and find blocks. The last job
/// stays meanwhile (the outage is logged); every block found reaches the node within 5 s of its
/// return, and the journal records the node's verdict on each: accepted, or a valid competitor
/// at the same height (`inconclusive`; `duplicate` once the tip has moved past it). The
/// journal holds each block once, as the proxy counted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_found_while_the_node_is_down_reach_it_when_it_returns() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(Duration::from_secs(170), async {
        let mut node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        TestWallet::new().fund(&node, 101).await?;
        let payout = TestWallet::new();
        let dir = tempfile::tempdir()?;
        let proxy = start_proxy(solo_config(&node, payout.address(), dir.path())).await?;
        let stop = CancellationToken::new();
        let miners = MINERS.spawn_each(proxy.local_addr(), &DIALECTS, &stop);
        let (start, _) = node.tip().await?;
        anyhow::ensure!(
            wait_until(Duration::from_secs(30), || async {
                node.tip().await.is_ok_and(|(h, _)| h > start)
            })
            .await,
            "no block before the outage: {:?}",
            proxy.stats()
        );

        node.halt().await?;
        let halted = Instant::now();
        wait_serving(&proxy, |s| matches!(s, Serving::NoNode(_)), Duration::from_secs(5)).await?;
        let shares_at_halt = accepted(&miners);
        tokio::time::sleep(OUTAGE.saturating_sub(halted.elapsed())).await;
        let during = accepted(&miners) - shares_at_halt;
        // Blocks found in the outage: no fate yet.
        let pending: Vec<Entry> = journal(dir.path())
            .into_iter()
            .filter(|e| e.fates.is_empty())
            .collect();
        assert!(
            pending.len() >= 10,
            "blocks found in a 60 s outage: {} ({during} shares accepted)",
            pending.len()
        );
        assert!(during >= 10, "miners kept mining the last job: {during} shares");

        node.resume(&[]).await?;
        let back = Instant::now();
        let templates_back =
            wait_serving(&proxy, |s| *s == Serving::Node(0), Duration::from_secs(5)).await?;
        let hashes: HashSet<BlockHash> = pending.iter().map(|e| e.hash).collect();
        let all_judged = wait_until(Duration::from_secs(10), || async {
            journal(dir.path())
                .iter()
                .filter(|e| hashes.contains(&e.hash))
                .all(|e| !e.fates.is_empty())
        })
        .await;
        let judged_in = back.elapsed();
        assert!(all_judged, "journal after the return: {:?}", journal(dir.path()));
        assert!(
            judged_in <= Duration::from_secs(5),
            "every block had the node's verdict {judged_in:?} after its return"
        );
        assert!(
            templates_back <= Duration::from_secs(1),
            "templates resumed {templates_back:?} after the node answered"
        );
        let fates = check_fates(&node, dir.path(), &pending).await?;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let found = proxy.stats().blocks;
        proxy.shutdown().await;
        let entries = journal(dir.path());
        let distinct: HashSet<BlockHash> = entries.iter().map(|e| e.hash).collect();
        assert_eq!(distinct.len(), entries.len(), "each block journaled once");
        assert_eq!(entries.len() as u64, found, "journal and counter agree");
        eprintln!(
            "outage {OUTAGE:?}: {} blocks found while down, {during} shares; templates back {templates_back:?} and every verdict in {judged_in:?} after the node returned; fates {fates:?}",
            pending.len()
        );
        Ok(())
    })
    .await
}

/// A backup node takes over the templates while the primary is down, its blocks are accepted
/// by the backup, and the primary's templates return within 1 s of its return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_node_serves_while_the_primary_is_down() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(Duration::from_secs(150), async {
        let mut primary = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let backup = BitcoinNode::start(NodeKind::Bitcoind).await?;
        connect_nodes(&primary, &backup).await?;
        TestWallet::new().fund(&primary, 101).await?;
        backup.wait_for_height(101, Duration::from_secs(30)).await?;
        let payout = TestWallet::new();
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&primary, payout.address(), dir.path());
        let second = solo_config(&backup, payout.address(), dir.path());
        raw.node.0.extend(second.node.0);
        let proxy = start_proxy(raw).await?;
        let stop = CancellationToken::new();
        let miners = MINERS.spawn_each(proxy.local_addr(), &DIALECTS, &stop);
        anyhow::ensure!(
            wait_until(Duration::from_secs(30), || async { accepted(&miners) >= 2 }).await,
            "no shares before the outage"
        );

        let stopping = Instant::now();
        primary.halt().await?;
        wait_serving(&proxy, |s| *s == Serving::Node(1), Duration::from_secs(5)).await?;
        let took_over = stopping.elapsed();
        let (at_halt, _) = backup.tip().await?;
        anyhow::ensure!(
            wait_until(Duration::from_secs(40), || async {
                backup.tip().await.is_ok_and(|(h, _)| h >= at_halt + 3)
            })
            .await,
            "the backup's chain did not grow on its own templates: {:?}",
            proxy.stats()
        );

        primary.resume(&[]).await?;
        let returned =
            wait_serving(&proxy, |s| *s == Serving::Node(0), Duration::from_secs(5)).await?;
        assert!(
            returned <= Duration::from_secs(1),
            "primary's templates back {returned:?} after it answered"
        );
        connect_nodes(&primary, &backup).await?;
        let (backup_tip, _) = backup.tip().await?;
        anyhow::ensure!(
            primary
                .wait_for_height(backup_tip, Duration::from_secs(20))
                .await
                .is_ok(),
            "the primary did not catch up"
        );
        stop.cancel();
        proxy.shutdown().await;
        // Blocks found on the backup's templates went to the backup; none was refused anywhere.
        for e in journal(dir.path()) {
            for (node, fate) in &e.fates {
                assert!(
                    !fate.starts_with("rejected"),
                    "block {} at {} on {node}: {fate}",
                    e.hash,
                    e.height
                );
            }
        }
        eprintln!(
            "backup took over {took_over:?} after the primary was told to stop; primary's templates back {returned:?} after it answered"
        );
        Ok(())
    })
    .await
}

/// The kind of template the newest job is built on.
fn job_kind(proxy: &Proxy) -> TemplateKind {
    proxy.jobs().borrow().template.kind
}

async fn wait_job_kind(
    proxy: &Proxy,
    want: impl Fn(TemplateKind) -> bool,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut jobs = proxy.jobs();
    let reached = tokio::time::timeout(timeout, jobs.wait_for(|j| want(j.template.kind)))
        .await
        .is_ok();
    anyhow::ensure!(
        reached,
        "newest job still on a {:?} template after {timeout:?}",
        job_kind(proxy)
    );
    Ok(start.elapsed())
}

/// Outcome 3: in pool mode with the farm's node stopped, the ASICs mine the pool's own jobs
/// within 2 s (the pool's node has the tip), and the pool accepts their shares; when the node
/// is back, the farm's own templates return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_mode_mines_the_pools_own_jobs_while_the_farms_node_is_down() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(Duration::from_secs(170), async {
        let mut f = farm().await?;
        let proxy = start_proxy(f.proxy_config(f.pool().authority_public_key())).await?;
        wait_mode(&proxy, is_pool, Duration::from_secs(20)).await?;
        let stop = CancellationToken::new();
        let _miners = f.miners(&proxy, &DIALECTS, &stop);
        wait_job_kind(&proxy, |k| k != TemplateKind::Pool, Duration::from_secs(10)).await?;
        anyhow::ensure!(
            wait_until(Duration::from_secs(40), || async { proxy.stats().pool_accepted >= 1 }).await,
            "no share accepted by the pool on the farm's templates: {:?}",
            proxy.stats()
        );

        let stopping = Instant::now();
        f.node.halt().await?;
        wait_job_kind(&proxy, |k| k == TemplateKind::Pool, Duration::from_secs(10)).await?;
        let to_pool_jobs = stopping.elapsed();
        assert!(
            to_pool_jobs <= Duration::from_secs(2),
            "pool's own jobs {to_pool_jobs:?} after the node was told to stop"
        );
        let before = proxy.stats().pool_accepted;
        anyhow::ensure!(
            wait_until(Duration::from_secs(40), || async {
                proxy.stats().pool_accepted >= before + 2
            })
            .await,
            "the pool accepted no share on its own jobs: {:?}",
            proxy.stats()
        );
        assert!(is_pool(&proxy.mode().borrow()), "still mining for the pool");

        f.node.resume(&[]).await?;
        let farm_back =
            wait_job_kind(&proxy, |k| k != TemplateKind::Pool, Duration::from_secs(15)).await?;
        connect_nodes(&f.node, &f.pool_node).await?;
        let before = proxy.stats().pool_accepted;
        anyhow::ensure!(
            wait_until(Duration::from_secs(40), || async {
                proxy.stats().pool_accepted > before && job_kind(&proxy) != TemplateKind::Pool
            })
            .await,
            "no share accepted on the farm's templates after the node returned: {:?}",
            proxy.stats()
        );
        assert_eq!(proxy.stats().pool_rejected, 0, "{:?}", proxy.stats());
        stop.cancel();
        proxy.shutdown().await;
        eprintln!(
            "pool mode: pool's own jobs {to_pool_jobs:?} after the farm's node was told to stop; the farm's templates back {farm_back:?} after it answered"
        );
        Ok(())
    })
    .await
}
