//! One task per miner: requests in, replies and jobs out, over one socket.
//!
//! The session answers every request from its own state; shares are checked here, against the
//! job the miner names and the difficulty that was in force when that job was sent. Nothing
//! here holds a lock, and a slow or broken miner only ever stalls its own task.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bitcoin::{BlockHash, Target};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::codec::{self, render, Configure, DecodeError, Request, Submit};
use super::conn::{ConnError, Connection};
use super::vardiff::Vardiff;
use crate::job::{Extranonce1, Job, JobId};
use crate::share::{check_share, Difficulty, Reject, ShareCheck, Submission};
use crate::Shared;

/// Jobs a miner may still submit to on the current tip; older ones become stale.
const MAX_ACTIVE_JOBS: usize = 8;
/// Retired job ids remembered, so a late share is answered "stale", not "unknown".
const MAX_RETIRED_JOBS: usize = 32;

struct ActiveJob {
    job: Arc<Job>,
    /// The difficulty the miner was told for this job, and its target.
    difficulty: Difficulty,
    target: Target,
    /// Headers already accepted, for duplicate detection.
    seen: HashSet<BlockHash>,
}

/// One miner's state.
pub struct Session {
    conn: Connection,
    peer: SocketAddr,
    shared: Arc<Shared>,
    jobs: watch::Receiver<Arc<Job>>,
    extranonce1: Extranonce1,
    subscribed: bool,
    agent: Option<String>,
    worker: Option<Arc<str>>,
    version_mask: Option<u32>,
    difficulty: Difficulty,
    /// `difficulty.target()`, computed once per change rather than once per job.
    target: Target,
    vardiff: Vardiff,
    mining: bool,
    active: VecDeque<ActiveJob>,
    retired: VecDeque<JobId>,
    last_prev: Option<BlockHash>,
    out: Vec<u8>,
}

impl Session {
    pub fn new(
        conn: Connection,
        peer: SocketAddr,
        shared: Arc<Shared>,
        jobs: watch::Receiver<Arc<Job>>,
    ) -> Self {
        let extranonce1 = shared.extranonces.allocate();
        let vd = shared.sv1.vardiff;
        Session {
            conn,
            peer,
            extranonce1,
            jobs,
            subscribed: false,
            agent: None,
            worker: None,
            version_mask: None,
            difficulty: vd.initial,
            target: vd.initial.target(),
            vardiff: Vardiff::new(vd, Instant::now()),
            mining: false,
            active: VecDeque::new(),
            retired: VecDeque::new(),
            last_prev: None,
            out: Vec::new(),
            shared,
        }
    }

