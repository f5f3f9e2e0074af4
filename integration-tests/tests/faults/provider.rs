//! The template provider link: a relay between jd-proxy and our `template-provider` (on a
//! regtest Bitcoin Core) half-opens it, then cuts it and refuses connections for a while. Found
//! blocks reach the node only through the provider (`SubmitSolution`), so a block lost on the
//! link would be missing from the provider's journal.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use bitcoin::BlockHash;
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::relay::{Fault, Relay};
use integration_tests::support::{
    init_tracing, provider_config, solo_config, start_provider, start_proxy, wait_until,
    with_timeout, MinerSpec,
};
use integration_tests::wallet::TestWallet;
use jd_proxy::config::raw::RawTemplateProvider;
use jd_proxy::job::Job;
use jd_proxy::Proxy;
use serde_json::json;
use sv1_miner::{Dialect, MinerEvent, MinerHandle};
use sv2_wire::AuthorityKeypair;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::checks::{
    chain_above, counted_once, good_verdicts, hashes, journal, no_asic_dropped, wait_judged,
};

const LIMIT: Duration = Duration::from_secs(60);
/// The share interval vardiff aims at. With the difficulty floored where it starts, the miners'
/// hash cap keeps shares this far apart on average at the least: on regtest every share is a
/// block, and a steady few keep the chain's story easy to check.
const SHARE_SECS: f64 = 3.0;
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "tp-fault",
    // About one share every SHARE_SECS at this hashrate from the start.
    difficulty: 1.75e-5,
    hashrate: 25_000.0,
};
const DIALECTS: [Dialect; 2] = [Dialect::Cgminer, Dialect::Bitaxe];
/// How long the half-open link stays so.
const HALF_OPEN: Duration = Duration::from_secs(1);
/// How long the provider refuses connections after the cut.
const REFUSED: Duration = Duration::from_secs(3);
/// The proxy retries the provider 250 ms after losing it, then doubles the wait: the attempt
/// after a 3 s outage comes 3.75 s after the loss, and the next one 4 s later. This bounds the
/// wait for the link after `Pass`, with room for a loaded machine.
const LINK_BACK: Duration = Duration::from_secs(6);
/// A new tip reaches the proxy's job and every miner within this.
const NEW_TIP: Duration = Duration::from_secs(5);

/// What the test measured, for the figure.
#[derive(Debug, Default)]
struct Timings {
    half_open_noticed: Duration,
    half_open_probes: u64,
    half_open_back: Duration,
    refused_probes: u64,
    cut_back: Duration,
    found_while_down: u64,
    tip_job: Duration,
    tip_miners: Duration,
}

/// The provider link through a relay: (a) half-open (the proxy's direction shut: the provider
/// sees EOF), (b) cut and refused for [`REFUSED`]. Each time the proxy notices, keeps the
/// miners on the last job (none published while the link is down, no ASIC dropped), probes with
/// backoff, and is back on the provider's templates within its next retry after `Pass`. A block
/// the node mines afterwards is every miner's job within [`NEW_TIP`]; every block the miners
/// found, those found while the link was down included, is in the provider's journal once
/// with a good verdict, and the node's chain is exactly the accepted ones and its own block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_link_half_open_then_cut_loses_no_block() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(LIMIT, async {
        let Rig {
            node,
            start,
            tp_dir,
            provider,
            relay,
            _dir,
            proxy,
        } = rig().await?;
        let stop = CancellationToken::new();
        let mut miners = MINERS.spawn_each(proxy.local_addr(), &DIALECTS, &stop);
        chain_moves(&node, &proxy, Duration::from_secs(30)).await?;

        let mut t = Timings::default();
        half_open(&relay, &proxy, &mut t).await?;
        chain_moves(&node, &proxy, Duration::from_secs(20)).await?;
        no_asic_dropped(&proxy, &mut miners)?;
        cut_and_refuse(&relay, &proxy, &mut t).await?;
        chain_moves(&node, &proxy, Duration::from_secs(20)).await?;
        no_asic_dropped(&proxy, &mut miners)?;
        let own = node_mines_a_block(&node, &proxy, &mut miners, &mut t).await?;
        no_asic_dropped(&proxy, &mut miners)?;

        stop.cancel();
        // A share sent just before the stop is still counted and handed on.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let blocks = no_block_lost(&node, &proxy, tp_dir.path(), start, Some(own)).await?;
        proxy.shutdown().await;
        provider.shutdown().await;
        eprintln!(
            "FIGURE template provider link: half-open noticed (first reconnect attempt) {:?} after, {} probes while half-open, templates back {:?} after Pass; cut + refused {REFUSED:?}: {} probes refused, templates back {:?} after Pass; {} blocks found while the link was down; node's new tip: proxy job {:?}, every miner {:?} after generatetoaddress; {blocks}; 0 ASICs dropped",
            t.half_open_noticed,
            t.half_open_probes,
            t.half_open_back,
            t.refused_probes,
            t.cut_back,
            t.found_while_down,
            t.tip_job,
            t.tip_miners
        );
        Ok(())
    })
    .await
}

