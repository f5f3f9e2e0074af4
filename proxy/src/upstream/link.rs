//! One pool: the mining connection with its extended channel, and the declarer on the pool's
//! JDS. [`PoolLink::open`] proves both work before any miner is moved to the pool;
//! [`PoolLink::run`] mines on it until it fails, shutdown, or a preferred pool is back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use binary_sv2::{Seq0255, Str0255, B0255, B032, B064K, U256};
use bitcoin::hashes::Hash;
use bitcoin::{Amount, BlockHash, CompactTarget, Target, TxMerkleNode, TxOut};
use common_messages_sv2::Protocol;
use job_declarator::{JdClient, JdError, Solution};
use mining_sv2::{
    NewExtendedMiningJob, OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError, SetCustomMiningJob, SetCustomMiningJobError, SetCustomMiningJobSuccess,
    SetExtranoncePrefix, SetNewPrevHash as MiningSetNewPrevHash, SetTarget, SubmitSharesError,
    SubmitSharesExtended, SubmitSharesSuccess, UpdateChannel, UpdateChannelError,
};
use template_provider::sv2::client::{open, Client, OpenError};
use template_provider::sv2::{Frame, Sv2Error};
use template_provider::{CoinbaseSplit, Template, TemplateId, TemplateKind};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::declarer::{Declarer, Event};
use super::{PoolTag, UpShare};
use crate::config::{DeclarationMode, FailoverConfig, UpstreamConfig};
use crate::job::factory::{Plan, PoolPlan};
use crate::job::{ExtranonceLayout, Job, JobId};
use crate::metrics::Stats;

const VERSION: u16 = 2;
/// `SetupConnection` flags on the mining protocol: we choose the work, and we roll versions.
const REQUIRES_WORK_SELECTION: u32 = 0x2;
const REQUIRES_VERSION_ROLLING: u32 = 0x4;
/// Shares waiting for their job's `SetCustomMiningJob.Success`, per job.
const MAX_QUEUED_PER_JOB: usize = 1024;
/// Jobs whose pool job id is remembered; shares on older jobs are dropped.
const MAX_TRACKED_JOBS: usize = 16;
/// Submitted shares remembered so the pool's verdict can be pinned on a worker.
const MAX_IN_FLIGHT: usize = 8192;
/// Shares queued between sessions and the link.
pub const SHARE_QUEUE: usize = 16_384;

