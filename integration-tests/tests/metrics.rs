//! The operators' HTTP server on real processes: `/metrics` bounded with 100,000 workers, a real
//! Prometheus scraping it every second while CPU miners mine through jd-proxy on a regtest node
//! (PromQL returns the farm's hashrate and the blocks found), and the JSON API showing each
//! miner with its hashrate.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::prometheus::Prometheus;
use integration_tests::support::{
    init_tracing, provider_config, provider_link, solo_config, start_provider, start_proxy,
    wait_until, with_timeout, MinerSpec,
};
use integration_tests::wallet::TestWallet;
use jd_proxy::config::raw::RawConfig;
use jd_proxy::figures::asic::Identity;
use jd_proxy::Proxy;
use serde_json::Value;
use sv1_miner::Dialect;
use sv2_wire::AuthorityKeypair;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// Workers with series of their own (the default of `http.max_metric_workers`).
const NAMED: usize = 1_000;
const WORKERS: usize = 100_000;
/// A CPU miner at this rate finds a share at the test difficulty about once a second; on
/// regtest nearly every share is a block.
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "farm",
    difficulty: 5e-6,
    hashrate: 25_000.0,
};
const DIALECTS: [Dialect; 3] = [Dialect::ALL[0], Dialect::ALL[1], Dialect::ALL[2]];

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let r = reqwest::get(format!("http://{addr}{path}")).await?;
    anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
    Ok(r.text().await?)
}

async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&get(addr, path).await?)?)
}

