//! The share ledger on real processes: the reference pool (`pool_sv2` with its JDS) or a
//! regtest Bitcoin Core, jd-proxy in-process, CPU miners of real dialects, and for the shared
//! ledger a real PostgreSQL (Debian's `postgresql`, started in a temp dir on a free port).
//!
//! Every test stops its miners, waits until the proxy's own per-worker totals
//! (`board().workers()`) stop moving, then waits until the ledger holds exactly those sums.

#[path = "ledger/books.rs"]
mod books;

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use integration_tests::node::{BitcoinNode, NodeKind};
use integration_tests::support::binary::{our_binary, solo_toml};
use integration_tests::support::farm::{
    farm, is_pool, pool_accepted_workers, wait_mode, MINERS as POOL_MINERS,
};
use integration_tests::support::postgres::Postgres;
use integration_tests::support::{
    init_tracing, solo_config, start_proxy, wait_until, with_timeout, MinerSpec,
};
use integration_tests::wallet::TestWallet;
use jd_proxy::config::raw::RawConfig;
use jd_proxy::ledger::config::RawCustomer;
use jd_proxy::share::Reject;
use jd_proxy::Proxy;
use ledger::{Ledger, LedgerUrl, Period};
use sv1_miner::{Dialect, MinerHandle};
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(170);
/// About a share a second per miner at this rate; on regtest every share is a block.
const MINERS: MinerSpec = MinerSpec {
    worker_prefix: "farm",
    difficulty: 5e-6,
    hashrate: 25_000.0,
};
const ALICE: &str = "[[customer]]\nname = \"alice\"\nworkers = [\"farm.cg*\"]\n";

fn alice() -> RawCustomer {
    RawCustomer {
        name: Some("alice".into()),
        workers: vec!["farm.cg*".into()],
    }
}

/// Outcome 1: several ASICs mine through jd-proxy for the reference pool. The ledger's sums per
/// worker equal the proxy's accepted work, the pool's acknowledgements are recorded beside
/// them, each worker carries its customer, and the CLI reads the same books.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_holds_the_proxys_accepted_work_and_the_pools_acks() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let f = farm().await?;
        let mut raw = f.proxy_config(f.pool().authority_public_key());
        raw.ledger.bucket_secs = Some(1);
        raw.ledger.gateway = Some("gw-pool".into());
        raw.customer.push(alice());
        let proxy = start_proxy(raw).await?;
        let url = proxy
            .ledger()
            .context("the ledger is on by default")?
            .url
            .clone();
        assert!(
            matches!(url, LedgerUrl::Sqlite(_)),
            "SQLite by default: {url}"
        );
        wait_mode(&proxy, is_pool, Duration::from_secs(20)).await?;
        let stop = CancellationToken::new();
        let dialects = [Dialect::Cgminer, Dialect::Bitaxe, Dialect::Whatsminer];
        let miners = f.miners(&proxy, &dialects, &stop);
        let workers: HashSet<String> = dialects.iter().map(|&d| POOL_MINERS.worker(d)).collect();
        let accepted = wait_until(Duration::from_secs(110), || async {
            let each = miners
                .iter()
                .all(|m| m.stats.snapshot().shares_accepted >= 3);
            each && workers.is_subset(&pool_accepted_workers(&proxy))
        })
        .await;
        assert!(
            accepted,
            "the pool accepted every ASIC's shares: {:?}",
            proxy.pool_workers()
        );
        stop.cancel();

        let want = books::settled(&proxy).await;
        assert_eq!(want.len(), dialects.len(), "{want:?}");
        let ledger = Ledger::open(&url).await?;
        books::wait_written(&ledger, Some("gw-pool"), &want, Duration::from_secs(15)).await?;
        pool_acks_beside_the_work(&proxy, &ledger).await?;
        customers_and_chain(&ledger).await?;
        let found = proxy
            .board()
            .events
            .since(0)
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    jd_proxy::figures::events::EventKind::BlockFound { .. }
                )
            })
            .count();
        assert_eq!(
            ledger.blocks(Period::ALL).await?.len(),
            found,
            "every block the board saw"
        );
        cli_reads_the_same_books(&f.node, f.solo.address(), &url, &want)?;
        let api = format!("http://{}", proxy.http_addr().context("the API listens")?);
        the_api_serves_the_reports(&api, &want).await?;
        eprintln!(
            "ledger: {want:?}, status {:?}",
            proxy.ledger().map(|l| l.status.snapshot())
        );
        proxy.shutdown().await;
        Ok(())
    })
    .await
}

