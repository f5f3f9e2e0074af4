//! One load run against one server, phase by phase: ramp the connections up, measure the
//! server's memory with every miner connected, run the share phase and mine the tips, then
//! collect the figures into a [`Report`].
//!
//! - `ramp`: connecting every miner, with a progress line each second;
//! - `shares`: the share phase and its figures;
//! - `tips`: mining new tips and timing them at every miner;
//! - `processes`: memory and CPU of the server and the processes behind it;
//! - `soak`: a long share phase with tips on a fixed grid, the server sampled all along;
//! - `summary`: the counters of the run as a [`Report`].

mod processes;
mod ramp;
mod shares;
mod soak;
mod summary;
mod tips;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{ClientConfig, Mode, Pace, Shared, Stats};
use crate::node::{MineTo, Rpc};
use crate::report::Report;
use crate::soak::SoakSettings;
use processes::Memories;

/// What one run does; the `jd-load` flags of the same names.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Stratum V1 server.
    pub server: SocketAddr,
    /// What every connection does.
    pub mode: Mode,
    /// Simulated miners.
    pub connections: u32,
    /// Spread connections round-robin over 127.0.0.2 .. 127.0.0.(N+1); 0 binds nothing.
    pub sources: u8,
    /// New connections per second; 0 is as fast as possible.
    pub ramp: f64,
    /// Seconds to hold the connections once all are mining (the share phase, in shares mode).
    pub duration: f64,
    /// Shares per second, all connections together; 0 is closed loop.
    pub share_rate: f64,
    /// Unanswered submits one connection may have.
    pub window: usize,
    /// `mining.suggest_difficulty` to send (before authorize).
    pub difficulty: Option<f64>,
    /// Ask for version rolling (`mining.configure`, 6-parameter submits when granted).
    pub version_rolling: bool,
    /// Submit shares that are also blocks (by default they are skipped, so the tip holds).
    pub submit_blocks: bool,
    /// The server's PID, to read its RSS and CPU time from /proc.
    pub server_pid: Option<u32>,
    /// Processes behind the server, measured too.
    pub peer_pid: Vec<u32>,
    /// The node's JSON-RPC URL, to mine blocks and time the new tip at every miner.
    pub rpc_url: Option<String>,
    /// The node's .cookie file.
    pub rpc_cookie: Option<PathBuf>,
    /// USER:PASSWORD instead of a cookie.
    pub rpc_user_pass: Option<String>,
    /// Address the mined tips pay; without it, an anyone-can-spend descriptor.
    pub tip_address: Option<String>,
    /// New tips to mine (one block each) once every miner is connected.
    pub tips: u32,
    /// Seconds between tips.
    pub tip_interval: f64,
    /// The node's debug.log, for the node's own time of each tip.
    pub node_log: Option<PathBuf>,
    /// Worker threads of this tool (only reported here: the caller builds the runtime).
    pub threads: usize,
    /// Seconds a TCP connect may take.
    pub connect_timeout: f64,
    /// A name for this run in the report.
    pub label: String,
    /// No progress lines.
    pub quiet: bool,
    /// A soak run: shares for the whole `duration`, a tip every `tip_interval` (`tips` is not
    /// used), and the server sampled for the flatness verdict.
    pub soak: Option<SoakSettings>,
}

