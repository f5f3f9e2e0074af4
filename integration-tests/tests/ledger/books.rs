//! The ledger tests' checks: the proxy's own per-worker totals against the ledger's sums.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::support::wait_until;
use jd_proxy::Proxy;
use ledger::{Ledger, Period};

/// Shares and work per worker.
pub type Books = BTreeMap<String, (i64, f64)>;

/// What the proxy accepted, per worker (`board().workers()`).
pub fn board(proxy: &Proxy) -> Books {
    proxy
        .board()
        .workers()
        .into_iter()
        .filter(|w| w.totals.accepted > 0)
        .map(|w| {
            let shares = i64::try_from(w.totals.accepted).unwrap_or(i64::MAX);
            (w.worker.to_string(), (shares, w.totals.work))
        })
        .collect()
}

/// What the ledger holds per worker, for one gateway or all.
pub async fn ledger(l: &Ledger, gateway: Option<&str>) -> anyhow::Result<Books> {
    let mut books = Books::new();
    for r in l.work(Period::ALL).await? {
        if gateway.is_some_and(|g| g != r.gateway) {
            continue;
        }
        let e = books.entry(r.worker).or_default();
        e.0 += r.shares;
        e.1 += r.work;
    }
    Ok(books)
}

/// Equal: the same workers, the same share counts, and work equal but for the rounding of
/// summing floats in another order (the ledger sums per-bucket deltas).
pub fn same(a: &Books, b: &Books) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((wa, (sa, xa)), (wb, (sb, xb)))| {
            wa == wb && sa == sb && (xa - xb).abs() <= 1e-9 * xa.abs().max(xb.abs())
        })
}

/// Waits until the proxy's totals stop moving (its miners are stopped), and returns them.
pub async fn settled(proxy: &Proxy) -> Books {
    let mut last = board(proxy);
    loop {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let now = board(proxy);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Waits until the ledger's sums for `gateway` equal `want`.
///
/// # Errors
/// They still differ after `timeout`, with both shown.
pub async fn wait_written(
    l: &Ledger,
    gateway: Option<&str>,
    want: &Books,
    timeout: Duration,
) -> anyhow::Result<()> {
    let ok = wait_until(timeout, || async {
        ledger(l, gateway).await.is_ok_and(|got| same(&got, want))
    })
    .await;
    if !ok {
        let got = ledger(l, gateway).await?;
        anyhow::bail!("the ledger ({gateway:?}) holds {got:?}, the proxy accepted {want:?}");
    }
    Ok(())
}
