//! The figures of one run, as JSON and as text.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::histogram::Summary;
use crate::procfs::Memory;
use crate::soak::SoakReport;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub label: String,
    pub mode: String,
    pub server: String,
    pub connections_requested: u64,
    pub source_addresses: Vec<String>,
    pub ramp_per_sec: f64,
    pub tool_threads: usize,
    pub nofile_limit: u64,
    pub connect: ConnectReport,
    pub tips: Vec<TipReport>,
    pub tips_all: Option<TipSummary>,
    pub shares: Option<SharesReport>,
    pub messages: MessageReport,
    pub server_process: Option<ServerReport>,
    /// The processes behind the server (`--peer-pid`, e.g. the pool behind a translator).
    pub peer_processes: Vec<PeerReport>,
    pub tool_process: ToolReport,
    /// Only in soak runs (absent from the other runs' JSON, which stays as it was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakReport>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ConnectReport {
    /// From the first connect to the last connection mining (or failed).
    pub elapsed_s: f64,
    pub connected: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// Connections the server ended later on, by reason.
    pub dropped: u64,
    pub drops: BTreeMap<String, u64>,
    pub live_at_end: u64,
    pub tcp_connect: Summary,
    /// TCP connect start to the first `mining.notify`.
    pub handshake: Summary,
}

/// Latency of one new tip to every miner's first job on it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TipReport {
    pub hash: String,
    /// How long the generate RPC took (mining included).
    pub generate_ms: f64,
    pub miners_expected: u64,
    pub miners_reached: u64,
    /// Miners whose first job on the new tip was not marked clean.
    pub not_clean: u64,
    /// CPU the server and this tool used from the node telling waiters of the tip until the
    /// last miner had its job (polled every 5 ms, so a few ms of idle time may be in it).
    pub server_cpu_ms: Option<f64>,
    /// CPU of the `--peer-pid` processes over the same span.
    pub peer_cpu_ms: Option<f64>,
    pub tool_cpu_ms: Option<f64>,
    /// From the generate RPC returning (may be negative: the node tells waiters first).
    pub from_rpc_return: Summary,
    /// From this tool's own `waitfornewblock` long poll returning.
    pub from_node_notify: Option<Summary>,
    /// From the node's `UpdateTip` log line (`-logtimemicros`): the node's own time.
    pub from_node_log: Option<Summary>,
    /// Every miner's latency (ms) against each reference, for pooling across tips.
    #[serde(skip)]
    pub samples: TipSamples,
}

/// Raw latencies of one tip, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct TipSamples {
    pub from_rpc_return: Vec<f64>,
    pub from_node_notify: Option<Vec<f64>>,
    pub from_node_log: Option<Vec<f64>>,
}