/// Calls `get` every 500 ms until `ok` holds of its value or 90 s pass: whether it held, and
/// the last value (for the failure message).
async fn poll<T, F, Fut>(mut get: F, ok: impl Fn(&T) -> bool) -> (bool, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let v = get().await;
        if ok(&v) {
            return (true, v);
        }
        if tokio::time::Instant::now() > deadline {
            return (false, v);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The value of the sample line `series` (name and labels, exactly as rendered).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A proxy whose figures are sampled every second.
async fn proxy(node: &BitcoinNode, dir: &std::path::Path) -> anyhow::Result<(Proxy, SocketAddr)> {
    let payout = TestWallet::new();
    // A fresh regtest node is in initial block download until its first block.
    node.mine_to(1, payout.address()).await?;
    let mut raw: RawConfig = solo_config(node, payout.address(), dir);
    raw.http.hashrate_sample_secs = Some(1.0);
    let proxy = start_proxy(raw).await?;
    let http = proxy.http_addr().expect("http.listen 127.0.0.1:0 binds");
    Ok((proxy, http))
}

/// Outcome 3: with 100,000 distinct worker names on the board, `/metrics` is as big as with
/// 1,000 plus one overflow row, and the overflow carries the other 99,000 workers' shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_bounded_with_100k_workers() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let dir = tempfile::tempdir()?;
        let (proxy, http) = proxy(&node, dir.path()).await?;
        let board = proxy.board();
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let mut on_board = Vec::with_capacity(WORKERS);
        let mut join = |n: usize| {
            let identity = Identity {
                id: 0,
                worker: Arc::from(format!("farm.rack{:03}.asic{n:06}", n % 997)),
                peer,
                agent: Some(Arc::from("cgminer/4.12.1")),
                version_mask: Some(0x1fff_e000),
                connected_at: 1,
            };
            let asic = board.join(identity, 8192.0);
            asic.share_accepted(8192.0, 1_700_000_000);
            on_board.push(asic);
        };
        (0..NAMED).for_each(&mut join);
        let at_bound = get(http, "/metrics").await?;
        (NAMED..WORKERS).for_each(&mut join);
        let started = std::time::Instant::now();
        let full = get(http, "/metrics").await?;
        let took = started.elapsed();
        let other = "{worker=\"(other workers)\"}";
        let folded = sample(&full, "jd_proxy_workers_folded");
        let other_shares =
            sample(&full, &format!("jd_proxy_worker_shares_accepted_total{other}"));
        let named_series = full
            .lines()
            .filter(|l| l.starts_with("jd_proxy_worker_shares_accepted_total{"))
            .count();
        println!(
            "/metrics: {} bytes with {NAMED} workers, {} bytes with {WORKERS} ({named_series} worker series, scrape {took:?})",
            at_bound.len(),
            full.len()
        );
        assert_eq!(named_series, NAMED + 1, "the named workers and one overflow row");
        assert_eq!(folded, Some((WORKERS - NAMED) as f64));
        assert_eq!(other_shares, Some((WORKERS - NAMED) as f64), "the overflow carries the rest");
        assert_eq!(sample(&full, "jd_proxy_miners"), Some(WORKERS as f64));
        assert!(
            full.len() < at_bound.len() + 4_096,
            "100k workers add no more than the overflow row: {} vs {}",
            full.len(),
            at_bound.len()
        );
        assert!(full.len() < 1 << 20, "{} bytes", full.len());
        drop(on_board);
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// Outcome 2: a real Prometheus scrapes jd-proxy every second while miners mine; PromQL gives
/// the farm's hashrate and the blocks found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_hashrate_and_blocks() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let dir = tempfile::tempdir()?;
        let (proxy, http) = proxy(&node, dir.path()).await?;
        let prometheus = Prometheus::start(&[http], Duration::from_secs(1)).await?;
        let stop = CancellationToken::new();
        let _miners = MINERS.spawn_each(proxy.local_addr(), &DIALECTS, &stop);
        let hashrate = "sum(jd_proxy_hashrate_hashes_per_second{window=\"5m\"})";
        let blocks = "max_over_time(jd_proxy_blocks_found_total[1m])";
        let first = |r: anyhow::Result<Vec<(Value, f64)>>| {
            r.ok().and_then(|r| r.first().map(|s| s.1)).unwrap_or(0.0)
        };
        let (ok, seen) = poll(
            || async {
                let h = first(prometheus.query(hashrate).await);
                (h, first(prometheus.query(blocks).await))
            },
            |seen: &(f64, f64)| seen.0 > 0.0 && seen.1 >= 1.0,
        )
        .await;
        println!("PromQL: {hashrate} = {} H/s, {blocks} = {}", seen.0, seen.1);
        assert!(
            ok,
            "hashrate and blocks through PromQL: {seen:?}\n{}",
            prometheus.log_tail()
        );
        let up = prometheus.query("up{job=\"jd\"}").await?;
        assert_eq!(
            up.first().map(|s| s.1),
            Some(1.0),
            "the scrape target is up"
        );
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// The JSON API while miners mine: the summary, each miner with a non-zero hashrate, the
/// blocks with the node's verdict, and the events that announced them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_each_miner_hashing_and_the_blocks() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let dir = tempfile::tempdir()?;
        let (proxy, http) = proxy(&node, dir.path()).await?;
        let stop = CancellationToken::new();
        let _miners = MINERS.spawn_each(proxy.local_addr(), &DIALECTS, &stop);
        let workers: Vec<String> = DIALECTS.iter().map(|d| MINERS.worker(*d)).collect();
        let (all_hashing, asics) = poll(
            || async { get_json(http, "/api/v1/asics").await.unwrap_or_default() },
            |asics: &Value| workers.iter().all(|w| hashing(asics, w)),
        )
        .await;
        assert!(all_hashing, "every miner with a hashrate: {asics:#}");
        let blocks_judged = wait_until(Duration::from_secs(60), || async {
            let b = get_json(http, "/api/v1/blocks").await.unwrap_or_default();
            b.as_array().is_some_and(|b| {
                b.iter()
                    .any(|b| b["fates"].as_object().is_some_and(|f| !f.is_empty()))
            })
        })
        .await;
        assert!(blocks_judged, "a found block carries the node's verdict");
        check_summary_and_the_rest(http, workers.len()).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// Whether `/api/v1/asics` shows `worker` with a hashrate above zero.
fn hashing(asics: &Value, worker: &str) -> bool {
    asics.as_array().is_some_and(|list| {
        list.iter().any(|a| {
            a["worker"] == worker
                && a["rates"]["h5m"].as_f64().unwrap_or(0.0) > 0.0
                && a["totals"]["accepted"].as_u64().unwrap_or(0) > 0
        })
    })
}

async fn check_summary_and_the_rest(http: SocketAddr, miners: usize) -> anyhow::Result<()> {
    let s = get_json(http, "/api/v1/summary").await?;
    assert_eq!(s["miners"], miners, "{s:#}");
    assert!(s["hashrate"]["h5m"].as_f64().unwrap_or(0.0) > 0.0, "{s:#}");
    assert!(s["blocks_found"].as_u64().unwrap_or(0) >= 1, "{s:#}");
    assert_eq!(s["upstream"]["mode"], "solo", "{s:#}");
    assert!(s["template"]["height"].as_u64().unwrap_or(0) > 0, "{s:#}");
    assert!(s["node"]["serving"].is_string(), "{s:#}");
    let events = get_json(http, "/api/v1/events?since=0").await?;
    let kinds: Vec<&str> = events
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"block_found"), "{kinds:?}");
    assert!(kinds.contains(&"block_fate"), "{kinds:?}");
    let last = events
        .as_array()
        .and_then(|e| e.last())
        .map(|e| e["seq"].clone());
    let after = get_json(
        http,
        &format!("/api/v1/events?since={}", last.unwrap_or_default()),
    )
    .await?;
    assert!(
        after.as_array().is_some_and(|a| a.len() < kinds.len()),
        "since= filters"
    );
    let workers = get_json(http, "/api/v1/workers").await?;
    assert_eq!(
        workers.as_array().map(Vec::len),
        Some(miners),
        "{workers:#}"
    );
    let history = get_json(http, "/api/v1/history").await?;
    assert!(
        history.as_array().is_some_and(|h| !h.is_empty()),
        "{history:#}"
    );
    let template = get_json(http, "/api/v1/template").await?;
    assert!(template["excluded"].is_array(), "{template:#}");
    let upstream = get_json(http, "/api/v1/upstream").await?;
    assert_eq!(upstream["mode"], "solo", "{upstream:#}");
    let page = get(http, "/").await?;
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "the dashboard"
    );
    Ok(())
}

