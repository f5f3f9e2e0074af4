//! The job a shares-mode connection grinds on, and the shares it grinds from it.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash as _;
use bitcoin::{BlockHash, CompactTarget, Target, TxMerkleNode};

use super::conn::Conn;
use super::protocol::NotifyParams;

/// Hashes tried for one share before giving up (the share difficulty is too high for a load tool).
const MAX_GRIND: u32 = 1 << 22;

/// The job a shares-mode connection grinds on.
pub(super) struct Work {
    job_id: String,
    prev_hash: BlockHash,
    coinbase_prefix: Vec<u8>,
    coinb2: Vec<u8>,
    branch: Vec<[u8; 32]>,
    version: u32,
    bits: CompactTarget,
    ntime: u32,
    target: Target,
    network_target: Target,
    extranonce2: u64,
    merkle_root: TxMerkleNode,
    nonce: u32,
}

impl Work {
    fn roll_extranonce2(&mut self, en2_size: usize) {
        let en2 = self.extranonce2.to_be_bytes();
        let mut coinbase = self.coinbase_prefix.clone();
        coinbase.extend_from_slice(&en2[8 - en2_size.min(8)..]);
        coinbase.extend_from_slice(&self.coinb2);
        self.merkle_root = sv1_miner::merkle_root(&coinbase, &self.branch);
        self.nonce = 0;
    }
}

impl Conn {
    pub(super) fn make_work(&self, p: &NotifyParams<'_>) -> Result<Work, String> {
        let bad = |what: &str| format!("mining.notify: bad {what}");
        let hex32 = |s: &str| -> Result<[u8; 32], String> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(s, &mut out).map_err(|_| bad("merkle branch"))?;
            Ok(out)
        };
        let mut coinbase_prefix = hex::decode(p.2).map_err(|_| bad("coinb1"))?;
        coinbase_prefix.extend_from_slice(&self.extranonce1);
        let u32hex = |s: &str, what| u32::from_str_radix(s, 16).map_err(|_| bad(what));
        let bits = CompactTarget::from_consensus(u32hex(p.6, "nbits")?);
        let mut work = Work {
            job_id: p.0.get().trim_matches('"').to_owned(),
            prev_hash: sv1_miner::decode_prevhash(p.1).map_err(|_| bad("prevhash"))?,
            coinbase_prefix,
            coinb2: hex::decode(p.3).map_err(|_| bad("coinb2"))?,
            branch: p.4.iter().map(|b| hex32(b)).collect::<Result<_, _>>()?,
            version: u32hex(p.5, "version")?,
            bits,
            ntime: u32hex(p.7, "ntime")?,
            target: sv1_miner::share_target(self.next_difficulty),
            network_target: Target::from_compact(bits),
            // Each connection starts its extranonce2 where no other job of its has been.
            extranonce2: self.work.as_ref().map_or(0, |w| w.extranonce2 + 1),
            merkle_root: TxMerkleNode::from_byte_array([0; 32]),
            nonce: 0,
        };
        work.roll_extranonce2(self.extranonce2_size);
        Ok(work)
    }

    /// Grinds and queues one valid share; `false` when there is no job or none was found.
    pub(super) fn submit_one(&mut self) -> bool {
        let mask = self.version_mask.unwrap_or(0);
        // One rolled bit, as version-rolling firmware sends: exercises 6-parameter submits.
        let version_bits = (self.version_mask.is_some()).then_some(0x0000_2000 & mask);
        let Some(nonce) = self.grind(mask, version_bits) else {
            return false;
        };
        let id = self.next_id;
        self.next_id += 1;
        let en2_size = self.extranonce2_size;
        let w = self.work.as_ref().expect("grind found a share on it");
        let en2 = w.extranonce2.to_be_bytes();
        let mut line = String::with_capacity(160);
        let _ = write!(
            line,
            r#"{{"id":{id},"method":"mining.submit","params":["{}","{}","{}","{:08x}","{:08x}""#,
            self.worker,
            w.job_id,
            hex::encode(&en2[8 - en2_size.min(8)..]),
            w.ntime,
            nonce
        );
        if let Some(b) = version_bits {
            let _ = write!(line, r#","{b:08x}""#);
        }
        line.push_str("]}\n");
        self.out.extend_from_slice(line.as_bytes());
        self.pending.push_back((id, Instant::now()));
        self.shared.stats.submitted.fetch_add(1, Relaxed);
        true
    }

    /// Tries nonces (rolling extranonce2 when they run out) until a header meets the share
    /// target; the nonce, or `None` without a job or after [`MAX_GRIND`] tries.
    fn grind(&mut self, mask: u32, version_bits: Option<u32>) -> Option<u32> {
        let stats = &self.shared.stats;
        let en2_size = self.extranonce2_size;
        let w = self.work.as_mut()?;
        let version = match version_bits {
            Some(b) => (w.version & !mask) | b,
            None => w.version,
        };
        let mut tries = 0u32;
        let nonce = loop {
            if tries >= MAX_GRIND {
                stats.hashes.fetch_add(u64::from(tries), Relaxed);
                stats.grind_failed.fetch_add(1, Relaxed);
                return None;
            }
            tries += 1;
            if w.nonce == u32::MAX {
                w.extranonce2 += 1;
                w.roll_extranonce2(en2_size);
            }
            let nonce = w.nonce;
            w.nonce += 1;
            let header = Header {
                version: Version::from_consensus(version as i32),
                prev_blockhash: w.prev_hash,
                merkle_root: w.merkle_root,
                time: w.ntime,
                bits: w.bits,
                nonce,
            };
            let hash = header.block_hash();
            if !w.target.is_met_by(hash) {
                continue;
            }
            if !self.shared.config.submit_blocks && w.network_target.is_met_by(hash) {
                stats.blocks_skipped.fetch_add(1, Relaxed);
                continue;
            }
            break nonce;
        };
        stats.hashes.fetch_add(u64::from(tries), Relaxed);
        Some(nonce)
    }
}
