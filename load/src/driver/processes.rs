//! Memory and CPU of the server under test and of the processes behind it (`--peer-pid`).

use std::time::Duration;

use anyhow::bail;

use crate::procfs::{self, Memory};
use crate::report::PeerReport;

/// Memory of the server and of every peer at one moment; `None` where a process was not
/// given or could not be read.
pub(super) struct Memories {
    pub(super) server: Option<Memory>,
    pub(super) peers: Vec<Option<Memory>>,
}

impl Memories {
    pub(super) fn measure(server_pid: Option<u32>, peer_pids: &[u32]) -> Memories {
        Memories {
            server: server_pid.and_then(|p| procfs::memory(Some(p))),
            peers: peer_pids.iter().map(|&p| procfs::memory(Some(p))).collect(),
        }
    }

    /// Fails when a process to measure is not there, before any load is started.
    pub(super) fn check_all_found(
        &self,
        server_pid: Option<u32>,
        peer_pids: &[u32],
    ) -> anyhow::Result<()> {
        if let Some(i) = self.peers.iter().position(Option::is_none) {
            bail!("no process {} to measure", peer_pids[i]);
        }
        if server_pid.is_some() && self.server.is_none() {
            bail!("no process {} to measure", server_pid.unwrap_or(0));
        }
        Ok(())
    }
}

/// Every peer's memory over the run, read at the end together with its CPU time in all.
pub(super) fn peer_reports(
    peer_pids: &[u32],
    before: &Memories,
    connected: &Memories,
) -> Vec<PeerReport> {
    peer_pids
        .iter()
        .enumerate()
        .filter_map(|(i, &pid)| {
            Some(PeerReport {
                pid,
                before: before.peers[i]?,
                connected: connected.peers[i].unwrap_or_default(),
                end: procfs::memory(Some(pid)).unwrap_or_default(),
                cpu_s: procfs::cpu_time(Some(pid))?.as_secs_f64(),
            })
        })
        .collect()
}

/// CPU time of every peer process together; `None` without peers or when one cannot be read.
pub(super) fn peers_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| procfs::cpu_time(Some(p))).sum()
}

/// CPU time of the server, this tool and the peers, read together.
pub(super) fn cpu_now(server_pid: Option<u32>, peer_pids: &[u32]) -> CpuTimes {
    CpuTimes {
        server: server_pid.and_then(|p| procfs::cpu_time(Some(p))),
        tool: procfs::cpu_time(None),
        peers: peers_cpu(peer_pids),
    }
}

/// CPU times of the processes a run measures, at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuTimes {
    pub(super) server: Option<Duration>,
    pub(super) tool: Option<Duration>,
    pub(super) peers: Option<Duration>,
}
