//! Templates from Bitcoin Core 30+ over its IPC interface (`bitcoin-node -ipcbind=unix`).
//!
//! The node's Cap'n Proto mining interface is spoken by `bitcoin_core_sv2` (the Stratum V2
//! reference implementation's client), which turns it into a Template Distribution message
//! stream. Its runtime is `!Send`, so it runs on a thread of its own, inside a `LocalSet` on a
//! single-threaded Tokio runtime; messages cross to us over channels.
//!
//! What happens, per connection (a "session"):
//! 1. we send `CoinbaseOutputConstraints`; the runtime asks the node for a block template
//!    (`createNewBlock`) and sends `NewTemplate` + `SetNewPrevHash`;
//! 2. the runtime keeps one `waitNext` call outstanding at the node, which returns the moment
//!    the tip changes (or fees in reach rise by `fee_threshold_sat`, at most every
//!    `min_interval`); each return becomes `NewTemplate` (+ `SetNewPrevHash` on a new tip, sent
//!    right after its template);
//! 3. for **every** `NewTemplate` we send `RequestTransactionData`; once the transactions are
//!    in, the template is complete: decoded, checked against its merkle path, filtered by the
//!    farm's policy and published.
//!
//! Nothing here polls the node: a new template reaches the watch channel because the node
//! answered a waiting call. A lost connection (node restarted, socket gone) is logged, the last
//! template stays published, and the thread reconnects with backoff.
//!
//! Template ids are the IPC stream's ids, offset after a reconnect (the runtime restarts at 0)
//! so they keep increasing for the life of the process. The Template Distribution stream does
//! not say what each transaction pays (`fee: None`; Core's `BlockTemplate.getTxFees` is not
//! passed through by `bitcoin_core_sv2`): a policy that must remove a transaction therefore
//! cannot correct the coinbase value, and such a template is refused (logged as an error,
//! nothing new published), never mined unfiltered.

mod driver;
mod thread;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bitcoin_core_sv2::runtime_api::BitcoinCoreVersion;
use mining_types::Template;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::driver::Driver;
pub use self::driver::TemplateError;
pub use self::thread::ConnectError;
use self::thread::IpcThread;
pub use crate::config::IpcConfig;
use crate::policy::{LivePolicy, PolicyError};

/// The IPC schema family spoken: Bitcoin Core v31.x.
const CORE_VERSION: BitcoinCoreVersion = BitcoinCoreVersion::V31X;
/// Bytes our coinbase outputs may add: with the header and the rest of the coinbase this makes
/// the node keep 4000 weight units free, as `getblocktemplate` does (and as the policy's
/// `MAX_TX_WEIGHT` assumes).
const COINBASE_OUTPUT_MAX_ADDITIONAL_SIZE: u32 = 1_000;
/// Sigops our coinbase outputs may add (Bitcoin Core's own coinbase reserve).
const COINBASE_OUTPUT_MAX_ADDITIONAL_SIGOPS: u16 = 400;
/// How long [`spawn`] waits for the first complete template.
const FIRST_TEMPLATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one connection attempt (socket + IPC handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff: doubles from the first value up to the second.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Why the IPC backend did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    /// No socket file.
    #[error("no Bitcoin Core IPC socket at {}: {reason} (start bitcoin-node with -ipcbind=unix; the socket is <datadir>/<chain>/node.sock)", socket.display())]
    NoSocket {
        /// The path.
        socket: PathBuf,
        /// Why it cannot be used.
        reason: std::io::Error,
    },
    /// The IPC connection failed.
    #[error("cannot talk to Bitcoin Core over IPC at {}: {reason}", socket.display())]
    Connect {
        /// The path.
        socket: PathBuf,
        /// Why.
        reason: ConnectError,
    },
    /// The session ended before any template.
    #[error("the IPC session with Bitcoin Core at {} ended before the first template (the node refused to build one; a regtest chain needs at least 17 blocks, see the log above)", socket.display())]
    SessionEnded {
        /// The path.
        socket: PathBuf,
    },
    /// No template in time.
    #[error("no template from Bitcoin Core over IPC at {} within {timeout:?}", socket.display())]
    NoTemplate {
        /// The path.
        socket: PathBuf,
        /// How long we waited.
        timeout: Duration,
    },
    /// The first template is not minable.
    #[error("the node's first template over IPC cannot be mined: {0}")]
    BadTemplate(TemplateError),
    /// The farm's policy cannot be applied.
    #[error("the farm policy cannot be applied to the node's first template over IPC: {0}")]
    Policy(PolicyError),
    /// The interval does not fit the IPC client.
    #[error("node.min_template_interval_secs: {0:?} is above the 255 s the IPC client allows")]
    Interval(Duration),
    /// The thread could not start.
    #[error("cannot start the IPC thread: {0}")]
    Thread(std::io::Error),
}