/// Every miner of every tip together.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TipSummary {
    pub tips: usize,
    pub miners_reached: u64,
    pub missed: u64,
    pub from_rpc_return: Summary,
    pub from_node_notify: Option<Summary>,
    pub from_node_log: Option<Summary>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SharesReport {
    pub duration_s: f64,
    /// Shares per second asked for; 0 is closed loop (`window` in flight per connection).
    pub offered_per_sec: f64,
    pub window: usize,
    pub difficulty: Option<f64>,
    pub submitted: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub submitted_per_sec: f64,
    pub accepted_per_sec: f64,
    pub rejects: BTreeMap<String, u64>,
    /// Due shares not sent because a connection already had `window` unanswered.
    pub window_full: u64,
    pub blocks_skipped: u64,
    pub grind_failed: u64,
    pub tool_hashes: u64,
    pub latency: Summary,
    /// Server CPU seconds over the share phase, and accepted shares per server CPU second.
    pub server_cpu_s: Option<f64>,
    pub accepted_per_server_cpu_s: Option<f64>,
    /// CPU of the `--peer-pid` processes over the phase.
    pub peer_cpu_s: Option<f64>,
    /// Accepted shares per CPU-second of the server and its peers together.
    pub accepted_per_chain_cpu_s: Option<f64>,
    pub tool_cpu_s: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct MessageReport {
    pub notifies: u64,
    pub clean_notifies: u64,
    pub set_difficulty: u64,
    /// The last difficulty the server set.
    pub last_difficulty: Option<f64>,
    pub other: u64,
    pub protocol_errors: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerReport {
    pub pid: u32,
    pub before: Memory,
    pub connected: Memory,
    pub end: Memory,
    /// (RSS with every miner connected - RSS before) / connected miners.
    pub rss_per_connection_bytes: f64,
}

/// A process behind the server: memory before the miners, with them, at the end; CPU in all.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PeerReport {
    pub pid: u32,
    pub before: Memory,
    pub connected: Memory,
    pub end: Memory,
    pub cpu_s: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ToolReport {
    pub memory: Memory,
    pub cpu_s: f64,
}

fn ms(s: &Summary) -> String {
    if s.count == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (min {:.2}, n={})",
        s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.min_ms, s.count
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== jd-load {} [{}] against {}: {} connections from {} source address(es), ramp {}/s, {} tool thread(s)",
            self.label,
            self.mode,
            self.server,
            self.connections_requested,
            self.source_addresses.len().max(1),
            if self.ramp_per_sec > 0.0 { format!("{}", self.ramp_per_sec) } else { "unlimited".into() },
            self.tool_threads
        )?;
        self.connect.write_text(f)?;
        for (i, t) in self.tips.iter().enumerate() {
            t.write_text(f, i + 1)?;
        }
        if let Some(t) = &self.tips_all {
            t.write_text(f)?;
        }
        if let Some(s) = &self.shares {
            s.write_text(f)?;
        }
        if let Some(s) = &self.soak {
            s.write_text(f)?;
        }
        self.messages.write_text(f)?;
        writeln!(
            f,
            "served:    {} of {} requested miners got subscribed, authorized and a job",
            self.connect.connected, self.connections_requested
        )?;
        if let Some(s) = &self.server_process {
            s.write_text(f)?;
        }
        for p in &self.peer_processes {
            p.write_text(f)?;
        }
        writeln!(
            f,
            "tool:      RSS {} KiB, CPU {:.2} s, open-file limit {}",
            self.tool_process.memory.rss_kib, self.tool_process.cpu_s, self.nofile_limit
        )?;
        match &self.soak {
            Some(s) => s.write_samples(f),
            None => Ok(()),
        }
    }
}

impl ConnectReport {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self;
        writeln!(
            f,
            "connect:   {} mining, {} failed in {:.2} s; {} dropped later; {} live at the end",
            c.connected, c.failed, c.elapsed_s, c.dropped, c.live_at_end
        )?;
        for (r, n) in &c.failures {
            writeln!(f, "           failed: {r}: {n}")?;
        }
        for (r, n) in &c.drops {
            writeln!(f, "           dropped: {r}: {n}")?;
        }
        writeln!(f, "           tcp connect {}", ms(&c.tcp_connect))?;
        writeln!(f, "           connect to first job {}", ms(&c.handshake))
    }
}

/// The latency lines of one tip or of all tips, most precise reference first.
fn write_references(
    f: &mut fmt::Formatter<'_>,
    from_node_log: Option<&Summary>,
    from_node_notify: Option<&Summary>,
    from_rpc_return: &Summary,
) -> fmt::Result {
    if let Some(s) = from_node_log {
        writeln!(f, "           from node UpdateTip log:  {}", ms(s))?;
    }
    if let Some(s) = from_node_notify {
        writeln!(f, "           from node waitfornewblock: {}", ms(s))?;
    }
    writeln!(
        f,
        "           from RPC return:           {}",
        ms(from_rpc_return)
    )
}

