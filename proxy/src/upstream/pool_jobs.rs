//! A pool's own jobs (`NewExtendedMiningJob`, `SetNewPrevHash`), for pools mined without job
//! declaration. Pure: messages in, templates out.
//!
//! A future job waits for the previous hash it belongs to. Messages borrow their frame, so
//! those that wait are kept as raw payloads and decoded again when needed. The current job is
//! kept too: a new extranonce prefix rebuilds it.

use std::collections::HashMap;
use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::{block, Amount, BlockHash, CompactTarget, Network, TxMerkleNode};
use mining_sv2::{NewExtendedMiningJob, SetNewPrevHash};
use mining_types::{CoinbaseSplit, PoolJobId, Template, TemplateId, TemplateKind};
use sv2_wire::{Frame, Sv2Error};

/// Future jobs kept while they wait for their previous hash.
const MAX_FUTURE: usize = 16;

/// The previous hash the pool's jobs build on.
#[derive(Debug, Clone, Copy)]
struct PrevHash {
    hash: BlockHash,
    min_ntime: u32,
    nbits: u32,
}

/// A job of the pool's own, ready to publish.
#[derive(Debug)]
pub struct PoolJob {
    /// The pool's id for it (also the template's id).
    pub pool_job: PoolJobId,
    /// Its tip and merkle path; the pool holds the transactions.
    pub template: Arc<Template>,
    /// The coinbase, with the channel's prefix and padding in front of our extranonce.
    pub coinbase: CoinbaseSplit,
    /// The first job on a new tip.
    pub clean: bool,
}

