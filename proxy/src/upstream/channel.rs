//! One pool: the mining connection with the farm's extended channel, the declarer on the
//! pool's JDS, and the task that mines on them.
//!
//! [`Channel::open`] proves both connections work before any miner is moved to the pool;
//! [`Channel::run`] mines until the pool fails, a preferred pool takes over, or shutdown. The
//! custom-job bookkeeping is [`CustomJobs`]; the pool's own jobs are [`PoolJobs`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use binary_sv2::{Seq0255, Str0255, B0255, B032, B064K, U256};
use bitcoin::hashes::Hash;
use bitcoin::{Target, TxOut};
use common_messages_sv2::Protocol;
use job_declarator::{Declarable, Declarer, Event, JdClient, JdError, Mode as DeclarationMode};
use mining_sv2::{
    OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccess, OpenMiningChannelError,
};
use mining_types::{ChannelId, ExtranonceLayout, JobId, PoolJobId, Side};
use sv2_wire::{Connection, Frame, Sv2Error};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::custom_jobs::{CustomJobs, Forward};
use super::pool_jobs::{PoolJobError, PoolJobs};
use super::shares::{LinkBlock, LinkInbox, Links, PoolTag, UpShare, MAX_EXTRANONCE};
use crate::config::{FailoverConfig, UpstreamConfig};
use crate::job::{Command, Job, Plan, PoolPlan, PoolWork};
use crate::metrics::Stats;

/// `SetupConnection` flags on the mining protocol: we choose the work, and we roll versions.
const REQUIRES_WORK_SELECTION: u32 = 0x2;
const REQUIRES_VERSION_ROLLING: u32 = 0x4;
/// Submitted shares remembered so the pool's verdict can be pinned on a worker.
const MAX_IN_FLIGHT: usize = 8192;

/// Why a pool could not be used, or stopped being used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The mining connection failed.
    #[error("pool connection: {0}")]
    Pool(#[from] Sv2Error),
    /// The pool refused the channel, or gave one we cannot use.
    #[error("pool refused the channel: {0}")]
    Channel(String),
    /// The JDS failed or refused.
    #[error(transparent)]
    Jds(#[from] JdError),
    /// The pool refused a custom job.
    #[error("pool refused the custom job: {0}")]
    CustomJob(String),
    /// The pool did not answer in time.
    #[error("pool did not answer {what} within {timeout:?}")]
    Timeout {
        /// The request.
        what: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// The pool sent something unusable.
    #[error("pool sent {0}")]
    Protocol(String),
    /// Our side cannot work with this pool (a setting, a coinbase that does not fit).
    #[error("{0}")]
    Unusable(String),
}

impl LinkError {
    /// Why, as a label from a fixed few: the `reason` of `jd_proxy_failovers_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            LinkError::Pool(_) => "pool_connection",
            LinkError::Channel(_) => "channel_refused",
            LinkError::Jds(JdError::Refused { .. }) => "declaration_refused",
            LinkError::Jds(_) => "jds",
            LinkError::CustomJob(_) => "custom_job_refused",
            LinkError::Timeout { .. } => "timeout",
            LinkError::Protocol(_) => "protocol",
            LinkError::Unusable(_) => "unusable",
        }
    }

    /// Which side failed: failover, backoff and logs tell the pool from its JDS and from us.
    pub fn side(&self) -> Side {
        match self {
            LinkError::Jds(e) => e.side(),
            LinkError::Unusable(_) => Side::Local,
            _ => Side::Pool,
        }
    }
}

impl From<PoolJobError> for LinkError {
    fn from(e: PoolJobError) -> Self {
        LinkError::Protocol(e.to_string())
    }
}

/// The extended channel the farm mines on.
#[derive(Debug, Clone)]
struct ChannelState {
    id: ChannelId,
    target: Target,
    prefix: Vec<u8>,
    extranonce_size: usize,
}

/// What opening a channel needs.
#[derive(Debug, Clone)]
pub struct OpenContext {
    /// Our extranonce layout.
    pub layout: ExtranonceLayout,
    /// The chain.
    pub network: bitcoin::Network,
    /// Timeouts.
    pub config: FailoverConfig,
    /// The farm's hashrate, for the channel's nominal rate.
    pub hashrate: f32,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Where the pool's verdicts on blocks go.
    pub board: Arc<crate::figures::Board>,
    /// The route this channel mines for: its pool shares and work are counted there.
    pub route: Arc<crate::figures::upstream::RouteFigures>,
    /// Where the connections' readers and the declarer run.
    pub tracker: TaskTracker,
}

