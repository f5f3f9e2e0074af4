//! Watches the node and publishes the newest template.
//!
//! Two watchers feed one publisher:
//! - the **tip watcher** learns of a new tip first (`waitfornewblock`, or `getbestblockhash`
//!   polling on nodes without it) and, where the next block's bits are known without the node,
//!   publishes a coinbase-only template on the new tip at once, so miners leave the old tip
//!   before the node has built its full template;
//! - the **template watcher** long-polls `getblocktemplate` and publishes every full template.
//!
//! The publisher keeps the order right: an empty template never replaces a full one on the
//! same tip, and a template for an older height is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::{BlockHash, CompactTarget, Network};
use mining_types::{NextBlock, Template, TemplateId, TemplateKind};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

mod config;
pub use config::{TemplateSourceConfig, UpdatePolicy};

use crate::figures::SourceFigures;
use crate::node::gbt::BlockTemplateReply;
use crate::node::rpc::{RawReply, RpcClient, RpcError};
use crate::node::tip::{watch_tip, HeaderInfo, Update};
use crate::node::{core_chain_name, ChainInfo, NodeBackend, NodeError, Verdict};
use crate::policy::LivePolicy;

/// Templates from a JSON-RPC node.
#[derive(Debug, Clone)]
pub struct TemplateSource {
    rpc: RpcClient,
    config: TemplateSourceConfig,
    ids: Arc<AtomicU64>,
    /// Whether the node answered its last `getblocktemplate`.
    up: Arc<watch::Sender<bool>>,
    /// The policy in force, read for each template.
    policy: LivePolicy,
    /// Tips first seen and the policy's exclusions, for whoever shows them.
    figures: SourceFigures,
}

/// Retries of a failing node start this far apart and grow to [`RETRY_MAX`]: a node back from
/// a restart gives templates again within a second.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_millis(500);

impl TemplateSource {
    /// A source over `rpc`; call [`check_node`](Self::check_node) then [`spawn`](Self::spawn).
    pub fn new(rpc: RpcClient, config: TemplateSourceConfig) -> Self {
        Self::with_ids(rpc, config, Arc::new(AtomicU64::new(1)))
    }

    /// A source numbering its templates from `ids`, shared with the other nodes' sources so
    /// template ids keep increasing whichever node they come from.
    pub fn with_ids(rpc: RpcClient, config: TemplateSourceConfig, ids: Arc<AtomicU64>) -> Self {
        TemplateSource {
            rpc,
            policy: LivePolicy::new(config.policy.clone()),
            config,
            ids,
            up: Arc::new(watch::Sender::new(true)),
            figures: SourceFigures::default(),
        }
    }

    /// This source reporting into `figures` (the sources of one node set share them).
    pub fn reporting_to(mut self, figures: SourceFigures) -> Self {
        self.figures = figures;
        self
    }

    /// When tips were first seen, and what the policy removed from each template.
    pub fn figures(&self) -> &SourceFigures {
        &self.figures
    }

