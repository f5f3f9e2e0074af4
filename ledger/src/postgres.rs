//! The shared backend: one PostgreSQL database that several gateways write. One connection
//! per gateway; a lost connection makes the ledger [`closed`](Postgres::is_closed) and the
//! caller opens a new one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls};

use crate::sql::{self, Cells, Statement, Value};
use crate::LedgerError;

/// An arbitrary constant: the advisory lock that serialises migrations between gateways.
const MIGRATION_LOCK: i64 = 0x6a64_6c65_6467;
/// How long a connection attempt may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the ledger database.
#[derive(Debug, Clone)]
pub struct Postgres {
    client: Arc<Mutex<Client>>,
}

impl Cells for tokio_postgres::Row {
    fn int(&self, i: usize) -> Result<i64, LedgerError> {
        self.try_get(i).map_err(query)
    }
    fn real(&self, i: usize) -> Result<f64, LedgerError> {
        self.try_get(i).map_err(query)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, LedgerError> {
        self.try_get(i).map_err(query)
    }
}

#[allow(clippy::needless_pass_by_value)] // a `map_err` argument
fn query(e: tokio_postgres::Error) -> LedgerError {
    if e.is_closed() {
        LedgerError::Unavailable(e.to_string())
    } else {
        LedgerError::Query(e.to_string())
    }
}

fn boxed(params: Vec<Value>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .into_iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                Value::Int(i) => Box::new(i),
                Value::Real(f) => Box::new(f),
                Value::Text(s) => Box::new(s),
                Value::OptText(s) => Box::new(s),
            }
        })
        .collect()
}

fn refs(b: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    b.iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl Postgres {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and migrates the
    /// database.
    pub async fn open(url: &str) -> Result<Postgres, LedgerError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| LedgerError::Open(format!("{}: {e}", redact(url))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let (mut client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| LedgerError::Unavailable(format!("{}: {e}", redact(url))))?;
        // The connection runs on its own; it ends when the server goes or the client drops.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "ledger database connection ended");
            }
        });
        migrate(&mut client).await?;
        Ok(Postgres {
            client: Arc::new(Mutex::new(client)),
        })
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.try_lock().is_ok_and(|c| c.is_closed())
    }

    /// Runs `statements` in one transaction; returns the rows they changed.
    pub async fn execute(&self, statements: Vec<Statement>) -> Result<u64, LedgerError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(query)?;
        let mut changed = 0;
        // A batch repeats a handful of statements: each is prepared once.
        let mut prepared = std::collections::HashMap::new();
        for (text, params) in statements {
            let stmt = match prepared.get(text) {
                Some(s) => s,
                None => {
                    let s = tx.prepare(text).await.map_err(query)?;
                    prepared.entry(text).or_insert(s)
                }
            };
            let params = boxed(params);
            changed += tx.execute(stmt, &refs(&params)).await.map_err(query)?;
        }
        tx.commit().await.map_err(query)?;
        Ok(changed)
    }

    /// Runs a query; `read` turns each row into a `T`.
    pub async fn select<T>(
        &self,
        (text, params): Statement,
        read: fn(&tokio_postgres::Row) -> Result<T, LedgerError>,
    ) -> Result<Vec<T>, LedgerError> {
        let client = self.client.lock().await;
        let params = boxed(params);
        let rows = client.query(text, &refs(&params)).await.map_err(query)?;
        rows.iter().map(read).collect()
    }
}

/// Applies the migrations the database lacks, under an advisory lock so two gateways starting
/// together do not both apply them.
async fn migrate(client: &mut Client) -> Result<(), LedgerError> {
    let tx = client.transaction().await.map_err(migration)?;
    // `IF NOT EXISTS` would otherwise log a NOTICE for every table at every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(migration)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(migration)?;
    tx.batch_execute(sql::SCHEMA_TABLE)
        .await
        .map_err(migration)?;
    let have: i64 = tx
        .query_one(sql::SCHEMA_VERSION, &[])
        .await
        .map_err(migration)?
        .try_get(0)
        .map_err(migration)?;
    crate::check_version(have)?;
    for (version, text) in sql::MIGRATIONS.iter().filter(|m| m.0 > have) {
        tx.batch_execute(text).await.map_err(migration)?;
        tx.execute(sql::SCHEMA_APPLIED, &[version, &crate::unix_now()])
            .await
            .map_err(migration)?;
    }
    tx.commit().await.map_err(migration)
}

#[allow(clippy::needless_pass_by_value)] // a `map_err` argument
fn migration(e: tokio_postgres::Error) -> LedgerError {
    if e.is_closed() {
        LedgerError::Unavailable(e.to_string())
    } else {
        LedgerError::Migration(e.to_string())
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
