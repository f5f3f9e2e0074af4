//! jd-proxy: unchanged Stratum V1 ASICs mine on block templates from the farm's own node.
//!
//! Data flows one way in each direction:
//! - node → [`template_provider`] → [`job`] → every [`sv1::session`] → ASIC (`mining.notify`);
//! - ASIC → [`sv1::session`] → [`share`] check → [`upstream`] (pool mode) → pool;
//! - a found block → [`blocks`] → the node (or the template provider), the pool and its JDS.
//!
//! [`Proxy::start`] builds the whole daemon in-process, so tests and the binary run the same code.

#![warn(missing_docs)]

pub mod blocks;
pub mod config;
pub mod figures;
pub mod job;
pub mod metrics;
pub mod share;
pub mod sv1;
pub mod tdp_client;
pub mod upgrade;
pub mod upstream;

#[cfg(test)]
mod test_support;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bitcoin::ScriptBuf;
use mining_types::{CoinbaseConfig, Template};
use serde_json::json;
use template_provider::blocks::fds::{self, FdReserve};
use template_provider::blocks::{Blocks, Node};
use template_provider::nodes::NodeSet;
pub use template_provider::nodes::Serving;
use template_provider::{NodeError, RpcClient};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::blocks::{BlockSink, NodeRoute};
use crate::config::{Config, Payout};
use crate::figures::Board;
use crate::job::{Job, JobFactory, Publisher};
use crate::metrics::{Snapshot, Stats};
use crate::sv1::admission::Admission;
use crate::sv1::extranonce::Extranonce1Allocator;
use crate::tdp_client::TdpClientConfig;
use crate::upstream::channel::OpenContext;
use crate::upstream::failover::Failover;
use crate::upstream::shares::Links;
use crate::upstream::supervisor::Supervisor;
pub use crate::upstream::Mode;

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    local_addr: SocketAddr,
    stats: Arc<Stats>,
    jobs: watch::Receiver<Arc<Job>>,
    mode: watch::Receiver<Mode>,
    serving: Option<watch::Receiver<Serving>>,
    board: Arc<Board>,
    /// Keeps the publisher's command queue open in solo mode.
    _commands: mpsc::UnboundedSender<job::Command>,
    handed_over: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// How long shutdown waits for sessions and block submissions to finish.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

impl Proxy {
    /// Checks the node, builds the first job and starts serving miners.
    ///
    /// # Errors
    /// A node on the wrong chain or still syncing, a payout that does not resolve, or a
    /// listen address that cannot be bound: each with a message naming the cause.
    pub async fn start(mut config: Config) -> anyhow::Result<Proxy> {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        plan_connections(&mut config.sv1)?;
        let sources = templates(&config, &tracker, &shutdown).await?;
        let stats = Arc::new(Stats::default());
        let links = Arc::new(Links::default());
        let coinbase = CoinbaseConfig {
            payout_script: sources.payout_script,
            tag: config.coinbase_tag.clone(),
        };
        let mut factory = JobFactory::new(coinbase, config.sv1.layout);
        let first = factory
            .make(sources.templates.borrow().clone(), None)
            .context("building the first job (check coinbase.tag)")?;
        let (jobs_tx, jobs) = watch::channel(Arc::new(first));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let publisher = Publisher {
            factory,
            templates: sources.templates,
            commands: commands_rx,
            jobs: jobs_tx,
        };
        tracker.spawn(publisher.run(shutdown.clone()));
        let (mode_tx, mode) = watch::channel(Mode::Solo);
        if !config.upstreams.is_empty() {
            let supervisor = Supervisor {
                failover: Failover::new(config.upstreams.len(), config.failover.retry_preferred),
                upstreams: Arc::new(config.upstreams.clone()),
                open: OpenContext {
                    layout: config.sv1.layout,
                    network: config.network,
                    config: config.failover,
                    hashrate: 0.0,
                    stats: stats.clone(),
                    tracker: tracker.clone(),
                },
                links: links.clone(),
                publisher: commands.clone(),
                mode: mode_tx,
                serving: sources.serving.clone(),
            };
            tracker.spawn(supervisor.run(shutdown.clone()));
        }
        let board = Board::new();
        tracker.spawn(board.clone().sample(shutdown.clone()));
        let (blocks, found) = BlockSink::new();
        tracker.spawn(blocks::run(found, sources.route, links.clone()));
        let shared = Arc::new(sv1::Shared {
            extranonces: Extranonce1Allocator::new(config.sv1.layout),
            sv1: config.sv1.clone(),
            blocks,
            links,
            stats: stats.clone(),
            fds: sources.fds.clone(),
            board: board.clone(),
        });
        let served = serve_miners(&config, shared, jobs.clone(), &tracker, &shutdown).await?;
        tracker.spawn(log_status(stats.clone(), mode.clone(), shutdown.clone()));
        let pools = config.upstreams.len();
        info!(listen = %served.local_addr, network = %config.network, upstreams = pools, "jd-proxy serving Stratum V1 miners");
        Ok(Proxy {
            local_addr: served.local_addr,
            stats,
            jobs,
            mode,
            serving: sources.serving,
            board,
            _commands: commands,
            handed_over: served.handed_over,
            shutdown,
            tracker,
        })
    }

