//! The declarer task: drives the [`DeclarationQueue`] over a [`JdClient`], so declaring never
//! holds up a pool link's shares, and pushes solutions without waiting for a declaration.

use std::sync::Arc;
use std::time::Instant;

use mining_types::{JobId, Solution, Template};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::client::{JdClient, JdError, SolutionPusher, Token};
use crate::queue::{DeclarationQueue, Outcome, Step};
use crate::Declarable;

/// What is declared to the JDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The template's transaction list (wtxids) goes to the JDS, which may ask for the ones
    /// it lacks: the pool can check and propagate the block.
    FullTemplate,
    /// Only the coinbase: the token alone identifies the job, and the proxy alone propagates
    /// its blocks.
    CoinbaseOnly,
}

/// What the declarer tells its link.
#[derive(Debug)]
pub enum Event {
    /// The JDS took the job: this token goes in its `SetCustomMiningJob`.
    Declared {
        /// The job.
        job: JobId,
        /// Its token.
        token: Token,
    },
    /// The JDS refused or failed; the link must go.
    Failed {
        /// The job being declared, if any.
        job: Option<JobId>,
        /// Why.
        error: JdError,
    },
}

enum Input {
    Declare(Arc<Declarable>),
    DeclareFirst(Arc<Declarable>),
}

/// A link's handle on its declarer; the task stops when this is dropped.
#[derive(Debug)]
pub struct Declarer {
    inputs: mpsc::UnboundedSender<Input>,
    pusher: SolutionPusher,
    tracker: TaskTracker,
    /// What the link reads.
    pub events: mpsc::Receiver<Event>,
    _stop: DropGuard,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Declare(j) => write!(f, "Declare({})", j.id),
            Input::DeclareFirst(j) => write!(f, "DeclareFirst({})", j.id),
        }
    }
}

impl Declarer {
    /// Starts declaring on `client` for `user`, with `spare` as the first job's token; the
    /// task runs on `tracker`.
    pub fn start(
        client: JdClient,
        spare: Token,
        user: String,
        mode: Mode,
        tracker: &TaskTracker,
    ) -> Declarer {
        let (inputs, inputs_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let pusher = client.pusher();
        let task = Task {
            client,
            queue: DeclarationQueue::new(spare),
            user,
            mode,
            inputs: inputs_rx,
            events: events_tx,
        };
        tracker.spawn(task.run(stop.clone()));
        Declarer {
            inputs,
            pusher,
            tracker: tracker.clone(),
            events,
            _stop: stop.drop_guard(),
        }
    }

    /// Declares `job` next, replacing any job still waiting its turn.
    pub fn declare(&self, job: Arc<Declarable>) {
        let _ = self.inputs.send(Input::Declare(job));
    }

    /// Declares `job` before any other waiting job (a block was found on it); a job declared
    /// or being declared already is not declared twice.
    pub fn declare_first(&self, job: Arc<Declarable>) {
        let _ = self.inputs.send(Input::DeclareFirst(job));
    }

    /// Sends a block's solution to the JDS, in a task of its own: a block never waits for a
    /// declaration's answer.
    pub fn push_solution(&self, solution: Solution, template: Arc<Template>, extranonce: Vec<u8>) {
        let pusher = self.pusher.clone();
        self.tracker.spawn(async move {
            match pusher.push(&solution, &template, &extranonce).await {
                Ok(()) => info!(template = %template.id, "solution pushed to the job declarator"),
                Err(e) => {
                    warn!(error = %e, side = %e.side(), "could not push the solution to the job declarator (the local node has the block)");
                }
            }
        });
    }
}

struct Task {
    client: JdClient,
    queue: DeclarationQueue<Arc<Declarable>>,
    user: String,
    mode: Mode,
    inputs: mpsc::UnboundedReceiver<Input>,
    events: mpsc::Sender<Event>,
}

impl Task {
    async fn run(mut self, stop: CancellationToken) {
        // The I/O below is abandoned mid-way at stop: the connection goes with the link.
        let _ = stop.run_until_cancelled(self.serve()).await;
    }

    async fn serve(&mut self) {
        loop {
            while let Ok(input) = self.inputs.try_recv() {
                self.take(input);
            }
            match self.queue.next_step(Instant::now()) {
                Step::Allocate => {
                    let answer = self.client.allocate(&self.user).await.map(|a| a.token);
                    if let Err(outcome) = self.queue.on_token(answer) {
                        self.report(outcome).await;
                        return;
                    }
                }
                Step::Declare { id, job, token } => {
                    let answer = match self.mode {
                        // The token alone identifies the job; the pool judges its coinbase.
                        Mode::CoinbaseOnly => Ok(token),
                        Mode::FullTemplate => self.client.declare(&job, &token).await,
                    };
                    if answer.is_ok() {
                        debug!(job = %id, txs = job.template.txs.len(), "job declared");
                    }
                    let outcome = self.queue.on_declared(answer, Instant::now());
                    if !self.report(outcome).await {
                        return;
                    }
                }
                Step::Wait(until) => {
                    let input = match until {
                        None => self.inputs.recv().await,
                        Some(t) => tokio::select! {
                            i = self.inputs.recv() => i,
                            () = tokio::time::sleep_until(t.into()) => continue,
                        },
                    };
                    match input {
                        Some(i) => self.take(i),
                        None => return,
                    }
                }
            }
        }
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Declare(job) => self.queue.push(job.id, job),
            Input::DeclareFirst(job) => self.queue.push_urgent(job.id, job),
        }
    }

    /// Logs an outcome and passes on what the link acts on; `false` once the declarer must
    /// stop.
    async fn report(&mut self, outcome: Outcome) -> bool {
        let event = match outcome {
            Outcome::Declared { id, token } => Event::Declared { job: id, token },
            Outcome::Retrying { id, attempt } => {
                debug!(job = %id, attempt, "JDS is behind our tip; declaring again shortly");
                return true;
            }
            Outcome::Superseded { id } => {
                debug!(job = %id, "superseded while the JDS caught up");
                return true;
            }
            Outcome::Unclaimable { id, code } => {
                error!(job = %id, %code, "the job a block was found on was refused: the pool cannot credit that block");
                return true;
            }
            Outcome::Failed { id, error } => Event::Failed { job: id, error },
        };
        let failed = matches!(event, Event::Failed { .. });
        self.events.send(event).await.is_ok() && !failed
    }
}
