//! The `[node]` section shared by jd-proxy and template-provider: how to reach the farm's node.
//! Read as written ([`RawNode`]), then checked once into [`NodeConfig`].

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bitcoin::Network;
use serde::Deserialize;

use crate::node::rpc::NodeAuth;
use crate::source::TemplateSourceConfig;
use crate::template::policy::{Policy, PolicyConfig};

/// A key with a bad value, named as in the file.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: &'static str,
    pub problem: String,
}

/// Builds a [`ConfigError`].
pub fn bad(key: &'static str, problem: impl ToString) -> ConfigError {
    ConfigError {
        key,
        problem: problem.to_string(),
    }
}

/// Reads a chain name as operators write it.
///
/// # Errors
/// Names no chain.
pub fn parse_network(name: &str) -> Result<Network, ConfigError> {
    match name {
        "mainnet" | "main" => Ok(Network::Bitcoin),
        other => Network::from_str(other).map_err(|_| {
            bad(
                "network",
                format!("{other:?} is not bitcoin, testnet, testnet4, signet or regtest"),
            )
        }),
    }
}

/// `[node]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub rpc_url: Option<String>,
    pub cookie_file: Option<PathBuf>,
    pub rpc_user: Option<String>,
    pub rpc_password: Option<String>,
    pub long_poll_secs: Option<u64>,
    pub poll_interval_ms: Option<u64>,
    pub template_refresh_secs: Option<u64>,
    pub zmq_hashblock: Option<String>,
    /// A same-tip template goes to miners only when fees in reach rose by this much (sats).
    pub fee_threshold_sat: Option<u64>,
    /// ... and not more often than this.
    pub min_template_interval_secs: Option<u64>,
    /// Where templates come from: `"rpc"` (getblocktemplate, the default) or `"ipc"` (Bitcoin
    /// Core 30+ `bitcoin-node -ipcbind=unix`; blocks are still submitted over RPC).
    pub backend: Option<String>,
    /// The node's IPC socket (`<datadir>/<chain>/node.sock`), required with `backend = "ipc"`.
    pub ipc_socket: Option<PathBuf>,
}

/// The node connection, checked.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub rpc_url: String,
    pub auth: NodeAuth,
    pub source: TemplateSourceConfig,
    /// Where templates come from; RPC stays in use for checks and block submission either way.
    pub backend: NodeBackend,
}

/// The template backend, `[node] backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeBackend {
    /// `getblocktemplate` long polling over JSON-RPC.
    Rpc,
    /// Bitcoin Core 30+ IPC (Cap'n Proto over a UNIX socket).
    Ipc(crate::node::ipc::IpcConfig),
}

/// Whole seconds above zero.
///
/// # Errors
/// Zero.
pub fn secs(v: Option<u64>, default: u64, key: &'static str) -> Result<Duration, ConfigError> {
    match v.unwrap_or(default) {
        0 => Err(bad(key, "must be above 0")),
        s => Ok(Duration::from_secs(s)),
    }
}

impl RawNode {
    /// Checks the section for `network`.
    ///
    /// # Errors
    /// The first bad value, with its key.
    pub fn resolve(self, network: Network) -> Result<NodeConfig, ConfigError> {
        self.resolve_with_policy(network, PolicyConfig::default())
    }

