//! Node → template: where the proxy's templates come from (the farm's nodes through the
//! policy, or an external template provider), the payout script, and where blocks on them go.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bitcoin::ScriptBuf;
use mining_types::Template;
use serde_json::json;
use template_provider::blocks::fds::{self, FdReserve};
use template_provider::blocks::{Blocks, Node};
use template_provider::nodes::{NodeSet, Serving};
use template_provider::{NodeError, RpcClient};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::blocks::NodeRoute;
use crate::config::{Config, Payout};
use crate::tdp_client::{self, TdpClientConfig};

/// Where templates come from, and what jobs and blocks need besides.
pub(crate) struct Sources {
    pub(crate) templates: watch::Receiver<Arc<Template>>,
    pub(crate) route: NodeRoute,
    pub(crate) payout_script: ScriptBuf,
    /// Which node serves templates; `None` with an external template provider.
    pub(crate) serving: Option<watch::Receiver<Serving>>,
    /// Descriptors held back for blocks.
    pub(crate) fds: Arc<FdReserve>,
    /// When the nodes saw each tip and what the policy removed; `None` with an external
    /// provider.
    pub(crate) figures: Option<template_provider::figures::SourceFigures>,
    /// The farm's policy, shared by the nodes' sources; `None` with an external provider.
    pub(crate) policy: Option<template_provider::policy::LivePolicy>,
}

/// Templates from the farm's nodes (the first that answers) or an external provider, and
/// where blocks on them go.
pub(crate) async fn templates(
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
        policy: None,
        figures: None,
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
    let policy = sources.first().map(|s| s.source.live_policy().clone());
    let figures = sources.first().map(|s| s.source.figures().clone());
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
        policy,
        figures,
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
