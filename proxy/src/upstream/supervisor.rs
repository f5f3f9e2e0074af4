//! Which upstream the farm mines on: the most preferred one that works, else solo. A switch
//! never touches a miner's connection: every session simply gets a clean job with the new
//! coinbase.

use std::sync::Arc;
use std::time::Duration;

use template_provider::{CoinbaseError, Template};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::link::{Exit, LinkError, Mining, PoolLink, Update, SHARE_QUEUE};
use super::{Mode, UpShare};
use crate::config::{FailoverConfig, UpstreamConfig};
use crate::job::factory::{JobFactory, Plan};
use crate::job::{ExtranonceLayout, Job};
use crate::metrics::Stats;

/// Everything the supervisor drives.
pub struct Supervisor {
    pub upstreams: Arc<Vec<UpstreamConfig>>,
    pub config: FailoverConfig,
    pub layout: ExtranonceLayout,
    pub network: bitcoin::Network,
    pub factory: JobFactory,
    pub templates: watch::Receiver<Arc<Template>>,
    pub jobs: watch::Sender<Arc<Job>>,
    pub mode: watch::Sender<Mode>,
    pub stats: Arc<Stats>,
    /// The farm's last measured hashrate, offered to the next pool's channel.
    pub hashrate: f32,
    /// Per upstream: failures in a row without the pool taking a job, and when it may be
    /// tried again. A pool that keeps refusing is tried less and less often, so miners are
    /// not flipped between it and solo every few seconds.
    pub backoff: Vec<(u32, Option<tokio::time::Instant>)>,
}

/// Tries the upstreams at `order` in turn; the first that opens wins.
async fn connect_first(
    upstreams: Arc<Vec<UpstreamConfig>>,
    order: Vec<usize>,
    layout: ExtranonceLayout,
    network: bitcoin::Network,
    config: FailoverConfig,
    hashrate: f32,
    stats: Arc<Stats>,
) -> Option<PoolLink> {
    for i in order {
        let up = &upstreams[i];
        match PoolLink::open(i, up, layout, network, config, hashrate, stats.clone()).await {
            Ok(link) => return Some(link),
            Err(e) => warn!(upstream = %up.name, error = %e, "upstream unavailable"),
        }
    }
    None
}

impl Supervisor {
    fn connect(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl std::future::Future<Output = Option<PoolLink>> + Send + 'static {
        let now = tokio::time::Instant::now();
        let order = range
            .filter(|&i| {
                self.backoff
                    .get(i)
                    .and_then(|b| b.1)
                    .is_none_or(|t| t <= now)
            })
            .collect();
        connect_first(
            self.upstreams.clone(),
            order,
            self.layout,
            self.network,
            self.config,
            self.hashrate,
            self.stats.clone(),
        )
    }

    /// Tries the upstreams preferred over `to` in the background.
    fn probe(&self, to: usize) -> JoinHandle<Option<PoolLink>> {
        tokio::spawn(self.connect(0..to))
    }

    /// Publishes a job for the current template under the factory's plan; `clean` when the
    /// plan changed, so miners drop work whose coinbase is no longer ours to submit.
    ///
    /// # Errors
    /// A coinbase that cannot be built (miners keep the previous job).
    fn publish(&mut self, clean: bool) -> Result<Arc<Job>, CoinbaseError> {
        let template = self.templates.borrow_and_update().clone();
        let previous = (!clean).then(|| self.jobs.borrow().clone());
        let job = Arc::new(self.factory.make(template, previous.as_deref())?);
        self.jobs.send_replace(job.clone());
        Ok(job)
    }

