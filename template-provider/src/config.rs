//! The `[node]` section shared by jd-proxy and template-provider: how to reach the farm's node.
//! Read as written ([`RawNode`]), then checked once into [`NodeConfig`].

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bitcoin::Network;
use serde::Deserialize;

use crate::node::rpc::NodeAuth;
use crate::policy::{Policy, PolicyConfig};
use crate::source::TemplateSourceConfig;

/// A key with a bad value, named as in the file.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    /// The key, as named in the file (`node.rpc_url`).
    pub key: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

/// Every bad key of a config file, so the operator fixes them all in one go rather than one
/// per start.
#[derive(Debug, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl ConfigErrors {
    /// The value of `r`, or `None` with its error recorded.
    pub fn take<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    /// The value of `r`, or `None` with all its errors recorded.
    pub fn take_all<T>(&mut self, r: Result<T, ConfigErrors>) -> Option<T> {
        r.map_err(|e| self.0.extend(e.0)).ok()
    }

    /// Records an error.
    pub fn push(&mut self, e: ConfigError) {
        self.0.push(e);
    }

    /// Whether no error was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Builds a [`ConfigError`].
#[expect(
    clippy::needless_pass_by_value,
    reason = "callers hand over temporaries (`format!`, errors); a reference would put a `&` at every call site"
)]
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
    /// A name for logs and the block journal; the RPC URL when absent.
    pub name: Option<String>,
    /// The node's JSON-RPC URL; `http://127.0.0.1:<the chain's default port>` when absent.
    pub rpc_url: Option<String>,
    /// The node's `.cookie` file; the default data directory's when neither it nor a user is
    /// given.
    pub cookie_file: Option<PathBuf>,
    /// `rpcuser`, instead of a cookie file.
    pub rpc_user: Option<String>,
    /// `rpcpassword`, required with `rpc_user`.
    pub rpc_password: Option<String>,
    /// How long one long poll may wait at the node, in seconds (default 20).
    pub long_poll_secs: Option<u64>,
    /// Tip polling interval for nodes without `waitfornewblock`, in milliseconds (default 500,
    /// at least 10).
    pub poll_interval_ms: Option<u64>,
    /// A fresh template at least this often, in seconds (default 30).
    pub template_refresh_secs: Option<u64>,
    /// The node's `-zmqpubhashblock` endpoint (`tcp://HOST:PORT`), for the fastest news of a
    /// new tip.
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

/// `[node]` (one node) or `[[node]]` (the primary first, then backups), as written. Derefs to
/// the primary, so `raw.node.rpc_url` reads as it always has.
#[derive(Debug)]
pub struct RawNodes(pub Vec<RawNode>);

impl Default for RawNodes {
    fn default() -> Self {
        RawNodes(vec![RawNode::default()])
    }
}

impl std::ops::Deref for RawNodes {
    type Target = RawNode;
    fn deref(&self) -> &RawNode {
        &self.0[0]
    }
}

impl std::ops::DerefMut for RawNodes {
    fn deref_mut(&mut self) -> &mut RawNode {
        &mut self.0[0]
    }
}

impl<'de> Deserialize<'de> for RawNodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Nodes;
        impl<'de> serde::de::Visitor<'de> for Nodes {
            type Value = RawNodes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [node] table, or [[node]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawNodes, A::Error> {
                let one = RawNode::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawNodes(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawNodes, A::Error> {
                let all =
                    Vec::<RawNode>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                if all.is_empty() {
                    return Err(serde::de::Error::custom("at least one [[node]]"));
                }
                Ok(RawNodes(all))
            }
        }
        d.deserialize_any(Nodes)
    }
}

impl RawNodes {
    /// Checks every node with the farm's `[policy]`; names must differ (the journal records
    /// each node's verdict by name).
    ///
    /// # Errors
    /// Every bad value, each with its key.
    pub fn resolve(
        self,
        network: Network,
        policy: &PolicyConfig,
    ) -> Result<Vec<NodeConfig>, ConfigErrors> {
        let mut e = ConfigErrors::default();
        let nodes: Vec<NodeConfig> = self
            .0
            .into_iter()
            .filter_map(|n| e.take_all(n.resolve_with_policy(network, policy.clone())))
            .collect();
        let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            e.push(bad(
                "node.name",
                "two nodes with one name (or one RPC URL); name them",
            ));
        }
        if e.is_empty() {
            Ok(nodes)
        } else {
            Err(e)
        }
    }
}

