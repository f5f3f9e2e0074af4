//! Connecting every miner at the ramp rate, and the progress line printed each second.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::{progress, Settings};
use crate::client::{self, Shared};

/// Prints the counters once a second until aborted.
pub(super) fn spawn_reporter(shared: Arc<Shared>, quiet: bool) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let s = &shared.stats;
            let acc = s.accepted.load(Relaxed);
            let now = Instant::now();
            let rate = (acc - last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, acc);
            progress(
                quiet,
                format_args!(
                    "{} mining, {} failed, {} dropped; {} notify; accepted {acc} ({rate:.0}/s), rejected {}",
                    s.live.load(Relaxed),
                    s.failed.load(Relaxed),
                    s.dropped.load(Relaxed),
                    s.notifies.load(Relaxed),
                    s.rejected.load(Relaxed)
                ),
            );
        }
    })
}

/// Starts every miner at the ramp rate and waits until each is mining or has failed (or the
/// connect timeout and 30 s more have passed); returns the time since `ramp_start`.
pub(super) async fn connect_all(
    s: &Settings,
    shared: &Arc<Shared>,
    sources: &[IpAddr],
    tracker: &TaskTracker,
    ramp_start: Instant,
) -> Duration {
    let stats = &shared.stats;
    let n = u64::from(s.connections);
    for i in 0..s.connections {
        if s.ramp > 0.0 {
            let at = ramp_start + Duration::from_secs_f64(f64::from(i) / s.ramp);
            if at > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(at.into()).await;
            }
        }
        let bind = (!sources.is_empty()).then(|| sources[i as usize % sources.len()]);
        tracker.spawn(client::run(i, bind, shared.clone()));
    }
    let settle_deadline =
        Instant::now() + Duration::from_secs_f64(s.connect_timeout) + Duration::from_secs(30);
    while stats.connected_total.load(Relaxed) + stats.failed.load(Relaxed) < n
        && Instant::now() < settle_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_elapsed = ramp_start.elapsed();
    progress(
        s.quiet,
        format_args!(
            "{} of {n} mining after {:.2} s ({} failed)",
            stats.connected_total.load(Relaxed),
            connect_elapsed.as_secs_f64(),
            stats.failed.load(Relaxed)
        ),
    );
    connect_elapsed
}
