//! Jobs: a template made ready for miners, serialized once and shared by every connection.

pub mod extranonce;
pub mod factory;

use std::fmt;
use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::{block, BlockHash, TxMerkleNode, Txid};
use template_provider::template::merkle;
use template_provider::{CoinbaseConfig, CoinbaseError, CoinbaseSplit, Template};

pub use self::extranonce::{Extranonce1, ExtranonceLayout};

/// A job's number, as miners see it (lower-case hex in `mining.notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u32);

impl JobId {
    /// Wraps a raw id.
    pub const fn new(raw: u32) -> Self {
        JobId(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Parses the id a miner echoes back; `None` for anything we never sent.
    pub fn parse(s: &str) -> Option<JobId> {
        if s.is_empty() || s.len() > 8 {
            return None;
        }
        u32::from_str_radix(s, 16).ok().map(JobId)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A job: one template with its coinbase split and the `mining.notify` lines for it.
#[derive(Debug)]
pub struct Job {
    pub id: JobId,
    pub template: Arc<Template>,
    pub coinbase: CoinbaseSplit,
    /// The first job on its previous block hash: miners must drop older work.
    pub clean: bool,
    /// Set when the job is mined for a pool: where its shares go.
    pub pool: Option<crate::upstream::PoolTag>,
    /// Both variants of the notify line, newline included, built once for all connections.
    notify: [Box<[u8]>; 2],
}

impl Job {
    /// Builds a job and its notify lines.
    ///
    /// # Errors
    /// When the coinbase cannot be built (tag too long for the scriptSig).
    pub fn new(
        id: JobId,
        template: Arc<Template>,
        coinbase_config: &CoinbaseConfig,
        layout: ExtranonceLayout,
        clean: bool,
    ) -> Result<Job, CoinbaseError> {
        let coinbase = CoinbaseSplit::build(&template, coinbase_config, layout.total_len())?;
        Ok(Job::with_coinbase(id, template, coinbase, clean, None))
    }

    /// Builds a job around a coinbase already split (a pool's outputs and channel prefix).
    pub fn with_coinbase(
        id: JobId,
        template: Arc<Template>,
        coinbase: CoinbaseSplit,
        clean: bool,
        pool: Option<crate::upstream::PoolTag>,
    ) -> Job {
        let notify = [false, true].map(|c| {
            notify_line(id, &template, &coinbase, c)
                .into_bytes()
                .into_boxed_slice()
        });
        Job {
            id,
            template,
            coinbase,
            clean,
            pool,
            notify,
        }
    }

    /// The `mining.notify` line; `clean` forces the clean-jobs flag (a miner's first job, or
    /// one who missed the clean job on this tip).
    pub fn notify_line(&self, clean: bool) -> &[u8] {
        &self.notify[usize::from(clean || self.clean)]
    }

    /// The previous block hash the job builds on.
    pub fn prev_hash(&self) -> BlockHash {
        self.template.prev_hash
    }

    /// The block header for a filled-in coinbase.
    pub fn header(
        &self,
        coinbase_txid: Txid,
        version: i32,
        ntime: u32,
        nonce: u32,
    ) -> block::Header {
        block::Header {
            version: block::Version::from_consensus(version),
            prev_blockhash: self.template.prev_hash,
            merkle_root: self.merkle_root(coinbase_txid),
            time: ntime,
            bits: self.template.bits,
            nonce,
        }
    }

    fn merkle_root(&self, coinbase_txid: Txid) -> TxMerkleNode {
        merkle::root_from_path(coinbase_txid, &self.template.merkle_path)
    }
}

/// The Stratum V1 rendering of a previous block hash: internal byte order with each 32-bit
/// word byte-swapped (a quirk every SV1 miner expects).
pub fn sv1_prev_hash(hash: &BlockHash) -> String {
    let bytes = hash.to_byte_array();
    let mut swapped = [0u8; 32];
    for (dst, src) in swapped.chunks_exact_mut(4).zip(bytes.chunks_exact(4)) {
        dst.copy_from_slice(src);
        dst.reverse();
    }
    hex::encode(swapped)
}

fn notify_line(id: JobId, t: &Template, coinbase: &CoinbaseSplit, clean: bool) -> String {
    let branch: Vec<String> = t
        .merkle_path
        .iter()
        .map(|n| hex::encode(n.as_byte_array()))
        .collect();
    let params = serde_json::json!([
        id.to_string(),
        sv1_prev_hash(&t.prev_hash),
        hex::encode(coinbase.prefix()),
        hex::encode(coinbase.suffix()),
        branch,
        format!("{:08x}", t.version as u32),
        format!("{:08x}", t.bits.to_consensus()),
        format!("{:08x}", t.cur_time),
        clean,
    ]);
    let mut line =
        serde_json::json!({"id": null, "method": "mining.notify", "params": params}).to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_garbage() {
        let id = JobId::new(0xdead_beef);
        assert_eq!(JobId::parse(&id.to_string()), Some(id));
        assert_eq!(JobId::parse("1a"), Some(JobId::new(0x1a)));
        for bad in ["", "xyz", "123456789", "-1"] {
            assert_eq!(JobId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn prev_hash_words_are_swapped() {
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let s = sv1_prev_hash(&BlockHash::from_byte_array(raw));
        assert!(s.starts_with("0403020108070605"));
    }
}