/// The pool's acknowledgements in the ledger equal what the proxy counted of them, per pool.
/// (`pool_sv2` 0.7.0 sends `new_shares_sum` as its channel difficulties summed and truncated to
/// an integer: 0 at regtest's sub-1 difficulties, and the ledger records what it sends.)
async fn pool_acks_beside_the_work(proxy: &Proxy, ledger: &Ledger) -> anyhow::Result<()> {
    let sums = || async {
        let acks = ledger.acks(Period::ALL).await.unwrap_or_default();
        let accepted: i64 = acks.iter().map(|a| a.accepted).sum();
        let refused: i64 = acks.iter().map(|a| a.refused).sum();
        let shares_sum: i64 = acks.iter().map(|a| a.shares_sum).sum();
        let pools: HashSet<String> = acks.into_iter().map(|a| a.pool).collect();
        (accepted, refused, shares_sum, pools)
    };
    let proxy_counts = || {
        let s = proxy.stats();
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        (
            n(s.pool_accepted),
            n(s.pool_rejected),
            n(s.pool_work_acknowledged),
        )
    };
    let matches = wait_until(Duration::from_secs(10), || async {
        let (accepted, refused, shares_sum, _) = sums().await;
        (accepted, refused, shares_sum) == proxy_counts()
    })
    .await;
    let (accepted, refused, shares_sum, pools) = sums().await;
    assert!(
        matches,
        "ledger acks {accepted} accepted ({shares_sum} work), {refused} refused; the proxy counted {:?}",
        proxy_counts()
    );
    assert!(accepted >= 3, "{accepted}");
    assert_eq!(pools, HashSet::from(["reference-pool".to_owned()]));
    Ok(())
}

/// Each worker's customer is recorded with its work, and the chain's figures of the time.
async fn customers_and_chain(ledger: &Ledger) -> anyhow::Result<()> {
    for r in ledger.work(Period::ALL).await? {
        let want = if r.worker.starts_with("farm.cg") {
            "alice"
        } else {
            "farm"
        };
        assert_eq!(r.customer.as_deref(), Some(want), "{r:?}");
    }
    let chain = ledger.chain(Period::ALL).await?;
    assert!(!chain.is_empty());
    for c in &chain {
        assert!(c.network_difficulty > 0.0 && c.height > 100, "{c:?}");
        // Regtest halves every 150 blocks.
        assert_eq!(c.subsidy_sat, 5_000_000_000 >> (c.height / 150), "{c:?}");
    }
    Ok(())
}

