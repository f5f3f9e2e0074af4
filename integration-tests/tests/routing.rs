//! Hashrate routing against two real reference pools (`pool_sv2` 0.7.0 with their JDS) on a
//! custom signet, where shares are not blocks (see `support::signet`): a 70/30 weighted split
//! of the pools' acknowledged work, customers' ASICs each on their own pool and account, and a
//! pool's death moving only its route's ASICs.
//!
//! Needs `scripts/bitcoin-core.sh` and `scripts/sv2-peers.sh` (or `JD_BITCOIN_BIN_DIR` /
//! `JD_SV2_BIN_DIR`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::ensure;
use integration_tests::support::farm::is_pool;
use integration_tests::support::signet::{miner, upstream, SignetFarm};
use integration_tests::support::{bounded, init_tracing, start_proxy, wait_until};
use integration_tests::sv2_peers::PoolSv2;
use jd_proxy::config::raw::RawConfig;
use jd_proxy::config::route::RawRoute;
use jd_proxy::ledger::config::RawCustomer;
use jd_proxy::{Mode, Proxy};
use sv1_miner::{MinerEvent, MinerHandle};
use tokio_util::sync::CancellationToken;

/// Each test, setup included, ends within this (about 60 s for the longest; a first run on a
/// machine also mines the premined chain, a few seconds a block).
const LIMIT: Duration = Duration::from_secs(120);
/// The share difficulty every miner is held at: 10 shares a second at 10 kH/s (the chain's
/// blocks take about 4.8 million hashes).
const DIFFICULTY: f64 = 2.33e-7;

fn route(name: &str, upstreams: &[&str]) -> RawRoute {
    RawRoute {
        name: Some(name.into()),
        upstreams: Some(upstreams.iter().map(|u| (*u).to_owned()).collect()),
        ..RawRoute::default()
    }
}

async fn wait_route(
    proxy: &Proxy,
    name: &str,
    want: impl Fn(&Mode) -> bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut mode = proxy
        .route_mode(name)
        .ok_or_else(|| anyhow::anyhow!("no route {name}"))?;
    let reached = tokio::time::timeout(timeout, mode.wait_for(|m| want(m)))
        .await
        .is_ok_and(|r| r.is_ok());
    ensure!(
        reached,
        "route {name} still {:?} after {timeout:?}",
        *mode.borrow()
    );
    Ok(())
}

/// Each route's figures now, by name.
fn routes(proxy: &Proxy) -> HashMap<String, jd_proxy::figures::upstream::RouteSnapshot> {
    proxy
        .board()
        .routes()
        .iter()
        .map(|r| (r.name.clone(), r.snapshot()))
        .collect()
}

/// Per route, (pool, worker) of every share its pools accepted.
fn credits(proxy: &Proxy) -> HashMap<String, Vec<(String, String, u64, u64)>> {
    proxy
        .board()
        .routes()
        .iter()
        .map(|r| (r.name.clone(), r.credits()))
        .collect()
}

/// Per route, the work of the shares its miners sent the proxy (at their own difficulty).
fn miners_work(proxy: &Proxy) -> Vec<f64> {
    let router = proxy.router();
    let seated = router.seated();
    let mut work = vec![0.0; router.routes().len()];
    for a in proxy.board().asics() {
        if let Some(&r) = seated.get(&a.identity.id) {
            work[r] += a.totals().work;
        }
    }
    work
}

/// The worker names on each route now.
fn workers_by_route(proxy: &Proxy) -> Vec<HashSet<String>> {
    let router = proxy.router();
    let seated = router.seated();
    let mut by_route = vec![HashSet::new(); router.routes().len()];
    for a in proxy.board().asics() {
        if let Some(&r) = seated.get(&a.identity.id) {
            by_route[r].insert(a.identity.worker.to_string());
        }
    }
    by_route
}

