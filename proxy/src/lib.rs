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
pub mod cli;
pub mod config;
pub mod figures;
pub mod http;
pub mod job;
pub mod ledger;
pub mod metrics;
pub mod reload;
pub mod routing;
pub mod share;
mod sources;
pub mod sv1;
pub mod tdp_client;
pub mod upgrade;
pub mod upstream;

#[cfg(test)]
mod test_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
pub use template_provider::nodes::Serving;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::blocks::BlockSink;
use crate::config::Config;
use crate::figures::Board;
use crate::job::Job;
use crate::metrics::{Snapshot, Stats};
use crate::routing::Router;
use crate::sources::{templates, Sources};
use crate::sv1::admission::Admission;
use crate::sv1::extranonce::Extranonce1Allocator;
use crate::upstream::shares::Links;
pub use crate::upstream::Mode;

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    local_addr: SocketAddr,
    /// The operators' HTTP server, when bound at start.
    http_addr: Option<SocketAddr>,
    stats: Arc<Stats>,
    jobs: watch::Receiver<Arc<Job>>,
    mode: watch::Receiver<Mode>,
    serving: Option<watch::Receiver<Serving>>,
    board: Arc<Board>,
    /// The share ledger, when enabled.
    ledger: Option<ledger::LedgerHandle>,
    /// The vardiff settings sessions follow; a reload sends new ones.
    vardiff: watch::Sender<sv1::vardiff::VardiffConfig>,
    /// The farm's policy on the nodes' templates; `None` with an external template provider.
    policy: Option<template_provider::policy::LivePolicy>,
    /// The routes (one without `[[route]]`): each one's jobs, mode and figures.
    router: Arc<Router>,
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
        let started_at = figures::unix_now();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        plan_connections(&mut config.sv1)?;
        let sources = templates(&config, &tracker, &shutdown).await?;
        let stats = Arc::new(Stats::default());
        let links = Arc::new(Links::default());
        let board = Board::new();
        let sample = config.http.hashrate_sample;
        tracker.spawn(board.clone().sample_every(sample, shutdown.clone()));
        let router = routing::wiring::start(&routing::wiring::Farm {
            config: &config,
            sources: &sources,
            board: &board,
            stats: &stats,
            links: &links,
            tracker: &tracker,
            shutdown: &shutdown,
        })?;
        // The first route's jobs and mode are the farm's (the only ones without routes).
        let (jobs, mode) = (router.jobs(0), router.routes()[0].mode.clone());
        let ledger = ledger::start(&config, &board, &jobs, &stats, &tracker, &shutdown).await?;
        follow(&config, &sources, &board, &tracker, &shutdown);
        let (blocks, found) = BlockSink::new();
        tracker.spawn(blocks::run(
            found,
            sources.route,
            links.clone(),
            stats.clone(),
        ));
        let (vardiff, vardiff_rx) = watch::channel(config.sv1.vardiff);
        let shared = Arc::new(sv1::Shared {
            vardiff: vardiff_rx,
            extranonces: Extranonce1Allocator::new(config.sv1.layout),
            sv1: config.sv1.clone(),
            blocks,
            links,
            stats: stats.clone(),
            fds: sources.fds.clone(),
            board: board.clone(),
            router: Some(router.clone()),
        });
        let served = serve_miners(&config, shared, jobs.clone(), &tracker, &shutdown).await?;
        tracker.spawn(log_status(stats.clone(), router.clone(), shutdown.clone()));
        let shown = Arc::new(http::Shown {
            board: board.clone(),
            stats: stats.clone(),
            jobs: jobs.clone(),
            serving: sources.serving.clone(),
            nodes: config.nodes.iter().map(|n| n.name.clone()).collect(),
            source: sources.figures.clone(),
            started_at,
            ledger: ledger.clone(),
            router: Some(router.clone()),
        });
        let http_addr = http::start(&config.http, shown, &tracker, &shutdown).await;
        let pools = config.upstreams.len();
        info!(listen = %served.local_addr, network = %config.network, upstreams = pools, "jd-proxy serving Stratum V1 miners");
        Ok(Proxy {
            local_addr: served.local_addr,
            http_addr,
            stats,
            jobs,
            mode,
            serving: sources.serving,
            board,
            ledger,
            vardiff,
            policy: sources.policy,
            router,
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

    /// The address of the operators' HTTP server (API, `/metrics`, dashboard), when it was
    /// bound at start (`[http] listen`).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The counters now.
    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Per worker, the shares the pool accepted and rejected.
    pub fn pool_workers(&self) -> Vec<(String, u64, u64)> {
        self.stats.pool_workers()
    }

    /// Where mining goes now: solo, or which pool (the first route's, with `[[route]]`).
    pub fn mode(&self) -> watch::Receiver<Mode> {
        self.mode.clone()
    }

    /// Where route `name` mines now; `None` for a route not configured.
    pub fn route_mode(&self, name: &str) -> Option<watch::Receiver<Mode>> {
        self.router
            .routes()
            .iter()
            .find(|r| r.figures.name == name)
            .map(|r| r.mode.clone())
    }

    /// The routes: each one's jobs, mode and figures, and where each ASIC mines.
    pub fn router(&self) -> Arc<Router> {
        self.router.clone()
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

    /// The share ledger's counters, when it is enabled.
    pub fn ledger(&self) -> Option<&ledger::LedgerHandle> {
        self.ledger.as_ref()
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

/// Onto the board, for the operators: the nodes' verdicts on found blocks, and which node
/// serves templates.
fn follow(
    config: &Config,
    sources: &Sources,
    board: &Arc<Board>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    http::follow_fates(&sources.route, board, tracker, shutdown);
    let names = config.nodes.iter().map(|n| n.name.clone()).collect();
    http::follow_nodes(sources.serving.clone(), names, board, tracker, shutdown);
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

/// One status line a minute: what an operator checks first.
async fn log_status(stats: Arc<Stats>, router: Arc<Router>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let s = stats.snapshot();
        let rejected: u64 = s.rejected.iter().map(|(_, n)| n).sum();
        let mining_for = mining_for(&router);
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

/// Where mining goes: `solo` or the pool's name; with routes, `route: pool` for each.
fn mining_for(router: &Router) -> String {
    let routes = router.routes();
    let each = routes.iter().map(|r| {
        let to = match &*r.mode.borrow() {
            Mode::Solo => "solo".to_owned(),
            Mode::Pool { name, .. } => name.clone(),
        };
        if routes.len() > 1 {
            format!("{}: {to}", r.figures.name)
        } else {
            to
        }
    });
    each.collect::<Vec<_>>().join(", ")
}