/// Starts the IPC client on its own thread and returns once the first complete template (with
/// its transactions, filtered by `policy`) is published; the receiver always holds the newest.
///
/// The thread and the task that publishes are registered with `tracker` and stop on
/// `shutdown`.
///
/// # Errors
/// No socket, a node that does not answer or refuses to build a template, no template within
/// 30 s, or a first template the farm's policy cannot be applied to.
pub async fn spawn(
    config: IpcConfig,
    policy: impl Into<LivePolicy>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<watch::Receiver<Arc<Template>>, IpcError> {
    let min_interval = u8::try_from(config.min_interval.as_secs())
        .map_err(|_| IpcError::Interval(config.min_interval))?;
    if let Err(reason) = std::fs::metadata(&config.socket) {
        return Err(IpcError::NoSocket {
            socket: config.socket.clone(),
            reason,
        });
    }
    // Our own token: a failed start stops the thread without touching the caller's.
    let stop = shutdown.child_token();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let thread = IpcThread {
        socket: config.socket.clone(),
        fee_threshold_sat: config.fee_threshold_sat,
        min_interval,
        events: events_tx,
        stop: stop.clone(),
    };
    std::thread::Builder::new()
        .name("bitcoin-core-ipc".into())
        .spawn(move || {
            thread.run();
            let _ = done_tx.send(());
        })
        .map_err(IpcError::Thread)?;
    // Shutdown waits for the thread: the runtime interrupts its waiting call at the node first.
    tracker.spawn(async move {
        let _ = done_rx.await;
    });

    let mut driver = Driver::new(
        config.network,
        config.socket.clone(),
        policy.into(),
        events_rx,
    );
    let first = tokio::time::timeout(FIRST_TEMPLATE_TIMEOUT, driver.first_template()).await;
    let rx = match first {
        Ok(Ok(rx)) => rx,
        Ok(Err(e)) => {
            stop.cancel();
            return Err(e);
        }
        Err(_) => {
            stop.cancel();
            return Err(IpcError::NoTemplate {
                socket: config.socket,
                timeout: FIRST_TEMPLATE_TIMEOUT,
            });
        }
    };
    tracker.spawn(driver.run(stop));
    Ok(rx)
}

/// Templates over IPC; checks, the farm's ranking of transactions and block submission over
/// RPC (`submitblock` gives the node's verdict).
#[derive(Debug, Clone)]
pub struct IpcBackend {
    rpc: crate::source::TemplateSource,
    config: IpcConfig,
}

impl IpcBackend {
    /// The IPC backend at `config.socket`, with `rpc` for everything else.
    pub fn new(rpc: crate::source::TemplateSource, config: IpcConfig) -> Self {
        IpcBackend { rpc, config }
    }
}

impl super::NodeBackend for IpcBackend {
    async fn check(&self) -> Result<super::ChainInfo, super::NodeError> {
        self.rpc.check_node().await
    }

    async fn templates(
        &self,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<watch::Receiver<Arc<Template>>, super::NodeError> {
        self.rpc.prioritise().await?;
        tracing::info!(socket = %self.config.socket.display(), "templates from the node over IPC");
        let policy = self.rpc.live_policy().clone();
        Ok(spawn(self.config.clone(), policy, tracker, shutdown).await?)
    }

    async fn submit_block(&self, block: &[u8]) -> Result<super::Verdict, super::NodeError> {
        super::NodeBackend::submit_block(&self.rpc, block).await
    }
}
