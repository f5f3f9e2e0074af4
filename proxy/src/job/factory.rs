//! Turns each new template into a job and publishes it to every connection.
//!
//! A `watch` channel holds only the newest job: a slow connection skips jobs it had no time to
//! send, and never queues. A session decides "clean" itself from the previous block hash, so
//! skipping the clean job of a tip loses nothing.

use std::sync::Arc;

use bitcoin::{Amount, ScriptBuf, TxOut};
use template_provider::{CoinbaseConfig, CoinbaseSplit, Template};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{ExtranonceLayout, Job, JobId};

/// Whose coinbase the jobs carry.
#[derive(Debug, Clone)]
pub enum Plan {
    /// The farm's own payout: blocks go to the local node.
    Solo,
    /// A pool's job: the pool's outputs, the channel's extranonce prefix, shares to the pool.
    Pool(PoolPlan),
}

/// The pool's part of a coinbase.
#[derive(Debug, Clone)]
pub struct PoolPlan {
    /// As the pool asked for them; a zero value is filled with what the template leaves.
    pub outputs: Vec<TxOut>,
    /// The scriptSig bytes before the miner's extranonce: the channel's extranonce prefix and
    /// the padding up to the channel's extranonce size.
    pub fixed: Vec<u8>,
    pub tag: crate::upstream::PoolTag,
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

/// Builds jobs from templates.
#[derive(Debug)]
pub struct JobFactory {
    coinbase: CoinbaseConfig,
    layout: ExtranonceLayout,
    plan: Plan,
    next_id: u32,
}

impl JobFactory {
    pub fn new(coinbase: CoinbaseConfig, layout: ExtranonceLayout) -> Self {
        JobFactory {
            coinbase,
            layout,
            plan: Plan::Solo,
            next_id: 1,
        }
    }

    /// Jobs from now on carry this plan's coinbase.
    pub fn set_plan(&mut self, plan: Plan) {
        self.plan = plan;
    }

    /// The job for `template`; `previous` decides whether it is clean.
    ///
    /// # Errors
    /// When the coinbase cannot be built.
    pub fn make(
        &mut self,
        template: Arc<Template>,
        previous: Option<&Job>,
    ) -> Result<Job, template_provider::CoinbaseError> {
        let clean = previous.is_none_or(|p| p.prev_hash() != template.prev_hash);
        let id = JobId::new(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        match &self.plan {
            Plan::Solo => Job::new(id, template, &self.coinbase, self.layout, clean),
            Plan::Pool(p) => {
                let outputs = pool_outputs(&p.outputs, template.coinbase_value);
                let split = CoinbaseSplit::with_outputs(
                    &template,
                    &self.coinbase.tag,
                    &outputs,
                    &p.fixed,
                    self.layout.total_len(),
                )?;
                Ok(Job::with_coinbase(
                    id,
                    template,
                    split,
                    clean,
                    Some(p.tag.clone()),
                ))
            }
        }
    }

    /// A job around a coinbase split elsewhere (a pool's own job).
    pub fn make_with(
        &mut self,
        template: Arc<Template>,
        coinbase: CoinbaseSplit,
        clean: bool,
        pool: Option<crate::upstream::PoolTag>,
    ) -> Job {
        let id = JobId::new(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        Job::with_coinbase(id, template, coinbase, clean, pool)
    }

    /// Publishes a job for every template until shutdown.
    pub async fn run(
        mut self,
        mut templates: watch::Receiver<Arc<Template>>,
        jobs: watch::Sender<Arc<Job>>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = templates.changed() => if changed.is_err() { return },
            }
            let template = templates.borrow_and_update().clone();
            let previous = jobs.borrow().clone();
            match self.make(template, Some(&previous)) {
                Ok(job) => {
                    if job.clean {
                        info!(job = %job.id, height = job.template.height, txs = job.template.txs.len(), kind = ?job.template.kind, "clean job on a new tip");
                    }
                    jobs.send_replace(Arc::new(job));
                }
                Err(e) => {
                    error!(error = %e, "cannot build a job from the template; miners keep the previous job")
                }
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
}
