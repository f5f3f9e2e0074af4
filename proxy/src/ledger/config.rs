//! `[ledger]` and `[[customer]]`: as written in the file, and checked into [`LedgerConfig`] and
//! a [`CustomerMap`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger::LedgerUrl;
use ledger_math::customers::{CustomerMap, CustomerMapError, CustomerRule};
use serde::Deserialize;
use template_provider::config::{bad, ConfigError, ConfigErrors};

/// `[ledger]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// Whether shares are recorded at all (default true).
    pub enabled: Option<bool>,
    /// `sqlite://<file>` or `postgres://user:password@host:port/database`.
    pub url: Option<String>,
    /// This gateway's name in a shared ledger (default: the host name).
    pub gateway: Option<String>,
    /// Seconds of work per row (default 60; divides a day).
    pub bucket_secs: Option<u64>,
    /// Rows older than this many days are deleted; 0 keeps them forever (default 400).
    pub retention_days: Option<u64>,
    /// Where rows wait while the database is down (default: beside the SQLite file, or beside
    /// `solo.blocks_dir` for PostgreSQL).
    pub spool_file: Option<PathBuf>,
    /// The customer of workers no `[[customer]]` names (default "farm").
    pub default_customer: Option<String>,
}

/// One `[[customer]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomer {
    /// The customer's name.
    pub name: Option<String>,
    /// Worker-name patterns (`alice.*`, `bob-s19-?`, exact names); the first matching rule in
    /// file order wins.
    #[serde(default)]
    pub workers: Vec<String>,
}

/// The ledger's settings, checked.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Off: nothing is sampled or written.
    pub enabled: bool,
    /// Where the ledger lives.
    pub url: LedgerUrl,
    /// This gateway's name.
    pub gateway: String,
    /// The sample period.
    pub bucket: Duration,
    /// How long rows are kept; `None`: forever.
    pub retention: Option<Duration>,
    /// Where rows wait while the database is down.
    pub spool_file: PathBuf,
}

/// Seconds in a day: buckets divide it, so none straddles an hour or a day.
const DAY_SECS: u64 = 86_400;
const DEFAULT_RETENTION_DAYS: u64 = 400;

impl LedgerConfig {
    /// Checks `[ledger]`; defaults are placed beside `blocks_dir`.
    ///
    /// # Errors
    /// Every bad key, named.
    pub fn from_raw(raw: &RawLedger, blocks_dir: &Path) -> Result<LedgerConfig, ConfigErrors> {
        let mut e = ConfigErrors::default();
        let data_dir = blocks_dir.parent().unwrap_or(Path::new("")).to_path_buf();
        let url = match &raw.url {
            Some(u) => e.take(u.parse::<LedgerUrl>().map_err(|x| bad("ledger.url", x))),
            None => Some(LedgerUrl::Sqlite(data_dir.join("ledger.sqlite3"))),
        };
        let gateway = e.take(gateway(raw.gateway.clone()));
        let bucket_secs = raw.bucket_secs.unwrap_or(60);
        if bucket_secs == 0 || !DAY_SECS.is_multiple_of(bucket_secs) {
            e.push(bad(
                "ledger.bucket_secs",
                format!("{bucket_secs}: must divide a day (86400 s), e.g. 10, 60, 300 or 3600"),
            ));
        }
        let days = raw.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
        if days > 100 * 366 {
            e.push(bad(
                "ledger.retention_days",
                format!("{days}: at most a century; 0 keeps rows forever"),
            ));
        }
        let (Some(url), Some(gateway)) = (url, gateway) else {
            return Err(e);
        };
        if !e.is_empty() {
            return Err(e);
        }
        let spool_file = raw.spool_file.clone().unwrap_or_else(|| {
            let dir = match &url {
                LedgerUrl::Sqlite(file) => file.parent().unwrap_or(Path::new("")).to_path_buf(),
                LedgerUrl::Postgres(_) => data_dir.clone(),
            };
            dir.join("ledger-spool.jsonl")
        });
        Ok(LedgerConfig {
            enabled: raw.enabled.unwrap_or(true),
            url,
            gateway,
            bucket: Duration::from_secs(bucket_secs),
            retention: (days > 0).then(|| Duration::from_secs(days * DAY_SECS)),
            spool_file,
        })
    }
}

/// `[ledger]` and `[[customer]]` of the whole file.
///
/// # Errors
/// Every bad key, named.
pub fn from_raw(
    raw: &crate::config::raw::RawConfig,
) -> Result<(LedgerConfig, CustomerMap), ConfigErrors> {
    let blocks_dir = raw
        .solo
        .blocks_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("blocks"));
    let mut e = ConfigErrors::default();
    let ledger = e.take_all(LedgerConfig::from_raw(&raw.ledger, &blocks_dir));
    let customers = e.take(customers(
        &raw.customer,
        raw.ledger.default_customer.as_deref(),
    ));
    match (ledger, customers) {
        (Some(l), Some(c)) => Ok((l, c)),
        _ => Err(e),
    }
}