    /// Checks the section together with the farm's `[policy]`.
    ///
    /// # Errors
    /// The first bad value, with its key.
    pub fn resolve_with_policy(
        self,
        network: Network,
        policy: PolicyConfig,
    ) -> Result<NodeConfig, ConfigError> {
        let fee = policy.prioritise_fee_sat.unwrap_or(100_000_000);
        let prioritise = policy
            .prioritise_txids
            .iter()
            .map(|t| {
                t.parse::<bitcoin::Txid>()
                    .map(|t| (t, fee))
                    .map_err(|e| bad("policy.prioritise_txids", format!("{t:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let policy = Policy::try_from(policy).map_err(|e| bad("policy", e))?;
        let default_port = match network {
            Network::Bitcoin => 8332,
            Network::Testnet => 18332,
            Network::Testnet4 => 48332,
            Network::Signet => 38332,
            _ => 18443,
        };
        let rpc_url = self
            .rpc_url
            .unwrap_or_else(|| format!("http://127.0.0.1:{default_port}"));
        if !rpc_url.starts_with("http://") {
            return Err(bad(
                "node.rpc_url",
                "must start with http:// (the node serves plain HTTP)",
            ));
        }
        let auth = match (self.cookie_file, self.rpc_user, self.rpc_password) {
            (Some(_), Some(_), _) => {
                return Err(bad(
                    "node.cookie_file",
                    "give either cookie_file or rpc_user/rpc_password, not both",
                ))
            }
            (Some(path), None, _) => NodeAuth::CookieFile(path),
            (None, Some(user), Some(password)) => NodeAuth::UserPass { user, password },
            (None, Some(_), None) => {
                return Err(bad("node.rpc_password", "rpc_user needs rpc_password"))
            }
            (None, None, _) => NodeAuth::CookieFile(default_cookie(network)),
        };
        let zmq_hashblock = match self.zmq_hashblock {
            Some(e) if !e.starts_with("tcp://") => {
                return Err(bad(
                    "node.zmq_hashblock",
                    format!("{e:?}: expected tcp://HOST:PORT as in the node's -zmqpubhashblock"),
                ))
            }
            other => other,
        };
        let source = TemplateSourceConfig {
            network,
            long_poll: secs(self.long_poll_secs, 20, "node.long_poll_secs")?,
            poll_interval: Duration::from_millis(self.poll_interval_ms.unwrap_or(500).max(10)),
            refresh_interval: secs(self.template_refresh_secs, 30, "node.template_refresh_secs")?,
            zmq_hashblock,
            policy,
            prioritise,
            updates: crate::source::UpdatePolicy {
                fee_threshold: bitcoin::Amount::from_sat(self.fee_threshold_sat.unwrap_or(1_000)),
                min_interval: Duration::from_secs(self.min_template_interval_secs.unwrap_or(5)),
            },
        };
        let backend = match (self.backend.as_deref().unwrap_or("rpc"), self.ipc_socket) {
            ("rpc", None) => NodeBackend::Rpc,
            ("rpc", Some(_)) => return Err(bad("node.ipc_socket", "is set but node.backend is \"rpc\"; set backend = \"ipc\" to take templates over IPC")),
            ("ipc", None) => {
                return Err(bad("node.ipc_socket", "required with backend = \"ipc\": the node's -ipcbind=unix socket, <datadir>/<chain>/node.sock"))
            }
            ("ipc", Some(socket)) => {
                let min_interval = self.min_template_interval_secs.unwrap_or(5);
                if min_interval > 255 {
                    return Err(bad("node.min_template_interval_secs", "at most 255 with backend = \"ipc\""));
                }
                NodeBackend::Ipc(crate::node::ipc::IpcConfig {
                    socket,
                    network,
                    fee_threshold_sat: self.fee_threshold_sat.unwrap_or(1_000),
                    min_interval: Duration::from_secs(min_interval),
                })
            }
            (other, _) => return Err(bad("node.backend", format!("{other:?}: expected \"rpc\" or \"ipc\""))),
        };
        Ok(NodeConfig {
            rpc_url,
            auth,
            source,
            backend,
        })
    }
}

/// Bitcoin Core's cookie path in the default data directory.
fn default_cookie(network: Network) -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let base = home.join(".bitcoin");
    match network {
        Network::Bitcoin => base.join(".cookie"),
        Network::Testnet => base.join("testnet3/.cookie"),
        Network::Testnet4 => base.join("testnet4/.cookie"),
        Network::Signet => base.join("signet/.cookie"),
        _ => base.join("regtest/.cookie"),
    }
}
