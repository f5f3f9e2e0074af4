//! The work a miner may submit to: each job sent, under which id, at which difficulty, and the
//! headers already accepted on it.
//!
//! A job goes out under its own id; the same job is sent again under a per-session alias
//! when the miner must move to fresh work on it: a new difficulty (it applies from the job
//! sent with it, so shares already in flight keep the difficulty they were mined at), or a full
//! duplicate set (so the set never grows past its bound).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bitcoin::{BlockHash, Target};
use mining_types::{Difficulty, JobId};

use crate::job::Job;
use crate::share::Reject;
use crate::sv1::codec::render;

/// Jobs a miner may still submit to on the current tip; older ones become stale.
const MAX_ACTIVE: usize = 8;
/// Retired ids remembered, so a late share is answered "stale", not "unknown".
const MAX_RETIRED: usize = 32;
/// Headers remembered per job sent; past this the job is sent again under a fresh id.
pub const MAX_SEEN: usize = 1024;
/// Alias ids have the top bit set: the publisher's ids never get there.
const ALIAS_BIT: u32 = 0x8000_0000;

/// One job as this miner got it.
#[derive(Debug)]
pub(super) struct Sent {
    pub id: JobId,
    pub job: Arc<Job>,
    /// The difficulty in force when it was sent, and its target.
    pub difficulty: Difficulty,
    pub target: Target,
    /// Headers already accepted, for duplicate detection.
    pub seen: HashSet<BlockHash>,
}

/// Everything sent to one miner.
#[derive(Debug, Default)]
pub(super) struct Work {
    active: VecDeque<Sent>,
    retired: VecDeque<JobId>,
    last_prev: Option<BlockHash>,
    next_alias: u32,
}

impl Work {
    /// Sends `job` under its own id; clean when forced, when the job says so, or when it is on
    /// a tip this miner has not mined yet.
    pub fn push(
        &mut self,
        job: Arc<Job>,
        (difficulty, target): (Difficulty, Target),
        force_clean: bool,
        out: &mut Vec<u8>,
    ) {
        let clean = force_clean || job.clean || self.last_prev != Some(job.prev_hash());
        out.extend_from_slice(job.notify_line(clean));
        self.add(job.id, job, (difficulty, target), clean);
    }

    /// The newest job sent.
    pub fn newest(&self) -> Option<Arc<Job>> {
        self.active.back().map(|s| s.job.clone())
    }

    /// Sends `job` again under a fresh id, at `difficulty`; not clean, so shares already in
    /// flight on the other ids still count.
    pub fn resend(
        &mut self,
        job: Arc<Job>,
        (difficulty, target): (Difficulty, Target),
        out: &mut Vec<u8>,
    ) {
        let id = self.alias();
        render::notify_as(out, job.notify_line_flagged(false), id);
        self.add(id, job, (difficulty, target), false);
    }

    fn alias(&mut self) -> JobId {
        self.next_alias = self.next_alias.wrapping_add(1) & !ALIAS_BIT;
        JobId::new(ALIAS_BIT | self.next_alias)
    }

    fn add(
        &mut self,
        id: JobId,
        job: Arc<Job>,
        (difficulty, target): (Difficulty, Target),
        clean: bool,
    ) {
        if clean {
            for old in self.active.drain(..) {
                self.retired.push_back(old.id);
            }
        }
        if self.active.len() >= MAX_ACTIVE {
            if let Some(old) = self.active.pop_front() {
                self.retired.push_back(old.id);
            }
        }
        while self.retired.len() > MAX_RETIRED {
            self.retired.pop_front();
        }
        self.last_prev = Some(job.prev_hash());
        self.active.push_back(Sent {
            id,
            job,
            difficulty,
            target,
            seen: HashSet::new(),
        });
    }

    /// The job a share names.
    ///
    /// # Errors
    /// [`Reject::StaleJob`] for a job retired, [`Reject::UnknownJob`] for one never sent.
    pub fn find(&mut self, id: JobId) -> Result<&mut Sent, Reject> {
        match self.active.iter().rposition(|s| s.id == id) {
            Some(i) => Ok(&mut self.active[i]),
            None if self.retired.contains(&id) => Err(Reject::StaleJob),
            None => Err(Reject::UnknownJob),
        }
    }

    /// Retires `id` when its duplicate set is full, and returns its job to send again under a
    /// fresh id.
    pub fn retire_if_full(&mut self, id: JobId) -> Option<Arc<Job>> {
        let i = self.active.iter().position(|s| s.id == id)?;
        if self.active[i].seen.len() < MAX_SEEN {
            return None;
        }
        let full = self.active.remove(i)?;
        self.retired.push_back(full.id);
        Some(full.job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{job, job_on, template_on};

    fn d(x: f64) -> (Difficulty, Target) {
        let d = Difficulty::new(x).expect("positive");
        (d, d.target())
    }

    #[test]
    fn a_resent_job_has_a_fresh_id_and_its_own_difficulty() {
        let mut w = Work::default();
        let mut out = Vec::new();
        w.push(job(1), d(1.0), true, &mut out);
        w.resend(w.newest().expect("one job"), d(8.0), &mut out);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let alias = lines[1]["params"][0].as_str().expect("id").to_owned();
        assert_ne!(alias, "1");
        let alias = JobId::parse(&alias).expect("ours");
        assert_eq!(
            w.find(JobId::new(1)).expect("still open").difficulty.get(),
            1.0
        );
        assert_eq!(w.find(alias).expect("open").difficulty.get(), 8.0);
        assert_eq!(
            lines[1]["params"][8], false,
            "not clean: old shares still count"
        );
    }

    #[test]
    fn a_new_tip_retires_everything_before_it() {
        let mut w = Work::default();
        let mut out = Vec::new();
        w.push(job(1), d(1.0), true, &mut out);
        w.push(job_on(2, template_on(7, 2), None), d(1.0), false, &mut out);
        assert!(matches!(w.find(JobId::new(1)), Err(Reject::StaleJob)));
        assert!(matches!(w.find(JobId::new(9)), Err(Reject::UnknownJob)));
        assert!(w.find(JobId::new(2)).is_ok());
    }

    #[test]
    fn a_full_duplicate_set_retires_its_id() {
        let mut w = Work::default();
        let mut out = Vec::new();
        w.push(job(1), d(1.0), true, &mut out);
        for n in 0..MAX_SEEN {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(n as u64).to_le_bytes());
            w.find(JobId::new(1))
                .expect("open")
                .seen
                .insert(bitcoin::hashes::Hash::from_byte_array(h));
        }
        let again = w.retire_if_full(JobId::new(1)).expect("full");
        assert_eq!(again.id, JobId::new(1));
        assert!(matches!(w.find(JobId::new(1)), Err(Reject::StaleJob)));
    }
}