/// `jd-proxy ledger report --format csv`: one line per worker, the proxy's share counts.
fn cli_reads_the_same_books(
    node: &BitcoinNode,
    payout: &bitcoin::Address,
    url: &LedgerUrl,
    want: &books::Books,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("jd-proxy.toml");
    std::fs::write(&config, solo_toml(node, payout, "127.0.0.1:0", "", ALICE))?;
    let out = std::process::Command::new(our_binary("jd-proxy")?)
        .args(["ledger", "report", "--config"])
        .arg(&config)
        .args([
            "--url",
            &url.to_string(),
            "--from",
            "2020-01-01",
            "--format",
            "csv",
            "--by",
            "worker",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("worker,customer,shares,work,rejects"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), want.len(), "{text}");
    for r in rows {
        let (shares, _) = want
            .get(r[0])
            .with_context(|| format!("unknown worker in {text}"))?;
        assert_eq!(r[2], shares.to_string(), "{text}");
    }
    Ok(())
}

/// `/api/v1/ledger/...`: the books by customer, a split that adds up to the satoshi, an
/// audit and the variance, from the same ledger.
async fn the_api_serves_the_reports(api: &str, want: &books::Books) -> anyhow::Result<()> {
    let get = |path: String| async move {
        let r = reqwest::get(format!("{api}/api/v1/ledger/{path}")).await?;
        let status = r.status();
        let body = r.text().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
        anyhow::Ok(body)
    };
    let period = "from=2020-01-01";
    let by_customer = get(format!("report?{period}&format=csv&by=customer")).await?;
    let alice = want.get("farm.cgminer").map_or(0, |(s, _)| *s);
    let line = by_customer
        .lines()
        .find(|l| l.starts_with("alice,"))
        .context("alice")?;
    assert_eq!(
        line.split(',').nth(2),
        Some(alice.to_string().as_str()),
        "{by_customer}"
    );
    let split: serde_json::Value = serde_json::from_str(
        &get(format!("split?{period}&amount=0.001&hosting_fee_bps=500")).await?,
    )?;
    let parts: u64 = split["rows"]
        .as_array()
        .context("rows")?
        .iter()
        .filter_map(|r| r["amount_sat"].as_u64())
        .sum();
    assert_eq!(
        parts + split["hosting_fee_sat"].as_u64().unwrap_or(0),
        100_000,
        "{split}"
    );
    let audit: serde_json::Value = serde_json::from_str(
        &get(format!("audit?{period}&model=fpps&fee_bps=200&paid=0.0001")).await?,
    )?;
    assert!(
        audit["expected"]["total_sat"].as_u64().unwrap_or(0) > 0,
        "{audit}"
    );
    let variance: serde_json::Value =
        serde_json::from_str(&get(format!("variance?{period}")).await?)?;
    assert_eq!(variance["measured"], true, "{variance}");
    let r = reqwest::get(format!("{api}/api/v1/ledger/split?amount=1")).await?;
    assert_eq!(r.status(), 400, "a bare whole amount is refused");
    Ok(())
}

/// A regtest node out of initial block download.
async fn node() -> anyhow::Result<BitcoinNode> {
    let node = BitcoinNode::start(NodeKind::Bitcoind).await?;
    node.mine_to(1, TestWallet::new().address()).await?;
    Ok(node)
}

/// A solo gateway writing to `url` as `gateway`, with its blocks and spool in `dir`.
fn gateway(node: &BitcoinNode, dir: &std::path::Path, gateway: &str, url: &str) -> RawConfig {
    let mut raw = solo_config(node, TestWallet::new().address(), &dir.join(gateway));
    raw.ledger.url = Some(url.to_owned());
    raw.ledger.gateway = Some(gateway.to_owned());
    raw.ledger.bucket_secs = Some(1);
    raw.ledger.spool_file = Some(dir.join(format!("{gateway}-spool.jsonl")));
    raw
}

/// Waits until every miner has `n` shares accepted.
async fn shares_from_all(miners: &[MinerHandle], n: u64) -> bool {
    wait_until(Duration::from_secs(60), || async {
        miners
            .iter()
            .all(|m| m.stats.snapshot().shares_accepted >= n)
    })
    .await
}

/// Outcome 2: two gateways write one PostgreSQL ledger. Each gateway's rows equal its own
/// accepted work, and the ledger's totals per worker are the two proxies' added up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_write_one_postgres_ledger_and_the_totals_add_up() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let pg = Postgres::start()?;
        let node = node().await?;
        let dir = tempfile::tempdir()?;
        let a = start_proxy(gateway(&node, dir.path(), "gw-a", &pg.url())).await?;
        let b = start_proxy(gateway(&node, dir.path(), "gw-b", &pg.url())).await?;
        let stop = CancellationToken::new();
        // The same worker names on both gateways: their work adds up in the ledger.
        let mut miners =
            MINERS.spawn_each(a.local_addr(), &[Dialect::Cgminer, Dialect::Bitaxe], &stop);
        miners.extend(MINERS.spawn_each(
            b.local_addr(),
            &[Dialect::Cgminer, Dialect::Whatsminer],
            &stop,
        ));
        assert!(
            shares_from_all(&miners, 3).await,
            "every miner got shares accepted"
        );
        stop.cancel();
        let (want_a, want_b) = (books::settled(&a).await, books::settled(&b).await);
        let ledger = Ledger::open(&pg.url().parse()?).await?;
        books::wait_written(&ledger, Some("gw-a"), &want_a, Duration::from_secs(15)).await?;
        books::wait_written(&ledger, Some("gw-b"), &want_b, Duration::from_secs(15)).await?;
        let mut both = want_a.clone();
        for (w, (s, x)) in &want_b {
            let e = both.entry(w.clone()).or_default();
            (e.0, e.1) = (e.0 + s, e.1 + x);
        }
        books::wait_written(&ledger, None, &both, Duration::from_secs(5)).await?;
        assert_eq!(
            both.len(),
            3,
            "farm.cgminer mined on both gateways: {both:?}"
        );
        eprintln!("gw-a {want_a:?}\ngw-b {want_b:?}\nledger {both:?}");
        a.shutdown().await;
        b.shutdown().await;
        Ok(())
    })
    .await
}