    /// Runs until shutdown: solo until a pool answers, then the pool until it fails (solo
    /// again at once, while the pools after it are tried) or a preferred one is back.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let n = self.upstreams.len();
        let mut first_try = 0..n;
        loop {
            let Some(link) = self.mine_solo(first_try.clone(), &shutdown).await else {
                return;
            };
            let mut next = Some(link);
            while let Some(link) = next.take() {
                let index = link.index;
                match self.mine_pool(link, &shutdown).await {
                    Exit::Shutdown => return,
                    Exit::Preempted(better) => next = Some(*better),
                    Exit::Failed { error: e, worked } => {
                        let b = &mut self.backoff[index];
                        b.0 = if worked { 1 } else { b.0 + 1 };
                        // Once, twice, then four times the retry interval.
                        let wait = self.config.retry_preferred * (1 << (b.0 - 1).min(2));
                        b.1 = Some(tokio::time::Instant::now() + wait);
                        warn!(upstream = %self.upstreams[index].name, error = %e, retry_in_secs = wait.as_secs(), "leaving upstream");
                        // The pools after the failed one first; the failed one and those
                        // before it wait for the next regular probe.
                        first_try = index + 1..n;
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
    ) -> Option<PoolLink> {
        self.factory.set_plan(Plan::Solo);
        self.mode.send_replace(Mode::Solo);
        if let Err(e) = self.publish(true) {
            error!(error = %e, "cannot build a solo job; miners keep the previous one");
        }
        info!("mining solo on the local node (blocks pay the farm's payout address) while pools are tried");
        let mut retry = tokio::time::interval(self.config.retry_preferred);
        retry.tick().await;
        let mut probe: Option<JoinHandle<Option<PoolLink>>> =
            (!first.is_empty()).then(|| tokio::spawn(self.connect(first)));
        let mut warned = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                changed = self.templates.changed() => {
                    if changed.is_err() { return None; }
                    if let Err(e) = self.publish(false) {
                        error!(error = %e, "cannot build a solo job; miners keep the previous one");
                    }
                }
                _ = retry.tick(), if probe.is_none() => {
                    probe = Some(self.probe(self.upstreams.len()));
                }
                done = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                    probe = None;
                    match done {
                        Ok(Some(link)) => return Some(link),
                        _ if !warned => {
                            warned = true;
                            warn!("no upstream available: mining solo until one answers");
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    async fn mine_pool(&mut self, link: PoolLink, shutdown: &CancellationToken) -> Exit {
        let (shares_tx, mut shares) = mpsc::channel::<UpShare>(SHARE_QUEUE);
        let (blocks_tx, mut blocks) = mpsc::unbounded_channel::<UpShare>();
        let tag = link.tag(shares_tx, blocks_tx);
        let declares = link.declares();
        self.factory.set_plan(link.plan(tag.clone()));
        let index = link.index;
        let name = link.name.clone();
        self.mode.send_replace(Mode::Pool {
            index,
            name: name.clone(),
        });
        let mut mining = Mining::new(link);
        let mut result: Result<(), LinkError> = Ok(());
        if declares {
            info!(upstream = %name, "mining for the pool on the farm's own templates");
            match self.publish(true) {
                Ok(job) => mining.on_job(job),
                Err(e) => result = Err(unbuildable(&e)),
            }
        } else {
            info!(upstream = %name, "mining the pool's own jobs: the pool chooses the transactions");
        }
        let mut second = tokio::time::interval(Duration::from_secs(1));
        // The channel opened on the last known hashrate (none at first start): report the
        // measured one soon, then at the configured pace.
        let mut report = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.hashrate_report.min(Duration::from_secs(5)),
            self.config.hashrate_report,
        );
        let mut retry = tokio::time::interval(self.config.retry_preferred);
        retry.tick().await;
        let mut probe: Option<JoinHandle<Option<PoolLink>>> = None;
        while result.is_ok() {
            // Timers and blocks before the share stream, so a busy farm never starves them.
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Exit::Shutdown,
                Some(block) = blocks.recv() => {
                    let r = mining.on_share(block);
                    match r {
                        Ok(()) => mining.flush().await,
                        Err(e) => Err(e),
                    }
                }
                _ = second.tick() => mining.check_timeouts(),
                _ = report.tick() => match mining.report().await {
                    Ok(h) => { self.hashrate = h; Ok(()) }
                    Err(e) => Err(e),
                },
                _ = retry.tick(), if index > 0 && probe.is_none() => {
                    probe = Some(self.probe(index));
                    Ok(())
                }
                done = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                    probe = None;
                    if let Ok(Some(better)) = done {
                        info!(from = %name, to = %better.name, "a preferred upstream is back");
                        // This pool is healthy: what it was handed still goes to it.
                        while let Ok(s) = blocks.try_recv().or_else(|_| shares.try_recv()) {
                            let _ = mining.on_share(s);
                        }
                        let _ = mining.flush().await;
                        return Exit::Preempted(Box::new(better));
                    }
                    Ok(())
                }
                changed = self.templates.changed() => {
                    if changed.is_err() { return Exit::Shutdown; }
                    if declares {
                        self.publish(false).map(|job| mining.on_job(job)).map_err(|e| unbuildable(&e))
                    } else {
                        self.templates.borrow_and_update();
                        Ok(())
                    }
                }
                input = mining.next() => match input {
                    Ok(i) => match mining.handle(i).await {
                        Ok(Some(Update::NewPrefix)) => {
                            self.factory.set_plan(mining.link().plan(tag.clone()));
                            if declares {
                                self.publish(true).map(|job| mining.on_job(job)).map_err(|e| unbuildable(&e))
                            } else {
                                Ok(())
                            }
                        }
                        Ok(Some(Update::PoolJob(p))) => {
                            let p = *p;
                            let job = Arc::new(self.factory.make_with(Arc::new(p.template), p.coinbase, p.clean, Some(tag.clone())));
                            self.jobs.send_replace(job.clone());
                            mining.on_pool_job(job, p.pool_job);
                            Ok(())
                        }
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                Some(share) = shares.recv() => {
                    // Take the whole burst, then write it in one go.
                    let mut r = mining.on_share(share);
                    while r.is_ok() {
                        match shares.try_recv() {
                            Ok(s) => r = mining.on_share(s),
                            Err(_) => break,
                        }
                    }
                    match r {
                        Ok(()) => mining.flush().await,
                        Err(e) => Err(e),
                    }
                }
            };
            result = step;
        }
        if let Some(p) = probe.take() {
            p.abort();
        }
        let hashrate = mining.hashrate();
        if hashrate > 0.0 {
            self.hashrate = hashrate;
        }
        // What is still queued for this pool cannot reach it any more.
        shares.close();
        blocks.close();
        let mut lost = 0;
        while shares.try_recv().is_ok() {
            lost += 1;
        }
        while let Ok(b) = blocks.try_recv() {
            lost += 1;
            error!(upstream = %name, hash = %b.hash, worker = %b.worker, "block share not sent: the pool link failed (a block on the farm's own template went to the local node)");
        }
        self.stats.pool_dropped(lost);
        match result {
            Ok(()) => Exit::Shutdown,
            Err(error) => Exit::Failed {
                error,
                worked: mining.worked(),
            },
        }
    }
}

fn unbuildable(e: &CoinbaseError) -> LinkError {
    LinkError::Unsupported(format!(
        "cannot build a job with this pool's coinbase (its extranonce prefix and our tag): {e}"
    ))
}
