//! One Template Distribution client: setup, constraints, then templates out and requests in.

use std::net::SocketAddr;
use std::sync::Arc;

use binary_sv2::{Seq064K, Str0255, B016M, B064K};
use bitcoin::BlockHash;
use common_messages_sv2::{
    Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
    MESSAGE_TYPE_SETUP_CONNECTION, MESSAGE_TYPE_SETUP_CONNECTION_ERROR,
    MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS,
};
use mining_types::{Side, Template, TemplateId};
use sv2_wire::tdp::{solution_from_tdp, NewTemplateParts, PrevHashParts, TDP_VERSION};
use sv2_wire::{accept, spawn_reader, Frame, Frames, NoiseWriter, Sv2Error};
use template_distribution_sv2::{
    CoinbaseOutputConstraints, RequestTransactionData, RequestTransactionDataError,
    RequestTransactionDataSuccess, SubmitSolution, MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS,
    MESSAGE_TYPE_NEW_TEMPLATE, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA,
    MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS,
    MESSAGE_TYPE_SET_NEW_PREV_HASH, MESSAGE_TYPE_SUBMIT_SOLUTION,
};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::server::Shared;
use crate::blocks::FoundBlock;

/// Why a client's session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("server shutting down")]
    Shutdown,
    #[error("template source stopped")]
    SourceStopped,
    #[error("no {0} within the setup timeout")]
    SetupTimeout(&'static str),
    #[error("expected {expected}, got message type 0x{got:02x}")]
    OutOfOrder { expected: &'static str, got: u8 },
    #[error("refused SetupConnection: {0}")]
    Refused(&'static str),
    #[error("too many solutions that are no block ({0} a minute); the client is cut off")]
    SolutionFlood(u32),
    #[error(transparent)]
    Wire(#[from] Sv2Error),
}

impl SessionEnd {
    /// A shutdown or a dead source is ours; the rest is the client's doing.
    fn side(&self) -> Side {
        match self {
            SessionEnd::Shutdown | SessionEnd::SourceStopped => Side::Local,
            _ => Side::Miner,
        }
    }
}

/// Solutions that are no block a client may submit per minute; an honest one sends none.
const MAX_SOLUTIONS_PER_MINUTE: u32 = 60;

pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    templates: watch::Receiver<Arc<Template>>,
    shutdown: CancellationToken,
) {
    let cfg = &shared.config;
    let (reader, writer) =
        match accept(stream, &cfg.keys, cfg.cert_validity, cfg.handshake_timeout).await {
            Ok(halves) => halves,
            Err(e) => {
                warn!(%peer, error = %e, "TDP client dropped during the handshake");
                return;
            }
        };
    let frames = spawn_reader(reader, &shared.tracker);
    let mut session = Session {
        peer,
        shared: shared.clone(),
        writer,
        last_prev: None,
        vendor: String::new(),
        solutions: (tokio::time::Instant::now(), 0),
    };
    let end = tokio::select! {
        () = shutdown.cancelled() => SessionEnd::Shutdown,
        r = session.serve(templates, frames) => r,
    };
    let side = end.side();
    info!(%peer, vendor = %session.vendor, reason = %end, %side, "TDP client disconnected");
}

struct Session {
    peer: SocketAddr,
    shared: Arc<Shared>,
    writer: NoiseWriter,
    last_prev: Option<BlockHash>,
    vendor: String,
    /// The current minute's start and the solutions in it.
    solutions: (tokio::time::Instant, u32),
}

impl Session {
    /// Serves until the client leaves or misbehaves; the reason is always an end.
    async fn serve(
        &mut self,
        mut templates: watch::Receiver<Arc<Template>>,
        mut frames: Frames,
    ) -> SessionEnd {
        match self.setup(&mut frames).await {
            Ok(()) => {}
            Err(end) => return end,
        }
        let current = templates.borrow_and_update().clone();
        if let Err(e) = self.announce(&current).await {
            return e;
        }
        loop {
            let step = tokio::select! {
                changed = templates.changed() => match changed {
                    Err(_) => Err(SessionEnd::SourceStopped),
                    Ok(()) => {
                        let t = templates.borrow_and_update().clone();
                        self.announce(&t).await
                    }
                },
                frame = frames.recv() => match frame {
                    Ok(mut f) => self.handle(&mut f).await,
                    Err(e) => Err(e.into()),
                },
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// `SetupConnection`, then the client's coinbase needs, before templates flow.
    async fn setup(&mut self, frames: &mut Frames) -> Result<(), SessionEnd> {
        let timeout = self.shared.config.setup_timeout;
        let mut frame = frames
            .recv_timeout(timeout)
            .await
            .map_err(|e| timed_out(e, "SetupConnection"))?;
        self.setup_connection(&mut frame).await?;
        let mut frame = frames
            .recv_timeout(timeout)
            .await
            .map_err(|e| timed_out(e, "CoinbaseOutputConstraints"))?;
        if frame.msg_type != MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS {
            return Err(SessionEnd::OutOfOrder {
                expected: "CoinbaseOutputConstraints",
                got: frame.msg_type,
            });
        }
        self.constraints(&mut frame)
    }

    async fn setup_connection(&mut self, frame: &mut Frame) -> Result<(), SessionEnd> {
        if frame.msg_type != MESSAGE_TYPE_SETUP_CONNECTION {
            return Err(SessionEnd::OutOfOrder {
                expected: "SetupConnection",
                got: frame.msg_type,
            });
        }
        let setup: SetupConnection<'_> = frame.decode()?;
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
                .send(err, MESSAGE_TYPE_SETUP_CONNECTION_ERROR, false)
                .await;
            return Err(SessionEnd::Refused(code));
        }
        let ok = SetupConnectionSuccess {
            used_version: TDP_VERSION,
            flags: 0,
        };
        self.writer
            .send(ok, MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS, false)
            .await?;
        info!(peer = %self.peer, vendor = %self.vendor, "TDP client connected");
        Ok(())
    }

    fn constraints(&mut self, frame: &mut Frame) -> Result<(), SessionEnd> {
        let c: CoinbaseOutputConstraints = frame.decode()?;
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
    async fn announce(&mut self, t: &Template) -> Result<(), SessionEnd> {
        let new_tip = self.last_prev != Some(t.prev_hash);
        let parts = NewTemplateParts::of(t);
        self.writer
            .send(parts.message(t, new_tip), MESSAGE_TYPE_NEW_TEMPLATE, false)
            .await?;
        if new_tip {
            let prev = PrevHashParts::of(t);
            self.writer
                .send(prev.message(t), MESSAGE_TYPE_SET_NEW_PREV_HASH, false)
                .await?;
            self.last_prev = Some(t.prev_hash);
        }
        debug!(peer = %self.peer, id = %t.id, height = t.height, new_tip, "template sent");
        Ok(())
    }

    async fn handle(&mut self, frame: &mut Frame) -> Result<(), SessionEnd> {
        match frame.msg_type {
            MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS => self.constraints(frame),
            MESSAGE_TYPE_REQUEST_TRANSACTION_DATA => {
                let req: RequestTransactionData = frame.decode()?;
                self.transaction_data(TemplateId::new(req.template_id))
                    .await
            }
            MESSAGE_TYPE_SUBMIT_SOLUTION => {
                let sol: SubmitSolution<'_> = frame.decode()?;
                self.solution(&sol)
            }
            other => Err(Sv2Error::Unexpected(other).into()),
        }
    }

    async fn transaction_data(&mut self, id: TemplateId) -> Result<(), SessionEnd> {
        let Some(t) = self.shared.store.get(id) else {
            let err = RequestTransactionDataError {
                template_id: id.get(),
                error_code: Str0255::try_from(&b"template-id-not-found"[..]).expect("short code"),
            };
            self.writer
                .send(err, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_ERROR, false)
                .await?;
            return Ok(());
        };
        let list: Vec<B016M<'_>> = t
            .txs
            .iter()
            .map(|tx| {
                B016M::try_from(&tx.data[..])
                    .map_err(|e| Sv2Error::Encode(format!("transaction too large: {e:?}")))
            })
            .collect::<Result<_, _>>()?;
        let ok = RequestTransactionDataSuccess {
            template_id: id.get(),
            excess_data: B064K::try_from(&[][..]).expect("empty fits"),
            transaction_list: Seq064K::new(list)
                .map_err(|e| Sv2Error::Encode(format!("too many transactions: {e:?}")))?,
        };
        self.writer
            .send(ok, MESSAGE_TYPE_REQUEST_TRANSACTION_DATA_SUCCESS, false)
            .await?;
        Ok(())
    }

    /// Bounds what a client can make us do for nothing: solutions that are no block. A real
    /// block is never counted, so no rate of them can lose one (on regtest every share is one).
    fn count_solution(&mut self) -> Result<(), SessionEnd> {
        let (start, n) = &mut self.solutions;
        if start.elapsed() > std::time::Duration::from_secs(60) {
            *start = tokio::time::Instant::now();
            *n = 0;
        }
        *n += 1;
        if *n > MAX_SOLUTIONS_PER_MINUTE {
            return Err(SessionEnd::SolutionFlood(*n));
        }
        Ok(())
    }

    /// A block: built here from the stored template and submitted in a tracked task of its
    /// own, so the node's answer never holds up this client's templates and shutdown waits
    /// for it.
    fn solution(&mut self, sol: &SubmitSolution<'_>) -> Result<(), SessionEnd> {
        let solution = solution_from_tdp(sol);
        let Some(t) = self.shared.store.get(solution.template_id) else {
            warn!(peer = %self.peer, template = sol.template_id, "solution for a template we no longer have");
            return self.count_solution();
        };
        // The header first (one hash, no copy of the block): only a solution that meets the
        // block's target is worth assembling and sending to the node.
        match solution.header(&t).map(|h| h.validate_pow(h.target())) {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                warn!(peer = %self.peer, template = sol.template_id, "solution does not meet the block's target");
                return self.count_solution();
            }
            Err(e) => {
                warn!(peer = %self.peer, error = %e, "unusable solution");
                return self.count_solution();
            }
        }
        match solution.assemble(&t) {
            Ok(block) => {
                info!(peer = %self.peer, hash = %block.hash, height = t.height, "BLOCK FOUND by a TDP client");
                let blocks = self.shared.blocks.clone();
                let found = FoundBlock {
                    hash: block.hash,
                    height: t.height,
                    bytes: block.bytes,
                    found_by: format!("tdp:{}", self.peer),
                };
                self.shared.tracker.spawn(async move {
                    blocks.found(found).await;
                });
            }
            Err(e) => warn!(peer = %self.peer, error = %e, "unusable solution"),
        }
        Ok(())
    }
}

/// A setup step that did not come in time is named; other errors stay as they are.
fn timed_out(e: Sv2Error, what: &'static str) -> SessionEnd {
    match e {
        Sv2Error::Timeout(_) => SessionEnd::SetupTimeout(what),
        other => other.into(),
    }
}
