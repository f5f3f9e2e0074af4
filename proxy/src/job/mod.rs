//! Jobs: a template made ready for miners, serialized once and shared by every connection, and
//! the one task that publishes them.
//!
//! The [`Publisher`] turns every template (or, for a pool without job declaration, every job
//! of the pool's own) into a [`Job`] under the current [`Plan`] (whose coinbase: the farm's
//! payout, or a pool's outputs) and hands it to every session through a `watch`. A `watch`
//! holds only the newest job: a slow session skips jobs it had no time to send and never
//! queues. Jobs for a pool also go, in order and never skipped, to that pool's channel, which
//! declares them.

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::{block, Amount, BlockHash, ScriptBuf, TxMerkleNode, TxOut, Txid};
use mining_types::{
    merkle, CoinbaseConfig, CoinbaseError, CoinbaseSplit, ExtranonceLayout, JobId, Template,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::sv1::codec::{render, NotifyFields};
use crate::upstream::shares::PoolTag;

/// A job: one template with its coinbase split and the `mining.notify` lines for it.
#[derive(Debug)]
pub struct Job {
    /// The id miners echo in their shares.
    pub id: JobId,
    /// What the job builds.
    pub template: Arc<Template>,
    /// The coinbase around the extranonce.
    pub coinbase: CoinbaseSplit,
    /// The first job on its previous block hash: miners must drop older work.
    pub clean: bool,
    /// Set when the job is mined for a pool: which link its shares go to.
    pub pool: Option<PoolTag>,
    /// Both variants of the notify line, newline included, built once for all connections.
    notify: [Box<[u8]>; 2],
}

impl Job {
    /// Builds a job around a coinbase, and its notify lines.
    pub fn new(
        id: JobId,
        template: Arc<Template>,
        coinbase: CoinbaseSplit,
        clean: bool,
        pool: Option<PoolTag>,
    ) -> Job {
        let prev_hash = sv1_prev_hash(&template.prev_hash);
        let branch: Vec<String> = template
            .merkle_path
            .iter()
            .map(|n| hex::encode(n.as_byte_array()))
            .collect();
        let fields = NotifyFields {
            job_id: id,
            prev_hash: &prev_hash,
            coinb1: coinbase.prefix(),
            coinb2: coinbase.suffix(),
            merkle_branch: &branch,
            version: template.version.to_consensus() as u32,
            bits: template.bits.to_consensus(),
            ntime: template.cur_time,
        };
        let notify = [false, true].map(|c| render::notify(&fields, c).into_boxed_slice());
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

    /// The notify line with exactly this clean-jobs flag, whatever the job's own: a job sent
    /// again under a session's fresh id must not make the miner drop its other work.
    pub fn notify_line_flagged(&self, clean: bool) -> &[u8] {
        &self.notify[usize::from(clean)]
    }

    /// The previous block hash the job builds on.
    pub fn prev_hash(&self) -> BlockHash {
        self.template.prev_hash
    }

    /// The block header for a filled-in coinbase.
    pub fn header(
        &self,
        coinbase_txid: Txid,
        version: block::Version,
        ntime: u32,
        nonce: u32,
    ) -> block::Header {
        block::Header {
            version,
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

/// Whose coinbase jobs carry, and where they go besides the miners.
#[derive(Debug, Clone, Default)]
pub enum Plan {
    /// The farm's own payout: blocks go to the local node.
    #[default]
    Solo,
    /// Mining for a pool.
    Pool(PoolPlan),
}

/// Mining for a pool: its link, and whose jobs.
#[derive(Debug, Clone)]
pub struct PoolPlan {
    /// The link the jobs are mined for.
    pub tag: PoolTag,
    /// Every job made under this plan, in order, for the channel to track (and declare).
    pub jobs: mpsc::UnboundedSender<Arc<Job>>,
    /// Whose jobs.
    pub work: PoolWork,
}

/// Whose jobs are mined for a pool.
#[derive(Debug, Clone)]
pub enum PoolWork {
    /// The farm's templates with the pool's coinbase outputs, declared to its JDS.
    Declared {
        /// As the pool asked for them; a zero value is filled with what the template leaves.
        outputs: Vec<TxOut>,
        /// The scriptSig bytes before the miner's extranonce: the channel's extranonce prefix
        /// and the padding up to the channel's extranonce size.
        fixed: Vec<u8>,
    },
    /// The pool's own jobs, as its channel sends them ([`Command::PoolJob`]).
    PoolJobs,
}

/// What the publisher is told.
#[derive(Debug)]
pub enum Command {
    /// Jobs from now on follow this plan; a clean job under it goes out at once (unless the
    /// pool's own jobs are to be mined: they come from its channel).
    SetPlan(Plan),
    /// A job of a pool's own, from the channel of `tag.link`; ignored unless that link's
    /// plan is in force. Its template id is the pool's job id.
    PoolJob {
        /// The link it came from.
        tag: PoolTag,
        /// The pool's template (merkle path, tip).
        template: Arc<Template>,
        /// The coinbase, with the channel's prefix.
        coinbase: CoinbaseSplit,
        /// The pool said to drop older work.
        clean: bool,
    },
}

/// The pool's outputs with the block's value: outputs the pool left at zero share what the
/// pool's own fixed amounts leave of `value` (the first of them takes any remainder).
pub fn pool_outputs(outputs: &[TxOut], value: Amount) -> Vec<(ScriptBuf, Amount)> {
    let fixed: Amount = outputs
        .iter()
        .map(|o| o.value)
        .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap_or(a));
    let mut left = value.checked_sub(fixed).unwrap_or(Amount::ZERO);
    outputs
        .iter()
        .map(|o| {
            if o.value == Amount::ZERO {
                let v = left;
                left = Amount::ZERO;
                (o.script_pubkey.clone(), v)
            } else {
                (o.script_pubkey.clone(), o.value)
            }
        })
        .collect()
}

/// Where the ids of published jobs end: sessions number the jobs they send again from here
/// up.
pub const PUBLISHED_IDS_END: u32 = 0x8000_0000;

/// The ids one publisher hands out, in turn, wrapping around. With several routes each
/// publisher has a block of its own, so a session moved from one route to another never
/// holds two jobs under one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobIds {
    first: u32,
    last: u32,
    next: u32,
}

impl JobIds {
    /// Block `index` of `count` equal blocks of the ids from 1 below [`PUBLISHED_IDS_END`]
    /// (`count` at least 1, `index` below it).
    pub fn block(index: usize, count: usize) -> JobIds {
        let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
        let index = u32::try_from(index).unwrap_or(u32::MAX).min(count - 1);
        let span = (PUBLISHED_IDS_END - 1) / count;
        let first = index * span + 1;
        JobIds {
            first,
            last: first + span - 1,
            next: first,
        }
    }

    /// The next id.
    pub fn take(&mut self) -> JobId {
        let id = self.next;
        self.next = if id >= self.last { self.first } else { id + 1 };
        JobId::new(id)
    }

    /// Whether `id` is one of this block's.
    pub fn holds(&self, id: JobId) -> bool {
        (self.first..=self.last).contains(&id.get())
    }
}

/// Builds jobs from templates under a plan.
#[derive(Debug)]
pub struct JobFactory {
    coinbase: CoinbaseConfig,
    layout: ExtranonceLayout,
    plan: Plan,
    ids: JobIds,
}

impl JobFactory {
    /// A factory paying `coinbase` in solo mode, with room for `layout`'s extranonce; its ids
    /// start at 1.
    pub fn new(coinbase: CoinbaseConfig, layout: ExtranonceLayout) -> Self {
        JobFactory {
            coinbase,
            layout,
            plan: Plan::Solo,
            ids: JobIds::block(0, 1),
        }
    }

    /// The same, numbering its jobs from `ids`.
    #[must_use]
    pub fn with_ids(mut self, ids: JobIds) -> Self {
        self.ids = ids;
        self
    }

    fn next_id(&mut self) -> JobId {
        self.ids.take()
    }

    /// The job for `template` under the current plan; `previous` decides whether it is clean.
    ///
    /// # Errors
    /// When the coinbase cannot be built.
    pub fn make(
        &mut self,
        template: Arc<Template>,
        previous: Option<&Job>,
    ) -> Result<Job, CoinbaseError> {
        let clean = previous.is_none_or(|p| p.prev_hash() != template.prev_hash);
        let id = self.next_id();
        let (coinbase, pool) = match &self.plan {
            Plan::Pool(PoolPlan {
                tag,
                work: PoolWork::Declared { outputs, fixed },
                ..
            }) => {
                let outputs = pool_outputs(outputs, template.coinbase_value);
                let split = CoinbaseSplit::with_outputs(
                    &template,
                    &self.coinbase.tag,
                    &outputs,
                    fixed,
                    self.layout.total_len(),
                )?;
                (split, Some(*tag))
            }
            _ => (
                CoinbaseSplit::build(&template, &self.coinbase, self.layout.total_len())?,
                None,
            ),
        };
        Ok(Job::new(id, template, coinbase, clean, pool))
    }
}

/// The one task that publishes jobs to every session.
#[derive(Debug)]
pub struct Publisher {
    /// Builds the jobs.
    pub factory: JobFactory,
    /// The farm's templates.
    pub templates: watch::Receiver<Arc<Template>>,
    /// Plans and pool jobs.
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Where sessions read jobs.
    pub jobs: watch::Sender<Arc<Job>>,
    /// Times new tip → clean job out, when the farm's nodes say when they saw each tip.
    pub timing: Option<crate::figures::latency::NotifyTiming>,
}

impl Publisher {
    /// Publishes until shutdown.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = self.templates.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if !self.pool_jobs() {
                        self.publish(false);
                    }
                }
                Some(command) = self.commands.recv() => self.on_command(command),
            }
        }
    }

    fn pool_jobs(&self) -> bool {
        matches!(
            &self.factory.plan,
            Plan::Pool(PoolPlan {
                work: PoolWork::PoolJobs,
                ..
            })
        )
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::SetPlan(plan) => {
                self.factory.plan = plan;
                // A new coinbase: miners drop work whose shares no longer go anywhere. A
                // pool's own jobs come from its channel.
                if !self.pool_jobs() {
                    self.publish(true);
                }
            }
            Command::PoolJob {
                tag,
                template,
                coinbase,
                clean,
            } => {
                let Plan::Pool(plan) = &self.factory.plan else {
                    return;
                };
                if plan.tag != tag || !self.pool_jobs() {
                    return;
                }
                let jobs = plan.jobs.clone();
                let id = self.factory.next_id();
                let job = Arc::new(Job::new(id, template, coinbase, clean, Some(tag)));
                let _ = jobs.send(job.clone());
                self.jobs.send_replace(job);
            }
        }
    }

    /// Publishes a job for the current template; `clean` forces the clean flag.
    fn publish(&mut self, clean: bool) {
        let template = self.templates.borrow_and_update().clone();
        let previous = (!clean).then(|| self.jobs.borrow().clone());
        match self.factory.make(template, previous.as_deref()) {
            Ok(job) => {
                let job = Arc::new(job);
                if job.clean {
                    info!(job = %job.id, height = job.template.height, txs = job.template.txs.len(), kind = ?job.template.kind, "clean job");
                }
                if let Plan::Pool(p) = &self.factory.plan {
                    let _ = p.jobs.send(job.clone());
                }
                let tip = job.clean.then_some(job.template.prev_hash);
                self.jobs.send_replace(job);
                if let (Some(t), Some(tip)) = (&mut self.timing, tip) {
                    t.clean_job_out(tip);
                }
            }
            Err(e) => {
                error!(error = %e, "cannot build a job from the template; miners keep the previous job");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(script: u8, sat: u64) -> TxOut {
        TxOut {
            value: Amount::from_sat(sat),
            script_pubkey: ScriptBuf::from_bytes(vec![script]),
        }
    }

    #[test]
    fn the_pool_payout_output_takes_what_the_block_leaves() {
        let value = Amount::from_sat(5_000_000_000);
        let got = pool_outputs(&[out(1, 0), out(2, 0), out(3, 1_000)], value);
        let values: Vec<u64> = got.iter().map(|(_, v)| v.to_sat()).collect();
        assert_eq!(
            values,
            [4_999_999_000, 0, 1_000],
            "first zero output is the pool payout"
        );
        assert_eq!(got[0].0.as_bytes(), [1]);
        // Outputs asking for more than the block has never make value up.
        let got = pool_outputs(&[out(1, 0), out(2, 9_000_000_000)], value);
        assert_eq!(got[0].1, Amount::ZERO);
    }

    #[test]
    fn each_route_numbers_its_jobs_in_a_block_of_its_own() {
        let mut one = JobIds::block(0, 1);
        assert_eq!(
            (one.take().get(), one.take().get()),
            (1, 2),
            "ids as without routes"
        );
        let blocks: Vec<JobIds> = (0..3).map(|i| JobIds::block(i, 3)).collect();
        for (i, a) in blocks.iter().enumerate() {
            for (j, b) in blocks.iter().enumerate() {
                assert!(
                    i == j || (a.last < b.first || b.last < a.first),
                    "{a:?} {b:?}"
                );
            }
            assert!(a.first >= 1 && a.last < PUBLISHED_IDS_END, "{a:?}");
        }
        let mut last = blocks[2];
        last.next = last.last;
        let (end, wrapped) = (last.take(), last.take());
        assert_eq!(
            wrapped.get(),
            blocks[2].first,
            "wraps within its block after {end}"
        );
        assert!(blocks[1].holds(JobIds::block(1, 3).take()));
    }

    #[test]
    fn prev_hash_words_are_swapped() {
        let mut raw = [0u8; 32];
        raw[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let s = sv1_prev_hash(&BlockHash::from_byte_array(raw));
        assert!(s.starts_with("0403020108070605"));
    }
}
