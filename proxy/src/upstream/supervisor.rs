//! Which upstream the farm mines on: the most preferred one that works, else solo. The
//! decisions are [`Failover`]'s; this task carries them out. A switch never touches a miner's
//! connection: every session simply gets a clean job with the new coinbase.
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
use crate::job::{Command, Plan};
use template_provider::nodes::Serving;

/// Everything the supervisor drives.
#[derive(Debug)]
pub struct Supervisor {
    /// The pools, most preferred first.
    pub upstreams: Arc<Vec<UpstreamConfig>>,
    /// Which to try, and when.
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
    /// Tries the eligible upstreams of `range` in the background, on the tracker.
    fn probe(&self, range: std::ops::Range<usize>) -> Probe {
        let order = self.failover.eligible(range, Instant::now());
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
        loop {
            let Some(channel) = self.mine_solo(first_try.clone(), &shutdown).await else {
                return;
            };
            let mut next = Some(channel);
            while let Some(channel) = next.take() {
                let index = channel.index;
                match self.mine_pool(channel, &shutdown).await {
                    (Exit::Shutdown, _) => return,
                    (Exit::Stopped, better) => next = better,
                    (Exit::Failed { error, worked }, _) => {
                        let (wait, after) = self.failover.failed(index, worked, Instant::now());
                        warn!(upstream = %self.upstreams[index].name, %error, side = %error.side(), retry_in_secs = wait.as_secs(), "leaving upstream");
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
        shutdown: &CancellationToken,
    ) -> Option<Channel> {
        let _ = self.publisher.send(Command::SetPlan(Plan::Solo));
        self.mode.send_replace(Mode::Solo);
        info!("mining solo on the local node (blocks pay the farm's payout address) while pools are tried");
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
                            warn!("no upstream available: mining solo until one answers");
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
        shutdown: &CancellationToken,
    ) -> (Exit, Option<Channel>) {
        let index = channel.index;
        let declares = channel.declares();
        self.mode.send_replace(Mode::Pool {
            index,
            name: channel.name.clone(),
        });
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
                _ = retry.tick(), if index > 0 && probe.is_none() && better.is_none() => {
                    probe = Some(self.probe(self.failover.preferred_over(Some(index))));
                }
                done = wait(&mut probe) => {
                    probe = None;
                    if let Some(b) = done {
                        if b.index != index {
                            info!(from = %self.upstreams[index].name, to = %b.name, "a preferred upstream is back");
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
