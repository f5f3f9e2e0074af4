//! Starting the routes: for each, a job publisher on the farm's templates and, when it has
//! pools, a supervisor with its own failover; then the router over them and its rebalancer.
//!
//! Every publisher numbers its jobs in a block of its own, so a session moved between routes
//! never holds two jobs under one id; every channel registers in the one [`Links`], whose ids
//! are unique across routes.

use std::sync::Arc;

use anyhow::Context;
use mining_types::CoinbaseConfig;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::router::{RouteLive, Router};
use super::rules::{RouteSpec, RouteTable};
use crate::config::Config;
use crate::figures::upstream::RouteFigures;
use crate::figures::Board;
use crate::job::{Command, JobFactory, JobIds, Publisher};
use crate::metrics::Stats;
use crate::sources::Sources;
use crate::upstream::channel::OpenContext;
use crate::upstream::failover::Failover;
use crate::upstream::shares::Links;
use crate::upstream::supervisor::Supervisor;
use crate::upstream::Mode;

/// What the routes share.
pub(crate) struct Farm<'a> {
    pub config: &'a Config,
    pub sources: &'a Sources,
    pub board: &'a Arc<Board>,
    pub stats: &'a Arc<Stats>,
    pub links: &'a Arc<Links>,
    pub tracker: &'a TaskTracker,
    pub shutdown: &'a CancellationToken,
}

/// Starts every route's publisher and supervisor, and the rebalancer.
///
/// # Errors
/// The first job cannot be built (a coinbase tag that does not fit).
pub(crate) fn start(farm: &Farm<'_>) -> anyhow::Result<Arc<Router>> {
    let config = farm.config;
    let count = config.routes.len();
    let figures: Vec<Arc<RouteFigures>> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| RouteFigures::new(i, &r.name))
        .collect();
    farm.board.set_routes(figures.clone());
    let mut routes = Vec::with_capacity(count);
    for (i, (spec, figures)) in config.routes.iter().zip(figures).enumerate() {
        routes.push(start_route(farm, spec, figures, JobIds::block(i, count))?);
    }
    let table = RouteTable::new(config.routes.clone(), config.customers.clone());
    let router = Arc::new(Router::new(table, routes, config.routing.tolerance));
    farm.tracker.spawn(router.clone().rebalance_every(
        farm.board.clone(),
        config.routing.rebalance,
        farm.shutdown.clone(),
    ));
    Ok(router)
}

/// One route: its publisher, and its supervisor when it has pools.
fn start_route(
    farm: &Farm<'_>,
    spec: &RouteSpec,
    figures: Arc<RouteFigures>,
    ids: JobIds,
) -> anyhow::Result<RouteLive> {
    // Tip-to-notify is timed on the first route's clean jobs: one figure per tip.
    let timed = figures.index == 0;
    let (jobs, commands) = publish_jobs(farm, ids, timed)?;
    let (mode_tx, mode) = watch::channel(Mode::Solo);
    if !spec.upstreams.is_empty() {
        let config = farm.config;
        let supervisor = Supervisor {
            failover: Failover::new(spec.upstreams.len(), config.failover.retry_preferred),
            upstreams: Arc::new(config.upstreams.clone()),
            order: spec.upstreams.clone(),
            open: open_context(farm, &figures),
            links: farm.links.clone(),
            publisher: commands.clone(),
            mode: mode_tx,
            serving: farm.sources.serving.clone(),
            board: farm.board.clone(),
            route: figures.clone(),
        };
        farm.tracker.spawn(supervisor.run(farm.shutdown.clone()));
    }
    Ok(RouteLive {
        figures,
        jobs,
        mode,
        commands,
    })
}

/// Builds the route's first job and starts its publisher, which turns every later template
/// into jobs: the jobs the route's sessions read, and where plans and pool jobs go.
fn publish_jobs(
    farm: &Farm<'_>,
    ids: JobIds,
    timed: bool,
) -> anyhow::Result<(
    watch::Receiver<Arc<crate::job::Job>>,
    mpsc::UnboundedSender<Command>,
)> {
    let sources = farm.sources;
    let coinbase = CoinbaseConfig {
        payout_script: sources.payout_script.clone(),
        tag: farm.config.coinbase_tag.clone(),
    };
    let mut factory = JobFactory::new(coinbase, farm.config.sv1.layout).with_ids(ids);
    let first = factory
        .make(sources.templates.borrow().clone(), None)
        .context("building the first job (check coinbase.tag)")?;
    let (jobs_tx, jobs) = watch::channel(Arc::new(first));
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let timing = if timed {
        crate::http::notify_timing(sources.figures.as_ref(), farm.board)
    } else {
        None
    };
    let publisher = Publisher {
        factory,
        templates: sources.templates.clone(),
        commands: commands_rx,
        jobs: jobs_tx,
        timing,
    };
    farm.tracker.spawn(publisher.run(farm.shutdown.clone()));
    Ok((jobs, commands))
}

/// What a pool link of the route needs to open, the farm's counters and board included.
fn open_context(farm: &Farm<'_>, route: &Arc<RouteFigures>) -> OpenContext {
    let config = farm.config;
    OpenContext {
        layout: config.sv1.layout,
        network: config.network,
        config: config.failover,
        hashrate: 0.0,
        stats: farm.stats.clone(),
        board: farm.board.clone(),
        route: route.clone(),
        tracker: farm.tracker.clone(),
    }
}
