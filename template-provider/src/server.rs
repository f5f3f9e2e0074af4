//! The standalone template provider: a node source behind a Template Distribution server.
//! `run` is what the binary calls; tests call it in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::blocks::BlockSubmitter;
use crate::config::{bad, parse_network, secs, ConfigError, NodeBackend, NodeConfig, RawNode};
use crate::node::rpc::RpcClient;
use crate::source::TemplateSource;
use crate::sv2::AuthorityKeypair;
use crate::tdp::server::{serve, TdpServerConfig};

/// The TOML file as written (`examples/template-provider.toml` shows every key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviderConfig {
    pub network: Option<String>,
    #[serde(default)]
    pub node: RawNode,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub policy: crate::template::policy::PolicyConfig,
}

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub authority_public_key: Option<String>,
    pub authority_secret_key: Option<String>,
    pub cert_validity_secs: Option<u64>,
    pub max_clients: Option<usize>,
    pub blocks_dir: Option<PathBuf>,
}

/// The provider's settings, checked.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub network: bitcoin::Network,
    pub node: NodeConfig,
    pub listen: SocketAddr,
    pub tdp: TdpServerConfig,
    pub blocks_dir: Option<PathBuf>,
}

impl ProviderConfig {
    /// Checks the raw file.
    ///
    /// # Errors
    /// The first bad value, with its key.
    pub fn from_raw(raw: RawProviderConfig) -> Result<Self, ConfigError> {
        let network = parse_network(raw.network.as_deref().unwrap_or("bitcoin"))?;
        let node = raw.node.resolve_with_policy(network, raw.policy)?;
        let s = raw.server;
        let listen_s = s.listen.unwrap_or_else(|| "127.0.0.1:8442".into());
        let listen = SocketAddr::from_str(&listen_s)
            .map_err(|e| bad("server.listen", format!("{listen_s:?}: {e}")))?;
        let keys = match (s.authority_public_key, s.authority_secret_key) {
            (Some(p), Some(k)) => AuthorityKeypair::from_strings(&p, &k)
                .map_err(|e| bad("server.authority_secret_key", e))?,
            _ => return Err(bad(
                "server.authority_public_key",
                "required with authority_secret_key; make a pair with `template-provider keygen`",
            )),
        };
        let max_clients = s.max_clients.unwrap_or(64);
        if max_clients == 0 {
            return Err(bad("server.max_clients", "must be above 0"));
        }
        Ok(ProviderConfig {
            network,
            node,
            listen,
            tdp: TdpServerConfig {
                keys,
                cert_validity: secs(s.cert_validity_secs, 3600, "server.cert_validity_secs")?,
                max_clients,
                handshake_timeout: Duration::from_secs(10),
                setup_timeout: Duration::from_secs(10),
            },
            blocks_dir: s.blocks_dir,
        })
    }
}

/// A running provider.
#[derive(Debug)]
pub struct Provider {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Provider {
    /// Checks the node, fetches the first template and starts serving.
    ///
    /// # Errors
    /// A node on the wrong chain or syncing, or a listen address that cannot be bound.
    pub async fn start(config: ProviderConfig) -> anyhow::Result<Provider> {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let rpc = RpcClient::new(config.node.rpc_url.clone(), config.node.auth.clone());
        let source = TemplateSource::new(rpc.clone(), config.node.source.clone());
        let chain = source.check_node().await?;
        info!(chain = %chain.chain, height = chain.blocks, "node ready");
        let templates = match &config.node.backend {
            NodeBackend::Rpc => source.spawn(&tracker, shutdown.clone()).await?,
            // Templates over IPC; RPC keeps checking the node (above), ranking the farm's
            // transactions and submitting blocks (below): submitblock gives the node's verdict.
            NodeBackend::Ipc(ipc) => {
                source.prioritise().await?;
                info!(socket = %ipc.socket.display(), "templates from the node over IPC");
                crate::node::ipc::spawn(
                    ipc.clone(),
                    config.node.source.policy.clone(),
                    &tracker,
                    shutdown.clone(),
                )
                .await?
            }
        };
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {} (server.listen): {e}", config.listen)
        })?;
        let local_addr = listener.local_addr()?;
        let blocks = BlockSubmitter::new(rpc, config.blocks_dir.clone());
        tracker.spawn(serve(
            listener,
            config.tdp,
            templates,
            blocks,
            tracker.clone(),
            shutdown.clone(),
        ));
        Ok(Provider {
            local_addr,
            shutdown,
            tracker,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits for running submissions.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            warn!("shutdown deadline passed with tasks still running");
        }
    }
}
