//! Our template provider, started in-process against a test node.

use std::path::Path;

use jd_proxy::config::raw::RawTemplateProvider;
use sv2_wire::{AuthorityKeypair, AuthorityPublicKey};
use template_provider::config::RawNode;
use template_provider::server::{Provider, ProviderConfig, RawHttp, RawProviderConfig, RawServer};

use crate::node::BitcoinNode;

/// A provider config for a regtest node over RPC: listens on a free loopback port, signs with
/// `keys`, writes the blocks it submits to `blocks_dir`, and filters nothing.
pub fn provider_config(
    node: &BitcoinNode,
    keys: &AuthorityKeypair,
    blocks_dir: &Path,
) -> RawProviderConfig {
    RawProviderConfig {
        network: Some("regtest".into()),
        node: RawNode {
            rpc_url: Some(node.rpc_url()),
            cookie_file: Some(node.cookie_file()),
            long_poll_secs: Some(5),
            ..Default::default()
        },
        server: RawServer {
            listen: Some("127.0.0.1:0".into()),
            authority_public_key: Some(keys.public().to_string()),
            authority_secret_key: Some(keys.secret_string()),
            blocks_dir: Some(blocks_dir.to_path_buf()),
            ..Default::default()
        },
        policy: Default::default(),
        // A free port: tests run side by side.
        http: RawHttp {
            listen: Some("127.0.0.1:0".into()),
        },
    }
}

/// [`provider_config`] on the node's IPC mining interface instead (a
/// [`crate::node::NodeKind::BitcoinNodeIpc`] node): a new template for 1,000 sat more in fees,
/// at most one a second.
pub fn ipc_provider_config(
    node: &BitcoinNode,
    keys: &AuthorityKeypair,
    blocks_dir: &Path,
) -> RawProviderConfig {
    let mut raw = provider_config(node, keys, blocks_dir);
    raw.node = RawNode {
        rpc_url: Some(node.rpc_url()),
        cookie_file: Some(node.cookie_file()),
        backend: Some("ipc".into()),
        ipc_socket: node.ipc_socket(),
        fee_threshold_sat: Some(1_000),
        min_template_interval_secs: Some(1),
        ..Default::default()
    };
    raw
}

/// Validates `raw` and starts the provider.
///
/// # Errors
/// A bad config or a failed start.
pub async fn start_provider(raw: RawProviderConfig) -> anyhow::Result<Provider> {
    Provider::start(ProviderConfig::from_raw(raw)?).await
}

/// jd-proxy's `[template_provider]` for `provider`, pinning `key`.
pub fn provider_link(provider: &Provider, key: AuthorityPublicKey) -> RawTemplateProvider {
    RawTemplateProvider {
        address: Some(provider.local_addr().to_string()),
        authority_public_key: Some(key.to_string()),
    }
}
