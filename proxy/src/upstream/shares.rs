//! Share forwarding: how a share a session accepted on a pool job reaches that pool's channel.
//!
//! A job carries only a [`PoolTag`] (plain data: which link, and the padding before our
//! extranonce). Each link registers its inbox in [`Links`] under its id; a session looks the
//! sender up once and keeps it in its [`ShareRoute`], so the share path costs a compare and a
//! `try_send`. Ordinary shares ride a bounded queue (a full one drops the share, counted: the
//! miner already has its answer); blocks ride an unbounded one and are never dropped for room.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bitcoin::{block, BlockHash};
use mining_types::{JobId, Solution, Template};
use tokio::sync::mpsc;

/// Shares queued between sessions and a link.
pub const SHARE_QUEUE: usize = 16_384;
/// The longest extranonce a share carries upstream.
pub const MAX_EXTRANONCE: usize = 32;

/// A pool link's number, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkId(u64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a job mined for a pool carries: its link, and the zeros between the channel's
/// extranonce prefix and our extranonce1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolTag {
    /// The link the job's shares go to.
    pub link: LinkId,
    /// Zero bytes after the channel's prefix, part of every submitted extranonce.
    pub pad: u8,
}

/// A share the proxy accepted on a pool job, on its way to the pool.
#[derive(Debug, Clone)]
pub struct UpShare {
    /// Our job id.
    pub job: JobId,
    /// What follows the channel's extranonce prefix: padding, extranonce1, extranonce2.
    pub extranonce: [u8; MAX_EXTRANONCE],
    /// How much of `extranonce` is used.
    pub extranonce_len: u8,
    /// The header version, rolled bits included.
    pub version: u32,
    /// The header time.
    pub ntime: u32,
    /// The header nonce.
    pub nonce: u32,
    /// The header hash.
    pub hash: BlockHash,
    /// The difficulty the share was accepted at (for the farm's hashrate).
    pub difficulty: f64,
    /// The share meets the network target.
    pub is_block: bool,
    /// Who found it.
    pub worker: Arc<str>,
}

/// What a session knows of an accepted share, for [`UpShare::new`].
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'a> {
    /// Our job id.
    pub job: JobId,
    /// The connection's extranonce1.
    pub extranonce1: &'a [u8],
    /// The miner's extranonce2.
    pub extranonce2: &'a [u8],
    /// The header the miner hashed.
    pub header: &'a block::Header,
    /// Its hash.
    pub hash: BlockHash,
    /// The share's difficulty.
    pub difficulty: f64,
    /// Whether it is a block.
    pub is_block: bool,
}

impl UpShare {
    /// The share as the pool sees it: `tag.pad` zeros, extranonce1, extranonce2. `None` when
    /// that exceeds 32 bytes (no channel we open allows it).
    pub fn new(tag: PoolTag, a: &Accepted<'_>, worker: &Arc<str>) -> Option<UpShare> {
        let mut extranonce = [0u8; MAX_EXTRANONCE];
        let pad = usize::from(tag.pad);
        let en1 = a.extranonce1.len();
        let len = pad + en1 + a.extranonce2.len();
        if len > MAX_EXTRANONCE {
            return None;
        }
        extranonce[pad..pad + en1].copy_from_slice(a.extranonce1);
        extranonce[pad + en1..len].copy_from_slice(a.extranonce2);
        Some(UpShare {
            job: a.job,
            extranonce,
            extranonce_len: u8::try_from(len).expect("at most 32"),
            version: a.header.version.to_consensus() as u32,
            ntime: a.header.time,
            nonce: a.header.nonce,
            hash: a.hash,
            difficulty: a.difficulty,
            is_block: a.is_block,
            worker: worker.clone(),
        })
    }

    /// The used part of the extranonce (after the channel's prefix).
    pub fn extranonce(&self) -> &[u8] {
        &self.extranonce[..usize::from(self.extranonce_len)]
    }
}

/// A block found on a pool job: the share for the pool, the solution for its JDS.
#[derive(Debug, Clone)]
pub struct LinkBlock {
    /// Submitted as a share whatever the channel's target.
    pub share: UpShare,
    /// For `PushSolution`.
    pub solution: Solution,
    /// The template it solves.
    pub template: Arc<Template>,
}

/// The sending side of one link's inbox.
#[derive(Debug, Clone)]
pub struct LinkSender {
    shares: mpsc::Sender<UpShare>,
    blocks: mpsc::UnboundedSender<LinkBlock>,
}

impl LinkSender {
    /// Queues a share without waiting; gives it back when the queue is full or the link gone.
    ///
    /// # Errors
    /// The share, not queued.
    pub fn share(&self, share: UpShare) -> Result<(), UpShare> {
        self.shares
            .try_send(share)
            .map_err(tokio::sync::mpsc::error::TrySendError::into_inner)
    }

    /// Queues a block; gives it back only when the link is gone.
    ///
    /// # Errors
    /// The block, not queued.
    pub fn block(&self, block: LinkBlock) -> Result<(), Box<LinkBlock>> {
        self.blocks.send(block).map_err(|e| Box::new(e.0))
    }
}

/// What a link reads.
#[derive(Debug)]
pub struct LinkInbox {
    /// Shares, bounded.
    pub shares: mpsc::Receiver<UpShare>,
    /// Blocks, unbounded.
    pub blocks: mpsc::UnboundedReceiver<LinkBlock>,
}