    /// This source, reading its policy from `policy` (shared with other sources, replaced on
    /// reload) rather than its config's.
    #[must_use]
    pub fn with_policy(mut self, policy: LivePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The policy in force: replace it, and the next templates follow it.
    pub fn live_policy(&self) -> &LivePolicy {
        &self.policy
    }

    /// Whether the node answered its last `getblocktemplate`, as it changes.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// The RPC client.
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// How the source watches the node.
    pub fn config(&self) -> &TemplateSourceConfig {
        &self.config
    }

    /// Checks that the node is on the configured chain and has synced.
    ///
    /// # Errors
    /// [`NodeError::WrongNetwork`], [`NodeError::InitialBlockDownload`], or the RPC failure.
    pub async fn check_node(&self) -> Result<ChainInfo, NodeError> {
        let info: ChainInfo = self.rpc.call("getblockchaininfo", json!([])).await?;
        let expected = core_chain_name(self.config.network);
        if info.chain != expected {
            return Err(NodeError::WrongNetwork {
                expected: expected.into(),
                actual: info.chain,
            });
        }
        if info.initial_block_download {
            return Err(NodeError::InitialBlockDownload {
                blocks: info.blocks,
                headers: info.headers,
            });
        }
        Ok(info)
    }

    /// The farm's policy on a node template. A template the policy cannot filter safely (a
    /// fee the node did not report) is refused as a whole and replaced by the empty block on
    /// the same tip, which never carries a transaction the farm excluded.
    fn apply_policy(&self, template: Template) -> Template {
        let policy = self.policy.current();
        if policy.is_empty() {
            return template;
        }
        match policy.apply_with_report(&template) {
            Ok(outcome) => {
                self.figures
                    .exclusions
                    .record(template.id, &outcome.removed);
                for r in &outcome.removed {
                    debug!(txid = %r.txid, reason = ?r.reason, "policy removed a transaction");
                }
                if !outcome.removed.is_empty() {
                    info!(
                        height = template.height,
                        removed = outcome.removed.len(),
                        "farm policy applied to the template"
                    );
                }
                outcome.template.unwrap_or(template)
            }
            Err(e) => {
                warn!(error = %e, "farm policy cannot filter this template; mining an empty block instead");
                let next = NextBlock {
                    prev_hash: template.prev_hash,
                    height: template.height,
                    bits: template.bits,
                    min_time: template.min_time,
                };
                Template::empty_on_tip(
                    template.id,
                    template.network,
                    &next,
                    template.version,
                    template.cur_time,
                )
            }
        }
    }

    /// Tells the node which transactions the farm wants first.
    ///
    /// # Errors
    /// When the node refuses a call.
    pub async fn prioritise(&self) -> Result<(), RpcError> {
        for (txid, fee) in &self.config.prioritise {
            let _: serde_json::Value = self
                .rpc
                .call("prioritisetransaction", json!([txid.to_string(), 0, fee]))
                .await?;
            info!(%txid, fee_sat = fee, "asked the node to rank a transaction first");
        }
        Ok(())
    }

    /// The next template id of this source.
    pub fn next_id(&self) -> TemplateId {
        TemplateId::new(self.ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Fetches one full template now.
    ///
    /// # Errors
    /// When the node cannot be asked or its reply does not decode.
    pub async fn fetch_template(
        &self,
        longpoll_id: Option<&str>,
    ) -> Result<(Template, Option<String>), RpcError> {
        let mut request =
            json!({"rules": ["segwit"], "capabilities": ["longpoll", "coinbasevalue"]});
        if matches!(self.config.network, Network::Signet) {
            request["rules"] = json!(["segwit", "signet"]);
        }
        let timeout = match longpoll_id {
            Some(id) => {
                request["longpollid"] = json!(id);
                // The node holds a long poll open until the tip or the mempool changes.
                self.config.long_poll + Duration::from_secs(60)
            }
            None => Duration::from_secs(30),
        };
        let raw = self
            .rpc
            .call_raw("getblocktemplate", json!([request]), timeout)
            .await?;
        // A full template is megabytes of JSON and hex: decoding it, the merkle branch and the
        // policy take milliseconds of CPU, which would stall this runtime worker (and every
        // miner task queued on it) right when a new tip is being fanned out.
        let id = self.next_id();
        let source = self.clone();
        tokio::task::spawn_blocking(move || source.template_from_reply(&raw, id))
            .await
            .map_err(|e| RpcError::BadReply {
                method: "getblocktemplate".into(),
                detail: format!("template conversion did not finish: {e}"),
            })?
    }

    /// The CPU-heavy part of [`fetch_template`](Self::fetch_template): the reply into a
    /// template, with the farm policy applied.
    fn template_from_reply(
        &self,
        raw: &RawReply,
        id: TemplateId,
    ) -> Result<(Template, Option<String>), RpcError> {
        let reply: BlockTemplateReply = raw.decode()?;
        let next_poll = reply.longpoll_id.clone();
        let template =
            reply
                .into_template(id, self.config.network)
                .map_err(|e| RpcError::BadReply {
                    method: "getblocktemplate".into(),
                    detail: e.to_string(),
                })?;
        Ok((self.apply_policy(template), next_poll))
    }

    /// Starts the watchers; the returned receiver always holds the newest template.
    ///
    /// The first full template is fetched before this returns, so jobs can start at once.
    ///
    /// # Errors
    /// When the first template cannot be fetched.
    pub async fn spawn(
        self,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<watch::Receiver<Arc<Template>>, RpcError> {
        self.prioritise().await?;
        let (first, longpoll_id) = self.fetch_template(None).await?;
        info!(height = first.height, txs = first.txs.len(), fees = %first.fees(), "first template from the node");
        let tip = first.prev_hash;
        let (tx, rx) = watch::channel(Arc::new(first));
        let (updates_tx, updates_rx) = mpsc::channel(16);
        tracker.spawn(publish(self.clone(), updates_rx, tx, shutdown.clone()));
        tracker.spawn(watch_templates(
            self.clone(),
            longpoll_id,
            updates_tx.clone(),
            shutdown.clone(),
        ));
        if let Some(endpoint) = self.config.zmq_hashblock.clone() {
            tracker.spawn(crate::node::zmq::watch_hashblock(
                endpoint,
                self.rpc.clone(),
                updates_tx.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        tracker.spawn(watch_tip(self, tip, updates_tx, shutdown));
        Ok(rx)
    }

    /// Builds the coinbase-only template for a fresh tip, when its bits can be known without
    /// the node: not at a retarget boundary, and not on testnets whose min-difficulty rule
    /// depends on time.
    fn empty_on_tip(
        &self,
        hash: BlockHash,
        header: &HeaderInfo,
        last: &Template,
    ) -> Option<Template> {
        let height = header.height.checked_add(1)?;
        let fixed_bits = match self.config.network {
            Network::Regtest => true,
            Network::Bitcoin | Network::Signet => height % 2016 != 0,
            _ => false,
        };
        if !fixed_bits {
            return None;
        }
        let bits = u32::from_str_radix(&header.bits, 16).ok()?;
        let now =
            u32::try_from(SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
        // Version bits signal deployments; the last template's choice stays right for the next block.
        let version = last.version;
        let next = NextBlock {
            prev_hash: hash,
            height,
            bits: CompactTarget::from_consensus(bits),
            min_time: header.median_time.saturating_add(1),
        };
        Some(Template::empty_on_tip(
            self.next_id(),
            self.config.network,
            &next,
            version,
            now,
        ))
    }
}

/// The publisher: turns the watchers' updates into the newest template on `out`, in order.
async fn publish(
    source: TemplateSource,
    mut updates: mpsc::Receiver<Update>,
    out: watch::Sender<Arc<Template>>,
    shutdown: CancellationToken,
) {
    let mut last_update = Instant::now();
    loop {
        let update = tokio::select! {
            _ = shutdown.cancelled() => return,
            u = updates.recv() => match u { Some(u) => u, None => return },
        };
        let current = out.borrow().clone();
        match &update {
            Update::Tip { hash, .. } => source.figures.tips.seen(*hash),
            Update::Full(t) | Update::Reapplied(t) => source.figures.tips.seen(t.prev_hash),
        }
        match update {
            Update::Tip { hash, header } => {
                if hash == current.prev_hash || header.height.saturating_add(1) < current.height {
                    continue; // the full template on this tip is already out
                }
                match source.empty_on_tip(hash, &header, &current) {
                    Some(t) => {
                        info!(height = t.height, prev = %hash, "new tip: miners switched to an empty job while the node builds its template");
                        out.send_replace(Arc::new(t));
                    }
                    None => {
                        debug!(%hash, "new tip: waiting for the node's template (bits not known ahead)");
                    }
                }
            }
            Update::Reapplied(t) if t.height >= current.height => {
                info!(height = t.height, txs = t.txs.len(), fees = %t.fees(), "template under the new farm policy");
                last_update = Instant::now();
                out.send_replace(Arc::new(t));
            }
            Update::Full(t) | Update::Reapplied(t) => {
                match decide(&current, &t, last_update.elapsed(), &source.config.updates) {
                    Decision::Drop(why) => {
                        debug!(height = t.height, fees = %t.fees(), why, "template not published");
                        continue;
                    }
                    Decision::NewTip => {
                        info!(height = t.height, txs = t.txs.len(), fees = %t.fees(), "new template");
                    }
                    Decision::Update => {
                        info!(height = t.height, txs = t.txs.len(), fees = %t.fees(), "template update: more fees in reach");
                    }
                }
                last_update = Instant::now();
                out.send_replace(Arc::new(t));
            }
        }
    }
}

/// What the publisher does with a full template from the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A new tip, or a full template replacing an empty one: published at once.
    NewTip,
    /// A same-tip template worth the switch: published.
    Update,
    /// Not published, and why.
    Drop(&'static str),
}

/// Decides on `new` given the published `current`.
pub fn decide(
    current: &Template,
    new: &Template,
    since_last: Duration,
    policy: &UpdatePolicy,
) -> Decision {
    if new.height < current.height {
        return Decision::Drop("older height");
    }
    if new.prev_hash != current.prev_hash || current.kind == TemplateKind::Empty {
        return Decision::NewTip;
    }
    if new.fees() < current.fees() + policy.fee_threshold {
        return Decision::Drop("fee gain below the threshold");
    }
    if since_last < policy.min_interval {
        return Decision::Drop("rate limited");
    }
    Decision::Update
}

/// Long-polls `getblocktemplate`; falls back to a plain fetch every refresh interval.
async fn watch_templates(
    source: TemplateSource,
    mut longpoll_id: Option<String>,
    updates: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    let mut wait = RETRY_FIRST;
    let mut policy = source.policy.changes();
    let mut reapply = false;
    loop {
        let fetch = tokio::time::timeout(
            source.config.refresh_interval,
            source.fetch_template(longpoll_id.as_deref()),
        );
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            // A long poll waits for the node; a new policy applies now.
            Ok(()) = policy.changed() => {
                info!(node = %source.rpc.url(), "farm policy changed: fetching a template under it");
                (longpoll_id, reapply) = (None, true);
                continue;
            }
            r = fetch => r,
        };
        match result {
            Ok(Ok((template, next))) => {
                if failures > 0 {
                    info!(node = %source.rpc.url(), failures, "node answers again");
                }
                failures = 0;
                wait = RETRY_FIRST;
                source
                    .up
                    .send_if_modified(|up| !std::mem::replace(up, true));
                longpoll_id = next;
                let update = if std::mem::take(&mut reapply) {
                    Update::Reapplied(template)
                } else {
                    Update::Full(template)
                };
                if updates.send(update).await.is_err() {
                    return;
                }
            }
            // The long poll outlived the refresh interval: ask for a fresh template now.
            Err(_elapsed) => longpoll_id = None,
            Ok(Err(e)) => {
                failures += 1;
                longpoll_id = None;
                source
                    .up
                    .send_if_modified(|up| std::mem::replace(up, false));
                // One line when the node goes, then one every 30 tries: an outage of a minute
                // is a few lines, not hundreds.
                if failures == 1 || failures.is_multiple_of(30) {
                    warn!(node = %source.rpc.url(), error = %e, failures, "getblocktemplate failed; retrying");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

impl NodeBackend for TemplateSource {
    async fn check(&self) -> Result<ChainInfo, NodeError> {
        self.check_node().await
    }

    async fn templates(
        &self,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<watch::Receiver<Arc<Template>>, NodeError> {
        Ok(self.clone().spawn(tracker, shutdown).await?)
    }

    async fn submit_block(&self, block: &[u8]) -> Result<Verdict, NodeError> {
        let reason = self.rpc.submit_block(&hex::encode(block)).await?;
        Ok(Verdict::from_submitblock(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, Txid, Wtxid};
    use mining_types::TemplateTx;

    fn template(prev: u8, height: u32, fees: u64, kind: TemplateKind) -> Template {
        let tx = TemplateTx {
            txid: Txid::all_zeros(),
            wtxid: Wtxid::all_zeros(),
            data: vec![],
            fee: Some(Amount::from_sat(fees)),
            weight: 400,
            depends: vec![],
        };
        Template {
            id: TemplateId::new(1),
            kind,
            network: Network::Regtest,
            height,
            prev_hash: BlockHash::from_byte_array([prev; 32]),
            version: bitcoin::block::Version::from_consensus(0x2000_0000),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            min_time: 0,
            cur_time: 0,
            coinbase_value: Amount::from_sat(5_000_000_000 + fees),
            witness_commitment: None,
            txs: Arc::new(vec![tx]),
            merkle_path: vec![],
        }
    }

    #[test]
    fn new_tips_always_pass_and_updates_need_fees_and_time() {
        let p = UpdatePolicy {
            fee_threshold: Amount::from_sat(1_000),
            min_interval: Duration::from_secs(5),
        };
        let cur = template(1, 100, 5_000, TemplateKind::Full);
        let long = Duration::from_secs(60);
        assert_eq!(
            decide(
                &cur,
                &template(2, 101, 0, TemplateKind::Full),
                Duration::ZERO,
                &p
            ),
            Decision::NewTip
        );
        assert_eq!(
            decide(
                &template(1, 100, 0, TemplateKind::Empty),
                &cur,
                Duration::ZERO,
                &p
            ),
            Decision::NewTip
        );
        assert_eq!(
            decide(&cur, &template(1, 100, 5_999, TemplateKind::Full), long, &p),
            Decision::Drop("fee gain below the threshold")
        );
        assert_eq!(
            decide(&cur, &template(1, 100, 6_000, TemplateKind::Full), long, &p),
            Decision::Update
        );
        assert_eq!(
            decide(
                &cur,
                &template(1, 100, 9_000, TemplateKind::Full),
                Duration::from_secs(1),
                &p
            ),
            Decision::Drop("rate limited")
        );
        assert_eq!(
            decide(&cur, &template(0, 99, 9_000, TemplateKind::Full), long, &p),
            Decision::Drop("older height")
        );
    }
}
