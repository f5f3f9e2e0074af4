//! Faults injected between jd-proxy and its peers, on real processes: a TCP relay
//! (`support::relay`) sits between the proxy and the pool, the pool's JDS, the node's RPC or our
//! template provider (`provider`), and stalls, delays, half-opens or cuts what passes. The pool
//! is the reference `pool_sv2` with its JDS (`support::farm`); the nodes are regtest Bitcoin
//! Core; CPU miners speak real dialects.
//!
//! Each test prints the figure it measures (failover time, verdict delay, connections) for
//! RELIABILITY.md.

#[path = "faults/checks.rs"]
mod checks;
#[path = "faults/provider.rs"]
mod provider;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use checks::{
    chain_above, counted_once, good_verdicts, hashes, job_prev, journal, new_tip_job,
    no_asic_dropped, pays, rpc_addr, shares_accepted, wait_judged,
};
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::farm::{farm, is_pool, wait_mode, Farm, PREMINE};
use integration_tests::support::relay::{Fault, Relay};
use integration_tests::support::{
    init_tracing, solo_config, start_proxy, wait_until, with_timeout, MinerSpec,
};
use integration_tests::sv2_peers::POOL_BLOCK_FOUND_LOG;
use integration_tests::wallet::TestWallet;
use jd_proxy::{Mode, Proxy, Serving};
use sv1_miner::{Dialect, MinerHandle};
use tokio_util::sync::CancellationToken;

/// The node's HTTP server gives up on a part-sent request after this (see the restart test).
const SERVER_TIMEOUT: [&str; 1] = ["-rpcservertimeout=3"];
/// Every test ends well within this.
const LIMIT: Duration = Duration::from_secs(85);
const DIALECTS: [Dialect; 2] = [Dialect::Cgminer, Dialect::Bitaxe];
/// Solo tests: a share about once a second per miner; on regtest every share is a block.
const SOLO_MINERS: MinerSpec = MinerSpec {
    worker_prefix: "farm",
    difficulty: 5e-6,
    hashrate: 25_000.0,
};
/// What the proxy may take beyond `response_timeout_secs` to act on it: the once-a-second
/// check of overdue custom jobs, and the declaration before the custom job is sent.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(2);

fn is_solo(m: &Mode) -> bool {
    *m == Mode::Solo
}

/// A farm-mode proxy with its pool link, or its JDS link, through `relay`; mining for the
/// pool, which has accepted a share. Returns the proxy, its miners and the response timeout.
async fn pool_proxy_through(
    f: &Farm,
    pool: Option<&Relay>,
    jds: Option<&Relay>,
    dialects: &[Dialect],
    stop: &CancellationToken,
) -> anyhow::Result<(Proxy, Vec<MinerHandle>, Duration)> {
    let mut raw = f.proxy_config(f.pool().authority_public_key());
    if let Some(r) = pool {
        raw.upstream[0].pool_address = Some(r.addr().to_string());
    }
    if let Some(r) = jds {
        raw.upstream[0].jds_address = Some(r.addr().to_string());
    }
    let timeout = Duration::from_secs(raw.failover.response_timeout_secs.expect("farm sets it"));
    let proxy = start_proxy(raw).await?;
    wait_mode(&proxy, is_pool, Duration::from_secs(20)).await?;
    let miners = f.miners(&proxy, dialects, stop);
    anyhow::ensure!(
        wait_until(Duration::from_secs(30), || async {
            proxy.stats().pool_accepted >= 1
        })
        .await,
        "the pool accepted no share before the fault: {:?}",
        proxy.stats()
    );
    Ok((proxy, miners, timeout))
}

