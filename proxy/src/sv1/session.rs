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
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use self::end::SessionEnd;
use self::limits::{deadline, Budget, Suggestions};
pub use self::limits::{Deadline, Timeouts};
use self::work::{Recorded, Work};
use super::codec::{self, render, DecodeError, Request, Submit};
use super::conn::{ConnError, Connection};
use super::extranonce::Lease;
use super::vardiff::{Vardiff, VardiffConfig};
use super::Shared;
use crate::blocks::FoundBlock;
use crate::figures::OnBoard;
use crate::job::Job;
use crate::routing::router::SeatGuard;
use crate::share::{check_share, Reject, ShareCheck, Submission};
use crate::upstream::shares::{Accepted, LinkId, ShareRoute, UpShare};

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

/// Serves one miner until it leaves, misbehaves, or the proxy shuts down.
pub async fn serve(
    mut conn: Connection,
    mut session: Session,
    mut jobs: watch::Receiver<Arc<Job>>,
    shutdown: CancellationToken,
) {
    // The settings stay behind the shared Arc: a copy in every miner's task is memory each
    // idle connection pays.
    let shared = session.shared.clone();
    let cfg = &shared.sv1;
    let mut tick = ticks(session.tick_every());
    // One timer and one shutdown registration for the whole session: building them anew on
    // every pass of the loop cost more than the job fan-out itself at 10,000 miners.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let silence = tokio::time::sleep_until(session.deadline().at().into());
    tokio::pin!(silence);
    let mut route = ShareRoute::default();
    // On a weighted route: the route from now on, as the rebalancer moves the miner.
    let mut moves: Option<watch::Receiver<usize>> = None;
    let end = loop {
        let mut moved = None;
        // Lines already received are handled before a job switch: the miner sent them while
        // it still worked on the old job.
        let step = tokio::select! {
            biased;
            () = &mut cancelled => Err(SessionEnd::Shutdown),
            read = conn.read_line() => match read {
                Err(ConnError::Closed) => Err(SessionEnd::Closed),
                Err(e) => Err(SessionEnd::Conn(e)),
                // The timer is moved lazily, when it fires, not on every line.
                Ok(line) => session.handle_line(&line, Now::current()),
            },
            changed = jobs.changed(), if session.is_mining() => match changed {
                Err(_) => Err(SessionEnd::JobsStopped),
                Ok(()) => {
                    let job = jobs.borrow_and_update().clone();
                    session.on_job(job);
                    Ok(())
                }
            },
            to = next_move(&mut moves), if session.is_mining() => {
                moved = to;
                Ok(())
            }
            _ = tick.tick(), if session.is_mining() => {
                session.on_tick(Now::current());
                if tick.period() != session.tick_every() {
                    tick = ticks(session.tick_every());
                }
                Ok(())
            }
            () = &mut silence => {
                let deadline = session.deadline();
                if Instant::now() >= deadline.at() {
                    Err(SessionEnd::Late(deadline))
                } else {
                    silence.as_mut().reset(deadline.at().into());
                    Ok(())
                }
            }
        };
        if let Some((route_jobs, route_moves)) = session.take_handoff() {
            // Seated on its route: from now on the miner follows that route's jobs.
            if let Some(j) = route_jobs {
                jobs = j;
            }
            moves = route_moves.or(moves);
        }
        if let Some((to, router)) = moved.zip(shared.router.as_ref()) {
            jobs = router.jobs(to);
            let job = jobs.borrow_and_update().clone();
            session.move_to(to, job);
        }
        hand_on(&mut session, &mut route);
        if let Err(end) = step {
            if matches!(end, SessionEnd::Shutdown) {
                end::leave(&mut conn, &mut session, &mut route).await;
            }
            break end;
        }
        // Pipelined requests are answered together in one write.
        if !session.out.is_empty() && !conn.has_buffered_line() {
            if let Err(e) = flush(&mut conn, &mut session.out, cfg.write_timeout).await {
                break e;
            }
        }
    };
    if !session.out.is_empty() {
        let _ = flush(&mut conn, &mut session.out, cfg.write_timeout).await;
    }
    finish(&session, &end);
}

/// The route the rebalancer moves the miner to; pending forever without moves to follow.
async fn next_move(moves: &mut Option<watch::Receiver<usize>>) -> Option<usize> {
    let Some(m) = moves else {
        return std::future::pending().await;
    };
    match m.changed().await {
        Ok(()) => Some(*m.borrow_and_update()),
        // The router is gone: the proxy is stopping.
        Err(_) => std::future::pending().await,
    }
}

/// The session's clock: vardiff's retarget interval.
fn ticks(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Passes shares to their links and blocks to the router.
fn hand_on(session: &mut Session, route: &mut ShareRoute) {
    for effect in session.effects.drain(..) {
        match effect {
            Effect::Share { link, share } => {
                if route.send(&session.shared.links, link, share).is_err() {
                    session.shared.stats.pool_dropped(1);
                }
            }
            Effect::Block(block) => session.shared.blocks.found(*block),
        }
    }
}

fn finish(session: &Session, end: &SessionEnd) {
    session.shared.stats.connection_closed();
    let side = end.side();
    if session.is_mining() {
        info!(peer = %session.peer, worker = session.worker_name(), reason = %end, %side, "ASIC disconnected");
    } else {
        debug!(peer = %session.peer, reason = %end, %side, "connection closed before mining");
    }
    if matches!(end, SessionEnd::Conn(_) | SessionEnd::NotStratum { .. }) {
        warn!(peer = %session.peer, worker = session.worker_name(), reason = %end, "miner cut off");
    }
}

/// Output buffer capacity kept between writes.
const OUT_KEEP: usize = 512;

async fn flush(
    conn: &mut Connection,
    out: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), SessionEnd> {
    let write = tokio::time::timeout(timeout, conn.write_all(out)).await;
    out.clear();
    // Replies fit in a few hundred bytes; a notify line grows the buffer past a kilobyte, and
    // an idle miner would keep that between tips: give it back (one allocation per job sent
    // is nothing next to the write it goes with).
    if out.capacity() > OUT_KEEP {
        *out = Vec::new();
    }
    match write {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SessionEnd::Write(e)),
        Err(_) => Err(SessionEnd::WriteTimeout),
    }
}

mod end;
mod limits;
mod setup;
#[cfg(test)]
mod tests;
mod work;
