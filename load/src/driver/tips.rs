//! New tips: mine one block at a time and time its first job at every miner, against the
//! node's own time of the tip where it can be had.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bitcoin::BlockHash;
use tokio::task::JoinHandle;

use super::processes::{cpu_now, CpuTimes};
use super::{progress, Settings};
use crate::client::{Mode, Shared};
use crate::histogram::{summarize_ms, Summary};
use crate::node::{self, MineTo, Rpc};
use crate::report::{TipReport, TipSamples, TipSummary};

/// When each miner first saw a job on the tip, and whether that job was clean.
type FirstSeen = HashMap<u32, (Instant, bool)>;

/// Mines `--tips` tips, `--tip-interval` apart, printing a line for each.
pub(super) async fn measure_all(
    s: &Settings,
    rpc: &Rpc,
    desc: &MineTo,
    shared: &Arc<Shared>,
) -> anyhow::Result<Vec<TipReport>> {
    let mut tips = Vec::new();
    let anchor = (Instant::now(), SystemTime::now());
    for t in 0..s.tips {
        if t > 0 || s.mode == Mode::Shares {
            tokio::time::sleep(Duration::from_secs_f64(s.tip_interval)).await;
        }
        let tip = measure_tip(
            rpc,
            desc,
            shared,
            anchor,
            s.node_log.as_deref(),
            s.server_pid,
            &s.peer_pid,
        )
        .await?;
        announce(s.quiet, u64::from(t) + 1, &tip);
        tips.push(tip);
    }
    Ok(tips)
}

/// The progress line of tip `number` (from 1).
pub(super) fn announce(quiet: bool, number: u64, tip: &TipReport) {
    progress(
        quiet,
        format_args!(
            "tip {}: {}/{} miners, p50 {:.2} ms p99 {:.2} ms max {:.2} ms after the node{}",
            number,
            tip.miners_reached,
            tip.miners_expected,
            best(tip).p50_ms,
            best(tip).p99_ms,
            best(tip).max_ms,
            if tip.from_node_log.is_some() {
                " logged it"
            } else if tip.from_node_notify.is_some() {
                " notified waiters"
            } else {
                "'s RPC returned"
            },
        ),
    );
}

/// The most precise reference a tip has.
pub(super) fn best(t: &TipReport) -> Summary {
    t.from_node_log
        .or(t.from_node_notify)
        .unwrap_or(t.from_rpc_return)
}

/// Mines one block and waits for every live miner's first job on it. `anchor` ties the node
/// log's wall-clock times to this process's monotonic clock.
pub(super) async fn measure_tip(
    rpc: &Rpc,
    descriptor: &MineTo,
    shared: &Arc<Shared>,
    anchor: (Instant, SystemTime),
    node_log: Option<&Path>,
    server_pid: Option<u32>,
    peer_pids: &[u32],
) -> anyhow::Result<TipReport> {
    let current = rpc.best_block_hash().await?;
    let expected = shared.stats.live.load(Relaxed);
    let waiter = spawn_waiter(rpc, current, server_pid, peer_pids);
    // Let the long poll reach the node before the block does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t_call = Instant::now();
    let hash = rpc.mine_one(descriptor).await.context("mining a tip")?;
    let t_return = Instant::now();
    let (t_notify, cpu0) = match tokio::time::timeout(Duration::from_secs(5), waiter).await {
        Ok(Ok((Ok(Some(h)), at, cpu))) if h == hash => (Some(at), Some(cpu)),
        _ => (None, None),
    };
    // Wait for every miner that is still connected (or give up after 15 s).
    let first_seen =
        wait_for_miners(shared, hash, expected, t_return + Duration::from_secs(15)).await;
    let cpu1 = cpu_now(server_pid, peer_pids);
    let cpu_ms = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1000.0),
        _ => None,
    };
    let (server_cpu_ms, tool_cpu_ms, peer_cpu_ms) = match cpu0 {
        Some(c0) => (
            cpu_ms(c0.server, cpu1.server),
            cpu_ms(c0.tool, cpu1.tool),
            cpu_ms(c0.peers, cpu1.peers),
        ),
        None => (None, None, None),
    };
    let t_log = match node_log {
        Some(path) => node_log_time(path, &hash, anchor).await?,
        None => None,
    };
    let samples = latencies(&first_seen, t_return, t_notify, t_log);
    let sum = |v: &Vec<f64>| summarize_ms(&mut v.clone());
    Ok(TipReport {
        hash: hash.to_string(),
        generate_ms: (t_return - t_call).as_secs_f64() * 1000.0,
        miners_expected: expected,
        miners_reached: first_seen.len() as u64,
        not_clean: first_seen.values().filter(|(_, clean)| !clean).count() as u64,
        server_cpu_ms,
        peer_cpu_ms,
        tool_cpu_ms,
        from_rpc_return: sum(&samples.from_rpc_return),
        from_node_notify: samples.from_node_notify.as_ref().map(sum),
        from_node_log: samples.from_node_log.as_ref().map(sum),
        samples,
    })
}

