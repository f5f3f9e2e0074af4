//! Where each job mined for a pool stands, and what becomes of the shares found on it. Pure:
//! no I/O, no clock of its own.
//!
//! A job reaches the miners at once (optimistic mining) and is declared meanwhile; shares found
//! before the pool names the job (`SetCustomMiningJob.Success`) wait here and go up the moment
//! it does. A job with a block on it jumps the declaration queue. Jobs the declarer skipped for
//! newer ones never get a pool id: their shares are dropped, counted, and a block among them is
//! reported so it can be logged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::Target;
use mining_types::{JobId, PoolJobId};

use super::shares::UpShare;
use crate::job::Job;

/// Shares waiting for their job's `SetCustomMiningJob.Success`, per job.
pub const MAX_QUEUED_PER_JOB: usize = 1024;
/// Jobs tracked; shares on older ones are dropped.
pub const MAX_TRACKED_JOBS: usize = 16;

/// Where a job stands with the pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JobState {
    /// Sent to miners; its declaration is in flight or waits its turn.
    Declaring,
    /// A block was found on it before the pool took it: declared ahead of newer jobs, and never
    /// skipped for them.
    DeclaringFirst,
    /// A later job was declared first: this one never will be.
    Skipped,
    /// Declared; `SetCustomMiningJob` sent at this time.
    Setting(Instant),
    /// The pool's id for it, and the target the pool checks its shares against (the channel's
    /// target when the job was set: a later `SetTarget` does not change it).
    Active(PoolJobId, Target),
}

#[derive(Debug)]
struct Tracked {
    job: Arc<Job>,
    state: JobState,
    queued: Vec<UpShare>,
}

/// What to do with a share.
#[derive(Debug)]
pub enum Forward {
    /// Send it under the pool's job id.
    Submit(PoolJobId, UpShare),
    /// Held until the pool names its job.
    Held,
    /// Below the pool's target: the pool does not want it.
    BelowTarget,
    /// A block on a job not yet declared: declare this job first (the block is held).
    DeclareFirst(Arc<Job>),
    /// It can never reach the pool.
    Dropped(UpShare, &'static str),
}

/// Every job of one channel, oldest first.
#[derive(Debug, Default)]
pub struct CustomJobs {
    jobs: VecDeque<Tracked>,
}

impl CustomJobs {
    /// Tracks a job of ours, to be declared; returns shares of a job forgotten to make room.
    pub fn track(&mut self, job: Arc<Job>) -> Vec<UpShare> {
        self.push(job, JobState::Declaring)
    }

    /// Tracks a job of the pool's own: active at once under `pool_job`.
    pub fn track_active(&mut self, job: Arc<Job>, pool_job: PoolJobId, target: Target) {
        let _ = self.push(job, JobState::Active(pool_job, target));
    }

    fn push(&mut self, job: Arc<Job>, state: JobState) -> Vec<UpShare> {
        let mut dropped = Vec::new();
        if self.jobs.len() >= MAX_TRACKED_JOBS {
            if let Some(old) = self.jobs.pop_front() {
                dropped = old.queued;
            }
        }
        self.jobs.push_back(Tracked {
            job,
            state,
            queued: Vec::new(),
        });
        dropped
    }

    /// A job's state.
    pub fn state(&self, id: JobId) -> Option<JobState> {
        self.jobs.iter().find(|t| t.job.id == id).map(|t| t.state)
    }

    /// The JDS declared `id`: the job to send `SetCustomMiningJob` for, and the shares of
    /// older jobs still waiting their turn, which never will get it now (the declarer takes the
    /// newest job). `None` when the job is forgotten.
    pub fn declared(&mut self, id: JobId, now: Instant) -> Option<(Arc<Job>, Vec<UpShare>)> {
        let pos = self.jobs.iter().position(|t| t.job.id == id)?;
        let mut skipped = Vec::new();
        for older in self.jobs.iter_mut().take(pos) {
            if older.state == JobState::Declaring {
                older.state = JobState::Skipped;
                skipped.append(&mut older.queued);
            }
        }
        let t = &mut self.jobs[pos];
        t.state = JobState::Setting(now);
        Some((t.job.clone(), skipped))
    }

