//! The two tasks of the ledger, both off the share path:
//! - the sampler reads the board every bucket and hands one [`Batch`] to a bounded queue;
//!   when the queue is full it keeps the figures for the next sample instead (nothing is lost,
//!   nothing waits);
//! - the writer takes batches off the queue and writes them; when the database fails or is
//!   slow, batches go to the spool, which is replayed in order once the database answers.
//!   While the spool holds anything, new batches join it, so the order is kept.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledger::{Batch, BatchKey, ChainRow, Ledger, LedgerError, LedgerUrl};
use ledger_math::customers::CustomerMap;
use mining_types::{block_subsidy, Template};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::sampler::{AckTally, ChainTally, Deltas, PoolAck};
use super::spool::Spool;
use super::Status;
use crate::figures::Board;
use crate::job::Job;

/// How long one write may take before its batch goes to the spool.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the writer tries a database that failed, and replays the spool.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);
/// How long the last replay at shutdown may take.
const SHUTDOWN_REPLAY: Duration = Duration::from_secs(3);
/// How often old rows are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Reads the board every bucket.
pub struct Sampler {
    /// The farm's figures.
    pub board: Arc<Board>,
    /// The job out now.
    pub jobs: watch::Receiver<Arc<Job>>,
    /// The pool's acknowledgements.
    pub acks: mpsc::Receiver<PoolAck>,
    /// Pool names, by place in `[[upstream]]`.
    pub pools: Vec<String>,
    /// Worker to customer.
    pub customers: CustomerMap,
    /// This gateway and run.
    pub gateway: String,
    /// Tells this run from the gateway's others.
    pub run: i64,
    /// The bucket.
    pub bucket: Duration,
    /// Where batches go.
    pub queue: mpsc::Sender<Batch>,
    /// Counters for the API and tests.
    pub status: Arc<Status>,
}

/// Unix seconds as a float, for bucket arithmetic.
fn unix_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The chain as a job shows it.
fn chain_row(t: &Template) -> ChainRow {
    let subsidy = block_subsidy(t.network, t.height);
    ChainRow {
        height: i64::from(t.height),
        network_difficulty: t.network_target().difficulty_float(),
        subsidy_sat: i64::try_from(subsidy.to_sat()).unwrap_or(i64::MAX),
        // Whatever the coinbase may claim above the subsidy: the fees, even for a pool's own
        // job whose transactions are not known here.
        fees_sat: i64::try_from(t.coinbase_value.to_sat().saturating_sub(subsidy.to_sat()))
            .unwrap_or(i64::MAX),
    }
}

impl Sampler {
    /// Samples at every bucket boundary (wall clock) until `shutdown`, then once more for the
    /// partial bucket, and closes the queue.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let bucket = self.bucket.as_secs().max(1);
        let mut deltas = Deltas::default();
        let mut tally = AckTally::default();
        let mut chain = ChainTally::default();
        let mut events_seen = 0;
        let mut seq = 0;
        chain.on_job(
            unix_secs(),
            chain_row(&self.jobs.borrow_and_update().template),
        );
        loop {
            let now = unix_secs();
            let next = ((now / bucket as f64).floor() as u64 + 1) * bucket;
            let wait = Duration::from_secs_f64((next as f64 - now).max(0.0));
            let closing = tokio::select! {
                () = shutdown.cancelled() => None,
                () = tokio::time::sleep(wait) => Some(next - bucket),
                Some(ack) = self.acks.recv() => { tally.add(ack); continue; }
                Ok(()) = self.jobs.changed() => {
                    let row = chain_row(&self.jobs.borrow_and_update().template);
                    chain.on_job(unix_secs(), row);
                    continue;
                }
            };
            let bucket_start = closing.unwrap_or_else(|| (unix_secs() as u64 / bucket) * bucket);
            while let Ok(ack) = self.acks.try_recv() {
                tally.add(ack);
            }
            seq += 1;
            let key = BatchKey {
                gateway: self.gateway.clone(),
                run: self.run,
                seq,
            };
            let mut batch = Batch::new(key, bucket_start as i64, bucket as i64);
            let sample = deltas.sample(&self.board.workers(), &self.customers);
            batch.work.clone_from(&sample.rows);
            let pools = &self.pools;
            (batch.acks, batch.refusals) = tally.rows(|p| {
                pools
                    .get(p)
                    .cloned()
                    .unwrap_or_else(|| format!("upstream {p}"))
            });
            let events = self.board.events.since(events_seen);
            events_seen = events.last().map_or(events_seen, |e| e.seq);
            (batch.blocks, batch.fates) = super::sampler::blocks(&events);
            batch.chain = chain.take(unix_secs());
            match self.queue.try_send(batch) {
                Ok(()) => {
                    deltas.commit(sample);
                    tally.clear();
                }
                Err(_) => {
                    // The writer is behind: these figures join the next sample. Blocks and
                    // the chain row of this bucket are the only things given up.
                    self.status.queue_full.fetch_add(1, Relaxed);
                }
            }
            if closing.is_none() {
                return;
            }
        }
    }
}

