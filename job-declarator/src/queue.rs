//! Which job to declare next, and what each answer of the JDS means. Pure: no I/O, no clock
//! of its own (callers pass `now`).
//!
//! The rules:
//! - **newest job wins**: a job waiting its turn is replaced by a newer one, since miners have
//!   moved on to it;
//! - **urgent jobs first**: a job a block was found on is declared ahead of newer ones and never
//!   skipped for them, so the pool can still credit the block;
//! - **no job twice**: a job declared or being declared is not declared again;
//! - **the stale-tip retry**: the farm's node often sees a block a moment before the pool's; a
//!   declaration refused as `stale-chain-tip` is retried a few times, unless a newer job came;
//! - **a spare token**: one token is kept in hand, so the next job does not wait for a round
//!   trip before its declaration.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mining_types::JobId;

use crate::client::{JdError, Token};

/// The JDS's answer when its tip is not the job's.
pub const STALE_TIP: &str = "stale-chain-tip";
/// How often a declaration refused for a tip the JDS has not seen yet is tried again.
pub const STALE_RETRIES: u32 = 16;
/// How long between those tries.
pub const STALE_RETRY_DELAY: Duration = Duration::from_millis(300);
/// Jobs remembered as declared, so none is declared twice.
const RECENT: usize = 32;

/// What the driver should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<J> {
    /// Ask the JDS for a token (for the job at hand, or the spare).
    Allocate,
    /// Declare `job` under `token`.
    Declare {
        /// Its id.
        id: JobId,
        /// The job.
        job: J,
        /// The token it is declared under.
        token: Token,
    },
    /// Nothing to do until a job arrives, or until the given time (a retry is due).
    Wait(Option<Instant>),
}

/// What an answer meant.
#[derive(Debug)]
pub enum Outcome {
    /// The JDS took the job: this token goes in its `SetCustomMiningJob`.
    Declared {
        /// The job.
        id: JobId,
        /// The token for `SetCustomMiningJob`.
        token: Token,
    },
    /// The JDS is behind our tip; the job is declared again shortly.
    Retrying {
        /// The job.
        id: JobId,
        /// Tries so far.
        attempt: u32,
    },
    /// Refused as stale while a newer job waited: the newer one goes next.
    Superseded {
        /// The job given up.
        id: JobId,
    },
    /// A job with a block on it was refused: the pool cannot credit that block, the link is
    /// fine.
    Unclaimable {
        /// The job.
        id: JobId,
        /// The JDS's reason.
        code: String,
    },
    /// The JDS failed or refused for good: the link must go.
    Failed {
        /// The job being declared, if any.
        id: Option<JobId>,
        /// Why.
        error: JdError,
    },
}

#[derive(Debug)]
struct Current<J> {
    id: JobId,
    job: J,
    urgent: bool,
    attempt: u32,
    /// `None`: needs a token; `Some(t)`: waits until `t` before its next try.
    retry_at: Option<Instant>,
    in_flight: bool,
}

/// The declaration queue.
#[derive(Debug)]
pub struct DeclarationQueue<J> {
    newest: Option<(JobId, J)>,
    urgent: VecDeque<(JobId, J)>,
    recent: VecDeque<JobId>,
    spare: Option<Token>,
    current: Option<Current<J>>,
    allocating: bool,
}

impl<J: Clone> DeclarationQueue<J> {
    /// A queue holding `spare` (the token the link opened with).
    pub fn new(spare: Token) -> Self {
        DeclarationQueue {
            newest: None,
            urgent: VecDeque::new(),
            recent: VecDeque::new(),
            spare: Some(spare),
            current: None,
            allocating: false,
        }
    }

    /// A new job went to the miners: it replaces any job still waiting its turn.
    pub fn push(&mut self, id: JobId, job: J) {
        self.newest = Some((id, job));
    }

