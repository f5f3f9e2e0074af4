//! Running jd-proxy in-process against a test node, and small waiting helpers.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use jd_proxy::config::raw::RawConfig;
use jd_proxy::config::Config;
use jd_proxy::Proxy;

use crate::node::BitcoinNode;

/// A solo-mode config for a regtest node: listens on a free loopback port, pays `payout`,
/// and starts miners at a difficulty a throttled CPU miner meets about once a second.
pub fn solo_config(node: &BitcoinNode, payout: &bitcoin::Address, blocks_dir: &Path) -> RawConfig {
    let mut raw = RawConfig {
        network: Some("regtest".into()),
        ..Default::default()
    };
    raw.node.rpc_url = Some(node.rpc_url());
    raw.node.cookie_file = Some(node.cookie_file());
    raw.node.long_poll_secs = Some(5);
    raw.coinbase.payout_address = Some(payout.to_string());
    raw.coinbase.tag = Some("/jd-proxy-test/".into());
    raw.stratum.listen = Some("127.0.0.1:0".into());
    raw.vardiff.initial_difficulty = Some(5e-6);
    raw.vardiff.min_difficulty = Some(1e-12);
    raw.vardiff.target_share_secs = Some(1.0);
    raw.vardiff.retarget_secs = Some(5.0);
    raw.solo.blocks_dir = Some(blocks_dir.to_path_buf());
    raw
}

/// Validates `raw` and starts the proxy.
///
/// # Errors
/// A bad config or a failed start.
pub async fn start_proxy(raw: RawConfig) -> anyhow::Result<Proxy> {
    let config = Config::from_raw(raw)?;
    Proxy::start(config).await
}

/// Logs to the test's captured output; once per process.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The blocks above `from` on the node's active chain.
///
/// # Errors
/// An RPC failure.
pub async fn blocks_above(node: &BitcoinNode, from: u64) -> anyhow::Result<Vec<bitcoin::Block>> {
    let (tip, _) = node.tip().await?;
    let mut out = Vec::new();
    for h in from + 1..=tip {
        let hash: bitcoin::BlockHash = node.rpc_as("getblockhash", serde_json::json!([h])).await?;
        out.push(node.block(&hash).await?);
    }
    Ok(out)
}

/// Runs `f` under `timeout`, failing the test when it runs over.
///
/// # Errors
/// `f`'s error, or the timeout.
pub async fn with_timeout<F: Future<Output = anyhow::Result<()>>>(
    timeout: Duration,
    f: F,
) -> anyhow::Result<()> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| anyhow::anyhow!("test timed out after {timeout:?}"))?
}
