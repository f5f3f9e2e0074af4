//! The standalone template provider: a node source behind a Template Distribution server.
//! `run` is what the binary calls; tests call it in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::blocks::journal::unix_now;
use crate::blocks::{Blocks, Node};
use crate::config::{
    bad, parse_network, secs, BackendKind, ConfigError, ConfigErrors, NodeConfig, RawNode,
};
use crate::figures::{BlockTally, SourceFigures};
use crate::http::provider::ProviderFigures;
use crate::node::rpc::RpcClient;
use crate::node::{NodeBackend, NodeError};
use crate::source::TemplateSource;
use crate::tdp::server::{serve, Tdp, TdpServerConfig};
use sv2_wire::AuthorityKeypair;

/// The TOML file as written (`examples/template-provider.toml` shows every key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProviderConfig {
    /// The chain served: `bitcoin` (the default), `testnet`, `testnet4`, `signet` or `regtest`.
    pub network: Option<String>,
    /// How to reach the node.
    #[serde(default)]
    pub node: RawNode,
    /// Where and how templates are served.
    #[serde(default)]
    pub server: RawServer,
    /// What the farm will not mine; applied to every template before it is served.
    #[serde(default)]
    pub policy: crate::policy::PolicyConfig,
    /// The HTTP server for operators (`/metrics`, `/api/v1/...`).
    #[serde(default)]
    pub http: RawHttp,
}

/// `[http]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Where `/metrics` and the JSON API listen (default `127.0.0.1:9101`; `""` turns it off).
    pub listen: Option<String>,
}

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// The Template Distribution listen address (default `127.0.0.1:8442`).
    pub listen: Option<String>,
    /// The authority public key clients pin (`template-provider keygen` makes a pair).
    pub authority_public_key: Option<String>,
    /// The authority secret key that signs each connection's certificate.
    pub authority_secret_key: Option<String>,
    /// How long each connection's certificate is valid, in seconds (default 3600).
    pub cert_validity_secs: Option<u64>,
    /// Clients served at once; more are refused (default 64).
    pub max_clients: Option<usize>,
    /// The directory of the block journal: every block found is written there before it is
    /// submitted (default `blocks`).
    pub blocks_dir: Option<PathBuf>,
}

/// The provider's settings, checked.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The chain served; the node must be on it.
    pub network: bitcoin::Network,
    /// The node connection and template backend.
    pub node: NodeConfig,
    /// The Template Distribution listen address.
    pub listen: SocketAddr,
    /// The Template Distribution server's keys, limits and timeouts.
    pub tdp: TdpServerConfig,
    /// The block journal's directory.
    pub blocks_dir: PathBuf,
    /// Where the HTTP server for operators listens; `None`: no server.
    pub http_listen: Option<SocketAddr>,
}

impl ProviderConfig {
    /// Checks the raw file.
    ///
    /// # Errors
    /// Every bad value, each with its key.
    pub fn from_raw(raw: RawProviderConfig) -> Result<Self, ConfigErrors> {
        let mut e = ConfigErrors::default();
        let network = e
            .take(parse_network(raw.network.as_deref().unwrap_or("bitcoin")))
            .unwrap_or(bitcoin::Network::Bitcoin);
        let node = e.take_all(raw.node.resolve_with_policy(network, raw.policy));
        let s = raw.server;
        let listen = e.take(listen(s.listen));
        let http_listen = e.take(crate::http::parse_listen(
            raw.http.listen.as_deref(),
            "127.0.0.1:9101",
            "http.listen",
        ));
        let keys = e.take(keys(s.authority_public_key, s.authority_secret_key));
        let max_clients = s.max_clients.unwrap_or(64);
        if max_clients == 0 {
            e.push(bad("server.max_clients", "must be above 0"));
        }
        let validity = e.take(secs(
            s.cert_validity_secs,
            3600,
            "server.cert_validity_secs",
        ));
        let (Some(node), Some(listen), Some(keys), Some(cert_validity), Some(http_listen), true) =
            (node, listen, keys, validity, http_listen, e.is_empty())
        else {
            return Err(e);
        };
        Ok(ProviderConfig {
            network,
            node,
            listen,
            tdp: TdpServerConfig {
                keys,
                cert_validity,
                max_clients,
                handshake_timeout: Duration::from_secs(10),
                setup_timeout: Duration::from_secs(10),
            },
            blocks_dir: s.blocks_dir.unwrap_or_else(|| PathBuf::from("blocks")),
            http_listen,
        })
    }
}