/// A solo proxy whose node RPC goes through `relay`, mining with two miners until the node
/// took a first block. `dir` holds the journal.
async fn solo_proxy_through(
    node: &BitcoinNode,
    relay: &Relay,
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> anyhow::Result<(Proxy, Vec<MinerHandle>)> {
    let payout = TestWallet::new();
    let mut raw = solo_config(node, payout.address(), dir);
    raw.node.rpc_url = Some(format!("http://{}", relay.addr()));
    let proxy = start_proxy(raw).await?;
    let miners = SOLO_MINERS.spawn_each(proxy.local_addr(), &DIALECTS, stop);
    let (start, _) = node.tip().await?;
    anyhow::ensure!(
        wait_until(Duration::from_secs(30), || async {
            node.tip().await.is_ok_and(|(h, _)| h > start)
        })
        .await,
        "no block before the fault: {:?}",
        proxy.stats()
    );
    Ok((proxy, miners))
}

/// Scenario 1: the pool stalls without closing. Nothing tells a silent pool from a quiet one
/// until the proxy waits for an answer: after a new tip the proxy declares a job and sends
/// `SetCustomMiningJob`, the pool never answers, and the farm is on solo jobs within
/// `response_timeout_secs` (plus the once-a-second check). No ASIC is dropped; once the pool
/// answers again, mining returns to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pool_is_left_for_solo_within_the_response_timeout() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(LIMIT, async {
        let f = farm().await?;
        let relay = Relay::start(f.pool().listen_addr()).await?;
        let stop = CancellationToken::new();
        let (proxy, mut miners, timeout) =
            pool_proxy_through(&f, Some(&relay), None, &DIALECTS, &stop).await?;

        relay.set(Fault::Stall);
        let prev = job_prev(&proxy);
        f.node.mine_to(1, f.wallet.address()).await?;
        let declared = new_tip_job(&proxy, prev, Duration::from_secs(10)).await?;
        wait_mode(&proxy, is_solo, timeout + Duration::from_secs(10)).await?;
        let failover = declared.elapsed();
        assert!(
            failover >= timeout && failover <= timeout + TIMEOUT_MARGIN,
            "solo {failover:?} after the job on the new tip; response timeout {timeout:?}"
        );
        let (h, _) = f.node.tip().await?;
        f.wait_block_paying(h, f.solo.script_pubkey(), Duration::from_secs(30))
            .await?;
        no_asic_dropped(&proxy, &mut miners)?;

        relay.set(Fault::Pass);
        let released = Instant::now();
        wait_mode(&proxy, is_pool, Duration::from_secs(15)).await?;
        let back = released.elapsed();
        no_asic_dropped(&proxy, &mut miners)?;
        stop.cancel();
        proxy.shutdown().await;
        eprintln!(
            "FIGURE stalled pool: solo {failover:?} after the job on a new tip (response timeout {timeout:?}); back on the pool {back:?} after it answered; 0 ASICs dropped"
        );
        Ok(())
    })
    .await
}

/// Scenario 2: the JDS dies while a declaration is in flight (its link held, then cut, then
/// refused). The proxy sees the closed connection at once, not after the response timeout,
/// leaves the pool (its declared jobs need the JDS) and mines solo on the farm's template; it
/// keeps probing, and returns to the pool once the JDS accepts connections again. No ASIC is
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jds_dying_mid_declaration_means_solo_at_once_then_back() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(LIMIT, async {
        let f = farm().await?;
        let relay = Relay::start(f.pool().jds_addr().expect("the farm's pool runs a JDS")).await?;
        let stop = CancellationToken::new();
        let (proxy, mut miners, timeout) =
            pool_proxy_through(&f, None, Some(&relay), &DIALECTS, &stop).await?;

        relay.set(Fault::Stall);
        let prev = job_prev(&proxy);
        f.node.mine_to(1, f.wallet.address()).await?;
        new_tip_job(&proxy, prev, Duration::from_secs(10)).await?;
        // The declaration is written and held by the relay: no answer can come.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(is_pool(&proxy.mode().borrow()), "still on the pool while the JDS is silent");
        relay.cut();
        relay.set(Fault::Refuse);
        let died = Instant::now();
        wait_mode(&proxy, is_solo, timeout).await?;
        let to_solo = died.elapsed();
        assert!(
            to_solo < Duration::from_secs(1),
            "solo {to_solo:?} after the JDS died"
        );
        let accepted_at_death = relay.accepted();
        let (h, _) = f.node.tip().await?;
        f.wait_block_paying(h, f.solo.script_pubkey(), Duration::from_secs(30))
            .await?;
        assert!(is_solo(&proxy.mode().borrow()), "solo while the JDS refuses");
        let probes = relay.accepted() - accepted_at_death;
        assert!(probes >= 1, "the JDS was probed while down");
        no_asic_dropped(&proxy, &mut miners)?;

        relay.set(Fault::Pass);
        let back_at = Instant::now();
        wait_mode(&proxy, is_pool, Duration::from_secs(15)).await?;
        let back = back_at.elapsed();
        let (h, _) = f.node.tip().await?;
        f.wait_block_paying(h, &f.pool_script, Duration::from_secs(30))
            .await?;
        no_asic_dropped(&proxy, &mut miners)?;
        stop.cancel();
        proxy.shutdown().await;
        eprintln!(
            "FIGURE JDS died mid-declaration: solo {to_solo:?} after; {probes} JDS probes while it was down; back on the pool {back:?} after it answered; 0 ASICs dropped"
        );
        Ok(())
    })
    .await
}