/// Outcome 3: the database is stopped for 30 s while shares flow. The ASICs notice nothing;
/// rows wait in the spool; once the database is back on the same port and data directory,
/// nothing is missing and nothing is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_without_the_database_lose_nothing() -> anyhow::Result<()> {
    init_tracing();
    with_timeout(TEST_TIMEOUT, async {
        let mut pg = Postgres::start()?;
        let node = node().await?;
        let dir = tempfile::tempdir()?;
        let proxy = start_proxy(gateway(&node, dir.path(), "gw-out", &pg.url())).await?;
        let status = proxy.ledger().context("ledger on")?.status.clone();
        let stop = CancellationToken::new();
        let miners = MINERS.spawn_each(proxy.local_addr(), &[Dialect::Cgminer, Dialect::Braiins], &stop);
        assert!(shares_from_all(&miners, 2).await);
        assert!(wait_until(Duration::from_secs(10), || async { status.snapshot().written >= 2 }).await);

        pg.stop()?;
        let before = proxy.stats().accepted;
        tokio::time::sleep(Duration::from_secs(30)).await;
        let during = proxy.stats().accepted - before;
        let s = status.snapshot();
        assert!(during >= 10, "shares kept flowing while the database was down: {during}");
        assert!(s.spooled >= 20 && !s.connected, "rows went to the spool: {s:?}");
        pg.start_again()?;
        let most = miners.iter().map(|m| m.stats.snapshot().shares_accepted).max().unwrap_or(0);
        assert!(shares_from_all(&miners, most + 2).await, "mining goes on after the outage");
        stop.cancel();

        let want = books::settled(&proxy).await;
        let ledger = Ledger::open(&pg.url().parse()?).await?;
        books::wait_written(&ledger, Some("gw-out"), &want, Duration::from_secs(30)).await?;
        let s = status.snapshot();
        assert_eq!((s.spooled_now, s.replayed, s.lost), (0, s.spooled, 0), "{s:?}");
        let p = proxy.stats();
        assert_eq!(p.connections_total, miners.len() as u64, "no ASIC reconnected: {p:?}");
        // On regtest every share is a block, so a share can race a new tip and be stale: that
        // is the chain's doing. Any other refusal would be the outage's.
        let stale = p.rejected_for(Reject::StaleJob);
        let refused: u64 = miners.iter().map(|m| m.stats.snapshot().shares_rejected).sum();
        assert_eq!(refused, stale, "only stale shares refused: {:?}", p.rejected);
        eprintln!("outage: {during} shares during 30 s down, {} batches spooled and replayed; ledger {want:?}", s.spooled);
        proxy.shutdown().await;
        Ok(())
    })
    .await
}