/// `ledger.gateway`: given, or the host's name.
fn gateway(given: Option<String>) -> Result<String, ConfigError> {
    let name = given.unwrap_or_else(host_name);
    if name.is_empty()
        || name.len() > 64
        || name.trim() != name
        || name.chars().any(char::is_control)
    {
        return Err(bad(
            "ledger.gateway",
            format!("{name:?}: 1 to 64 characters, no surrounding spaces or control characters"),
        ));
    }
    Ok(name)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "jd-proxy".to_owned())
}

/// `[[customer]]` and `ledger.default_customer`: the rules in file order, each customer's
/// patterns in the order given.
///
/// # Errors
/// The first bad entry, named by its place and name.
pub fn customers(raw: &[RawCustomer], default: Option<&str>) -> Result<CustomerMap, ConfigError> {
    let mut rules = Vec::new();
    // For each rule, the entry it came from, to name it in errors.
    let mut entry_of = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let Some(name) = &c.name else {
            return Err(bad("customer", format!("entry {} has no name", i + 1)));
        };
        if c.workers.is_empty() {
            let problem = format!(
                "entry {} ({name:?}) has no workers: give patterns such as [\"{name}.*\"]",
                i + 1
            );
            return Err(bad("customer", problem));
        }
        for w in &c.workers {
            rules.push(CustomerRule {
                pattern: w.clone(),
                customer: name.clone(),
            });
            entry_of.push((i + 1, name.clone()));
        }
    }
    CustomerMap::new(&rules, default.unwrap_or("farm")).map_err(|err| {
        let rule = match &err {
            CustomerMapError::Pattern { rule, .. }
            | CustomerMapError::Customer { rule, .. }
            | CustomerMapError::Hidden { rule, .. } => Some(*rule),
            _ => None,
        };
        match rule.and_then(|r| entry_of.get(r - 1)) {
            Some((entry, name)) => bad("customer", format!("entry {entry} ({name:?}): {err}")),
            None => bad("ledger.default_customer", err),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawLedger {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_sit_beside_the_blocks_dir() {
        let c =
            LedgerConfig::from_raw(&RawLedger::default(), Path::new("/var/lib/jd/blocks")).unwrap();
        assert!(c.enabled);
        assert_eq!(
            c.url,
            LedgerUrl::Sqlite("/var/lib/jd/ledger.sqlite3".into())
        );
        assert_eq!(c.spool_file, Path::new("/var/lib/jd/ledger-spool.jsonl"));
        assert_eq!(c.bucket, Duration::from_secs(60));
        assert_eq!(c.retention, Some(Duration::from_secs(400 * DAY_SECS)));
        assert!(!c.gateway.is_empty());
        let pg = raw("url = \"postgres://u:p@db:5432/ledger\"\nretention_days = 0\n");
        let c = LedgerConfig::from_raw(&pg, Path::new("/d/blocks")).unwrap();
        assert_eq!(c.spool_file, Path::new("/d/ledger-spool.jsonl"));
        assert_eq!(c.retention, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("url = \"mysql://x\"", "ledger.url"),
            ("url = \"postgres://u@h:notaport/d\"", "ledger.url"),
            ("bucket_secs = 7", "ledger.bucket_secs"),
            ("bucket_secs = 0", "ledger.bucket_secs"),
            ("retention_days = 99999", "ledger.retention_days"),
            ("gateway = \"\"", "ledger.gateway"),
            ("gateway = \" a\"", "ledger.gateway"),
        ] {
            let err = LedgerConfig::from_raw(&raw(text), Path::new("b"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = toml::from_str::<RawLedger>("bucket = 60")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bucket"), "unknown keys are refused: {err}");
    }

    #[test]
    fn customers_map_workers_in_file_order_and_bad_entries_are_named() {
        let list = |text: &str| -> Vec<RawCustomer> {
            #[derive(Deserialize)]
            struct F {
                customer: Vec<RawCustomer>,
            }
            toml::from_str::<F>(text).unwrap().customer
        };
        let map = customers(
            &list("[[customer]]\nname = \"alice\"\nworkers = [\"alice.*\", \"rig7\"]\n[[customer]]\nname = \"bob\"\nworkers = [\"bob-?\"]\n"),
            None,
        )
        .unwrap();
        assert_eq!(map.customer_of("alice.s19").as_str(), "alice");
        assert_eq!(map.customer_of("rig7").as_str(), "alice");
        assert_eq!(map.customer_of("bob-1").as_str(), "bob");
        assert_eq!(map.customer_of("carol").as_str(), "farm");
        for (text, want) in [
            ("[[customer]]\nworkers = [\"a\"]\n", "entry 1 has no name"),
            ("[[customer]]\nname = \"a\"\n", "entry 1 (\"a\") has no workers"),
            ("[[customer]]\nname = \"a\"\nworkers = [\"x*\"]\n[[customer]]\nname = \"b\"\nworkers = [\"x[1]\"]\n", "entry 2 (\"b\")"),
            ("[[customer]]\nname = \"a\"\nworkers = [\"*\"]\n[[customer]]\nname = \"b\"\nworkers = [\"bob\"]\n", "entry 2 (\"b\")"),
        ] {
            let err = customers(&list(text), None).unwrap_err().to_string();
            assert!(err.contains("customer") && err.contains(want), "{text}: {err}");
        }
        let err = customers(&[], Some(" x")).unwrap_err().to_string();
        assert!(err.contains("ledger.default_customer"), "{err}");
    }
}