/// Writes batches, spooling what the database cannot take.
pub struct Writer {
    /// Where the ledger lives.
    pub url: LedgerUrl,
    /// The ledger, once open.
    pub ledger: Option<Ledger>,
    /// Batches waiting for the database.
    pub spool: Spool,
    /// From the sampler.
    pub queue: mpsc::Receiver<Batch>,
    /// How long rows are kept.
    pub retention: Option<Duration>,
    /// Counters for the API and tests.
    pub status: Arc<Status>,
}

impl Writer {
    /// Writes until the sampler closes the queue (at shutdown), then tries the spool once
    /// more and leaves what is left in it for the next start.
    pub async fn run(mut self) {
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purged: Option<Instant> = None;
        self.status.spooled_now.store(self.spool.len(), Relaxed);
        loop {
            tokio::select! {
                b = self.queue.recv() => match b {
                    Some(b) => self.on_batch(b).await,
                    None => break,
                },
                _ = retry.tick() => {
                    self.replay().await;
                    if self.ledger.is_some() && purged.is_none_or(|p| p.elapsed() >= PURGE_EVERY) {
                        purged = Some(Instant::now());
                        self.purge().await;
                    }
                }
            }
        }
        // Bounded: shutdown waits for this task; what is left is replayed at the next start.
        let _ = tokio::time::timeout(SHUTDOWN_REPLAY, self.replay()).await;
        if !self.spool.is_empty() {
            warn!(batches = self.spool.len(), spool = %self.spool.path().display(), "ledger rows left in the spool; written at the next start");
        }
    }

    async fn on_batch(&mut self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        if self.spool.is_empty() && self.write(&batch).await.is_ok() {
            self.status.written.fetch_add(1, Relaxed);
            return;
        }
        self.keep(&batch);
    }

    /// Into the spool; if even the disk fails, the batch is lost, loudly.
    fn keep(&mut self, batch: &Batch) {
        match self.spool.append(batch) {
            Ok(()) => {
                self.status.spooled.fetch_add(1, Relaxed);
                self.status.spooled_now.store(self.spool.len(), Relaxed);
            }
            Err(e) => {
                self.status.lost.fetch_add(1, Relaxed);
                tracing::error!(spool = %self.spool.path().display(), error = %e, seq = batch.key.seq, "ledger batch could not be spooled: its rows are lost");
            }
        }
    }

