//! Turns each new template into a job and publishes it to every connection.
//!
//! A `watch` channel holds only the newest job: a slow connection skips jobs it had no time to
//! send, and never queues. A session decides "clean" itself from the previous block hash, so
//! skipping the clean job of a tip loses nothing.

use std::sync::Arc;

use template_provider::{CoinbaseConfig, Template};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{ExtranonceLayout, Job, JobId};

/// Builds jobs from templates.
#[derive(Debug)]
pub struct JobFactory {
    coinbase: CoinbaseConfig,
    layout: ExtranonceLayout,
    next_id: u32,
}

impl JobFactory {
    pub fn new(coinbase: CoinbaseConfig, layout: ExtranonceLayout) -> Self {
        JobFactory {
            coinbase,
            layout,
            next_id: 1,
        }
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
        Job::new(id, template, &self.coinbase, self.layout, clean)
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
