//! A channel at work: the one task that reads the pool, the declarer, the jobs, the shares
//! and the blocks of one pool link, and writes to the pool.

use mining_sv2::{SetCustomMiningJob, SubmitSharesExtended, UpdateChannel};

use super::super::custom_jobs::JobState;
use super::*;

/// Block shares whose verdict is awaited (a block is rare: this is only a bound).
const MAX_BLOCKS_IN_FLIGHT: usize = 64;

/// What woke the channel up.
enum Input {
    Shutdown,
    Stop,
    Block(Option<LinkBlock>),
    Second,
    Report,
    Job(Option<Arc<Job>>),
    Frame(Result<Frame, Sv2Error>),
    Declarer(Option<Event>),
    Share(Option<UpShare>),
}

impl Mining {
    /// Runs until the pool fails, `ctx.stop`, or shutdown.
    pub(super) async fn serve(
        &mut self,
        mut inbox: LinkInbox,
        mut jobs: mpsc::UnboundedReceiver<Arc<Job>>,
        ctx: &RunContext,
    ) -> Exit {
        let config = self.channel.ctx.config;
        let mut second = tokio::time::interval(Duration::from_secs(1));
        // The channel opened on the last known hashrate (none at first start): report the
        // measured one soon, then at the configured pace.
        let first_report = config.hashrate_report.min(Duration::from_secs(5));
        let mut report = tokio::time::interval_at(
            tokio::time::Instant::now() + first_report,
            config.hashrate_report,
        );
        let result = loop {
            let input = self
                .next_input(&mut inbox, &mut jobs, &mut second, &mut report, ctx)
                .await;
            let step = match input {
                Input::Shutdown => return Exit::Shutdown,
                Input::Stop => {
                    // This pool is healthy: what it was handed still goes to it.
                    self.drain(&mut inbox).await;
                    return Exit::Stopped;
                }
                Input::Block(Some(b)) => self.on_block(b).await,
                Input::Second => self.check_timeouts(),
                Input::Report => self.report().await,
                Input::Job(Some(job)) => {
                    self.on_job(job);
                    Ok(())
                }
                Input::Frame(Ok(f)) => self.on_frame(f, ctx).await,
                Input::Frame(Err(e)) => Err(e.into()),
                Input::Declarer(Some(e)) => self.on_declarer(e).await,
                Input::Share(Some(s)) => self.on_shares(s, &mut inbox.shares).await,
                Input::Declarer(None) => {
                    Err(LinkError::Unusable("the declarer task stopped".into()))
                }
                Input::Block(None) | Input::Job(None) | Input::Share(None) => {
                    Err(LinkError::Unusable("the channel's inbox closed".into()))
                }
            };
            if let Err(e) = step {
                break e;
            }
        };
        // Asked before `lost` forgets the jobs.
        let worked = self.custom.any_active();
        self.lost(&mut inbox);
        Exit::Failed {
            error: result,
            worked,
        }
    }

