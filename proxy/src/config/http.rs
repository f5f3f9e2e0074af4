//! `[http]`: the operators' HTTP server (API, `/metrics`, dashboard), checked.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::RawHttp;
use super::{bad, ConfigErrors};

/// Where the HTTP server listens by default: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9100";
/// Workers with series of their own in `/metrics` by default.
pub const DEFAULT_MAX_METRIC_WORKERS: usize = 1_000;

/// `[http]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where it listens; `None`: no server.
    pub listen: Option<SocketAddr>,
    /// Workers with series of their own in `/metrics`; the rest share `(other workers)`.
    pub max_metric_workers: usize,
    /// How often work is turned into hashrates (what the API and `/metrics` show).
    pub hashrate_sample: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: DEFAULT_LISTEN.parse().ok(),
            max_metric_workers: DEFAULT_MAX_METRIC_WORKERS,
            hashrate_sample: crate::figures::SAMPLE_EVERY,
        }
    }
}

impl HttpConfig {
    /// Checks `[http]`.
    ///
    /// # Errors
    /// Every bad key, named.
    pub fn from_raw(raw: &RawHttp) -> Result<HttpConfig, ConfigErrors> {
        let mut e = ConfigErrors::default();
        let listen = e.take(template_provider::http::parse_listen(
            raw.listen.as_deref(),
            DEFAULT_LISTEN,
            "http.listen",
        ));
        let max_metric_workers = raw.max_metric_workers.unwrap_or(DEFAULT_MAX_METRIC_WORKERS);
        if max_metric_workers > 100_000 {
            e.push(bad(
                "http.max_metric_workers",
                "at most 100000: each worker is about ten series in every scrape",
            ));
        }
        let sample = raw.hashrate_sample_secs.unwrap_or(10.0);
        if !(sample.is_finite() && (0.1..=3600.0).contains(&sample)) {
            e.push(bad(
                "http.hashrate_sample_secs",
                format!("{sample} is not within 0.1..=3600 seconds"),
            ));
        }
        let Some(listen) = listen else {
            return Err(e);
        };
        if !e.is_empty() {
            return Err(e);
        }
        Ok(HttpConfig {
            listen,
            max_metric_workers,
            hashrate_sample: Duration::from_secs_f64(sample),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bounds_and_keys() {
        let c = HttpConfig::from_raw(&RawHttp::default()).unwrap();
        assert_eq!(c, HttpConfig::default());
        assert_eq!(c.listen.unwrap().to_string(), DEFAULT_LISTEN);
        let off = RawHttp {
            listen: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(HttpConfig::from_raw(&off).unwrap().listen, None);
        let bad = RawHttp {
            listen: Some("9100".into()),
            max_metric_workers: Some(1_000_000),
            hashrate_sample_secs: Some(0.0),
        };
        let err = HttpConfig::from_raw(&bad).unwrap_err().to_string();
        for key in [
            "http.listen",
            "http.max_metric_workers",
            "http.hashrate_sample_secs",
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }
}