    /// Resolves once the listening socket was handed to a newer process (the caller then
    /// shuts this one down, as on SIGTERM).
    pub async fn handed_over(&self) {
        self.handed_over.cancelled().await;
    }

    /// The address miners connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters now.
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Per worker, the shares the pool accepted and rejected.
    pub fn pool_workers(&self) -> Vec<(String, u64, u64)> {
        self.stats.pool_workers()
    }

    /// Where mining goes now: solo, or which pool.
    pub fn mode(&self) -> watch::Receiver<Mode> {
        self.mode.clone()
    }

    /// Which of the farm's nodes gives the templates, or since when none does; `None` with an
    /// external template provider.
    pub fn serving(&self) -> Option<watch::Receiver<Serving>> {
        self.serving.clone()
    }

    /// Every ASIC and worker, the farm's history and events.
    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    /// The newest job, as every miner gets it.
    pub fn jobs(&self) -> watch::Receiver<Arc<Job>> {
        self.jobs.clone()
    }

    /// Stops accepting, closes every session, and waits for found blocks to be submitted.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN_DEADLINE, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("shutdown deadline passed with tasks still running");
        }
    }
}

/// Runs the proxy until `signal` completes.
///
/// # Errors
/// As [`Proxy::start`].
pub async fn run(
    config: Config,
    signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let proxy = Proxy::start(config).await?;
    tokio::select! {
        () = signal => info!("shutting down: miners are asked to reconnect"),
        () = proxy.handed_over() => info!("handed over to the new version: shutting down"),
    }
    proxy.shutdown().await;
    Ok(())
}

/// Raises the soft file limit to the hard one and keeps miners within it.
///
/// # Errors
/// A limit too low to serve miners at all.
fn plan_connections(sv1: &mut sv1::Sv1Config) -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("reading the file limit")?;
    let (fit, warning) = sv1::server::connections_within(limit, sv1.max_connections)
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(w) = warning {
        warn!("{w}");
    }
    sv1.max_connections = fit;
    Ok(())
}

/// The listening socket and what serves it.
struct Served {
    local_addr: SocketAddr,
    handed_over: CancellationToken,
}

/// Takes the listening socket over from a running older version (`upgrade.handover_socket`),
/// or binds it; then accepts miners, and hands the socket on when a newer version asks.
async fn serve_miners(
    config: &Config,
    shared: Arc<sv1::Shared>,
    jobs: watch::Receiver<Arc<Job>>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Served> {
    let handover = config.upgrade.handover_socket.as_deref();
    let taken = match handover {
        Some(path) => upgrade::take_over(path).await.with_context(|| {
            format!(
                "taking over from {} (upgrade.handover_socket)",
                path.display()
            )
        })?,
        None => None,
    };
    let listener = match taken {
        Some(l) => {
            info!("took the listening socket over from the running version");
            l
        }
        None => TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (stratum.listen)", config.listen))?,
    };
    let local_addr = listener.local_addr()?;
    let handed_over = CancellationToken::new();
    let stop_accepting = shutdown.child_token();
    let listener = match handover {
        Some(path) => {
            let std_listener = listener.into_std()?;
            let next = std_listener.try_clone()?;
            let (handed, stop) = (handed_over.clone(), stop_accepting.clone());
            tracker.spawn(upgrade::serve(path.to_path_buf(), next, handed, stop));
            // Handed over: this process stops accepting (its miners are asked to reconnect
            // when it shuts down).
            let (handed, stop) = (handed_over.clone(), stop_accepting.clone());
            tracker.spawn(async move {
                tokio::select! {
                    () = handed.cancelled() => stop.cancel(),
                    () = stop.cancelled() => {}
                }
            });
            TcpListener::from_std(std_listener)?
        }
        None => listener,
    };
    spawn_accept(
        listener,
        shared,
        config,
        jobs,
        tracker,
        (stop_accepting, shutdown),
    );
    Ok(Served {
        local_addr,
        handed_over,
    })
}

fn spawn_accept(
    listener: TcpListener,
    shared: Arc<sv1::Shared>,
    config: &Config,
    jobs: watch::Receiver<Arc<Job>>,
    tracker: &TaskTracker,
    (stop, shutdown): (CancellationToken, &CancellationToken),
) {
    let admission = Admission::new(config.admission.clone());
    tracker.spawn(sv1::server::serve(
        listener,
        shared,
        admission,
        jobs,
        tracker.clone(),
        stop,
        shutdown.clone(),
    ));
}

/// Where templates come from, and what jobs and blocks need besides.
struct Sources {
    templates: watch::Receiver<Arc<Template>>,
    route: NodeRoute,
    payout_script: ScriptBuf,
    /// Which node serves templates; `None` with an external template provider.
    serving: Option<watch::Receiver<Serving>>,
    /// Descriptors held back for blocks.
    fds: Arc<FdReserve>,
}

/// Templates from the farm's nodes (the first that answers) or an external provider, and
/// where blocks on them go.
async fn templates(
    config: &Config,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Sources> {
    let Some(tp) = &config.template_provider else {
        return from_nodes(config, tracker, shutdown).await;
    };
    let Payout::Address(addr) = &config.payout else {
        anyhow::bail!("coinbase.payout_descriptor needs the node; with an external template provider give coinbase.payout_address");
    };
    let payout_script = addr.script_pubkey();
    let client_config = TdpClientConfig {
        address: tp.address.clone(),
        authority: tp.authority,
        network: config.network,
        // Our payout output: value, script length, script.
        coinbase_output_max_additional_size: u32::try_from(9 + payout_script.len())
            .unwrap_or(u32::MAX),
        timeout: Duration::from_secs(10),
    };
    let (client, templates) = tdp_client::spawn(client_config, tracker, shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "template provider at {} (template_provider.address)",
                tp.address
            )
        })?;
    Ok(Sources {
        templates,
        route: NodeRoute::TemplateProvider(client),
        payout_script,
        serving: None,
        fds: Arc::new(FdReserve::new(fds::RESERVED)),
    })
}