/// Outcome 1: two pools at 70/30 by weight. Ten equal miners are seated 7/3 as they
/// authorize; over 40 s the work each pool acknowledged (at its own targets) is within 5 % of
/// the farm of 70/30. Then two of the 30 % route's three miners leave: the rebalancer moves one
/// miner over (6/2 is the nearest to 70/30), which keeps its connection and is credited by its
/// new pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seventy_thirty_weight_splits_the_pools_acknowledged_work() {
    init_tracing();
    bounded(LIMIT, async {
        let f = SignetFarm::start().await?;
        // 15 shares a second per channel: each pool's target is at least twice the miners'
        // difficulty, so every share it credits stands for its target's worth of work.
        let (big, small) = (f.pool(900.0).await?, f.pool(900.0).await?);
        let mut raw = f.proxy_config(DIFFICULTY);
        raw.upstream = vec![
            upstream("pool-70", &big, "farm"),
            upstream("pool-30", &small, "farm"),
        ];
        let weighted = |name: &str, weight: f64, pool: &str| RawRoute {
            weight: Some(weight),
            ..route(name, &[pool])
        };
        raw.route = vec![
            weighted("main", 70.0, "pool-70"),
            weighted("hedge", 30.0, "pool-30"),
        ];
        raw.routing.rebalance_secs = Some(2);
        let proxy = start_proxy(raw).await?;
        for r in ["main", "hedge"] {
            wait_route(&proxy, r, is_pool, Duration::from_secs(20)).await?;
        }
        let stop = CancellationToken::new();
        let mut miners: Miners = (0..10)
            .map(|i| {
                let (worker, s) = (format!("rig.{i}"), stop.child_token());
                let m = miner(proxy.local_addr(), &worker, (DIFFICULTY, 10_000.0), &s);
                (worker, (s, m))
            })
            .collect();
        let router = proxy.router();
        let seated = wait_until(Duration::from_secs(15), || async {
            router.counts() == [7, 3]
        })
        .await;
        ensure!(seated, "seated {:?}", router.counts());
        // The channels opened before any miner (at the pool's easiest target, kept by the jobs
        // set then): after two hashrate reports each pool has its route's hashrate, and a
        // block puts both routes on jobs set at the targets that follow from it.
        tokio::time::sleep(Duration::from_secs(12)).await;
        f.mine_block().await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        measure_split(&proxy).await?;
        come_and_go(&proxy, &mut miners).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}

/// Each miner by worker name: its own stop, and its handle.
type Miners = HashMap<String, (CancellationToken, MinerHandle)>;

/// The pools' acknowledged work over 40 s is 70/30 within 5 % of the farm.
async fn measure_split(proxy: &Proxy) -> anyhow::Result<()> {
    let (before, mined_before) = (routes(proxy), miners_work(proxy));
    tokio::time::sleep(Duration::from_secs(40)).await;
    let (after, mined_after) = (routes(proxy), miners_work(proxy));
    let work = |r: &str| after[r].work.accepted - before[r].work.accepted;
    let shares = |r: &str| after[r].pool_shares.accepted - before[r].pool_shares.accepted;
    let (main, hedge) = (work("main"), work("hedge"));
    let share = main / (main + hedge);
    let mined: Vec<f64> = mined_after
        .iter()
        .zip(&mined_before)
        .map(|(a, b)| a - b)
        .collect();
    let own = mined[0] / (mined[0] + mined[1]);
    eprintln!(
        "acknowledged work over 40 s: main {main:.6} ({} shares), hedge {hedge:.6} ({} shares): \
         {:.1} % / {:.1} %; the miners' own shares: {:.1} % / {:.1} %",
        shares("main"),
        shares("hedge"),
        share * 100.0,
        (1.0 - share) * 100.0,
        own * 100.0,
        (1.0 - own) * 100.0,
    );
    ensure!(shares("main") > 200 && shares("hedge") > 200, "{after:?}");
    ensure!(
        (share - 0.7).abs() <= 0.05,
        "split {share:.3}, not 0.70 ± 0.05"
    );
    Ok(())
}

/// Two of the hedge's miners go: the rebalancer moves one from main, which keeps its
/// connection, gets the hedge's job and is credited by the hedge's pool.
async fn come_and_go(proxy: &Proxy, miners: &mut Miners) -> anyhow::Result<()> {
    let router = proxy.router();
    let on = workers_by_route(proxy);
    for w in on[1].iter().take(2) {
        miners.remove(w).expect("a miner").0.cancel();
    }
    let notified: HashMap<String, u64> = miners
        .iter()
        .map(|(w, (_, m))| (w.clone(), m.stats.snapshot().notifies))
        .collect();
    let moved = wait_until(Duration::from_secs(15), || async {
        router.counts() == [6, 2]
    })
    .await;
    ensure!(moved, "after two left: {:?}", router.counts());
    let now_on = workers_by_route(proxy);
    let mover = now_on[1]
        .difference(&on[1])
        .next()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no miner moved to the hedge: {now_on:?}"))?;
    let credited = wait_until(Duration::from_secs(15), || async {
        credits(proxy)["hedge"]
            .iter()
            .any(|(pool, w, accepted, _)| pool == "pool-30" && *w == mover && *accepted > 0)
    })
    .await;
    ensure!(credited, "{mover} not credited: {:?}", credits(proxy));
    let m = &miners[&mover].1;
    ensure!(
        m.stats.snapshot().notifies > notified[&mover],
        "the moved miner got its new route's job"
    );
    ensure!(!m.task.is_finished(), "the moved miner is still connected");
    let s = proxy.stats();
    ensure!(
        s.connections_total == 10 && s.connections == 8,
        "no reconnect: {s:?}"
    );
    Ok(())
}

/// Outcome 2: routing by worker pattern. Alice's workers (her `[[customer]]`) mine for her pool
/// under her account, Bob's (`bob.*`) for his; each pool credits only its customer's workers,
/// and a worker of neither mines solo, credited by no pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_customers_asics_mine_for_its_own_pool_and_account() {
    init_tracing();
    bounded(LIMIT, async {
        let f = SignetFarm::start().await?;
        let (alice_pool, bob_pool) = (f.pool(60.0).await?, f.pool(60.0).await?);
        let mut raw = f.proxy_config(DIFFICULTY);
        raw.upstream = vec![
            upstream("alice-pool", &alice_pool, "alice-account"),
            upstream("bob-pool", &bob_pool, "bob-account"),
        ];
        raw.customer = vec![RawCustomer {
            name: Some("alice".into()),
            workers: vec!["alice.*".into()],
        }];
        raw.route = vec![
            RawRoute {
                customer: Some("alice".into()),
                ..route("alice", &["alice-pool"])
            },
            RawRoute {
                workers: vec!["bob.*".into()],
                ..route("bob", &["bob-pool"])
            },
            route("farm", &[]),
        ];
        let proxy = start_proxy(raw).await?;
        for r in ["alice", "bob"] {
            wait_route(&proxy, r, is_pool, Duration::from_secs(20)).await?;
        }
        let stop = CancellationToken::new();
        let workers = ["alice.1", "alice.2", "bob.1", "bob.2", "farm.1"];
        let _miners: Vec<MinerHandle> = workers
            .iter()
            .map(|w| miner(proxy.local_addr(), w, (DIFFICULTY, 5_000.0), &stop))
            .collect();
        customers_credited(&proxy).await?;
        // Each pool opened one channel, under its customer's account, and took shares on it.
        for (pool, mine, theirs) in [
            (&alice_pool, "alice-account", "bob-account"),
            (&bob_pool, "bob-account", "alice-account"),
        ] {
            let log = pool.log();
            ensure!(
                log.contains(mine) && !log.contains(theirs),
                "{mine} / {theirs}"
            );
            let took = pool.log_count("SubmitSharesExtended");
            ensure!(took > 0, "no share reached the pool of {mine}");
        }
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}

/// Every customer's workers are credited by their own pool, on their own route, and no other
/// worker is; the farm's own worker mines solo.
async fn customers_credited(proxy: &Proxy) -> anyhow::Result<()> {
    let credited = |route: &str, worker: &str| {
        credits(proxy)[route]
            .iter()
            .any(|(_, w, accepted, _)| w == worker && *accepted >= 5)
    };
    let all = wait_until(Duration::from_secs(40), || async {
        ["alice.1", "alice.2"].iter().all(|w| credited("alice", w))
            && ["bob.1", "bob.2"].iter().all(|w| credited("bob", w))
    })
    .await;
    ensure!(all, "credits {:?}", credits(proxy));
    let c = credits(proxy);
    for (route, pool, prefix) in [
        ("alice", "alice-pool", "alice."),
        ("bob", "bob-pool", "bob."),
    ] {
        for (p, w, _, _) in &c[route] {
            ensure!(
                p == pool && w.starts_with(prefix),
                "route {route}: {p} credited {w}"
            );
        }
    }
    ensure!(
        c["farm"].is_empty(),
        "the solo route has no pool: {:?}",
        c["farm"]
    );
    ensure!(*proxy.route_mode("farm").expect("route").borrow() == Mode::Solo);
    let farm = proxy.pool_workers();
    ensure!(
        !farm.iter().any(|(w, a, _)| w == "farm.1" && *a > 0),
        "{farm:?}"
    );
    Ok(())
}

/// Outcome 3: one pool is killed. Only its route fails over (to solo, after its last pool)
/// and keeps trying it; over the next 8 s the other route's miners see no change at all: no
/// clean job, no job of any kind on an unchanged tip, no disconnect, and their pool keeps
/// crediting them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pool_moves_only_its_routes_asics() {
    init_tracing();
    bounded(LIMIT, async {
        let f = SignetFarm::start().await?;
        let (pool_a, pool_b) = (f.pool(60.0).await?, f.pool(60.0).await?);
        let raw = routes_a_and_b(&f, &pool_a, &pool_b);
        let proxy = start_proxy(raw).await?;
        for r in ["a", "b"] {
            wait_route(&proxy, r, is_pool, Duration::from_secs(20)).await?;
        }
        let stop = CancellationToken::new();
        // 2 kH/s each: a block (4.8 million hashes) every ten minutes or so, so the tip holds.
        let mut miners: HashMap<&str, MinerHandle> = ["a.1", "a.2", "b.1", "b.2"]
            .into_iter()
            .map(|w| {
                (
                    w,
                    miner(proxy.local_addr(), w, (DIFFICULTY, 2_000.0), &stop),
                )
            })
            .collect();
        let going = wait_until(Duration::from_secs(30), || async {
            let r = routes(&proxy);
            r["a"].pool_shares.accepted > 0 && r["b"].pool_shares.accepted > 0
        })
        .await;
        ensure!(going, "{:?}", routes(&proxy));
        for w in ["b.1", "b.2"] {
            drain(miners.get_mut(w).expect("miner"));
        }
        let clean_a = clean_jobs(&miners, &["a.1", "a.2"]);
        let (tip, tip_hash) = f.node.tip().await?;
        let b_accepted = routes(&proxy)["b"].pool_shares.accepted;

        drop(pool_a);
        wait_route(&proxy, "a", |m| *m == Mode::Solo, Duration::from_secs(15)).await?;
        // Route a keeps trying its dead pool meanwhile (every 2 s, then less often).
        tokio::time::sleep(Duration::from_secs(8)).await;
        let b_still = wait_until(Duration::from_secs(15), || async {
            routes(&proxy)["b"].pool_shares.accepted > b_accepted + 3
        })
        .await;
        let (tip_after, _) = f.node.tip().await?;
        let r = routes(&proxy);
        ensure!(b_still, "route b's pool stopped crediting: {:?}", r["b"]);
        let b_mode = proxy.route_mode("b").expect("route").borrow().clone();
        ensure!(
            matches!(&b_mode, Mode::Pool { name, .. } if name == "pool-b"),
            "route b left its pool: {b_mode:?}"
        );
        ensure!(
            r["b"].failovers.is_empty(),
            "route b failed over: {:?}",
            r["b"].failovers
        );
        ensure!(
            !r["a"].failovers.is_empty(),
            "route a's failover is counted"
        );
        for w in ["b.1", "b.2"] {
            let events = drain(miners.get_mut(w).expect("miner"));
            saw_no_change(w, &events, tip_after == tip, tip_hash)?;
        }
        let clean_a_after = clean_jobs(&miners, &["a.1", "a.2"]);
        ensure!(
            clean_a_after >= clean_a + 2,
            "route a's miners got solo jobs"
        );
        let s = proxy.stats();
        ensure!(
            (s.connections, s.connections_total) == (4, 4),
            "no miner dropped: {s:?}"
        );
        eprintln!(
            "tip {tip} -> {tip_after}; route a: {:?}; route b: {:?}",
            r["a"], r["b"]
        );
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}

/// The events of miner `w` since the pool of the other route died show no change: no
/// disconnect, and no job at all while the tip held (if a block came meanwhile, clean jobs on
/// its new tip only).
fn saw_no_change(
    w: &str,
    events: &[MinerEvent],
    same_tip: bool,
    old_tip: bitcoin::BlockHash,
) -> anyhow::Result<()> {
    for e in events {
        match e {
            MinerEvent::Disconnected { reason } => anyhow::bail!("{w} disconnected: {reason}"),
            MinerEvent::Reconnecting { .. } => anyhow::bail!("{w} was asked to reconnect"),
            MinerEvent::Notify {
                clean, prevhash, ..
            } if same_tip => {
                anyhow::bail!("{w} got a job (clean {clean}) on the same tip {prevhash}")
            }
            MinerEvent::Notify {
                clean: true,
                prevhash,
                ..
            } => ensure!(*prevhash != old_tip, "{w}: a clean job on the old tip"),
            _ => {}
        }
    }
    Ok(())
}

/// Route `a` (workers `a.*`) on `pool_a`, route `b` (every other) on `pool_b`.
fn routes_a_and_b(f: &SignetFarm, pool_a: &PoolSv2, pool_b: &PoolSv2) -> RawConfig {
    let mut raw = f.proxy_config(DIFFICULTY);
    raw.upstream = vec![
        upstream("pool-a", pool_a, "farm"),
        upstream("pool-b", pool_b, "farm"),
    ];
    raw.route = vec![
        RawRoute {
            workers: vec!["a.*".into()],
            ..route("a", &["pool-a"])
        },
        route("b", &["pool-b"]),
    ];
    raw
}

/// The clean jobs `workers` got so far.
fn clean_jobs(miners: &HashMap<&str, MinerHandle>, workers: &[&str]) -> u64 {
    workers
        .iter()
        .map(|w| miners[w].stats.snapshot().clean_notifies)
        .sum()
}

/// The miner's events so far.
fn drain(m: &mut MinerHandle) -> Vec<MinerEvent> {
    let mut out = Vec::new();
    while let Ok(e) = m.events.try_recv() {
        out.push(e);
    }
    out
}