    /// Serves the miner until it leaves, misbehaves, or the proxy shuts down.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let cfg = self.shared.sv1.clone();
        let mut tick = tokio::time::interval(
            cfg.vardiff
                .retarget_interval
                .max(std::time::Duration::from_millis(100)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One timer and one shutdown registration for the whole session: building them anew
        // on every pass of the loop cost more than the job fan-out itself at 10,000 miners.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut read_timeout = cfg.first_message_timeout;
        let mut last_line = tokio::time::Instant::now();
        let silence = tokio::time::sleep_until(last_line + read_timeout);
        tokio::pin!(silence);
        let reason: String = loop {
            // Lines already received are handled before a job switch: the miner sent them
            // while it still worked on the old job.
            tokio::select! {
                biased;
                _ = &mut cancelled => break "proxy shutting down".into(),
                read = self.conn.read_line() => match read {
                    Err(ConnError::Closed) => break "closed by the miner".into(),
                    Err(e) => {
                        warn!(peer = %self.peer, worker = self.worker_name(), error = %e, "miner cut off");
                        break e.to_string();
                    }
                    Ok(line) => {
                        // The timer is moved lazily, when it fires, not on every line.
                        last_line = tokio::time::Instant::now();
                        read_timeout = cfg.idle_timeout;
                        if let Err(reason) = self.handle_line(&line) {
                            warn!(peer = %self.peer, worker = self.worker_name(), %reason, "miner cut off");
                            break reason;
                        }
                    }
                },
                changed = self.jobs.changed(), if self.mining => {
                    if changed.is_err() {
                        break "job source stopped".into();
                    }
                    let job = self.jobs.borrow_and_update().clone();
                    self.push_job(job, false);
                }
                _ = tick.tick(), if self.mining => {
                    if let Some(d) = self.vardiff.on_tick(Instant::now(), self.difficulty) {
                        self.change_difficulty(d);
                    }
                }
                () = &mut silence => {
                    let deadline = last_line + read_timeout;
                    if tokio::time::Instant::now() >= deadline {
                        break format!("no message for {}s", read_timeout.as_secs());
                    }
                    silence.as_mut().reset(deadline);
                }
            }
            // Pipelined requests are answered together in one write.
            if !self.out.is_empty() && !self.conn.has_buffered_line() {
                if let Err(e) = self.flush(&cfg).await {
                    break e;
                }
            }
        };
        if !self.out.is_empty() {
            let _ = self.flush(&cfg).await;
        }
        self.shared.stats.connection_closed();
        if self.mining {
            info!(peer = %self.peer, worker = self.worker_name(), %reason, "ASIC disconnected");
        } else {
            debug!(peer = %self.peer, %reason, "connection closed before mining");
        }
    }

    async fn flush(&mut self, cfg: &super::Sv1Config) -> Result<(), String> {
        let write = tokio::time::timeout(cfg.write_timeout, self.conn.write_all(&self.out)).await;
        self.out.clear();
        if self.out.capacity() > 16 * 1024 {
            self.out = Vec::new();
        }
        match write {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => {
                warn!(peer = %self.peer, worker = self.worker_name(), "miner does not read; cut off");
                Err("write timed out".into())
            }
        }
    }

    fn worker_name(&self) -> &str {
        self.worker.as_deref().unwrap_or("-")
    }

    /// Handles one line; `Err` means the connection must close.
    fn handle_line(&mut self, line: &[u8]) -> Result<(), String> {
        let msg = match codec::decode(line) {
            Ok(m) => m,
            Err(DecodeError::NoMethod) => return Ok(()),
            Err(DecodeError::BadParams { id, method, detail }) => {
                debug!(peer = %self.peer, method, %detail, "bad params");
                render::error(
                    &mut self.out,
                    &id,
                    20,
                    &format!("invalid params for {method}"),
                );
                return Ok(());
            }
            Err(DecodeError::NotJson(e)) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
                return Err(format!("not Stratum ({e}): {shown:?}"));
            }
        };
        let id = msg.id;
        match msg.request {
            Request::Configure(c) => self.configure(id, c),
            Request::Subscribe { agent } => {
                self.subscribed = true;
                self.agent = agent.map(|a| a.chars().take(64).collect());
                let en1 = self.extranonce1.to_string();
                let result = format!(
                    "[[[\"mining.set_difficulty\",\"{en1}\"],[\"mining.notify\",\"{en1}\"]],\"{en1}\",{}]",
                    self.shared.sv1.layout.extranonce2_len()
                );
                render::ok(&mut self.out, id, &result);
                self.maybe_start();
            }
            Request::Authorize { worker } => {
                self.worker = Some(Arc::from(worker.chars().take(128).collect::<String>()));
                render::ok(&mut self.out, id, "true");
                self.maybe_start();
            }
            Request::ExtranonceSubscribe => render::ok(&mut self.out, id, "true"),
            Request::SuggestDifficulty(d) => {
                render::ok(&mut self.out, id, "true");
                match Difficulty::new(d) {
                    Ok(d) => {
                        let d = self.vardiff.bound(d);
                        self.vardiff.reset(Instant::now());
                        if self.mining {
                            self.change_difficulty(d);
                        } else {
                            self.set_difficulty(d);
                        }
                    }
                    Err(e) => {
                        debug!(peer = %self.peer, error = %e, "ignored difficulty suggestion")
                    }
                }
            }
            Request::Submit(s) => {
                let now = Instant::now();
                match self.submit(&s, now) {
                    Ok(()) => render::ok(&mut self.out, id, "true"),
                    Err(reject) => {
                        self.shared.stats.share_rejected(reject);
                        debug!(peer = %self.peer, worker = self.worker_name(), reason = reject.as_str(), job = %s.job_id, "share rejected");
                        let (code, message) = reject.sv1_error();
                        render::error(&mut self.out, id, code, message);
                    }
                }
            }
            Request::Unknown(method) => {
                debug!(peer = %self.peer, %method, "unknown method");
                render::error(
                    &mut self.out,
                    id,
                    -32601,
                    &format!("unsupported method {method}"),
                );
            }
        }
        Ok(())
    }