/// Why a pool could not be used, or stopped being used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error("pool {0}")]
    Open(#[from] OpenError),
    #[error("pool connection: {0}")]
    Sv2(#[from] Sv2Error),
    #[error("pool refused the channel: {0}")]
    Channel(String),
    #[error("{0}")]
    Jds(#[from] JdError),
    #[error("pool refused the custom job: {0}")]
    CustomJob(String),
    #[error("pool did not answer {what} within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("pool sent {0}")]
    Protocol(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The extended channel the farm mines on.
#[derive(Debug, Clone)]
struct Channel {
    id: u32,
    target: Target,
    prefix: Vec<u8>,
    extranonce_size: usize,
}

/// A pool, connected and ready.
#[derive(Debug)]
pub struct PoolLink {
    pub index: usize,
    pub name: String,
    mining: Client,
    channel: Channel,
    /// `None`: the pool has no JDS configured here; mine the pool's own jobs.
    declarer: Option<Declarer>,
    pool_outputs: Vec<TxOut>,
    network: bitcoin::Network,
    layout: ExtranonceLayout,
    config: FailoverConfig,
    stats: Arc<Stats>,
}

/// How a link's run ended.
#[derive(Debug)]
pub enum Exit {
    Shutdown,
    /// The link failed; `worked` when the pool had taken at least one job first.
    Failed {
        error: LinkError,
        worked: bool,
    },
    /// A more preferred pool answered; mine there.
    Preempted(Box<PoolLink>),
}

fn decode<'a, T: binary_sv2::Deserialize<'a>>(f: &'a mut Frame) -> Result<T, LinkError> {
    let t = f.msg_type;
    binary_sv2::from_bytes(&mut f.payload)
        .map_err(|e| LinkError::Protocol(format!("an undecodable message 0x{t:02x}: {e:?}")))
}

fn le_target(t: &U256<'_>) -> Target {
    Target::from_le_bytes(*t.as_array())
}

impl PoolLink {
    /// Connects to the pool and its JDS, opens the channel and gets a first token.
    ///
    /// # Errors
    /// Whatever step failed, named.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        index: usize,
        up: &UpstreamConfig,
        layout: ExtranonceLayout,
        network: bitcoin::Network,
        config: FailoverConfig,
        hashrate: f32,
        stats: Arc<Stats>,
    ) -> Result<PoolLink, LinkError> {
        let flags = if up.jds.is_some() {
            REQUIRES_WORK_SELECTION | REQUIRES_VERSION_ROLLING
        } else {
            REQUIRES_VERSION_ROLLING
        };
        let mut mining = open(
            &up.pool.address,
            up.pool.authority,
            Protocol::MiningProtocol,
            VERSION,
            flags,
            config.connect_timeout,
        )
        .await?;
        let open_channel = OpenExtendedMiningChannel {
            request_id: 1,
            user_identity: Str0255::try_from(up.user_identity.as_bytes())
                .map_err(|_| LinkError::Unsupported("user_identity above 255 bytes".into()))?,
            nominal_hash_rate: hashrate,
            max_target: U256::from(&[0xffu8; 32]),
            min_extranonce_size: layout.total_len() as u16,
        };
        mining
            .writer
            .send(
                open_channel,
                mining_sv2::MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL,
                false,
            )
            .await?;
        let channel = loop {
            let mut f = recv(
                &mut mining,
                config.response_timeout,
                "OpenExtendedMiningChannel",
            )
            .await?;
            match f.msg_type {
                mining_sv2::MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS => {
                    let ok: OpenExtendedMiningChannelSuccess = decode(&mut f)?;
                    break Channel {
                        id: ok.channel_id,
                        target: le_target(&ok.target),
                        prefix: ok.extranonce_prefix.as_bytes().to_vec(),
                        extranonce_size: usize::from(ok.extranonce_size),
                    };
                }
                mining_sv2::MESSAGE_TYPE_OPEN_MINING_CHANNEL_ERROR => {
                    let err: OpenMiningChannelError = decode(&mut f)?;
                    return Err(LinkError::Channel(err.error_code.as_utf8_or_hex()));
                }
                other => debug!(msg_type = other, "ignored before the channel opened"),
            }
        };
        if channel.extranonce_size < layout.total_len()
            || channel.prefix.len() + channel.extranonce_size > super::MAX_EXTRANONCE
        {
            return Err(LinkError::Channel(format!(
                "extranonce prefix {} + size {} does not fit our {} bytes of extranonce1+2",
                channel.prefix.len(),
                channel.extranonce_size,
                layout.total_len()
            )));
        }
        let Some((jds, mode)) = &up.jds else {
            warn!(
                upstream = %up.name,
                pool = %up.pool.address,
                channel = channel.id,
                "pool ready WITHOUT job declaration: mining the pool's own jobs (the pool picks the transactions)"
            );
            return Ok(PoolLink {
                index,
                name: up.name.clone(),
                mining,
                declarer: None,
                pool_outputs: Vec::new(),
                network,
                channel,
                layout,
                config,
                stats,
            });
        };
        let full = *mode == DeclarationMode::FullTemplate;
        let mut jd = JdClient::connect(
            &jds.address,
            jds.authority,
            full,
            config.connect_timeout,
            config.response_timeout,
        )
        .await?;
        let first = jd.allocate(&up.user_identity).await?;
        if first.coinbase_outputs.is_empty() {
            return Err(LinkError::Jds(JdError::Protocol(
                "a token without coinbase outputs".into(),
            )));
        }
        info!(
            upstream = %up.name,
            pool = %up.pool.address,
            jds = %jds.address,
            channel = channel.id,
            extranonce_prefix = %hex::encode(&channel.prefix),
            extranonce_size = channel.extranonce_size,
            pool_outputs = first.coinbase_outputs.len(),
            declaration = ?mode,
            "pool ready: channel open, job declarator up"
        );
        Ok(PoolLink {
            index,
            name: up.name.clone(),
            mining,
            declarer: Some(Declarer::start(
                jd,
                first.token,
                up.user_identity.clone(),
                *mode,
            )),
            pool_outputs: first.coinbase_outputs,
            network,
            channel,
            layout,
            config,
            stats,
        })
    }

    /// Whether the farm's own templates are declared here (else the pool's jobs are mined).
    pub fn declares(&self) -> bool {
        self.declarer.is_some()
    }

    /// The channel's extranonce prefix and the zeros padding it to where our extranonce1
    /// starts: the scriptSig bytes every job of this channel fixes.
    fn fixed(&self) -> Vec<u8> {
        let pad = self.channel.extranonce_size - self.layout.total_len();
        let mut fixed = self.channel.prefix.clone();
        fixed.resize(fixed.len() + pad, 0);
        fixed
    }

    /// What jobs of this link carry: the way for their shares (and, never dropped, their
    /// blocks) to reach it.
    pub fn tag(
        &self,
        shares: mpsc::Sender<UpShare>,
        blocks: mpsc::UnboundedSender<UpShare>,
    ) -> PoolTag {
        PoolTag {
            shares,
            blocks,
            pad: (self.channel.extranonce_size - self.layout.total_len()) as u8,
            stats: self.stats.clone(),
        }
    }

    /// The coinbase plan for declared jobs on this link.
    pub fn plan(&self, tag: PoolTag) -> Plan {
        Plan::Pool(PoolPlan {
            outputs: self.pool_outputs.clone(),
            fixed: self.fixed(),
            tag,
        })
    }
}

async fn recv(
    client: &mut Client,
    timeout: Duration,
    what: &'static str,
) -> Result<Frame, LinkError> {
    client.recv(timeout).await.map_err(|e| match e {
        OpenError::Timeout(timeout) => LinkError::Timeout { what, timeout },
        OpenError::Sv2(e) => LinkError::Sv2(e),
        other => LinkError::Protocol(other.to_string()),
    })
}

/// Where a job stands with the pool.
#[derive(Debug)]
enum JobState {
    /// Sent to miners; its declaration is in flight or waits its turn.
    Declaring,
    /// A block was found on it before the pool took it: declared ahead of newer jobs, and never
    /// skipped for them.
    DeclaringFirst,
    /// A later job was declared first: this one never will be, its shares cannot be sent.
    Skipped,
    /// Declared; `SetCustomMiningJob` sent at `since`.
    Setting { since: Instant },
    /// The pool's job id for it, and the target the pool checks its shares against (the
    /// channel's target when the job was set: a later `SetTarget` does not change it).
    Active(u32, Target),
}

#[derive(Debug)]
struct Tracked {
    job: Arc<Job>,
    state: JobState,
    queued: Vec<UpShare>,
}

/// The running state of a link.
pub struct Mining {
    link: PoolLink,
    jobs: VecDeque<Tracked>,
    /// The pool's own jobs waiting for their previous hash, as raw messages.
    future: HashMap<u32, Frame>,
    prev: Option<PrevHash>,
    /// The pool's current job, kept to rebuild it when the extranonce prefix changes.
    current_pool_job: Option<(Frame, PrevHash)>,
    sequence: u32,
    /// The pool took a job (a custom job set, or a job of its own received).
    worked: bool,
    /// Submitted shares, oldest first, until the pool's verdict (sequence numbers rise by one).
    in_flight: VecDeque<(u32, Arc<str>)>,
    work_since_report: f64,
    last_report: Instant,
}

impl Mining {
    pub fn new(link: PoolLink) -> Self {
        Mining {
            link,
            jobs: VecDeque::new(),
            future: HashMap::new(),
            prev: None,
            current_pool_job: None,
            sequence: 0,
            in_flight: VecDeque::new(),
            worked: false,
            work_since_report: 0.0,
            last_report: Instant::now(),
        }
    }

    /// Whether the pool took at least one job on this link.
    pub fn worked(&self) -> bool {
        self.worked
    }

    pub fn link(&self) -> &PoolLink {
        &self.link
    }

    pub fn into_link(self) -> PoolLink {
        self.link
    }

    fn track(&mut self, job: Arc<Job>, state: JobState) {
        if self.jobs.len() >= MAX_TRACKED_JOBS {
            if let Some(old) = self.jobs.pop_front() {
                self.drop_queued(old.queued, "the job was forgotten before the pool took it");
            }
        }
        self.jobs.push_back(Tracked {
            job,
            state,
            queued: Vec::new(),
        });
    }

    fn drop_queued(&self, queued: Vec<UpShare>, why: &str) {
        drop_queued(&self.link, queued, why);
    }

    /// A new job from the farm's template went to the miners: declare it.
    pub fn on_job(&mut self, job: Arc<Job>) {
        if let Some(d) = &self.link.declarer {
            d.declare(job.clone());
        }
        self.track(job, JobState::Declaring);
    }

    /// A job of the pool's own went to the miners.
    pub fn on_pool_job(&mut self, job: Arc<Job>, pool_job: u32) {
        let target = self.link.channel.target;
        self.worked = true;
        self.track(job, JobState::Active(pool_job, target));
    }

    /// A pool job to publish, remembered as the current one.
    fn publish_pool_job(
        &mut self,
        frame: Frame,
        prev: PrevHash,
        clean: bool,
    ) -> Result<Option<Update>, LinkError> {
        let job = self.pool_job(&frame, prev, clean)?;
        self.current_pool_job = Some((frame, prev));
        Ok(Some(Update::PoolJob(Box::new(job))))
    }

    /// Builds the job for a pool job now that its previous hash is known.
    fn pool_job(&self, frame: &Frame, prev: PrevHash, clean: bool) -> Result<PoolJob, LinkError> {
        let mut f = frame.clone();
        let j: NewExtendedMiningJob = decode(&mut f)?;
        let mut prefix = j.coinbase_tx_prefix.as_bytes().to_vec();
        prefix.extend_from_slice(&self.link.fixed());
        let coinbase = CoinbaseSplit::from_parts(
            prefix,
            j.coinbase_tx_suffix.as_bytes().to_vec(),
            self.link.layout.total_len(),
        )
        .map_err(|e| LinkError::Protocol(format!("a job with a bad coinbase: {e}")))?;
        let min_ntime = j.min_ntime.clone().into_inner().unwrap_or(prev.min_ntime);
        let template = Template {
            id: TemplateId::new(u64::from(j.job_id)),
            kind: TemplateKind::Pool,
            network: self.link.network,
            height: coinbase.bip34_height().unwrap_or(0),
            prev_hash: prev.hash,
            version: j.version as i32,
            bits: CompactTarget::from_consensus(prev.nbits),
            min_time: min_ntime,
            cur_time: min_ntime,
            coinbase_value: Amount::ZERO,
            witness_commitment: None,
            txs: Arc::new(Vec::new()),
            merkle_path: j
                .merkle_path
                .iter()
                .map(|n| TxMerkleNode::from_byte_array(*n.as_array()))
                .collect(),
        };
        Ok(PoolJob {
            pool_job: j.job_id,
            template,
            coinbase,
            clean,
        })
    }

    /// The next frame from the pool, or the declarer's next event.
    pub async fn next(&mut self) -> Result<Input, LinkError> {
        let declarer = self.link.declarer.as_mut();
        tokio::select! {
            f = self.link.mining.frames.recv() => match f {
                Some(Ok(f)) => Ok(Input::Frame(f)),
                Some(Err(e)) => Err(e.into()),
                None => Err(Sv2Error::Closed.into()),
            },
            e = async { declarer.expect("guarded").events.recv().await }, if declarer.is_some() => match e {
                Some(e) => Ok(Input::Declarer(e)),
                None => Err(LinkError::Internal("the declarer task stopped".into())),
            },
        }
    }

    /// Handles what [`next`](Self::next) returned.
    ///
    /// # Errors
    /// A refusal or failure that means this pool cannot be mined on now.
    pub async fn handle(&mut self, input: Input) -> Result<Option<Update>, LinkError> {
        match input {
            Input::Declarer(Event::Declared { job, token }) => {
                self.set_custom_job(job, &token).await.map(|()| None)
            }
            Input::Declarer(Event::Failed { job, error }) => {
                if let Some(j) = job {
                    warn!(upstream = %self.link.name, job = %j, %error, "job declaration failed");
                }
                Err(error.into())
            }
            Input::Frame(f) => self.on_frame(f).await,
        }
    }

    async fn set_custom_job(
        &mut self,
        id: JobId,
        token: &job_declarator::Token,
    ) -> Result<(), LinkError> {
        let Some(pos) = self.jobs.iter().position(|t| t.job.id == id) else {
            debug!(job = %id, "declared job already forgotten");
            return Ok(());
        };
        // The declarer takes the newest job: older ones still waiting never get their turn.
        for older in self.jobs.iter_mut().take(pos) {
            if matches!(older.state, JobState::Declaring) {
                older.state = JobState::Skipped;
                let queued = std::mem::take(&mut older.queued);
                drop_queued(&self.link, queued, "a newer template was declared first");
            }
        }
        let t = &mut self.jobs[pos];
        let job = &t.job;
        let tpl = &job.template;
        let prev = tpl.prev_hash.to_byte_array();
        let path: Vec<[u8; 32]> = tpl.merkle_path.iter().map(|n| n.to_byte_array()).collect();
        let too_big =
            |w: &str| LinkError::Protocol(format!("{w} too large for SetCustomMiningJob"));
        let msg = SetCustomMiningJob {
            channel_id: self.link.channel.id,
            request_id: id.get(),
            token: B0255::try_from(token.as_bytes()).map_err(|_| too_big("token"))?,
            version: tpl.version as u32,
            prev_hash: U256::from(&prev),
            // The session accepts ntime from the template's minimum; so must the pool (it allows
            // two hours above this, so stay within an hour of the job's own time).
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
        self.link
            .mining
            .writer
            .send(msg, mining_sv2::MESSAGE_TYPE_SET_CUSTOM_MINING_JOB, true)
            .await?;
        t.state = JobState::Setting {
            since: Instant::now(),
        };
        Ok(())
    }

    async fn on_frame(&mut self, mut f: Frame) -> Result<Option<Update>, LinkError> {
        match f.msg_type {
            mining_sv2::MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB if self.link.declarer.is_none() => {
                let mut raw = f.clone();
                let j: NewExtendedMiningJob = decode(&mut raw)?;
                let future = j.min_ntime.clone().into_inner().is_none();
                let id = j.job_id;
                if future {
                    if self.future.len() >= MAX_TRACKED_JOBS {
                        self.future.clear();
                    }
                    self.future.insert(id, f);
                    return Ok(None);
                }
                match self.prev {
                    Some(prev) => self.publish_pool_job(f, prev, false),
                    None => Ok(None),
                }
            }
            mining_sv2::MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH if self.link.declarer.is_none() => {
                let p: MiningSetNewPrevHash = decode(&mut f)?;
                let prev = PrevHash {
                    hash: BlockHash::from_byte_array(*p.prev_hash.as_array()),
                    min_ntime: p.min_ntime,
                    nbits: p.nbits,
                };
                self.prev = Some(prev);
                let job = self.future.remove(&p.job_id);
                self.future.clear();
                match job {
                    Some(frame) => self.publish_pool_job(frame, prev, true),
                    None => Ok(None),
                }
            }
            mining_sv2::MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_SUCCESS => {
                let ok: SetCustomMiningJobSuccess = decode(&mut f)?;
                let id = JobId::new(ok.request_id);
                let Some(t) = self.jobs.iter_mut().find(|t| t.job.id == id) else {
                    return Ok(None);
                };
                let target = self.link.channel.target;
                t.state = JobState::Active(ok.job_id, target);
                self.worked = true;
                info!(upstream = %self.link.name, job = %id, pool_job = ok.job_id, height = t.job.template.height, txs = t.job.template.txs.len(), "pool accepted the declared job");
                let queued = std::mem::take(&mut t.queued);
                for s in queued {
                    if s.is_block || target.is_met_by(s.hash) {
                        self.submit(ok.job_id, s)?;
                    }
                }
                self.flush().await?;
                Ok(None)
            }
            mining_sv2::MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_ERROR => {
                let err: SetCustomMiningJobError = decode(&mut f)?;
                let code = err.error_code.as_utf8_or_hex();
                let hint = if code.contains("token") {
                    " (the declared token expired: SetCustomMiningJob must follow the declaration within seconds)"
                } else {
                    ""
                };
                Err(LinkError::CustomJob(format!("{code}{hint}")))
            }
            mining_sv2::MESSAGE_TYPE_SET_TARGET => {
                let t: SetTarget = decode(&mut f)?;
                if t.channel_id == self.link.channel.id {
                    self.link.channel.target = le_target(&t.maximum_target);
                    debug!(upstream = %self.link.name, difficulty = self.link.channel.target.difficulty_float(), "pool set the channel target");
                }
                Ok(None)
            }
            mining_sv2::MESSAGE_TYPE_SET_EXTRANONCE_PREFIX => {
                let p: SetExtranoncePrefix = decode(&mut f)?;
                let prefix = p.extranonce_prefix.as_bytes().to_vec();
                if p.channel_id != self.link.channel.id {
                    return Ok(None);
                }
                if prefix.len() + self.link.channel.extranonce_size > super::MAX_EXTRANONCE {
                    return Err(LinkError::Protocol(format!(
                        "an extranonce prefix of {} bytes that leaves no room for ours",
                        prefix.len()
                    )));
                }
                info!(upstream = %self.link.name, prefix = %hex::encode(&prefix), "pool changed the channel's extranonce prefix; new jobs for every miner");
                self.link.channel.prefix = prefix;
                // Every job's coinbase embeds the prefix: the old ones are dead for the pool.
                for t in std::mem::take(&mut self.jobs) {
                    self.drop_queued(t.queued, "the pool changed the extranonce prefix");
                }
                // A pool's own job embeds the prefix too: rebuild the current one with it.
                if self.link.declarer.is_none() {
                    if let Some((frame, prev)) = self.current_pool_job.take() {
                        return self.publish_pool_job(frame, prev, true);
                    }
                }
                Ok(Some(Update::NewPrefix))
            }
            mining_sv2::MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS => {
                let ok: SubmitSharesSuccess = decode(&mut f)?;
                let n = u64::from(ok.new_submits_accepted_count);
                self.link.stats.pool_accepted(n);
                // One acknowledgement covers every share up to its sequence number that was
                // not refused on its own.
                while let Some((seq, _)) = self.in_flight.front() {
                    if seq.wrapping_sub(ok.last_sequence_number) as i32 > 0 {
                        break;
                    }
                    let (_, w) = self.in_flight.pop_front().expect("front exists");
                    self.link.stats.pool_verdict(&w, 1, 0);
                }
                debug!(upstream = %self.link.name, accepted = ok.new_submits_accepted_count, last = ok.last_sequence_number, "pool acknowledged shares");
                Ok(None)
            }
            mining_sv2::MESSAGE_TYPE_SUBMIT_SHARES_ERROR => {
                let err: SubmitSharesError = decode(&mut f)?;
                self.link.stats.pool_rejected();
                let worker = self
                    .in_flight
                    .iter()
                    .position(|(seq, _)| *seq == err.sequence_number)
                    .and_then(|i| self.in_flight.remove(i))
                    .map(|(_, w)| w);
                if let Some(w) = &worker {
                    self.link.stats.pool_verdict(w, 0, 1);
                }
                warn!(upstream = %self.link.name, worker = worker.as_deref().unwrap_or("-"), code = %err.error_code.as_utf8_or_hex(), "pool rejected a share");
                Ok(None)
            }
            mining_sv2::MESSAGE_TYPE_UPDATE_CHANNEL_ERROR => {
                let err: UpdateChannelError = decode(&mut f)?;
                warn!(upstream = %self.link.name, code = %err.error_code.as_utf8_or_hex(), "pool refused the hashrate update");
                Ok(None)
            }
            other => {
                debug!(upstream = %self.link.name, msg_type = other, "ignored pool message");
                Ok(None)
            }
        }
    }

    /// A share from a session.
    ///
    /// # Errors
    /// A lost connection.
    pub fn on_share(&mut self, share: UpShare) -> Result<(), LinkError> {
        self.work_since_report += share.difficulty;
        if share.is_block {
            let t = self.jobs.iter().find(|t| t.job.id == share.job);
            if let Some(t) = t {
                let mut extranonce = self.link.channel.prefix.clone();
                extranonce
                    .extend_from_slice(&share.extranonce[..usize::from(share.extranonce_len)]);
                if let Some(d) = &self.link.declarer {
                    d.push_solution(Solution {
                        extranonce,
                        prev_hash: t.job.template.prev_hash,
                        nonce: share.nonce,
                        ntime: share.ntime,
                        nbits: t.job.template.bits.to_consensus(),
                        version: share.version,
                    });
                }
            }
        }
        let Some(t) = self.jobs.iter_mut().find(|t| t.job.id == share.job) else {
            if share.is_block {
                error!(upstream = %self.link.name, hash = %share.hash, job = %share.job, "block share on a job this pool no longer knows: not sent to the pool");
            }
            self.link.stats.pool_dropped(1);
            return Ok(());
        };
        match t.state {
            // A block always goes: the pool credits it whatever the channel's target.
            JobState::Active(pool_job, target)
                if share.is_block || target.is_met_by(share.hash) =>
            {
                self.submit(pool_job, share)
            }
            JobState::Active(..) => Ok(()),
            JobState::Declaring if share.is_block => {
                t.state = JobState::DeclaringFirst;
                t.queued.push(share);
                if let Some(d) = &self.link.declarer {
                    d.declare_first(t.job.clone());
                }
                Ok(())
            }
            JobState::Declaring | JobState::DeclaringFirst | JobState::Setting { .. }
                if share.is_block || t.queued.len() < MAX_QUEUED_PER_JOB =>
            {
                t.queued.push(share);
                Ok(())
            }
            _ => {
                if share.is_block {
                    error!(upstream = %self.link.name, hash = %share.hash, job = %share.job, "block share on a job the pool never took: not sent to the pool");
                }
                self.link.stats.pool_dropped(1);
                Ok(())
            }
        }
    }

    fn submit(&mut self, pool_job: u32, s: UpShare) -> Result<(), LinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let msg = SubmitSharesExtended {
            channel_id: self.link.channel.id,
            sequence_number: self.sequence,
            job_id: pool_job,
            nonce: s.nonce,
            ntime: s.ntime,
            version: s.version,
            extranonce: B032::try_from(&s.extranonce[..usize::from(s.extranonce_len)])
                .map_err(|_| LinkError::Internal("a share's extranonce above 32 bytes".into()))?,
        };
        // Queued: the caller flushes once per burst of shares.
        self.link.mining.writer.queue(
            msg,
            mining_sv2::MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED,
            true,
        )?;
        self.link.stats.pool_submitted();
        if s.is_block {
            info!(upstream = %self.link.name, hash = %s.hash, worker = %s.worker, "block share sent to the pool");
        }
        self.in_flight.push_back((self.sequence, s.worker));
        if self.in_flight.len() > MAX_IN_FLIGHT {
            self.in_flight.pop_front();
        }
        Ok(())
    }

    /// Writes the shares queued since the last flush.
    ///
    /// # Errors
    /// A lost connection.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        self.link.mining.writer.flush().await.map_err(Into::into)
    }

    /// Once a second: a custom job the pool never answered ends the link.
    ///
    /// # Errors
    /// [`LinkError::Timeout`].
    pub fn check_timeouts(&self) -> Result<(), LinkError> {
        let timeout = self.link.config.response_timeout;
        for t in &self.jobs {
            if let JobState::Setting { since } = t.state {
                if since.elapsed() > timeout {
                    return Err(LinkError::Timeout {
                        what: "SetCustomMiningJob",
                        timeout,
                    });
                }
            }
        }
        Ok(())
    }

    /// The farm's hashrate from the shares of the last interval, in hashes per second.
    pub fn hashrate(&self) -> f32 {
        let secs = self.last_report.elapsed().as_secs_f64().max(1e-3);
        (self.work_since_report * 4_294_967_296.0 / secs) as f32
    }

    /// Reports the farm's hashrate (`UpdateChannel`) and logs per-worker counts.
    ///
    /// # Errors
    /// A lost connection.
    pub async fn report(&mut self) -> Result<f32, LinkError> {
        let hashrate = self.hashrate();
        self.work_since_report = 0.0;
        self.last_report = Instant::now();
        let msg = UpdateChannel {
            channel_id: self.link.channel.id,
            nominal_hash_rate: hashrate,
            maximum_target: U256::from(&[0xffu8; 32]),
        };
        self.link
            .mining
            .writer
            .send(msg, mining_sv2::MESSAGE_TYPE_UPDATE_CHANNEL, true)
            .await?;
        let s = self.link.stats.snapshot();
        info!(
            upstream = %self.link.name,
            hashrate,
            submitted = s.pool_submitted,
            accepted = s.pool_accepted,
            rejected = s.pool_rejected,
            dropped = s.pool_dropped,
            "pool status"
        );
        for (worker, accepted, rejected) in self.link.stats.pool_workers() {
            debug!(upstream = %self.link.name, %worker, accepted, rejected, "pool's verdict on shares");
        }
        Ok(hashrate)
    }
}

/// Counts shares that will never reach the pool; a block among them is logged (it is on the
/// chain through the local node, but the pool cannot credit it).
fn drop_queued(link: &PoolLink, queued: Vec<UpShare>, why: &str) {
    for s in queued.iter().filter(|s| s.is_block) {
        error!(upstream = %link.name, hash = %s.hash, worker = %s.worker, %why, "block share not sent to the pool: the block went to the local node, the pool cannot credit it");
    }
    link.stats.pool_dropped(queued.len() as u64);
}

/// The previous hash the pool's own jobs build on.
#[derive(Debug, Clone, Copy)]
struct PrevHash {
    hash: BlockHash,
    min_ntime: u32,
    nbits: u32,
}

/// A job of the pool's own, ready to become a [`Job`].
#[derive(Debug)]
pub struct PoolJob {
    pub pool_job: u32,
    pub template: Template,
    pub coinbase: CoinbaseSplit,
    pub clean: bool,
}

/// What the supervisor must act on.
#[derive(Debug)]
pub enum Update {
    /// A job of the pool's own, to publish.
    PoolJob(Box<PoolJob>),
    /// The channel's extranonce prefix changed: jobs must be rebuilt with it.
    NewPrefix,
}

/// Something for the link to handle.
#[derive(Debug)]
pub enum Input {
    Frame(Frame),
    Declarer(Event),
}
