//! A Template Distribution client: templates from an external SV2 Template Provider (ours or
//! the C++ sv2-tp) published exactly like the node source publishes them, and solutions sent
//! back to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use binary_sv2::B064K;
use common_messages_sv2::Protocol;
use template_distribution_sv2::{
    CoinbaseOutputConstraints, NewTemplate, SetNewPrevHash, SubmitSolution,
    MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS, MESSAGE_TYPE_NEW_TEMPLATE,
    MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS,
    MESSAGE_TYPE_SET_NEW_PREV_HASH, MESSAGE_TYPE_SUBMIT_SOLUTION,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::messages::template_from_tdp;
use super::TDP_VERSION;
use crate::sv2::client::OpenError;
use crate::sv2::{AuthorityPublicKey, Frame, NoiseWriter, Sv2Error};
use crate::template::Template;

/// Where the provider is and how to trust it.
#[derive(Debug, Clone)]
pub struct TdpClientConfig {
    /// `host:port` of the provider.
    pub address: String,
    /// The provider's authority key, pinned.
    pub authority: AuthorityPublicKey,
    pub network: bitcoin::Network,
    /// Bytes our coinbase outputs add beyond the provider's own (payout outputs).
    pub coinbase_output_max_additional_size: u32,
    pub timeout: Duration,
}

/// A block solution for the provider to assemble and submit.
#[derive(Debug, Clone)]
pub struct Solution {
    pub template_id: u64,
    pub version: u32,
    pub ntime: u32,
    pub nonce: u32,
    /// The whole coinbase, serialized with its witness.
    pub coinbase_tx: Vec<u8>,
}

/// Sends solutions to the provider; cheap to clone.
#[derive(Debug, Clone)]
pub struct TdpClient {
    solutions: mpsc::UnboundedSender<Solution>,
}

impl TdpClient {
    /// Hands a solution to the connection task.
    pub fn submit(&self, solution: Solution) -> bool {
        self.solutions.send(solution).is_ok()
    }
}

/// Why the client stopped talking to a provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TdpClientError {
    #[error("cannot reach the template provider at {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("template provider {0}")]
    Sv2(#[from] Sv2Error),
    #[error("template provider refused the setup: {0}")]
    Refused(String),
    #[error("template provider sent a template we cannot use: {0}")]
    Template(String),
    #[error("no template from the provider within {0:?}")]
    NoTemplate(Duration),
}

struct Link {
    reader: mpsc::Receiver<Result<Frame, Sv2Error>>,
    writer: NoiseWriter,
}

async fn open(config: &TdpClientConfig) -> Result<Link, TdpClientError> {
    let client = crate::sv2::client::open(
        &config.address,
        config.authority,
        Protocol::TemplateDistributionProtocol,
        TDP_VERSION,
        0,
        config.timeout,
    )
    .await
    .map_err(|e| match e {
        OpenError::Connect { address, source } => TdpClientError::Connect { address, source },
        OpenError::Sv2(e) => TdpClientError::Sv2(e),
        OpenError::Refused(r) => TdpClientError::Refused(r),
        OpenError::Timeout(t) => TdpClientError::NoTemplate(t),
    })?;
    let (reader, mut writer) = (client.frames, client.writer);
    let constraints = CoinbaseOutputConstraints {
        coinbase_output_max_additional_size: config.coinbase_output_max_additional_size,
        coinbase_output_max_additional_sigops: 0,
    };
    writer
        .send(constraints, MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS, false)
        .await?;
    Ok(Link { reader, writer })
}

async fn recv(
    reader: &mut mpsc::Receiver<Result<Frame, Sv2Error>>,
    timeout: Duration,
) -> Result<Frame, TdpClientError> {
    match tokio::time::timeout(timeout, reader.recv()).await {
        Ok(Some(Ok(f))) => Ok(f),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(None) => Err(Sv2Error::Closed.into()),
        Err(_) => Err(TdpClientError::NoTemplate(timeout)),
    }
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

impl Assembler {
    fn on_frame(
        &mut self,
        frame: &mut Frame,
        network: bitcoin::Network,
    ) -> Result<Option<Template>, TdpClientError> {
        match frame.msg_type {
            MESSAGE_TYPE_NEW_TEMPLATE => {
                let mut raw = frame.payload.clone();
                let t: NewTemplate<'_> = decode(&mut raw)?;
                if t.future_template {
                    if self.future.len() > 64 {
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
                template_from_tdp(&t, &prev, network)
                    .map(Some)
                    .map_err(|e| TdpClientError::Template(e.to_string()))
            }
            MESSAGE_TYPE_SET_NEW_PREV_HASH => {
                let mut raw = frame.payload.clone();
                let p: SetNewPrevHash<'_> = decode(&mut raw)?;
                let template = match self.future.remove(&p.template_id) {
                    Some(mut t_raw) => {
                        let t: NewTemplate<'_> = decode(&mut t_raw)?;
                        Some(
                            template_from_tdp(&t, &p, network)
                                .map_err(|e| TdpClientError::Template(e.to_string()))?,
                        )
                    }
                    None => None,
                };
                self.future.clear();
                self.prev = Some(frame.payload.clone());
                Ok(template)
            }
            MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS
            | MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR => Ok(None),
            other => Err(TdpClientError::Template(format!(
                "unexpected message type 0x{other:02x}"
            ))),
        }
    }
}

/// Connects, waits for the first template, and keeps the link up (reconnecting with backoff
/// and keeping the last template meanwhile) until shutdown.
///
/// # Errors
/// When the first connection or the first template fails: a start-up error the operator must see.
pub async fn spawn(
    config: TdpClientConfig,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<(TdpClient, watch::Receiver<Arc<Template>>), TdpClientError> {
    let mut link = open(&config).await?;
    let mut assembler = Assembler::default();
    let first = loop {
        let mut frame = recv(&mut link.reader, config.timeout).await?;
        if let Some(t) = assembler.on_frame(&mut frame, config.network)? {
            break t;
        }
    };
    info!(address = %config.address, height = first.height, "first template from the template provider");
    let (tx, rx) = watch::channel(Arc::new(first));
    let (solutions_tx, solutions) = mpsc::unbounded_channel();
    tracker.spawn(run(config, link, assembler, tx, solutions, shutdown));
    Ok((
        TdpClient {
            solutions: solutions_tx,
        },
        rx,
    ))
}

async fn run(
    config: TdpClientConfig,
    mut link: Link,
    mut assembler: Assembler,
    out: watch::Sender<Arc<Template>>,
    mut solutions: mpsc::UnboundedReceiver<Solution>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let err = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                frame = link.reader.recv() => match frame {
                    Some(Ok(mut f)) => match assembler.on_frame(&mut f, config.network) {
                        Ok(Some(t)) => { out.send_replace(Arc::new(t)); }
                        Ok(None) => {}
                        Err(e) => break e,
                    },
                    Some(Err(e)) => break e.into(),
                    None => break Sv2Error::Closed.into(),
                },
                Some(s) = solutions.recv() => {
                    let msg = SubmitSolution {
                        template_id: s.template_id,
                        version: s.version,
                        header_timestamp: s.ntime,
                        header_nonce: s.nonce,
                        coinbase_tx: match B064K::try_from(&s.coinbase_tx[..]) { Ok(b) => b, Err(e) => { warn!("coinbase too large for SubmitSolution: {e:?}"); continue } },
                    };
                    match link.writer.send(msg, MESSAGE_TYPE_SUBMIT_SOLUTION, false).await {
                        Ok(()) => info!(template = s.template_id, "solution sent to the template provider"),
                        Err(e) => break e.into(),
                    }
                }
            }
        };
        warn!(address = %config.address, error = %err, "template provider link lost; miners keep the last template while reconnecting");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
            match open(&config).await {
                Ok(l) => {
                    link = l;
                    assembler = Assembler::default();
                    backoff = Duration::from_millis(250);
                    info!(address = %config.address, "template provider link restored");
                    break;
                }
                Err(e) => {
                    warn!(address = %config.address, error = %e, "template provider still unreachable")
                }
            }
        }
    }
}
