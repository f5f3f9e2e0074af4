//! The counters and measurements of a finished run, as a [`Report`].

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::tips::pool_tips;
use super::{lock_clone, Settings};
use crate::client::Stats;
use crate::procfs::{self, Memory};
use crate::report::{
    ConnectReport, MessageReport, PeerReport, Report, ServerReport, SharesReport, TipReport,
    ToolReport,
};
use crate::soak::SoakReport;

/// What the phases measured, for [`report`].
pub(super) struct Run<'a> {
    pub(super) settings: &'a Settings,
    pub(super) nofile: u64,
    pub(super) sources: &'a [IpAddr],
    pub(super) stats: &'a Stats,
    pub(super) connect_elapsed: Duration,
    pub(super) live_at_end: u64,
    pub(super) tips: Vec<TipReport>,
    pub(super) shares: Option<SharesReport>,
    /// The server's memory before the miners, with them all connected, and at the end.
    pub(super) server_memory: [Option<Memory>; 3],
    pub(super) peer_processes: Vec<PeerReport>,
    pub(super) tool_memory: Memory,
    pub(super) soak: Option<SoakReport>,
}

/// Builds the report once every connection has ended, so the counters are final.
pub(super) fn report(run: Run<'_>) -> Report {
    let s = run.settings;
    let stats = run.stats;
    let connected = stats.connected_total.load(Relaxed);
    let server_process = server_report(s.server_pid, run.server_memory, connected);
    let tips_all = (!run.tips.is_empty()).then(|| pool_tips(&run.tips));
    Report {
        label: s.label.clone(),
        mode: if run.soak.is_some() {
            "soak".into()
        } else {
            format!("{:?}", s.mode).to_lowercase()
        },
        server: s.server.to_string(),
        connections_requested: u64::from(s.connections),
        source_addresses: run.sources.iter().map(ToString::to_string).collect(),
        ramp_per_sec: s.ramp,
        tool_threads: s.threads.max(1),
        nofile_limit: run.nofile,
        connect: ConnectReport {
            elapsed_s: run.connect_elapsed.as_secs_f64(),
            connected,
            failed: stats.failed.load(Relaxed),
            failures: lock_clone(&stats.failures),
            dropped: stats.dropped.load(Relaxed),
            drops: lock_clone(&stats.drops),
            live_at_end: run.live_at_end,
            tcp_connect: stats.tcp_connect.summary(),
            handshake: stats.handshake.summary(),
        },
        tips: run.tips,
        tips_all,
        shares: run.shares,
        messages: message_report(stats),
        server_process,
        peer_processes: run.peer_processes,
        tool_process: ToolReport {
            memory: run.tool_memory,
            cpu_s: procfs::cpu_time(None).map_or(0.0, |d| d.as_secs_f64()),
        },
        soak: run.soak,
    }
}

fn server_report(
    pid: Option<u32>,
    [before, connected_memory, end]: [Option<Memory>; 3],
    connected: u64,
) -> Option<ServerReport> {
    match (pid, before, connected_memory, end) {
        (Some(pid), Some(b), Some(c), Some(e)) => Some(ServerReport {
            pid,
            before: b,
            connected: c,
            end: e,
            rss_per_connection_bytes: if connected > 0 {
                (c.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / connected as f64
            } else {
                0.0
            },
        }),
        _ => None,
    }
}

fn message_report(stats: &Stats) -> MessageReport {
    MessageReport {
        notifies: stats.notifies.load(Relaxed),
        clean_notifies: stats.clean_notifies.load(Relaxed),
        set_difficulty: stats.set_difficulty.load(Relaxed),
        last_difficulty: Some(f64::from_bits(stats.last_difficulty.load(Relaxed)))
            .filter(|d| *d > 0.0),
        other: stats.other_messages.load(Relaxed),
        protocol_errors: stats.protocol_errors.load(Relaxed),
    }
}