    /// The pool named our job `id` as `pool_job`, checked against `target`: the held shares
    /// that now go up (blocks always, others when they meet the target).
    pub fn set(&mut self, id: JobId, pool_job: PoolJobId, target: Target) -> Vec<UpShare> {
        let Some(t) = self.jobs.iter_mut().find(|t| t.job.id == id) else {
            return Vec::new();
        };
        t.state = JobState::Active(pool_job, target);
        let mut queued = std::mem::take(&mut t.queued);
        queued.retain(|s| s.is_block || target.is_met_by(s.hash));
        queued
    }

    /// A share from a session.
    pub fn on_share(&mut self, share: UpShare) -> Forward {
        let Some(t) = self.jobs.iter_mut().find(|t| t.job.id == share.job) else {
            return Forward::Dropped(share, "a job this pool no longer knows");
        };
        match t.state {
            // A block always goes: the pool credits it whatever the channel's target.
            JobState::Active(pool_job, target)
                if share.is_block || target.is_met_by(share.hash) =>
            {
                Forward::Submit(pool_job, share)
            }
            JobState::Active(..) => Forward::BelowTarget,
            JobState::Declaring if share.is_block => {
                t.state = JobState::DeclaringFirst;
                t.queued.push(share);
                Forward::DeclareFirst(t.job.clone())
            }
            JobState::Declaring | JobState::DeclaringFirst | JobState::Setting(_)
                if share.is_block || t.queued.len() < MAX_QUEUED_PER_JOB =>
            {
                t.queued.push(share);
                Forward::Held
            }
            JobState::Skipped => Forward::Dropped(share, "a newer job was declared first"),
            _ => Forward::Dropped(share, "too many shares held for the job"),
        }
    }