    /// A block was found on `job`: declare it before anything else, unless it is declared or
    /// being declared already.
    pub fn push_urgent(&mut self, id: JobId, job: J) {
        let busy = self.current.as_ref().is_some_and(|c| c.id == id);
        if busy || self.recent.contains(&id) || self.urgent.iter().any(|(u, _)| *u == id) {
            return;
        }
        // A job waiting to retry a stale tip is older than the block's: give it up, the
        // block's job goes now.
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.retry_at.is_some() && !c.urgent && !c.in_flight)
        {
            self.current = None;
        }
        self.urgent.push_back((id, job));
    }

    /// What to do now.
    pub fn next_step(&mut self, now: Instant) -> Step<J> {
        if self.allocating || self.current.as_ref().is_some_and(|c| c.in_flight) {
            return Step::Wait(None);
        }
        if self.current.is_none() {
            self.current = self.pick();
        }
        let Some(c) = &mut self.current else {
            if self.spare.is_none() {
                self.allocating = true;
                return Step::Allocate;
            }
            return Step::Wait(None);
        };
        if let Some(at) = c.retry_at {
            if now < at {
                return Step::Wait(Some(at));
            }
            c.retry_at = None;
        }
        match self.spare.take() {
            Some(token) => {
                c.in_flight = true;
                Step::Declare {
                    id: c.id,
                    job: c.job.clone(),
                    token,
                }
            }
            None => {
                self.allocating = true;
                Step::Allocate
            }
        }
    }

    fn pick(&mut self) -> Option<Current<J>> {
        let (urgent, (id, job)) = loop {
            let next = match self.urgent.pop_front() {
                Some(u) => (true, u),
                None => (false, self.newest.take()?),
            };
            if !self.recent.contains(&next.1 .0) {
                break next;
            }
        };
        self.recent.push_back(id);
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        Some(Current {
            id,
            job,
            urgent,
            attempt: 0,
            retry_at: None,
            in_flight: false,
        })
    }

    /// The answer to [`Step::Allocate`].
    ///
    /// # Errors
    /// The failure, as the [`Outcome::Failed`] the link must act on.
    pub fn on_token(&mut self, token: Result<Token, JdError>) -> Result<(), Outcome> {
        self.allocating = false;
        match token {
            Ok(t) => {
                self.spare = Some(t);
                Ok(())
            }
            Err(error) => Err(Outcome::Failed {
                id: self.current.as_ref().map(|c| c.id),
                error,
            }),
        }
    }

    /// The answer to [`Step::Declare`].
    pub fn on_declared(&mut self, answer: Result<Token, JdError>, now: Instant) -> Outcome {
        let Some(mut c) = self.current.take() else {
            return Outcome::Failed {
                id: None,
                error: JdError::Protocol("an answer to no declaration".into()),
            };
        };
        c.in_flight = false;
        let code = match answer {
            Ok(token) => return Outcome::Declared { id: c.id, token },
            Err(JdError::Refused { code }) => code,
            Err(error) => {
                return Outcome::Failed {
                    id: Some(c.id),
                    error,
                }
            }
        };
        if c.urgent {
            return Outcome::Unclaimable { id: c.id, code };
        }
        if code != STALE_TIP {
            return Outcome::Failed {
                id: Some(c.id),
                error: JdError::Refused { code },
            };
        }
        if self.newest.is_some() || !self.urgent.is_empty() {
            return Outcome::Superseded { id: c.id };
        }
        if c.attempt >= STALE_RETRIES {
            return Outcome::Failed {
                id: Some(c.id),
                error: JdError::Refused { code },
            };
        }
        c.attempt += 1;
        c.retry_at = Some(now + STALE_RETRY_DELAY);
        let (id, attempt) = (c.id, c.attempt);
        self.current = Some(c);
        Outcome::Retrying { id, attempt }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> Token {
        Token::new(vec![n])
    }

    fn id(n: u32) -> JobId {
        JobId::new(n)
    }

    /// Runs the queue until it waits, answering allocations with fresh tokens; returns the
    /// jobs it declared, in order.
    fn declared_until_idle(q: &mut DeclarationQueue<&'static str>, now: Instant) -> Vec<JobId> {
        let mut out = Vec::new();
        let mut next_token = 100u8;
        loop {
            match q.next_step(now) {
                Step::Allocate => {
                    next_token += 1;
                    q.on_token(Ok(token(next_token))).unwrap();
                }
                Step::Declare { id, token, .. } => {
                    let o = q.on_declared(Ok(token), now);
                    assert!(matches!(o, Outcome::Declared { .. }), "{o:?}");
                    out.push(id);
                }
                Step::Wait(_) => return out,
            }
        }
    }

    #[test]
    fn the_newest_job_replaces_one_still_waiting_and_the_spare_is_used_first() {
        let now = Instant::now();
        let mut q = DeclarationQueue::new(token(1));
        q.push(id(1), "a");
        q.push(id(2), "b");
        match q.next_step(now) {
            Step::Declare {
                id: got, token: t, ..
            } => {
                assert_eq!(
                    (got, t),
                    (id(2), token(1)),
                    "job 1 was superseded; spare used"
                );
            }
            other => panic!("{other:?}"),
        }
        // While the answer is awaited nothing else starts.
        q.push(id(3), "c");
        assert_eq!(q.next_step(now), Step::Wait(None));
        assert!(matches!(
            q.on_declared(Ok(token(9)), now),
            Outcome::Declared { id: i, .. } if i == id(2)
        ));
        // Job 3 needs a token: the spare is gone.
        assert_eq!(q.next_step(now), Step::Allocate);
        q.on_token(Ok(token(2))).unwrap();
        assert!(matches!(q.next_step(now), Step::Declare { id: i, .. } if i == id(3)));
        q.on_declared(Ok(token(10)), now);
        // Idle with no spare: one is fetched ahead of the next job.
        assert_eq!(q.next_step(now), Step::Allocate);
        q.on_token(Ok(token(3))).unwrap();
        assert_eq!(q.next_step(now), Step::Wait(None));
    }

    #[test]
    fn urgent_jobs_go_first_and_are_never_declared_twice() {
        let now = Instant::now();
        let mut q = DeclarationQueue::new(token(1));
        q.push(id(5), "newer");
        q.push_urgent(id(4), "block found here");
        q.push_urgent(id(4), "again");
        assert_eq!(declared_until_idle(&mut q, now), vec![id(4), id(5)]);
        // Both are declared now: asking again does nothing.
        q.push_urgent(id(4), "late");
        q.push(id(5), "same job again");
        assert_eq!(declared_until_idle(&mut q, now), Vec::<JobId>::new());
    }

    #[test]
    fn a_stale_tip_is_retried_after_a_pause_unless_a_newer_job_came() {
        let now = Instant::now();
        let mut q = DeclarationQueue::new(token(1));
        q.push(id(1), "a");
        let Step::Declare { .. } = q.next_step(now) else {
            panic!()
        };
        let stale = || JdError::Refused {
            code: STALE_TIP.into(),
        };
        assert!(matches!(
            q.on_declared(Err(stale()), now),
            Outcome::Retrying { attempt: 1, .. }
        ));
        // Not before the delay; then with a fresh token.
        assert_eq!(q.next_step(now), Step::Wait(Some(now + STALE_RETRY_DELAY)));
        let later = now + STALE_RETRY_DELAY;
        assert_eq!(q.next_step(later), Step::Allocate);
        q.on_token(Ok(token(2))).unwrap();
        assert!(matches!(q.next_step(later), Step::Declare { id: i, .. } if i == id(1)));
        // A newer job arrives while the JDS still lags: the old one is given up for it.
        q.push(id(2), "b");
        assert!(matches!(
            q.on_declared(Err(stale()), later),
            Outcome::Superseded { id: i } if i == id(1)
        ));
        assert_eq!(declared_until_idle(&mut q, later), vec![id(2)]);
    }

    #[test]
    fn stale_retries_end_in_failure_and_other_refusals_fail_at_once() {
        let mut now = Instant::now();
        let mut q = DeclarationQueue::new(token(1));
        q.push(id(1), "a");
        let mut outcome = None;
        for _ in 0..=STALE_RETRIES {
            loop {
                match q.next_step(now) {
                    Step::Allocate => q.on_token(Ok(token(7))).unwrap(),
                    Step::Declare { .. } => break,
                    Step::Wait(Some(t)) => now = t,
                    Step::Wait(None) => panic!("stuck"),
                }
            }
            outcome = Some(q.on_declared(
                Err(JdError::Refused {
                    code: STALE_TIP.into(),
                }),
                now,
            ));
        }
        assert!(
            matches!(outcome, Some(Outcome::Failed { .. })),
            "{outcome:?}"
        );

        let mut q = DeclarationQueue::new(token(1));
        q.push(id(1), "a");
        let _ = q.next_step(now);
        let o = q.on_declared(
            Err(JdError::Refused {
                code: "invalid-mining-job-token".into(),
            }),
            now,
        );
        assert!(matches!(o, Outcome::Failed { id: Some(i), .. } if i == id(1)));
    }

    #[test]
    fn a_refused_urgent_job_is_unclaimable_not_a_failure() {
        let now = Instant::now();
        let mut q = DeclarationQueue::new(token(1));
        q.push_urgent(id(9), "block");
        let _ = q.next_step(now);
        let o = q.on_declared(
            Err(JdError::Refused {
                code: STALE_TIP.into(),
            }),
            now,
        );
        assert!(matches!(o, Outcome::Unclaimable { id: i, .. } if i == id(9)));
        // The queue carries on.
        q.push(id(10), "next");
        assert_eq!(declared_until_idle(&mut q, now), vec![id(10)]);
    }

    #[test]
    fn an_urgent_job_overtakes_a_pending_retry() {
        let now = Instant::now();
        let mut q = DeclarationQueue::new(token(1));
        q.push(id(1), "a");
        let _ = q.next_step(now);
        let _ = q.on_declared(
            Err(JdError::Refused {
                code: STALE_TIP.into(),
            }),
            now,
        );
        q.push_urgent(id(2), "block");
        // Job 2 goes at once; job 1, older than the block's, is given up.
        let later = now + STALE_RETRY_DELAY;
        assert_eq!(declared_until_idle(&mut q, later), vec![id(2)]);
    }

    #[test]
    fn a_failed_allocation_is_a_failure() {
        let now = Instant::now();
        let mut q: DeclarationQueue<&str> = DeclarationQueue::new(token(1));
        q.push(id(1), "a");
        let _ = q.next_step(now);
        q.on_declared(Ok(token(2)), now);
        assert_eq!(q.next_step(now), Step::Allocate);
        let err = q
            .on_token(Err(JdError::Protocol("gone".into())))
            .unwrap_err();
        assert!(matches!(err, Outcome::Failed { .. }));
    }
}
