//! The embedded backend: one SQLite file, written from a blocking thread (rusqlite is
//! synchronous; the gateway's runtime never waits on a disk write).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use crate::sql::{self, Cells, Statement, Value};
use crate::LedgerError;

/// A ledger file.
#[derive(Debug, Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::OptText(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::OptText(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

impl Cells for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<i64, LedgerError> {
        self.get(i).map_err(query)
    }
    fn real(&self, i: usize) -> Result<f64, LedgerError> {
        self.get(i).map_err(query)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, LedgerError> {
        self.get(i).map_err(query)
    }
}

#[allow(clippy::needless_pass_by_value)] // a `map_err` argument
fn query(e: rusqlite::Error) -> LedgerError {
    LedgerError::Query(e.to_string())
}

impl Sqlite {
    /// Opens (creating it and its directory if need be) the file at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Sqlite, LedgerError> {
        let path = path.to_path_buf();
        let p = path.clone();
        let conn = blocking(move || {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| LedgerError::Open(format!("{}: {e}", dir.display())))?;
            }
            let mut conn = Connection::open(&p)
                .map_err(|e| LedgerError::Open(format!("{}: {e}", p.display())))?;
            // WAL: the CLI and the API read while the gateway writes; NORMAL is durable
            // against a crash of the process, and the spool covers the rest.
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
            )
            .map_err(|e| LedgerError::Open(format!("{}: {e}", p.display())))?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `statements` in one transaction; returns the rows they changed.
    pub async fn execute(&self, statements: Vec<Statement>) -> Result<u64, LedgerError> {
        let conn = self.conn.clone();
        blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let tx = conn.transaction().map_err(query)?;
            let mut changed = 0;
            for (text, params) in &statements {
                let mut stmt = tx.prepare_cached(text).map_err(query)?;
                changed += stmt
                    .execute(rusqlite::params_from_iter(params.iter()))
                    .map_err(query)? as u64;
            }
            tx.commit().map_err(query)?;
            Ok(changed)
        })
        .await
    }

    /// Runs a query; `read` turns each row into a `T`.
    pub async fn select<T: Send + 'static>(
        &self,
        (text, params): Statement,
        read: fn(&rusqlite::Row<'_>) -> Result<T, LedgerError>,
    ) -> Result<Vec<T>, LedgerError> {
        let conn = self.conn.clone();
        blocking(move || {
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let mut stmt = conn.prepare_cached(text).map_err(query)?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params.iter()))
                .map_err(query)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(query)? {
                out.push(read(row)?);
            }
            Ok(out)
        })
        .await
    }
}

/// Applies the migrations this file lacks, in one immediate transaction (a second gateway
/// opening the same file waits for the first).
fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(migration)?;
    tx.execute(sql::SCHEMA_TABLE, []).map_err(migration)?;
    let have: i64 = tx
        .query_row(sql::SCHEMA_VERSION, [], |r| r.get(0))
        .map_err(migration)?;
    crate::check_version(have)?;
    for (version, text) in sql::MIGRATIONS.iter().filter(|m| m.0 > have) {
        tx.execute_batch(text).map_err(migration)?;
        tx.execute(sql::SCHEMA_APPLIED, [*version, crate::unix_now()])
            .map_err(migration)?;
    }
    tx.commit().map_err(migration)
}

#[allow(clippy::needless_pass_by_value)] // a `map_err` argument
fn migration(e: rusqlite::Error) -> LedgerError {
    LedgerError::Migration(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LedgerError::Query(format!("the database thread failed: {e}")))?
}
