//! The accept loop: who may connect, how many, and a task for each miner.
//!
//! Connections are refused before they cost anything: outside the allowed networks, past the
//! per-address cap, or past `max_connections` (which start-up keeps below the process's file
//! limit, so miners never take the descriptors blocks need). Each kind of refusal is logged
//! once per interval with a count, never once per connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::admission::{Admission, Refusal};
use super::conn::Connection;
use super::session::{self, Session};
use super::Shared;
use crate::job::Job;

/// Refusals are summed and logged at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Descriptors kept for everything but miners: nodes, pools, the journal and its reserve, the
/// API, the handover socket, the runtime's own.
pub const FD_HEADROOM: u64 = 256;

/// How many miners fit under a file limit of `limit` descriptors: `wanted`, or fewer (with the
/// reason to warn about).
///
/// # Errors
/// A limit too low to serve any miner after the headroom.
pub fn connections_within(limit: u64, wanted: usize) -> Result<(usize, Option<String>), String> {
    let room = limit.saturating_sub(FD_HEADROOM);
    if room < 16 {
        return Err(format!(
            "the process may open only {limit} files; jd-proxy keeps {FD_HEADROOM} for nodes, pools and blocks and needs room for miners besides (raise LimitNOFILE / ulimit -n)"
        ));
    }
    let wanted_u64 = u64::try_from(wanted).unwrap_or(u64::MAX);
    if wanted_u64 <= room {
        return Ok((wanted, None));
    }
    let fit = usize::try_from(room).unwrap_or(usize::MAX);
    Ok((
        fit,
        Some(format!(
            "stratum.max_connections = {wanted} does not fit the process's file limit of {limit} (less {FD_HEADROOM} kept for nodes, pools and blocks): serving at most {fit} miners; raise LimitNOFILE / ulimit -n to serve more"
        )),
    ))
}

/// Refusals since the last log line, by reason.
#[derive(Debug, Default)]
struct Refusals {
    counts: HashMap<&'static str, u64>,
    last_log: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, reason: &'static str) {
        *self.counts.entry(reason).or_default() += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            for (reason, n) in self.counts.drain() {
                warn!(refused = n, %reason, "connections refused");
            }
            self.last_log = Some(Instant::now());
        }
    }
}

/// Accepts miners until `stop` (the listener is handed over, or the proxy stops).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    jobs: watch::Receiver<Arc<Job>>,
    tracker: TaskTracker,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(shared.sv1.max_connections));
    let mut backoff = Duration::from_millis(10);
    let mut refusals = Refusals::default();
    loop {
        if !shared.fds.ready_to_accept() {
            // A block needs the descriptors a connection would take: it waits in the queue.
            refusals.count("waiting: file descriptors kept for a block");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                refusals.count("accept failed (out of file descriptors?)");
                debug!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let admitted = match admission.admit(peer.ip()) {
            Ok(a) => a,
            Err(refusal) => {
                shared.stats.connection_refused();
                refusals.count(refusal.as_str());
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.stats.connection_refused();
            refusals.count(Refusal::Full.as_str());
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
            drop((permit, admitted));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miners_are_kept_below_the_file_limit() {
        assert_eq!(connections_within(20_000, 15_000).unwrap(), (15_000, None));
        let (fit, warning) = connections_within(1024, 20_000).unwrap();
        assert_eq!(fit, 1024 - 256);
        assert!(warning.unwrap().contains("stratum.max_connections"));
        assert!(
            connections_within(200, 10).is_err(),
            "no room at all after the headroom"
        );
    }
}