/// A regtest node, our provider on it, a relay in front of the provider, and jd-proxy taking
/// its templates through the relay.
struct Rig {
    node: BitcoinNode,
    start: u64,
    tp_dir: tempfile::TempDir,
    provider: template_provider::server::Provider,
    relay: Relay,
    _dir: tempfile::TempDir,
    proxy: Proxy,
}

async fn rig() -> anyhow::Result<Rig> {
    let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
    node.mine_to(101, TestWallet::new().address()).await?;
    let (start, _) = node.tip().await?;
    let tp_dir = tempfile::tempdir()?;
    let keys = AuthorityKeypair::generate();
    let provider = start_provider(provider_config(&node, &keys, tp_dir.path())).await?;
    let relay = Relay::start(provider.local_addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut raw = solo_config(&node, TestWallet::new().address(), dir.path());
    raw.template_provider = Some(RawTemplateProvider {
        address: Some(relay.addr().to_string()),
        authority_public_key: Some(keys.public().to_string()),
    });
    // Never easier: after a slow first share vardiff would drop the difficulty, and the
    // miners would flood the provider with blocks.
    raw.vardiff.initial_difficulty = Some(MINERS.difficulty);
    raw.vardiff.min_difficulty = Some(MINERS.difficulty);
    raw.vardiff.target_share_secs = Some(SHARE_SECS);
    let proxy = start_proxy(raw).await?;
    Ok(Rig {
        node,
        start,
        tp_dir,
        provider,
        relay,
        _dir: dir,
        proxy,
    })
}

/// The link goes silent without closing (a partition, a hung host): Template Distribution
/// acknowledges no solution and a provider may be quiet for minutes, so the proxy asks; no
/// answer within its timeout and the link is taken as dead. The solutions it wrote into the
/// silence were held, and go again on the new link: every block found reaches the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_provider_link_is_noticed_and_its_blocks_sent_again() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(Duration::from_secs(90), async {
        let Rig {
            node,
            start,
            tp_dir,
            provider,
            relay,
            _dir,
            proxy,
        } = rig().await?;
        let stop = CancellationToken::new();
        let mut miners = MINERS.spawn_each(proxy.local_addr(), &DIALECTS, &stop);
        chain_moves(&node, &proxy, Duration::from_secs(30)).await?;

        relay.set(Fault::Stall);
        let stalled = Instant::now();
        let (tries, found) = (relay.accepted(), proxy.stats().blocks);
        // 5 s of quiet before asking, 10 s for the answer; a solution asks at once.
        let noticed = wait_until(Duration::from_secs(25), || async { relay.accepted() > tries }).await;
        ensure!(noticed, "the silent link was never taken as dead: {:?}", proxy.stats());
        let noticed_after = stalled.elapsed();
        let found_in_silence = proxy.stats().blocks - found;
        relay.cut();
        relay.set(Fault::Pass);
        chain_moves(&node, &proxy, Duration::from_secs(20)).await?;
        no_asic_dropped(&proxy, &mut miners)?;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let blocks = no_block_lost(&node, &proxy, tp_dir.path(), start, None).await?;
        proxy.shutdown().await;
        provider.shutdown().await;
        eprintln!("FIGURE silent provider link: taken as dead {noticed_after:?} after it went silent; {found_in_silence} blocks found into the silence; {blocks}; 0 ASICs dropped");
        Ok(())
    })
    .await
}

