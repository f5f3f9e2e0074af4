//! The small HTTP server both daemons run for operators: JSON under `/api/v1/`, Prometheus
//! `/metrics`, and (jd-proxy) the dashboard. Loopback by default.
//!
//! It never touches the share path: handlers read snapshots (atomics, short locks that no
//! session takes per share), and the heavy renders (`/metrics`, per-ASIC lists) run on the
//! blocking pool, at most [`HEAVY_AT_ONCE`] at a time, so a scrape storm cannot take runtime
//! workers from the miners.
//!
//! A listen address that is taken (an older process still holds it during an upgrade, or
//! another daemon) is logged and tried again every [`REBIND_EVERY`]: mining never waits for the
//! operator's window on it.

pub mod encode;
pub mod process;
pub mod provider;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{bad, ConfigError};

/// Heavy renders running at once; more wait their turn.
pub const HEAVY_AT_ONCE: usize = 2;
/// How often a taken listen address is tried again.
pub const REBIND_EVERY: Duration = Duration::from_secs(5);

/// Parses a `listen` key: an address, or `""` to turn the server off; `default` when unset.
///
/// # Errors
/// An address that does not parse, naming `key`.
pub fn parse_listen(
    value: Option<&str>,
    default: &str,
    key: &'static str,
) -> Result<Option<SocketAddr>, ConfigError> {
    let v = value.unwrap_or(default).trim();
    if v.is_empty() {
        return Ok(None);
    }
    SocketAddr::from_str(v)
        .map(Some)
        .map_err(|e| bad(key, format!("{v:?}: {e} (\"\" turns the HTTP server off)")))
}

/// Serves `router` on `listen` until shutdown; returns the address bound, or `None` when the
/// address is taken (then it is tried again in the background every [`REBIND_EVERY`]).
/// `key` names the setting in logs.
pub async fn start(
    listen: SocketAddr,
    router: Router,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    key: &'static str,
) -> Option<SocketAddr> {
    match TcpListener::bind(listen).await {
        Ok(listener) => {
            let local = listener.local_addr().ok();
            info!(listen = ?local, "HTTP server for operators (API, /metrics)");
            tracker.spawn(serve(listener, router, shutdown.clone()));
            local
        }
        Err(e) => {
            warn!(%listen, error = %e, "cannot listen for HTTP ({key}); trying again every {}s, mining goes on", REBIND_EVERY.as_secs());
            tracker.spawn(rebind(listen, router, shutdown.clone(), key));
            None
        }
    }
}

async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let stop = shutdown.clone();
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        warn!(error = %e, "HTTP server stopped");
    }
}

async fn rebind(listen: SocketAddr, router: Router, shutdown: CancellationToken, key: &str) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(REBIND_EVERY) => {}
        }
        if let Ok(listener) = TcpListener::bind(listen).await {
            info!(%listen, "HTTP server for operators listening ({key} is free now)");
            serve(listener, router, shutdown).await;
            return;
        }
    }
}

/// Runs `render` on the blocking pool, at most [`HEAVY_AT_ONCE`] at a time.
#[derive(Debug, Clone)]
pub struct Heavy {
    slots: Arc<Semaphore>,
}

impl Default for Heavy {
    fn default() -> Self {
        Heavy {
            slots: Arc::new(Semaphore::new(HEAVY_AT_ONCE)),
        }
    }
}

impl Heavy {
    /// `render`'s result, or a 503 when the runtime is shutting down.
    pub async fn run<T, F>(&self, render: F) -> Result<T, Response>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let unavailable = || (axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| unavailable().into_response())?;
        tokio::task::spawn_blocking(render)
            .await
            .map_err(|_| unavailable().into_response())
    }
}

/// A `/metrics` body with the Prometheus text format's content type.
pub fn metrics_response(body: String) -> Response {
    (
        [(
            CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parses_turns_off_and_names_its_key() {
        let addr = parse_listen(None, "127.0.0.1:9101", "http.listen").unwrap();
        assert_eq!(addr, Some("127.0.0.1:9101".parse().unwrap()));
        assert_eq!(parse_listen(Some(""), "127.0.0.1:9101", "k").unwrap(), None);
        let err = parse_listen(Some("nope"), "", "http.listen").unwrap_err();
        assert!(err.to_string().contains("http.listen"), "{err}");
    }
}
