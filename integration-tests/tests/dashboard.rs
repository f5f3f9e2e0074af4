//! Issue 11, outcome 1: a real headless Chromium (Debian `chromium`, over the DevTools protocol)
//! loads jd-proxy's dashboard while CPU miners mine through it on a regtest Bitcoin Core. The
//! page shows every miner with a non-zero hashrate, and updates by itself when a block is found.
//!
//! Screenshots go to `target/dashboard-screenshots/` on every run; with
//! `JD_UPDATE_SCREENSHOTS=1` they also replace `docs/screenshots/` (the README's), after
//! `JD_SCREENSHOT_MINING_SECS` of mining (default 150) so the chart has some minutes to draw.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bitcoin::{Amount, Txid};
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::chromium::{Chromium, Page};
use integration_tests::support::process::free_local_port;
use integration_tests::support::{init_tracing, solo_config, start_proxy, with_timeout, MinerSpec};
use integration_tests::wallet::TestWallet;
use serde::Deserialize;
use sv1_miner::Dialect;
use tokio_util::sync::CancellationToken;

/// The test's bound, besides the extra mining before screenshots for the docs.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the page may take to show what the test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(60);
/// About one share (here: one block, regtest's target being easier than the share's) a second
/// per miner at the test difficulty.
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "rig",
    difficulty: 5e-6,
    hashrate: 25_000.0,
};
/// The policy's fee-rate floor; the test puts one transaction under it in the mempool.
const MIN_FEERATE: f64 = 5.0;

/// What the test reads from the page's DOM: the stable ids and data attributes of the dashboard.
#[derive(Debug, Deserialize)]
struct Shown {
    refreshes: u64,
    ok: String,
    rows: Vec<Row>,
    blocks: Vec<ShownBlock>,
    excluded: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Row {
    worker: String,
    hashrate: f64,
    text: String,
}

#[derive(Debug, Deserialize)]
struct ShownBlock {
    hash: String,
    verdicts: Vec<String>,
}

const READ_PAGE: &str = r##"(() => ({
  refreshes: +(document.body.dataset.refreshes || 0),
  ok: document.getElementById("status").dataset.ok || "",
  rows: [...document.querySelectorAll("#asics tbody tr[data-worker]")].map(r => ({
    worker: r.dataset.worker, hashrate: +r.dataset.hashrate,
    text: r.querySelector("[data-col=h5m]").textContent })),
  blocks: [...document.querySelectorAll("#blocks li[data-hash]")].map(li => ({
    hash: li.dataset.hash,
    verdicts: [...li.querySelectorAll(".fate")].map(f => f.dataset.verdict) })),
  excluded: [...document.querySelectorAll("#excluded-list li[data-txid]")].map(li => li.dataset.txid),
}))()"##;

async fn read(page: &mut Page) -> anyhow::Result<Shown> {
    page.eval(READ_PAGE).await
}

