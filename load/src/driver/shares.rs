//! The share phase: every connection submits at the offered rate (or closed loop), and the
//! rates are taken over the phase alone, with CPU of the server, its peers and this tool.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::processes::peers_cpu;
use super::{lock_clone, progress, Settings};
use crate::client::{Mode, Pace, Stats};
use crate::procfs;
use crate::report::SharesReport;

/// Share counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Counters {
    submitted: u64,
    accepted: u64,
    rejected: u64,
}

impl Counters {
    fn take(s: &Stats) -> Counters {
        Counters {
            submitted: s.submitted.load(Relaxed),
            accepted: s.accepted.load(Relaxed),
            rejected: s.rejected.load(Relaxed),
        }
    }
}

/// What the phase's figures are taken against. Taken in idle mode too, where `start` begins
/// the hold.
pub(super) struct Phase {
    before: Counters,
    server_cpu: Option<Duration>,
    peer_cpu: Option<Duration>,
    tool_cpu: Option<Duration>,
    pub(super) start: Instant,
}

impl Phase {
    /// Takes the baselines and, in shares mode, sets every connection submitting.
    pub(super) fn begin(s: &Settings, stats: &Stats, pace_tx: &watch::Sender<Pace>) -> Phase {
        let phase = Phase {
            before: Counters::take(stats),
            server_cpu: s.server_pid.and_then(|p| procfs::cpu_time(Some(p))),
            peer_cpu: peers_cpu(&s.peer_pid),
            tool_cpu: procfs::cpu_time(None),
            start: Instant::now(),
        };
        if s.mode == Mode::Shares {
            let live = stats.live.load(Relaxed) as usize;
            pace_tx.send_replace(Pace::shares(s.share_rate, live));
            progress(
                s.quiet,
                format_args!(
                    "share phase: {} shares/s offered over {live} connections",
                    s.share_rate
                ),
            );
        }
        phase
    }

    /// Stops submitting and reports the phase.
    pub(super) async fn finish(
        self,
        s: &Settings,
        stats: &Stats,
        pace_tx: &watch::Sender<Pace>,
    ) -> SharesReport {
        let before = self.before;
        let after_send = Counters::take(stats);
        let elapsed = self.start.elapsed();
        let server_cpu1 = s.server_pid.and_then(|p| procfs::cpu_time(Some(p)));
        let peer_cpu1 = peers_cpu(&s.peer_pid);
        let tool_cpu1 = procfs::cpu_time(None);
        pace_tx.send_replace(Pace::idle());
        // Replies still in flight count for latency, not for the rate.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = Counters::take(stats);
        let secs = elapsed.as_secs_f64();
        let server_cpu = match (self.server_cpu, server_cpu1) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        };
        let accepted = after_send.accepted - before.accepted;
        let peer_cpu = match (self.peer_cpu, peer_cpu1) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        };
        SharesReport {
            duration_s: secs,
            offered_per_sec: s.share_rate,
            window: s.window,
            difficulty: s.difficulty,
            submitted: after.submitted - before.submitted,
            accepted: after.accepted - before.accepted,
            rejected: after.rejected - before.rejected,
            submitted_per_sec: (after_send.submitted - before.submitted) as f64 / secs,
            accepted_per_sec: accepted as f64 / secs,
            rejects: lock_clone(&stats.rejects),
            window_full: stats.window_full.load(Relaxed),
            blocks_skipped: stats.blocks_skipped.load(Relaxed),
            grind_failed: stats.grind_failed.load(Relaxed),
            tool_hashes: stats.hashes.load(Relaxed),
            latency: stats.submit_latency.summary(),
            server_cpu_s: server_cpu,
            accepted_per_server_cpu_s: server_cpu.filter(|c| *c > 0.0).map(|c| accepted as f64 / c),
            peer_cpu_s: peer_cpu,
            accepted_per_chain_cpu_s: match (server_cpu, peer_cpu) {
                (Some(s), Some(p)) if s + p > 0.0 => Some(accepted as f64 / (s + p)),
                _ => None,
            },
            tool_cpu_s: match (self.tool_cpu, tool_cpu1) {
                (Some(a), Some(b)) => (b - a).as_secs_f64(),
                _ => 0.0,
            },
        }
    }
}
