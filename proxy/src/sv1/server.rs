//! The accept loop: limits connections and hands each miner to its own task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::conn::Connection;
use super::session::{self, Session};
use super::Shared;
use crate::job::Job;

/// Accepts miners until shutdown.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    jobs: watch::Receiver<Arc<Job>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(shared.sv1.max_connections));
    let mut backoff = Duration::from_millis(10);
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.stats.connection_refused();
            if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                warn!(%peer, max = shared.sv1.max_connections, "connection limit reached; refusing new miners");
                last_full_warning = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        debug!(%peer, "connection accepted");
        shared.stats.connection_opened();
        let conn = Connection::new(stream, shared.sv1.max_line_bytes);
        let mut jobs = jobs.clone();
        let current = jobs.borrow_and_update().clone();
        let session = Session::new(peer, shared.clone(), current, Instant::now());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            session::serve(conn, session, jobs, shutdown).await;
            drop(permit);
        });
    }
}