    async fn next_input(
        &mut self,
        inbox: &mut LinkInbox,
        jobs: &mut mpsc::UnboundedReceiver<Arc<Job>>,
        second: &mut tokio::time::Interval,
        report: &mut tokio::time::Interval,
        ctx: &RunContext,
    ) -> Input {
        let declarer = self.channel.declarer.as_mut();
        // Timers, jobs and blocks before the share stream, so a busy farm never starves them.
        tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => Input::Shutdown,
            () = ctx.stop.cancelled() => Input::Stop,
            b = inbox.blocks.recv() => Input::Block(b),
            _ = second.tick() => Input::Second,
            _ = report.tick() => Input::Report,
            j = jobs.recv() => Input::Job(j),
            f = self.channel.conn.frames.recv() => Input::Frame(f),
            e = async { declarer.expect("guarded").events.recv().await }, if declarer.is_some() => Input::Declarer(e),
            s = inbox.shares.recv() => Input::Share(s),
        }
    }

    /// A new job went to the miners: track it, and declare it when it is the farm's.
    fn on_job(&mut self, job: Arc<Job>) {
        match &self.channel.declarer {
            Some(d) => {
                if let Some(declarable) = declarable(&job) {
                    d.declare(Arc::new(declarable));
                } else {
                    warn!(upstream = %self.channel.name, job = %job.id, "job without a witness commitment; it cannot be declared");
                }
                let dropped = self.custom.track(job);
                self.dropped(dropped, "the job was forgotten before the pool took it");
            }
            None => {
                let pool_job = PoolJobId(u32::try_from(job.template.id.get()).unwrap_or(u32::MAX));
                self.custom
                    .track_active(job, pool_job, self.channel.state.target);
            }
        }
    }

    async fn on_declarer(&mut self, event: Event) -> Result<(), LinkError> {
        match event {
            Event::Declared { job, token } => {
                let Some((declared, skipped)) = self.custom.declared(job, Instant::now()) else {
                    debug!(job = %job, "declared job already forgotten");
                    return Ok(());
                };
                self.dropped(skipped, "a newer template was declared first");
                self.set_custom_job(&declared, &token).await
            }
            Event::Failed { job, error } => {
                if let Some(j) = job {
                    warn!(upstream = %self.channel.name, job = %j, %error, "job declaration failed");
                }
                Err(error.into())
            }
        }
    }

    async fn set_custom_job(
        &mut self,
        job: &Job,
        token: &job_declarator::Token,
    ) -> Result<(), LinkError> {
        let tpl = &job.template;
        let prev = tpl.prev_hash.to_byte_array();
        let path: Vec<[u8; 32]> = tpl.merkle_path.iter().map(|n| n.to_byte_array()).collect();
        let too_big =
            |w: &str| LinkError::Unusable(format!("{w} too large for SetCustomMiningJob"));
        let msg = SetCustomMiningJob {
            channel_id: self.channel.state.id.0,
            request_id: job.id.get(),
            token: B0255::try_from(token.as_bytes()).map_err(|_| too_big("token"))?,
            version: tpl.version.to_consensus() as u32,
            prev_hash: U256::from(&prev),
            // The session accepts ntime from the template's minimum; so must the pool (it
            // allows two hours above this, so stay within an hour of the job's own time).
            min_ntime: tpl.min_time.max(tpl.cur_time.saturating_sub(3600)),
            nbits: tpl.bits.to_consensus(),
            coinbase_tx_version: job.coinbase.tx_version(),
            coinbase_prefix: B0255::try_from(job.coinbase.script_sig_prefix())
                .map_err(|_| too_big("coinbase prefix"))?,
            coinbase_tx_input_n_sequence: job.coinbase.input_sequence(),
            coinbase_tx_outputs: B064K::try_from(job.coinbase.outputs())
                .map_err(|_| too_big("coinbase outputs"))?,
            coinbase_tx_locktime: job.coinbase.lock_time(),
            merkle_path: Seq0255::new(path.iter().map(U256::from).collect())
                .map_err(|_| too_big("merkle path"))?,
        };
        let msg_type = mining_sv2::MESSAGE_TYPE_SET_CUSTOM_MINING_JOB;
        self.channel.conn.writer.send(msg, msg_type, true).await?;
        Ok(())
    }

    async fn on_frame(&mut self, mut f: Frame, ctx: &RunContext) -> Result<(), LinkError> {
        use mining_sv2::*;
        let own_jobs = self.channel.declarer.is_none();
        match f.msg_type {
            MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB if own_jobs => {
                let fixed = self.channel.fixed();
                let job = self.pool_jobs.on_job(&mut f, &fixed)?;
                self.publish_pool_job(job, ctx);
                Ok(())
            }
            MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH if own_jobs => {
                let fixed = self.channel.fixed();
                let job = self.pool_jobs.on_prev_hash(&mut f, &fixed)?;
                self.publish_pool_job(job, ctx);
                Ok(())
            }
            MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_SUCCESS => {
                let ok: SetCustomMiningJobSuccess = f.decode()?;
                self.on_custom_job_set(JobId::new(ok.request_id), PoolJobId(ok.job_id))
                    .await
            }
            MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_ERROR => {
                let err: SetCustomMiningJobError = f.decode()?;
                let code = err.error_code.as_utf8_or_hex();
                let hint = if code.contains("token") {
                    " (the declared token expired: SetCustomMiningJob must follow the declaration within seconds)"
                } else {
                    ""
                };
                Err(LinkError::CustomJob(format!("{code}{hint}")))
            }
            MESSAGE_TYPE_SET_TARGET => {
                let t: SetTarget = f.decode()?;
                if t.channel_id == self.channel.state.id.0 {
                    self.channel.state.target = le_target(&t.maximum_target);
                    debug!(upstream = %self.channel.name, difficulty = self.channel.state.target.difficulty_float(), "pool set the channel target");
                }
                Ok(())
            }
            MESSAGE_TYPE_SET_EXTRANONCE_PREFIX => {
                let p: SetExtranoncePrefix = f.decode()?;
                let (channel, prefix) = (p.channel_id, p.extranonce_prefix.as_bytes().to_vec());
                self.on_new_prefix(channel, prefix, ctx)
            }
            MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS => {
                let ok: SubmitSharesSuccess = f.decode()?;
                let (count, sum) = (ok.new_submits_accepted_count, ok.new_shares_sum);
                self.channel.ctx.stats.pool_work_acknowledged(sum);
                self.channel.ctx.route.acknowledged(sum);
                self.channel
                    .ctx
                    .stats
                    .acks
                    .accepted(self.channel.index, count, sum);
                self.on_accepted(ok.last_sequence_number, ok.new_submits_accepted_count);
                Ok(())
            }
            MESSAGE_TYPE_SUBMIT_SHARES_ERROR => {
                let err: SubmitSharesError = f.decode()?;
                let code = err.error_code.as_utf8_or_hex();
                self.channel
                    .ctx
                    .stats
                    .acks
                    .refused(self.channel.index, &code);
                self.on_refused(err.sequence_number, &code);
                Ok(())
            }
            MESSAGE_TYPE_UPDATE_CHANNEL_ERROR => {
                let err: UpdateChannelError = f.decode()?;
                warn!(upstream = %self.channel.name, code = %err.error_code.as_utf8_or_hex(), "pool refused the hashrate update");
                Ok(())
            }
            other => {
                debug!(upstream = %self.channel.name, msg_type = other, "ignored pool message");
                Ok(())
            }
        }
    }

    fn publish_pool_job(&self, job: Option<super::super::pool_jobs::PoolJob>, ctx: &RunContext) {
        if let Some(j) = job {
            let _ = ctx.publisher.send(Command::PoolJob {
                tag: self.tag,
                template: j.template,
                coinbase: j.coinbase,
                clean: j.clean,
            });
        }
    }

    async fn on_custom_job_set(&mut self, id: JobId, pool_job: PoolJobId) -> Result<(), LinkError> {
        let target = self.channel.state.target;
        let held = self.custom.set(id, pool_job, target);
        info!(upstream = %self.channel.name, job = %id, %pool_job, "pool accepted the declared job");
        for s in held {
            self.submit(pool_job, s)?;
        }
        self.flush().await
    }

    fn on_new_prefix(
        &mut self,
        channel: u32,
        prefix: Vec<u8>,
        ctx: &RunContext,
    ) -> Result<(), LinkError> {
        if channel != self.channel.state.id.0 {
            return Ok(());
        }
        if prefix.len() + self.channel.state.extranonce_size > MAX_EXTRANONCE {
            return Err(LinkError::Protocol(format!(
                "an extranonce prefix of {} bytes that leaves no room for ours",
                prefix.len()
            )));
        }
        info!(upstream = %self.channel.name, prefix = %hex::encode(&prefix), "pool changed the channel's extranonce prefix; new jobs for every miner");
        self.channel.state.prefix = prefix;
        // Every job's coinbase embeds the prefix: the old ones are dead for the pool.
        let held = self.custom.clear();
        self.dropped(held, "the pool changed the extranonce prefix");
        let fixed = self.channel.fixed();
        if self.channel.declarer.is_none() {
            let job = self.pool_jobs.rebuild(&fixed)?;
            self.publish_pool_job(job, ctx);
        } else {
            let plan = self.channel.plan(self.tag, &self.jobs_tx);
            let _ = ctx.publisher.send(Command::SetPlan(plan));
        }
        Ok(())
    }

    fn on_accepted(&mut self, last: u32, count: u32) {
        let stats = &self.channel.ctx.stats;
        stats.pool_accepted(u64::from(count));
        // One acknowledgement covers every share up to its sequence number that was not
        // refused on its own.
        while let Some((seq, _, _)) = self.in_flight.front() {
            if seq.wrapping_sub(last) as i32 > 0 {
                break;
            }
            let (_, w, d) = self.in_flight.pop_front().expect("front exists");
            stats.pool_verdict(&w, 1, 0);
            self.channel.ctx.route.accepted(&self.pool, &w, d);
        }
        self.blocks_judged(|seq| (seq.wrapping_sub(last) as i32 <= 0).then(|| "accepted".into()));
        debug!(upstream = %self.channel.name, accepted = count, last, "pool acknowledged shares");
    }

    fn on_refused(&mut self, sequence: u32, code: &str) {
        let stats = &self.channel.ctx.stats;
        stats.pool_rejected();
        let worker = self
            .in_flight
            .iter()
            .position(|(seq, _, _)| *seq == sequence)
            .and_then(|i| self.in_flight.remove(i))
            .map(|(_, w, _)| w);
        if let Some(w) = &worker {
            stats.pool_verdict(w, 0, 1);
        }
        self.channel.ctx.route.refused(&self.pool, worker.as_ref());
        self.blocks_judged(|seq| (seq == sequence).then(|| format!("rejected: {code}")));
        warn!(upstream = %self.channel.name, worker = worker.as_deref().unwrap_or("-"), %code, "pool rejected a share");
    }

    /// A block found on one of this pool's jobs: the solution to the JDS, the share to the
    /// pool (whatever the channel's target).
    async fn on_block(&mut self, b: LinkBlock) -> Result<(), LinkError> {
        if let Some(d) = &self.channel.declarer {
            let mut extranonce = self.channel.state.prefix.clone();
            extranonce.extend_from_slice(b.share.extranonce());
            d.push_solution(b.solution, b.template, extranonce);
        }
        self.forward(b.share)?;
        self.flush().await
    }

    /// A burst of shares: taken whole, written in one go.
    async fn on_shares(
        &mut self,
        first: UpShare,
        shares: &mut mpsc::Receiver<UpShare>,
    ) -> Result<(), LinkError> {
        self.forward(first)?;
        while let Ok(s) = shares.try_recv() {
            self.forward(s)?;
        }
        self.flush().await
    }

    fn forward(&mut self, share: UpShare) -> Result<(), LinkError> {
        self.work_since_report += share.difficulty;
        match self.custom.on_share(share) {
            Forward::Submit(pool_job, s) => self.submit(pool_job, s),
            Forward::Held | Forward::BelowTarget => Ok(()),
            Forward::DeclareFirst(job) => {
                if let (Some(d), Some(declarable)) = (&self.channel.declarer, declarable(&job)) {
                    d.declare_first(Arc::new(declarable));
                }
                Ok(())
            }
            Forward::Dropped(s, why) => {
                self.dropped(vec![s], why);
                Ok(())
            }
        }
    }

    fn submit(&mut self, pool_job: PoolJobId, s: UpShare) -> Result<(), LinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let msg = SubmitSharesExtended {
            channel_id: self.channel.state.id.0,
            sequence_number: self.sequence,
            job_id: pool_job.0,
            nonce: s.nonce,
            ntime: s.ntime,
            version: s.version,
            extranonce: B032::try_from(s.extranonce())
                .map_err(|_| LinkError::Unusable("a share's extranonce above 32 bytes".into()))?,
        };
        // Queued: the caller flushes once per burst of shares.
        let msg_type = mining_sv2::MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED;
        self.channel.conn.writer.queue(msg, msg_type, true)?;
        self.channel.ctx.stats.pool_submitted();
        if s.is_block {
            info!(upstream = %self.channel.name, hash = %s.hash, worker = %s.worker, "block share sent to the pool");
        }
        // Jobs are active by the time their shares go up: this is the pool's target for it.
        let difficulty = match self.custom.state(s.job) {
            Some(JobState::Active(_, target)) => target.difficulty_float(),
            _ => 0.0,
        };
        self.channel.ctx.stats.pool_work_sent(difficulty);
        self.channel.ctx.route.sent(difficulty);
        if s.is_block {
            if self.blocks_in_flight.len() >= MAX_BLOCKS_IN_FLIGHT {
                self.blocks_in_flight.remove(0);
            }
            self.blocks_in_flight.push((self.sequence, s.hash));
        }
        self.in_flight
            .push_back((self.sequence, s.worker, difficulty));
        if self.in_flight.len() > MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        Ok(())
    }

    /// Block shares the pool just judged: `verdict` gives the fate of a sequence number it
    /// covers. Each goes to the board under this pool's name.
    fn blocks_judged(&mut self, verdict: impl Fn(u32) -> Option<String>) {
        let (board, name) = (&self.channel.ctx.board, &self.channel.name);
        self.blocks_in_flight
            .retain(|(seq, hash)| match verdict(*seq) {
                Some(fate) => {
                    board.block_fate(*hash, name, &fate);
                    false
                }
                None => true,
            });
    }

    async fn flush(&mut self) -> Result<(), LinkError> {
        self.channel.conn.writer.flush().await.map_err(Into::into)
    }

    /// Once a second: a custom job the pool never answered ends the link.
    fn check_timeouts(&self) -> Result<(), LinkError> {
        let timeout = self.channel.ctx.config.response_timeout;
        if self.custom.overdue(Instant::now(), timeout) {
            return Err(LinkError::Timeout {
                what: "SetCustomMiningJob",
                timeout,
            });
        }
        Ok(())
    }

    /// The farm's hashrate from the shares since the last report, in hashes per second.
    pub(super) fn hashrate(&self) -> f32 {
        let secs = self.last_report.elapsed().as_secs_f64().max(1e-3);
        (self.work_since_report * 4_294_967_296.0 / secs) as f32
    }

    /// Reports the farm's hashrate (`UpdateChannel`).
    async fn report(&mut self) -> Result<(), LinkError> {
        let hashrate = self.hashrate();
        self.work_since_report = 0.0;
        self.last_report = Instant::now();
        let msg = UpdateChannel {
            channel_id: self.channel.state.id.0,
            nominal_hash_rate: hashrate,
            maximum_target: U256::from(&[0xffu8; 32]),
        };
        let msg_type = mining_sv2::MESSAGE_TYPE_UPDATE_CHANNEL;
        self.channel.conn.writer.send(msg, msg_type, true).await?;
        let s = self.channel.ctx.stats.snapshot();
        info!(upstream = %self.channel.name, hashrate, submitted = s.pool_submitted, accepted = s.pool_accepted, rejected = s.pool_rejected, dropped = s.pool_dropped, "pool status");
        Ok(())
    }

    /// Before a healthy pool is left: everything queued for it goes up.
    async fn drain(&mut self, inbox: &mut LinkInbox) {
        while let Ok(b) = inbox.blocks.try_recv() {
            let _ = self.on_block(b).await;
        }
        while let Ok(s) = inbox.shares.try_recv() {
            let _ = self.forward(s);
        }
        let _ = self.flush().await;
    }

    /// After a failure: what was queued or held can never reach the pool.
    fn lost(&mut self, inbox: &mut LinkInbox) {
        inbox.shares.close();
        inbox.blocks.close();
        let mut lost: Vec<UpShare> = std::mem::take(&mut self.custom).into_held();
        while let Ok(s) = inbox.shares.try_recv() {
            lost.push(s);
        }
        while let Ok(b) = inbox.blocks.try_recv() {
            lost.push(b.share);
        }
        self.dropped(lost, "the pool link failed");
    }

    /// Counts shares that will never reach the pool; a block among them is logged (it is on
    /// the chain through the local node, but the pool cannot credit it).
    #[allow(clippy::needless_pass_by_value)] // every caller hands over what it gives up
    fn dropped(&self, shares: Vec<UpShare>, why: &str) {
        for s in shares.iter().filter(|s| s.is_block) {
            error!(upstream = %self.channel.name, hash = %s.hash, worker = %s.worker, %why, "block share not sent to the pool: the block went to the local node, the pool cannot credit it");
        }
        self.channel.ctx.stats.pool_dropped(shares.len() as u64);
    }
}

/// What the JDS needs of a job; `None` for a job without a witness commitment (the
/// declaration carries the coinbase in its witness form).
fn declarable(job: &Job) -> Option<Declarable> {
    let (coinbase_prefix, coinbase_suffix) = job.coinbase.witness_parts()?;
    Some(Declarable {
        id: job.id,
        version: job.template.version,
        coinbase_prefix,
        coinbase_suffix,
        template: job.template.clone(),
    })
}
