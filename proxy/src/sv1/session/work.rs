//! The work a miner may submit to: each job sent, under which id, at which difficulty, and the
//! headers already accepted on it.
//!
//! A job goes out under its own id; the same job is sent again under a per-session alias
//! when the miner must move to fresh work on it: a new difficulty (it applies from the job
//! sent with it, so shares already in flight keep the difficulty they were mined at), or a full
//! duplicate set.
//!
//! A miner restarts its search on every job it gets, so on an alias it finds again the headers
//! it found under the job's other ids (and two jobs on one tip build the same block when the
//! mempool is empty). Duplicates are therefore judged across every job on the tip, and an
//! alias carries a later ntime so the search mostly moves past the old headers. To bound the
//! set, a full one is emptied, every id retired, and the newest job sent again with an ntime
//! floor above every header in the old set: no old header can come back.

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
/// Headers remembered per tip; past this the newest job is sent again past them.
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
    /// Shares on this id need at least this ntime.
    pub min_ntime: u32,
}

/// The headers accepted on the tip, under any job.
#[derive(Debug, Default)]
struct Seen {
    headers: HashSet<BlockHash>,
    max_ntime: u32,
    /// Every header ever forgotten from this set had an ntime below this.
    floor: u32,
}

/// What became of an accepted header.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Recorded {
    /// New, and remembered.
    New,
    /// New, and it filled the set: send the newest job again with [`Work::renew`].
    Full,
}

/// Everything sent to one miner.
#[derive(Debug, Default)]
pub(super) struct Work {
    active: VecDeque<Sent>,
    seen: Seen,
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

    /// Sends `job`, of the route the miner was moved to, under its own id; clean only when it
    /// is on another tip, so the old route's jobs stay open for shares already being found.
    pub fn push_moved(
        &mut self,
        job: Arc<Job>,
        (difficulty, target): (Difficulty, Target),
        out: &mut Vec<u8>,
    ) {
        let clean = self.last_prev != Some(job.prev_hash());
        out.extend_from_slice(job.notify_line_flagged(clean));
        self.add(job.id, job, (difficulty, target), clean);
    }

    /// The newest job sent.
    pub fn newest(&self) -> Option<Arc<Job>> {
        self.active.back().map(|s| s.job.clone())
    }

    /// Sends `job` again under a fresh id at `difficulty`, its ntime moved up to `now_unix`;
    /// not clean, so shares already in flight on the other ids still count.
    pub fn resend(
        &mut self,
        job: Arc<Job>,
        (difficulty, target): (Difficulty, Target),
        now_unix: u32,
        out: &mut Vec<u8>,
    ) {
        let ntime = job.template.cur_time.max(now_unix).max(self.seen.floor);
        let id = self.alias();
        render::notify_as(out, job.notify_line_flagged(false), id, ntime);
        self.add(id, job, (difficulty, target), false);
    }

    /// After [`Recorded::Full`]: retires every id sent, forgets the headers, and sends `job`
    /// again with an ntime floor above all of them.
    pub fn renew(
        &mut self,
        job: Arc<Job>,
        d: (Difficulty, Target),
        now_unix: u32,
        out: &mut Vec<u8>,
    ) {
        for old in self.active.drain(..) {
            self.retired.push_back(old.id);
        }
        self.seen.floor = self.seen.max_ntime.saturating_add(1).max(self.seen.floor);
        self.seen.headers = HashSet::new();
        self.resend(job, d, now_unix, out);
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
        if self.last_prev != Some(job.prev_hash()) {
            self.seen = Seen::default();
        }
        self.last_prev = Some(job.prev_hash());
        self.active.push_back(Sent {
            id,
            job,
            difficulty,
            target,
            min_ntime: self.seen.floor,
        });
    }

    /// The job a share names.
    ///
    /// # Errors
    /// [`Reject::StaleJob`] for a job retired, [`Reject::UnknownJob`] for one never sent.
    pub fn find(&self, id: JobId) -> Result<&Sent, Reject> {
        match self.active.iter().rposition(|s| s.id == id) {
            Some(i) => Ok(&self.active[i]),
            None if self.retired.contains(&id) => Err(Reject::StaleJob),
            None => Err(Reject::UnknownJob),
        }
    }

    /// Remembers a header accepted at `ntime`.
    ///
    /// # Errors
    /// [`Reject::Duplicate`]: the miner sent this header before, under any job on the tip.
    pub fn record(&mut self, header: BlockHash, ntime: u32) -> Result<Recorded, Reject> {
        let seen = &mut self.seen;
        if !seen.headers.insert(header) {
            return Err(Reject::Duplicate);
        }
        seen.max_ntime = seen.max_ntime.max(ntime);
        Ok(if seen.headers.len() >= MAX_SEEN {
            Recorded::Full
        } else {
            Recorded::New
        })
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

    fn header(n: u64) -> BlockHash {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&n.to_le_bytes());
        bitcoin::hashes::Hash::from_byte_array(h)
    }

