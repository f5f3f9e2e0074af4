//! Running jd-proxy in-process against a test node.

use std::path::Path;

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
    // The ledger beside the blocks, not in the temp dir's parent that every test shares.
    raw.ledger.url = Some(format!(
        "sqlite://{}",
        blocks_dir.join("ledger.sqlite3").display()
    ));
    // A free port for the API and /metrics: tests run side by side.
    raw.http.listen = Some("127.0.0.1:0".into());
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
