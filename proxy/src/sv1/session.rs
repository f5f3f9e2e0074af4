//! One miner's session: requests in, replies and jobs out.
//!
//! [`Session`] is the state machine, with no I/O: it takes a decoded line (or a new job, or a
//! tick) and leaves the lines to write in [`Session::out`] and what it hands on (shares for a
//! pool, found blocks) in [`Session::effects`]. [`serve`] runs it over one socket, one task per
//! miner. Shares are checked here against the job the miner names and the difficulty in force
//! when that job was sent. Nothing here holds a lock on the share path, and a slow or broken
//! miner only ever stalls its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::Target;
use mining_types::{Difficulty, Solution};
use tokio::sync::watch;
use tracing::{debug, info};

pub use self::end::SessionEnd;
use self::limits::{deadline, Budget, Suggestions};
pub use self::limits::{Deadline, Timeouts};
use self::serve::hand_on;
pub use self::serve::serve;
use self::work::{Recorded, Work};
use super::codec::{self, render, Configure, ConfigureReply, DecodeError, Request, Submit};
use super::extranonce::Lease;
use super::vardiff::{Vardiff, VardiffConfig};
use super::Shared;
use crate::blocks::FoundBlock;
use crate::figures::asic::Identity;
use crate::figures::OnBoard;
use crate::job::Job;
use crate::routing::router::SeatGuard;
use crate::share::{check_share, Reject, ShareCheck, Submission};
use crate::upstream::shares::{Accepted, LinkId, UpShare};

/// What a session hands on.
#[derive(Debug)]
pub enum Effect {
    /// A share for a pool's channel.
    Share {
        /// The link it goes to.
        link: LinkId,
        /// The share.
        share: UpShare,
    },
    /// A block: to the block router.
    Block(Box<FoundBlock>),
}

/// The clock a request is handled at.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For vardiff.
    pub instant: Instant,
    /// For ntime checks, Unix seconds.
    pub unix: u32,
}

impl Now {
    /// The current time.
    pub fn current() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        Now {
            instant: Instant::now(),
            unix,
        }
    }
}

/// What the serve loop takes over once a session is seated on a route: the route's jobs
/// (when not those it started with) and, on a weighted route, where moves come.
pub type Handoff = (
    Option<watch::Receiver<Arc<Job>>>,
    Option<watch::Receiver<usize>>,
);

/// One miner's state.
pub struct Session {
    peer: SocketAddr,
    shared: Arc<Shared>,
    /// The newest job, sent once the miner is ready.
    current: Arc<Job>,
    extranonce1: Option<Lease>,
    agent: Option<String>,
    worker: Option<Arc<str>>,
    version_mask: Option<u32>,
    difficulty: Difficulty,
    /// `difficulty.target()`, computed once per change rather than once per job.
    target: Target,
    vardiff: Vardiff,
    /// The vardiff settings in force, replaced on reload; looked at on each tick.
    settings: watch::Receiver<VardiffConfig>,
    mining: bool,
    work: Work,
    /// Its figures, once mining.
    on_board: Option<OnBoard>,
    /// The route it mines for (index among the router's routes), once mining.
    route: usize,
    /// Its seat on the route, freed with the session.
    seat: Option<SeatGuard>,
    /// For the serve loop, once seated.
    handoff: Option<Handoff>,
    /// Unix seconds at the last request or tick: the ntime a job sent again moves up to.
    unix: u32,
    budget: Budget,
    suggestions: Suggestions,
    connected: Instant,
    /// The last line that was a request we serve; nothing else counts as activity.
    last_request: Option<Instant>,
    /// Lines to write, in order.
    pub out: Vec<u8>,
    /// What to hand on, in order.
    pub effects: Vec<Effect>,
}

impl Session {
    /// A session for a miner at `peer`; `current` is the newest job.
    pub fn new(peer: SocketAddr, shared: Arc<Shared>, current: Arc<Job>, now: Instant) -> Self {
        let mut settings = shared.vardiff.clone();
        let vd = *settings.borrow_and_update();
        Session {
            peer,
            current,
            extranonce1: None,
            agent: None,
            worker: None,
            version_mask: None,
            difficulty: vd.initial,
            target: vd.initial.target(),
            vardiff: Vardiff::new(vd, now),
            settings,
            mining: false,
            work: Work::default(),
            on_board: None,
            route: 0,
            seat: None,
            handoff: None,
            unix: Now::current().unix,
            budget: Budget::new(shared.sv1.max_requests_per_sec, now),
            suggestions: Suggestions::default(),
            connected: now,
            last_request: None,
            out: Vec::new(),
            effects: Vec::new(),
            shared,
        }
    }

    /// The worker name, or `-` before authorize.
    pub fn worker_name(&self) -> &str {
        self.worker.as_deref().unwrap_or("-")
    }