/// The template provider's own server: its template, its client (jd-proxy), the blocks the
/// proxy's miner found through it and the node's verdicts, as `tp_*` metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_provider_shows_its_own_figures() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT, async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let payout = TestWallet::new();
        node.mine_to(1, payout.address()).await?;
        let tp_dir = tempfile::tempdir()?;
        let keys = AuthorityKeypair::generate();
        let provider = start_provider(provider_config(&node, &keys, tp_dir.path())).await?;
        let tp_http = provider.http_addr().expect("http.listen 127.0.0.1:0 binds");
        let dir = tempfile::tempdir()?;
        let mut raw = solo_config(&node, payout.address(), dir.path());
        raw.template_provider = Some(provider_link(&provider, keys.public()));
        let proxy = start_proxy(raw).await?;
        let stop = CancellationToken::new();
        let _miner = MINERS.spawn(proxy.local_addr(), DIALECTS[0], &stop);
        let accepted = "tp_block_fates_total{node=";
        let (judged, text) = poll(
            || async { get(tp_http, "/metrics").await.unwrap_or_default() },
            |text: &String| {
                text.lines()
                    .any(|l| l.starts_with(accepted) && l.contains("fate=\"accepted\""))
            },
        )
        .await;
        assert!(
            judged,
            "the node's verdict on a block from the provider's client:\n{text}"
        );
        assert_eq!(
            sample(&text, "tp_clients"),
            Some(1.0),
            "jd-proxy is its client"
        );
        assert!(
            sample(&text, "tp_blocks_found_total").unwrap_or(0.0) >= 1.0,
            "{text}"
        );
        assert!(
            sample(&text, "tp_template_height").unwrap_or(0.0) >= 2.0,
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        let t = get_json(tp_http, "/api/v1/template").await?;
        assert!(t["height"].as_u64().unwrap_or(0) >= 2, "{t:#}");
        stop.cancel();
        proxy.shutdown().await;
        provider.shutdown().await;
        Ok(())
    })
    .await
}