/// Scenario 3: every byte to and from the node's RPC is held 5 s, so a call takes about 10 s.
/// Miners keep mining; a block found meanwhile is accepted by the node through the slow RPC;
/// every block found in that time gets the node's verdict (accepted, or a valid competitor)
/// while the delay lasts, and each is journaled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_rpc_loses_no_block() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(LIMIT, async {
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        TestWallet::new().fund(&node, 101).await?;
        let relay = Relay::start(rpc_addr(&node)).await?;
        let dir = tempfile::tempdir()?;
        let stop = CancellationToken::new();
        let (proxy, mut miners) = solo_proxy_through(&node, &relay, dir.path(), &stop).await?;

        let delay = Duration::from_secs(5);
        relay.set(Fault::Delay(delay));
        let slow_since = Instant::now();
        let before = hashes(&journal(dir.path()));
        let (height_before, _) = node.tip().await?;
        let shares_before = shares_accepted(&miners);
        let round_trip = rpc_round_trip(&relay, &node).await?;
        let accepted = wait_until(Duration::from_secs(40), || async {
            journal(dir.path()).iter().any(|e| {
                !before.contains(&e.hash) && e.fates.values().any(|f| f == "accepted")
            })
        })
        .await;
        assert!(accepted, "no block found under the delay was accepted");
        let first_accepted = slow_since.elapsed();
        let slow: HashSet<_> = hashes(&journal(dir.path())).difference(&before).copied().collect();
        let shares = shares_accepted(&miners) - shares_before;
        // At full pace that is about two shares a second; a stuck farm would have none.
        assert!(shares >= 5, "miners kept mining: {shares} shares");
        let judged_in = wait_judged(dir.path(), &slow, Duration::from_secs(30)).await?;
        let fates = good_verdicts(&node, dir.path(), &slow).await?;
        let (height, _) = node.tip().await?;
        assert_eq!(
            *proxy.serving().expect("the farm's node").borrow(),
            Serving::Node(0),
            "a slow node is still a node"
        );
        no_asic_dropped(&proxy, &mut miners)?;

        relay.set(Fault::Pass);
        stop.cancel();
        let found = proxy.stats().blocks;
        proxy.shutdown().await;
        let all = counted_once(dir.path(), found)?;
        good_verdicts(&node, dir.path(), &hashes(&all)).await?;
        eprintln!(
            "FIGURE slow node RPC (relay Delay({delay:?}), a call took {round_trip:?}): first block found under the delay accepted {first_accepted:?} in; {} blocks found by then, {shares} shares; their verdicts all in {judged_in:?} later; fates {fates:?}; chain {height_before} -> {height}",
            slow.len()
        );
        Ok(())
    })
    .await
}

