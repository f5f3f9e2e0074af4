//! What the fault tests read back after a fault: the miners' connections, when the proxy moved
//! to a new tip, the block journal and the node's verdicts on it.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use bitcoin::{BlockHash, ScriptBuf};
use integration_tests::node::BitcoinNode;
use integration_tests::support::wait_until;
use jd_proxy::Proxy;
use serde_json::{json, Value};
use sv1_miner::{MinerEvent, MinerHandle};
use template_provider::blocks::journal::{read_dir, Entry};

/// The fates a block of the farm may have: the node's tip, or a valid competitor at its height
/// (`inconclusive`; `duplicate` once the node had it).
pub const GOOD_FATES: [&str; 3] = ["accepted", "inconclusive", "duplicate"];

/// The node's RPC address, for a relay in front of it.
pub fn rpc_addr(node: &BitcoinNode) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, node.rpc_port()))
}

pub fn journal(dir: &Path) -> Vec<Entry> {
    read_dir(dir).expect("the journal reads back")
}

/// Shares the proxy accepted from `miners`, as the miners counted them.
pub fn shares_accepted(miners: &[MinerHandle]) -> u64 {
    miners
        .iter()
        .map(|m| m.stats.snapshot().shares_accepted)
        .sum()
}

/// Every miner still holds the connection it opened first: the proxy counts exactly that many
/// connections, ever, and no miner reported a disconnect or a reconnect request. Reads (and so
/// drains) the miners' events.
pub fn no_asic_dropped(proxy: &Proxy, miners: &mut [MinerHandle]) -> anyhow::Result<()> {
    let n = miners.len() as u64;
    let s = proxy.stats();
    ensure!(
        (s.connections, s.connections_total) == (n, n),
        "ASIC connections now {} and ever {}, for {n} miners",
        s.connections,
        s.connections_total
    );
    for m in miners.iter_mut() {
        ensure!(!m.task.is_finished(), "a miner's connection ended");
        while let Ok(ev) = m.events.try_recv() {
            ensure!(
                !matches!(
                    ev,
                    MinerEvent::Disconnected { .. } | MinerEvent::Reconnecting { .. }
                ),
                "a miner lost its connection: {ev:?}"
            );
        }
    }
    Ok(())
}

/// Waits until the newest job builds on a block other than `prev`; returns when it was
/// published (in pool mode, the moment its declaration starts).
pub async fn new_tip_job(
    proxy: &Proxy,
    prev: BlockHash,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let mut jobs = proxy.jobs();
    let moved = tokio::time::timeout(timeout, jobs.wait_for(|j| j.template.prev_hash != prev));
    ensure!(
        matches!(moved.await, Ok(Ok(_))),
        "no job on a new tip within {timeout:?}"
    );
    Ok(Instant::now())
}

/// The block the newest job builds on.
pub fn job_prev(proxy: &Proxy) -> BlockHash {
    proxy.jobs().borrow().template.prev_hash
}

/// The node knows the block (as its chain or a valid competitor): `getblockheader` answers.
pub async fn node_has(node: &BitcoinNode, hash: &BlockHash) -> bool {
    node.rpc_as::<Value>("getblockheader", json!([hash.to_string()]))
        .await
        .is_ok()
}

/// Hashes of the journaled blocks.
pub fn hashes(entries: &[Entry]) -> HashSet<BlockHash> {
    entries.iter().map(|e| e.hash).collect()
}

/// Waits until every block of `which` in the journal has a verdict; how long that took.
pub async fn wait_judged(
    dir: &Path,
    which: &HashSet<BlockHash>,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let judged = wait_until(timeout, || async {
        journal(dir)
            .iter()
            .filter(|e| which.contains(&e.hash))
            .all(|e| !e.fates.is_empty())
    })
    .await;
    ensure!(
        judged,
        "blocks without a verdict after {timeout:?}: {:?}",
        journal(dir)
            .iter()
            .filter(|e| which.contains(&e.hash) && e.fates.is_empty())
            .map(|e| (e.height, e.hash))
            .collect::<Vec<_>>()
    );
    Ok(start.elapsed())
}

/// Each journaled block of `which` has one verdict from the one node, a good one, and the node
/// knows the block; returns how many of each fate.
pub async fn good_verdicts(
    node: &BitcoinNode,
    dir: &Path,
    which: &HashSet<BlockHash>,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut fates = BTreeMap::<String, usize>::new();
    for e in journal(dir).iter().filter(|e| which.contains(&e.hash)) {
        ensure!(
            e.fates.len() == 1,
            "block {} at {}: fates {:?}",
            e.hash,
            e.height,
            e.fates
        );
        let fate = e.fates.values().next().expect("one fate").clone();
        ensure!(
            GOOD_FATES.contains(&fate.as_str()),
            "block {} at {}: {fate}",
            e.hash,
            e.height
        );
        ensure!(node_has(node, &e.hash).await, "node lacks block {}", e.hash);
        *fates.entry(fate).or_default() += 1;
    }
    Ok(fates)
}

/// Each block is journaled once, and the journal holds as many as the proxy counted.
pub fn counted_once(dir: &Path, proxy_blocks: u64) -> anyhow::Result<Vec<Entry>> {
    let entries = journal(dir);
    ensure!(
        hashes(&entries).len() == entries.len(),
        "a block journaled twice: {} entries, {} hashes",
        entries.len(),
        hashes(&entries).len()
    );
    ensure!(
        entries.len() as u64 == proxy_blocks,
        "journal holds {} blocks, the proxy counted {proxy_blocks}",
        entries.len()
    );
    Ok(entries)
}

/// The hashes of the node's chain above `height`, up to its tip.
pub async fn chain_above(node: &BitcoinNode, height: u64) -> anyhow::Result<HashSet<BlockHash>> {
    let (tip, _) = node.tip().await?;
    let mut chain = HashSet::new();
    for h in height + 1..=tip {
        chain.insert(node.rpc_as("getblockhash", json!([h])).await?);
    }
    Ok(chain)
}

/// Whether the journaled block pays `script` first (the pool's output, or the solo payout).
pub fn pays(entry: &Entry, script: &ScriptBuf) -> bool {
    let block: bitcoin::Block = hex::decode(&entry.block)
        .ok()
        .and_then(|b| bitcoin::consensus::deserialize(&b).ok())
        .expect("a journaled block decodes");
    block.txdata[0].output[0].script_pubkey == *script
}