/// A pool, connected and ready.
#[derive(Debug)]
pub struct Channel {
    /// Its place in the configured list.
    pub index: usize,
    /// Its name, for logs.
    pub name: String,
    conn: Connection,
    state: ChannelState,
    /// `None`: the pool has no JDS configured here; mine the pool's own jobs.
    declarer: Option<Declarer>,
    pool_outputs: Vec<TxOut>,
    ctx: OpenContext,
}

/// How a channel's run ended.
#[derive(Debug)]
pub enum Exit {
    /// The proxy is stopping.
    Shutdown,
    /// Stopped by the supervisor (a preferred pool is back); what it held went up first.
    Stopped,
    /// The pool failed; `worked` when it had taken at least one job first.
    Failed {
        /// Why.
        error: LinkError,
        /// It took a job before failing.
        worked: bool,
    },
}

/// What a running channel talks to besides its pool.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Where its inbox is registered.
    pub links: Arc<Links>,
    /// The job publisher.
    pub publisher: mpsc::UnboundedSender<Command>,
    /// Cancelled by the supervisor to move to another pool.
    pub stop: CancellationToken,
    /// The proxy's shutdown.
    pub shutdown: CancellationToken,
}

impl Channel {
    /// Connects to the pool and its JDS, opens the channel and gets a first token.
    ///
    /// # Errors
    /// Whatever step failed, named.
    pub async fn open(
        index: usize,
        up: &UpstreamConfig,
        ctx: OpenContext,
    ) -> Result<Channel, LinkError> {
        let flags = if up.jds.is_some() {
            REQUIRES_WORK_SELECTION | REQUIRES_VERSION_ROLLING
        } else {
            REQUIRES_VERSION_ROLLING
        };
        let timeouts = (ctx.config.connect_timeout, ctx.config.response_timeout);
        let mut conn = sv2_wire::open(
            &up.pool.address,
            up.pool.authority,
            Protocol::MiningProtocol,
            flags,
            timeouts.0,
            &ctx.tracker,
        )
        .await?;
        let state = open_channel(&mut conn, up, &ctx).await?;
        let Some((jds, mode)) = &up.jds else {
            warn!(upstream = %up.name, pool = %up.pool.address, channel = %state.id, "pool ready WITHOUT job declaration: mining the pool's own jobs (the pool picks the transactions)");
            return Ok(Channel {
                index,
                name: up.name.clone(),
                conn,
                state,
                declarer: None,
                pool_outputs: Vec::new(),
                ctx,
            });
        };
        let full = *mode == DeclarationMode::FullTemplate;
        let mut jd =
            JdClient::connect(&jds.address, jds.authority, full, timeouts, &ctx.tracker).await?;
        jd.count_into(ctx.stats.declarations.clone());
        let first = jd.allocate(&up.user_identity).await?;
        if first.coinbase_outputs.is_empty() {
            return Err(JdError::Protocol("a token without coinbase outputs".into()).into());
        }
        info!(upstream = %up.name, pool = %up.pool.address, jds = %jds.address, channel = %state.id, extranonce_prefix = %hex::encode(&state.prefix), extranonce_size = state.extranonce_size, pool_outputs = first.coinbase_outputs.len(), declaration = ?mode, "pool ready: channel open, job declarator up");
        let declarer = Declarer::start(
            jd,
            first.token,
            up.user_identity.clone(),
            *mode,
            &ctx.tracker,
        );
        Ok(Channel {
            index,
            name: up.name.clone(),
            conn,
            state,
            declarer: Some(declarer),
            pool_outputs: first.coinbase_outputs,
            ctx,
        })
    }

    /// Whether the farm's own templates are declared on this channel (else the pool's jobs are
    /// mined).
    pub fn declares(&self) -> bool {
        self.declarer.is_some()
    }

    /// The zeros between the channel's prefix and our extranonce1.
    fn pad(&self) -> u8 {
        u8::try_from(self.state.extranonce_size - self.ctx.layout.total_len())
            .expect("checked at open: at most 32")
    }

    /// The scriptSig bytes every job of this channel fixes before our extranonce1: the
    /// channel's prefix and the padding.
    fn fixed(&self) -> Vec<u8> {
        let mut fixed = self.state.prefix.clone();
        fixed.resize(fixed.len() + usize::from(self.pad()), 0);
        fixed
    }

    fn plan(&self, tag: PoolTag, jobs: &mpsc::UnboundedSender<Arc<Job>>) -> Plan {
        let work = match self.declarer {
            Some(_) => PoolWork::Declared {
                outputs: self.pool_outputs.clone(),
                fixed: self.fixed(),
            },
            None => PoolWork::PoolJobs,
        };
        Plan::Pool(PoolPlan {
            tag,
            jobs: jobs.clone(),
            work,
        })
    }

