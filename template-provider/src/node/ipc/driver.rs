//! Turns the IPC message stream into published templates.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use binary_sv2::B016MOwned;
use bitcoin::consensus::deserialize;
use bitcoin::{Network, Transaction, Txid};
use mining_types::{merkle, Template, TemplateId, TemplateKind, TemplateTx};
use parsers_sv2::TemplateDistributionOwned;
use sv2_wire::tdp::{template_from_tdp, IncomingError};
use template_distribution_sv2::{
    NewTemplate, NewTemplateOwned, RequestTransactionDataOwned, SetNewPrevHash, SetNewPrevHashOwned,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::thread::{ConnectError, Event};
use super::IpcError;
use crate::policy::{LivePolicy, Policy, PolicyError};

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
    ConnectFailed(ConnectError),
    Ended,
    Published,
    /// A complete template that cannot be published.
    Refused(Refusal),
    /// The IPC thread is gone.
    Closed,
}

/// Why a complete template is not published.
enum Refusal {
    Template(TemplateError),
    Policy(PolicyError),
}

/// Why a complete template from the IPC stream cannot be mined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A message did not survive the trip through the SV2 wire format.
    #[error("{message} does not {step}: {error:?}")]
    Wire {
        /// The message type, `NewTemplate` or `SetNewPrevHash`.
        message: &'static str,
        /// `encode` or `decode`.
        step: &'static str,
        /// What the codec reported.
        error: binary_sv2::Error,
    },
    /// The messages do not describe a block we can mine on.
    #[error(transparent)]
    Tdp(#[from] IncomingError),
    /// A transaction is not a valid serialized transaction.
    #[error("transaction {index} of the template does not decode: {source}")]
    Transaction {
        /// Its position in the template.
        index: usize,
        /// Why it does not decode.
        source: bitcoin::consensus::encode::Error,
    },
    /// The transactions are not the ones the template's merkle path commits to.
    #[error("the merkle path of template {template_id} does not match its {txs} transactions")]
    MerklePath {
        /// The template's id in the IPC stream.
        template_id: u64,
        /// How many transactions came with it.
        txs: usize,
    },
}

/// Turns the IPC stream into published templates.
pub(super) struct Driver {
    network: Network,
    socket: PathBuf,
    /// Read for each template, so a reload applies to the next one.
    policy: LivePolicy,
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
    pub(super) fn new(
        network: Network,
        socket: PathBuf,
        policy: LivePolicy,
        events: mpsc::UnboundedReceiver<Event>,
    ) -> Self {
        Driver {
            network,
            socket,
            policy,
            events,
            session: None,
            next_base: 0,
            last_id: None,
            out: None,
        }
    }

    /// Runs until the first template is published.
    pub(super) async fn first_template(
        &mut self,
    ) -> Result<watch::Receiver<Arc<Template>>, IpcError> {
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
    pub(super) async fn run(mut self, stop: CancellationToken) {
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
                    warn!(%socket, %reason, "cannot reconnect to the node over IPC; retrying");
                }
                Step::Refused(Refusal::Template(reason)) => {
                    error!(%socket, %reason, "the node's template over IPC cannot be mined; miners keep the last template");
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
            Err(e) => return Step::Refused(Refusal::Template(e)),
        };
        let template = match filter(&self.policy.current(), template) {
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
) -> Result<Template, TemplateError> {
    // The owned messages are the borrowed ones of the same crates: one trip through the wire
    // format reuses the conversion the TDP client uses.
    let mut new_bytes = binary_sv2::to_bytes(new.clone()).map_err(wire("NewTemplate", "encode"))?;
    let new: NewTemplate<'_> =
        binary_sv2::from_bytes(&mut new_bytes).map_err(wire("NewTemplate", "decode"))?;
    let mut prev_bytes =
        binary_sv2::to_bytes(prev.clone()).map_err(wire("SetNewPrevHash", "encode"))?;
    let prev: SetNewPrevHash<'_> =
        binary_sv2::from_bytes(&mut prev_bytes).map_err(wire("SetNewPrevHash", "decode"))?;
    let mut t = template_from_tdp(&new, &prev, network)?;
    t.id = id;
    t.kind = TemplateKind::Full;
    t.txs = Arc::new(decode_txs(txs)?);
    let path = merkle::coinbase_path(t.txs.iter().map(|x| x.txid));
    if path != t.merkle_path {
        return Err(TemplateError::MerklePath {
            template_id: new.template_id,
            txs: t.txs.len(),
        });
    }
    Ok(t)
}

/// Names a message that did not survive the trip through the wire format.
fn wire(
    message: &'static str,
    step: &'static str,
) -> impl FnOnce(binary_sv2::Error) -> TemplateError {
    move |error| TemplateError::Wire {
        message,
        step,
        error,
    }
}

/// Decodes the template's transactions in block order; a transaction's `depends` are the
/// earlier ones it spends.
fn decode_txs(list: Vec<B016MOwned>) -> Result<Vec<TemplateTx>, TemplateError> {
    let mut position: HashMap<Txid, usize> = HashMap::with_capacity(list.len());
    let mut out = Vec::with_capacity(list.len());
    for (i, raw) in list.into_iter().enumerate() {
        let data = raw.into_bytes();
        let tx: Transaction =
            deserialize(&data).map_err(|source| TemplateError::Transaction { index: i, source })?;
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
        assert!(
            matches!(err, TemplateError::Transaction { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("transaction 0"), "{err}");
    }

    use bitcoin::hashes::Hash;
}
