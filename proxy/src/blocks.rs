//! Found blocks: the one place that decides where a block goes.
//!
//! A session hands every block-solving share here as a [`FoundBlock`] and never waits. From
//! here:
//! - a block on the farm's own template is written to the block journal first (synced), then
//!   goes to every configured node at once, each retried until it gives a verdict
//!   ([`template_provider::blocks`]); or, when templates come from an external provider, back
//!   to that provider, which holds the template's transactions;
//! - a block on a pool job also goes to that pool's link, which submits it as a share
//!   (whatever the channel's target) and pushes the solution to the pool's JDS;
//! - a block on the pool's own job goes to the pool only: the pool holds its transactions.

use std::sync::Arc;

use bitcoin::BlockHash;
use mining_types::{Solution, Template, TemplateKind};
use template_provider::blocks::{self as node_blocks, Blocks};
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::metrics::Stats;
use crate::tdp_client::TdpClient;
use crate::upstream::shares::{LinkBlock, Links, PoolTag, UpShare};

/// A solved block, as the session found it.
#[derive(Debug, Clone)]
pub struct FoundBlock {
    /// The block hash.
    pub hash: BlockHash,
    /// The template solved.
    pub template: Arc<Template>,
    /// What the miner filled in.
    pub solution: Solution,
    /// The share for the pool, when the job was mined for one.
    pub pool: Option<(PoolTag, UpShare)>,
    /// Who found it.
    pub worker: Arc<str>,
}

/// Where blocks on the farm's own templates go.
#[derive(Debug, Clone)]
pub enum NodeRoute {
    /// Templates come from our nodes: assemble the block, journal it, submit it to each.
    Node(Blocks),
    /// Templates come from an external provider that holds the transactions: send it the
    /// solution to assemble and submit.
    TemplateProvider(TdpClient),
}

/// Where sessions hand found blocks; never blocks, never drops.
#[derive(Debug, Clone)]
pub struct BlockSink {
    tx: mpsc::UnboundedSender<FoundBlock>,
}

impl BlockSink {
    /// A sink and the receiver [`run`] reads.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<FoundBlock>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (BlockSink { tx }, rx)
    }

    /// Hands a block over.
    pub fn found(&self, block: FoundBlock) {
        if let Err(e) = self.tx.send(block) {
            let b = e.0;
            error!(hash = %b.hash, template = %b.template.id, version = b.solution.version.to_consensus(), ntime = b.solution.ntime, nonce = b.solution.nonce, coinbase = %hex::encode(&b.solution.coinbase_tx), "block router is gone; the solution is logged here so it can be rebuilt");
        }
    }
}

/// Routes every block that arrives; runs until every sink is dropped, so blocks found during
/// shutdown still go out.
pub async fn run(
    mut blocks: mpsc::UnboundedReceiver<FoundBlock>,
    route: NodeRoute,
    links: Arc<Links>,
    stats: Arc<Stats>,
) {
    while let Some(b) = blocks.recv().await {
        // The journal first: a block on the farm's template is on disk before it goes anywhere.
        if b.template.kind != TemplateKind::Pool {
            to_nodes(&route, &b).await;
        }
        if let Some((tag, share)) = &b.pool {
            to_pool(&links, *tag, share.clone(), &b, &stats);
        }
        if b.template.kind == TemplateKind::Pool {
            info!(hash = %b.hash, "block on the pool's own job: the pool holds its transactions and propagates it");
        }
    }
}

async fn to_nodes(route: &NodeRoute, b: &FoundBlock) {
    match route {
        NodeRoute::Node(nodes) => match b.solution.assemble(&b.template) {
            Ok(block) => {
                let found = node_blocks::FoundBlock {
                    hash: block.hash,
                    height: b.template.height,
                    bytes: block.bytes,
                    found_by: b.worker.to_string(),
                };
                nodes.found(found).await;
            }
            Err(e) => {
                error!(hash = %b.hash, error = %e, coinbase = %hex::encode(&b.solution.coinbase_tx), "cannot assemble the block; its solution is logged here");
            }
        },
        NodeRoute::TemplateProvider(client) => {
            if !client.submit(b.solution.clone()) {
                error!(hash = %b.hash, coinbase = %hex::encode(&b.solution.coinbase_tx), "template provider link is gone; the solution is logged here");
            }
        }
    }
}

/// Hands the block's share to its link; one whose link is gone is counted as dropped, like any
/// share that never reaches the pool.
fn to_pool(links: &Links, tag: PoolTag, share: UpShare, b: &FoundBlock, stats: &Stats) {
    let sent = links.get(tag.link).map(|sender| {
        sender.block(LinkBlock {
            share,
            solution: b.solution.clone(),
            template: b.template.clone(),
        })
    });
    if !matches!(sent, Some(Ok(()))) {
        stats.pool_dropped(1);
        error!(hash = %b.hash, worker = %b.worker, "block share could not reach the pool link (it is gone); a block on the farm's own template went to the local node");
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{block, TxMerkleNode};

    use super::*;
    use crate::test_support::job;
    use crate::upstream::shares::MAX_EXTRANONCE;

    /// A block on job 1, with its share for the pool link `tag`.
    fn block_for(tag: PoolTag) -> (FoundBlock, UpShare) {
        let job = job(1);
        let header = block::Header {
            version: job.template.version,
            prev_blockhash: job.template.prev_hash,
            merkle_root: TxMerkleNode::all_zeros(),
            time: job.template.cur_time,
            bits: job.template.bits,
            nonce: 7,
        };
        let share = UpShare {
            job: job.id,
            extranonce: [0; MAX_EXTRANONCE],
            extranonce_len: 8,
            version: header.version.to_consensus() as u32,
            ntime: header.time,
            nonce: header.nonce,
            hash: header.block_hash(),
            difficulty: 1.0,
            is_block: true,
            worker: Arc::from("w"),
        };
        let found = FoundBlock {
            hash: header.block_hash(),
            template: job.template.clone(),
            solution: Solution::from_split(job.template.id, &header, &job.coinbase, &[0; 8]),
            pool: Some((tag, share.clone())),
            worker: Arc::from("w"),
        };
        (found, share)
    }

    #[test]
    fn a_block_share_whose_link_is_gone_is_counted_as_dropped() {
        let links = Arc::new(Links::default());
        let stats = Stats::default();
        let (registration, mut inbox) = links.register(0);
        let tag = registration.tag;
        let (found, share) = block_for(tag);
        to_pool(&links, tag, share.clone(), &found, &stats);
        assert!(
            inbox.blocks.try_recv().is_ok(),
            "a live link gets the block"
        );
        assert_eq!(stats.snapshot().pool_dropped, 0);
        drop(registration);
        to_pool(&links, tag, share, &found, &stats);
        assert_eq!(
            stats.snapshot().pool_dropped,
            1,
            "a gone link's block is counted"
        );
    }
}
