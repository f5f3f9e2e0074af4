//! A Template Distribution client: templates from an external SV2 Template Provider (ours or
//! the C++ sv2-tp), published exactly like the node source publishes them, and solutions sent
//! back to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common_messages_sv2::Protocol;
use mining_types::{Side, Solution, Template};
use sv2_wire::tdp::{submit_solution, template_from_tdp};
use sv2_wire::{AuthorityPublicKey, Connection, Frame, Sv2Error};
use template_distribution_sv2::{
    CoinbaseOutputConstraints, NewTemplate, SetNewPrevHash,
    MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS, MESSAGE_TYPE_NEW_TEMPLATE,
    MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS,
    MESSAGE_TYPE_SET_NEW_PREV_HASH, MESSAGE_TYPE_SUBMIT_SOLUTION,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Future templates kept while they wait for their tip.
const MAX_FUTURE: usize = 64;

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
                () = shutdown.cancelled() => return,
                e = self.serve(&mut conn, &mut assembler) => e,
            };
            warn!(address = %self.config.address, error = %err, side = %err.side(), "template provider link lost; miners keep the last template while reconnecting");
            match self.reconnect(&shutdown).await {
                Some(c) => {
                    conn = c;
                    assembler = Assembler::default();
                }
                None => return,
            }
        }
    }

    /// Templates in, solutions out, until the link fails.
    async fn serve(&mut self, conn: &mut Connection, assembler: &mut Assembler) -> TdpClientError {
        loop {
            tokio::select! {
                frame = conn.frames.recv() => match frame {
                    Ok(f) => match assembler.on_frame(&f, self.config.network) {
                        Ok(Some(t)) => { self.out.send_replace(Arc::new(t)); }
                        Ok(None) => {}
                        Err(e) => return e,
                    },
                    Err(e) => return e.into(),
                },
                Some(s) = self.solutions.recv() => {
                    let sent = match submit_solution(&s) {
                        Ok(msg) => conn.writer.send(msg, MESSAGE_TYPE_SUBMIT_SOLUTION, false).await,
                        Err(e) => Err(e),
                    };
                    match sent {
                        Ok(()) => info!(template = %s.template_id, "solution sent to the template provider"),
                        Err(e) => {
                            warn!(template = %s.template_id, coinbase = %hex::encode(&s.coinbase_tx), version = s.version.to_consensus(), ntime = s.ntime, nonce = s.nonce, "solution not sent; logged here so it can be rebuilt");
                            return e.into();
                        }
                    }
                }
            }
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
