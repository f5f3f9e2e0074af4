//! New tips, as soon as the node knows them: `waitfornewblock` long polling, or
//! `getbestblockhash` polling on nodes without it (ZMQ `hashblock` in [`super::zmq`] feeds the
//! same publisher).

use std::time::Duration;

use bitcoin::BlockHash;
use mining_types::Template;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::rpc::{RpcClient, RpcError, RPC_METHOD_NOT_FOUND};
use crate::source::TemplateSource;

/// What the watchers tell the publisher.
#[derive(Debug)]
pub enum Update {
    /// A new tip and its header.
    Tip {
        /// The tip's hash.
        hash: BlockHash,
        /// What the next block needs of it.
        header: HeaderInfo,
    },
    /// A full template from the node.
    Full(Template),
    /// A full template fetched because the farm's policy changed: published whatever its fees,
    /// so the new policy reaches miners at once.
    Reapplied(Template),
}

/// The fields of `getblockheader` a new tip needs.
#[derive(Debug, Clone, Deserialize)]
pub struct HeaderInfo {
    /// The tip's height.
    pub height: u32,
    /// The tip's bits, as hex.
    pub bits: String,
    /// The tip's median time past.
    #[serde(rename = "mediantime")]
    pub median_time: u32,
}

#[derive(Deserialize)]
struct TipReply {
    hash: BlockHash,
}

/// Learns of new tips as soon as the node does.
pub(crate) async fn watch_tip(
    source: TemplateSource,
    mut tip: BlockHash,
    updates: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) {
    let rpc = source.rpc().clone();
    let mut can_wait = true;
    let mut with_current_tip = true;
    let mut failures = 0u32;
    loop {
        let wait_ms = u64::try_from(source.config().long_poll.as_millis()).unwrap_or(u64::MAX);
        let call = async {
            if !can_wait {
                tokio::time::sleep(source.config().poll_interval).await;
                return rpc.call::<BlockHash>("getbestblockhash", json!([])).await;
            }
            let params = if with_current_tip {
                json!([wait_ms, tip.to_string()])
            } else {
                json!([wait_ms])
            };
            rpc.call_with_timeout::<TipReply>(
                "waitfornewblock",
                params,
                source.config().long_poll + Duration::from_secs(10),
            )
            .await
            .map(|r| r.hash)
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = call => r,
        };
        let hash = match result {
            Ok(h) => h,
            Err(e) if e.node_code() == Some(RPC_METHOD_NOT_FOUND) => {
                warn!(
                    "node has no waitfornewblock; polling getbestblockhash every {:?}",
                    source.config().poll_interval
                );
                can_wait = false;
                continue;
            }
            Err(RpcError::Node { .. }) if with_current_tip => {
                // Nodes before v28 take only the timeout.
                with_current_tip = false;
                continue;
            }
            Err(e) => {
                if shutdown.is_cancelled() {
                    return;
                }
                failures += 1;
                // The template source reports the outage; here once, then once a minute.
                if failures == 1 || failures.is_multiple_of(60) {
                    warn!(error = %e, failures, "tip watch failed; retrying every second");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        failures = 0;
        if tip == hash {
            continue;
        }
        tip = hash;
        if !report_tip(&rpc, hash, &updates).await {
            return;
        }
    }
}

/// Reads a new tip's header and hands it to the publisher; `false` once the publisher is gone.
pub(crate) async fn report_tip(
    rpc: &RpcClient,
    hash: BlockHash,
    updates: &mpsc::Sender<Update>,
) -> bool {
    match rpc
        .call::<HeaderInfo>("getblockheader", json!([hash.to_string(), true]))
        .await
    {
        Ok(header) => updates.send(Update::Tip { hash, header }).await.is_ok(),
        Err(e) => {
            warn!(error = %e, %hash, "cannot read the new tip's header");
            true
        }
    }
}