/// Runs the whole load against the server and reports it. `nofile` is the open-file limit
/// the caller could get, for the report.
pub async fn drive(s: Settings, nofile: u64) -> anyhow::Result<Report> {
    check(&s)?;
    let (rpc, descriptor) = node_access(&s).await?;
    let sources: Vec<IpAddr> = (0..s.sources)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
        .collect();
    let (pace_tx, pace_rx) = watch::channel(Pace::idle());
    let shutdown = CancellationToken::new();
    let shared = Arc::new(shared_state(&s, pace_rx, shutdown.clone()));
    let stats = &shared.stats;
    let before = Memories::measure(s.server_pid, &s.peer_pid);
    before.check_all_found(s.server_pid, &s.peer_pid)?;

    let tracker = TaskTracker::new();
    let ramp_start = Instant::now();
    let reporter = ramp::spawn_reporter(shared.clone(), s.quiet);
    let mut sampler = soak::Sampler::start(&s, &shared, ramp_start);
    let connect_elapsed = ramp::connect_all(&s, &shared, &sources, &tracker, ramp_start).await;
    // Let the server's allocations settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connected = Memories::measure(s.server_pid, &s.peer_pid);
    let hold_start = Instant::now();

    let phase = shares::Phase::begin(&s, stats, &pace_tx);
    let phase_start = phase.start;
    let hold = Duration::from_secs_f64(s.duration);
    let until = if s.mode == Mode::Shares {
        phase.start + hold
    } else {
        hold_start + hold
    };
    // Tips (during the share phase in shares mode).
    let node = rpc.as_ref().zip(descriptor.as_ref());
    let (tips, soak_tips) = match (node, &sampler) {
        (Some(node), Some(sm)) => (
            Vec::new(),
            Some(soak::mine_tips(&s, node, &shared, sm, phase_start, until).await),
        ),
        (Some((rpc, desc)), None) => (tips::measure_all(&s, rpc, desc, &shared).await?, None),
        _ => (Vec::new(), None),
    };
    if until > Instant::now() {
        tokio::time::sleep_until(until.into()).await;
    }
    let soak_samples = match &mut sampler {
        Some(sm) => Some(sm.finish().await),
        None => None,
    };
    let shares_report = if s.mode == Mode::Shares {
        Some(phase.finish(&s, stats, &pace_tx).await)
    } else {
        None
    };
    let server_end = s.server_pid.and_then(|p| crate::procfs::memory(Some(p)));
    let peer_processes = processes::peer_reports(&s.peer_pid, &before, &connected);
    let live_at_end = stats.live.load(Relaxed);
    let tool_memory = crate::procfs::memory(None).unwrap_or_default();
    shutdown.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    reporter.abort();
    let soak = match (&sampler, soak_tips, soak_samples) {
        (Some(sm), Some(t), Some(samples)) => Some(soak::report(&s, sm, t, samples, phase_start)),
        _ => None,
    };

    Ok(summary::report(summary::Run {
        settings: &s,
        nofile,
        sources: &sources,
        stats,
        connect_elapsed,
        live_at_end,
        tips,
        shares: shares_report,
        server_memory: [before.server, connected.server, server_end],
        peer_processes,
        tool_memory,
        soak,
    }))
}

/// Settings that cannot work together, refused before any connection.
fn check(s: &Settings) -> anyhow::Result<()> {
    if s.mode == Mode::Shares && s.difficulty.is_some_and(|d| d > 1e-7) {
        bail!("shares mode grinds every share itself: keep --difficulty at 1e-7 or below");
    }
    if let Some(k) = &s.soak {
        if s.server_pid.is_none() || s.rpc_url.is_none() {
            bail!("a soak run samples --server-pid and mines tips through --rpc-url: give both");
        }
        if s.mode != Mode::Shares || !(k.sample_interval > 0.0 && s.tip_interval > 0.0) {
            bail!("a soak run needs shares mode and a positive sample and tip interval");
        }
    }
    Ok(())
}

/// The node's RPC and what tips pay to, when the run mines tips.
async fn node_access(s: &Settings) -> anyhow::Result<(Option<Rpc>, Option<MineTo>)> {
    let rpc = match &s.rpc_url {
        Some(url) => Some(Rpc::new(
            url,
            s.rpc_cookie.clone(),
            s.rpc_user_pass.clone(),
        )?),
        None if s.tips > 0 => bail!("--tips needs --rpc-url"),
        None => None,
    };
    let mines = s.tips > 0 || s.soak.is_some();
    let descriptor = match (&rpc, &s.tip_address) {
        (Some(_), Some(a)) if mines => Some(MineTo::Address(a.clone())),
        (Some(rpc), None) if mines => Some(MineTo::Descriptor(rpc.mining_descriptor().await?)),
        _ => None,
    };
    Ok((rpc, descriptor))
}

fn shared_state(s: &Settings, pace: watch::Receiver<Pace>, shutdown: CancellationToken) -> Shared {
    Shared {
        config: ClientConfig {
            server: s.server,
            mode: s.mode,
            suggest_difficulty: s.difficulty,
            version_rolling: s.version_rolling,
            connect_timeout: Duration::from_secs_f64(s.connect_timeout),
            window: s.window.max(1),
            submit_blocks: s.submit_blocks,
        },
        stats: Stats::default(),
        tips: Mutex::new(Vec::new()),
        pace,
        shutdown,
    }
}

fn progress(quiet: bool, msg: impl std::fmt::Display) {
    if !quiet {
        eprintln!("jd-load: {msg}");
    }
}

/// A copy of a map the connections keep counting into.
fn lock_clone<T: Clone>(m: &Mutex<T>) -> T {
    let g = m.lock().unwrap_or_else(PoisonError::into_inner);
    g.clone()
}