/// `server.listen`, loopback by default.
fn listen(listen: Option<String>) -> Result<SocketAddr, ConfigError> {
    let listen = listen.unwrap_or_else(|| "127.0.0.1:8442".into());
    SocketAddr::from_str(&listen).map_err(|e| bad("server.listen", format!("{listen:?}: {e}")))
}

/// The server's authority key pair; both halves are required and must match.
fn keys(public: Option<String>, secret: Option<String>) -> Result<AuthorityKeypair, ConfigError> {
    match (public, secret) {
        (Some(p), Some(k)) => AuthorityKeypair::from_strings(&p, &k)
            .map_err(|e| bad("server.authority_secret_key", e)),
        _ => Err(bad(
            "server.authority_public_key",
            "required with authority_secret_key; make a pair with `template-provider keygen`",
        )),
    }
}

/// A running provider.
#[derive(Debug)]
pub struct Provider {
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    /// The farm's policy in force; a reload replaces it.
    policy: crate::policy::LivePolicy,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Provider {
    /// Checks the node, fetches the first template and starts serving.
    ///
    /// # Errors
    /// A node on the wrong chain or syncing, or a listen address that cannot be bound.
    pub async fn start(config: ProviderConfig) -> anyhow::Result<Provider> {
        let rpc = RpcClient::new(config.node.rpc_url.clone(), config.node.auth.clone());
        let source = TemplateSource::new(rpc.clone(), config.node.source.clone());
        let figures = source.figures().clone();
        let policy = source.live_policy().clone();
        let started = match &config.node.backend {
            BackendKind::Rpc => Self::start_with(source, rpc, config, figures).await,
            #[cfg(feature = "ipc")]
            BackendKind::Ipc(ipc) => {
                let backend = crate::node::ipc::IpcBackend::new(source, ipc.clone());
                Self::start_with(backend, rpc, config, figures).await
            }
            #[cfg(not(feature = "ipc"))]
            BackendKind::Ipc(_) => Err(NodeError::IpcUnavailable.into()),
        };
        started.map(|p| Provider { policy, ..p })
    }

    async fn start_with<B: NodeBackend>(
        backend: B,
        rpc: RpcClient,
        config: ProviderConfig,
        figures: SourceFigures,
    ) -> anyhow::Result<Provider> {
        let started_at = unix_now();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let chain = backend.check().await?;
        info!(chain = %chain.chain, height = chain.blocks, "node ready");
        let templates = backend
            .templates(&tracker, shutdown.clone())
            .await
            .map_err(|e: NodeError| anyhow::anyhow!(e))?;
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {} (server.listen): {e}", config.listen)
        })?;
        let local_addr = listener.local_addr()?;
        let node = Node {
            name: config.node.rpc_url.clone(),
            rpc,
        };
        let blocks = Blocks::start(&config.blocks_dir, vec![node], templates.clone(), &tracker)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the block journal in {} (server.blocks_dir): {e}",
                    config.blocks_dir.display()
                )
            })?;
        let shown = Arc::new(ProviderFigures {
            templates: templates.clone(),
            source: figures,
            clients: Arc::new(AtomicUsize::new(0)),
            blocks: Arc::new(BlockTally::default()),
            started_at,
        });
        tracker.spawn(shown.blocks.clone().follow(blocks.news(), shutdown.clone()));
        let clients = shown.clients.clone();
        let http_addr = match config.http_listen {
            Some(addr) => {
                let router = crate::http::provider::router(shown);
                crate::http::start(addr, router, &tracker, &shutdown, "http.listen").await
            }
            None => None,
        };
        let tdp = Tdp {
            config: config.tdp,
            clients,
        };
        tracker.spawn(serve(
            listener,
            tdp,
            templates,
            blocks,
            tracker.clone(),
            shutdown.clone(),
        ));
        Ok(Provider {
            local_addr,
            http_addr,
            // The source's, put in place by `start`.
            policy: crate::policy::LivePolicy::default(),
            shutdown,
            tracker,
        })
    }

    /// The address the Template Distribution server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The farm's policy in force: replace it, and the next templates follow it.
    pub fn policy(&self) -> &crate::policy::LivePolicy {
        &self.policy
    }

    /// The address of the HTTP server for operators, when it runs and was bound at start.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
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
