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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use binary_sv2::B016MOwned;
use bitcoin::consensus::deserialize;
use bitcoin::{Network, Transaction, Txid};
use bitcoin_core_sv2::runtime_api::template_distribution_protocol;
use bitcoin_core_sv2::runtime_api::BitcoinCoreVersion;
use parsers_sv2::TemplateDistributionOwned;
use template_distribution_sv2::{
    CoinbaseOutputConstraintsOwned, NewTemplate, NewTemplateOwned, RequestTransactionDataOwned,
    SetNewPrevHash, SetNewPrevHashOwned,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::tdp::messages::template_from_tdp;
use crate::template::policy::{Policy, PolicyError};
use crate::template::{merkle, Template, TemplateId, TemplateKind, TemplateTx};

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

/// Where the node's IPC socket is and how often it should send same-tip templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcConfig {
    /// The node's socket, `<datadir>/<chain>/node.sock` for `-ipcbind=unix`.
    pub socket: PathBuf,
    /// The chain the farm mines (templates carry it; the node's chain is checked over RPC).
    pub network: Network,
    /// A same-tip template comes only when fees in reach rose by at least this much.
    pub fee_threshold_sat: u64,
    /// ... and not more often than this (whole seconds, at most 255). New tips are never held.
    pub min_interval: Duration,
}