    /// Mines on this pool: tells the publisher the plan, then serves until the pool fails,
    /// `ctx.stop` or shutdown. Returns how it ended and the farm's last measured hashrate.
    pub async fn run(self, ctx: RunContext) -> (Exit, f32) {
        let (registration, inbox) = ctx.links.register(self.pad());
        let (jobs_tx, jobs) = mpsc::unbounded_channel();
        let plan = self.plan(registration.tag, &jobs_tx);
        let _ = ctx.publisher.send(Command::SetPlan(plan));
        if self.declarer.is_some() {
            info!(upstream = %self.name, "mining for the pool on the farm's own templates");
        } else {
            info!(upstream = %self.name, "mining the pool's own jobs: the pool chooses the transactions");
        }
        let layout = self.ctx.layout;
        let mut mining = Mining {
            pool: Arc::from(self.name.as_str()),
            pool_jobs: PoolJobs::new(self.ctx.network, layout.total_len()),
            channel: self,
            tag: registration.tag,
            jobs_tx,
            custom: CustomJobs::default(),
            sequence: 0,
            in_flight: VecDeque::new(),
            blocks_in_flight: Vec::new(),
            work_since_report: 0.0,
            last_report: Instant::now(),
        };
        let exit = mining.serve(inbox, jobs, &ctx).await;
        (exit, mining.hashrate())
    }
}

/// Sends `OpenExtendedMiningChannel` and waits for the pool's answer.
async fn open_channel(
    conn: &mut Connection,
    up: &UpstreamConfig,
    ctx: &OpenContext,
) -> Result<ChannelState, LinkError> {
    let layout = ctx.layout;
    let open = OpenExtendedMiningChannel {
        request_id: 1,
        user_identity: Str0255::try_from(up.user_identity.as_bytes())
            .map_err(|_| LinkError::Unusable("user_identity above 255 bytes".into()))?,
        nominal_hash_rate: ctx.hashrate,
        max_target: U256::from(&[0xffu8; 32]),
        min_extranonce_size: u16::try_from(layout.total_len()).expect("at most 16"),
    };
    let msg_type = mining_sv2::MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL;
    conn.writer.send(open, msg_type, false).await?;
    let state = loop {
        let mut f = recv(
            conn,
            ctx.config.response_timeout,
            "OpenExtendedMiningChannel",
        )
        .await?;
        match f.msg_type {
            mining_sv2::MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS => {
                let ok: OpenExtendedMiningChannelSuccess = f.decode()?;
                break ChannelState {
                    id: ChannelId(ok.channel_id),
                    target: le_target(&ok.target),
                    prefix: ok.extranonce_prefix.as_bytes().to_vec(),
                    extranonce_size: usize::from(ok.extranonce_size),
                };
            }
            mining_sv2::MESSAGE_TYPE_OPEN_MINING_CHANNEL_ERROR => {
                let err: OpenMiningChannelError = f.decode()?;
                return Err(LinkError::Channel(err.error_code.as_utf8_or_hex()));
            }
            other => debug!(msg_type = other, "ignored before the channel opened"),
        }
    };
    if state.extranonce_size < layout.total_len()
        || state.prefix.len() + state.extranonce_size > MAX_EXTRANONCE
    {
        return Err(LinkError::Channel(format!(
            "extranonce prefix {} + size {} does not fit our {} bytes of extranonce1+2",
            state.prefix.len(),
            state.extranonce_size,
            layout.total_len()
        )));
    }
    Ok(state)
}

async fn recv(
    conn: &mut Connection,
    timeout: Duration,
    what: &'static str,
) -> Result<Frame, LinkError> {
    conn.frames
        .recv_timeout(timeout)
        .await
        .map_err(|e| match e {
            Sv2Error::Timeout(timeout) => LinkError::Timeout { what, timeout },
            other => LinkError::Pool(other),
        })
}

fn le_target(t: &U256<'_>) -> Target {
    Target::from_le_bytes(*t.as_array())
}

/// A channel at work.
struct Mining {
    channel: Channel,
    /// The pool's name, for the route's credits.
    pool: Arc<str>,
    tag: PoolTag,
    /// Kept so the publisher's sender never looks closed while we run.
    #[allow(dead_code)]
    jobs_tx: mpsc::UnboundedSender<Arc<Job>>,
    custom: CustomJobs,
    pool_jobs: PoolJobs,
    sequence: u32,
    /// Submitted shares, oldest first, until the pool's verdict (sequence numbers rise by one):
    /// sequence, worker, and the difficulty of the pool's target it was sent at.
    in_flight: VecDeque<(u32, Arc<str>, f64)>,
    /// Block shares among them, until the pool's verdict (sequence, block hash).
    blocks_in_flight: Vec<(u32, bitcoin::BlockHash)>,
    work_since_report: f64,
    last_report: Instant,
}

mod serve;