    /// Whether a `SetCustomMiningJob` has waited longer than `timeout` at `now`.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.jobs.iter().any(
            |t| matches!(t.state, JobState::Setting(since) if now.duration_since(since) > timeout),
        )
    }

    /// Forgets every job (the channel's prefix changed: every coinbase is dead for the pool);
    /// returns the shares that were held.
    pub fn clear(&mut self) -> Vec<UpShare> {
        self.jobs.drain(..).flat_map(|t| t.queued).collect()
    }

    /// Whether the pool took any job.
    pub fn any_active(&self) -> bool {
        self.jobs
            .iter()
            .any(|t| matches!(t.state, JobState::Active(..)))
    }

    /// Every share still held, and the jobs: what is lost when the channel goes.
    pub fn into_held(self) -> Vec<UpShare> {
        self.jobs.into_iter().flat_map(|t| t.queued).collect()
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{block, BlockHash};

    use super::*;
    use crate::test_support::job;
    use crate::upstream::shares::MAX_EXTRANONCE;

    fn share(job: u32, hash_byte: u8, is_block: bool) -> UpShare {
        UpShare {
            job: JobId::new(job),
            extranonce: [0; MAX_EXTRANONCE],
            extranonce_len: 8,
            version: block::Version::TWO.to_consensus() as u32,
            ntime: 0,
            nonce: 0,
            // Little-endian: the last byte is the most significant.
            hash: BlockHash::from_byte_array({
                let mut h = [0u8; 32];
                h[31] = hash_byte;
                h
            }),
            difficulty: 1.0,
            is_block,
            worker: Arc::from("w"),
        }
    }

    /// A target that hashes with a top byte of at most 0x0f meet.
    fn target() -> Target {
        let mut t = [0u8; 32];
        t[0] = 0x0f;
        t[1..].fill(0xff);
        Target::from_be_bytes(t)
    }

    #[test]
    fn shares_wait_for_the_pool_job_id_then_go_if_they_meet_its_target() {
        let mut jobs = CustomJobs::default();
        assert!(jobs.track(job(1)).is_empty());
        assert!(matches!(
            jobs.on_share(share(1, 0x01, false)),
            Forward::Held
        ));
        assert!(matches!(
            jobs.on_share(share(1, 0xf0, false)),
            Forward::Held
        ));
        let now = Instant::now();
        let (declared, skipped) = jobs.declared(JobId::new(1), now).expect("tracked");
        assert_eq!(declared.id, JobId::new(1));
        assert!(skipped.is_empty());
        assert!(!jobs.overdue(now, Duration::from_secs(10)));
        assert!(jobs.overdue(now + Duration::from_secs(11), Duration::from_secs(10)));
        let out = jobs.set(JobId::new(1), PoolJobId(77), target());
        assert_eq!(
            out.len(),
            1,
            "the share above the pool's target is not sent"
        );
        assert!(!jobs.overdue(now + Duration::from_secs(11), Duration::from_secs(10)));
        assert!(matches!(
            jobs.on_share(share(1, 0x02, false)),
            Forward::Submit(PoolJobId(77), _)
        ));
        assert!(matches!(
            jobs.on_share(share(1, 0xf0, false)),
            Forward::BelowTarget
        ));
        assert!(matches!(
            jobs.on_share(share(1, 0xf0, true)),
            Forward::Submit(..)
        ));
        assert!(jobs.any_active());
    }

    #[test]
    fn a_newer_declaration_skips_older_jobs_and_drops_their_shares() {
        let mut jobs = CustomJobs::default();
        jobs.track(job(1));
        jobs.track(job(2));
        jobs.on_share(share(1, 0x01, false));
        let (_, skipped) = jobs
            .declared(JobId::new(2), Instant::now())
            .expect("tracked");
        assert_eq!(skipped.len(), 1);
        assert_eq!(jobs.state(JobId::new(1)), Some(JobState::Skipped));
        assert!(matches!(
            jobs.on_share(share(1, 0x01, false)),
            Forward::Dropped(_, "a newer job was declared first")
        ));
        assert!(matches!(
            jobs.on_share(share(9, 0x01, false)),
            Forward::Dropped(..)
        ));
    }

    #[test]
    fn a_block_on_an_undeclared_job_asks_for_it_first_and_is_sent_when_set() {
        let mut jobs = CustomJobs::default();
        jobs.track(job(1));
        jobs.track(job(2));
        let Forward::DeclareFirst(j) = jobs.on_share(share(1, 0xff, true)) else {
            panic!("not asked to declare first")
        };
        assert_eq!(j.id, JobId::new(1));
        assert_eq!(jobs.state(JobId::new(1)), Some(JobState::DeclaringFirst));
        // A newer declaration does not skip a job with a block on it.
        let _ = jobs.declared(JobId::new(2), Instant::now());
        assert_eq!(jobs.state(JobId::new(1)), Some(JobState::DeclaringFirst));
        let _ = jobs.declared(JobId::new(1), Instant::now());
        let out = jobs.set(JobId::new(1), PoolJobId(5), target());
        assert_eq!(out.len(), 1);
        assert!(out[0].is_block, "a block goes whatever the target");
    }

    #[test]
    fn held_shares_are_bounded_but_blocks_never_are() {
        let mut jobs = CustomJobs::default();
        jobs.track(job(1));
        for _ in 0..MAX_QUEUED_PER_JOB {
            assert!(matches!(jobs.on_share(share(1, 1, false)), Forward::Held));
        }
        assert!(matches!(
            jobs.on_share(share(1, 1, false)),
            Forward::Dropped(..)
        ));
        let _ = jobs.on_share(share(1, 1, true));
        assert!(matches!(jobs.on_share(share(1, 1, true)), Forward::Held));
        assert_eq!(jobs.clear().len(), MAX_QUEUED_PER_JOB + 2);
        assert!(jobs.state(JobId::new(1)).is_none());
    }

    #[test]
    fn the_oldest_job_is_forgotten_past_the_bound() {
        let mut jobs = CustomJobs::default();
        jobs.track(job(1));
        jobs.on_share(share(1, 1, false));
        for id in 2..=MAX_TRACKED_JOBS as u32 {
            assert!(jobs.track(job(id)).is_empty());
        }
        let dropped = jobs.track(job(100));
        assert_eq!(dropped.len(), 1, "the held share of the forgotten job");
        assert!(jobs.state(JobId::new(1)).is_none());
    }

    #[test]
    fn a_pool_job_is_active_at_once() {
        let mut jobs = CustomJobs::default();
        jobs.track_active(job(3), PoolJobId(9), target());
        assert!(matches!(
            jobs.on_share(share(3, 1, false)),
            Forward::Submit(PoolJobId(9), _)
        ));
    }
}
