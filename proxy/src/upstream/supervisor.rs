//! Which upstream the farm mines on: the most preferred one that works, else solo. A switch
//! never touches a miner's connection: every session simply gets a clean job with the new
//! coinbase.

use std::sync::Arc;
use std::time::Duration;

use template_provider::Template;
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
}

/// Tries upstreams `from..to` in order; the first that opens wins.
async fn connect_first(
    upstreams: Arc<Vec<UpstreamConfig>>,
    range: std::ops::Range<usize>,
    layout: ExtranonceLayout,
    network: bitcoin::Network,
    config: FailoverConfig,
    hashrate: f32,
    stats: Arc<Stats>,
) -> Option<PoolLink> {
    for i in range {
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
        connect_first(
            self.upstreams.clone(),
            range,
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
    fn publish(&mut self, clean: bool) -> Option<Arc<Job>> {
        let template = self.templates.borrow_and_update().clone();
        let previous = (!clean).then(|| self.jobs.borrow().clone());
        match self.factory.make(template, previous.as_deref()) {
            Ok(job) => {
                let job = Arc::new(job);
                self.jobs.send_replace(job.clone());
                Some(job)
            }
            Err(e) => {
                error!(error = %e, "cannot build a job; miners keep the previous one");
                None
            }
        }
    }

    /// Runs until shutdown.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let n = self.upstreams.len();
        let mut next = self.connect(0..n).await;
        loop {
            let exit = match next.take() {
                Some(link) => {
                    let index = link.index;
                    match self.mine_pool(link, &shutdown).await {
                        Exit::Shutdown => return,
                        Exit::Preempted(better) => {
                            next = Some(*better);
                            continue;
                        }
                        Exit::Failed(e) => (index, e),
                    }
                }
                None => match self.mine_solo(&shutdown).await {
                    Some(link) => {
                        next = Some(link);
                        continue;
                    }
                    None => return,
                },
            };
            let (index, e) = exit;
            warn!(upstream = %self.upstreams[index].name, error = %e, "leaving upstream");
            next = self.connect(index + 1..n).await;
        }
    }

    /// Mines solo until a pool answers again (`Some`) or shutdown (`None`).
    async fn mine_solo(&mut self, shutdown: &CancellationToken) -> Option<PoolLink> {
        self.factory.set_plan(Plan::Solo);
        self.mode.send_replace(Mode::Solo);
        self.publish(true);
        warn!("no upstream available: mining solo on the local node (blocks pay the farm's payout address)");
        let mut retry = tokio::time::interval(self.config.retry_preferred);
        retry.tick().await;
        let mut probe: Option<JoinHandle<Option<PoolLink>>> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                changed = self.templates.changed() => {
                    if changed.is_err() { return None; }
                    self.publish(false);
                }
                _ = retry.tick(), if probe.is_none() => {
                    probe = Some(self.probe(self.upstreams.len()));
                }
                done = async { probe.as_mut().expect("guarded").await }, if probe.is_some() => {
                    probe = None;
                    if let Ok(Some(link)) = done {
                        return Some(link);
                    }
                }
            }
        }
    }

    async fn mine_pool(&mut self, link: PoolLink, shutdown: &CancellationToken) -> Exit {
        let (shares_tx, mut shares) = mpsc::channel::<UpShare>(SHARE_QUEUE);
        let tag = link.tag(shares_tx);
        let declares = link.declares();
        self.factory.set_plan(link.plan(tag.clone()));
        let index = link.index;
        let name = link.name.clone();
        self.mode.send_replace(Mode::Pool {
            index,
            name: name.clone(),
        });
        let mut mining = Mining::new(link);
        if declares {
            info!(upstream = %name, "mining for the pool on the farm's own templates");
            if let Some(job) = self.publish(true) {
                mining.on_job(job);
            }
        } else {
            info!(upstream = %name, "mining the pool's own jobs: the pool chooses the transactions");
        }
        let mut second = tokio::time::interval(Duration::from_secs(1));
        let mut report = tokio::time::interval(self.config.hashrate_report);
        report.tick().await;
        let mut retry = tokio::time::interval(self.config.retry_preferred);
        retry.tick().await;
        let mut probe: Option<JoinHandle<Option<PoolLink>>> = None;
        let result: Result<(), LinkError> = loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Exit::Shutdown,
                changed = self.templates.changed() => {
                    if changed.is_err() { return Exit::Shutdown; }
                    if declares {
                        if let Some(job) = self.publish(false) {
                            mining.on_job(job);
                        }
                    } else {
                        self.templates.borrow_and_update();
                    }
                    Ok(())
                }
                input = mining.next() => match input {
                    Ok(i) => match mining.handle(i).await {
                        Ok(Some(Update::NewPrefix)) => {
                            let link = mining.link();
                            self.factory.set_plan(link.plan(tag.clone()));
                            if declares {
                                if let Some(job) = self.publish(true) {
                                    mining.on_job(job);
                                }
                            }
                            Ok(())
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
                        return Exit::Preempted(Box::new(better));
                    }
                    Ok(())
                }
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        let hashrate = mining.hashrate();
        if hashrate > 0.0 {
            self.hashrate = hashrate;
        }
        // Shares still queued for this pool cannot reach it any more.
        shares.close();
        let mut lost = 0;
        while shares.try_recv().is_ok() {
            lost += 1;
        }
        self.stats.pool_dropped(lost);
        match result {
            Ok(()) => Exit::Shutdown,
            Err(e) => Exit::Failed(e),
        }
    }
}
