//! The JDS side of a pool link, in a task of its own so declaring never holds up shares: it
//! declares the newest job (skipping any superseded while it was busy), keeps one token in
//! hand for the next, and pushes solutions.

use std::collections::VecDeque;
use std::sync::Arc;

use job_declarator::{Declaration, JdClient, JdError, Solution, SolutionPusher, Token};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::DeclarationMode;
use crate::job::{Job, JobId};

/// The JDS's answer when its tip is not the job's.
const STALE_TIP: &str = "stale-chain-tip";
/// How often, and how far apart, a declaration refused for a tip the JDS has not seen yet is
/// tried again before the pool is given up.
const STALE_RETRIES: u32 = 16;
const STALE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

/// What the declarer reports.
#[derive(Debug)]
pub enum Event {
    /// The JDS accepted the job: this token goes in its `SetCustomMiningJob`.
    Declared { job: JobId, token: Token },
    /// The JDS refused or failed; the link must go.
    Failed { job: Option<JobId>, error: JdError },
}

/// The link's handle on its declarer; the task stops when this is dropped.
#[derive(Debug)]
pub struct Declarer {
    jobs: watch::Sender<Option<Arc<Job>>>,
    /// Jobs with a block found on them: declared next, even when newer jobs exist, so the
    /// pool can still credit the block.
    urgent: mpsc::UnboundedSender<Arc<Job>>,
    pusher: SolutionPusher,
    pub events: mpsc::Receiver<Event>,
    task: JoinHandle<()>,
}

impl Drop for Declarer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Declarer {
    /// Starts declaring on `client`, with `spare` as the first job's token.
    pub fn start(client: JdClient, spare: Token, user: String, mode: DeclarationMode) -> Declarer {
        let (jobs, jobs_rx) = watch::channel(None);
        let (urgent, urgent_rx) = mpsc::unbounded_channel();
        let pusher = client.pusher();
        let (events_tx, events) = mpsc::channel(16);
        let task = tokio::spawn(run(
            client,
            spare,
            user,
            mode,
            Inputs {
                jobs: jobs_rx,
                urgent: urgent_rx,
            },
            events_tx,
        ));
        Declarer {
            jobs,
            urgent,
            pusher,
            events,
            task,
        }
    }

    /// Declares `job` next, replacing any job still waiting its turn.
    pub fn declare(&self, job: Arc<Job>) {
        self.jobs.send_replace(Some(job));
    }

    /// Declares `job` before any other waiting job (a block was found on it); a job already
    /// declared or being declared is not declared twice.
    pub fn declare_first(&self, job: Arc<Job>) {
        let _ = self.urgent.send(job);
    }

    /// Sends a solution to the JDS.
    pub fn push_solution(&self, s: Solution) {
        // Its own task: a block must not wait for a declaration's answer.
        let pusher = self.pusher.clone();
        tokio::spawn(async move {
            match pusher.push(&s).await {
                Ok(()) => info!("solution pushed to the job declarator"),
                Err(e) => {
                    warn!(error = %e, "could not push the solution to the job declarator (the local node has the block)")
                }
            }
        });
    }
}

/// What the declarer task reads.
struct Inputs {
    jobs: watch::Receiver<Option<Arc<Job>>>,
    urgent: mpsc::UnboundedReceiver<Arc<Job>>,
}

async fn run(
    mut client: JdClient,
    spare: Token,
    user: String,
    mode: DeclarationMode,
    inputs: Inputs,
    events: mpsc::Sender<Event>,
) {
    let Inputs {
        mut jobs,
        mut urgent,
    } = inputs;
    let mut spare = Some(spare);
    // Jobs declared or being declared, so an urgent request never declares one twice.
    let mut recent: VecDeque<JobId> = VecDeque::new();
    loop {
        let (job, first) = tokio::select! {
            biased;
            Some(job) = urgent.recv() => (job, true),
            changed = jobs.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(job) = jobs.borrow_and_update().clone() else {
                    continue;
                };
                (job, false)
            }
        };
        if recent.contains(&job.id) {
            continue;
        }
        recent.push_back(job.id);
        if recent.len() > 32 {
            recent.pop_front();
        }
        if mode == DeclarationMode::CoinbaseOnly {
            // The token alone identifies the job; the pool judges it by its coinbase.
            let token = match spare.take() {
                Some(t) => Ok(t),
                None => client.allocate(&user).await.map(|a| a.token),
            };
            let event = match token {
                Ok(token) => Event::Declared { job: job.id, token },
                Err(error) => Event::Failed {
                    job: Some(job.id),
                    error,
                },
            };
            let failed = matches!(event, Event::Failed { .. });
            if events.send(event).await.is_err() || failed {
                return;
            }
            continue;
        }
        let Some((coinbase_prefix, coinbase_suffix)) = job.coinbase.witness_parts() else {
            warn!(job = %job.id, "template has no witness commitment; cannot declare it");
            continue;
        };
        let mut attempt = 0;
        let result = loop {
            let token = match spare.take() {
                Some(t) => t,
                None => match client.allocate(&user).await {
                    Ok(a) => a.token,
                    Err(error) => break Err(error),
                },
            };
            let declaration = Declaration {
                token,
                version: job.template.version as u32,
                coinbase_prefix: coinbase_prefix.clone(),
                coinbase_suffix: coinbase_suffix.clone(),
                template: &job.template,
            };
            match client.declare(&declaration).await {
                // Our node can see a block a moment before the pool's does: give the
                // JDS that moment, unless a newer job replaces this one meanwhile.
                Err(JdError::Refused { code })
                    if code == STALE_TIP
                        && attempt < STALE_RETRIES
                        && !first
                        && !jobs.has_changed().unwrap_or(true) =>
                {
                    attempt += 1;
                    debug!(job = %job.id, attempt, "JDS is behind our tip; declaring again shortly");
                    tokio::time::sleep(STALE_RETRY_DELAY).await;
                }
                other => break other,
            }
        };
        match result {
            Ok(token) => {
                debug!(job = %job.id, txs = job.template.txs.len(), "job declared");
                if events
                    .send(Event::Declared { job: job.id, token })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // A job declared late for its block: the JDS may have moved on. The pool cannot
            // credit that block (it is on the chain through the local node); the link is fine.
            Err(JdError::Refused { code }) if first => {
                error!(job = %job.id, %code, "the job a block was found on was refused: the pool cannot credit that block");
                continue;
            }
            Err(JdError::Refused { code })
                if code == STALE_TIP && jobs.has_changed().unwrap_or(false) =>
            {
                debug!(job = %job.id, "superseded while the JDS caught up");
                continue;
            }
            Err(error) => {
                let _ = events
                    .send(Event::Failed {
                        job: Some(job.id),
                        error,
                    })
                    .await;
                return;
            }
        }
        // The next template should not wait for a token round trip.
        match client.allocate(&user).await {
            Ok(a) => spare = Some(a.token),
            Err(error) => {
                let _ = events.send(Event::Failed { job: None, error }).await;
                return;
            }
        }
    }
}
