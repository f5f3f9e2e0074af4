//! A Template Distribution client: templates from an external SV2 Template Provider (ours or
//! the C++ sv2-tp), published exactly like the node source publishes them, and solutions sent
//! back to it.
//!
//! Template Distribution acknowledges no `SubmitSolution`, and a provider may go quiet for
//! minutes on an unchanged tip, so neither silence nor a write proves the link alive. The client
//! asks (`RequestTransactionData` for a template id no provider has, answered at once with an
//! error) after every solution and after [`QUIET`] of silence: an answer proves the provider read
//! everything sent before it, no answer within the timeout means the link is dead. A solution
//! stays held until such an answer; on a new link the held ones go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use common_messages_sv2::Protocol;
use mining_types::{Side, Solution, Template};
use sv2_wire::tdp::{submit_solution, template_from_tdp};
use sv2_wire::{AuthorityPublicKey, Connection, Frame, Sv2Error};
use template_distribution_sv2::{
    CoinbaseOutputConstraints, NewTemplate, RequestTransactionData, SetNewPrevHash,
    MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS, MESSAGE_TYPE_NEW_TEMPLATE,
    MESSAGE_TYPE_REQUEST_TRANSACTION_DATA, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR,
    MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS, MESSAGE_TYPE_SET_NEW_PREV_HASH,
    MESSAGE_TYPE_SUBMIT_SOLUTION,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Future templates kept while they wait for their tip.
const MAX_FUTURE: usize = 64;
/// Silence after which the provider is asked whether it is there.
const QUIET: Duration = Duration::from_secs(5);
/// The template id of a probe: ids count up from 1, so no provider has it.
const PROBE_ID: u64 = u64::MAX;

/// Where the provider is and how to trust it.
#[derive(Debug, Clone)]
pub struct TdpClientConfig {
    /// `host:port` of the provider.
    pub address: String,
    /// The provider's authority key, pinned.
    pub authority: AuthorityPublicKey,
    /// The chain; templates carry it.
    pub network: bitcoin::Network,
    /// Bytes our coinbase outputs add beyond the provider's own (payout outputs).
    pub coinbase_output_max_additional_size: u32,
    /// Each step of connecting, and the wait for the first template.
    pub timeout: Duration,
}

/// Sends solutions to the provider; cheap to clone.
#[derive(Debug, Clone)]
pub struct TdpClient {
    solutions: mpsc::UnboundedSender<Solution>,
}

impl TdpClient {
    /// Hands a solution to the connection task; `false` once that task is gone.
    pub fn submit(&self, solution: Solution) -> bool {
        self.solutions.send(solution).is_ok()
    }
}

/// Why the client stopped talking to a provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TdpClientError {
    /// The connection failed.
    #[error("template provider: {0}")]
    Wire(#[from] Sv2Error),
    /// A template we cannot mine on.
    #[error("template provider sent a template we cannot use: {0}")]
    Template(String),
    /// Asked whether it was there, the provider said nothing for this long.
    #[error("template provider silent for {0:?} after being asked: the link is taken as dead")]
    Silent(Duration),
}

impl TdpClientError {
    /// The provider stands in for the node.
    pub fn side(&self) -> Side {
        Side::Node
    }
}

async fn open(
    config: &TdpClientConfig,
    tracker: &TaskTracker,
) -> Result<Connection, TdpClientError> {
    let mut conn = sv2_wire::open(
        &config.address,
        config.authority,
        Protocol::TemplateDistributionProtocol,
        0,
        config.timeout,
        tracker,
    )
    .await?;
    let constraints = CoinbaseOutputConstraints {
        coinbase_output_max_additional_size: config.coinbase_output_max_additional_size,
        coinbase_output_max_additional_sigops: 0,
    };
    conn.writer
        .send(constraints, MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS, false)
        .await?;
    Ok(conn)
}

/// Turns the provider's message stream into templates. Messages borrow their frame, so the
/// ones that wait for a later message are kept as raw payloads.
#[derive(Default)]
struct Assembler {
    future: HashMap<u64, Vec<u8>>,
    prev: Option<Vec<u8>>,
}

fn decode<'a, T: binary_sv2::Deserialize<'a>>(payload: &'a mut [u8]) -> Result<T, TdpClientError> {
    binary_sv2::from_bytes(payload).map_err(|e| TdpClientError::Template(format!("{e:?}")))
}

fn convert(
    t: &NewTemplate<'_>,
    prev: &SetNewPrevHash<'_>,
    network: bitcoin::Network,
) -> Result<Template, TdpClientError> {
    template_from_tdp(t, prev, network).map_err(|e| TdpClientError::Template(e.to_string()))
}

impl Assembler {
    fn on_frame(
        &mut self,
        frame: &Frame,
        network: bitcoin::Network,
    ) -> Result<Option<Template>, TdpClientError> {
        match frame.msg_type {
            MESSAGE_TYPE_NEW_TEMPLATE => {
                let mut raw = frame.payload.clone();
                let t: NewTemplate<'_> = decode(&mut raw)?;
                if t.future_template {
                    if self.future.len() > MAX_FUTURE {
                        self.future.clear();
                    }
                    self.future.insert(t.template_id, frame.payload.clone());
                    return Ok(None);
                }
                let Some(prev_raw) = &self.prev else {
                    return Ok(None);
                };
                let mut prev_raw = prev_raw.clone();
                let prev: SetNewPrevHash<'_> = decode(&mut prev_raw)?;
                convert(&t, &prev, network).map(Some)
            }
            MESSAGE_TYPE_SET_NEW_PREV_HASH => {
                let mut raw = frame.payload.clone();
                let p: SetNewPrevHash<'_> = decode(&mut raw)?;
                let template = match self.future.remove(&p.template_id) {
                    Some(mut t_raw) => {
                        let t: NewTemplate<'_> = decode(&mut t_raw)?;
                        Some(convert(&t, &p, network)?)
                    }
                    None => None,
                };
                self.future.clear();
                self.prev = Some(frame.payload.clone());
                Ok(template)
            }
            MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS
            | MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR => Ok(None),
            other => Err(Sv2Error::Unexpected(other).into()),
        }
    }
}

/// Connects, waits for the first template, and keeps the link up (reconnecting with backoff
/// and keeping the last template meanwhile) until shutdown; its tasks run on `tracker`.
///
/// # Errors
/// When the first connection or the first template fails: a start-up error the operator must
/// see.
pub async fn spawn(
    config: TdpClientConfig,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(TdpClient, watch::Receiver<Arc<Template>>), TdpClientError> {
    let mut conn = open(&config, tracker).await?;
    let mut assembler = Assembler::default();
    let first = loop {
        let frame = conn.frames.recv_timeout(config.timeout).await?;
        if let Some(t) = assembler.on_frame(&frame, config.network)? {
            break t;
        }
    };
    info!(address = %config.address, height = first.height, "first template from the template provider");
    let (tx, rx) = watch::channel(Arc::new(first));
    let (solutions_tx, solutions) = mpsc::unbounded_channel();
    let task = Task {
        config,
        tracker: tracker.clone(),
        out: tx,
        solutions,
        held: VecDeque::new(),
        live: Liveness::new(),
    };
    tracker.spawn(task.run(conn, assembler, shutdown));
    Ok((
        TdpClient {
            solutions: solutions_tx,
        },
        rx,
    ))
}

struct Task {
    config: TdpClientConfig,
    tracker: TaskTracker,
    out: watch::Sender<Arc<Template>>,
    solutions: mpsc::UnboundedReceiver<Solution>,
    /// Solutions written but not yet known to be read, each with the number of the probe sent
    /// after it on the current link.
    held: VecDeque<(u64, Solution)>,
    /// The current link's probes.
    live: Liveness,
}

/// Probes asked and answered on one link, and when it was last heard.
struct Liveness {
    sent: u64,
    answered: u64,
    /// Since when an answer is awaited.
    waiting_since: Option<Instant>,
    heard: Instant,
}

impl Liveness {
    fn new() -> Self {
        Liveness {
            sent: 0,
            answered: 0,
            waiting_since: None,
            heard: Instant::now(),
        }
    }
}

impl Task {
    async fn run(
        mut self,
        mut conn: Connection,
        mut assembler: Assembler,
        shutdown: CancellationToken,
    ) {
        loop {
            let err = tokio::select! {
                () = shutdown.cancelled() => {
                    self.last_words(&mut conn).await;
                    return;
                }
                e = self.serve(&mut conn, &mut assembler) => e,
            };
            warn!(address = %self.config.address, error = %err, side = %err.side(), held = self.held.len(), "template provider link lost; miners keep the last template while reconnecting");
            match self.reconnect(&shutdown).await {
                Some(c) => {
                    conn = c;
                    assembler = Assembler::default();
                }
                None => {
                    self.last_words(&mut conn).await;
                    return;
                }
            }
        }
    }

    /// Templates in, solutions out, until the link fails. Solutions held from a lost link go
    /// first.
    async fn serve(&mut self, conn: &mut Connection, assembler: &mut Assembler) -> TdpClientError {
        self.live = Liveness::new();
        let again: Vec<Solution> = self.held.drain(..).map(|(_, s)| s).collect();
        for s in again {
            info!(template = %s.template_id, "solution sent again on the new template provider link");
            if let Err(e) = self.send_solution(conn, s).await {
                return e;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                frame = conn.frames.recv() => match frame {
                    Ok(f) => {
                        self.heard(f.msg_type);
                        match assembler.on_frame(&f, self.config.network) {
                            Ok(Some(t)) => { self.out.send_replace(Arc::new(t)); }
                            Ok(None) => {}
                            Err(e) => return e,
                        }
                    }
                    Err(e) => return e.into(),
                },
                Some(s) = self.solutions.recv() => {
                    if let Err(e) = self.send_solution(conn, s).await {
                        return e;
                    }
                }
                _ = tick.tick() => {
                    if let Some(since) = self.live.waiting_since {
                        if since.elapsed() > self.config.timeout {
                            return TdpClientError::Silent(since.elapsed());
                        }
                    } else if self.live.heard.elapsed() >= QUIET {
                        if let Err(e) = self.probe(conn).await {
                            return e.into();
                        }
                    }
                }
            }
        }
    }

    /// A frame arrived; a probe's answer releases the solutions sent before that probe.
    fn heard(&mut self, msg_type: u8) {
        self.live.heard = Instant::now();
        if !matches!(
            msg_type,
            MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR
                | MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS
        ) {
            return;
        }
        self.live.answered = (self.live.answered + 1).min(self.live.sent);
        self.live.waiting_since = (self.live.answered < self.live.sent).then(Instant::now);
        while let Some((_, s)) = self
            .held
            .pop_front_if(|(probe, _)| *probe <= self.live.answered)
        {
            info!(template = %s.template_id, "solution received by the template provider");
        }
    }

    async fn probe(&mut self, conn: &mut Connection) -> Result<(), Sv2Error> {
        let ask = RequestTransactionData {
            template_id: PROBE_ID,
        };
        conn.writer
            .send(ask, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA, false)
            .await?;
        self.live.sent += 1;
        self.live.waiting_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Holds `s` until the provider is known to have read it, then writes it and asks.
    async fn send_solution(
        &mut self,
        conn: &mut Connection,
        s: Solution,
    ) -> Result<(), TdpClientError> {
        let msg = submit_solution(&s).map_err(TdpClientError::Wire);
        self.held.push_back((self.live.sent + 1, s.clone()));
        let sent = match msg {
            Ok(msg) => {
                conn.writer
                    .send(msg, MESSAGE_TYPE_SUBMIT_SOLUTION, false)
                    .await
            }
            Err(e) => return Err(e),
        };
        let asked = match sent {
            Ok(()) => self.probe(conn).await,
            Err(e) => Err(e),
        };
        match asked {
            Ok(()) => {
                info!(template = %s.template_id, "solution sent to the template provider");
                Ok(())
            }
            Err(e) => {
                warn!(template = %s.template_id, error = %e, "solution not sent; held for the next link");
                Err(e.into())
            }
        }
    }

    /// At shutdown: what is queued goes out on the link, and for up to 2 s answers are awaited;
    /// a solution still unconfirmed is logged whole, so it can be submitted by hand.
    async fn last_words(&mut self, conn: &mut Connection) {
        let mut queued = Vec::new();
        while let Ok(s) = self.solutions.try_recv() {
            queued.push(s);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut link_ok = true;
        for s in queued {
            if link_ok && self.send_solution(conn, s.clone()).await.is_err() {
                link_ok = false;
            } else if !link_ok {
                self.held.push_back((u64::MAX, s));
            }
        }
        while link_ok && !self.held.is_empty() {
            match tokio::time::timeout_at(deadline, conn.frames.recv()).await {
                Ok(Ok(f)) => self.heard(f.msg_type),
                _ => break,
            }
        }
        for (_, s) in &self.held {
            error!(template = %s.template_id, coinbase = %hex::encode(&s.coinbase_tx), version = s.version.to_consensus(), ntime = s.ntime, nonce = s.nonce, "SOLUTION NOT CONFIRMED by the template provider at shutdown; logged whole so it can be rebuilt");
        }
    }

    async fn reconnect(&self, shutdown: &CancellationToken) -> Option<Connection> {
        let mut backoff = Duration::from_millis(250);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
            match open(&self.config, &self.tracker).await {
                Ok(c) => {
                    info!(address = %self.config.address, "template provider link restored");
                    return Some(c);
                }
                Err(e) => {
                    warn!(address = %self.config.address, error = %e, "template provider still unreachable");
                }
            }
        }
    }
}
