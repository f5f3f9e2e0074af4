//! One Template Distribution client: setup, constraints, then templates out and requests in.

use std::net::SocketAddr;
use std::sync::Arc;

use binary_sv2::{Seq064K, Str0255, B016M, B064K};
use bitcoin::BlockHash;
use common_messages_sv2::{
    Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
};
use template_distribution_sv2::{
    CoinbaseOutputConstraints, RequestTransactionData, RequestTransactionDataError,
    RequestTransactionDataSuccess, SubmitSolution, MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS,
    MESSAGE_TYPE_NEW_TEMPLATE, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA,
    MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS,
    MESSAGE_TYPE_SET_NEW_PREV_HASH, MESSAGE_TYPE_SUBMIT_SOLUTION,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::messages::{block_from_solution, NewTemplateParts, PrevHashParts};
use super::server::Shared;
use super::TDP_VERSION;
use crate::sv2::{accept, Frame, NoiseWriter, Sv2Error};
use crate::template::Template;

const SETUP_CONNECTION: u8 = common_messages_sv2::MESSAGE_TYPE_SETUP_CONNECTION;

pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    templates: watch::Receiver<Arc<Template>>,
    shutdown: CancellationToken,
) {
    let cfg = &shared.config;
    let (mut reader, writer) =
        match accept(stream, &cfg.keys, cfg.cert_validity, cfg.handshake_timeout).await {
            Ok(halves) => halves,
            Err(e) => {
                warn!(%peer, error = %e, "TDP client dropped during the handshake");
                return;
            }
        };
    // Reading is not cancel safe, so it gets a task of its own; the session selects on frames.
    let (frames_tx, frames) = mpsc::channel::<Result<Frame, Sv2Error>>(16);
    let reader_task = tokio::spawn(async move {
        loop {
            let frame = reader.recv().await;
            let stop = frame.is_err();
            if frames_tx.send(frame).await.is_err() || stop {
                return;
            }
        }
    });
    let mut session = Session {
        peer,
        shared: shared.clone(),
        writer,
        last_prev: None,
        vendor: String::new(),
    };
    let reason = tokio::select! {
        _ = shutdown.cancelled() => "server shutting down".to_owned(),
        r = session.serve(templates, frames) => match r {
            Ok(()) => "closed".to_owned(),
            Err(e) => e,
        },
    };
    reader_task.abort();
    info!(%peer, vendor = %session.vendor, %reason, "TDP client disconnected");
}

async fn next_frame(frames: &mut mpsc::Receiver<Result<Frame, Sv2Error>>) -> Result<Frame, String> {
    match frames.recv().await {
        Some(Ok(f)) => Ok(f),
        Some(Err(Sv2Error::Closed)) | None => Err("closed by the client".into()),
        Some(Err(e)) => Err(e.to_string()),
    }
}

async fn setup_frame(
    frames: &mut mpsc::Receiver<Result<Frame, Sv2Error>>,
    timeout: std::time::Duration,
) -> Result<Frame, String> {
    tokio::time::timeout(timeout, next_frame(frames))
        .await
        .map_err(|_| "no setup within the timeout".to_owned())?
}

struct Session {
    peer: SocketAddr,
    shared: Arc<Shared>,
    writer: NoiseWriter,
    last_prev: Option<BlockHash>,
    vendor: String,
}

impl Session {
    async fn serve(
        &mut self,
        mut templates: watch::Receiver<Arc<Template>>,
        mut frames: mpsc::Receiver<Result<Frame, Sv2Error>>,
    ) -> Result<(), String> {
        let timeout = self.shared.config.setup_timeout;
        let mut frame = setup_frame(&mut frames, timeout).await?;
        self.setup(&mut frame).await?;
        // The client states its coinbase needs before templates flow.
        let mut frame = setup_frame(&mut frames, timeout).await?;
        if frame.msg_type != MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS {
            return Err(format!(
                "expected CoinbaseOutputConstraints, got message type 0x{:02x}",
                frame.msg_type
            ));
        }
        self.constraints(&mut frame)?;
        let current = templates.borrow_and_update().clone();
        self.announce(&current).await?;
        loop {
            tokio::select! {
                changed = templates.changed() => {
                    changed.map_err(|_| "template source stopped".to_owned())?;
                    let t = templates.borrow_and_update().clone();
                    self.announce(&t).await?;
                }
                frame = next_frame(&mut frames) => {
                    let mut frame = frame?;
                    self.handle(&mut frame).await?;
                }
            }
        }
    }

    async fn setup(&mut self, frame: &mut Frame) -> Result<(), String> {
        if frame.msg_type != SETUP_CONNECTION {
            return Err(format!(
                "expected SetupConnection, got message type 0x{:02x}",
                frame.msg_type
            ));
        }
        let setup: SetupConnection<'_> = binary_sv2::from_bytes(&mut frame.payload)
            .map_err(|e| format!("bad SetupConnection: {e:?}"))?;
        let supported = setup.protocol == Protocol::TemplateDistributionProtocol
            && setup.min_version <= TDP_VERSION
            && TDP_VERSION <= setup.max_version;
        self.vendor = String::from_utf8_lossy(setup.vendor.as_bytes())
            .chars()
            .take(64)
            .collect();
        if !supported {
            let code = if setup.protocol == Protocol::TemplateDistributionProtocol {
                "protocol-version-mismatch"
            } else {
                "unsupported-protocol"
            };
            let err = SetupConnectionError {
                flags: 0,
                error_code: Str0255::try_from(code.as_bytes()).expect("short code"),
            };
            let _ = self
                .writer
                .send(
                    err,
                    common_messages_sv2::MESSAGE_TYPE_SETUP_CONNECTION_ERROR,
                    false,
                )
                .await;
            return Err(format!("refused SetupConnection: {code}"));
        }
        self.writer
            .send(
                SetupConnectionSuccess {
                    used_version: TDP_VERSION,
                    flags: 0,
                },
                common_messages_sv2::MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS,
                false,
            )
            .await
            .map_err(|e| e.to_string())?;
        info!(peer = %self.peer, vendor = %self.vendor, "TDP client connected");
        Ok(())
    }

