//! The farm's share ledger: the work every worker did, bucket by bucket, beside what the pool
//! acknowledged, the blocks found and their fates, and the chain's difficulty, subsidy and fees
//! as mined. One API over two backends:
//! - an embedded SQLite file (the default: nothing to install on the gateway box);
//! - PostgreSQL, which several gateways write at once.
//!
//! Rows arrive as [`Batch`]es keyed by gateway, run and sample ([`BatchKey`]); writing one twice
//! changes nothing, so a writer that is unsure whether a write landed simply writes it again.
//! The schema is versioned ([`sql::MIGRATIONS`]) and migrated at [`Ledger::open`]; old rows go
//! with [`Ledger::purge_before`].
//!
//! The ledger does no arithmetic on pay: the `ledger-math` crate does, from what
//! [`Ledger::work`], [`Ledger::acks`] and [`Ledger::chain`] return.

#![warn(missing_docs)]

mod postgres;
pub mod rows;
pub mod sql;
mod sqlite;

use std::fmt;
use std::path::{Path, PathBuf};

pub use rows::*;

/// What went wrong, and on which side of the database.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A URL that names no ledger we can open.
    #[error("ledger url {0}")]
    Url(String),
    /// The file or database could not be opened.
    #[error("cannot open the ledger: {0}")]
    Open(String),
    /// The database cannot be reached now: worth retrying later.
    #[error("the ledger database is unavailable: {0}")]
    Unavailable(String),
    /// The schema could not be brought up to date.
    #[error("ledger schema migration failed: {0}")]
    Migration(String),
    /// The database is newer than this build.
    #[error(
        "the ledger's schema is version {have}, newer than this build's {known}: upgrade jd-proxy"
    )]
    TooNew {
        /// What the database has.
        have: i64,
        /// What this build knows.
        known: i64,
    },
    /// A statement failed.
    #[error("ledger query failed: {0}")]
    Query(String),
}

/// Where the ledger lives.
#[derive(Clone, PartialEq, Eq)]
pub enum LedgerUrl {
    /// `sqlite://<path>`: a file on this box.
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`: a shared database.
    Postgres(String),
}

impl fmt::Debug for LedgerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for LedgerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            LedgerUrl::Postgres(u) => f.write_str(&postgres::redact(u)),
        }
    }
}

impl std::str::FromStr for LedgerUrl {
    type Err = LedgerError;

    fn from_str(s: &str) -> Result<LedgerUrl, LedgerError> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(LedgerError::Url(format!("{s:?} names no file")));
            }
            return Ok(LedgerUrl::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            // Parsed now so a typo is refused at start, not at the first write.
            s.parse::<tokio_postgres::Config>()
                .map_err(|e| LedgerError::Url(format!("{}: {e}", postgres::redact(s))))?;
            return Ok(LedgerUrl::Postgres(s.to_owned()));
        }
        Err(LedgerError::Url(format!(
            "{:?}: use sqlite://<file> or postgres://user:password@host:port/database",
            postgres::redact(s)
        )))
    }
}

/// An open ledger.
#[derive(Debug, Clone)]
pub struct Ledger {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Runs the same call on whichever backend is open.
macro_rules! on_backend {
    ($self:expr, $b:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

// The closures around `sql::read_*` give them the rows' higher-ranked lifetimes.
#[allow(clippy::redundant_closure)]
impl Ledger {
    /// Opens the ledger at `url`, creating and migrating it as needed.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] when a database does not answer (worth retrying);
    /// [`LedgerError::Open`], [`LedgerError::Migration`] or [`LedgerError::TooNew`] otherwise.
    pub async fn open(url: &LedgerUrl) -> Result<Ledger, LedgerError> {
        let backend = match url {
            LedgerUrl::Sqlite(path) => Backend::Sqlite(sqlite::Sqlite::open(path).await?),
            LedgerUrl::Postgres(url) => Backend::Postgres(postgres::Postgres::open(url).await?),
        };
        Ok(Ledger { backend })
    }

    /// Whether the connection is gone (a database that went away); open a new one.
    pub fn is_closed(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            Backend::Postgres(p) => p.is_closed(),
        }
    }

    /// The SQLite file, for the SQLite backend.
    pub fn file(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// Writes a batch in one transaction; a batch already written changes nothing.
    ///
    /// # Errors
    /// The database failed or is gone; the batch may be written again.
    pub async fn write(&self, batch: &Batch) -> Result<(), LedgerError> {
        let statements = sql::write(batch);
        on_backend!(self, b => b.execute(statements).await).map(drop)
    }

    /// Deletes every row from before `cutoff` (unix seconds); returns how many went.
    ///
    /// # Errors
    /// The database failed or is gone.
    pub async fn purge_before(&self, cutoff: i64) -> Result<u64, LedgerError> {
        let statements = sql::purge(cutoff);
        on_backend!(self, b => b.execute(statements).await)
    }

    /// Work per gateway, bucket and worker in `period`, oldest first.
    ///
    /// # Errors
    /// The database failed or is gone.
    pub async fn work(&self, period: Period) -> Result<Vec<WorkBucket>, LedgerError> {
        on_backend!(self, b => b.select(sql::work(period), |r| sql::read_work(r)).await)
    }

    /// The pool's acknowledgements per gateway, bucket and pool in `period`.
    ///
    /// # Errors
    /// The database failed or is gone.
    pub async fn acks(&self, period: Period) -> Result<Vec<AckBucket>, LedgerError> {
        on_backend!(self, b => b.select(sql::acks(period), |r| sql::read_ack(r)).await)
    }

    /// The pool's refusals per gateway, bucket, pool and reason in `period`.
    ///
    /// # Errors
    /// The database failed or is gone.
    pub async fn refusals(&self, period: Period) -> Result<Vec<RefusalBucket>, LedgerError> {
        on_backend!(self, b => b.select(sql::refusals(period), |r| sql::read_refusal(r)).await)
    }

    /// The chain's figures per gateway and sample in `period`.
    ///
    /// # Errors
    /// The database failed or is gone.
    pub async fn chain(&self, period: Period) -> Result<Vec<ChainBucket>, LedgerError> {
        on_backend!(self, b => b.select(sql::chain(period), |r| sql::read_chain(r)).await)
    }

    /// Blocks found in `period`, with their verdicts.
    ///
    /// # Errors
    /// The database failed or is gone.
    pub async fn blocks(&self, period: Period) -> Result<Vec<Block>, LedgerError> {
        let rows =
            on_backend!(self, b => b.select(sql::blocks(period), |r| sql::read_block(r)).await)?;
        Ok(sql::gather_blocks(rows))
    }
}

/// Refuses a database migrated by a newer build: its rows may mean what this build cannot read.
fn check_version(have: i64) -> Result<(), LedgerError> {
    let known = sql::latest_version();
    if have > known {
        return Err(LedgerError::TooNew { have, known });
    }
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