    /// Writes `batch`, opening the ledger first if need be; a failed or slow database is
    /// dropped, to be opened again on the next try.
    async fn write(&mut self, batch: &Batch) -> Result<(), LedgerError> {
        let ledger = self.open().await?;
        let result = match tokio::time::timeout(WRITE_TIMEOUT, ledger.write(batch)).await {
            Ok(r) => r,
            Err(_) => Err(LedgerError::Unavailable(format!(
                "no answer within {WRITE_TIMEOUT:?}"
            ))),
        };
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    async fn open(&mut self) -> Result<Ledger, LedgerError> {
        if let Some(l) = self.ledger.as_ref().filter(|l| !l.is_closed()) {
            return Ok(l.clone());
        }
        self.ledger = None;
        let opened = match tokio::time::timeout(WRITE_TIMEOUT, Ledger::open(&self.url)).await {
            Ok(r) => r,
            Err(_) => Err(LedgerError::Unavailable(format!(
                "no answer within {WRITE_TIMEOUT:?}"
            ))),
        };
        match opened {
            Ok(l) => {
                self.status.connected.store(true, Relaxed);
                if self.status.failures.load(Relaxed) > 0 {
                    info!(url = %self.url, spooled = self.spool.len(), "ledger database answers again");
                } else {
                    info!(url = %self.url, "ledger database open");
                }
                self.ledger = Some(l.clone());
                Ok(l)
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Logs a failure once per outage, not once per try.
    fn failed(&mut self, e: &LedgerError) {
        self.ledger = None;
        self.status.set_error(e.to_string());
        if self.status.connected.swap(false, Relaxed) || self.status.failures.load(Relaxed) == 0 {
            warn!(url = %self.url, error = %e, spool = %self.spool.path().display(), "ledger database failed; rows go to the spool until it is back");
        }
        self.status.failures.fetch_add(1, Relaxed);
    }

    /// Writes everything in the spool, in order; empties it only when all went in.
    async fn replay(&mut self) {
        if self.spool.is_empty() {
            return;
        }
        let replay = match self.spool.read() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(spool = %self.spool.path().display(), error = %e, "cannot read the ledger spool");
                return;
            }
        };
        self.status.damaged.fetch_add(replay.damaged, Relaxed);
        for b in &replay.batches {
            if self.write(b).await.is_err() {
                return;
            }
        }
        if let Err(e) = self.spool.clear() {
            tracing::error!(spool = %self.spool.path().display(), error = %e, "cannot empty the ledger spool; its batches will be written again, harmlessly");
            return;
        }
        let n = replay.batches.len() as u64;
        self.status.replayed.fetch_add(n, Relaxed);
        self.status.written.fetch_add(n, Relaxed);
        self.status.spooled_now.store(0, Relaxed);
        info!(batches = n, "ledger spool replayed");
    }

    async fn purge(&mut self) {
        let (Some(keep), Some(ledger)) = (self.retention, self.ledger.clone()) else {
            return;
        };
        let cutoff = (unix_secs() - keep.as_secs_f64()) as i64;
        match tokio::time::timeout(WRITE_TIMEOUT * 6, ledger.purge_before(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(rows = n, cutoff, "ledger rows past retention deleted"),
            Ok(Err(e)) => {
                warn!(error = %e, "ledger retention purge failed; tried again in an hour");
            }
            Err(_) => warn!("ledger retention purge took too long; tried again in an hour"),
        }
    }
}

#[cfg(test)]
mod tests {
    use ledger::{Period, WorkRow};

    use super::*;

    fn batch(seq: i64, shares: i64) -> Batch {
        let key = BatchKey {
            gateway: "g".into(),
            run: 1,
            seq,
        };
        let mut b = Batch::new(key, 60 * seq, 60);
        b.work.push(WorkRow {
            worker: "w".into(),
            customer: None,
            shares,
            work: shares as f64,
            rejects: 0,
        });
        b
    }

    fn writer(url: LedgerUrl, spool: Spool) -> Writer {
        Writer {
            url,
            ledger: None,
            spool,
            queue: mpsc::channel(1).1,
            retention: None,
            status: Arc::new(Status::default()),
        }
    }

    async fn shares(url: &LedgerUrl) -> i64 {
        let l = Ledger::open(url).await.unwrap();
        l.work(Period::ALL)
            .await
            .unwrap()
            .iter()
            .map(|w| w.shares)
            .sum()
    }

    #[tokio::test]
    async fn a_failed_database_spools_and_the_replay_writes_each_batch_once() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the ledger's directory should be: the database cannot be opened.
        std::fs::write(dir.path().join("blocked"), b"").unwrap();
        let broken = LedgerUrl::Sqlite(dir.path().join("blocked/ledger.sqlite3"));
        let spool = Spool::open(&dir.path().join("spool.jsonl")).unwrap();
        let mut w = writer(broken, spool);
        w.on_batch(batch(1, 10)).await;
        w.on_batch(batch(2, 20)).await;
        let s = w.status.snapshot();
        assert_eq!((s.written, s.spooled, s.spooled_now), (0, 2, 2), "{s:?}");
        assert!(s.last_error.is_some());
        // The database is back; batch 1 had in fact gone in before the failure was seen.
        let good = LedgerUrl::Sqlite(dir.path().join("ledger.sqlite3"));
        Ledger::open(&good)
            .await
            .unwrap()
            .write(&batch(1, 10))
            .await
            .unwrap();
        w.url = good.clone();
        w.replay().await;
        // New batches go straight in again, and a second replay finds nothing.
        w.on_batch(batch(3, 30)).await;
        w.replay().await;
        let s = w.status.snapshot();
        assert_eq!((s.written, s.replayed, s.spooled_now), (3, 2, 0), "{s:?}");
        assert!(w.spool.is_empty());
        assert_eq!(shares(&good).await, 60, "each batch exactly once");
    }

    #[tokio::test]
    async fn rows_past_retention_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let url = LedgerUrl::Sqlite(dir.path().join("ledger.sqlite3"));
        let spool = Spool::open(&dir.path().join("spool.jsonl")).unwrap();
        let mut w = writer(url.clone(), spool);
        w.retention = Some(Duration::from_secs(86_400));
        // Batch 1 is from 1970; a row of today stays.
        w.on_batch(batch(1, 5)).await;
        let mut today = batch(2, 7);
        today.bucket_start = unix_secs() as i64;
        w.on_batch(today).await;
        w.purge().await;
        assert_eq!(shares(&url).await, 7);
    }

    #[tokio::test]
    async fn while_the_spool_holds_batches_new_ones_queue_behind_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = LedgerUrl::Sqlite(dir.path().join("ledger.sqlite3"));
        let mut spool = Spool::open(&dir.path().join("spool.jsonl")).unwrap();
        spool.append(&batch(1, 1)).unwrap();
        let mut w = writer(url.clone(), spool);
        // Not written ahead of the older batch in the spool.
        w.on_batch(batch(2, 2)).await;
        assert_eq!(w.spool.len(), 2);
        assert_eq!(shares(&url).await, 0);
        w.replay().await;
        assert_eq!(shares(&url).await, 3);
        assert!(w.spool.is_empty());
    }
}
