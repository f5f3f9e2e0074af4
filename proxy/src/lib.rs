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
pub mod job;
pub mod metrics;
pub mod share;
pub mod sv1;
pub mod tdp_client;
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
use template_provider::blocks::BlockSubmitter;
use template_provider::{RpcClient, TemplateSource};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::blocks::{BlockSink, NodeRoute};
use crate::config::{Config, Payout};
use crate::job::{Job, JobFactory, Publisher};
use crate::metrics::{Snapshot, Stats};
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
    /// Keeps the publisher's command queue open in solo mode.
    _commands: mpsc::UnboundedSender<job::Command>,
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
    pub async fn start(config: Config) -> anyhow::Result<Proxy> {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();

        let (templates, route, payout_script) = templates(&config, &tracker, &shutdown).await?;
        let coinbase = CoinbaseConfig {
            payout_script,
            tag: config.coinbase_tag.clone(),
        };
        let stats = Arc::new(Stats::default());
        let links = Arc::new(Links::default());
        let mut factory = JobFactory::new(coinbase, config.sv1.layout);
        let first = factory
            .make(templates.borrow().clone(), None)
            .context("building the first job (check coinbase.tag)")?;
        let (jobs_tx, jobs) = watch::channel(Arc::new(first));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let publisher = Publisher {
            factory,
            templates,
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
            };
            tracker.spawn(supervisor.run(shutdown.clone()));
        }

        let (blocks, found) = BlockSink::new();
        tracker.spawn(blocks::run(found, route, links.clone(), tracker.clone()));

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (stratum.listen)", config.listen))?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(sv1::Shared {
            extranonces: Extranonce1Allocator::new(config.sv1.layout),
            sv1: config.sv1,
            blocks,
            links,
            stats: stats.clone(),
        });
        tracker.spawn(sv1::server::serve(
            listener,
            shared,
            jobs.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(log_status(stats.clone(), mode.clone(), shutdown.clone()));
        let pools = config.upstreams.len();
        info!(listen = %local_addr, network = %config.network, upstreams = pools, "jd-proxy serving Stratum V1 miners");
        Ok(Proxy {
            local_addr,
            stats,
            jobs,
            mode,
            _commands: commands,
            shutdown,
            tracker,
        })
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
    signal.await;
    info!("shutting down");
    proxy.shutdown().await;
    Ok(())
}

/// Where templates come from (the node, or an external provider), where blocks on them go,
/// and the farm's payout script.
async fn templates(
    config: &Config,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<(watch::Receiver<Arc<Template>>, NodeRoute, ScriptBuf)> {
    let Some(tp) = &config.template_provider else {
        let rpc = RpcClient::new(config.node.rpc_url.clone(), config.node.auth.clone());
        let source = TemplateSource::new(rpc.clone(), config.node.source.clone());
        let chain = source
            .check_node()
            .await
            .with_context(|| format!("node at {}", config.node.rpc_url))?;
        info!(chain = %chain.chain, height = chain.blocks, "node ready");
        let payout_script = resolve_payout(&rpc, config).await?;
        let templates = source
            .spawn(tracker, shutdown.clone())
            .await
            .context("first block template")?;
        let submitter = BlockSubmitter::new(rpc, Some(config.blocks_dir.clone()));
        return Ok((templates, NodeRoute::Node(submitter), payout_script));
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
    Ok((
        templates,
        NodeRoute::TemplateProvider(client),
        payout_script,
    ))
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
