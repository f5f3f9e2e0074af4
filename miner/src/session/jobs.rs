//! Jobs handed to the hashing thread, and the shares it finds.

use super::parse::id_key;
use super::state::{Pending, Session};
use crate::hasher::{Found, Work};
use crate::work::Job;
use crate::{share_target, MinerEvent};
use anyhow::Result;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl Session<'_> {
    pub(super) fn on_notify(&mut self, job: Job) {
        self.stats.notifies.fetch_add(1, Ordering::Relaxed);
        if job.clean {
            self.stats.clean_notifies.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((en1, size)) = self.next_extranonce.take() {
            self.extranonce1 = Some(en1);
            self.extranonce2_size = size;
        }
        self.job_difficulty = self.next_difficulty;
        if self.last_prevhash != Some(job.prevhash) {
            tracing::debug!(user = %self.config.user, prevhash = %job.prevhash, "new block");
            self.last_prevhash = Some(job.prevhash);
        }
        self.emit(MinerEvent::Notify {
            job_id: job.job_id.clone(),
            prevhash: job.prevhash,
            clean: job.clean,
            at: Instant::now(),
        });
        let clean = job.clean;
        self.job = Some(Arc::new(job));
        self.dispatch(clean);
    }

    /// Hands the current job to the hashing thread (once subscribed).
    pub(super) fn dispatch(&mut self, clean: bool) {
        let (Some(job), Some(en1)) = (self.job.clone(), self.extranonce1.clone()) else {
            return;
        };
        self.generation += 1;
        if clean {
            self.last_clean_generation = self.generation;
        }
        self.slot.set(Work {
            generation: self.generation,
            job,
            extranonce1: en1,
            extranonce2_size: self.extranonce2_size,
            target_le: share_target(self.job_difficulty).to_le_bytes(),
            version_mask: self.version_mask,
        });
    }

    pub(super) async fn submit(&mut self, found: Found) -> Result<()> {
        if found.generation < self.last_clean_generation {
            self.stats
                .shares_stale_dropped
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let id = self.dialect.request_id(self.next_id);
        self.next_id += 1;
        let params = self.dialect.submit_params(
            &self.config.user,
            &found.job_id,
            &found.extranonce2,
            found.ntime,
            found.nonce,
            found.version_bits,
        );
        let line = json!({"id": id, "method": "mining.submit", "params": params}).to_string();
        if let Some(key) = id_key(&id) {
            self.pending.insert(
                key,
                Pending::Submit {
                    sent: Instant::now(),
                },
            );
        }
        self.send_line(line).await?;
        self.stats.shares_submitted.fetch_add(1, Ordering::Relaxed);
        self.emit(MinerEvent::ShareSubmitted {
            job_id: found.job_id,
            block_hash: found.block_hash,
        });
        Ok(())
    }
}