impl TipReport {
    /// `number` counts tips from 1.
    fn write_text(&self, f: &mut fmt::Formatter<'_>, number: usize) -> fmt::Result {
        let t = self;
        writeln!(
            f,
            "tip {}:     {} reached {}/{} miners ({} not clean); generate took {:.0} ms",
            number,
            &t.hash[..16.min(t.hash.len())],
            t.miners_reached,
            t.miners_expected,
            t.not_clean,
            t.generate_ms
        )?;
        write_references(
            f,
            t.from_node_log.as_ref(),
            t.from_node_notify.as_ref(),
            &t.from_rpc_return,
        )?;
        if let (Some(s), Some(c)) = (t.server_cpu_ms, t.tool_cpu_ms) {
            writeln!(
                f,
                "           CPU until the last miner had it: server {s:.1} ms ({:.1} us per miner), tool {c:.1} ms{}",
                s * 1000.0 / t.miners_reached.max(1) as f64,
                t.peer_cpu_ms.map_or(String::new(), |p| format!(", peers {p:.1} ms"))
            )?;
        }
        Ok(())
    }
}

impl TipSummary {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self;
        writeln!(
            f,
            "all tips:  {} tips, {} miner notifications, {} missed",
            t.tips, t.miners_reached, t.missed
        )?;
        write_references(
            f,
            t.from_node_log.as_ref(),
            t.from_node_notify.as_ref(),
            &t.from_rpc_return,
        )
    }
}

impl SharesReport {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self;
        writeln!(
            f,
            "shares:    {:.1} s at {} (window {}, difficulty {}): {} submitted, {} accepted, {} rejected",
            s.duration_s,
            if s.offered_per_sec > 0.0 { format!("{}/s offered", s.offered_per_sec) } else { "closed loop".into() },
            s.window,
            s.difficulty.map_or("-".into(), |d| d.to_string()),
            s.submitted,
            s.accepted,
            s.rejected
        )?;
        writeln!(
            f,
            "           accepted {:.0}/s (submitted {:.0}/s); submit->reply {}",
            s.accepted_per_sec,
            s.submitted_per_sec,
            ms(&s.latency)
        )?;
        for (r, n) in &s.rejects {
            writeln!(f, "           rejected: {r}: {n}")?;
        }
        if let (Some(cpu), Some(per)) = (s.server_cpu_s, s.accepted_per_server_cpu_s) {
            writeln!(
                f,
                "           server CPU {cpu:.2} s over the phase: {per:.0} accepted shares per server CPU-second; tool CPU {:.2} s",
                s.tool_cpu_s
            )?;
        }
        if let (Some(cpu), Some(per)) = (s.peer_cpu_s, s.accepted_per_chain_cpu_s) {
            writeln!(
                f,
                "           peers CPU {cpu:.2} s: {per:.0} accepted shares per CPU-second of server and peers together"
            )?;
        }
        writeln!(
            f,
            "           window full {}, block-solving nonces skipped {}, grind failures {}, tool hashes {}",
            s.window_full, s.blocks_skipped, s.grind_failed, s.tool_hashes
        )
    }
}

impl MessageReport {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self;
        writeln!(
            f,
            "messages:  {} notify ({} clean), {} set_difficulty (last {}), {} other, {} protocol errors",
            m.notifies,
            m.clean_notifies,
            m.set_difficulty,
            m.last_difficulty.map_or("-".into(), |d| format!("{d:e}")),
            m.other,
            m.protocol_errors
        )
    }
}

impl ServerReport {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self;
        writeln!(
            f,
            "server:    pid {} RSS {} KiB before, {} KiB connected, {} KiB at end (HWM {} KiB, {} threads): {:.0} bytes ({:.2} KiB) per connection",
            s.pid,
            s.before.rss_kib,
            s.connected.rss_kib,
            s.end.rss_kib,
            s.end.hwm_kib,
            s.end.threads,
            s.rss_per_connection_bytes,
            s.rss_per_connection_bytes / 1024.0
        )
    }
}

impl PeerReport {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self;
        writeln!(
            f,
            "peer:      pid {} RSS {} KiB before, {} KiB connected, {} KiB at end (HWM {} KiB, {} threads), CPU {:.2} s in all",
            p.pid,
            p.before.rss_kib,
            p.connected.rss_kib,
            p.end.rss_kib,
            p.end.hwm_kib,
            p.end.threads,
            p.cpu_s
        )
    }
}
