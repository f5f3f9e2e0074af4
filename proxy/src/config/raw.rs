//! The TOML file as written: every key optional where a default makes sense, unknown keys
//! refused so a typo never goes unnoticed. `examples/jd-proxy.toml` shows every key.

use std::path::PathBuf;

use serde::Deserialize;
pub use template_provider::config::RawNode;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// bitcoin, testnet, testnet4, signet or regtest.
    pub network: Option<String>,
    #[serde(default)]
    pub node: RawNode,
    #[serde(default)]
    pub coinbase: RawCoinbase,
    #[serde(default)]
    pub stratum: RawStratum,
    #[serde(default)]
    pub vardiff: RawVardiff,
    #[serde(default)]
    pub solo: RawSolo,
    /// The farm's transaction policy.
    #[serde(default)]
    pub policy: template_provider::template::policy::PolicyConfig,
    /// An external SV2 Template Provider instead of the node's RPC.
    pub template_provider: Option<RawTemplateProvider>,
    /// Pools, most preferred first. None: solo mining.
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    /// How upstreams are watched and left.
    #[serde(default)]
    pub failover: RawFailover,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Option<String>,
    pub pool_address: Option<String>,
    pub pool_authority_public_key: Option<String>,
    pub jds_address: Option<String>,
    pub jds_authority_public_key: Option<String>,
    /// "full-template" or "coinbase-only".
    pub declaration: Option<String>,
    pub user_identity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    pub connect_timeout_secs: Option<u64>,
    pub response_timeout_secs: Option<u64>,
    pub retry_preferred_secs: Option<u64>,
    pub hashrate_report_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplateProvider {
    pub address: Option<String>,
    pub authority_public_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCoinbase {
    pub payout_address: Option<String>,
    pub payout_descriptor: Option<String>,
    pub tag: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStratum {
    pub listen: Option<String>,
    pub max_connections: Option<usize>,
    pub max_line_bytes: Option<usize>,
    pub first_message_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub write_timeout_secs: Option<u64>,
    pub extranonce1_bytes: Option<u8>,
    pub extranonce2_bytes: Option<u8>,
    pub version_rolling_mask: Option<String>,
    pub max_ntime_future_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVardiff {
    pub initial_difficulty: Option<f64>,
    pub min_difficulty: Option<f64>,
    pub max_difficulty: Option<f64>,
    pub target_share_secs: Option<f64>,
    pub retarget_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSolo {
    pub blocks_dir: Option<PathBuf>,
}