/// Long-polls the node for the block after `current`, and reads the CPU times the moment it
/// returns: the proxy learns of the tip the same way, so CPU from there on is the fan-out's.
fn spawn_waiter(
    rpc: &Rpc,
    current: BlockHash,
    server_pid: Option<u32>,
    peer_pids: &[u32],
) -> JoinHandle<(anyhow::Result<Option<BlockHash>>, Instant, CpuTimes)> {
    let rpc = rpc.clone();
    let peer_pids = peer_pids.to_vec();
    tokio::spawn(async move {
        let r = rpc
            .wait_for_new_block(current, Duration::from_secs(120))
            .await;
        let cpu = cpu_now(server_pid, &peer_pids);
        (r, Instant::now(), cpu)
    })
}

/// Polls the connections' tip records until every live miner (of the `expected` ones) has a
/// job on `hash`, or until `deadline`.
async fn wait_for_miners(
    shared: &Shared,
    hash: BlockHash,
    expected: u64,
    deadline: Instant,
) -> FirstSeen {
    loop {
        let seen: FirstSeen = {
            let tips = shared.tips.lock().unwrap_or_else(PoisonError::into_inner);
            let mut m = HashMap::new();
            for t in tips.iter().filter(|t| t.prev_hash == hash) {
                m.entry(t.conn).or_insert((t.at, t.clean));
            }
            m
        };
        let live = shared.stats.live.load(Relaxed);
        if seen.len() as u64 >= live.min(expected) || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The node's own time of the tip, from its `UpdateTip` log line.
async fn node_log_time(
    path: &Path,
    hash: &BlockHash,
    anchor: (Instant, SystemTime),
) -> anyhow::Result<Option<Instant>> {
    // The log line may be flushed a little after the RPC returns.
    let mut found = None;
    for _ in 0..20 {
        if let Some(t) = node::update_tip_time(path, hash)? {
            found = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(found.map(|sys| to_instant(anchor, sys)))
}

/// Every miner's latency against each reference the tip has.
fn latencies(
    first_seen: &FirstSeen,
    t_return: Instant,
    t_notify: Option<Instant>,
    t_log: Option<Instant>,
) -> TipSamples {
    let rel = |reference: Instant| -> Vec<f64> {
        first_seen
            .values()
            .map(|(at, _)| signed_ms(*at, reference))
            .collect()
    };
    TipSamples {
        from_rpc_return: rel(t_return),
        from_node_notify: t_notify.map(rel),
        from_node_log: t_log.map(rel),
    }
}

fn signed_ms(at: Instant, reference: Instant) -> f64 {
    if at >= reference {
        (at - reference).as_secs_f64() * 1000.0
    } else {
        -((reference - at).as_secs_f64() * 1000.0)
    }
}

/// A wall-clock time as an `Instant`, through one (Instant, SystemTime) pair taken together.
fn to_instant(anchor: (Instant, SystemTime), t: SystemTime) -> Instant {
    match t.duration_since(anchor.1) {
        Ok(d) => anchor.0 + d,
        Err(e) => anchor.0 - e.duration(),
    }
}

/// Pools every miner of every tip into one distribution per reference.
pub(super) fn pool_tips(tips: &[TipReport]) -> TipSummary {
    let pool = |get: &dyn Fn(&TipReport) -> Option<&Vec<f64>>| -> Option<Summary> {
        let mut all = Vec::new();
        for t in tips {
            all.extend_from_slice(get(t)?);
        }
        Some(summarize_ms(&mut all))
    };
    TipSummary {
        tips: tips.len(),
        miners_reached: tips.iter().map(|t| t.miners_reached).sum(),
        missed: tips
            .iter()
            .map(|t| t.miners_expected.saturating_sub(t.miners_reached))
            .sum(),
        from_rpc_return: pool(&|t| Some(&t.samples.from_rpc_return)).unwrap_or_default(),
        from_node_notify: pool(&|t| t.samples.from_node_notify.as_ref()),
        from_node_log: pool(&|t| t.samples.from_node_log.as_ref()),
    }
}
