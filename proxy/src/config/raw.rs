//! The TOML file as written: every key optional where a default makes sense, unknown keys
//! refused so a typo never goes unnoticed. `examples/jd-proxy.toml` shows every key.

use std::path::PathBuf;

use serde::Deserialize;
pub use template_provider::config::{RawNode, RawNodes};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// bitcoin, testnet, testnet4, signet or regtest.
    pub network: Option<String>,
    /// `[node]`, or `[[node]]`: the farm's node, or its nodes in order of preference.
    #[serde(default)]
    pub node: RawNodes,
    /// `[coinbase]`: payout and tag.
    #[serde(default)]
    pub coinbase: RawCoinbase,
    /// `[stratum]`: the miner-facing server.
    #[serde(default)]
    pub stratum: RawStratum,
    /// `[vardiff]`: per-connection difficulty.
    #[serde(default)]
    pub vardiff: RawVardiff,
    /// `[solo]`: found blocks.
    #[serde(default)]
    pub solo: RawSolo,
    /// The farm's transaction policy.
    #[serde(default)]
    pub policy: template_provider::policy::PolicyConfig,
    /// An external SV2 Template Provider instead of the node's RPC.
    pub template_provider: Option<RawTemplateProvider>,
    /// Pools, most preferred first. None: solo mining.
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    /// How upstreams are watched and left.
    #[serde(default)]
    pub failover: RawFailover,
    /// `[upgrade]`: handing over to a newer version.
    #[serde(default)]
    pub upgrade: RawUpgrade,
    /// `[http]`: the operators' API, `/metrics` and dashboard.
    #[serde(default)]
    pub http: RawHttp,
    /// `[ledger]`: the share ledger.
    #[serde(default)]
    pub ledger: crate::ledger::config::RawLedger,
    /// `[[customer]]`: hosting customers and their workers, by name pattern.
    #[serde(default)]
    pub customer: Vec<crate::ledger::config::RawCustomer>,
    /// `[[route]]`: which ASICs mine for which upstreams. None: one route over every upstream.
    #[serde(default)]
    pub route: Vec<super::route::RawRoute>,
    /// `[routing]`: how the weighted split is kept.
    #[serde(default)]
    pub routing: super::route::RawRouting,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Where the API, `/metrics` and the dashboard listen; `""` turns the server off.
    pub listen: Option<String>,
    /// Workers with series of their own in `/metrics`.
    pub max_metric_workers: Option<usize>,
    /// How often work is turned into hashrates, seconds.
    pub hashrate_sample_secs: Option<f64>,
}

/// `[upgrade]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpgrade {
    /// A unix socket where a newer version asks for the listening socket; none: no handover.
    pub handover_socket: Option<PathBuf>,
}

/// One `[[upstream]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// For logs.
    pub name: Option<String>,
    /// The pool's SV2 mining address, `host:port`.
    pub pool_address: Option<String>,
    /// The pool's published authority key.
    pub pool_authority_public_key: Option<String>,
    /// The pool's Job Declaration Server, `host:port`; none: the pool's own jobs are mined.
    pub jds_address: Option<String>,
    /// The JDS's authority key, when not the pool's.
    pub jds_authority_public_key: Option<String>,
    /// "full-template" or "coinbase-only".
    pub declaration: Option<String>,
    /// The account shares are credited to.
    pub user_identity: Option<String>,
}

/// `[failover]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    /// TCP connect plus Noise handshake.
    pub connect_timeout_secs: Option<u64>,
    /// Any answer waited for.
    pub response_timeout_secs: Option<u64>,
    /// How often more preferred upstreams are tried again.
    pub retry_preferred_secs: Option<u64>,
    /// How often the farm's hashrate is reported to the pool.
    pub hashrate_report_secs: Option<u64>,
}

/// `[template_provider]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplateProvider {
    /// `host:port`.
    pub address: Option<String>,
    /// Its published authority key.
    pub authority_public_key: Option<String>,
}

/// `[coinbase]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCoinbase {
    /// Where solo block rewards go.
    pub payout_address: Option<String>,
    /// Or a single-output descriptor the node resolves.
    pub payout_descriptor: Option<String>,
    /// Written into every coinbase scriptSig.
    pub tag: Option<String>,
}

/// `[stratum]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStratum {
    /// Where ASICs connect.
    pub listen: Option<String>,
    /// Connections beyond this are refused.
    pub max_connections: Option<usize>,
    /// A longer line cuts the connection off.
    pub max_line_bytes: Option<usize>,
    /// A new connection must speak within this time.
    pub first_message_timeout_secs: Option<u64>,
    /// ... and subscribe and authorize within this time.
    pub handshake_timeout_secs: Option<u64>,
    /// Requests a connection may send per second; a flood beyond it is cut off.
    pub max_requests_per_sec: Option<u32>,
    /// A silent miner is cut off after this time.
    pub idle_timeout_secs: Option<u64>,
    /// A miner that does not read is cut off after this time.
    pub write_timeout_secs: Option<u64>,
    /// The wait `client.reconnect` asks of miners when the proxy stops (seconds).
    pub reconnect_wait_secs: Option<u64>,
    /// Only these networks may connect (`10.0.0.0/8`, or addresses); empty: any.
    #[serde(default)]
    pub allow_networks: Vec<String>,
    /// Connections one source address may hold; 0: no cap.
    pub max_connections_per_ip: Option<usize>,
    /// Addresses exempt from that cap: NAT gateways with many ASICs behind them.
    #[serde(default)]
    pub per_ip_exempt: Vec<String>,
    /// The per-connection part of the extranonce, 1..=8 bytes.
    pub extranonce1_bytes: Option<u8>,
    /// The part miners roll, 1..=8 bytes.
    pub extranonce2_bytes: Option<u8>,
    /// The version bits miners may roll, hex.
    pub version_rolling_mask: Option<String>,
    /// How far ahead of this box's clock a share's ntime may be.
    pub max_ntime_future_secs: Option<u64>,
}

/// `[vardiff]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVardiff {
    /// The difficulty a connection starts at.
    pub initial_difficulty: Option<f64>,
    /// The lowest difficulty for every connection.
    pub min_difficulty: Option<f64>,
    /// The highest.
    pub max_difficulty: Option<f64>,
    /// The share interval each miner is aimed at.
    pub target_share_secs: Option<f64>,
    /// How often each miner's rate is re-estimated.
    pub retarget_secs: Option<f64>,
}

/// `[solo]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSolo {
    /// Where found blocks are written before they are submitted.
    pub blocks_dir: Option<PathBuf>,
}