/// Waits until the node's chain grows: a block the miners found went through the provider.
async fn chain_moves(node: &BitcoinNode, proxy: &Proxy, timeout: Duration) -> anyhow::Result<()> {
    let (from, _) = node.tip().await?;
    ensure!(
        wait_until(timeout, || async {
            node.tip().await.is_ok_and(|(h, _)| h > from)
        })
        .await,
        "no block reached the node through the provider within {timeout:?}: {:?}",
        proxy.stats()
    );
    Ok(())
}

/// Waits until the proxy tries the provider again (the relay takes a new connection): it
/// noticed the link is gone. Returns how long that took and the proxy's jobs, as seen then.
async fn noticed(
    relay: &Relay,
    proxy: &Proxy,
    seen: u64,
) -> anyhow::Result<(Duration, watch::Receiver<Arc<Job>>)> {
    let since = Instant::now();
    ensure!(
        wait_until(Duration::from_secs(5), || async { relay.accepted() > seen }).await,
        "the proxy never tried the provider again after its link failed"
    );
    let took = since.elapsed();
    let mut jobs = proxy.jobs();
    jobs.borrow_and_update();
    Ok((took, jobs))
}

/// The link is down: no job came since `jobs` was last seen. Lets the relay pass and waits for
/// the proxy's first job after that, the provider's template on a new link.
async fn restore(relay: &Relay, jobs: &mut watch::Receiver<Arc<Job>>) -> anyhow::Result<Duration> {
    ensure!(
        !jobs.has_changed()?,
        "a job was published while the provider link was down"
    );
    relay.set(Fault::Pass);
    let passed = Instant::now();
    let back = tokio::time::timeout(LINK_BACK, jobs.changed()).await;
    ensure!(
        matches!(back, Ok(Ok(()))),
        "no template from the provider within {LINK_BACK:?} after the relay passed again"
    );
    Ok(passed.elapsed())
}

/// (a) The proxy's direction is shut: the provider reads EOF and ends the session, so the
/// proxy loses the link; while it stays half-open every new connection fails the same way.
async fn half_open(relay: &Relay, proxy: &Proxy, t: &mut Timings) -> anyhow::Result<()> {
    let seen = relay.accepted();
    let since = Instant::now();
    relay.set(Fault::HalfOpen);
    let (took, mut jobs) = noticed(relay, proxy, seen).await?;
    t.half_open_noticed = took;
    tokio::time::sleep(HALF_OPEN.saturating_sub(since.elapsed())).await;
    t.half_open_probes = relay.accepted() - seen;
    t.half_open_back = restore(relay, &mut jobs).await?;
    Ok(())
}

/// (b) The link is cut and the provider refuses connections for [`REFUSED`]; blocks found
/// meanwhile wait in the proxy and go out on the new link.
async fn cut_and_refuse(relay: &Relay, proxy: &Proxy, t: &mut Timings) -> anyhow::Result<()> {
    let seen = relay.accepted();
    let blocks_before = proxy.stats().blocks;
    let since = Instant::now();
    relay.set(Fault::Refuse);
    relay.cut();
    let (_, mut jobs) = noticed(relay, proxy, seen).await?;
    tokio::time::sleep(REFUSED.saturating_sub(since.elapsed())).await;
    t.refused_probes = relay.accepted() - seen;
    t.cut_back = restore(relay, &mut jobs).await?;
    t.found_while_down = proxy.stats().blocks - blocks_before;
    Ok(())
}

async fn height_of(node: &BitcoinNode, hash: &BlockHash) -> anyhow::Result<u64> {
    let header = node
        .rpc("getblockheader", json!([hash.to_string()]))
        .await?;
    header["height"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("getblockheader {hash}: no height"))
}