    /// Whether the miner is subscribed, authorized and getting jobs.
    pub fn is_mining(&self) -> bool {
        self.mining
    }

    /// When the miner must have sent its next request by (and what it is late for).
    pub fn deadline(&self) -> Deadline {
        let cfg = &self.shared.sv1;
        let t = Timeouts {
            first_message: cfg.first_message_timeout,
            handshake: cfg.handshake_timeout,
            idle: cfg.idle_timeout,
        };
        deadline(t, self.connected, self.last_request, self.mining)
    }

    /// Handles one line from the miner.
    ///
    /// # Errors
    /// The reason the connection must close: a line that is not Stratum at all, more
    /// requests than the budget allows, or a subscribe when no extranonce1 is free.
    pub fn handle_line(&mut self, line: &[u8], now: Now) -> Result<(), SessionEnd> {
        self.unix = now.unix;
        if !self.budget.spend(now.instant) {
            return Err(SessionEnd::Flood(self.shared.sv1.max_requests_per_sec));
        }
        let en2_len = self.shared.sv1.layout.extranonce2_len();
        let msg = match codec::decode(line, en2_len) {
            Ok(m) => m,
            Err(DecodeError::NoMethod) => return Ok(()),
            Err(DecodeError::BadParams { id, method, detail }) => {
                debug!(peer = %self.peer, method, %detail, "bad params");
                let message = format!("invalid params for {method}");
                render::error(&mut self.out, &id, 20, &message);
                return Ok(());
            }
            Err(DecodeError::NotJson(reason)) => {
                let start = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
                return Err(SessionEnd::NotStratum { reason, start });
            }
        };
        let id = msg.id;
        if !matches!(msg.request, Request::Unknown(_)) {
            self.last_request = Some(now.instant);
        }
        match msg.request {
            Request::Configure(c) => self.configure(id, c),
            Request::Subscribe { agent } => {
                return self.subscribe(id, agent.as_deref(), now.instant)
            }
            Request::Authorize { worker } => {
                self.worker = Some(Arc::from(worker.chars().take(128).collect::<String>()));
                render::ok(&mut self.out, id, "true");
                self.maybe_start(now.instant);
            }
            Request::ExtranonceSubscribe => render::ok(&mut self.out, id, "true"),
            Request::SuggestDifficulty(d) => {
                render::ok(&mut self.out, id, "true");
                self.suggest_difficulty(d, now.instant);
            }
            Request::Submit(s) => match s.and_then(|s| self.submit(&s, now)) {
                Ok(()) => render::ok(&mut self.out, id, "true"),
                Err(reject) => {
                    self.shared.stats.share_rejected(reject);
                    if let Some(b) = &self.on_board {
                        b.share_rejected(reject);
                    }
                    debug!(peer = %self.peer, worker = self.worker_name(), reason = reject.as_str(), "share rejected");
                    render::reject(&mut self.out, id, reject);
                }
            },
            Request::Unknown(method) => {
                debug!(peer = %self.peer, %method, "unknown method");
                let message = format!("unsupported method {method}");
                render::error(&mut self.out, id, -32601, &message);
            }
        }
        Ok(())
    }

    fn subscribe(&mut self, id: &str, agent: Option<&str>, now: Instant) -> Result<(), SessionEnd> {
        if self.extranonce1.is_none() {
            match self.shared.extranonces.allocate() {
                Some(lease) => self.extranonce1 = Some(lease),
                None => {
                    render::error(&mut self.out, id, 20, "no free extranonce1; try later");
                    return Err(SessionEnd::ExtranonceSpace);
                }
            }
        }
        self.agent = agent.map(|a| a.chars().take(64).collect());
        let en1 = self.extranonce1.as_ref().expect("allocated above").value();
        let en2_len = self.shared.sv1.layout.extranonce2_len();
        render::subscribed(&mut self.out, id, &en1.to_string(), en2_len);
        self.maybe_start(now);
        Ok(())
    }

    fn suggest_difficulty(&mut self, d: f64, now: Instant) {
        // Each honoured suggestion is a new difficulty and a job sent again: a miner that
        // suggests in a loop gets them at a bounded pace and one log line.
        if !self.suggestions.allow(now) {
            if self.suggestions.ignored == 1 {
                info!(peer = %self.peer, worker = self.worker_name(), "difficulty suggestions too often; honouring one per 10 s");
            }
            return;
        }
        match Difficulty::new(d) {
            Ok(d) => {
                let d = self.vardiff.bound(d);
                self.vardiff.reset(now);
                if self.mining {
                    self.change_difficulty(d);
                } else {
                    self.set_difficulty(d);
                }
            }
            Err(e) => debug!(peer = %self.peer, error = %e, "ignored difficulty suggestion"),
        }
    }

