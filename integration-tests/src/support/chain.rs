//! Reading the test node's chain, and peering nodes.

use bitcoin::{Block, BlockHash};
use serde_json::json;

use crate::node::BitcoinNode;

/// The block at height `h` of the node's active chain.
///
/// # Errors
/// An RPC failure, or no block at that height.
pub async fn block_at(node: &BitcoinNode, h: u64) -> anyhow::Result<Block> {
    let hash: BlockHash = node.rpc_as("getblockhash", json!([h])).await?;
    node.block(&hash).await
}

/// The blocks above `from` on the node's active chain.
///
/// # Errors
/// An RPC failure.
pub async fn blocks_above(node: &BitcoinNode, from: u64) -> anyhow::Result<Vec<Block>> {
    let (tip, _) = node.tip().await?;
    let mut out = Vec::new();
    for h in from + 1..=tip {
        out.push(block_at(node, h).await?);
    }
    Ok(out)
}

/// Asks `a` to connect to `b` once (`addnode … onetry`).
///
/// # Errors
/// An RPC failure.
pub async fn connect_nodes(a: &BitcoinNode, b: &BitcoinNode) -> anyhow::Result<()> {
    a.rpc(
        "addnode",
        json!([format!("127.0.0.1:{}", b.p2p_port()), "onetry"]),
    )
    .await?;
    Ok(())
}