/// How long one RPC call through `relay` takes.
async fn rpc_round_trip(relay: &Relay, node: &BitcoinNode) -> anyhow::Result<Duration> {
    let rpc = template_provider::RpcClient::new(
        format!("http://{}", relay.addr()),
        template_provider::NodeAuth::CookieFile(node.cookie_file()),
    );
    let asked = Instant::now();
    rpc.call::<u64>("getblockcount", serde_json::json!([]))
        .await?;
    Ok(asked.elapsed())
}

/// Holds the node's RPC (relay `Stall`) at a moment the proxy mines on the node's tip, so a
/// block found meanwhile is one for the next height; returns that height.
async fn hold_rpc_on_tip(proxy: &Proxy, node: &BitcoinNode, relay: &Relay) -> anyhow::Result<u32> {
    for _ in 0..5 {
        relay.set(Fault::Stall);
        // Whatever was on its way is held now: the node's tip and the proxy's job are final.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (tip, _) = node.tip().await?;
        let mining = proxy.jobs().borrow().template.height;
        if u64::from(mining) == tip + 1 {
            return Ok(mining);
        }
        relay.set(Fault::Pass);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!("the proxy was never on the node's tip when the RPC was held")
}

/// Scenario 4: the node restarts while found blocks' `submitblock` calls hang (the RPC held by
/// the relay). Once the node is back and the relay lets go, the held calls fail on their dead
/// connections and the proxy submits again (with the node's new cookie): every held block gets
/// a good verdict (accepted, or a valid competitor at its height: a block found after the
/// release may reach the node first) and the node knows it; the node's next block is the farm's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_submitted_across_a_node_restart_is_accepted_after_it() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(LIMIT, async {
        // The relay holds the proxy's requests part-sent, and the node's shutdown waits for a
        // part-sent request up to its server timeout (30 s by default): keep that short, so
        // the restart is the node's own time and not the relay's.
        let mut node = BitcoinNode::start_with_args(NodeKind::Bitcoind, &SERVER_TIMEOUT).await?;
        TestWallet::new().fund(&node, 101).await?;
        let relay = Relay::start(rpc_addr(&node)).await?;
        let dir = tempfile::tempdir()?;
        let stop = CancellationToken::new();
        let (proxy, mut miners) = solo_proxy_through(&node, &relay, dir.path(), &stop).await?;

        let height = hold_rpc_on_tip(&proxy, &node, &relay).await?;
        let pending = |dir: &std::path::Path| -> HashSet<_> {
            journal(dir).into_iter().filter(|e| e.fates.is_empty()).map(|e| e.hash).collect()
        };
        anyhow::ensure!(
            wait_until(Duration::from_secs(20), || async { !pending(dir.path()).is_empty() }).await,
            "no block found while the RPC was held"
        );
        // Its submission is in flight, held by the relay.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let restart = Instant::now();
        node.halt().await?;
        node.resume(&SERVER_TIMEOUT).await?;
        let restarted_in = restart.elapsed();
        let held = pending(dir.path());
        relay.set(Fault::Pass);
        let judged_in = wait_judged(dir.path(), &held, Duration::from_secs(15)).await?;
        let fates = good_verdicts(&node, dir.path(), &held).await?;
        let next: bitcoin::BlockHash = node
            .rpc_as("getblockhash", serde_json::json!([height]))
            .await?;
        assert!(
            hashes(&journal(dir.path())).contains(&next),
            "the node's block at {height} is the farm's"
        );
        let winner = if held.contains(&next) { "a held block" } else { "a block found after the release" };
        no_asic_dropped(&proxy, &mut miners)?;

        stop.cancel();
        let found = proxy.stats().blocks;
        proxy.shutdown().await;
        let all = counted_once(dir.path(), found)?;
        good_verdicts(&node, dir.path(), &hashes(&all)).await?;
        eprintln!(
            "FIGURE node restart during submission: {} blocks held, node restarted in {restarted_in:?}, every verdict {judged_in:?} after the RPC was released; fates {fates:?}; height {height} went to {winner}",
            held.len()
        );
        Ok(())
    })
    .await
}

