//! Found blocks: from a session to the node (disk first), or back to the external template
//! provider that owns the template's transactions.
//!
//! A block is the most valuable thing the proxy ever handles, so the path is short and never
//! drops one: each block gets its own task and sessions never wait for it.

use std::sync::Arc;

use bitcoin::{block, BlockHash};
use template_provider::blocks::BlockSubmitter;
use template_provider::tdp::client::{Solution, TdpClient};
use template_provider::Template;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::error;

/// A solved block: the header the miner hashed and the coinbase it filled in.
#[derive(Debug)]
pub struct FoundBlock {
    pub hash: BlockHash,
    pub template: Arc<Template>,
    pub header: block::Header,
    /// The coinbase as it goes in the block (with its witness when the block commits to one).
    pub coinbase_tx: Vec<u8>,
    pub worker: String,
}

/// Where found blocks go.
#[derive(Debug, Clone)]
pub enum BlockRoute {
    /// Templates come from our node: assemble the block and submit it there.
    Node(BlockSubmitter),
    /// Templates come from an external provider that holds the transactions: send it the
    /// solution to assemble and submit.
    TemplateProvider(TdpClient),
}

/// Where sessions hand found blocks.
#[derive(Debug, Clone)]
pub struct BlockSink {
    tx: mpsc::UnboundedSender<FoundBlock>,
}

impl BlockSink {
    /// A sink and the receiver its submitter reads.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<FoundBlock>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (BlockSink { tx }, rx)
    }

    /// Hands a block over; never blocks the session.
    pub fn submit(&self, block: FoundBlock) {
        if let Err(e) = self.tx.send(block) {
            let b = e.0;
            error!(hash = %b.hash, header = %hex::encode(bitcoin::consensus::serialize(&b.header)), coinbase = %hex::encode(&b.coinbase_tx), "block submitter is gone; logging the solution so it can be rebuilt");
        }
    }
}

/// Submits every block that arrives; runs until every sink is dropped, so blocks found
/// during shutdown still go out.
pub async fn run_submitter(
    mut blocks: mpsc::UnboundedReceiver<FoundBlock>,
    route: BlockRoute,
    tracker: TaskTracker,
) {
    while let Some(b) = blocks.recv().await {
        if b.template.kind == template_provider::TemplateKind::Pool {
            // Only the pool holds this block's transactions: the share went to the pool link,
            // which logs whether it was sent.
            tracing::info!(hash = %b.hash, "block on the pool's own job: handed to the pool link, the pool propagates it");
            continue;
        }
        match &route {
            BlockRoute::Node(submitter) => {
                let submitter = submitter.clone();
                tracker.spawn(async move {
                    let bytes = b
                        .template
                        .assemble_block_with_coinbase(&b.header, &b.coinbase_tx);
                    submitter
                        .submit(b.hash, b.template.height, &bytes, &b.worker)
                        .await;
                });
            }
            BlockRoute::TemplateProvider(client) => {
                let sent = client.submit(Solution {
                    template_id: b.template.id.get(),
                    version: b.header.version.to_consensus() as u32,
                    ntime: b.header.time,
                    nonce: b.header.nonce,
                    coinbase_tx: b.coinbase_tx.clone(),
                });
                if !sent {
                    error!(hash = %b.hash, coinbase = %hex::encode(&b.coinbase_tx), "template provider link is gone; the solution is logged here");
                }
            }
        }
    }
}