    fn lines(out: &[u8]) -> Vec<serde_json::Value> {
        String::from_utf8(out.to_vec())
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    #[test]
    fn a_resent_job_has_a_fresh_id_its_own_difficulty_and_a_later_ntime() {
        let mut w = Work::default();
        let mut out = Vec::new();
        w.push(job(1), d(1.0), true, &mut out);
        let cur_time = w.newest().expect("one job").template.cur_time;
        w.resend(
            w.newest().expect("one job"),
            d(8.0),
            cur_time + 30,
            &mut out,
        );
        let lines = lines(&out);
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
        assert_eq!(
            lines[1]["params"][7],
            format!("{:08x}", cur_time + 30),
            "the miner's search moves to a later ntime"
        );
    }

    #[test]
    fn a_header_found_again_under_an_alias_is_a_duplicate() {
        let mut w = Work::default();
        let mut out = Vec::new();
        w.push(job(1), d(1.0), true, &mut out);
        assert_eq!(w.record(header(7), 5), Ok(Recorded::New));
        w.resend(w.newest().expect("one job"), d(2.0), 0, &mut out);
        // The alias names the same job: the header it finds again is the same header.
        assert_eq!(w.record(header(7), 5), Err(Reject::Duplicate));
    }

    #[test]
    fn a_header_built_by_two_jobs_on_one_tip_counts_once() {
        let mut w = Work::default();
        let mut out = Vec::new();
        w.push(job(1), d(1.0), true, &mut out);
        assert_eq!(w.record(header(7), 5), Ok(Recorded::New));
        w.push(job(2), d(1.0), false, &mut out);
        assert_eq!(w.record(header(7), 5), Err(Reject::Duplicate));
    }

    #[test]
    fn a_job_of_another_route_on_the_same_tip_keeps_the_old_ones_open() {
        let mut w = Work::default();
        let mut out = Vec::new();
        w.push(job(1), d(1.0), true, &mut out);
        out.clear();
        // The other route's newest job was clean where it was published: not for this miner.
        w.push_moved(job(0x4000_0001), d(1.0), &mut out);
        assert_eq!(lines(&out)[0]["params"][8], false);
        assert!(
            w.find(JobId::new(1)).is_ok(),
            "shares on the old route still count"
        );
        assert!(w.find(JobId::new(0x4000_0001)).is_ok());
        out.clear();
        w.push_moved(job_on(7, template_on(7, 2), None), d(1.0), &mut out);
        assert_eq!(lines(&out)[0]["params"][8], true, "another tip: clean");
    }

    #[test]
    fn a_new_tip_retires_everything_before_it() {
        let mut w = Work::default();
        let mut out = Vec::new();
        w.push(job(1), d(1.0), true, &mut out);
        assert_eq!(w.record(header(7), 5), Ok(Recorded::New));
        w.push(job_on(2, template_on(7, 2), None), d(1.0), false, &mut out);
        assert!(matches!(w.find(JobId::new(1)), Err(Reject::StaleJob)));
        assert!(matches!(w.find(JobId::new(9)), Err(Reject::UnknownJob)));
        assert!(w.find(JobId::new(2)).is_ok());
        assert!(
            w.seen.headers.is_empty(),
            "the old tip's headers are forgotten"
        );
    }

    #[test]
    fn a_full_duplicate_set_is_renewed_past_every_header_in_it() {
        let mut w = Work::default();
        let mut out = Vec::new();
        w.push(job(1), d(1.0), true, &mut out);
        let cur_time = w.newest().expect("one job").template.cur_time;
        w.resend(w.newest().expect("one job"), d(2.0), 0, &mut out);
        let first_alias =
            JobId::parse(lines(&out)[1]["params"][0].as_str().expect("id")).expect("ours");
        let mut last = Recorded::New;
        for n in 0..MAX_SEEN as u64 {
            last = w
                .record(header(n), cur_time + (n % 50) as u32)
                .expect("new");
        }
        assert_eq!(last, Recorded::Full);
        out.clear();
        w.renew(w.newest().expect("one job"), d(2.0), 0, &mut out);
        assert!(matches!(w.find(JobId::new(1)), Err(Reject::StaleJob)));
        assert!(matches!(w.find(first_alias), Err(Reject::StaleJob)));
        let renewed = &lines(&out)[0];
        let id = JobId::parse(renewed["params"][0].as_str().expect("id")).expect("ours");
        let floor = cur_time + 50;
        assert_eq!(w.find(id).expect("open").min_ntime, floor);
        assert_eq!(renewed["params"][7], format!("{floor:08x}"));
        assert_eq!(w.seen.headers.len(), 0, "the set is bounded");
        // An old header cannot come back: its ntime is under the floor the session enforces.
        assert_eq!(w.record(header(3), floor), Ok(Recorded::New));
    }
}