/// Templates from the first of the farm's nodes that answers; blocks journaled and sent to
/// every node. A node on the wrong chain or still syncing refuses the start; one that does not
/// answer is used as soon as it does.
async fn from_nodes(
    config: &Config,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Sources> {
    let specs = config.nodes.iter().map(|n| {
        let rpc = RpcClient::new(n.rpc_url.clone(), n.auth.clone());
        (n.name.clone(), rpc, n.source.clone())
    });
    let sources = NodeSet::sources(specs.collect());
    let mut reachable = None;
    for s in &sources {
        match s.source.check_node().await {
            Ok(chain) => {
                info!(node = %s.name, chain = %chain.chain, height = chain.blocks, "node ready");
                reachable.get_or_insert_with(|| s.source.rpc().clone());
            }
            Err(e @ (NodeError::WrongNetwork { .. } | NodeError::InitialBlockDownload { .. })) => {
                return Err(anyhow::anyhow!(e).context(format!("node {}", s.name)));
            }
            Err(e) => {
                warn!(node = %s.name, error = %e, "node does not answer at start; it is used once it does");
            }
        }
    }
    let rpc = reachable.with_context(|| {
        let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        format!("no node answers ({})", names.join(", "))
    })?;
    let payout_script = resolve_payout(&rpc, config).await?;
    let nodes = sources
        .iter()
        .map(|s| Node {
            name: s.name.clone(),
            rpc: s.source.rpc().clone(),
        })
        .collect();
    let set = NodeSet::start(sources, tracker, shutdown)
        .await
        .context("first block template")?;
    let blocks = Blocks::start(&config.blocks_dir, nodes, set.templates.clone(), tracker)
        .with_context(|| {
            format!(
                "cannot open the block journal in {} (solo.blocks_dir)",
                config.blocks_dir.display()
            )
        })?;
    Ok(Sources {
        templates: set.templates,
        fds: blocks.fd_reserve(),
        route: NodeRoute::Node(blocks),
        payout_script,
        serving: Some(set.serving),
    })
}

async fn resolve_payout(rpc: &RpcClient, config: &Config) -> anyhow::Result<ScriptBuf> {
    match &config.payout {
        Payout::Address(a) => Ok(a.script_pubkey()),
        Payout::Descriptor(d) => {
            // The node knows every descriptor form; asking it keeps a descriptor parser out of here.
            let with_checksum = if d.contains('#') {
                d.clone()
            } else {
                let info: serde_json::Value = rpc
                    .call("getdescriptorinfo", json!([d]))
                    .await
                    .context("coinbase.payout_descriptor")?;
                let sum = info["checksum"]
                    .as_str()
                    .context("coinbase.payout_descriptor: node gave no checksum")?;
                format!("{d}#{sum}")
            };
            let addrs: Vec<String> = rpc
                .call("deriveaddresses", json!([with_checksum]))
                .await
                .context("coinbase.payout_descriptor must be a single, non-ranged output")?;
            let first = addrs
                .first()
                .context("coinbase.payout_descriptor derives no address")?;
            let addr = bitcoin::Address::from_str(first)?.require_network(config.network)?;
            Ok(addr.script_pubkey())
        }
    }
}

/// One status line a minute: what an operator checks first.
async fn log_status(stats: Arc<Stats>, mode: watch::Receiver<Mode>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let s = stats.snapshot();
        let rejected: u64 = s.rejected.iter().map(|(_, n)| n).sum();
        let mining_for = match &*mode.borrow() {
            Mode::Solo => "solo".to_owned(),
            Mode::Pool { name, .. } => name.clone(),
        };
        info!(
            mining_for,
            connections = s.connections,
            accepted = s.accepted,
            rejected,
            blocks = s.blocks,
            pool_submitted = s.pool_submitted,
            pool_accepted = s.pool_accepted,
            pool_rejected = s.pool_rejected,
            "status"
        );
    }
}