/// Reads the page every 250 ms until `check` holds; the last reading either way.
async fn wait_for(
    page: &mut Page,
    what: &str,
    check: impl Fn(&Shown) -> bool,
) -> anyhow::Result<Shown> {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let shown = read(page).await?;
        if check(&shown) {
            return Ok(shown);
        }
        ensure!(
            Instant::now() < deadline,
            "the page did not show {what} in {PAGE_WAIT:?}: {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_miner_and_each_block_found() -> anyhow::Result<()> {
    with_timeout(TEST_TIMEOUT + docs_mining(), async {
        init_tracing();
        let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
        let mut wallet = TestWallet::new();
        wallet.fund(&node, 110).await?;
        let cheap = fill_mempool(&node, &mut wallet).await?;
        let dir = tempfile::tempdir()?;
        let port = free_local_port()?;
        let mut raw = solo_config(&node, wallet.address(), dir.path());
        raw.http.listen = Some(format!("127.0.0.1:{port}"));
        // Hashrates from the first second of mining, not the tenth.
        raw.http.hashrate_sample_secs = Some(1.0);
        raw.policy.min_feerate = Some(MIN_FEERATE);
        let proxy = start_proxy(raw).await?;
        let shutdown = CancellationToken::new();
        let _miners = MINERS.spawn_each(proxy.local_addr(), &Dialect::ALL, &shutdown);

        let browser = Chromium::launch().await?;
        let mut page = browser.page().await?;
        let url = format!("http://127.0.0.1:{port}/");
        let checked = check_page(&mut page, &node, &url, cheap).await;
        if checked.is_err() {
            let _ = page.screenshot(&artifacts().join("failure.png")).await;
            eprintln!("chromium's log: {}", browser.log_tail());
        }
        shutdown.cancel();
        proxy.shutdown().await;
        checked
    })
    .await
}

/// Two transactions the policy lets through and one under its fee-rate floor (about 2.7
/// sat/vB); returns the cheap one's txid.
async fn fill_mempool(node: &BitcoinNode, wallet: &mut TestWallet) -> anyhow::Result<Txid> {
    wallet.send_self(node, Amount::from_sat(5_000)).await?;
    wallet.send_self(node, Amount::from_sat(6_000)).await?;
    wallet.send_self(node, Amount::from_sat(300)).await
}

async fn check_page(
    page: &mut Page,
    node: &BitcoinNode,
    url: &str,
    cheap: Txid,
) -> anyhow::Result<()> {
    page.set_viewport(1280, 800, false).await?;
    page.navigate(url).await?;
    let workers: HashSet<String> = Dialect::ALL.iter().map(|&d| MINERS.worker(d)).collect();
    let shown = wait_for(page, "every miner hashing", |s| {
        s.ok == "true"
            && workers.iter().all(|w| {
                s.rows
                    .iter()
                    .any(|r| &r.worker == w && r.hashrate > 0.0 && !r.text.starts_with("0 "))
            })
    })
    .await?;
    for r in &shown.rows {
        println!("row {}: {} ({} H/s)", r.worker, r.text, r.hashrate);
    }
    let cheap = cheap.to_string();
    wait_for(page, "the cheap transaction as excluded", |s| {
        s.excluded.contains(&cheap)
    })
    .await?;
    check_block_updates(page, node).await?;
    check_sorting(page).await?;
    check_health_rules(page).await?;
    check_same_origin_only(page, url).await?;
    ensure!(
        page.exceptions.is_empty(),
        "the page's scripts threw: {:?}",
        page.exceptions
    );
    screenshots(page).await
}

/// The node's height rises (the miners find blocks all the time on regtest); the page then lists
/// the new tip without being reloaded, with the node's verdict on it.
async fn check_block_updates(page: &mut Page, node: &BitcoinNode) -> anyhow::Result<()> {
    let before = read(page).await?;
    let seen: HashSet<String> = before.blocks.iter().map(|b| b.hash.clone()).collect();
    let loads_before = page_loads(page).await?;
    let (height, _) = node.tip().await?;
    node.wait_for_height(height + 1, PAGE_WAIT).await?;
    let (new_height, tip) = node.tip().await?;
    let tip = tip.to_string();
    let shown = wait_for(page, "the node's new tip, accepted", |s| {
        s.blocks
            .iter()
            .any(|b| b.hash == tip && b.verdicts.iter().any(|v| v == "accepted"))
    })
    .await?;
    let new: Vec<&str> = shown
        .blocks
        .iter()
        .map(|b| b.hash.as_str())
        .filter(|h| !seen.contains(*h))
        .collect();
    println!(
        "node {height} -> {new_height}: the page lists {} blocks, {} new, refreshed {} -> {} times",
        shown.blocks.len(),
        new.len(),
        before.refreshes,
        shown.refreshes
    );
    ensure!(
        shown.blocks.len() > before.blocks.len() || !new.is_empty(),
        "the blocks list grew"
    );
    ensure!(
        page_loads(page).await? == loads_before,
        "the page updated by itself, not by being loaded again"
    );
    Ok(())
}

/// When the document was loaded: a reload would change it.
async fn page_loads(page: &mut Page) -> anyhow::Result<f64> {
    page.eval("performance.timeOrigin").await
}

/// A click on the 5 min header orders the miners by hashrate, largest first.
async fn check_sorting(page: &mut Page) -> anyhow::Result<()> {
    let (sort, rates): (String, Vec<f64>) = page
        .eval(
            r##"(() => { document.querySelector("#asics th[data-sort=h5m]").click();
               return [document.querySelector("#asics th[data-sort=h5m]").getAttribute("aria-sort"),
                       [...document.querySelectorAll("#asics tbody tr")].map(r => +r.dataset.hashrate)]; })()"##,
        )
        .await?;
    ensure!(sort == "descending", "5 min header marked {sort}");
    ensure!(
        rates.windows(2).all(|w| w[0] >= w[1]),
        "rows by hashrate, largest first: {rates:?}"
    );
    Ok(())
}

