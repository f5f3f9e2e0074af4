//! Pool mode: the farm's jobs, declared to the pool's Job Declaration Server and mined on one
//! SV2 extended channel, with failover down an ordered list of pools and, at the end, solo.
//!
//! Shares flow ASIC → [`crate::sv1::session`] (checked there) → [`PoolTag`] → the pool link,
//! which forwards the ones that meet the channel's target. Jobs flow template → [`supervisor`]
//! (which knows whose coinbase to use) → every session.

pub mod declarer;
pub mod link;
pub mod supervisor;

use std::sync::Arc;

use bitcoin::BlockHash;
use tokio::sync::mpsc;

use crate::job::JobId;
use crate::metrics::Stats;

/// Where mining goes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Blocks pay the farm and go to its node.
    Solo,
    /// Jobs declared to and mined for the upstream at `index` of the configured list.
    Pool { index: usize, name: String },
}

/// The longest extranonce a share carries upstream.
pub const MAX_EXTRANONCE: usize = 32;

/// A share the proxy accepted on a pool job, on its way to the pool.
#[derive(Debug, Clone)]
pub struct UpShare {
    pub job: JobId,
    /// What follows the channel's extranonce prefix: padding, extranonce1, extranonce2.
    pub extranonce: [u8; MAX_EXTRANONCE],
    pub extranonce_len: u8,
    pub version: u32,
    pub ntime: u32,
    pub nonce: u32,
    pub hash: BlockHash,
    /// The difficulty the share was accepted at (for the farm's hashrate).
    pub difficulty: f64,
    pub is_block: bool,
    pub worker: Arc<str>,
}

/// Carried by every job mined for a pool: the way to that pool's link.
#[derive(Debug, Clone)]
pub struct PoolTag {
    shares: mpsc::Sender<UpShare>,
    /// Block-solving shares: unbounded, so one is never dropped for a full queue.
    blocks: mpsc::UnboundedSender<UpShare>,
    /// Zeros between the channel prefix and extranonce1, part of every submitted extranonce.
    pad: u8,
    stats: Arc<Stats>,
}

impl PoolTag {
    /// A tag on a fresh queue of `capacity`, for benchmarks of the hand-over.
    #[doc(hidden)]
    pub fn for_bench(pad: u8, capacity: usize) -> (PoolTag, mpsc::Receiver<UpShare>) {
        let (shares, rx) = mpsc::channel(capacity);
        let (blocks, _) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        (
            PoolTag {
                shares,
                blocks,
                pad,
                stats,
            },
            rx,
        )
    }

    /// Hands a share to the link without waiting; a full queue or a link that is gone
    /// counts the share as dropped (the miner already has its answer).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        job: JobId,
        extranonce1: &[u8],
        extranonce2: &[u8],
        header: &bitcoin::block::Header,
        hash: BlockHash,
        difficulty: f64,
        is_block: bool,
        worker: &Arc<str>,
    ) {
        let mut extranonce = [0u8; MAX_EXTRANONCE];
        let pad = usize::from(self.pad);
        let len = pad + extranonce1.len() + extranonce2.len();
        if len > MAX_EXTRANONCE {
            self.stats.pool_dropped(1);
            return;
        }
        extranonce[pad..pad + extranonce1.len()].copy_from_slice(extranonce1);
        extranonce[pad + extranonce1.len()..len].copy_from_slice(extranonce2);
        let share = UpShare {
            job,
            extranonce,
            extranonce_len: len as u8,
            version: header.version.to_consensus() as u32,
            ntime: header.time,
            nonce: header.nonce,
            hash,
            difficulty,
            is_block,
            worker: worker.clone(),
        };
        if is_block {
            if let Err(e) = self.blocks.send(share) {
                tracing::error!(hash = %e.0.hash, "block share could not reach the pool link (it is gone); a block on the farm's own template went to the local node");
                self.stats.pool_dropped(1);
            }
            return;
        }
        if self.shares.try_send(share).is_err() {
            self.stats.pool_dropped(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    fn header() -> bitcoin::block::Header {
        bitcoin::block::Header {
            version: bitcoin::block::Version::from_consensus(0x2000_0000),
            prev_blockhash: BlockHash::all_zeros(),
            merkle_root: bitcoin::TxMerkleNode::all_zeros(),
            time: 7,
            bits: bitcoin::CompactTarget::from_consensus(0x207f_ffff),
            nonce: 9,
        }
    }

    #[test]
    fn a_forwarded_share_carries_padding_then_both_extranonce_parts() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = mpsc::channel(1);
        let (blocks, mut blocks_rx) = mpsc::unbounded_channel();
        let tag = PoolTag {
            shares: tx,
            blocks,
            pad: 8,
            stats: stats.clone(),
        };
        let worker: Arc<str> = Arc::from("w");
        let h = header();
        tag.forward(
            JobId::new(3),
            &[1, 2, 3, 4],
            &[5, 6, 7, 8],
            &h,
            h.block_hash(),
            1.0,
            false,
            &worker,
        );
        let s = rx.try_recv().unwrap();
        assert_eq!(
            &s.extranonce[..usize::from(s.extranonce_len)],
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(
            (s.job, s.ntime, s.nonce, s.version),
            (JobId::new(3), 7, 9, 0x2000_0000)
        );
        // A full queue never blocks the session: the share is counted as dropped.
        tag.forward(
            JobId::new(3),
            &[1],
            &[2],
            &h,
            h.block_hash(),
            1.0,
            false,
            &worker,
        );
        tag.forward(
            JobId::new(3),
            &[1],
            &[2],
            &h,
            h.block_hash(),
            1.0,
            false,
            &worker,
        );
        assert_eq!(stats.snapshot().pool_dropped, 1);
        // A block is never dropped for a full queue.
        tag.forward(
            JobId::new(3),
            &[1],
            &[2],
            &h,
            h.block_hash(),
            1.0,
            true,
            &worker,
        );
        assert!(blocks_rx.try_recv().unwrap().is_block);
        assert_eq!(stats.snapshot().pool_dropped, 1);
    }
}