/// Why a pool job cannot be mined.
#[derive(Debug, thiserror::Error)]
pub enum PoolJobError {
    /// The message does not decode.
    #[error(transparent)]
    Wire(#[from] Sv2Error),
    /// Its coinbase parts do not make a coinbase.
    #[error("a job with a bad coinbase: {0}")]
    Coinbase(#[from] mining_types::CoinbaseError),
}

/// The pool's jobs of one channel.
#[derive(Debug)]
pub struct PoolJobs {
    network: Network,
    extranonce_len: usize,
    future: HashMap<u32, Vec<u8>>,
    prev: Option<PrevHash>,
    current: Option<(Vec<u8>, PrevHash)>,
}

impl PoolJobs {
    /// Jobs on `network`, each leaving `extranonce_len` bytes for our extranonce.
    pub fn new(network: Network, extranonce_len: usize) -> Self {
        PoolJobs {
            network,
            extranonce_len,
            future: HashMap::new(),
            prev: None,
            current: None,
        }
    }

    /// A `NewExtendedMiningJob`; `fixed` is the channel's prefix and padding. A job for the
    /// current tip is ready at once; a future one waits.
    ///
    /// # Errors
    /// A message that does not decode or a coinbase that does not parse.
    pub fn on_job(
        &mut self,
        frame: &mut Frame,
        fixed: &[u8],
    ) -> Result<Option<PoolJob>, PoolJobError> {
        let raw = frame.payload.clone();
        let j: NewExtendedMiningJob = frame.decode()?;
        if j.min_ntime.clone().into_inner().is_none() {
            if self.future.len() >= MAX_FUTURE {
                self.future.clear();
            }
            self.future.insert(j.job_id, raw);
            return Ok(None);
        }
        let Some(prev) = self.prev else {
            return Ok(None);
        };
        self.build(raw, prev, fixed, false).map(Some)
    }

    /// A `SetNewPrevHash`: the future job it names becomes current.
    ///
    /// # Errors
    /// A message that does not decode or a coinbase that does not parse.
    pub fn on_prev_hash(
        &mut self,
        frame: &mut Frame,
        fixed: &[u8],
    ) -> Result<Option<PoolJob>, PoolJobError> {
        let p: SetNewPrevHash = frame.decode()?;
        let prev = PrevHash {
            hash: BlockHash::from_byte_array(*p.prev_hash.as_array()),
            min_ntime: p.min_ntime,
            nbits: p.nbits,
        };
        self.prev = Some(prev);
        let job = self.future.remove(&p.job_id);
        self.future.clear();
        match job {
            Some(raw) => self.build(raw, prev, fixed, true).map(Some),
            None => Ok(None),
        }
    }

    /// The current job again, with a new `fixed` (the channel's prefix changed).
    ///
    /// # Errors
    /// As [`on_job`](Self::on_job).
    pub fn rebuild(&mut self, fixed: &[u8]) -> Result<Option<PoolJob>, PoolJobError> {
        match self.current.take() {
            Some((raw, prev)) => self.build(raw, prev, fixed, true).map(Some),
            None => Ok(None),
        }
    }

    fn build(
        &mut self,
        raw: Vec<u8>,
        prev: PrevHash,
        fixed: &[u8],
        clean: bool,
    ) -> Result<PoolJob, PoolJobError> {
        let mut payload = raw.clone();
        let j: NewExtendedMiningJob =
            binary_sv2::from_bytes(&mut payload).map_err(|e| Sv2Error::Decode {
                msg_type: mining_sv2::MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB,
                detail: format!("{e:?}"),
            })?;
        let mut prefix = j.coinbase_tx_prefix.as_bytes().to_vec();
        prefix.extend_from_slice(fixed);
        let suffix = j.coinbase_tx_suffix.as_bytes().to_vec();
        let coinbase = CoinbaseSplit::from_parts(prefix, suffix, self.extranonce_len)?;
        let min_ntime = j.min_ntime.clone().into_inner().unwrap_or(prev.min_ntime);
        let template = Template {
            id: TemplateId::new(u64::from(j.job_id)),
            kind: TemplateKind::Pool,
            network: self.network,
            height: coinbase.bip34_height().unwrap_or(0),
            prev_hash: prev.hash,
            version: block::Version::from_consensus(j.version as i32),
            bits: CompactTarget::from_consensus(prev.nbits),
            min_time: min_ntime,
            cur_time: min_ntime,
            coinbase_value: Amount::ZERO,
            witness_commitment: None,
            txs: Arc::new(Vec::new()),
            merkle_path: j
                .merkle_path
                .iter()
                .map(|n| TxMerkleNode::from_byte_array(*n.as_array()))
                .collect(),
        };
        let pool_job = PoolJobId(j.job_id);
        self.current = Some((raw, prev));
        Ok(PoolJob {
            pool_job,
            template: Arc::new(template),
            coinbase,
            clean,
        })
    }
}

#[cfg(test)]
mod tests {
    use binary_sv2::{Seq0255, Sv2Option, B064K, U256};

    use super::*;
    use crate::test_support::{layout, template};

    fn frame<T: binary_sv2::Serialize + binary_sv2::GetSize>(msg_type: u8, m: T) -> Frame {
        Frame {
            msg_type,
            extension_type: 0,
            payload: binary_sv2::to_bytes(m).expect("encodes"),
        }
    }

    /// A pool job whose coinbase is one of ours split at the extranonce, as a pool would send.
    fn new_job(id: u32, future: bool) -> Frame {
        let split = crate::test_support::job(1).coinbase.clone();
        let prefix = split.prefix().to_vec();
        let suffix = split.suffix().to_vec();
        let msg = NewExtendedMiningJob {
            channel_id: 1,
            job_id: id,
            min_ntime: Sv2Option::new((!future).then_some(1_700_000_000)),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Seq0255::new(vec![U256::from(&[7u8; 32])]).expect("fits"),
            coinbase_tx_prefix: B064K::try_from(&prefix[..]).expect("fits"),
            coinbase_tx_suffix: B064K::try_from(&suffix[..]).expect("fits"),
        };
        frame(mining_sv2::MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB, msg)
    }

    fn prev_hash(job: u32) -> Frame {
        let msg = SetNewPrevHash {
            channel_id: 1,
            job_id: job,
            prev_hash: U256::from(&[3u8; 32]),
            min_ntime: 1_700_000_050,
            nbits: 0x207f_ffff,
        };
        frame(mining_sv2::MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH, msg)
    }

    #[test]
    fn a_future_job_waits_for_its_prev_hash_then_builds_the_pools_coinbase() {
        let mut jobs = PoolJobs::new(Network::Regtest, layout().total_len());
        assert!(jobs.on_job(&mut new_job(5, true), &[]).unwrap().is_none());
        let job = jobs
            .on_prev_hash(&mut prev_hash(5), &[])
            .unwrap()
            .expect("the future job is now current");
        assert!(job.clean);
        assert_eq!(job.pool_job, PoolJobId(5));
        assert_eq!(job.template.kind, TemplateKind::Pool);
        assert_eq!(job.template.prev_hash, BlockHash::from_byte_array([3; 32]));
        assert_eq!(job.template.min_time, 1_700_000_050);
        assert_eq!(
            job.template.height,
            template().height,
            "from the BIP34 push"
        );
        assert_eq!(job.template.merkle_path.len(), 1);
        // A job for the current tip is ready at once.
        let now = jobs
            .on_job(&mut new_job(6, false), &[])
            .unwrap()
            .expect("ready");
        assert!(!now.clean);
        assert_eq!(now.template.min_time, 1_700_000_000);
    }

    #[test]
    fn a_new_prefix_rebuilds_the_current_job_around_it() {
        let mut jobs = PoolJobs::new(Network::Regtest, layout().total_len());
        jobs.on_job(&mut new_job(5, true), &[]).unwrap();
        let before = jobs.on_prev_hash(&mut prev_hash(5), &[]).unwrap().unwrap();
        let after = jobs.rebuild(&[0xaa, 0xbb]).unwrap().expect("rebuilt");
        assert_eq!(
            after.coinbase.prefix().len(),
            before.coinbase.prefix().len() + 2
        );
        assert!(after.coinbase.prefix().ends_with(&[0xaa, 0xbb]));
        assert_eq!(after.pool_job, before.pool_job);
    }

    #[test]
    fn a_prev_hash_for_an_unknown_job_publishes_nothing() {
        let mut jobs = PoolJobs::new(Network::Regtest, layout().total_len());
        assert!(jobs.on_prev_hash(&mut prev_hash(9), &[]).unwrap().is_none());
        let mut bad = new_job(1, false);
        bad.payload.truncate(3);
        assert!(jobs.on_job(&mut bad, &[]).is_err());
    }
}
