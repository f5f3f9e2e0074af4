//! The thread that hosts the `!Send` IPC runtime, one session after another.

use std::path::PathBuf;
use std::time::Duration;

use bitcoin_core_sv2::runtime_api::template_distribution_protocol;
use bitcoin_core_sv2::runtime_api::BitcoinCoreSv2Error;
use parsers_sv2::TemplateDistributionOwned;
use template_distribution_sv2::CoinbaseOutputConstraintsOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    BACKOFF_MAX, BACKOFF_START, COINBASE_OUTPUT_MAX_ADDITIONAL_SIGOPS,
    COINBASE_OUTPUT_MAX_ADDITIONAL_SIZE, CONNECT_TIMEOUT, CORE_VERSION,
};

/// What the IPC thread tells the driver.
pub(super) enum Event {
    /// A new session is up; the constraints are sent.
    Connected {
        to_node: async_channel::Sender<TemplateDistributionOwned>,
        from_node: async_channel::Receiver<TemplateDistributionOwned>,
    },
    /// A connection attempt failed.
    ConnectFailed(ConnectError),
    /// The session's runtime stopped (connection lost or the node refused a request).
    Ended,
}

/// Why a connection to the node's IPC socket failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The thread's own Tokio runtime could not be built.
    #[error("cannot build the IPC thread's runtime: {0}")]
    Runtime(std::io::Error),
    /// The IPC client could not connect or set up its session.
    #[error("{0}")]
    Client(BitcoinCoreSv2Error),
    /// The handshake did not finish in time.
    #[error("no IPC handshake within {0:?}")]
    Timeout(Duration),
}

/// The thread that hosts the `!Send` IPC runtime, one session after another.
pub(super) struct IpcThread {
    pub(super) socket: PathBuf,
    pub(super) fee_threshold_sat: u64,
    pub(super) min_interval: u8,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) stop: CancellationToken,
}

impl IpcThread {
    pub(super) fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = self
                    .events
                    .send(Event::ConnectFailed(ConnectError::Runtime(e)));
                return;
            }
        };
        let mut failures = 0u32;
        while !self.stop.is_cancelled() {
            // A LocalSet per session: dropping it drops every task the runtime spawned (the
            // Cap'n Proto connection among them), so a failed session leaves nothing behind.
            let local = tokio::task::LocalSet::new();
            let connected = local.block_on(&rt, self.session());
            drop(local);
            if self.stop.is_cancelled() || self.events.is_closed() {
                break;
            }
            failures = if connected {
                1
            } else {
                failures.saturating_add(1)
            };
            let backoff = BACKOFF_START
                .saturating_mul(1 << failures.saturating_sub(1).min(6))
                .min(BACKOFF_MAX);
            debug!(
                ?backoff,
                "reconnecting to the node's IPC socket after a pause"
            );
            rt.block_on(async {
                tokio::select! {
                    _ = self.stop.cancelled() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
            });
        }
        debug!("IPC thread done");
    }

    /// One connection, until it fails or we stop; `true` when it got connected.
    async fn session(&self) -> bool {
        // The runtime cancels this token when the connection fails; ours cancels it on stop.
        let token = self.stop.child_token();
        let (to_node, to_node_rx) = async_channel::unbounded();
        let (from_node_tx, from_node) = async_channel::unbounded();
        let created = tokio::select! {
            _ = self.stop.cancelled() => return false,
            r = tokio::time::timeout(CONNECT_TIMEOUT, template_distribution_protocol::new(
                CORE_VERSION,
                &self.socket,
                self.fee_threshold_sat,
                self.min_interval,
                to_node_rx,
                from_node_tx,
                token.clone(),
            )) => r,
        };
        let mut runtime = match created {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = self
                    .events
                    .send(Event::ConnectFailed(ConnectError::Client(e)));
                return false;
            }
            Err(_) => {
                let _ = self
                    .events
                    .send(Event::ConnectFailed(ConnectError::Timeout(CONNECT_TIMEOUT)));
                return false;
            }
        };
        // Templates start flowing once the node knows how much room our coinbase needs.
        let constraints =
            TemplateDistributionOwned::CoinbaseOutputConstraints(CoinbaseOutputConstraintsOwned {
                coinbase_output_max_additional_size: COINBASE_OUTPUT_MAX_ADDITIONAL_SIZE,
                coinbase_output_max_additional_sigops: COINBASE_OUTPUT_MAX_ADDITIONAL_SIGOPS,
            });
        if to_node.try_send(constraints).is_err()
            || self
                .events
                .send(Event::Connected { to_node, from_node })
                .is_err()
        {
            token.cancel();
            return true;
        }
        // Returns when `token` is cancelled: by the runtime on an IPC failure, or by stop.
        runtime.run().await;
        token.cancel();
        let _ = self.events.send(Event::Ended);
        true
    }
}
