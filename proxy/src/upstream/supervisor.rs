//! Which upstream a route mines on: the most preferred of its pools that works, else solo.
//! The decisions are [`Failover`]'s; this task carries them out, one per route. A switch never
//! touches a miner's connection: every session of the route simply gets a clean job with the
//! new coinbase, and the other routes see nothing of it.
//!
//! While none of the farm's nodes answers there are no templates to declare: the farm mines
//! the pool's own jobs on a plain channel to the same pool (the pool's node has the tip), and
//! goes back to declaring its own templates the moment a node answers again.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::channel::{Channel, Exit, OpenContext, RunContext};
use super::failover::Failover;
use super::shares::Links;
use super::Mode;
use crate::config::UpstreamConfig;
use crate::figures::upstream::{RouteFigures, UpstreamMode};
use crate::figures::Board;
use crate::job::{Command, Plan};
use template_provider::nodes::Serving;

/// Everything the supervisor drives.
#[derive(Debug)]
pub struct Supervisor {
    /// Every configured pool (`[[upstream]]`, in file order).
    pub upstreams: Arc<Vec<UpstreamConfig>>,
    /// The route's pools, most preferred first: indices into `upstreams`.
    pub order: Vec<usize>,
    /// Which to try, and when: over places in `order`.
    pub failover: Failover,
    /// What opening a channel needs; its hashrate is the farm's last measured one.
    pub open: OpenContext,
    /// Where channels register their inboxes.
    pub links: Arc<Links>,
    /// The job publisher.
    pub publisher: mpsc::UnboundedSender<Command>,
    /// Where mining goes, for the status line and tests.
    pub mode: watch::Sender<Mode>,
    /// Which of the farm's nodes serves templates (none: the pool's own jobs are mined).
    pub serving: Option<watch::Receiver<Serving>>,
    /// Where the mode, its changes and the failovers are shown.
    pub board: Arc<Board>,
    /// The route's own figures.
    pub route: Arc<RouteFigures>,
}

/// A preferred upstream back, or the other kind of channel to the same one.
type Probe = JoinHandle<Option<Channel>>;

/// Tries the upstreams at `order` in turn; the first that opens wins.
async fn connect_first(
    upstreams: Arc<Vec<UpstreamConfig>>,
    order: Vec<usize>,
    ctx: OpenContext,
) -> Option<Channel> {
    for i in order {
        let up = &upstreams[i];
        match Channel::open(i, up, ctx.clone()).await {
            Ok(channel) => return Some(channel),
            Err(e) => {
                warn!(upstream = %up.name, error = %e, side = %e.side(), "upstream unavailable");
            }
        }
    }
    None
}

impl Supervisor {
    /// Tries the eligible upstreams at the places `range` of the route's order in the
    /// background, on the tracker.
    fn probe(&self, range: std::ops::Range<usize>) -> Probe {
        let order = self
            .failover
            .eligible(range, Instant::now())
            .into_iter()
            .filter_map(|place| self.order.get(place).copied())
            .collect();
        let upstreams = Arc::new(self.usable_upstreams());
        let tracker: &TaskTracker = &self.open.tracker;
        tracker.spawn(connect_first(upstreams, order, self.open.clone()))
    }

    /// Whether the farm has templates to declare.
    fn nodes_up(&self) -> bool {
        self.serving
            .as_ref()
            .is_none_or(|s| matches!(*s.borrow(), Serving::Node(_)))
    }

    /// The upstreams as they can be used now: without a node answering, without their JDS.
    fn usable_upstreams(&self) -> Vec<UpstreamConfig> {
        let up = self.nodes_up();
        self.upstreams
            .iter()
            .map(|u| UpstreamConfig {
                jds: if up { u.jds.clone() } else { None },
                ..u.clone()
            })
            .collect()
    }