/// The flapping pool drops every link this often...
const FLAP_EVERY: Duration = Duration::from_secs(3);
/// ... this many times (about 30 s).
const FLAPS: usize = 10;
/// `failover.retry_preferred_secs` in the farm's config.
const RETRY: Duration = Duration::from_secs(2);
/// How late the test may see a connection the relay took: it polls every 10 ms.
const POLL_SLACK: Duration = Duration::from_millis(50);

/// When the relays dropped a live pool link, and when the pool relay took each new connection.
#[derive(Debug, Default)]
struct Flaps {
    cuts: usize,
    drops: Vec<Instant>,
    connections: Vec<Instant>,
}

impl Flaps {
    /// For each new connection, how long after the drop before it it came.
    fn reconnect_waits(&self) -> Vec<Duration> {
        self.connections
            .iter()
            .filter_map(|c| {
                let drop = self.drops.iter().rev().find(|d| *d <= c)?;
                Some(c.duration_since(*drop))
            })
            .collect()
    }
}

/// Cuts every link through `pool` and `jds` every [`FLAP_EVERY`], [`FLAPS`] times, noting the
/// cuts that dropped a live pool link and every connection the pool relay takes meanwhile.
async fn flap(pool: &Relay, jds: &Relay) -> Flaps {
    let mut flaps = Flaps::default();
    let mut seen = pool.accepted();
    let mut next_cut = Instant::now() + FLAP_EVERY;
    while flaps.cuts < FLAPS {
        let now = Instant::now();
        let accepted = pool.accepted();
        flaps.connections.extend((seen..accepted).map(|_| now));
        seen = accepted;
        if now >= next_cut {
            if pool.connections() > 0 {
                flaps.drops.push(now);
            }
            pool.cut();
            jds.cut();
            flaps.cuts += 1;
            next_cut += FLAP_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    flaps
}

/// The proxy backed off the flapping pool: it waited at least [`RETRY`] after each drop, ever
/// longer (up to four times that), so it took at most one connection for every two flaps.
fn check_backoff(flaps: &Flaps) -> Vec<Duration> {
    let waits = flaps.reconnect_waits();
    assert_eq!(
        waits.len(),
        flaps.connections.len(),
        "a connection without a drop: {flaps:?}"
    );
    assert!(
        flaps.connections.len() <= FLAPS / 2,
        "{} pool connections for {FLAPS} flaps",
        flaps.connections.len()
    );
    assert!(
        waits.first().is_some_and(|w| *w + POLL_SLACK >= RETRY),
        "{waits:?}"
    );
    assert!(
        waits.windows(2).all(|w| w[1] + POLL_SLACK >= w[0]),
        "the waits never shrink: {waits:?}"
    );
    assert!(
        waits.iter().any(|w| *w + POLL_SLACK >= RETRY * 4),
        "the waits reach four retry intervals: {waits:?}"
    );
    waits
}

/// Cuts the pool's links once and waits for the proxy to connect again; how long it took.
async fn reconnect_after_one_drop(pool: &Relay, jds: &Relay) -> anyhow::Result<Duration> {
    let seen = pool.accepted();
    let dropped = Instant::now();
    pool.cut();
    jds.cut();
    anyhow::ensure!(
        wait_until(RETRY * 3, || async { pool.accepted() > seen }).await,
        "no reconnection within {:?}",
        RETRY * 3
    );
    Ok(dropped.elapsed())
}

/// No block was counted twice or lost uncounted: each is journaled once, as the proxy counted
/// it, with a good verdict; the node's chain above the premine is exactly the blocks it
/// accepted; each block on a pool job went to the pool once or was counted as dropped; the
/// pool found no block it was not sent, and acknowledged no more than it found. Returns a
/// summary for the figure.
async fn check_counts(f: &Farm, s: &jd_proxy::metrics::Snapshot) -> anyhow::Result<String> {
    let entries = counted_once(f.dir.path(), s.blocks)?;
    let fates = good_verdicts(&f.node, f.dir.path(), &hashes(&entries)).await?;
    let accepted: HashSet<_> = entries
        .iter()
        .filter(|e| e.fates.values().any(|fate| fate == "accepted"))
        .map(|e| e.hash)
        .collect();
    let chain = chain_above(&f.node, PREMINE).await?;
    assert_eq!(
        chain, accepted,
        "the node's chain is the blocks it accepted from the farm"
    );
    // On regtest every share meets the network target: each share for the pool is a block.
    let for_pool = entries.iter().filter(|e| pays(e, &f.pool_script)).count() as u64;
    assert_eq!(for_pool, s.pool_submitted + s.pool_dropped, "{s:?}");
    let pool_found = f.pool().log_count(POOL_BLOCK_FOUND_LOG) as u64;
    assert!(
        s.pool_accepted <= pool_found && pool_found <= s.pool_submitted,
        "the pool found {pool_found} blocks; {s:?}"
    );
    Ok(format!(
        "{} blocks found, journal {}, chain +{}, fates {fates:?}; {for_pool} on pool jobs: {} submitted, {} dropped at a drop; the pool found {pool_found} and acknowledged {}",
        s.blocks,
        entries.len(),
        chain.len(),
        s.pool_submitted,
        s.pool_dropped,
        s.pool_accepted
    ))
}

/// Scenario 5: the pool (and its JDS) drop every connection every 3 s for 30 s. Each drop puts
/// the farm on solo at once; the proxy waits `retry_preferred_secs` before it tries the pool
/// again, and as the pool keeps failing soon after each return, twice and four times that:
/// one connection for every two flaps at most. Once the pool holds for two retry intervals,
/// the next drop is waited out like a first one. No ASIC is dropped, and no block is counted
/// twice (see [`check_counts`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_pool_is_backed_off_and_no_block_is_counted_twice() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(LIMIT, async {
        let f = farm().await?;
        let pool = Relay::start(f.pool().listen_addr()).await?;
        let jds = Relay::start(f.pool().jds_addr().expect("the farm's pool runs a JDS")).await?;
        let stop = CancellationToken::new();
        let dialects = [Dialect::Cgminer, Dialect::Bitaxe, Dialect::Whatsminer];
        let (proxy, mut miners, _) =
            pool_proxy_through(&f, Some(&pool), Some(&jds), &dialects, &stop).await?;

        let flaps = flap(&pool, &jds).await;
        let waits = check_backoff(&flaps);
        no_asic_dropped(&proxy, &mut miners)?;
        wait_mode(&proxy, is_pool, RETRY * 6).await?;
        let back = Instant::now();
        let (h, _) = f.node.tip().await?;
        f.wait_block_paying(h, &f.pool_script, Duration::from_secs(30))
            .await?;
        tokio::time::sleep((RETRY * 2 + POLL_SLACK).saturating_sub(back.elapsed())).await;
        let after_holding = reconnect_after_one_drop(&pool, &jds).await?;
        assert!(
            after_holding + POLL_SLACK >= RETRY && after_holding < RETRY * 2,
            "reconnected {after_holding:?} after a drop that followed {:?} on the pool",
            RETRY * 2
        );
        wait_mode(&proxy, is_pool, Duration::from_secs(5)).await?;
        no_asic_dropped(&proxy, &mut miners)?;
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = proxy.stats();
        proxy.shutdown().await;
        let counts = check_counts(&f, &s).await?;
        eprintln!(
            "FIGURE flapping pool: {FLAPS} flaps every {FLAP_EVERY:?}, {} dropped a live link; {} pool connections, waits after a drop {waits:?}; after the pool held, reconnected {after_holding:?} after a drop; {counts}; 0 ASICs dropped",
            flaps.drops.len(),
            flaps.connections.len()
        );
        Ok(())
    })
    .await
}
