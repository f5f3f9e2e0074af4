//! The farm's books: every worker's accepted work, bucket by bucket, written to the share
//! ledger (crate `ledger`: SQLite, or PostgreSQL shared by several gateways) beside what the
//! pool acknowledged, the blocks and the chain's figures; and the reports read back from it.
//!
//! Nothing here is on the share path. Sessions only bump their own counters on the board
//! ([`crate::figures`]); a sampler reads the board's running totals every bucket and writes
//! per-worker deltas, so the ledger's sums are the proxy's own totals. The pool link hands
//! acknowledgements to an [`AckSink`] with `try_send`. Writes go through a bounded queue to one
//! writer task; when the database is slow or down, batches go to a spool file and are replayed
//! in order, each exactly once, when it is back ([`writer`]).

pub mod api;
pub mod cli;
pub mod config;
pub mod report;
pub mod sampler;
pub mod spool;
pub mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use anyhow::Context;
use ledger::{Ledger, LedgerError, LedgerUrl};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use self::config::LedgerConfig;
use self::sampler::PoolAck;
use self::spool::Spool;
use self::writer::{Sampler, Writer};
use crate::figures::Board;
use crate::job::Job;

/// Acknowledgements waiting for the sampler; past this they are counted as dropped.
const ACK_QUEUE: usize = 4096;
/// Batches waiting for the writer; past this the sampler keeps its figures for later.
const BATCH_QUEUE: usize = 64;

/// Where the pool link hands the pool's verdicts; does nothing until the ledger runs.
#[derive(Debug, Default)]
pub struct AckSink {
    tx: OnceLock<mpsc::Sender<PoolAck>>,
    dropped: AtomicU64,
}

impl AckSink {
    /// `SubmitShares.Success` from the pool at `pool` in `[[upstream]]`.
    pub fn accepted(&self, pool: usize, count: u32, shares_sum: u64) {
        self.send(PoolAck::Accepted {
            pool,
            count,
            shares_sum,
        });
    }

    /// `SubmitShares.Error` from the pool at `pool`.
    pub fn refused(&self, pool: usize, reason: &str) {
        if self.tx.get().is_some() {
            self.send(PoolAck::Refused {
                pool,
                reason: reason.to_owned(),
            });
        }
    }

