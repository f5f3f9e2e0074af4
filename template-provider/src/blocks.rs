//! Solved blocks: written to disk first, then submitted to the node, retried while the node
//! cannot be reached. Used by the proxy in solo mode and by the Template Distribution server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitcoin::BlockHash;
use tracing::{error, info, warn};

use crate::node::rpc::RpcClient;
use crate::node::Verdict;

/// How many times a node that cannot be reached is retried for one block.
const SUBMIT_ATTEMPTS: u32 = 10;

/// Submits blocks to the node, keeping a copy of each on disk.
#[derive(Debug, Clone)]
pub struct BlockSubmitter {
    rpc: RpcClient,
    dir: Option<PathBuf>,
}

impl BlockSubmitter {
    /// `dir` (created if missing) receives `<height>-<hash>.hex` for every block.
    pub fn new(rpc: RpcClient, dir: Option<PathBuf>) -> Self {
        if let Some(d) = &dir {
            if let Err(e) = std::fs::create_dir_all(d) {
                error!(dir = %d.display(), error = %e, "cannot create the blocks directory; blocks go to the node only");
            }
        }
        BlockSubmitter { rpc, dir }
    }

    /// Writes the block to disk, then submits it; logs and returns the node's verdict, `None`
    /// when the node could not be reached.
    pub async fn submit(
        &self,
        hash: BlockHash,
        height: u32,
        block: &[u8],
        found_by: &str,
    ) -> Option<Verdict> {
        let hex_block = hex::encode(block);
        let path = self
            .dir
            .as_deref()
            .map(|d| d.join(format!("{height}-{hash}.hex")));
        if let Some(path) = &path {
            if let Err(e) = tokio::fs::write(path, &hex_block).await {
                error!(path = %path.display(), error = %e, "cannot write the block to disk; submitting anyway");
            }
        }
        let shown = path
            .as_deref()
            .map_or_else(|| "-".into(), |p: &Path| p.display().to_string());
        for attempt in 1..=SUBMIT_ATTEMPTS {
            match self
                .rpc
                .submit_block(&hex_block)
                .await
                .map(Verdict::from_submitblock)
            {
                Ok(verdict) => {
                    match &verdict {
                        Verdict::Accepted => {
                            info!(%hash, height, found_by, "block accepted by the node");
                        }
                        Verdict::Duplicate => {
                            info!(%hash, height, "node already has the block (duplicate)");
                        }
                        Verdict::Inconclusive => {
                            warn!(%hash, height, "node accepted the block but not as its tip (a competing block came first)");
                        }
                        Verdict::Rejected(reason) => {
                            error!(%hash, height, %reason, file = %shown, "node REJECTED the block");
                        }
                    }
                    return Some(verdict);
                }
                Err(e) => {
                    warn!(%hash, attempt, error = %e, "cannot submit the block; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        error!(%hash, file = %shown, "gave up submitting the block; it is on disk for a manual submitblock");
        None
    }
}