/// Why the IPC backend did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    #[error("no Bitcoin Core IPC socket at {}: {reason} (start bitcoin-node with -ipcbind=unix; the socket is <datadir>/<chain>/node.sock)", socket.display())]
    NoSocket { socket: PathBuf, reason: String },
    #[error("cannot talk to Bitcoin Core over IPC at {}: {reason}", socket.display())]
    Connect { socket: PathBuf, reason: String },
    #[error("the IPC session with Bitcoin Core at {} ended before the first template (the node refused to build one; a regtest chain needs at least 17 blocks, see the log above)", socket.display())]
    SessionEnded { socket: PathBuf },
    #[error("no template from Bitcoin Core over IPC at {} within {timeout:?}", socket.display())]
    NoTemplate { socket: PathBuf, timeout: Duration },
    #[error("the node's first template over IPC cannot be mined: {0}")]
    BadTemplate(String),
    #[error("the farm policy cannot be applied to the node's first template over IPC: {0}")]
    Policy(PolicyError),
    #[error("node.min_template_interval_secs: {0:?} is above the 255 s the IPC client allows")]
    Interval(Duration),
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
    policy: Policy,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<watch::Receiver<Arc<Template>>, IpcError> {
    let min_interval = u8::try_from(config.min_interval.as_secs())
        .map_err(|_| IpcError::Interval(config.min_interval))?;
    if let Err(e) = std::fs::metadata(&config.socket) {
        return Err(IpcError::NoSocket {
            socket: config.socket.clone(),
            reason: e.to_string(),
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

    let mut driver = Driver {
        network: config.network,
        socket: config.socket.clone(),
        policy,
        events: events_rx,
        session: None,
        next_base: 0,
        last_id: None,
        out: None,
    };
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

/// What the IPC thread tells the driver.
enum Event {
    /// A new session is up; the constraints are sent.
    Connected {
        to_node: async_channel::Sender<TemplateDistributionOwned>,
        from_node: async_channel::Receiver<TemplateDistributionOwned>,
    },
    /// A connection attempt failed.
    ConnectFailed(String),
    /// The session's runtime stopped (connection lost or the node refused a request).
    Ended,
}

/// The thread that hosts the `!Send` IPC runtime, one session after another.
struct IpcThread {
    socket: PathBuf,
    fee_threshold_sat: u64,
    min_interval: u8,
    events: mpsc::UnboundedSender<Event>,
    stop: CancellationToken,
}

impl IpcThread {
    fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = self.events.send(Event::ConnectFailed(format!(
                    "cannot build the IPC thread's runtime: {e}"
                )));
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
                let _ = self.events.send(Event::ConnectFailed(e.to_string()));
                return false;
            }
            Err(_) => {
                let _ = self.events.send(Event::ConnectFailed(format!(
                    "no IPC handshake within {CONNECT_TIMEOUT:?}"
                )));
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

/// A template announced by the node, waiting for its transactions (and, on a new tip, for its
/// `SetNewPrevHash`).
struct Pending {
    new: NewTemplateOwned,
    prev: Option<SetNewPrevHashOwned>,
    txs: Option<Vec<B016MOwned>>,
}

/// One connection's state.
struct Session {
    to_node: async_channel::Sender<TemplateDistributionOwned>,
    from_node: async_channel::Receiver<TemplateDistributionOwned>,
    /// Added to the stream's template ids.
    base: u64,
    /// The node's current tip, as last announced.
    prev: Option<SetNewPrevHashOwned>,
    pending: HashMap<u64, Pending>,
}

/// What one step of the driver did.
enum Step {
    Nothing,
    Connected,
    ConnectFailed(String),
    Ended,
    Published,
    /// A complete template that cannot be published.
    Refused(Refusal),
    /// The IPC thread is gone.
    Closed,
}

enum Refusal {
    Template(String),
    Policy(PolicyError),
}

/// Turns the IPC stream into published templates.
struct Driver {
    network: Network,
    socket: PathBuf,
    policy: Policy,
    events: mpsc::UnboundedReceiver<Event>,
    session: Option<Session>,
    next_base: u64,
    last_id: Option<u64>,
    /// Created with the first template.
    out: Option<watch::Sender<Arc<Template>>>,
}

enum Input {
    Event(Option<Event>),
    Message(Option<TemplateDistributionOwned>),
}

impl Driver {
    /// Runs until the first template is published.
    async fn first_template(&mut self) -> Result<watch::Receiver<Arc<Template>>, IpcError> {
        loop {
            match self.step().await {
                Step::Published => {
                    let out = self.out.as_ref().expect("publishing creates the channel");
                    return Ok(out.subscribe());
                }
                Step::ConnectFailed(reason) => {
                    return Err(IpcError::Connect {
                        socket: self.socket.clone(),
                        reason,
                    })
                }
                Step::Ended | Step::Closed => {
                    return Err(IpcError::SessionEnded {
                        socket: self.socket.clone(),
                    })
                }
                Step::Refused(Refusal::Template(reason)) => {
                    return Err(IpcError::BadTemplate(reason))
                }
                Step::Refused(Refusal::Policy(e)) => return Err(IpcError::Policy(e)),
                Step::Nothing | Step::Connected => {}
            }
        }
    }

    /// Keeps publishing until `stop`.
    async fn run(mut self, stop: CancellationToken) {
        let socket = self.socket.display().to_string();
        let mut lost = false;
        loop {
            let step = tokio::select! {
                _ = stop.cancelled() => return,
                s = self.step() => s,
            };
            match step {
                Step::Connected => {
                    if lost {
                        info!(%socket, "reconnected to the node over IPC");
                        lost = false;
                    }
                }
                Step::Ended => {
                    if !stop.is_cancelled() {
                        warn!(%socket, "lost the IPC connection to the node; miners keep the last template, reconnecting");
                        lost = true;
                    }
                }
                Step::ConnectFailed(reason) => {
                    warn!(%socket, %reason, "cannot reconnect to the node over IPC; retrying")
                }
                Step::Refused(Refusal::Template(reason)) => {
                    error!(%socket, %reason, "the node's template over IPC cannot be mined; miners keep the last template")
                }
                Step::Refused(Refusal::Policy(e)) => error!(
                    reason = %e,
                    "farm policy cannot be applied to the node's template over IPC (the stream carries no per-transaction fees); nothing new published, miners keep the last template"
                ),
                Step::Closed => {
                    if !stop.is_cancelled() {
                        error!(%socket, "the IPC thread stopped; no more templates from the node");
                    }
                    return;
                }
                Step::Nothing | Step::Published => {}
            }
        }
    }

    /// Waits for one event or message and handles it.
    async fn step(&mut self) -> Step {
        let input = match &self.session {
            Some(s) => tokio::select! {
                e = self.events.recv() => Input::Event(e),
                m = s.from_node.recv() => Input::Message(m.ok()),
            },
            None => Input::Event(self.events.recv().await),
        };
        match input {
            Input::Event(None) => Step::Closed,
            Input::Event(Some(Event::Connected { to_node, from_node })) => {
                debug!(socket = %self.socket.display(), "IPC session up");
                self.session = Some(Session {
                    to_node,
                    from_node,
                    base: self.next_base,
                    prev: None,
                    pending: HashMap::new(),
                });
                Step::Connected
            }
            Input::Event(Some(Event::ConnectFailed(reason))) => Step::ConnectFailed(reason),
            Input::Event(Some(Event::Ended)) => {
                self.end_session();
                Step::Ended
            }
            // The runtime dropped its sender: the session is over (`Ended` follows).
            Input::Message(None) => {
                self.end_session();
                Step::Nothing
            }
            Input::Message(Some(m)) => self.message(m),
        }
    }

    fn end_session(&mut self) {
        if self.session.take().is_some() {
            // The next session's ids start after every id handed out so far.
            self.next_base = self.last_id.map_or(self.next_base, |id| id + 1);
        }
    }

    fn message(&mut self, m: TemplateDistributionOwned) -> Step {
        let Some(s) = self.session.as_mut() else {
            return Step::Nothing;
        };
        match m {
            TemplateDistributionOwned::NewTemplate(new) => {
                let id = new.template_id;
                debug!(
                    ipc_id = id,
                    future = new.future_template,
                    "NewTemplate over IPC"
                );
                let prev = if new.future_template {
                    None
                } else {
                    s.prev.clone()
                };
                let request = TemplateDistributionOwned::RequestTransactionData(
                    RequestTransactionDataOwned { template_id: id },
                );
                if s.to_node.try_send(request).is_err() {
                    return Step::Nothing; // the session is ending
                }
                s.pending.insert(
                    id,
                    Pending {
                        new,
                        prev,
                        txs: None,
                    },
                );
                let seen = s.base + id;
                self.last_id = Some(self.last_id.map_or(seen, |l| l.max(seen)));
                Step::Nothing
            }
            TemplateDistributionOwned::SetNewPrevHash(prev) => {
                let id = prev.template_id;
                debug!(ipc_id = id, "SetNewPrevHash over IPC");
                // Templates of the old tip that are still waiting will never be mined.
                s.pending.retain(|&k, _| k >= id);
                if let Some(p) = s.pending.get_mut(&id) {
                    p.prev = Some(prev.clone());
                }
                s.prev = Some(prev);
                self.try_complete(id)
            }
            TemplateDistributionOwned::RequestTransactionDataSuccess(data) => {
                let id = data.template_id;
                match s.pending.get_mut(&id) {
                    Some(p) => p.txs = Some(data.transaction_list.into_inner()),
                    None => return Step::Nothing,
                }
                self.try_complete(id)
            }
            TemplateDistributionOwned::RequestTransactionDataError(e) => {
                let code = String::from_utf8_lossy(e.error_code.as_bytes()).into_owned();
                if s.pending.remove(&e.template_id).is_some() {
                    warn!(ipc_id = e.template_id, %code, "the node has no transactions for its template any more; skipped");
                }
                Step::Nothing
            }
            other => {
                debug!(message = %other, "unexpected message from the IPC runtime; ignored");
                Step::Nothing
            }
        }
    }

    /// Publishes the template `id` once it has its transactions and its tip.
    fn try_complete(&mut self, id: u64) -> Step {
        let Some(s) = self.session.as_mut() else {
            return Step::Nothing;
        };
        match s.pending.get(&id) {
            Some(p) if p.prev.is_some() && p.txs.is_some() => {}
            _ => return Step::Nothing,
        }
        let p = s.pending.remove(&id).expect("checked above");
        let (prev, txs) = (
            p.prev.expect("checked above"),
            p.txs.expect("checked above"),
        );
        // Only a template on the node's current tip is worth mining.
        let current_tip = s
            .prev
            .as_ref()
            .map(|c| c.prev_hash.as_bytes() == prev.prev_hash.as_bytes())
            .unwrap_or(false);
        if !current_tip {
            debug!(ipc_id = id, "template for an old tip; dropped");
            return Step::Nothing;
        }
        let template_id = TemplateId::new(s.base + id);
        if let Some(out) = &self.out {
            if out.borrow().id >= template_id {
                debug!(ipc_id = id, "a newer template is already out; dropped");
                return Step::Nothing;
            }
        }
        let template = match build(&p.new, &prev, txs, template_id, self.network) {
            Ok(t) => t,
            Err(reason) => return Step::Refused(Refusal::Template(reason)),
        };
        let template = match filter(&self.policy, template) {
            Ok(t) => t,
            Err(e) => return Step::Refused(Refusal::Policy(e)),
        };
        self.publish(template);
        Step::Published
    }

    fn publish(&mut self, t: Template) {
        let t = Arc::new(t);
        match &self.out {
            None => {
                info!(height = t.height, id = %t.id, txs = t.txs.len(), coinbase_value = %t.coinbase_value, "first template from the node over IPC");
                let (tx, _) = watch::channel(t);
                self.out = Some(tx);
            }
            Some(out) => {
                if out.borrow().prev_hash != t.prev_hash {
                    info!(height = t.height, id = %t.id, txs = t.txs.len(), prev = %t.prev_hash, "new tip: template from the node over IPC");
                } else {
                    info!(height = t.height, id = %t.id, txs = t.txs.len(), coinbase_value = %t.coinbase_value, "template update from the node over IPC");
                }
                out.send_replace(t);
            }
        }
    }
}

/// Our template from the stream's `NewTemplate`, the `SetNewPrevHash` of its tip and its
/// transactions.
fn build(
    new: &NewTemplateOwned,
    prev: &SetNewPrevHashOwned,
    txs: Vec<B016MOwned>,
    id: TemplateId,
    network: Network,
) -> Result<Template, String> {
    // The owned messages are the borrowed ones of the same crates: one trip through the wire
    // format reuses the conversion the TDP client uses.
    let mut new_bytes = binary_sv2::to_bytes(new.clone())
        .map_err(|e| format!("NewTemplate does not encode: {e:?}"))?;
    let new: NewTemplate<'_> = binary_sv2::from_bytes(&mut new_bytes)
        .map_err(|e| format!("NewTemplate does not decode: {e:?}"))?;
    let mut prev_bytes = binary_sv2::to_bytes(prev.clone())
        .map_err(|e| format!("SetNewPrevHash does not encode: {e:?}"))?;
    let prev: SetNewPrevHash<'_> = binary_sv2::from_bytes(&mut prev_bytes)
        .map_err(|e| format!("SetNewPrevHash does not decode: {e:?}"))?;
    let mut t = template_from_tdp(&new, &prev, network).map_err(|e| e.to_string())?;
    t.id = id;
    t.kind = TemplateKind::Full;
    t.txs = Arc::new(decode_txs(txs)?);
    let path = merkle::coinbase_path(t.txs.iter().map(|x| x.txid));
    if path != t.merkle_path {
        return Err(format!(
            "the merkle path of template {} does not match its {} transactions",
            new.template_id,
            t.txs.len()
        ));
    }
    Ok(t)
}

/// Decodes the template's transactions in block order; a transaction's `depends` are the
/// earlier ones it spends.
fn decode_txs(list: Vec<B016MOwned>) -> Result<Vec<TemplateTx>, String> {
    let mut position: HashMap<Txid, usize> = HashMap::with_capacity(list.len());
    let mut out = Vec::with_capacity(list.len());
    for (i, raw) in list.into_iter().enumerate() {
        let data = raw.into_bytes();
        let tx: Transaction = deserialize(&data)
            .map_err(|e| format!("transaction {i} of the template does not decode: {e}"))?;
        let txid = tx.compute_txid();
        let mut depends: Vec<usize> = tx
            .input
            .iter()
            .filter_map(|input| position.get(&input.previous_output.txid).copied())
            .collect();
        depends.sort_unstable();
        depends.dedup();
        out.push(TemplateTx {
            txid,
            wtxid: tx.compute_wtxid(),
            weight: tx.weight().to_wu(),
            fee: None,
            depends,
            data,
        });
        position.insert(txid, i);
    }
    Ok(out)
}

/// The farm's policy on a node template; an error when it cannot be honoured.
fn filter(policy: &Policy, t: Template) -> Result<Template, PolicyError> {
    if policy.is_empty() {
        return Ok(t);
    }
    let outcome = policy.apply_with_report(&t)?;
    for r in &outcome.removed {
        debug!(txid = %r.txid, reason = %r.reason, "policy removed a transaction");
    }
    if !outcome.removed.is_empty() {
        info!(
            height = t.height,
            removed = outcome.removed.len(),
            "farm policy applied to the template"
        );
    }
    Ok(outcome.template.unwrap_or(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::consensus::serialize;
    use bitcoin::transaction::Version;
    use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness};

    fn tx(spends: &[OutPoint], tag: u8) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: spends
                .iter()
                .map(|o| TxIn {
                    previous_output: *o,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::from_slice(&[[tag; 72]]),
                })
                .collect(),
            output: vec![TxOut {
                value: Amount::from_sat(1_000),
                script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
            }],
        }
    }

    fn owned(t: &Transaction) -> B016MOwned {
        B016MOwned::try_from(serialize(t)).unwrap()
    }

    #[test]
    fn depends_are_the_earlier_template_transactions_spent() {
        let outside = OutPoint {
            txid: Txid::from_byte_array([9; 32]),
            vout: 0,
        };
        let a = tx(&[outside], 1);
        let b = tx(
            &[OutPoint {
                txid: Txid::from_byte_array([8; 32]),
                vout: 1,
            }],
            2,
        );
        let c = tx(
            &[
                OutPoint {
                    txid: a.compute_txid(),
                    vout: 0,
                },
                OutPoint {
                    txid: b.compute_txid(),
                    vout: 0,
                },
                outside,
            ],
            3,
        );
        let d = tx(
            &[
                OutPoint {
                    txid: c.compute_txid(),
                    vout: 0,
                },
                OutPoint {
                    txid: c.compute_txid(),
                    vout: 1,
                },
            ],
            4,
        );
        let txs = decode_txs(vec![owned(&a), owned(&b), owned(&c), owned(&d)]).unwrap();
        assert_eq!(
            txs.iter().map(|t| t.depends.clone()).collect::<Vec<_>>(),
            vec![vec![], vec![], vec![0, 1], vec![2]]
        );
        assert_eq!(txs[2].txid, c.compute_txid());
        assert_eq!(txs[2].wtxid, c.compute_wtxid());
        assert_eq!(txs[2].weight, c.weight().to_wu());
        assert!(txs.iter().all(|t| t.fee.is_none()));
        assert_eq!(txs[3].data, serialize(&d));
    }

    #[test]
    fn undecodable_transactions_are_refused() {
        let err = decode_txs(vec![B016MOwned::try_from(vec![1u8, 2, 3]).unwrap()]).unwrap_err();
        assert!(err.contains("transaction 0"), "{err}");
    }

    use bitcoin::hashes::Hash;
}