    fn send(&self, ack: PoolAck) {
        if let Some(tx) = self.tx.get() {
            if tx.try_send(ack).is_err() {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Verdicts the ledger had no room for.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    fn connect(&self) -> Option<mpsc::Receiver<PoolAck>> {
        let (tx, rx) = mpsc::channel(ACK_QUEUE);
        self.tx.set(tx).ok().map(|()| rx)
    }
}

/// The ledger's counters.
#[derive(Debug, Default)]
pub struct Status {
    /// Batches written to the database (directly or from the spool).
    pub written: AtomicU64,
    /// Batches that went to the spool.
    pub spooled: AtomicU64,
    /// Batches in the spool now.
    pub spooled_now: AtomicU64,
    /// Batches written from the spool.
    pub replayed: AtomicU64,
    /// Samples kept for the next one because the writer was behind.
    pub queue_full: AtomicU64,
    /// Spool lines that did not parse.
    pub damaged: AtomicU64,
    /// Batches neither written nor spooled (the disk failed too).
    pub lost: AtomicU64,
    /// Failed writes and opens.
    pub failures: AtomicU64,
    /// Whether the database answered last time.
    pub connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Status {
    fn set_error(&self, e: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            written: self.written.load(Relaxed),
            spooled: self.spooled.load(Relaxed),
            spooled_now: self.spooled_now.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            queue_full: self.queue_full.load(Relaxed),
            damaged: self.damaged.load(Relaxed),
            lost: self.lost.load(Relaxed),
            failures: self.failures.load(Relaxed),
            connected: self.connected.load(Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// [`Status`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatusSnapshot {
    /// As in [`Status`].
    pub written: u64,
    /// As in [`Status`].
    pub spooled: u64,
    /// As in [`Status`].
    pub spooled_now: u64,
    /// As in [`Status`].
    pub replayed: u64,
    /// As in [`Status`].
    pub queue_full: u64,
    /// As in [`Status`].
    pub damaged: u64,
    /// As in [`Status`].
    pub lost: u64,
    /// As in [`Status`].
    pub failures: u64,
    /// As in [`Status`].
    pub connected: bool,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The running ledger, as the proxy holds it.
#[derive(Debug, Clone)]
pub struct LedgerHandle {
    /// Where it writes.
    pub url: LedgerUrl,
    /// This gateway's name in it.
    pub gateway: String,
    /// Its counters.
    pub status: Arc<Status>,
    /// Worker to customer, for the reports.
    pub customers: Arc<ledger_math::CustomerMap>,
    /// The connection reports read through, opened on first use.
    reader: Arc<tokio::sync::Mutex<Option<Ledger>>>,
}

impl LedgerHandle {
    /// The ledger for reading (the API's reports), kept open between requests.
    ///
    /// # Errors
    /// The database cannot be opened now.
    pub async fn reader(&self) -> Result<Ledger, LedgerError> {
        let mut r = self.reader.lock().await;
        if let Some(l) = r.as_ref().filter(|l| !l.is_closed()) {
            return Ok(l.clone());
        }
        let l = tokio::time::timeout(writer::WRITE_TIMEOUT, Ledger::open(&self.url))
            .await
            .map_err(|_| LedgerError::Unavailable("no answer".into()))??;
        *r = Some(l.clone());
        Ok(l)
    }
}

/// Opens the spool and the ledger and starts sampling; `None` when the ledger is disabled.
///
/// A database that does not answer now is no reason to stop the farm: rows are spooled until
/// it does. A ledger that cannot be opened for any other reason (a file that cannot be
/// created, a schema newer than this build) is refused at start.
///
/// # Errors
/// The spool cannot be opened, or the ledger is unusable; each naming its key.
pub async fn start(
    whole: &crate::config::Config,
    board: &Arc<Board>,
    jobs: &watch::Receiver<Arc<Job>>,
    stats: &crate::metrics::Stats,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<LedgerHandle>> {
    let config = &whole.ledger;
    if !config.enabled {
        return Ok(None);
    }
    let spool = Spool::open(&config.spool_file).with_context(|| {
        format!(
            "cannot open the ledger spool {} (ledger.spool_file)",
            config.spool_file.display()
        )
    })?;
    let status = Arc::new(Status::default());
    let opened = tokio::time::timeout(writer::WRITE_TIMEOUT, Ledger::open(&config.url))
        .await
        .unwrap_or_else(|_| Err(LedgerError::Unavailable("no answer at start".into())));
    let ledger = match opened {
        Ok(l) => {
            status.connected.store(true, Relaxed);
            info!(url = %config.url, gateway = %config.gateway, "share ledger open");
            Some(l)
        }
        Err(e @ LedgerError::Unavailable(_)) => {
            warn!(url = %config.url, error = %e, "ledger database does not answer at start; rows are spooled until it does");
            None
        }
        Err(e) => return Err(anyhow::anyhow!(e).context(format!("{} (ledger.url)", config.url))),
    };
    let (queue_tx, queue_rx) = mpsc::channel(BATCH_QUEUE);
    let acks = stats.acks.connect().unwrap_or_else(|| mpsc::channel(1).1);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let sampler = Sampler {
        board: board.clone(),
        jobs: jobs.clone(),
        acks,
        pools: whole.upstreams.iter().map(|u| u.name.clone()).collect(),
        customers: whole.customers.clone(),
        gateway: config.gateway.clone(),
        run,
        bucket: config.bucket,
        queue: queue_tx,
        status: status.clone(),
    };
    let writer = Writer {
        url: config.url.clone(),
        ledger,
        spool,
        queue: queue_rx,
        retention: config.retention,
        status: status.clone(),
    };
    tracker.spawn(sampler.run(shutdown.clone()));
    tracker.spawn(writer.run());
    Ok(Some(LedgerHandle {
        url: config.url.clone(),
        gateway: config.gateway.clone(),
        status,
        customers: Arc::new(whole.customers.clone()),
        reader: Arc::default(),
    }))
}