    fn configure(&mut self, id: &str, c: Configure) {
        let mut reply = ConfigureReply::default();
        if let Some(asked) = c.version_rolling {
            let mask = asked & self.shared.sv1.version_mask;
            reply.version_rolling = Some((mask != 0).then_some(mask));
            if mask != 0 {
                self.version_mask = Some(mask);
            }
        }
        if let Some(min) = c.minimum_difficulty {
            reply.minimum_difficulty = true;
            if let Some(min) = min.and_then(|m| Difficulty::new(m).ok()) {
                self.vardiff.set_floor(min);
                let bounded = self.vardiff.bound(self.difficulty);
                if self.mining {
                    self.change_difficulty(bounded);
                } else {
                    self.set_difficulty(bounded);
                }
            }
        }
        // The extranonce of a connection never changes, so there is nothing to announce.
        reply.subscribe_extranonce = c.subscribe_extranonce;
        reply.unknown = c.unknown;
        render::configured(&mut self.out, id, &reply);
    }

    /// Work goes out once the miner is both subscribed and authorized, so the subscribe reply
    /// is always the first line after the subscribe request.
    fn maybe_start(&mut self, now: Instant) {
        if self.mining || self.extranonce1.is_none() || self.worker.is_none() {
            return;
        }
        self.mining = true;
        self.shared.stats.miner_started();
        let identity = Identity {
            id: 0,
            worker: self.worker.clone().expect("authorized"),
            peer: self.peer,
            agent: self.agent.as_deref().map(Arc::from),
            version_mask: self.version_mask,
            connected_at: u64::from(self.unix),
        };
        let on_board = self.shared.board.join(identity, self.difficulty.get());
        self.take_seat(on_board.identity.id);
        self.on_board = Some(on_board);
        self.vardiff.reset(now);
        info!(
            peer = %self.peer,
            worker = self.worker_name(),
            agent = self.agent.as_deref().unwrap_or("-"),
            extranonce1 = %self.extranonce1.as_ref().expect("subscribed").value(),
            difficulty = %self.difficulty,
            version_rolling = ?self.version_mask.map(|m| format!("{m:08x}")),
            route = self.route_name(),
            "ASIC connected"
        );
        render::set_difficulty(&mut self.out, self.difficulty.get());
        self.push_job(self.current.clone(), true);
    }

    /// Seats the miner on its route (board id `id`): its first job is the route's newest.
    fn take_seat(&mut self, id: u64) {
        let Some(router) = &self.shared.router else {
            return;
        };
        let worker = self.worker.clone().expect("authorized");
        let mut seat = router.seat(&worker, self.peer.ip(), id);
        if let Some(jobs) = &mut seat.jobs {
            self.current = jobs.borrow_and_update().clone();
        }
        self.route = seat.route;
        if seat.jobs.is_some() || seat.moves.is_some() {
            self.handoff = Some((seat.jobs, seat.moves));
        }
        self.seat = Some(seat.guard);
    }

    /// The route's name, for logs.
    fn route_name(&self) -> &str {
        let route = self
            .shared
            .router
            .as_ref()
            .and_then(|r| r.routes().get(self.route));
        route.map_or("default", |r| r.figures.name.as_str())
    }

    /// Once seated: the route's jobs and moves, for the serve loop to follow.
    pub fn take_handoff(&mut self) -> Option<Handoff> {
        self.handoff.take()
    }

    /// Moved to `route` by the rebalancer: the miner gets `job`, the route's newest, at once.
    /// It is not clean unless it is on another tip: shares the miner is still finding on its
    /// old route's jobs count there.
    pub fn move_to(&mut self, route: usize, job: Arc<Job>) {
        self.route = route;
        self.current = job.clone();
        info!(peer = %self.peer, worker = self.worker_name(), route = self.route_name(), "ASIC moved to another route");
        if self.mining {
            let d = (self.difficulty, self.target);
            self.work.push_moved(job, d, &mut self.out);
        }
    }

    /// A new job from the publisher: sent at once to a miner at work, kept for later
    /// otherwise.
    pub fn on_job(&mut self, job: Arc<Job>) {
        self.current = job.clone();
        if self.mining {
            self.push_job(job, false);
        }
    }

    /// Called periodically: lowers the difficulty of a miner that went quiet.
    pub fn on_tick(&mut self, now: Now) {
        self.unix = now.unix;
        if !self.mining {
            return;
        }
        if self.settings.has_changed().unwrap_or(false) {
            // Reloaded: the new bounds apply now, in the same connection.
            let config = *self.settings.borrow_and_update();
            self.vardiff.reconfigure(config);
            self.change_difficulty(self.vardiff.bound(self.difficulty));
        }
        if let Some(d) = self.vardiff.on_tick(now.instant, self.difficulty) {
            self.change_difficulty(d);
        }
    }