/// The page's own rule for an ASIC that stopped sharing, on made-up ASICs: silent after 10 min
/// without a share, slow when the gap is ten times what its difficulty and hashrate predict.
async fn check_health_rules(page: &mut Page) -> anyhow::Result<()> {
    let states: Vec<String> = page
        .eval(
            r##"(() => {
              const now = 1e9, d = 1, rate = 2 ** 32;  // one share a second expected
              const a = (last, h1h) => ({ connected_at: now - 7200, difficulty: d,
                rates: { h5m: h1h, h1h }, totals: { last_share: last } });
              return [a(now - 5, rate), a(now - 601, rate), a(now - 120, rate), a(now - 30, rate),
                      a(now - 120, 0), a(0, 0)].map(x => asicHealth(x, now).state);
            })()"##,
        )
        .await?;
    ensure!(
        states == ["", "silent", "slow", "", "", "silent"],
        "health rules: {states:?}"
    );
    Ok(())
}

/// Everything the page loaded came from the proxy: its own two files and the API.
async fn check_same_origin_only(page: &mut Page, url: &str) -> anyhow::Result<()> {
    let loaded: Vec<String> = page
        .eval(r##"performance.getEntriesByType("resource").map(e => e.name)"##)
        .await?;
    ensure!(!loaded.is_empty(), "the page loaded its script and style");
    for name in &loaded {
        let path = name.strip_prefix(url).unwrap_or_default();
        ensure!(
            name.starts_with(url)
                && (path == "app.js" || path == "style.css" || path.starts_with("api/v1/")),
            "the page fetched {name}"
        );
    }
    Ok(())
}

/// Where this run's screenshots go.
fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots")
}

/// Whether this run replaces the README's screenshots.
fn update_docs() -> bool {
    std::env::var("JD_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1")
}

/// How long to mine before the docs' screenshots: the chart draws one point a minute.
fn docs_mining() -> Duration {
    if !update_docs() {
        return Duration::ZERO;
    }
    let secs = std::env::var("JD_SCREENSHOT_MINING_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    Duration::from_secs(secs)
}

/// The page at 1280×800, whole at 1280 wide, and on a phone (390×844), each after a refresh.
async fn screenshots(page: &mut Page) -> anyhow::Result<()> {
    let update = update_docs();
    tokio::time::sleep(docs_mining()).await;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    for (name, width, height, mobile) in [
        ("dashboard.png", 1280, 800, false),
        ("dashboard-full.png", 1280, 0, false),
        ("dashboard-phone.png", 390, 844, true),
    ] {
        page.set_viewport(width, 800, mobile).await?;
        let height = if height == 0 {
            page.eval("document.documentElement.scrollHeight").await?
        } else {
            height
        };
        page.set_viewport(width, height, mobile).await?;
        page.eval::<serde_json::Value>("window.scrollTo(0, 0)")
            .await?;
        let now = read(page).await?.refreshes;
        wait_for(page, "one more refresh", |s| s.refreshes > now).await?;
        let path = artifacts().join(name);
        page.screenshot(&path).await?;
        println!("screenshot {}", path.display());
        if update {
            std::fs::create_dir_all(&docs)?;
            std::fs::copy(&path, docs.join(name)).context("updating docs/screenshots")?;
        }
    }
    Ok(())
}