    /// The same upstream opened as the nodes now allow, when that is not how it is open.
    fn reopen_if_needed(&self, index: usize, declares: bool) -> Option<Probe> {
        let wanted = self.usable_upstreams().into_iter().nth(index)?;
        if wanted.jds.is_some() == declares {
            return None;
        }
        if declares {
            warn!(upstream = %wanted.name, "no node answers: mining the pool's own jobs on a plain channel until one does");
        } else {
            info!(upstream = %wanted.name, "a node answers again: back to the farm's own templates");
        }
        let ctx = self.open.clone();
        Some(self.open.tracker.spawn(async move {
            match Channel::open(index, &wanted, ctx).await {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(upstream = %wanted.name, error = %e, side = %e.side(), "cannot reopen the upstream");
                    None
                }
            }
        }))
    }

    /// The place of upstream `index` in the route's order.
    fn place(&self, index: usize) -> usize {
        self.order.iter().position(|&i| i == index).unwrap_or(0)
    }

    fn run_context(&self, stop: CancellationToken, shutdown: &CancellationToken) -> RunContext {
        RunContext {
            links: self.links.clone(),
            publisher: self.publisher.clone(),
            stop,
            shutdown: shutdown.clone(),
        }
    }

    /// Runs until shutdown: solo until a pool answers, then the pool until it fails (solo
    /// again at once, while the pools after it are tried) or a preferred one is back.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut first_try = 0..self.failover.len();
        let mut why = "start";
        loop {
            let Some(channel) = self.mine_solo(first_try.clone(), why, &shutdown).await else {
                return;
            };
            let mut next = Some(channel);
            let mut entered = "pool_up";
            while let Some(channel) = next.take() {
                let index = channel.index;
                let taken = Instant::now();
                match self.mine_pool(channel, entered, &shutdown).await {
                    (Exit::Shutdown, _) => return,
                    (Exit::Stopped, better) => {
                        entered = match &better {
                            Some(b) if b.index != index => "preferred_back",
                            Some(b) if b.declares() => "node_back",
                            Some(_) => "node_down",
                            None => "stopped",
                        };
                        self.board.route_failed_over(&self.route, entered);
                        next = better;
                    }
                    (Exit::Failed { error, worked }, _) => {
                        why = error.reason();
                        self.board.route_failed_over(&self.route, why);
                        let now = Instant::now();
                        let mined = worked.then(|| now.duration_since(taken));
                        let (wait, after) = self.failover.failed(self.place(index), mined, now);
                        warn!(route = %self.route.name, upstream = %self.upstreams[index].name, %error, side = %error.side(), retry_in_secs = wait.as_secs(), "leaving upstream");
                        first_try = after;
                    }
                }
            }
        }
    }

    /// Mines solo, trying `first` at once and every upstream every `retry_preferred`; returns
    /// the first pool that answers, or `None` at shutdown.
    async fn mine_solo(
        &mut self,
        first: std::ops::Range<usize>,
        why: &str,
        shutdown: &CancellationToken,
    ) -> Option<Channel> {
        let _ = self.publisher.send(Command::SetPlan(Plan::Solo));
        self.mode.send_replace(Mode::Solo);
        self.board
            .route_changed(&self.route, UpstreamMode::Solo, None, why);
        info!(route = %self.route.name, "mining solo on the local node (blocks pay the farm's payout address) while pools are tried");
        let mut retry = tokio::time::interval(self.open.config.retry_preferred);
        retry.tick().await;
        let mut probe = (!first.is_empty()).then(|| self.probe(first));
        let mut warned = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                _ = retry.tick(), if probe.is_none() => {
                    probe = Some(self.probe(self.failover.preferred_over(None)));
                }
                done = wait(&mut probe) => {
                    probe = None;
                    match done {
                        Some(channel) => return Some(channel),
                        None if !warned => {
                            warned = true;
                            warn!(route = %self.route.name, "no upstream available: mining solo until one answers");
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Mines on `channel` until it ends; a preferred pool that answers meanwhile takes over
    /// and is returned with [`Exit::Stopped`].
    async fn mine_pool(
        &mut self,
        channel: Channel,
        why: &str,
        shutdown: &CancellationToken,
    ) -> (Exit, Option<Channel>) {
        let index = channel.index;
        let declares = channel.declares();
        self.mode.send_replace(Mode::Pool {
            index,
            name: channel.name.clone(),
        });
        let mode = if declares {
            UpstreamMode::Declared
        } else {
            UpstreamMode::PoolJobs
        };
        self.board
            .route_changed(&self.route, mode, Some(&channel.name), why);
        let stop = CancellationToken::new();
        let run = channel.run(self.run_context(stop.clone(), shutdown));
        tokio::pin!(run);
        let mut retry = tokio::time::interval(self.open.config.retry_preferred);
        retry.tick().await;
        let mut probe: Option<Probe> = self.reopen_if_needed(index, declares);
        let mut serving = self.serving.clone();
        let mut better = None;
        loop {
            tokio::select! {
                (exit, hashrate) = &mut run => {
                    if hashrate > 0.0 {
                        self.open.hashrate = hashrate;
                    }
                    if let Some(p) = probe.take() {
                        p.abort();
                    }
                    return (exit, better);
                }
                Ok(()) = changed(&mut serving), if probe.is_none() && better.is_none() => {
                    probe = self.reopen_if_needed(index, declares);
                }
                _ = retry.tick(), if self.place(index) > 0 && probe.is_none() && better.is_none() => {
                    probe = Some(self.probe(self.failover.preferred_over(Some(self.place(index)))));
                }
                done = wait(&mut probe) => {
                    probe = None;
                    if let Some(b) = done {
                        if b.index != index {
                            info!(route = %self.route.name, from = %self.upstreams[index].name, to = %b.name, "a preferred upstream is back");
                        }
                        better = Some(b);
                        stop.cancel();
                    }
                }
            }
        }
    }
}

/// The probe's result; pending forever when there is no probe, so it can sit in a `select!`.
async fn wait(probe: &mut Option<JoinHandle<Option<Channel>>>) -> Option<Channel> {
    match probe {
        Some(p) => p.await.ok().flatten(),
        None => std::future::pending().await,
    }
}

/// The next change of which node serves; pending forever without a node set.
async fn changed(
    serving: &mut Option<watch::Receiver<Serving>>,
) -> Result<(), watch::error::RecvError> {
    match serving {
        Some(s) => s.changed().await,
        None => std::future::pending().await,
    }
}