/// The node connection, checked.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Its name in logs and the block journal.
    pub name: String,
    /// The node's JSON-RPC URL.
    pub rpc_url: String,
    /// How the RPC client proves itself to the node.
    pub auth: NodeAuth,
    /// How templates and tips are watched, and the farm's policy on them.
    pub source: TemplateSourceConfig,
    /// Where templates come from; RPC stays in use for checks and block submission either way.
    pub backend: BackendKind,
}

/// The template backend, `[node] backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    /// `getblocktemplate` long polling over JSON-RPC.
    Rpc,
    /// Bitcoin Core 30+ IPC (Cap'n Proto over a UNIX socket).
    Ipc(IpcConfig),
}

/// Where the node's IPC socket is and how often it should send same-tip templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcConfig {
    /// The node's socket, `<datadir>/<chain>/node.sock` for `-ipcbind=unix`.
    pub socket: PathBuf,
    /// The chain the farm mines (templates carry it; the node's chain is checked over RPC).
    pub network: Network,
    /// A same-tip template comes only when fees in reach rose by at least this much.
    pub fee_threshold_sat: u64,
    /// ... and not more often than this (whole seconds, at most 255). New tips are never held.
    pub min_interval: Duration,
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
    /// Every bad value, each with its key.
    pub fn resolve(self, network: Network) -> Result<NodeConfig, ConfigErrors> {
        self.resolve_with_policy(network, PolicyConfig::default())
    }

    /// Checks the section together with the farm's `[policy]`.
    ///
    /// # Errors
    /// Every bad value, each with its key.
    pub fn resolve_with_policy(
        self,
        network: Network,
        policy: PolicyConfig,
    ) -> Result<NodeConfig, ConfigErrors> {
        let mut e = ConfigErrors::default();
        let prioritise = e.take(prioritised_txids(&policy));
        let policy = e.take(Policy::try_from(policy).map_err(|x| bad("policy", x)));
        let rpc_url = e.take(rpc_url(self.rpc_url, network));
        let auth = e.take(auth(
            self.cookie_file,
            self.rpc_user,
            self.rpc_password,
            network,
        ));
        let zmq_hashblock = e.take(zmq_endpoint(self.zmq_hashblock));
        let long_poll = e.take(secs(self.long_poll_secs, 20, "node.long_poll_secs"));
        let refresh = e.take(secs(
            self.template_refresh_secs,
            30,
            "node.template_refresh_secs",
        ));
        let backend = e.take(backend(
            self.backend.as_deref(),
            self.ipc_socket,
            network,
            self.fee_threshold_sat,
            self.min_template_interval_secs,
        ));
        let (
            Some(prioritise),
            Some(policy),
            Some(rpc_url),
            Some(auth),
            Some(zmq_hashblock),
            Some(long_poll),
            Some(refresh_interval),
            Some(backend),
        ) = (
            prioritise,
            policy,
            rpc_url,
            auth,
            zmq_hashblock,
            long_poll,
            refresh,
            backend,
        )
        else {
            return Err(e);
        };
        let source = TemplateSourceConfig {
            network,
            long_poll,
            poll_interval: Duration::from_millis(self.poll_interval_ms.unwrap_or(500).max(10)),
            refresh_interval,
            zmq_hashblock,
            policy,
            prioritise,
            updates: crate::source::UpdatePolicy {
                fee_threshold: bitcoin::Amount::from_sat(self.fee_threshold_sat.unwrap_or(1_000)),
                min_interval: Duration::from_secs(self.min_template_interval_secs.unwrap_or(5)),
            },
        };
        Ok(NodeConfig {
            name: self.name.unwrap_or_else(|| rpc_url.clone()),
            rpc_url,
            auth,
            source,
            backend,
        })
    }
}

