//! The SQLite backend on a real file; PostgreSQL is exercised by the integration tests, which
//! start a server.

use super::*;

fn key(gateway: &str, seq: i64) -> BatchKey {
    BatchKey {
        gateway: gateway.into(),
        run: 7,
        seq,
    }
}

fn batch(gateway: &str, seq: i64, bucket_start: i64, shares: i64) -> Batch {
    let mut b = Batch::new(key(gateway, seq), bucket_start, 60);
    b.work.push(WorkRow {
        worker: "alice.1".into(),
        customer: Some("alice".into()),
        shares,
        work: shares as f64 * 0.5,
        rejects: 1,
    });
    b.acks.push(AckRow {
        pool: "pool".into(),
        accepted: shares,
        shares_sum: shares * 3,
        refused: 1,
    });
    b.refusals.push(RefusalRow {
        pool: "pool".into(),
        reason: "stale-share".into(),
        count: 1,
    });
    b.chain = Some(ChainRow {
        height: 100,
        network_difficulty: 2.5,
        subsidy_sat: 312_500_000,
        fees_sat: 1_000,
    });
    b
}

async fn open(dir: &tempfile::TempDir) -> Ledger {
    let url = LedgerUrl::Sqlite(dir.path().join("sub/ledger.sqlite3"));
    Ledger::open(&url).await.unwrap()
}

#[tokio::test]
async fn a_batch_written_twice_counts_once_and_samples_of_a_bucket_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir).await;
    let b1 = batch("g1", 1, 60, 10);
    ledger.write(&b1).await.unwrap();
    ledger.write(&b1).await.unwrap();
    // A second sample in the same bucket (a restart, or the last sample at shutdown).
    ledger.write(&batch("g1", 2, 60, 5)).await.unwrap();
    ledger.write(&batch("g2", 1, 60, 4)).await.unwrap();
    let work = ledger.work(Period::ALL).await.unwrap();
    assert_eq!(work.len(), 2, "{work:?}");
    assert_eq!((work[0].gateway.as_str(), work[0].shares), ("g1", 15));
    assert_eq!(work[0].work, 7.5);
    assert_eq!(work[0].rejects, 2);
    assert_eq!(work[0].customer.as_deref(), Some("alice"));
    assert_eq!((work[1].gateway.as_str(), work[1].shares), ("g2", 4));
    let acks = ledger.acks(Period::ALL).await.unwrap();
    assert_eq!(
        (acks[0].accepted, acks[0].shares_sum, acks[0].refused),
        (15, 45, 2)
    );
    let refusals = ledger.refusals(Period::ALL).await.unwrap();
    assert_eq!(refusals[0].count, 2);
    assert_eq!(ledger.chain(Period::ALL).await.unwrap().len(), 3);
}

#[tokio::test]
async fn periods_are_half_open_and_retention_deletes_what_is_older() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir).await;
    for (seq, start) in [(1, 0), (2, 60), (3, 120)] {
        ledger.write(&batch("g", seq, start, 1)).await.unwrap();
    }
    let mid = ledger.work(Period { from: 60, to: 120 }).await.unwrap();
    assert_eq!(mid.len(), 1);
    assert_eq!(mid[0].bucket_start, 60);
    let gone = ledger.purge_before(120).await.unwrap();
    assert!(
        gone >= 6,
        "work, acks, refusals and chain of two buckets: {gone}"
    );
    let left = ledger.work(Period::ALL).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].bucket_start, 120);
}

#[tokio::test]
async fn blocks_keep_their_latest_verdict_per_judge() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir).await;
    let mut b = Batch::new(key("g", 1), 60, 60);
    b.blocks.push(BlockRow {
        hash: "00ab".into(),
        height: 5,
        worker: "w".into(),
        found_at: 61,
    });
    b.fates.push(FateRow {
        hash: "00ab".into(),
        judge: "node".into(),
        fate: "inconclusive".into(),
        at: 62,
    });
    ledger.write(&b).await.unwrap();
    let mut later = Batch::new(key("g", 2), 120, 60);
    later.fates.push(FateRow {
        hash: "00ab".into(),
        judge: "node".into(),
        fate: "accepted".into(),
        at: 130,
    });
    ledger.write(&later).await.unwrap();
    let blocks = ledger.blocks(Period::ALL).await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].fates.len(), 1);
    assert_eq!(blocks[0].fates[0].fate, "accepted");
    ledger.purge_before(100).await.unwrap();
    assert!(ledger.blocks(Period::ALL).await.unwrap().is_empty());
}

#[tokio::test]
async fn migrations_are_recorded_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite3");
    let url = LedgerUrl::Sqlite(path.clone());
    drop(Ledger::open(&url).await.unwrap());
    // Reopening applies nothing twice.
    drop(Ledger::open(&url).await.unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let versions: i64 = conn
        .query_row("SELECT COUNT(*) FROM ledger_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(versions, sql::latest_version());
    conn.execute(
        "INSERT INTO ledger_schema (version, applied_at) VALUES (999, 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let err = Ledger::open(&url).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::TooNew { have: 999, .. }),
        "{err}"
    );
}

#[test]
fn urls_name_their_backend_and_hide_passwords() {
    let u: LedgerUrl = "sqlite:///var/lib/jd/ledger.sqlite3".parse().unwrap();
    assert_eq!(u, LedgerUrl::Sqlite("/var/lib/jd/ledger.sqlite3".into()));
    let p: LedgerUrl = "postgres://farm:secret@10.0.0.5:5432/ledger"
        .parse()
        .unwrap();
    assert!(matches!(p, LedgerUrl::Postgres(_)));
    assert_eq!(p.to_string(), "postgres://farm:***@10.0.0.5:5432/ledger");
    for bad in ["mysql://x", "sqlite://", "ledger.db"] {
        assert!(bad.parse::<LedgerUrl>().is_err(), "{bad}");
    }
    let err = "mysql://u:pw@h/d"
        .parse::<LedgerUrl>()
        .unwrap_err()
        .to_string();
    assert!(!err.contains("pw"), "{err}");
}
