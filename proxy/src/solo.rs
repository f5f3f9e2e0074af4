//! Found blocks: written to disk first, then submitted to the local node at once.
//!
//! A block is the most valuable thing the proxy ever handles, so the path is short and never
//! drops one: each block gets its own task, the file is written before the node is asked, and
//! a node that cannot be reached is retried.

use std::path::PathBuf;
use std::time::Duration;

use bitcoin::BlockHash;
use template_provider::RpcClient;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// A solved block, serialized.
#[derive(Debug)]
pub struct FoundBlock {
    pub hash: BlockHash,
    pub height: u32,
    pub bytes: Vec<u8>,
    pub worker: String,
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
            error!(hash = %e.0.hash, "block submitter is gone; the block is lost unless logged: {}", hex::encode(&e.0.bytes));
        }
    }
}

/// How often and how long a node that cannot be reached is retried for one block.
const SUBMIT_ATTEMPTS: u32 = 10;

/// Submits every block that arrives; runs until every sink is dropped, so blocks found
/// during shutdown still go out.
pub async fn run_submitter(
    mut blocks: mpsc::UnboundedReceiver<FoundBlock>,
    rpc: RpcClient,
    dir: PathBuf,
    tracker: TaskTracker,
) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        error!(dir = %dir.display(), error = %e, "cannot create the blocks directory; blocks go to the node only");
    }
    while let Some(block) = blocks.recv().await {
        let rpc = rpc.clone();
        let dir = dir.clone();
        tracker.spawn(async move { submit_one(block, &rpc, &dir).await });
    }
}

async fn submit_one(block: FoundBlock, rpc: &RpcClient, dir: &std::path::Path) {
    let hex_block = hex::encode(&block.bytes);
    let path = dir.join(format!("{}-{}.hex", block.height, block.hash));
    if let Err(e) = tokio::fs::write(&path, &hex_block).await {
        error!(path = %path.display(), error = %e, "cannot write the block to disk; submitting anyway");
    }
    for attempt in 1..=SUBMIT_ATTEMPTS {
        match rpc.submit_block(&hex_block).await {
            Ok(None) => {
                info!(hash = %block.hash, height = block.height, worker = %block.worker, "block accepted by the node");
                return;
            }
            // The node has it already (e.g. it came back over P2P first): not an error.
            Ok(Some(reason)) if reason == "duplicate" => {
                info!(hash = %block.hash, height = block.height, "node already has the block (duplicate)");
                return;
            }
            // Valid, but a competing block at the same height reached the node first.
            Ok(Some(reason)) if reason == "inconclusive" => {
                warn!(hash = %block.hash, height = block.height, "node accepted the block but not as its tip (a competing block came first)");
                return;
            }
            Ok(Some(reason)) => {
                error!(hash = %block.hash, height = block.height, %reason, file = %path.display(), "node REJECTED the block");
                return;
            }
            Err(e) => {
                warn!(hash = %block.hash, attempt, error = %e, "cannot submit the block; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    error!(hash = %block.hash, file = %path.display(), "gave up submitting the block; it is on disk for manual submitblock");
}