/// The node mines a block of its own (`generatetoaddress`); the proxy's job and every miner
/// move onto it (or a block above it) within [`NEW_TIP`]. Returns the node's block.
async fn node_mines_a_block(
    node: &BitcoinNode,
    proxy: &Proxy,
    miners: &mut [MinerHandle],
    t: &mut Timings,
) -> anyhow::Result<BlockHash> {
    let mut jobs = proxy.jobs();
    let since = Instant::now();
    let own = node.mine_to(1, TestWallet::new().address()).await?[0];
    let height = height_of(node, &own).await?;
    let moved = tokio::time::timeout(
        NEW_TIP,
        jobs.wait_for(|j| u64::from(j.template.height) > height),
    )
    .await;
    ensure!(
        matches!(moved, Ok(Ok(_))),
        "no job above the node's block at {height} within {NEW_TIP:?}"
    );
    t.tip_job = since.elapsed();
    t.tip_miners = miners_on(node, miners, height, since).await?;
    Ok(own)
}

/// Waits until every miner got a job whose previous block is at `height` or above; returns
/// when the last one got it, from `since`. Fails on a miner losing its connection.
async fn miners_on(
    node: &BitcoinNode,
    miners: &mut [MinerHandle],
    height: u64,
    since: Instant,
) -> anyhow::Result<Duration> {
    let deadline = since + NEW_TIP;
    let mut heights = HashMap::new();
    let mut got: Vec<Option<Instant>> = vec![None; miners.len()];
    while got.iter().any(Option::is_none) {
        ensure!(
            Instant::now() < deadline,
            "miners without a job on the node's block after {NEW_TIP:?}: {got:?}"
        );
        for (m, slot) in miners.iter_mut().zip(got.iter_mut()) {
            while let Ok(ev) = m.events.try_recv() {
                match ev {
                    MinerEvent::Notify { prevhash, at, .. } if slot.is_none() => {
                        let h = match heights.get(&prevhash) {
                            Some(h) => *h,
                            None => {
                                let h = height_of(node, &prevhash).await?;
                                heights.insert(prevhash, h);
                                h
                            }
                        };
                        if h >= height {
                            *slot = Some(at);
                        }
                    }
                    MinerEvent::Disconnected { .. } | MinerEvent::Reconnecting { .. } => {
                        anyhow::bail!("a miner lost its connection: {ev:?}")
                    }
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = got
        .into_iter()
        .flatten()
        .max()
        .expect("every miner got one");
    Ok(last.saturating_duration_since(since))
}

/// Every block the proxy counted reached the provider: its journal holds each once, each with
/// a good verdict, and the node's chain above `start` is the accepted ones plus the node's
/// `own` block. Returns a summary for the figure.
async fn no_block_lost(
    node: &BitcoinNode,
    proxy: &Proxy,
    tp_dir: &std::path::Path,
    start: u64,
    own: Option<BlockHash>,
) -> anyhow::Result<String> {
    let found = proxy.stats().blocks;
    // Blocks found last may still be on their way; a lost one never arrives.
    wait_until(Duration::from_secs(10), || async {
        journal(tp_dir).len() as u64 >= found
    })
    .await;
    let entries = counted_once(tp_dir, found)?;
    let all = hashes(&entries);
    wait_judged(tp_dir, &all, Duration::from_secs(10)).await?;
    let fates = good_verdicts(node, tp_dir, &all).await?;
    let accepted: HashSet<_> = entries
        .iter()
        .filter(|e| e.fates.values().any(|f| f == "accepted"))
        .map(|e| e.hash)
        .collect();
    let mut chain = chain_above(node, start).await?;
    if let Some(own) = own {
        ensure!(chain.remove(&own), "the node's own block is in its chain");
    }
    ensure!(
        chain == accepted,
        "the node's chain is the accepted blocks: chain {} blocks, accepted {}",
        chain.len(),
        accepted.len()
    );
    Ok(format!(
        "{found} blocks found, {} journaled by the provider, {} accepted, fates {fates:?}",
        entries.len(),
        accepted.len()
    ))
}
