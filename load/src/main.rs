//! `jd-load`: N simulated Stratum V1 miners against one server. See `--help`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use jd_load::client::{self, ClientConfig, Mode, Pace, Shared, Stats};
use jd_load::histogram::{summarize_ms, Summary};
use jd_load::node::{self, MineTo, Rpc};
use jd_load::procfs;
use jd_load::report::{
    ConnectReport, MessageReport, PeerReport, Report, ServerReport, SharesReport, TipReport,
    TipSamples, TipSummary, ToolReport,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Connect, handshake, receive jobs.
    Idle,
    /// As idle, and submit valid shares at --share-rate.
    Shares,
}

/// Simulated Stratum V1 miners against one server: connect time, new-tip latency at every
/// miner, share throughput and latency, and the server's memory per connection.
///
/// Traffic goes to --server only; keep it on loopback.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The Stratum V1 server.
    #[arg(long, default_value = "127.0.0.1:3333")]
    server: SocketAddr,
    #[arg(long, value_enum, default_value = "idle")]
    mode: ModeArg,
    /// Simulated miners.
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: u32,
    /// Spread connections round-robin over 127.0.0.2 .. 127.0.0.(N+1) (each address has its
    /// own ephemeral ports); 0 binds nothing.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// New connections per second; 0 is as fast as possible.
    #[arg(long, default_value_t = 2000.0)]
    ramp: f64,
    /// Seconds to hold the connections once all are mining (the share phase, in shares mode).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Shares per second, all connections together; 0 is closed loop (--window in flight on
    /// every connection).
    #[arg(long, default_value_t = 10_000.0)]
    share_rate: f64,
    /// Unanswered submits one connection may have.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// mining.suggest_difficulty to send (sent before authorize); shares mode grinds at
    /// whatever difficulty the server sets, so keep it far below the chain's.
    #[arg(long)]
    difficulty: Option<f64>,
    /// Do not ask for version rolling (no mining.configure, 5-parameter submits).
    #[arg(long)]
    no_version_rolling: bool,
    /// Submit shares that are also blocks (by default they are skipped, so the tip holds).
    #[arg(long)]
    submit_blocks: bool,
    /// The server's PID, to read its RSS and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A process behind the server (e.g. the pool behind a translator): its CPU and memory are
    /// reported too, and shares per CPU-second also over server and peers together. Repeatable.
    #[arg(long)]
    peer_pid: Vec<u32>,
    /// The node's JSON-RPC URL, to mine blocks and time the new tip at every miner.
    #[arg(long)]
    rpc_url: Option<String>,
    /// The node's .cookie file.
    #[arg(long)]
    rpc_cookie: Option<PathBuf>,
    /// USER:PASSWORD instead of a cookie.
    #[arg(long)]
    rpc_user_pass: Option<String>,
    /// Address the mined tips pay (`generatetoaddress 1 ADDRESS`); without it, tips go to an
    /// anyone-can-spend `raw(51)` descriptor, which works on every chain.
    #[arg(long)]
    tip_address: Option<String>,
    /// New tips to mine (one block each) once every miner is connected.
    #[arg(long, default_value_t = 0)]
    tips: u32,
    /// Seconds between tips.
    #[arg(long, default_value_t = 3.0)]
    tip_interval: f64,
    /// The node's debug.log (run it with -logtimemicros=1) for the node's own time of each tip.
    #[arg(long)]
    node_log: Option<PathBuf>,
    /// Worker threads of this tool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds a TCP connect may take.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// A name for this run in the report.
    #[arg(long, default_value = "run")]
    label: String,
    /// Print the report as JSON on stdout (the text goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// No progress lines.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Every connection is a descriptor: take the whole hard limit.
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("warning: cannot raise RLIMIT_NOFILE: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    };
    if u64::from(args.connections) + 64 > nofile {
        eprintln!(
            "error: {} connections need more descriptors than the open-file limit {nofile} allows",
            args.connections
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    let json_out = args.json_out.clone();
    match runtime.block_on(drive(args, nofile)) {
        Ok(report) => {
            let text = report.to_string();
            let as_json = serde_json::to_string_pretty(&report).expect("a report serializes");
            if let Some(path) = json_out {
                if let Err(e) = std::fs::write(&path, &as_json) {
                    eprintln!("error: writing {}: {e}", path.display());
                }
            }
            if json {
                eprint!("{text}");
                println!("{as_json}");
            } else {
                print!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(quiet: bool, msg: impl std::fmt::Display) {
    if !quiet {
        eprintln!("jd-load: {msg}");
    }
}

async fn drive(args: Args, nofile: u64) -> anyhow::Result<Report> {
    if args.mode == ModeArg::Shares && args.difficulty.is_some_and(|d| d > 1e-7) {
        bail!("shares mode grinds every share itself: keep --difficulty at 1e-7 or below");
    }
    let rpc = match &args.rpc_url {
        Some(url) => Some(Rpc::new(
            url,
            args.rpc_cookie.clone(),
            args.rpc_user_pass.clone(),
        )?),
        None if args.tips > 0 => bail!("--tips needs --rpc-url"),
        None => None,
    };
    let descriptor = match (&rpc, args.tips, &args.tip_address) {
        (Some(_), t, Some(a)) if t > 0 => Some(MineTo::Address(a.clone())),
        (Some(rpc), t, None) if t > 0 => Some(MineTo::Descriptor(rpc.mining_descriptor().await?)),
        _ => None,
    };
    let sources: Vec<IpAddr> = (0..args.sources)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
        .collect();
    let (pace_tx, pace_rx) = watch::channel(Pace::idle());
    let shutdown = CancellationToken::new();
    let shared = Arc::new(Shared {
        config: ClientConfig {
            server: args.server,
            mode: match args.mode {
                ModeArg::Idle => Mode::Idle,
                ModeArg::Shares => Mode::Shares,
            },
            suggest_difficulty: args.difficulty,
            version_rolling: !args.no_version_rolling,
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            window: args.window.max(1),
            submit_blocks: args.submit_blocks,
        },
        stats: Stats::default(),
        tips: Mutex::new(Vec::new()),
        pace: pace_rx,
        shutdown: shutdown.clone(),
    });
    let stats = &shared.stats;
    let server_before = args.server_pid.and_then(|p| procfs::memory(Some(p)));
    let peers_before: Vec<_> = args
        .peer_pid
        .iter()
        .map(|&p| procfs::memory(Some(p)))
        .collect();
    if let Some(i) = peers_before.iter().position(Option::is_none) {
        bail!("no process {} to measure", args.peer_pid[i]);
    }
    if args.server_pid.is_some() && server_before.is_none() {
        bail!("no process {} to measure", args.server_pid.unwrap_or(0));
    }

    // Ramp.
    let n = u64::from(args.connections);
    let tracker = TaskTracker::new();
    let ramp_start = Instant::now();
    let reporter = {
        let shared = shared.clone();
        let quiet = args.quiet;
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
    };
    for i in 0..args.connections {
        if args.ramp > 0.0 {
            let at = ramp_start + Duration::from_secs_f64(f64::from(i) / args.ramp);
            if at > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(at.into()).await;
            }
        }
        let bind = (!sources.is_empty()).then(|| sources[i as usize % sources.len()]);
        tracker.spawn(client::run(i, bind, shared.clone()));
    }
    let settle_deadline =
        Instant::now() + Duration::from_secs_f64(args.connect_timeout) + Duration::from_secs(30);
    while stats.connected_total.load(Relaxed) + stats.failed.load(Relaxed) < n
        && Instant::now() < settle_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_elapsed = ramp_start.elapsed();
    progress(
        args.quiet,
        format_args!(
            "{} of {n} mining after {:.2} s ({} failed)",
            stats.connected_total.load(Relaxed),
            connect_elapsed.as_secs_f64(),
            stats.failed.load(Relaxed)
        ),
    );
    // Let the server's allocations settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_connected = args.server_pid.and_then(|p| procfs::memory(Some(p)));
    let peers_connected: Vec<_> = args
        .peer_pid
        .iter()
        .map(|&p| procfs::memory(Some(p)))
        .collect();
    let hold_start = Instant::now();

    // Shares.
    let mut shares_report = None;
    let before = Counters::take(stats);
    let server_cpu0 = args.server_pid.and_then(|p| procfs::cpu_time(Some(p)));
    let peer_cpu0 = peers_cpu(&args.peer_pid);
    let tool_cpu0 = procfs::cpu_time(None);
    let phase_start = Instant::now();
    if args.mode == ModeArg::Shares {
        let live = stats.live.load(Relaxed) as usize;
        pace_tx.send_replace(Pace::shares(args.share_rate, live));
        progress(
            args.quiet,
            format_args!(
                "share phase: {} shares/s offered over {live} connections",
                args.share_rate
            ),
        );
    }

    // Tips (during the share phase in shares mode).
    let mut tips = Vec::new();
    if let (Some(rpc), Some(desc)) = (&rpc, &descriptor) {
        let anchor = (Instant::now(), SystemTime::now());
        for t in 0..args.tips {
            if t > 0 || args.mode == ModeArg::Shares {
                tokio::time::sleep(Duration::from_secs_f64(args.tip_interval)).await;
            }
            let tip = measure_tip(
                rpc,
                desc,
                &shared,
                anchor,
                args.node_log.as_deref(),
                args.server_pid,
                &args.peer_pid,
            )
            .await?;
            progress(
                args.quiet,
                format_args!(
                    "tip {}: {}/{} miners, p50 {:.2} ms p99 {:.2} ms max {:.2} ms after the node{}",
                    t + 1,
                    tip.miners_reached,
                    tip.miners_expected,
                    best(&tip).p50_ms,
                    best(&tip).p99_ms,
                    best(&tip).max_ms,
                    if tip.from_node_log.is_some() {
                        " logged it"
                    } else if tip.from_node_notify.is_some() {
                        " notified waiters"
                    } else {
                        "'s RPC returned"
                    },
                ),
            );
            tips.push(tip);
        }
    }

    let hold = Duration::from_secs_f64(args.duration);
    let until = if args.mode == ModeArg::Shares {
        phase_start + hold
    } else {
        hold_start + hold
    };
    if until > Instant::now() {
        tokio::time::sleep_until(until.into()).await;
    }
    if args.mode == ModeArg::Shares {
        let after_send = Counters::take(stats);
        let elapsed = phase_start.elapsed();
        let server_cpu1 = args.server_pid.and_then(|p| procfs::cpu_time(Some(p)));
        let peer_cpu1 = peers_cpu(&args.peer_pid);
        let tool_cpu1 = procfs::cpu_time(None);
        pace_tx.send_replace(Pace::idle());
        // Replies still in flight count for latency, not for the rate.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = Counters::take(stats);
        let secs = elapsed.as_secs_f64();
        let server_cpu = match (server_cpu0, server_cpu1) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        };
        let accepted = after_send.accepted - before.accepted;
        let peer_cpu = match (peer_cpu0, peer_cpu1) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        };
        shares_report = Some(SharesReport {
            duration_s: secs,
            offered_per_sec: args.share_rate,
            window: args.window,
            difficulty: args.difficulty,
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
            tool_cpu_s: match (tool_cpu0, tool_cpu1) {
                (Some(a), Some(b)) => (b - a).as_secs_f64(),
                _ => 0.0,
            },
        });
    }
    let server_end = args.server_pid.and_then(|p| procfs::memory(Some(p)));
    let peer_processes = args
        .peer_pid
        .iter()
        .enumerate()
        .filter_map(|(i, &pid)| {
            Some(PeerReport {
                pid,
                before: peers_before[i]?,
                connected: peers_connected[i].unwrap_or_default(),
                end: procfs::memory(Some(pid)).unwrap_or_default(),
                cpu_s: procfs::cpu_time(Some(pid))?.as_secs_f64(),
            })
        })
        .collect();
    let live_at_end = stats.live.load(Relaxed);
    let tool_memory = procfs::memory(None).unwrap_or_default();
    shutdown.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    reporter.abort();

    let connected = stats.connected_total.load(Relaxed);
    let server_process = match (args.server_pid, server_before, server_connected, server_end) {
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
    };
    let tips_all = (!tips.is_empty()).then(|| pool_tips(&tips));
    Ok(Report {
        label: args.label.clone(),
        mode: format!("{:?}", args.mode).to_lowercase(),
        server: args.server.to_string(),
        connections_requested: n,
        source_addresses: sources.iter().map(ToString::to_string).collect(),
        ramp_per_sec: args.ramp,
        tool_threads: args.threads.max(1),
        nofile_limit: nofile,
        connect: ConnectReport {
            elapsed_s: connect_elapsed.as_secs_f64(),
            connected,
            failed: stats.failed.load(Relaxed),
            failures: lock_clone(&stats.failures),
            dropped: stats.dropped.load(Relaxed),
            drops: lock_clone(&stats.drops),
            live_at_end,
            tcp_connect: stats.tcp_connect.summary(),
            handshake: stats.handshake.summary(),
        },
        tips,
        tips_all,
        shares: shares_report,
        messages: MessageReport {
            notifies: stats.notifies.load(Relaxed),
            clean_notifies: stats.clean_notifies.load(Relaxed),
            set_difficulty: stats.set_difficulty.load(Relaxed),
            last_difficulty: Some(f64::from_bits(stats.last_difficulty.load(Relaxed)))
                .filter(|d| *d > 0.0),
            other: stats.other_messages.load(Relaxed),
            protocol_errors: stats.protocol_errors.load(Relaxed),
        },
        server_process,
        peer_processes,
        tool_process: ToolReport {
            memory: tool_memory,
            cpu_s: procfs::cpu_time(None).map_or(0.0, |d| d.as_secs_f64()),
        },
    })
}

fn lock_clone<T: Clone>(m: &Mutex<T>) -> T {
    let g = m.lock().unwrap_or_else(|e| e.into_inner());
    g.clone()
}

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

/// The most precise reference a tip has.
fn best(t: &TipReport) -> Summary {
    t.from_node_log
        .or(t.from_node_notify)
        .unwrap_or(t.from_rpc_return)
}

/// Mines one block and waits for every live miner's first job on it.
async fn measure_tip(
    rpc: &Rpc,
    descriptor: &MineTo,
    shared: &Arc<Shared>,
    anchor: (Instant, SystemTime),
    node_log: Option<&std::path::Path>,
    server_pid: Option<u32>,
    peer_pids: &[u32],
) -> anyhow::Result<TipReport> {
    let current = rpc.best_block_hash().await?;
    let expected = shared.stats.live.load(Relaxed);
    let waiter = {
        let rpc = rpc.clone();
        let peer_pids = peer_pids.to_vec();
        tokio::spawn(async move {
            let r = rpc
                .wait_for_new_block(current, Duration::from_secs(120))
                .await;
            // The proxy learns of the tip the same way: CPU from here on is the fan-out's.
            let cpu = (
                server_pid.and_then(|p| procfs::cpu_time(Some(p))),
                procfs::cpu_time(None),
                peers_cpu(&peer_pids),
            );
            (r, Instant::now(), cpu)
        })
    };
    // Let the long poll reach the node before the block does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t_call = Instant::now();
    let hash = rpc.mine_one(descriptor).await.context("mining a tip")?;
    let t_return = Instant::now();
    let (t_notify, cpu0) = match tokio::time::timeout(Duration::from_secs(5), waiter).await {
        Ok(Ok((Ok(Some(h)), at, cpu))) if h == hash => (Some(at), Some(cpu)),
        _ => (None, None),
    };
    // Wait for every miner that is still connected (or give up after 15 s).
    let deadline = t_return + Duration::from_secs(15);
    let first_seen = loop {
        let seen: HashMap<u32, (Instant, bool)> = {
            let tips = shared.tips.lock().unwrap_or_else(|e| e.into_inner());
            let mut m = HashMap::new();
            for t in tips.iter().filter(|t| t.prev_hash == hash) {
                m.entry(t.conn).or_insert((t.at, t.clean));
            }
            m
        };
        let live = shared.stats.live.load(Relaxed);
        if seen.len() as u64 >= live.min(expected) || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cpu1 = (
        server_pid.and_then(|p| procfs::cpu_time(Some(p))),
        procfs::cpu_time(None),
        peers_cpu(peer_pids),
    );
    let cpu_ms = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1000.0),
        _ => None,
    };
    let (server_cpu_ms, tool_cpu_ms, peer_cpu_ms) = match cpu0 {
        Some((s0, t0, p0)) => (cpu_ms(s0, cpu1.0), cpu_ms(t0, cpu1.1), cpu_ms(p0, cpu1.2)),
        None => (None, None, None),
    };
    let t_log = match node_log {
        Some(path) => {
            // The log line may be flushed a little after the RPC returns.
            let mut found = None;
            for _ in 0..20 {
                if let Some(t) = node::update_tip_time(path, &hash)? {
                    found = Some(t);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            found.map(|sys| to_instant(anchor, sys))
        }
        None => None,
    };
    let rel = |reference: Instant| -> Vec<f64> {
        first_seen
            .values()
            .map(|(at, _)| signed_ms(*at, reference))
            .collect()
    };
    let samples = TipSamples {
        from_rpc_return: rel(t_return),
        from_node_notify: t_notify.map(rel),
        from_node_log: t_log.map(rel),
    };
    let sum = |v: &Vec<f64>| summarize_ms(&mut v.clone());
    Ok(TipReport {
        hash: hash.to_string(),
        generate_ms: (t_return - t_call).as_secs_f64() * 1000.0,
        miners_expected: expected,
        miners_reached: first_seen.len() as u64,
        not_clean: first_seen.values().filter(|(_, clean)| !clean).count() as u64,
        server_cpu_ms,
        peer_cpu_ms,
        tool_cpu_ms,
        from_rpc_return: sum(&samples.from_rpc_return),
        from_node_notify: samples.from_node_notify.as_ref().map(sum),
        from_node_log: samples.from_node_log.as_ref().map(sum),
        samples,
    })
}

/// CPU time of every peer process together; `None` without peers or when one cannot be read.
fn peers_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| procfs::cpu_time(Some(p))).sum()
}

fn signed_ms(at: Instant, reference: Instant) -> f64 {
    if at >= reference {
        (at - reference).as_secs_f64() * 1000.0
    } else {
        -((reference - at).as_secs_f64() * 1000.0)
    }
}

/// A wall-clock time as an `Instant`, through one (Instant, SystemTime) pair taken together.
fn to_instant(anchor: (Instant, SystemTime), t: SystemTime) -> Instant {
    match t.duration_since(anchor.1) {
        Ok(d) => anchor.0 + d,
        Err(e) => anchor.0 - e.duration(),
    }
}

/// Pools every miner of every tip into one distribution per reference.
fn pool_tips(tips: &[TipReport]) -> TipSummary {
    let pool = |get: &dyn Fn(&TipReport) -> Option<&Vec<f64>>| -> Option<Summary> {
        let mut all = Vec::new();
        for t in tips {
            all.extend_from_slice(get(t)?);
        }
        Some(summarize_ms(&mut all))
    };
    TipSummary {
        tips: tips.len(),
        miners_reached: tips.iter().map(|t| t.miners_reached).sum(),
        missed: tips
            .iter()
            .map(|t| t.miners_expected.saturating_sub(t.miners_reached))
            .sum(),
        from_rpc_return: pool(&|t| Some(&t.samples.from_rpc_return)).unwrap_or_default(),
        from_node_notify: pool(&|t| t.samples.from_node_notify.as_ref()),
        from_node_log: pool(&|t| t.samples.from_node_log.as_ref()),
    }
}