/// `[policy] prioritise_txids`, each with the fee bonus the node is asked to add.
fn prioritised_txids(policy: &PolicyConfig) -> Result<Vec<(bitcoin::Txid, i64)>, ConfigError> {
    let fee = policy.prioritise_fee_sat.unwrap_or(100_000_000);
    policy
        .prioritise_txids
        .iter()
        .map(|t| {
            t.parse::<bitcoin::Txid>()
                .map(|t| (t, fee))
                .map_err(|e| bad("policy.prioritise_txids", format!("{t:?}: {e}")))
        })
        .collect()
}

/// `node.rpc_url`, or the local node on the chain's default port.
fn rpc_url(url: Option<String>, network: Network) -> Result<String, ConfigError> {
    let default_port = match network {
        Network::Bitcoin => 8332,
        Network::Testnet => 18332,
        Network::Testnet4 => 48332,
        Network::Signet => 38332,
        Network::Regtest => 18443,
    };
    let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{default_port}"));
    if !url.starts_with("http://") {
        return Err(bad(
            "node.rpc_url",
            "must start with http:// (the node serves plain HTTP)",
        ));
    }
    Ok(url)
}

/// A cookie file or a user and password, never both; the default data directory's cookie
/// when neither is given.
fn auth(
    cookie_file: Option<PathBuf>,
    user: Option<String>,
    password: Option<String>,
    network: Network,
) -> Result<NodeAuth, ConfigError> {
    match (cookie_file, user, password) {
        (Some(_), Some(_), _) => Err(bad(
            "node.cookie_file",
            "give either cookie_file or rpc_user/rpc_password, not both",
        )),
        (Some(path), None, _) => Ok(NodeAuth::CookieFile(path)),
        (None, Some(user), Some(password)) => Ok(NodeAuth::UserPass { user, password }),
        (None, Some(_), None) => Err(bad("node.rpc_password", "rpc_user needs rpc_password")),
        (None, None, _) => Ok(NodeAuth::CookieFile(default_cookie(network))),
    }
}

/// `node.zmq_hashblock`, which must be a `tcp://` endpoint as the node publishes on.
fn zmq_endpoint(endpoint: Option<String>) -> Result<Option<String>, ConfigError> {
    match endpoint {
        Some(e) if !e.starts_with("tcp://") => Err(bad(
            "node.zmq_hashblock",
            format!("{e:?}: expected tcp://HOST:PORT as in the node's -zmqpubhashblock"),
        )),
        other => Ok(other),
    }
}

/// `node.backend` with the keys only the IPC backend uses.
fn backend(
    kind: Option<&str>,
    ipc_socket: Option<PathBuf>,
    network: Network,
    fee_threshold_sat: Option<u64>,
    min_interval_secs: Option<u64>,
) -> Result<BackendKind, ConfigError> {
    match (kind.unwrap_or("rpc"), ipc_socket) {
        ("rpc", None) => Ok(BackendKind::Rpc),
        ("rpc", Some(_)) => Err(bad(
            "node.ipc_socket",
            "is set but node.backend is \"rpc\"; set backend = \"ipc\" to take templates over IPC",
        )),
        ("ipc", None) => Err(bad(
            "node.ipc_socket",
            "required with backend = \"ipc\": the node's -ipcbind=unix socket, <datadir>/<chain>/node.sock",
        )),
        ("ipc", Some(socket)) => {
            let min_interval = min_interval_secs.unwrap_or(5);
            if min_interval > 255 {
                return Err(bad(
                    "node.min_template_interval_secs",
                    "at most 255 with backend = \"ipc\"",
                ));
            }
            Ok(BackendKind::Ipc(IpcConfig {
                socket,
                network,
                fee_threshold_sat: fee_threshold_sat.unwrap_or(1_000),
                min_interval: Duration::from_secs(min_interval),
            }))
        }
        (other, _) => Err(bad(
            "node.backend",
            format!("{other:?}: expected \"rpc\" or \"ipc\""),
        )),
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
        Network::Regtest => base.join("regtest/.cookie"),
    }
}
