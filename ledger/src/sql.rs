//! The SQL, one text for both databases: SQLite reads `BIGINT`, `DOUBLE PRECISION` and `$n`
//! parameters as PostgreSQL does, and both have `ON CONFLICT`. Which statements a batch
//! becomes, and how a row reads back, are decided here without a database.

use crate::rows::{AckBucket, Batch, ChainBucket, Fate, Period, RefusalBucket, WorkBucket};
use crate::LedgerError;

/// A parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `BIGINT`.
    Int(i64),
    /// `DOUBLE PRECISION`.
    Real(f64),
    /// `TEXT`.
    Text(String),
    /// `TEXT`, maybe `NULL`.
    OptText(Option<String>),
}

/// A statement and its parameters.
pub type Statement = (&'static str, Vec<Value>);

/// Versioned migrations, applied in order at open; a database records the last it applied.
/// Never edit one that shipped: add the next.
pub const MIGRATIONS: &[(i64, &str)] = &[(1, V1)];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

const V1: &str = "
CREATE TABLE IF NOT EXISTS work_buckets (
    gateway TEXT NOT NULL, run BIGINT NOT NULL, seq BIGINT NOT NULL, worker TEXT NOT NULL,
    bucket_start BIGINT NOT NULL, bucket_secs BIGINT NOT NULL, customer TEXT,
    shares BIGINT NOT NULL, work DOUBLE PRECISION NOT NULL, rejects BIGINT NOT NULL,
    PRIMARY KEY (gateway, run, seq, worker));
CREATE INDEX IF NOT EXISTS work_buckets_start ON work_buckets (bucket_start);
CREATE TABLE IF NOT EXISTS pool_acks (
    gateway TEXT NOT NULL, run BIGINT NOT NULL, seq BIGINT NOT NULL, pool TEXT NOT NULL,
    bucket_start BIGINT NOT NULL, accepted BIGINT NOT NULL, shares_sum BIGINT NOT NULL,
    refused BIGINT NOT NULL,
    PRIMARY KEY (gateway, run, seq, pool));
CREATE INDEX IF NOT EXISTS pool_acks_start ON pool_acks (bucket_start);
CREATE TABLE IF NOT EXISTS pool_refusals (
    gateway TEXT NOT NULL, run BIGINT NOT NULL, seq BIGINT NOT NULL, pool TEXT NOT NULL,
    reason TEXT NOT NULL, bucket_start BIGINT NOT NULL, count BIGINT NOT NULL,
    PRIMARY KEY (gateway, run, seq, pool, reason));
CREATE INDEX IF NOT EXISTS pool_refusals_start ON pool_refusals (bucket_start);
CREATE TABLE IF NOT EXISTS blocks (
    gateway TEXT NOT NULL, hash TEXT NOT NULL, height BIGINT NOT NULL, worker TEXT NOT NULL,
    found_at BIGINT NOT NULL,
    PRIMARY KEY (gateway, hash));
CREATE TABLE IF NOT EXISTS block_fates (
    gateway TEXT NOT NULL, hash TEXT NOT NULL, judge TEXT NOT NULL, fate TEXT NOT NULL,
    judged_at BIGINT NOT NULL,
    PRIMARY KEY (gateway, hash, judge));
CREATE TABLE IF NOT EXISTS chain_buckets (
    gateway TEXT NOT NULL, run BIGINT NOT NULL, seq BIGINT NOT NULL,
    bucket_start BIGINT NOT NULL, bucket_secs BIGINT NOT NULL, height BIGINT NOT NULL,
    network_difficulty DOUBLE PRECISION NOT NULL, subsidy_sat BIGINT NOT NULL,
    fees_sat BIGINT NOT NULL,
    PRIMARY KEY (gateway, run, seq));
CREATE INDEX IF NOT EXISTS chain_buckets_start ON chain_buckets (bucket_start);
";

/// The table of applied versions.
pub const SCHEMA_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS ledger_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
/// The last version applied.
pub const SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM ledger_schema";
/// Records a version as applied.
pub const SCHEMA_APPLIED: &str = "INSERT INTO ledger_schema (version, applied_at) VALUES ($1, $2)";

const WORK: &str = "INSERT INTO work_buckets (gateway, run, seq, worker, bucket_start, bucket_secs, customer, shares, work, rejects) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING";
const ACK: &str = "INSERT INTO pool_acks (gateway, run, seq, pool, bucket_start, accepted, shares_sum, refused) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";
const REFUSAL: &str = "INSERT INTO pool_refusals (gateway, run, seq, pool, reason, bucket_start, count) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
const BLOCK: &str = "INSERT INTO blocks (gateway, hash, height, worker, found_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
const FATE: &str = "INSERT INTO block_fates (gateway, hash, judge, fate, judged_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (gateway, hash, judge) DO UPDATE SET fate = excluded.fate, judged_at = excluded.judged_at";
const CHAIN: &str = "INSERT INTO chain_buckets (gateway, run, seq, bucket_start, bucket_secs, height, network_difficulty, subsidy_sat, fees_sat) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING";

/// The statements that write `batch`; run in one transaction.
pub fn write(batch: &Batch) -> Vec<Statement> {
    use Value::{Int, OptText, Real, Text};
    let k = &batch.key;
    let key = || vec![Text(k.gateway.clone()), Int(k.run), Int(k.seq)];
    let mut out = Vec::new();
    for w in &batch.work {
        let mut p = key();
        p.extend([
            Text(w.worker.clone()),
            Int(batch.bucket_start),
            Int(batch.bucket_secs),
            OptText(w.customer.clone()),
            Int(w.shares),
            Real(w.work),
            Int(w.rejects),
        ]);
        out.push((WORK, p));
    }
    for a in &batch.acks {
        let mut p = key();
        p.extend([
            Text(a.pool.clone()),
            Int(batch.bucket_start),
            Int(a.accepted),
            Int(a.shares_sum),
            Int(a.refused),
        ]);
        out.push((ACK, p));
    }
    for r in &batch.refusals {
        let mut p = key();
        p.extend([
            Text(r.pool.clone()),
            Text(r.reason.clone()),
            Int(batch.bucket_start),
            Int(r.count),
        ]);
        out.push((REFUSAL, p));
    }
    for b in &batch.blocks {
        let p = vec![
            Text(k.gateway.clone()),
            Text(b.hash.clone()),
            Int(b.height),
            Text(b.worker.clone()),
            Int(b.found_at),
        ];
        out.push((BLOCK, p));
    }
    for f in &batch.fates {
        let p = vec![
            Text(k.gateway.clone()),
            Text(f.hash.clone()),
            Text(f.judge.clone()),
            Text(f.fate.clone()),
            Int(f.at),
        ];
        out.push((FATE, p));
    }
    if let Some(c) = &batch.chain {
        let mut p = key();
        p.extend([
            Int(batch.bucket_start),
            Int(batch.bucket_secs),
            Int(c.height),
            Real(c.network_difficulty),
            Int(c.subsidy_sat),
            Int(c.fees_sat),
        ]);
        out.push((CHAIN, p));
    }
    out
}

/// The statements that delete everything from before `cutoff` (unix seconds).
pub fn purge(cutoff: i64) -> Vec<Statement> {
    [
        "DELETE FROM work_buckets WHERE bucket_start < $1",
        "DELETE FROM pool_acks WHERE bucket_start < $1",
        "DELETE FROM pool_refusals WHERE bucket_start < $1",
        "DELETE FROM chain_buckets WHERE bucket_start < $1",
        "DELETE FROM block_fates WHERE EXISTS (SELECT 1 FROM blocks b WHERE b.gateway = block_fates.gateway AND b.hash = block_fates.hash AND b.found_at < $1)",
        "DELETE FROM blocks WHERE found_at < $1",
    ]
    .into_iter()
    .map(|s| (s, vec![Value::Int(cutoff)]))
    .collect()
}

fn period(p: Period) -> Vec<Value> {
    vec![Value::Int(p.from), Value::Int(p.to)]
}

/// Work per gateway, bucket and worker (the samples of a bucket summed).
pub fn work(p: Period) -> Statement {
    ("SELECT gateway, bucket_start, worker, MAX(customer), CAST(SUM(shares) AS BIGINT), SUM(work), CAST(SUM(rejects) AS BIGINT) FROM work_buckets WHERE bucket_start >= $1 AND bucket_start < $2 GROUP BY gateway, bucket_start, worker ORDER BY bucket_start, gateway, worker", period(p))
}

/// Acknowledgements per gateway, bucket and pool.
pub fn acks(p: Period) -> Statement {
    ("SELECT gateway, bucket_start, pool, CAST(SUM(accepted) AS BIGINT), CAST(SUM(shares_sum) AS BIGINT), CAST(SUM(refused) AS BIGINT) FROM pool_acks WHERE bucket_start >= $1 AND bucket_start < $2 GROUP BY gateway, bucket_start, pool ORDER BY bucket_start, gateway, pool", period(p))
}

/// Refusals per gateway, bucket, pool and reason.
pub fn refusals(p: Period) -> Statement {
    ("SELECT gateway, bucket_start, pool, reason, CAST(SUM(count) AS BIGINT) FROM pool_refusals WHERE bucket_start >= $1 AND bucket_start < $2 GROUP BY gateway, bucket_start, pool, reason ORDER BY bucket_start, gateway, pool, reason", period(p))
}

/// The chain per gateway and bucket (the last sample of a bucket stands for it).
pub fn chain(p: Period) -> Statement {
    ("SELECT gateway, bucket_start, bucket_secs, height, network_difficulty, subsidy_sat, fees_sat FROM chain_buckets WHERE bucket_start >= $1 AND bucket_start < $2 ORDER BY bucket_start, gateway, run, seq", period(p))
}

/// Blocks found in the period, each with one row per verdict (or one without).
pub fn blocks(p: Period) -> Statement {
    ("SELECT b.gateway, b.hash, b.height, b.worker, b.found_at, f.judge, f.fate, f.judged_at FROM blocks b LEFT JOIN block_fates f ON f.gateway = b.gateway AND f.hash = b.hash WHERE b.found_at >= $1 AND b.found_at < $2 ORDER BY b.found_at, b.gateway, b.hash, f.judge", period(p))
}

/// A row as either database hands it over.
pub trait Cells {
    /// Column `i` as an integer.
    fn int(&self, i: usize) -> Result<i64, LedgerError>;
    /// Column `i` as a float.
    fn real(&self, i: usize) -> Result<f64, LedgerError>;
    /// Column `i` as text, maybe `NULL`.
    fn opt_text(&self, i: usize) -> Result<Option<String>, LedgerError>;
    /// Column `i` as text.
    fn text(&self, i: usize) -> Result<String, LedgerError> {
        self.opt_text(i)?
            .ok_or_else(|| LedgerError::Query(format!("column {i} is NULL")))
    }
}

/// Reads a row of [`work`].
pub fn read_work(c: &impl Cells) -> Result<WorkBucket, LedgerError> {
    Ok(WorkBucket {
        gateway: c.text(0)?,
        bucket_start: c.int(1)?,
        worker: c.text(2)?,
        customer: c.opt_text(3)?,
        shares: c.int(4)?,
        work: c.real(5)?,
        rejects: c.int(6)?,
    })
}

/// Reads a row of [`acks`].
pub fn read_ack(c: &impl Cells) -> Result<AckBucket, LedgerError> {
    Ok(AckBucket {
        gateway: c.text(0)?,
        bucket_start: c.int(1)?,
        pool: c.text(2)?,
        accepted: c.int(3)?,
        shares_sum: c.int(4)?,
        refused: c.int(5)?,
    })
}

/// Reads a row of [`refusals`].
pub fn read_refusal(c: &impl Cells) -> Result<RefusalBucket, LedgerError> {
    Ok(RefusalBucket {
        gateway: c.text(0)?,
        bucket_start: c.int(1)?,
        pool: c.text(2)?,
        reason: c.text(3)?,
        count: c.int(4)?,
    })
}

/// Reads a row of [`chain`].
pub fn read_chain(c: &impl Cells) -> Result<ChainBucket, LedgerError> {
    Ok(ChainBucket {
        gateway: c.text(0)?,
        bucket_start: c.int(1)?,
        bucket_secs: c.int(2)?,
        height: c.int(3)?,
        network_difficulty: c.real(4)?,
        subsidy_sat: c.int(5)?,
        fees_sat: c.int(6)?,
    })
}

/// Reads a row of [`blocks`]: the block, and its verdict if the row has one.
pub fn read_block(c: &impl Cells) -> Result<(crate::rows::Block, Option<Fate>), LedgerError> {
    let block = crate::rows::Block {
        gateway: c.text(0)?,
        hash: c.text(1)?,
        height: c.int(2)?,
        worker: c.text(3)?,
        found_at: c.int(4)?,
        fates: Vec::new(),
    };
    let fate = match c.opt_text(5)? {
        Some(judge) => Some(Fate {
            judge,
            fate: c.text(6)?,
            at: c.int(7)?,
        }),
        None => None,
    };
    Ok((block, fate))
}

/// Folds the rows of [`blocks`] into one block each, verdicts gathered.
pub fn gather_blocks(rows: Vec<(crate::rows::Block, Option<Fate>)>) -> Vec<crate::rows::Block> {
    let mut out: Vec<crate::rows::Block> = Vec::new();
    for (block, fate) in rows {
        let same = out
            .last()
            .is_some_and(|b| b.gateway == block.gateway && b.hash == block.hash);
        if !same {
            out.push(block);
        }
        if let (Some(f), Some(b)) = (fate, out.last_mut()) {
            b.fates.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{BatchKey, ChainRow, WorkRow};

    fn params_of(sql: &str) -> usize {
        (1..=20).filter(|n| sql.contains(&format!("${n}"))).count()
    }

    #[test]
    fn every_statement_gets_as_many_parameters_as_it_names() {
        let mut b = Batch::new(
            BatchKey {
                gateway: "g".into(),
                run: 1,
                seq: 2,
            },
            60,
            60,
        );
        b.work.push(WorkRow {
            worker: "w".into(),
            customer: None,
            shares: 1,
            work: 1.5,
            rejects: 0,
        });
        b.chain = Some(ChainRow {
            height: 1,
            network_difficulty: 1.0,
            subsidy_sat: 1,
            fees_sat: 0,
        });
        b.acks.push(crate::rows::AckRow {
            pool: "p".into(),
            accepted: 1,
            shares_sum: 1,
            refused: 0,
        });
        let statements = write(&b);
        assert_eq!(statements.len(), 3);
        for (sql, p) in statements.iter().chain(&purge(5)) {
            assert_eq!(params_of(sql), p.len(), "{sql}");
        }
        for (sql, p) in [work(Period::ALL), acks(Period::ALL), chain(Period::ALL)] {
            assert_eq!(params_of(sql), p.len(), "{sql}");
        }
    }

    #[test]
    fn verdicts_gather_under_their_block() {
        let block = |h: &str| crate::rows::Block {
            gateway: "g".into(),
            hash: h.into(),
            height: 1,
            worker: "w".into(),
            found_at: 1,
            fates: Vec::new(),
        };
        let fate = |j: &str| {
            Some(Fate {
                judge: j.into(),
                fate: "accepted".into(),
                at: 2,
            })
        };
        let rows = vec![
            (block("a"), fate("node")),
            (block("a"), fate("pool")),
            (block("b"), None),
        ];
        let blocks = gather_blocks(rows);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].fates.len(), 2);
        assert!(blocks[1].fates.is_empty());
    }
}