/// The live links, by id.
#[derive(Debug, Default)]
pub struct Links {
    senders: RwLock<HashMap<LinkId, LinkSender>>,
    next: AtomicU64,
}

/// A link's entry in [`Links`], removed when dropped.
#[derive(Debug)]
pub struct Registration {
    links: Arc<Links>,
    /// The link's tag.
    pub tag: PoolTag,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.links
            .senders
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.tag.link);
    }
}

impl Links {
    /// Registers a new link whose jobs pad the extranonce with `pad` zeros.
    pub fn register(self: &Arc<Self>, pad: u8) -> (Registration, LinkInbox) {
        let link = LinkId(self.next.fetch_add(1, Ordering::Relaxed));
        let (shares, shares_rx) = mpsc::channel(SHARE_QUEUE);
        let (blocks, blocks_rx) = mpsc::unbounded_channel();
        self.senders
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(link, LinkSender { shares, blocks });
        let registration = Registration {
            links: self.clone(),
            tag: PoolTag { link, pad },
        };
        let inbox = LinkInbox {
            shares: shares_rx,
            blocks: blocks_rx,
        };
        (registration, inbox)
    }

    /// The sender of a live link.
    pub fn get(&self, link: LinkId) -> Option<LinkSender> {
        self.senders
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&link)
            .cloned()
    }
}

/// A session's way to links: the last sender it looked up.
#[derive(Debug, Default)]
pub struct ShareRoute {
    cached: Option<(LinkId, LinkSender)>,
}

impl ShareRoute {
    /// Sends `share` to `link`.
    ///
    /// # Errors
    /// The share, when the link is gone or its queue full.
    pub fn send(&mut self, links: &Links, link: LinkId, share: UpShare) -> Result<(), UpShare> {
        if self.cached.as_ref().is_none_or(|(id, _)| *id != link) {
            self.cached = links.get(link).map(|s| (link, s));
        }
        match &self.cached {
            Some((_, sender)) => sender.share(share),
            None => Err(share),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    fn header() -> block::Header {
        block::Header {
            version: block::Version::from_consensus(0x2000_0000),
            prev_blockhash: BlockHash::all_zeros(),
            merkle_root: bitcoin::TxMerkleNode::all_zeros(),
            time: 7,
            bits: bitcoin::CompactTarget::from_consensus(0x207f_ffff),
            nonce: 9,
        }
    }

    fn accepted<'a>(h: &'a block::Header, en1: &'a [u8], en2: &'a [u8]) -> Accepted<'a> {
        Accepted {
            job: JobId::new(3),
            extranonce1: en1,
            extranonce2: en2,
            header: h,
            hash: h.block_hash(),
            difficulty: 1.0,
            is_block: false,
        }
    }

    #[test]
    fn a_share_carries_padding_then_both_extranonce_parts() {
        let links = Arc::new(Links::default());
        let (reg, _) = links.register(8);
        let h = header();
        let w: Arc<str> = Arc::from("w");
        let s =
            UpShare::new(reg.tag, &accepted(&h, &[1, 2, 3, 4], &[5, 6, 7, 8]), &w).expect("fits");
        assert_eq!(
            s.extranonce(),
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(
            (s.job, s.ntime, s.nonce, s.version),
            (JobId::new(3), 7, 9, 0x2000_0000)
        );
        let too_long = PoolTag {
            link: reg.tag.link,
            pad: 20,
        };
        assert!(UpShare::new(too_long, &accepted(&h, &[1; 8], &[2; 8]), &w).is_none());
    }

    #[test]
    fn a_route_finds_live_links_and_loses_dropped_ones() {
        let links = Arc::new(Links::default());
        let (reg, mut inbox) = links.register(0);
        let h = header();
        let w: Arc<str> = Arc::from("w");
        let share = UpShare::new(reg.tag, &accepted(&h, &[1], &[2]), &w).expect("fits");
        let mut route = ShareRoute::default();
        route
            .send(&links, reg.tag.link, share.clone())
            .expect("sent");
        assert_eq!(inbox.shares.try_recv().expect("queued").nonce, 9);
        let link = reg.tag.link;
        drop(reg);
        drop(inbox);
        assert!(links.get(link).is_none(), "unregistered when dropped");
        assert!(route.send(&links, link, share).is_err());
    }

    #[test]
    fn a_full_queue_gives_the_share_back_but_blocks_always_fit() {
        let links = Arc::new(Links::default());
        let (reg, mut inbox) = links.register(0);
        let sender = links.get(reg.tag.link).expect("live");
        let h = header();
        let w: Arc<str> = Arc::from("w");
        let share = UpShare::new(reg.tag, &accepted(&h, &[1], &[2]), &w).expect("fits");
        for _ in 0..SHARE_QUEUE {
            sender.share(share.clone()).expect("room");
        }
        assert!(sender.share(share.clone()).is_err(), "full");
        let block = LinkBlock {
            share,
            solution: Solution {
                template_id: mining_types::TemplateId::new(1),
                version: block::Version::ONE,
                ntime: 0,
                nonce: 0,
                coinbase_tx: vec![],
            },
            template: Arc::new(crate::test_support::template()),
        };
        sender
            .block(block)
            .expect("never refused while the link lives");
        assert!(inbox.blocks.try_recv().is_ok());
    }
}