    fn constraints(&mut self, frame: &mut Frame) -> Result<(), String> {
        let c: CoinbaseOutputConstraints = binary_sv2::from_bytes(&mut frame.payload)
            .map_err(|e| format!("bad CoinbaseOutputConstraints: {e:?}"))?;
        // Bitcoin Core keeps 4000 weight units and 400 sigops free for the coinbase.
        if c.coinbase_output_max_additional_size > 1000
            || c.coinbase_output_max_additional_sigops > 400
        {
            warn!(peer = %self.peer, size = c.coinbase_output_max_additional_size, sigops = c.coinbase_output_max_additional_sigops, "client asks for more coinbase room than the node reserves; templates may be too full for it");
        }
        debug!(peer = %self.peer, size = c.coinbase_output_max_additional_size, sigops = c.coinbase_output_max_additional_sigops, "coinbase output constraints");
        Ok(())
    }

    /// Sends a template: on a new tip as a future template followed by the new prev hash.
    async fn announce(&mut self, t: &Template) -> Result<(), String> {
        let new_tip = self.last_prev != Some(t.prev_hash);
        let parts = NewTemplateParts::of(t);
        self.writer
            .send(parts.message(t, new_tip), MESSAGE_TYPE_NEW_TEMPLATE, false)
            .await
            .map_err(|e| e.to_string())?;
        if new_tip {
            let prev = PrevHashParts::of(t);
            self.writer
                .send(prev.message(t), MESSAGE_TYPE_SET_NEW_PREV_HASH, false)
                .await
                .map_err(|e| e.to_string())?;
            self.last_prev = Some(t.prev_hash);
        }
        debug!(peer = %self.peer, id = %t.id, height = t.height, new_tip, "template sent");
        Ok(())
    }

    async fn handle(&mut self, frame: &mut Frame) -> Result<(), String> {
        match frame.msg_type {
            MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS => self.constraints(frame),
            MESSAGE_TYPE_REQUEST_TRANSACTION_DATA => {
                let req: RequestTransactionData = binary_sv2::from_bytes(&mut frame.payload)
                    .map_err(|e| format!("bad RequestTransactionData: {e:?}"))?;
                self.transaction_data(req.template_id).await
            }
            MESSAGE_TYPE_SUBMIT_SOLUTION => {
                let sol: SubmitSolution<'_> = binary_sv2::from_bytes(&mut frame.payload)
                    .map_err(|e| format!("bad SubmitSolution: {e:?}"))?;
                self.solution(&sol);
                Ok(())
            }
            other => Err(format!("unexpected message type 0x{other:02x}")),
        }
    }

    async fn transaction_data(&mut self, id: u64) -> Result<(), String> {
        let Some(t) = self.shared.store.get(id) else {
            let err = RequestTransactionDataError {
                template_id: id,
                error_code: Str0255::try_from(&b"template-id-not-found"[..]).expect("short code"),
            };
            return self
                .writer
                .send(err, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR, false)
                .await
                .map_err(|e| e.to_string());
        };
        let list: Vec<B016M<'_>> = t
            .txs
            .iter()
            .map(|tx| {
                B016M::try_from(&tx.data[..]).map_err(|e| format!("transaction too large: {e:?}"))
            })
            .collect::<Result<_, _>>()?;
        let ok = RequestTransactionDataSuccess {
            template_id: id,
            excess_data: B064K::try_from(&[][..]).expect("empty fits"),
            transaction_list: Seq064K::new(list)
                .map_err(|e| format!("too many transactions: {e:?}"))?,
        };
        self.writer
            .send(ok, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS, false)
            .await
            .map_err(|e| e.to_string())
    }

    /// A block: built here from the stored template and submitted in a task of its own, so
    /// the node's answer never holds up this client's templates.
    fn solution(&mut self, sol: &SubmitSolution<'_>) {
        let Some(t) = self.shared.store.get(sol.template_id) else {
            warn!(peer = %self.peer, template = sol.template_id, "solution for a template we no longer have");
            return;
        };
        match block_from_solution(&t, sol) {
            Ok((hash, block)) => {
                info!(peer = %self.peer, %hash, height = t.height, "BLOCK FOUND by a TDP client");
                let blocks = self.shared.blocks.clone();
                let who = format!("tdp:{}", self.peer);
                let height = t.height;
                tokio::spawn(async move {
                    blocks.submit(hash, height, &block, &who).await;
                });
            }
            Err(e) => warn!(peer = %self.peer, error = %e, "unusable solution"),
        }
    }
}
