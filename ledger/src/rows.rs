//! What the ledger holds: the batches a gateway writes, and the rows reports read back.
//!
//! A batch is one sample of one gateway: the work of every worker since the previous sample,
//! what the pool said meanwhile, the blocks and their fates, and the chain's figures. Its
//! [`BatchKey`] is in the primary key of every row it writes, so writing a batch twice (a
//! replayed spool, a write that timed out after it committed) changes nothing.

use serde::{Deserialize, Serialize};

/// Who wrote a batch: the gateway, which run of it (a process start), and the sample number
/// within the run. Unique per batch; every row of the batch carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchKey {
    /// The gateway's configured name.
    pub gateway: String,
    /// Tells this run of the gateway from its earlier ones (its start, in microseconds).
    pub run: i64,
    /// The sample's number within the run, from 1.
    pub seq: i64,
}

/// One sample of one gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Its identity.
    pub key: BatchKey,
    /// Unix seconds at the start of the bucket the sample closes.
    pub bucket_start: i64,
    /// The bucket's length in seconds.
    pub bucket_secs: i64,
    /// Work per worker since the previous sample; workers without news are left out.
    #[serde(default)]
    pub work: Vec<WorkRow>,
    /// The pool's acknowledgements, per pool.
    #[serde(default)]
    pub acks: Vec<AckRow>,
    /// The pool's refusals, per pool and reason.
    #[serde(default)]
    pub refusals: Vec<RefusalRow>,
    /// Blocks found.
    #[serde(default)]
    pub blocks: Vec<BlockRow>,
    /// Verdicts on blocks.
    #[serde(default)]
    pub fates: Vec<FateRow>,
    /// The chain as mined during the bucket, when a job was out.
    #[serde(default)]
    pub chain: Option<ChainRow>,
}

impl Batch {
    /// A batch with nothing in it yet.
    pub fn new(key: BatchKey, bucket_start: i64, bucket_secs: i64) -> Batch {
        Batch {
            key,
            bucket_start,
            bucket_secs,
            work: Vec::new(),
            acks: Vec::new(),
            refusals: Vec::new(),
            blocks: Vec::new(),
            fates: Vec::new(),
            chain: None,
        }
    }

    /// Whether writing it would add nothing.
    pub fn is_empty(&self) -> bool {
        self.work.is_empty()
            && self.acks.is_empty()
            && self.refusals.is_empty()
            && self.blocks.is_empty()
            && self.fates.is_empty()
            && self.chain.is_none()
    }
}

/// One worker's work over a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkRow {
    /// The worker name the ASICs authorized with.
    pub worker: String,
    /// The customer the worker belonged to when written, if any.
    pub customer: Option<String>,
    /// Shares the gateway accepted.
    pub shares: i64,
    /// The sum of their difficulties.
    pub work: f64,
    /// Shares the gateway refused.
    pub rejects: i64,
}

/// `SubmitShares.Success` from one pool over a sample, summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckRow {
    /// The pool's configured name.
    pub pool: String,
    /// `new_submits_accepted_count`, summed.
    pub accepted: i64,
    /// `new_shares_sum`, summed.
    pub shares_sum: i64,
    /// Shares the pool refused (`SubmitShares.Error`).
    pub refused: i64,
}

/// Refusals from one pool for one reason over a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusalRow {
    /// The pool's configured name.
    pub pool: String,
    /// The pool's error code.
    pub reason: String,
    /// How many.
    pub count: i64,
}

/// A block found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRow {
    /// The block hash.
    pub hash: String,
    /// Its height.
    pub height: i64,
    /// Who found it.
    pub worker: String,
    /// Unix seconds.
    pub found_at: i64,
}

/// A verdict on a block by a node or a pool; a later verdict by the same judge replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FateRow {
    /// The block hash.
    pub hash: String,
    /// Which node or pool.
    pub judge: String,
    /// `accepted`, `inconclusive`, `rejected: ...`, ...
    pub fate: String,
    /// Unix seconds.
    pub at: i64,
}

/// The chain as mined over a bucket: what PPS and FPPS are priced from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainRow {
    /// The height of the blocks mined on.
    pub height: i64,
    /// The network difficulty of those blocks.
    pub network_difficulty: f64,
    /// Their subsidy, in satoshis.
    pub subsidy_sat: i64,
    /// The fees of the templates mined, in satoshis, averaged over the bucket by time.
    pub fees_sat: i64,
}

/// Work of one worker in one bucket on one gateway, read back (samples of a bucket summed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkBucket {
    /// The gateway.
    pub gateway: String,
    /// Unix seconds.
    pub bucket_start: i64,
    /// The worker.
    pub worker: String,
    /// Its customer when written.
    pub customer: Option<String>,
    /// Shares accepted.
    pub shares: i64,
    /// Their summed difficulty.
    pub work: f64,
    /// Shares refused.
    pub rejects: i64,
}

/// A pool's acknowledgements on one gateway in one bucket, read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckBucket {
    /// The gateway.
    pub gateway: String,
    /// Unix seconds.
    pub bucket_start: i64,
    /// The pool.
    pub pool: String,
    /// Shares the pool accepted.
    pub accepted: i64,
    /// The pool's `new_shares_sum`, summed.
    pub shares_sum: i64,
    /// Shares the pool refused.
    pub refused: i64,
}

/// A pool's refusals for one reason on one gateway in one bucket, read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusalBucket {
    /// The gateway.
    pub gateway: String,
    /// Unix seconds.
    pub bucket_start: i64,
    /// The pool.
    pub pool: String,
    /// The pool's error code.
    pub reason: String,
    /// How many.
    pub count: i64,
}

/// A block and every verdict on it, read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// The gateway whose ASIC found it.
    pub gateway: String,
    /// The block hash.
    pub hash: String,
    /// Its height.
    pub height: i64,
    /// Who found it.
    pub worker: String,
    /// Unix seconds.
    pub found_at: i64,
    /// The verdicts, by judge.
    pub fates: Vec<Fate>,
}

/// One verdict on a block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fate {
    /// Which node or pool.
    pub judge: String,
    /// What it said.
    pub fate: String,
    /// Unix seconds.
    pub at: i64,
}

/// The chain over one bucket on one gateway, read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainBucket {
    /// The gateway.
    pub gateway: String,
    /// Unix seconds.
    pub bucket_start: i64,
    /// The bucket's length in seconds.
    pub bucket_secs: i64,
    /// As in [`ChainRow`].
    pub height: i64,
    /// As in [`ChainRow`].
    pub network_difficulty: f64,
    /// As in [`ChainRow`].
    pub subsidy_sat: i64,
    /// As in [`ChainRow`].
    pub fees_sat: i64,
}

/// Half-open range of bucket starts, unix seconds: `from <= bucket_start < to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// First second in.
    pub from: i64,
    /// First second out.
    pub to: i64,
}

impl Period {
    /// Everything.
    pub const ALL: Period = Period {
        from: i64::MIN,
        to: i64::MAX,
    };
}