    fn configure(&mut self, id: &str, c: Configure) {
        let mut result = serde_json::Map::new();
        if let Some(asked) = c.version_rolling {
            let mask = asked & self.shared.sv1.version_mask;
            if mask == 0 {
                result.insert("version-rolling".into(), false.into());
            } else {
                result.insert("version-rolling".into(), true.into());
                result.insert("version-rolling.mask".into(), format!("{mask:08x}").into());
                self.version_mask = Some(mask);
            }
        }
        if let Some(min) = c.minimum_difficulty {
            result.insert("minimum-difficulty".into(), true.into());
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
        if c.subscribe_extranonce {
            // The extranonce of a connection never changes, so there is nothing to announce.
            result.insert("subscribe-extranonce".into(), true.into());
        }
        for ext in c.unknown {
            result.insert(ext, false.into());
        }
        render::ok(
            &mut self.out,
            id,
            &serde_json::Value::Object(result).to_string(),
        );
    }

    /// Work goes out once the miner is both subscribed and authorized, so the subscribe reply
    /// is always the first line after the subscribe request.
    fn maybe_start(&mut self) {
        if self.mining || !self.subscribed || self.worker.is_none() {
            return;
        }
        self.mining = true;
        self.shared.stats.miner_started();
        self.vardiff.reset(Instant::now());
        info!(
            peer = %self.peer,
            worker = self.worker_name(),
            agent = self.agent.as_deref().unwrap_or("-"),
            extranonce1 = %self.extranonce1,
            difficulty = %self.difficulty,
            version_rolling = ?self.version_mask.map(|m| format!("{m:08x}")),
            "ASIC connected"
        );
        render::set_difficulty(&mut self.out, self.difficulty.get());
        let job = self.jobs.borrow_and_update().clone();
        self.push_job(job, true);
    }

    fn push_job(&mut self, job: Arc<Job>, force_clean: bool) {
        let clean = force_clean || job.clean || self.last_prev != Some(job.prev_hash());
        if clean {
            for old in self.active.drain(..) {
                self.retired.push_back(old.job.id);
            }
        }
        if self.active.len() >= MAX_ACTIVE_JOBS {
            if let Some(old) = self.active.pop_front() {
                self.retired.push_back(old.job.id);
            }
        }
        while self.retired.len() > MAX_RETIRED_JOBS {
            self.retired.pop_front();
        }
        self.out.extend_from_slice(job.notify_line(clean));
        self.last_prev = Some(job.prev_hash());
        self.active.push_back(ActiveJob {
            job,
            difficulty: self.difficulty,
            target: self.target,
            seen: HashSet::new(),
        });
    }

    /// Tells the miner its new difficulty, then re-sends the current job so the change takes
    /// effect now; shares already in flight on that job count at the lower of the two.
    fn change_difficulty(&mut self, d: Difficulty) {
        if d == self.difficulty {
            return;
        }
        info!(peer = %self.peer, worker = self.worker_name(), from = %self.difficulty, to = %d, "difficulty changed");
        self.set_difficulty(d);
        render::set_difficulty(&mut self.out, d.get());
        if let Some(current) = self.active.back_mut() {
            current.difficulty = current.difficulty.min(d);
            current.target = current.difficulty.target();
            self.out.extend_from_slice(current.job.notify_line(false));
        }
    }

    fn set_difficulty(&mut self, d: Difficulty) {
        self.difficulty = d;
        self.target = d.target();
    }

    fn submit(&mut self, s: &Submit<'_>, now: Instant) -> Result<(), Reject> {
        if !self.subscribed {
            return Err(Reject::NotSubscribed);
        }
        if self.worker.is_none() {
            return Err(Reject::Unauthorized);
        }
        let job_id = JobId::parse(&s.job_id).ok_or(Reject::UnknownJob)?;
        let Some(index) = self.active.iter().rposition(|a| a.job.id == job_id) else {
            return Err(if self.retired.contains(&job_id) {
                Reject::StaleJob
            } else {
                Reject::UnknownJob
            });
        };
        let en2_len = self.shared.sv1.layout.extranonce2_len();
        let mut en2 = [0u8; 8];
        codec::parse_extranonce2(&s.extranonce2, en2_len, &mut en2)
            .map_err(|_| Reject::BadExtranonce2)?;
        let ntime = codec::parse_hex_u32(&s.ntime).ok_or(Reject::Malformed)?;
        let nonce = codec::parse_hex_u32(&s.nonce).ok_or(Reject::Malformed)?;
        let version_bits = match &s.version_bits {
            Some(v) => Some(codec::parse_hex_u32(v).ok_or(Reject::Malformed)?),
            None => None,
        };
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let entry = &mut self.active[index];
        let check = ShareCheck {
            version_mask: self.version_mask.unwrap_or(0),
            target: entry.target,
            now: u32::try_from(unix_now).unwrap_or(u32::MAX),
            max_future_secs: u32::try_from(self.shared.sv1.max_ntime_future.as_secs())
                .unwrap_or(u32::MAX),
        };
        let submission = Submission {
            extranonce2: &en2[..en2_len],
            ntime,
            nonce,
            version_bits,
        };
        let valid = check_share(&entry.job, &self.extranonce1, &submission, &check)?;
        if !entry.seen.insert(valid.hash) {
            return Err(Reject::Duplicate);
        }
        let share_difficulty = entry.difficulty;
        self.shared.stats.share_accepted(share_difficulty.get());
        if let (Some(pool), Some(worker)) = (&entry.job.pool, &self.worker) {
            pool.forward(
                entry.job.id,
                self.extranonce1.as_bytes(),
                &en2[..en2_len],
                &valid.header,
                valid.hash,
                share_difficulty.get(),
                valid.is_block,
                worker,
            );
        }
        if valid.is_block {
            let job = entry.job.clone();
            let mut extranonce = [0u8; 16];
            let en1 = self.extranonce1.as_bytes();
            extranonce[..en1.len()].copy_from_slice(en1);
            extranonce[en1.len()..en1.len() + en2_len].copy_from_slice(&en2[..en2_len]);
            let mut coinbase_tx = Vec::with_capacity(job.coinbase.serialized_len());
            job.coinbase
                .write_for_block(&extranonce[..en1.len() + en2_len], &mut coinbase_tx);
            info!(
                hash = %valid.hash,
                height = job.template.height,
                txs = job.template.txs.len() + 1,
                worker = self.worker_name(),
                peer = %self.peer,
                "BLOCK FOUND"
            );
            self.shared.stats.block_found();
            self.shared.blocks.submit(crate::solo::FoundBlock {
                hash: valid.hash,
                template: job.template.clone(),
                header: valid.header,
                coinbase_tx,
                worker: self.worker_name().to_owned(),
            });
        }
        if let Some(d) = self
            .vardiff
            .on_share(now, share_difficulty, self.difficulty)
        {
            self.change_difficulty(d);
        }
        Ok(())
    }
}