    /// How often [`on_tick`](Self::on_tick) is due: the retarget interval in force.
    pub fn tick_every(&self) -> Duration {
        self.vardiff
            .config()
            .retarget_interval
            .max(Duration::from_millis(100))
    }

    fn push_job(&mut self, job: Arc<Job>, force_clean: bool) {
        let d = (self.difficulty, self.target);
        self.work.push(job, d, force_clean, &mut self.out);
    }

    /// Tells the miner its new difficulty, then sends the newest job again under a fresh id:
    /// the difficulty applies to the work sent with it, and shares already in flight on the
    /// earlier ids keep the difficulty they were mined at.
    fn change_difficulty(&mut self, d: Difficulty) {
        if d == self.difficulty {
            return;
        }
        debug!(peer = %self.peer, worker = self.worker_name(), from = %self.difficulty, to = %d, "difficulty changed");
        self.set_difficulty(d);
        render::set_difficulty(&mut self.out, d.get());
        if let Some(job) = self.work.newest() {
            let d = (self.difficulty, self.target);
            self.work.resend(job, d, self.unix, &mut self.out);
        }
    }

    fn set_difficulty(&mut self, d: Difficulty) {
        if let Some(b) = &self.on_board {
            b.set_difficulty(d.get());
        }
        self.difficulty = d;
        self.target = d.target();
    }

    fn submit(&mut self, s: &Submit, now: Now) -> Result<(), Reject> {
        let Some(lease) = &self.extranonce1 else {
            return Err(Reject::NotSubscribed);
        };
        let Some(worker) = self.worker.clone() else {
            return Err(Reject::Unauthorized);
        };
        let entry = self.work.find(s.job_id)?;
        if s.ntime < entry.min_ntime {
            // Under the floor of a job sent again: a header from before may come back there.
            return Err(Reject::NtimeOutOfRange);
        }
        let check = ShareCheck {
            version_mask: self.version_mask.unwrap_or(0),
            target: entry.target,
            now: now.unix,
            max_future_secs: u32::try_from(self.shared.sv1.max_ntime_future.as_secs())
                .unwrap_or(u32::MAX),
        };
        let submission = Submission {
            extranonce2: s.extranonce2.as_bytes(),
            ntime: s.ntime,
            nonce: s.nonce,
            version_bits: s.version_bits,
        };
        let en1 = *lease.value();
        let valid = check_share(&entry.job, &en1, &submission, &check)?;
        let share_difficulty = entry.difficulty;
        let job = entry.job.clone();
        if self.work.record(valid.hash, s.ntime)? == Recorded::Full {
            // The bound on remembered headers: the miner moves past them on the same job.
            let d = (self.difficulty, self.target);
            self.work.renew(job.clone(), d, now.unix, &mut self.out);
        }
        self.shared.stats.share_accepted(share_difficulty.get());
        if let Some(b) = &self.on_board {
            b.share_accepted(share_difficulty.get(), u64::from(now.unix));
        }
        let accepted = Accepted {
            job: job.id,
            extranonce1: en1.as_bytes(),
            extranonce2: s.extranonce2.as_bytes(),
            header: &valid.header,
            hash: valid.hash,
            difficulty: share_difficulty.get(),
            is_block: valid.is_block,
        };
        let up = job
            .pool
            .and_then(|tag| Some((tag, UpShare::new(tag, &accepted, &worker)?)));
        if valid.is_block {
            self.found_block(&job, &accepted, up, worker);
        } else if let Some((tag, share)) = up {
            self.effects.push(Effect::Share {
                link: tag.link,
                share,
            });
        }
        if let Some(d) = self
            .vardiff
            .on_share(now.instant, share_difficulty, self.difficulty)
        {
            self.change_difficulty(d);
        }
        Ok(())
    }

    fn found_block(
        &mut self,
        job: &Arc<Job>,
        share: &Accepted<'_>,
        pool: Option<(crate::upstream::shares::PoolTag, UpShare)>,
        worker: Arc<str>,
    ) {
        let mut extranonce = Vec::with_capacity(16);
        extranonce.extend_from_slice(share.extranonce1);
        extranonce.extend_from_slice(share.extranonce2);
        let solution =
            Solution::from_split(job.template.id, share.header, &job.coinbase, &extranonce);
        info!(
            hash = %share.hash,
            height = job.template.height,
            txs = job.template.txs.len() + 1,
            worker = %worker,
            peer = %self.peer,
            "BLOCK FOUND"
        );
        self.shared.stats.block_found();
        self.shared
            .board
            .block_found(share.hash, job.template.height, &worker);
        self.effects.push(Effect::Block(Box::new(FoundBlock {
            hash: share.hash,
            template: job.template.clone(),
            solution,
            pool,
            worker,
        })));
    }
}

mod end;
mod limits;
mod serve;
#[cfg(test)]
mod tests;
mod work;
